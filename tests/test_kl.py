"""The density-distance estimator against Gaussian classes, whose KL is closed form."""
import numpy as np
import pytest
import torch

from fgsd import kl


def _gaussian(d, seed, shift):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    eig = torch.linspace(0.05, 0.6, d, dtype=torch.float64)
    return shift + 0.2 * torch.randn(d, generator=g, dtype=torch.float64), q @ torch.diag(eig) @ q.T


@pytest.fixture
def pair():
    return _gaussian(6, 0, 0.0), _gaussian(6, 1, 0.3)


def test_exact_integrand_converges_to_the_closed_form_as_the_grid_is_refined(pair):
    (m0, c0), (m1, c1) = pair
    truth = kl.gaussian_kl(m0, c0, m1, c1)
    errors = []
    for n in (8, 16, 32, 64, 128):
        s = kl.log_grid(1e-3, 1e3, n)
        gap = [kl.gaussian_mse(m0, c0, m1, c1, x) - kl.gaussian_mse(m0, c0, m0, c0, x) for x in s]
        errors.append(abs(kl.integrate(s, np.array(gap)) - truth))
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-3 * truth


def test_monte_carlo_estimator_matches_the_symmetric_kl_within_5_percent(pair):
    (m0, c0), (m1, c1) = pair
    g = torch.Generator().manual_seed(0)
    chol0, chol1 = torch.linalg.cholesky(c0), torch.linalg.cholesky(c1)
    x0 = m0 + torch.randn(4000, 6, generator=g, dtype=torch.float64) @ chol0.T
    x1 = m1 + torch.randn(4000, 6, generator=g, dtype=torch.float64) @ chol1.T
    sigmas = kl.log_grid(1e-3, 1e3, 48)

    def estimate(x, p, q):
        gaps = np.array([kl.mse_gap(x, kl.gaussian_denoiser(*p), kl.gaussian_denoiser(*q), s, 2, g)
                         for s in sigmas])
        return np.array([kl.integrate(sigmas, gaps[:, 0]), kl.integrate(sigmas, gaps[:, 1])])

    sym = estimate(x0, (m0, c0), (m1, c1)) + estimate(x1, (m1, c1), (m0, c0))
    truth = kl.gaussian_kl(m0, c0, m1, c1) + kl.gaussian_kl(m1, c1, m0, c0)
    assert sym[0] == pytest.approx(truth, rel=0.05), "MSE-gap form"
    assert sym[1] == pytest.approx(truth, rel=0.05), "difference form"


def test_a_wrong_denoiser_is_detected(pair):
    """The estimator is not blind: a mis-specified q-denoiser gives a clearly different value."""
    (m0, c0), (m1, c1) = pair
    g = torch.Generator().manual_seed(0)
    x0 = m0 + torch.randn(4000, 6, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(c0).T
    sigmas = kl.log_grid(1e-3, 1e3, 48)
    est = kl.integrate(sigmas, np.array([kl.mse_gap(x0, kl.gaussian_denoiser(m0, c0),
                                                    kl.gaussian_denoiser(m1, 2 * c1), s, 2, g)[0] for s in sigmas]))
    assert abs(est - kl.gaussian_kl(m0, c0, m1, c1)) > 0.2 * kl.gaussian_kl(m0, c0, m1, c1)


def test_identical_denoisers_give_zero(pair):
    (m0, c0), _ = pair
    x = m0 + torch.randn(100, 6, dtype=torch.float64)
    d = kl.gaussian_denoiser(m0, c0)
    value, value_sq, gaps = kl.kl_divergence(x, d, d, np.array([0.1, 0.2]), 1,
                                   torch.Generator().manual_seed(0))
    assert value == 0 and value_sq == 0 and (gaps == 0).all()


def _shapes(d=16):
    """Pairs of Gaussian classes of the shapes texture classes take: shifted means, different
    spectra, nearly low-rank covariances, nearly identical classes."""
    g = torch.Generator().manual_seed(1)
    f64 = dict(dtype=torch.float64)
    eye = torch.eye(d, **f64)
    a = torch.randn(d, d, generator=g, **f64) * 0.02
    c = a @ a.T + 1e-3 * eye
    zero = torch.zeros(d, **f64)
    b0, b1 = torch.randn(d, 4, generator=g, **f64) * 0.1, torch.randn(d, 4, generator=g, **f64) * 0.1
    return {"means": (zero, c, zero + 0.05, c),
            "spectra": (zero, torch.diag(torch.linspace(1e-3, 2e-2, d, **f64)), zero,
                        torch.diag(torch.linspace(2e-2, 1e-3, d, **f64))),
            "low-rank": (zero, b0 @ b0.T + 2e-4 * eye, zero + 0.02, b1 @ b1.T + 2e-4 * eye),
            "near-identical": (zero, c, zero + 0.005, 1.05 * c)}


@pytest.mark.parametrize("shape", list(_shapes()))
def test_the_pipelines_own_grid_with_tails_is_within_3_percent(shape):
    """On the σ grid params.yaml gives the density stage (not a wide test grid), exact Gaussian
    integrands: the tails bring the truncated integral within 3 % (without them: up to 8 % off)."""
    from conftest import ROOT

    from fgsd import config
    a = config.load([ROOT / "params.yaml"])["analysis"]
    s = kl.log_grid(a["kl_sigma_min"], a["kl_sigma_max"], a["kl_n_sigmas"])
    m0, c0, m1, c1 = _shapes()[shape]
    truth = kl.gaussian_kl(m0, c0, m1, c1) + kl.gaussian_kl(m1, c1, m0, c0)
    gap = np.array([kl.gaussian_mse(m0, c0, m1, c1, x) - kl.gaussian_mse(m0, c0, m0, c0, x)
                    + kl.gaussian_mse(m1, c1, m0, c0, x) - kl.gaussian_mse(m1, c1, m1, c1, x) for x in s])
    assert kl.integrate(s, gap) == pytest.approx(truth, rel=0.03)
    assert kl.integrate(s, gap, tails=False) < 0.995 * truth, "the grid alone truncates the integral"
