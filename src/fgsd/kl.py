"""Density distance through denoisers (METHOD.md §2.5).

For MMSE denoisers x^_p, x^_q of densities p, q (heat-equation / de Bruijn identity):

    KL(p || q) = ∫_0^∞ σ^-3 [ MSE_p(x^_q, σ) - MSE_p(x^_p, σ) ] dσ
               = ∫ σ^-2 [ ... ] d log σ,      MSE_p(g, σ) = E_{x~p, z} ||g(x + σz) - x||²

(total squared error per image, not per pixel). With learned denoisers the integrand is
estimated on held-out images of p, once with the correct and once with the wrong conditioner,
with the same noise for both (common random numbers), then integrated by the trapezoid rule in
log σ over the grid [σ_min, σ_max], plus the two tails the grid leaves out, in closed form from
the end points: below σ_min the gap of smooth densities grows like σ⁴, above σ_max it tends to a
constant (the squared mean difference), so each tail is gap(σ_end) / (2 σ_end²). Without them a
12-point grid over [1/255, 1] misses 1-10 % of the KL of Gaussian classes. The second form,
E ||x^_p(x_σ) - x^_q(x_σ)||², is estimated from the same passes: it equals the MSE gap for MMSE
denoisers and, unlike the gap, can never be negative with learned ones.
The Gaussian helpers give the closed forms the estimator is tested against.
"""
from __future__ import annotations

import numpy as np
import torch

from .denoisers import Denoiser


def log_grid(sigma_min: float, sigma_max: float, n: int) -> np.ndarray:
    return np.geomspace(sigma_min, sigma_max, n)


def integrate(sigmas: np.ndarray, mse_gap: np.ndarray, tails: bool = True) -> float:
    """∫ σ^-3 gap(σ) dσ: the trapezoid rule in log σ over the grid, plus (tails) the closed-form
    tails below and above it, gap(σ_end) / (2 σ_end²) each."""
    s, gap = np.asarray(sigmas, float), np.asarray(mse_gap, float)
    body = float(np.trapezoid(gap / s ** 2, np.log(s)))
    return body + (gap[0] / (2 * s[0] ** 2) + gap[-1] / (2 * s[-1] ** 2) if tails else 0.0)


@torch.no_grad()
def mse_gap(x: torch.Tensor, denoise_p: Denoiser, denoise_q: Denoiser, sigma: float, n_noise: int,
            generator: torch.Generator, batch: int = 512) -> tuple[float, float]:
    """E_{x~p,z} ||x^_q(x_σ) - x||² - ||x^_p(x_σ) - x||² and E ||x^_q(x_σ) - x^_p(x_σ)||²,
    x drawn from p (the rows of `x`)."""
    total, sqdiff, count = 0.0, 0.0, 0
    for _ in range(n_noise):
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        for i in range(0, len(x), batch):
            clean = x[i:i + batch]
            noisy = clean + sigma * z[i:i + batch].to(clean.device)
            level = torch.full((len(clean),), float(sigma), dtype=x.dtype, device=x.device)
            rows = torch.arange(i, i + len(clean), device=x.device)
            out_p, out_q = denoise_p(noisy, level, rows), denoise_q(noisy, level, rows)
            err = lambda out: (out - clean).flatten(1).pow(2).sum(1)
            total += float((err(out_q) - err(out_p)).sum())
            sqdiff += float((out_q - out_p).flatten(1).pow(2).sum(1).sum())
            count += len(clean)
    return total / count, sqdiff / count


def kl_divergence(x_p: torch.Tensor, denoise_p: Denoiser, denoise_q: Denoiser, sigmas: np.ndarray,
                  n_noise: int, generator: torch.Generator) -> tuple[float, float, np.ndarray]:
    """KL(p || q) by the MSE-gap form and by the difference form, and the per-σ gaps."""
    gaps = np.array([mse_gap(x_p, denoise_p, denoise_q, s, n_noise, generator) for s in sigmas])
    return integrate(sigmas, gaps[:, 0]), integrate(sigmas, gaps[:, 1]), gaps


# --- Gaussian closed forms (known answers) -----------------------------------------------------
def gaussian_denoiser(mean: torch.Tensor, cov: torch.Tensor) -> Denoiser:
    """MMSE denoiser of N(mean, cov) at each row's noise σ: mean + cov (cov + σ²I)^-1 (y - mean)."""
    eye = torch.eye(len(mean), dtype=cov.dtype)

    def denoise(y, sigma, rows=None):
        out = torch.empty_like(y)
        for s in torch.unique(sigma):
            k = sigma == s
            gain = cov @ torch.linalg.inv(cov + float(s) ** 2 * eye)
            out[k] = mean + (y[k] - mean) @ gain.T
        return out
    return denoise


def gaussian_kl(m0, c0, m1, c1) -> float:
    """KL(N(m0, c0) || N(m1, c1))."""
    d = len(m0)
    inv1 = torch.linalg.inv(c1)
    dm = m1 - m0
    return float(0.5 * (torch.trace(inv1 @ c0) + dm @ inv1 @ dm - d
                        + torch.logdet(c1) - torch.logdet(c0)))


def gaussian_mse(m_p, c_p, m_q, c_q, sigma: float) -> float:
    """Exact E_{x~N(m_p,c_p), z} ||x^_q(x + σz) - x||² for the linear denoiser of N(m_q, c_q)."""
    d = len(m_p)
    eye = torch.eye(d, dtype=c_p.dtype)
    a = c_q @ torch.linalg.inv(c_q + sigma ** 2 * eye)  # x^_q(y) = m_q + a (y - m_q)
    resid = a - eye                                      # error = (a - I) x + a σ z + (I - a) m_q
    bias = resid @ (m_p - m_q)
    return float(torch.trace(resid @ c_p @ resid.T) + sigma ** 2 * torch.trace(a @ a.T) + bias @ bias)
