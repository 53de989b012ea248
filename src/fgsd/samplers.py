"""Samplers for any denoiser callable `denoise(y, sigma) -> x_hat` (sigma: per-image tensor; a
blind network ignores it). One function per algorithm; every random draw comes from a
per-sample generator, so a sample does not depend on the batch it was drawn in.

- `ddim`: DDIM (Song et al. 2021) in variance-exploding form: x_sigma = x0 + sigma * eps.
  eta = 0 is deterministic DDIM, eta = 1 ancestral sampling from the VE posterior.
- `ddim_invert`: the deterministic encoding of an image into a latent at sigma_max.
- `slerp`: spherical interpolation between two latents.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from .errors import FgsdError

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def sample_generators(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def per_sample_randn(gens: list[torch.Generator], shape: tuple, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """One standard normal draw of `shape` per sample, each from its own generator."""
    return torch.stack([torch.randn(shape, generator=g, dtype=dtype) for g in gens]).to(device)


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
def ddim(denoise: Denoiser, x_init: torch.Tensor, sigmas: np.ndarray, eta: float, seeds: list[int]) -> torch.Tensor:
    """VE DDIM from x_init at sigmas[0]:  x0^ = D(x, σ_i),  eps^ = (x - x0^)/σ_i,
    c = η σ_{i+1} sqrt(1 - σ_{i+1}²/σ_i²),  x ← x0^ + sqrt(σ_{i+1}² - c²) eps^ + c z.
    Ends with one denoising step at sigmas[-1]."""
    gens = sample_generators(seeds)
    x = x_init
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        sig = torch.full((len(x),), float(s), device=x.device, dtype=x.dtype)
        x0 = denoise(x, sig)
        eps = (x - x0) / s
        c = eta * s_next * math.sqrt(max(1 - s_next ** 2 / s ** 2, 0.0))
        z = per_sample_randn(gens, x.shape[1:], x.device, x.dtype) if eta > 0 else 0
        x = x0 + math.sqrt(max(s_next ** 2 - c ** 2, 0.0)) * eps + c * z
    return denoise(x, torch.full((len(x),), float(sigmas[-1]), device=x.device, dtype=x.dtype))


def ddim_init(shape: tuple, seeds: list[int], sigma_max: float, mean: float = 0.5, device="cpu",
              dtype=torch.float32) -> torch.Tensor:
    return mean + sigma_max * per_sample_randn(sample_generators(seeds), shape, device, dtype)


@torch.no_grad()
def ddim_invert(denoise: Denoiser, x_clean: torch.Tensor, sigmas: np.ndarray) -> torch.Tensor:
    """Deterministic DDIM run backwards: from the image (taken at sigmas[-1]) up to a latent at
    sigmas[0]. `ddim(..., eta=0)` from that latent reconstructs the image."""
    x = x_clean
    rev = sigmas[::-1]
    for s, s_next in zip(rev[:-1], rev[1:]):
        x0 = denoise(x, torch.full((len(x),), float(s), device=x.device, dtype=x.dtype))
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
