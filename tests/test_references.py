"""The reference denoisers against closed forms: stationary Gaussian classes have a known MMSE,
the Fourier-domain class posterior must equal the dense-covariance Bayes rule, and G∞ follows
from the between- and within-class variances."""
import math

import numpy as np
import pytest
import torch

from fgsd import references as R

H = 8


def stationary(n, spectrum, mean, g):
    """n fields N(mean, Σ) with Σ circulant of eigenvalues `spectrum` (H x H, symmetric)."""
    w = torch.randn(n, 1, H, H, generator=g, dtype=torch.float64)
    return mean + torch.fft.ifft2(spectrum.sqrt() * torch.fft.fft2(w, norm="ortho"), norm="ortho").real


def spectrum(scale):
    k = torch.fft.fftfreq(H, dtype=torch.float64)
    r2 = k[:, None] ** 2 + k[None, :] ** 2
    return 0.05 * torch.exp(-r2 / scale)  # symmetric in k -> -k, so the fields are real


@pytest.fixture(scope="module")
def two_classes():
    g = torch.Generator().manual_seed(0)
    lam = [spectrum(0.02), spectrum(0.2)]
    x = torch.cat([stationary(4000, lam[0], 0.3, g), stationary(4000, lam[1], 0.6, g)])
    labels = torch.cat([torch.zeros(4000, dtype=torch.long), torch.ones(4000, dtype=torch.long)])
    return x, labels, lam, g


@pytest.mark.parametrize("sigma", [0.05, 0.3, 1.0])
def test_wiener_reaches_the_closed_form_mmse(two_classes, sigma):
    x, labels, lam, g = two_classes
    model = R.StationaryGaussians(x, labels)
    test = stationary(2000, lam[1], 0.6, g)
    y = test + sigma * torch.randn(test.shape, generator=g, dtype=torch.float64)
    out = R.gaussian_class(model, torch.ones(len(y), dtype=torch.long))(y, torch.full((len(y),), sigma), torch.arange(len(y)))
    mse = ((out - test) ** 2).flatten(1).sum(1).mean()
    mmse = (lam[1] * sigma ** 2 / (lam[1] + sigma ** 2)).sum()  # per image, summed over frequencies
    assert float(mse) == pytest.approx(float(mmse), rel=0.05)
    wrong = R.gaussian_class(model, torch.zeros(len(y), dtype=torch.long))(y, torch.full((len(y),), sigma),
                                                                            torch.arange(len(y)))
    assert ((wrong - test) ** 2).flatten(1).sum(1).mean() > 1.05 * mmse, "the other class's Wiener filter is worse"


def test_posterior_equals_the_dense_bayes_rule(two_classes):
    x, labels, _, g = two_classes
    model = R.StationaryGaussians(x, labels)
    sigma = 0.4
    y = x[::997] + sigma * torch.randn(x[::997].shape, generator=g, dtype=torch.float64)
    # the same Gaussians written as dense covariances: Σ_c = U^H diag(λ_c) U with U the unitary DFT
    eye = torch.eye(H * H, dtype=torch.float64).view(-1, 1, H, H)
    u = torch.fft.fft2(eye, norm="ortho").reshape(H * H, H * H).T          # column j = U e_j
    logp = []
    for k in range(2):
        cov = (u.conj().T @ torch.diag(model.spectrum[k, 0].flatten().to(torch.complex128)) @ u).real
        dist = torch.distributions.MultivariateNormal(model.mean[k, 0].flatten().expand(H * H),
                                                      cov + sigma ** 2 * torch.eye(H * H, dtype=torch.float64))
        logp.append(dist.log_prob(y.flatten(1)) + model.log_prior[k])
    dense = torch.softmax(torch.stack(logp, 1), 1)
    torch.testing.assert_close(model.posterior(y, torch.full((len(y),), sigma)), dense, rtol=1e-6, atol=1e-9)
    mix = R.gaussian_mixture(model)(y, torch.full((len(y),), sigma), torch.arange(len(y)))
    each = [R.gaussian_class(model, torch.full((len(y),), k))(y, torch.full((len(y),), sigma), torch.arange(len(y)))
            for k in range(2)]
    torch.testing.assert_close(mix, dense[:, :1, None, None] * each[0] + dense[:, 1:, None, None] * each[1])


def test_g_infinity_from_between_and_within_variance():
    g = torch.Generator().manual_seed(1)
    v = 0.04
    x = torch.cat([0.2 + v ** 0.5 * torch.randn(5000, 1, 4, 4, generator=g),
                   0.8 + v ** 0.5 * torch.randn(5000, 1, 4, 4, generator=g)])
    labels = torch.cat([torch.zeros(5000, dtype=torch.long), torch.ones(5000, dtype=torch.long)])
    assert R.g_infinity(x, labels) == pytest.approx(10 * math.log10((v + 0.09) / v), abs=0.05)


def test_trivial_replaces_every_pixel_by_the_crop_mean():
    y = torch.arange(8.0).view(2, 1, 2, 2)
    out = R.trivial()(y, torch.ones(2), torch.arange(2))
    np.testing.assert_allclose(out[:, 0].numpy(), [[[1.5, 1.5], [1.5, 1.5]], [[5.5, 5.5], [5.5, 5.5]]])


def test_noisy_sample_has_the_fitted_class_spectrum_plus_noise(two_classes):
    """DDIM's Gaussian start: draws of N(m_k, Σ_k + σ² I) have the class mean and, per frequency,
    power λ_k + σ² (each draw from its own seeded generator, so the batch does not matter)."""
    x, labels, lam, _ = two_classes
    model = R.StationaryGaussians(x, labels)
    gens = [torch.Generator().manual_seed(s) for s in range(3000)]
    draws = model.noisy_sample(torch.ones(3000, dtype=torch.long), 0.5, gens).double()
    assert float(draws.mean()) == pytest.approx(0.6, abs=0.01)
    power = (torch.fft.fft2(draws - 0.6, norm="ortho").abs() ** 2).mean(0)[0]
    torch.testing.assert_close(power, lam[1] + 0.25, rtol=0.1, atol=0)
    again = model.noisy_sample(torch.ones(2, dtype=torch.long), 0.5, [torch.Generator().manual_seed(s) for s in (7, 8)])
    torch.testing.assert_close(again, model.noisy_sample(torch.ones(3000, dtype=torch.long), 0.5,
                                                        [torch.Generator().manual_seed(s) for s in range(3000)])[7:9])
