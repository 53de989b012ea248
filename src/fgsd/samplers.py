"""Samplers for any `denoisers.Denoiser`, `denoise(y, sigma, rows) -> x_hat` (sigma: per-image
tensor, which a blind network ignores; rows: which of the caller's samples these are). One
function per algorithm; both samplers return a `Sampled` (the samples and the network
evaluations each took). Every random draw comes from a per-sample generator, so a sample does
not depend on the batch it was drawn in.

- `coarse_to_fine`: Algorithm A of METHOD.md §6 (Kadkhodaie & Simoncelli), stochastic ascent
  with sigma estimated from the residual, per-image stop mask and divergence guard. With a
  conditional denoiser (phi_y bound in the callable) it is Algorithm B.
- `ddim`: DDIM (Song et al. 2021) in variance-exploding form: x_sigma = x0 + sigma * eps.
  eta = 0 is deterministic DDIM, eta = 1 ancestral sampling from the VE posterior.
- `ddim_invert`: the deterministic encoding of an image into a latent at sigma_max.
- `slerp`: spherical interpolation between two latents.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .denoisers import Denoiser
from .errors import FgsdError


def sample_generators(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def per_sample_randn(gens: list[torch.Generator], shape: tuple, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """One standard normal draw of `shape` per sample, each from its own generator."""
    return torch.stack([torch.randn(shape, generator=g, dtype=dtype) for g in gens]).to(device)


@dataclass
class Trace:
    """What a coarse-to-fine run did, per step: enough to plot it or to predict its output."""
    steps: torch.Tensor                       # steps each sample took before its stop
    nfe: int                                  # denoiser calls of the batch (incl. the final one)
    h: list = field(default_factory=list)     # step size h_t
    sigma: list = field(default_factory=list) # mean estimated sigma of the moving samples
    level: list = field(default_factory=list) # mean noise level handed to the denoiser


@dataclass
class Sampled:
    """What every sampler returns: the samples and the denoiser evaluations each one cost."""
    x: torch.Tensor
    nfe: np.ndarray                           # per sample
    trace: Trace | None = None                # coarse-to-fine only


def step_size(t: int, h0: float, fixed_h: bool) -> float:
    """[K]'s increasing schedule h_t = h0 t / (1 + h0 (t - 1)) (tends to 1), or h0 throughout."""
    return h0 if fixed_h else h0 * t / (1 + h0 * (t - 1))


@torch.no_grad()
def coarse_to_fine(denoise: Denoiser, shape: tuple, seeds: list[int], *, sigma0: float, sigma_final: float, h0: float,
                   beta: float, fixed_h: bool, max_steps: int, init_mean=0.5, diverge_at=5.0, device="cpu",
                   dtype=torch.float32, progress=None) -> Sampled:
    """Algorithm A:  d_t = x^(y) - y,  sigma_t^2 = ||d_t||^2 / D,
    gamma_t^2 = ((1 - beta h_t)^2 - (1 - h_t)^2) sigma_t^2,  y <- y + h_t d_t + gamma_t z_t,
    per image until sigma_t < sigma_final; its output is then x^(y) = y + d_t. A denoiser that
    sets `noise_estimate` (B,) on each call supplies sigma_t itself (`denoisers.Guided`). The step leaves
    noise (1 - beta h_t) sigma_t, the level handed to the denoiser next (blind networks ignore it).
    Finished samples leave the batch, so stragglers cost only their own evaluations.
    init_mean: a float or a tensor of `shape` (e.g. the training mean image). The settings have
    no defaults: they come from params.yaml (`sampling.*`), never from here."""
    gens = sample_generators(seeds)
    n, dim = len(seeds), math.prod(shape)
    y = init_mean + sigma0 * per_sample_randn(gens, shape, device, dtype)
    out = torch.empty_like(y)
    rows = torch.arange(n, device=device)           # the samples still moving
    level = torch.full((n,), float(sigma0), device=device, dtype=dtype)
    trace = Trace(steps=torch.zeros(n, dtype=torch.long), nfe=0)
    bcast = (-1,) + (1,) * len(shape)
    t = 0
    while True:
        d = denoise(y[rows], level[rows], rows) - y[rows]
        trace.nfe += 1
        sigma = getattr(denoise, "noise_estimate", None)  # a wrapper's own estimate (guidance: the unguided one)
        sigma = d.flatten(1).norm(dim=1) / math.sqrt(dim) if sigma is None else sigma.to(d.dtype)
        if not torch.isfinite(sigma).all():
            raise FgsdError(f"coarse-to-fine sampler: the denoiser returned non-finite values at step {t + 1} "
                            "(a NaN or inf in the model's output: check the checkpoint)")
        if (sigma > diverge_at).any():
            raise FgsdError(f"coarse-to-fine sampler diverged at step {t + 1}: estimated sigma "
                            f"{float(sigma.max()):.3g} > {diverge_at} (lower h0 or check the denoiser)")
        done = sigma <= sigma_final
        out[rows[done]] = y[rows[done]] + d[done]
        rows, d, sigma = rows[~done], d[~done], sigma[~done]
        if len(rows) == 0:
            return Sampled(out, (trace.steps + 1).numpy(), trace)
        t += 1
        if t > max_steps:
            raise FgsdError(f"coarse-to-fine sampler: {len(rows)} of {n} samples did not reach "
                            f"sigma_final={sigma_final} in max_steps={max_steps} (raise max_steps, h0 or beta)")
        h = step_size(t, h0, fixed_h)
        gamma = math.sqrt(max((1 - beta * h) ** 2 - (1 - h) ** 2, 0.0)) * sigma
        z = per_sample_randn([gens[i] for i in rows.tolist()], shape, device, dtype)  # a sample's t-th draw
        y[rows] = y[rows] + h * d + gamma.view(bcast) * z
        level[rows] = (1 - beta * h) * sigma
        trace.steps[rows.cpu()] += 1
        trace.h.append(h)
        trace.sigma.append(float(sigma.mean()))
        trace.level.append(float(level[rows].mean()))
        if progress is not None:
            progress(t, float(sigma.max()))


def sigma_schedule(sigma_max: float, sigma_min: float, n_steps: int, spacing: str = "uniform") -> np.ndarray:
    """n_steps + 1 decreasing noise levels from sigma_max to sigma_min, geometric in sigma;
    'uniform' steps evenly in log sigma, 'quadratic' crowds them towards sigma_min (DDIM §4.2)."""
    u = 1 - np.arange(n_steps + 1) / n_steps
    if spacing == "quadratic":
        u = u ** 2
    elif spacing != "uniform":
        raise FgsdError(f"unknown DDIM spacing '{spacing}': choose uniform or quadratic")
    return sigma_min * (sigma_max / sigma_min) ** u


@torch.no_grad()
def ddim(denoise: Denoiser, x_init: torch.Tensor, sigmas: np.ndarray, eta: float, seeds: list[int]) -> Sampled:
    """VE DDIM from x_init at sigmas[0]:  x0^ = D(x, σ_i),  eps^ = (x - x0^)/σ_i,
    c = η σ_{i+1} sqrt(1 - σ_{i+1}²/σ_i²),  x ← x0^ + sqrt(σ_{i+1}² - c²) eps^ + c z.
    Ends with one denoising step at sigmas[-1]: len(sigmas) evaluations per sample."""
    gens = sample_generators(seeds)
    x = x_init
    rows = torch.arange(len(x), device=x.device)
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        sig = torch.full((len(x),), float(s), device=x.device, dtype=x.dtype)
        x0 = denoise(x, sig, rows)
        eps = (x - x0) / s
        c = eta * s_next * math.sqrt(max(1 - s_next ** 2 / s ** 2, 0.0))
        z = per_sample_randn(gens, x.shape[1:], x.device, x.dtype) if eta > 0 else 0
        x = x0 + math.sqrt(max(s_next ** 2 - c ** 2, 0.0)) * eps + c * z
        if not torch.isfinite(x).all():
            raise FgsdError(f"DDIM: the denoiser returned non-finite values at sigma {s:.4g} (a NaN or inf in the "
                            "model's output: check the checkpoint)")
    x = denoise(x, torch.full((len(x),), float(sigmas[-1]), device=x.device, dtype=x.dtype), rows)
    return Sampled(x, np.full(len(x), len(sigmas)))


def ddim_init(shape: tuple, seeds: list[int], sigma_max: float, mean: float = 0.5, device="cpu",
              dtype=torch.float32) -> torch.Tensor:
    return mean + sigma_max * per_sample_randn(sample_generators(seeds), shape, device, dtype)


@torch.no_grad()
def ddim_invert(denoise: Denoiser, x_clean: torch.Tensor, sigmas: np.ndarray) -> torch.Tensor:
    """Deterministic DDIM run backwards: from the image (taken at sigmas[-1]) up to a latent at
    sigmas[0]. `ddim(..., eta=0)` from that latent reconstructs the image."""
    x = x_clean
    rows = torch.arange(len(x), device=x.device)
    rev = sigmas[::-1]
    for s, s_next in zip(rev[:-1], rev[1:]):
        x0 = denoise(x, torch.full((len(x),), float(s), device=x.device, dtype=x.dtype), rows)
        eps = (x - x0) / s
        x = x0 + s_next * eps
    return x


def slerp(z0: torch.Tensor, z1: torch.Tensor, alpha: float) -> torch.Tensor:
    """Spherical interpolation between latents (per sample), as in DDIM §5.3."""
    a, b = z0.flatten(1), z1.flatten(1)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    theta = torch.arccos(cos.clamp(-1, 1)).view(-1, *[1] * (z0.dim() - 1))
    sin = torch.sin(theta).clamp_min(1e-8)
    return torch.sin((1 - alpha) * theta) / sin * z0 + torch.sin(alpha * theta) / sin * z1
