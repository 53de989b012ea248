"""The one denoiser interface every sampler and estimator takes, and what training shares with
the benchmark.

    denoise(y, sigma, rows) -> x_hat          (EDM's `net(x, sigma, labels)` for this project)

y: a batch of noisy images; sigma: (B,) noise level of each row (a blind network ignores it; the
samplers pass their estimate, DDIM its schedule); rows: (B,) indices of these images in the
caller's full batch, so a denoiser can carry per-sample state (a class centroid, a label)
while samplers drop finished samples from the batch. x_hat = E[x | y] for an MMSE denoiser:
x_hat = y + sigma^2 grad log p_sigma(y) (Miyasawa / Tweedie, METHOD.md §2.1). A denoiser may
also set `noise_estimate` (B,) on each call: the blind sampler then reads the noise level from
it instead of from its residual (classifier guidance keeps the unguided level that way).
"""
from __future__ import annotations

from typing import Protocol

import torch

from .runtime import exemplars


class Denoiser(Protocol):
    def __call__(self, y: torch.Tensor, sigma: torch.Tensor, rows: torch.Tensor) -> torch.Tensor: ...


# --- training objective (METHOD.md §2.4, §5) ------------------------------------------------------
SIGMA_LAWS = ("square", "log_uniform", "mixed")


def draw_sigma(n: int, g: torch.Generator, sigma_max: float = 1.0, law: str = "square",
               sigma_min: float = 0.0, square_share: float = 0.5) -> torch.Tensor:
    """square: sigma = sigma_max u^2, u ~ U(0, 1), the authors' training noise law (45 % of draws
    above 0.3 sigma_max). log_uniform: log sigma uniform on [sigma_min, sigma_max], every octave
    drawn equally often (low noise, where the square law starves the network, gets its share).
    mixed: each draw from square with probability square_share, else from log_uniform."""
    u = torch.rand(n, generator=g)
    if law == "square":
        return sigma_max * u ** 2
    if law == "log_uniform":
        return sigma_min * (sigma_max / sigma_min) ** u
    if law == "mixed":
        pick = torch.rand(n, generator=g) < square_share
        return torch.where(pick, sigma_max * u ** 2, sigma_min * (sigma_max / sigma_min) ** u)
    raise ValueError(f"train.sigma_law must be one of {SIGMA_LAWS}, not {law!r}")


def loss_weight(sigma: torch.Tensor, kind: str, sigma_data: float) -> torch.Tensor | float:
    """Per-sample weight of the squared error: 1 (the paper's plain loss), or EDM's
    (sigma^2 + sigma_data^2) / (sigma sigma_data)^2, which makes every noise level's expected
    loss about equal (low-noise samples would otherwise barely count)."""
    if kind == "none":
        return 1.0
    return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data).clamp_min(1e-12) ** 2


def denoising_loss(model, clean: torch.Tensor, cond, g: torch.Generator, sigma_max: float = 1.0,
                   weight: str = "none", sigma_data: float = 0.25, law: str = "square",
                   sigma_min: float = 0.0, square_share: float = 0.5, rows=None) -> torch.Tensor:
    """L = E w(sigma) ||f(x + sigma z, phi(x')) - x||^2, summed over pixels, averaged over the
    batch. sigma and z come from `g` (drawn on the CPU: the same numbers on every device). rows:
    which of the conditioner crops `cond` each crop's x' is (None: one per crop)."""
    sigma = draw_sigma(len(clean), g, sigma_max, law, sigma_min, square_share)
    noise = torch.randn(clean.shape, generator=g)
    noisy = clean + sigma.view(-1, 1, 1, 1).to(clean.device) * noise.to(clean.device)
    err = (model(noisy, cond, rows) - clean).pow(2).flatten(1).sum(1)
    w = loss_weight(sigma, weight, sigma_data)
    return (err if weight == "none" else err * w.to(err.device)).mean()


# --- the UNet behind the interface -------------------------------------------------------------------
def unet(model, device, phi: dict | None = None, phi_fine: dict | None = None, switch: torch.Tensor | None = None,
         batch: int = 64) -> Denoiser:
    """The trained network as a Denoiser. phi: per-sample raw block means {block: (N, K)} (rows
    index into it); with phi_fine and switch (N,), a sample is conditioned on phi_fine once its
    noise level is at or below its switch value (Algorithm C'). batch: crops per forward pass;
    64 runs 1.05-1.25 x faster per crop than 256 on a CPU, where its activations stay in cache."""
    @torch.no_grad()
    def denoise(y, level, rows):
        out = []
        for i in range(0, len(y), batch):
            r = rows[i:i + batch].cpu()
            cond = None
            if phi is not None:
                cond = {b: v[r] for b, v in phi.items()}
                if phi_fine is not None:
                    fine = (level[i:i + batch].cpu() <= switch[r])[:, None]
                    cond = {b: torch.where(fine, phi_fine[b][r], v) for b, v in cond.items()}
                cond = {b: v.to(device) for b, v in cond.items()}
            out.append(model(y[i:i + batch].to(device), cond).to(y.device))
        return torch.cat(out)
    return denoise


def class_centroid(model, images: torch.Tensor, device, n: int = 0, key: list[int] | None = None) -> dict:
    """phi_y for conditioning: the conditional model's raw matched-block means averaged over n
    crops of the class (0 or more than there are: all), drawn with a generator seeded by `key`,
    so a class gets the same exemplars wherever its centroid is needed."""
    images = exemplars(images, n, key)
    with torch.no_grad():
        return {b: v.cpu() for b, v in model.condition(images.to(device), average=True).items()}


def per_sample(phis: list[dict]) -> dict:
    """Per-sample centroids -> the {block: (N, K)} layout `unet` indexes with rows."""
    return {b: torch.cat([p[b] for p in phis]) for b in phis[0]}


def mix(pa: dict, pb: dict, alpha: float) -> dict:
    """phi_alpha = (1 - alpha) phi_a + alpha phi_b (Algorithm C)."""
    return {b: (1 - alpha) * pa[b] + alpha * pb[b] for b in pa}


# --- classifier guidance (ADM-G) around any denoiser ------------------------------------------------
class Guided:
    """ADM-G in VE form (BASELINES.md §1.2):

        x^_s(y, sigma) = x^(y) + s sigma^2 grad_y log p(c | y, sigma)

    Why this is ADM's DDIM rule: with x_t = sqrt(a) x_sigma and sigma^2 = (1 - a) / a, ADM shifts
    eps^ by -sqrt(1 - a) s grad_{x_t} log p, which moves x0^ by ((1 - a) / sqrt(a)) s grad_{x_t}
    log p = s ((1 - a) / a) sqrt(a) grad_{x_t} log p = s sigma^2 grad_{x_sigma} log p, since
    grad_{x_sigma} = sqrt(a) grad_{x_t}. VE DDIM depends only on (x0^, eps^), so this denoiser
    inside `samplers.ddim` is ADM-G DDIM for every eta; in `coarse_to_fine` the same shift
    enters the residual d. With the exact p(c | y, sigma) and s = 1 it is the exact class-c
    denoiser (Tweedie: grad log p(y | c) = grad log p(y) + grad log p(c | y)).

    guide(y, sigma) -> logits (B, K), differentiable in y; labels (N,): each caller row's class.
    sigma_from: 'sampler' uses the level the sampler hands in (DDIM knows it); 'residual'
    uses sigma^ = ||x^(y) - y|| / sqrt(D) of the unguided denoiser (the blind sampler's own
    estimate), recorded per row in `noise_estimate` so that coarse-to-fine steps and stops on
    the unguided level and s leaves its schedule alone (expose_estimate=False: the sampler reads
    the guided residual instead). s = 0 returns x^ untouched, without
    calling the guide. `guide_calls` counts guide forward+backward passes per caller row."""

    def __init__(self, denoise: Denoiser, guide, labels, scale: float, sigma_from: str = "sampler",
                 expose_estimate: bool = True):
        if sigma_from not in ("sampler", "residual"):
            raise ValueError(f"sigma_from must be 'sampler' or 'residual', not {sigma_from!r}")
        self.denoise, self.guide, self.labels = denoise, guide, torch.as_tensor(labels).long()
        self.scale, self.sigma_from, self.expose = float(scale), sigma_from, expose_estimate
        self.guide_calls = torch.zeros(len(self.labels), dtype=torch.long)
        self.noise_estimate: torch.Tensor | None = None

    def __call__(self, y: torch.Tensor, sigma: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        x = self.denoise(y, sigma, rows)
        if self.scale == 0:
            return x
        residual = (x - y).flatten(1).norm(dim=1) / y[0].numel() ** 0.5
        if self.sigma_from == "residual" and self.expose:
            self.noise_estimate = residual
        level = (residual if self.sigma_from == "residual" else sigma).detach().to(y.dtype)
        self.guide_calls[rows.cpu()] += 1
        return x + self.scale * level.view(-1, *[1] * (y.dim() - 1)) ** 2 * self.grad_log_prob(y, level, rows)

    def grad_log_prob(self, y: torch.Tensor, sigma: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """grad_y log p(c_row | y, sigma) by autograd through the guide (its input scaling included)."""
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            logp = torch.log_softmax(self.guide(y, sigma), dim=1)
            picked = logp.gather(1, self.labels[rows.cpu()].to(logp.device).view(-1, 1)).sum()
            return torch.autograd.grad(picked, y)[0].detach()
