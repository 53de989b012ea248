"""Reference denoisers that need no training, fitted to the training crops alone. A learned
denoiser's PSNR means something only beside them: one that does not beat them is not trained yet.

- `trivial`: every pixel replaced by the mean of the noisy crop (blind).
- `gaussian_class`: the exact MMSE (Wiener) denoiser of the crop's class modelled as a stationary
  Gaussian, N(m_c, Σ_c) with Σ_c circulant, so diagonal in the orthonormal 2-D DFT:
      x̂ = m_c + F⁻¹[ λ_c / (λ_c + σ²) · F(y − m_c) ],   λ_c(k) = E |F(x − m_c)(k)|²  over class c's crops.
- `gaussian_mixture`: the exact MMSE denoiser of the mixture Σ_c π_c N(m_c, Σ_c), which does not
  know the class: x̂ = Σ_c p(c | y) x̂_c(y), with
      log p(y | c) = −½ Σ_k |F(y − m_c)(k)|² / (λ_c(k) + σ²) − ½ Σ_k log(λ_c(k) + σ²) + const.
  Gaussian classes make "knowing the class" worth exactly gaussian_class − gaussian_mixture.
- `g_infinity`: the limit of that worth as σ → ∞ for exact MMSE denoisers,
      G∞ = 10 log10( E‖x − m‖² / E_y E‖x − m_y‖² )   (m: the mean crop, m_y: the class mean crop).

The Gaussian references are handed the true σ (the learned networks are blind): an advantage
that only makes them harder to beat.
"""
from __future__ import annotations

import math

import torch

from .denoisers import Denoiser


def _fft(x: torch.Tensor) -> torch.Tensor:
    return torch.fft.fft2(x.double(), norm="ortho")


class StationaryGaussians:
    """Per-class constant mean (per channel), power spectrum and prior, from training crops."""

    def __init__(self, x: torch.Tensor, labels: torch.Tensor):
        self.classes = torch.unique(labels)
        self.mean = torch.stack([x[labels == c].double().mean(dim=(0, 2, 3)) for c in self.classes])[..., None, None]
        self.spectrum = torch.stack([(_fft(x[labels == c] - self.mean[k]).abs() ** 2).mean(0)
                                     for k, c in enumerate(self.classes)])          # (K, C, H, W)
        counts = torch.stack([(labels == c).sum() for c in self.classes]).double()
        self.log_prior = torch.log(counts / counts.sum())

    def index(self, labels: torch.Tensor) -> torch.Tensor:
        """Positions of `labels` in this model's classes."""
        return torch.searchsorted(self.classes, labels)

    def wiener(self, y: torch.Tensor, sigma: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """x̂ under class k (one index per row)."""
        m, lam = self.mean[k], self.spectrum[k]
        gain = lam / (lam + sigma.double().view(-1, 1, 1, 1) ** 2)
        return (m + torch.fft.ifft2(gain * _fft(y - m), norm="ortho").real).to(y.dtype)

    def _class_terms(self, y: torch.Tensor, sigma: torch.Tensor):
        """Per class k: (F(y − m_k), λ_k + σ²), one class at a time, so memory does not grow with
        the number of classes (F(y − m_k) = F(y) − F(m_k), and a constant m_k lives at DC alone)."""
        fy = _fft(y)
        s2 = sigma.double().view(-1, 1, 1, 1) ** 2
        dc = math.sqrt(y.shape[-2] * y.shape[-1])
        for k in range(len(self.classes)):
            resid = fy.clone()
            resid[..., 0, 0] -= self.mean[k, :, 0, 0] * dc
            yield resid, self.spectrum[k] + s2

    def posterior(self, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """p(c | y) under the mixture, (B, K)."""
        loglik = torch.stack([-0.5 * (resid.abs() ** 2 / var + torch.log(var)).flatten(1).sum(1)
                              for resid, var in self._class_terms(y, sigma)], dim=1)
        return torch.softmax(loglik + self.log_prior, dim=1)

    def noisy_sample(self, k: torch.Tensor, sigma: float, gens: list[torch.Generator]) -> torch.Tensor:
        """One draw per row of N(m_k, Σ_k + σ² I), the fitted class k seen through noise σ:
        m_k + F⁻¹[√(λ_k + σ²) · F(w)], w white (each row from its own generator)."""
        shape = self.spectrum.shape[1:]
        w = torch.stack([torch.randn(shape, generator=g, dtype=torch.float64) for g in gens])
        amp = torch.sqrt(self.spectrum[k] + sigma ** 2)
        return (self.mean[k] + torch.fft.ifft2(amp * _fft(w), norm="ortho").real).float()

    def mixture(self, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Σ_k p(k | y) x̂_k(y), summed in the Fourier domain (one inverse FFT)."""
        post = self.posterior(y, sigma)
        mean = (post @ self.mean[:, :, 0, 0]).view(len(y), -1, 1, 1)
        acc = torch.zeros(y.shape, dtype=torch.complex128)
        for k, (resid, var) in enumerate(self._class_terms(y, sigma)):
            acc += post[:, k].view(-1, 1, 1, 1) * (self.spectrum[k] / var) * resid
        return (mean + torch.fft.ifft2(acc, norm="ortho").real).to(y.dtype)


def trivial() -> Denoiser:
    return lambda y, sigma, rows: y.mean(dim=(1, 2, 3), keepdim=True).expand_as(y)


def gaussian_class(model: StationaryGaussians, labels: torch.Tensor) -> Denoiser:
    """The class-known Wiener denoiser; `labels` holds each row's class (rows index into it)."""
    k = model.index(labels)
    return lambda y, sigma, rows: model.wiener(y, sigma, k[rows])


def gaussian_mixture(model: StationaryGaussians) -> Denoiser:
    return lambda y, sigma, rows: model.mixture(y, sigma)


def reference_denoisers(model: StationaryGaussians, labels: torch.Tensor) -> dict:
    """The three references, keyed (model, conditioning) as the PSNR tables name them."""
    return {("trivial-mean", "none"): trivial(), ("gaussian-mixture", "none"): gaussian_mixture(model),
            ("gaussian-class", "class"): gaussian_class(model, labels)}


def g_infinity(x: torch.Tensor, labels: torch.Tensor) -> float:
    """The σ → ∞ limit of the class-known minus class-blind MMSE PSNR gain (dB)."""
    x = x.double()
    total = ((x - x.mean(0)) ** 2).flatten(1).sum(1).mean()
    within = torch.cat([((x[labels == c] - x[labels == c].mean(0)) ** 2).flatten(1).sum(1) for c in torch.unique(labels)])
    return 10 * math.log10(float(total / within.mean()))
