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


def _draw(m, c, n, g):
    return m + torch.randn(n, len(m), generator=g, dtype=torch.float64) @ torch.linalg.cholesky(c).T


def _symmetric(x0, x1, d0, d1, sigmas, n_noise=2):
    """Both KL forms of the pair (0, 1) through `class_gaps`, as the density stage integrates them."""
    gaps = kl.class_gaps({0: x0, 1: x1}, kl.by_class({0: d0, 1: d1}), [(0, 1)], sigmas, n_noise,
                         {0: torch.Generator().manual_seed(1), 1: torch.Generator().manual_seed(2)})
    both = gaps[0, 1] + gaps[1, 0]
    return np.array([kl.integrate(sigmas, both[:, 0]), kl.integrate(sigmas, both[:, 1])])


def test_monte_carlo_estimator_matches_the_symmetric_kl_within_5_percent(pair):
    (m0, c0), (m1, c1) = pair
    g = torch.Generator().manual_seed(0)
    x0, x1 = _draw(m0, c0, 4000, g), _draw(m1, c1, 4000, g)
    sym = _symmetric(x0, x1, kl.gaussian_denoiser(m0, c0), kl.gaussian_denoiser(m1, c1), kl.log_grid(1e-3, 1e3, 48))
    truth = kl.gaussian_kl(m0, c0, m1, c1) + kl.gaussian_kl(m1, c1, m0, c0)
    assert sym[0] == pytest.approx(truth, rel=0.05), "MSE-gap form"
    assert sym[1] == pytest.approx(truth, rel=0.05), "difference form"


def test_a_wrong_denoiser_is_detected(pair):
    """The estimator is not blind: a mis-specified denoiser of class 1 gives a clearly different value."""
    (m0, c0), (m1, c1) = pair
    g = torch.Generator().manual_seed(0)
    x0, x1 = _draw(m0, c0, 4000, g), _draw(m1, c1, 4000, g)
    sym = _symmetric(x0, x1, kl.gaussian_denoiser(m0, c0), kl.gaussian_denoiser(m1, 2 * c1), kl.log_grid(1e-3, 1e3, 48))
    truth = kl.gaussian_kl(m0, c0, m1, c1) + kl.gaussian_kl(m1, c1, m0, c0)
    assert abs(sym[0] - truth) > 0.2 * truth


def test_identical_denoisers_give_zero(pair):
    (m0, c0), _ = pair
    x = m0 + torch.randn(100, 6, dtype=torch.float64)
    d = kl.gaussian_denoiser(m0, c0)
    gaps = kl.class_gaps({0: x, 1: x[:50]}, kl.by_class({0: d, 1: d}), [(0, 1)], np.array([0.1, 0.2]), 1,
                         {0: torch.Generator().manual_seed(0), 1: torch.Generator().manual_seed(1)})
    assert set(gaps) == {(0, 1), (1, 0)} and all((v == 0).all() for v in gaps.values())


def test_a_pairs_gaps_do_not_depend_on_the_other_pairs_estimated():
    """Each class's crops are noised from its own generator and its partners share that noise:
    pair (1, 2) comes out the same alone or among all pairs of three classes, and each ordered
    pair's gap equals the pair-by-pair estimate with that noise."""
    classes = {c: _gaussian(4, c, 0.1 * c) for c in range(3)}
    g = torch.Generator().manual_seed(0)
    x = {c: _draw(m, cov, 64, g) for c, (m, cov) in classes.items()}
    den = kl.by_class({c: kl.gaussian_denoiser(*mc) for c, mc in classes.items()})
    sigmas = np.array([0.05, 0.3, 1.0])

    def run(pairs):
        return kl.class_gaps(x, den, pairs, sigmas, 2, {c: torch.Generator().manual_seed(10 + c) for c in classes})
    alone, among = run([(1, 2)]), run([(0, 1), (0, 2), (1, 2)])
    for key in ((1, 2), (2, 1)):
        np.testing.assert_allclose(alone[key], among[key], rtol=1e-12)
    noise = torch.Generator().manual_seed(12)  # class 2's stream, as class_gaps draws it: per sigma, per draw
    expect = np.zeros((len(sigmas), 2))
    for k, s in enumerate(sigmas):
        for _ in range(2):
            y = x[2] + s * torch.randn(x[2].shape, generator=noise, dtype=x[2].dtype)
            lvl = torch.full((len(y),), s, dtype=y.dtype)
            own, other = kl.gaussian_denoiser(*classes[2])(y, lvl), kl.gaussian_denoiser(*classes[0])(y, lvl)
            expect[k] += [float(((other - x[2]) ** 2).sum() - ((own - x[2]) ** 2).sum()) / 128,
                          float(((other - own) ** 2).sum()) / 128]
    np.testing.assert_allclose(among[2, 0], expect, rtol=1e-10)


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
