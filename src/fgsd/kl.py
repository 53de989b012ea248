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
from tqdm import tqdm

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
def class_gaps(x: dict[int, torch.Tensor], denoise: Denoiser, pairs: list[tuple[int, int]], sigmas: np.ndarray,
               n_noise: int, noise: dict[int, torch.Generator]) -> dict[tuple[int, int], np.ndarray]:
    """For each ordered pair (a, b) of the unordered `pairs`, per σ: the MSE gap
    E_{x~p_a,z} ||x^_b(x_σ) - x||² - ||x^_a(x_σ) - x||² and E ||x^_b(x_σ) - x^_a(x_σ)||² (columns 0, 1),
    x^_c being `denoise` with every row's conditioner set to class c (its `rows` argument: class ids).
    Class a's crops x[a] are noised once per σ and draw, from its own generator noise[a], and that
    noise serves all of a's partners, its own denoiser running once (not once per pair): the same
    common random numbers per pair, about half the network calls of pair-by-pair estimation, and a
    pair's value does not depend on which other pairs are estimated."""
    partners: dict[int, list[int]] = {}
    for a, b in pairs:
        partners.setdefault(a, []).append(b)
        partners.setdefault(b, []).append(a)
    gaps = {(a, b): np.zeros((len(sigmas), 2)) for a, bs in partners.items() for b in bs}
    for a, bs in tqdm(sorted(partners.items()), desc="KL gaps, per class", unit="class", mininterval=2):
        clean, conds = x[a], [a] + bs
        n = len(clean)
        rows = torch.tensor(conds).repeat_interleave(n)
        for k, s in enumerate(sigmas):
            for _ in range(n_noise):
                noisy = clean + s * torch.randn(clean.shape, generator=noise[a], dtype=clean.dtype).to(clean.device)
                level = torch.full((n * len(conds),), float(s), dtype=clean.dtype, device=clean.device)
                out = denoise(noisy.repeat((len(conds),) + (1,) * (noisy.dim() - 1)), level, rows).view(
                    len(conds), *clean.shape)
                err = (out - clean).flatten(2).pow(2).sum(2)  # (conditioner, crop)
                for j, b in enumerate(bs, start=1):
                    gaps[a, b][k] += [float((err[j] - err[0]).sum()) / (n * n_noise),
                                      float((out[j] - out[0]).flatten(1).pow(2).sum()) / (n * n_noise)]
    return gaps


def by_class(denoisers: dict[int, Denoiser]) -> Denoiser:
    """One Denoiser from one per class: row i is denoised by denoisers[rows[i]] (the interface
    `class_gaps` reads, for denoisers that are not one conditional network)."""
    def denoise(y, sigma, rows):
        out = torch.empty_like(y)
        for c, d in denoisers.items():
            k = rows == c
            if k.any():
                out[k] = d(y[k], sigma[k], rows[k])
        return out
    return denoise


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
