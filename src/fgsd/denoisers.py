"""The one denoiser interface every sampler and estimator takes, and what training shares with
the benchmark.

    denoise(y, sigma, rows) -> x_hat          (EDM's `net(x, sigma, labels)` for this project)

y: a batch of noisy images; sigma: (B,) noise level of each row (a blind network ignores it; the
samplers pass their estimate, DDIM its schedule); rows: (B,) indices of these images in the
caller's full batch, so a denoiser can carry per-sample state (a class centroid, a label)
while samplers drop finished samples from the batch. x_hat = E[x | y] for an MMSE denoiser:
x_hat = y + sigma^2 grad log p_sigma(y) (Miyasawa / Tweedie, METHOD.md §2.1).
"""
from __future__ import annotations

from typing import Protocol

import numpy as np
import torch


class Denoiser(Protocol):
    def __call__(self, y: torch.Tensor, sigma: torch.Tensor, rows: torch.Tensor) -> torch.Tensor: ...


# --- training objective (METHOD.md §2.4, §5) ------------------------------------------------------
def draw_sigma(n: int, g: torch.Generator, sigma_max: float = 1.0) -> torch.Tensor:
    """sigma = sigma_max u^2, u ~ U(0, 1): the authors' training noise law (sigma_max = 1; more
    weight at low noise)."""
    return sigma_max * torch.rand(n, generator=g) ** 2


def loss_weight(sigma: torch.Tensor, kind: str, sigma_data: float) -> torch.Tensor | float:
    """Per-sample weight of the squared error: 1 (the paper's plain loss), or EDM's
    (sigma^2 + sigma_data^2) / (sigma sigma_data)^2, which makes every noise level's expected
    loss about equal (low-noise samples would otherwise barely count)."""
    if kind == "none":
        return 1.0
    return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data).clamp_min(1e-12) ** 2


def denoising_loss(model, clean: torch.Tensor, cond, g: torch.Generator, sigma_max: float = 1.0,
                   weight: str = "none", sigma_data: float = 0.25) -> torch.Tensor:
    """L = E w(sigma) ||f(x + sigma z, phi(x')) - x||^2, summed over pixels, averaged over the
    batch. sigma and z come from `g` (drawn on the CPU: the same numbers on every device)."""
    sigma = draw_sigma(len(clean), g, sigma_max)
    noise = torch.randn(clean.shape, generator=g)
    noisy = clean + sigma.view(-1, 1, 1, 1).to(clean.device) * noise.to(clean.device)
    err = (model(noisy, cond) - clean).pow(2).flatten(1).sum(1)
    w = loss_weight(sigma, weight, sigma_data)
    return (err if weight == "none" else err * w.to(err.device)).mean()


# --- the UNet behind the interface -------------------------------------------------------------------
def unet(model, device, phi: dict | None = None, phi_fine: dict | None = None, switch: torch.Tensor | None = None,
         batch: int = 256) -> Denoiser:
    """The trained network as a Denoiser. phi: per-sample raw block means {block: (N, K)} (rows
    index into it); with phi_fine and switch (N,), a sample is conditioned on phi_fine once its
    noise level is at or below its switch value (Algorithm C')."""
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
    if 0 < n < len(images):
        images = images[np.sort(np.random.default_rng(key).choice(len(images), n, replace=False))]
    with torch.no_grad():
        return {b: v.cpu() for b, v in model.condition(images.to(device), average=True).items()}


def per_sample(phis: list[dict]) -> dict:
    """Per-sample centroids -> the {block: (N, K)} layout `unet` indexes with rows."""
    return {b: torch.cat([p[b] for p in phis]) for b in phis[0]}


def mix(pa: dict, pb: dict, alpha: float) -> dict:
    """phi_alpha = (1 - alpha) phi_a + alpha phi_b (Algorithm C)."""
    return {b: (1 - alpha) * pa[b] + alpha * pb[b] for b in pa}
