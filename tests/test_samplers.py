"""DDIM against a Gaussian target, whose MMSE denoiser is exact: the samples' mean and
covariance must match the target's; DDIM inversion must round-trip; samples must not depend on
the batch they were drawn in."""
import numpy as np
import pytest
import torch

from fgsd import samplers
from fgsd.errors import FgsdError

D = 8


@pytest.fixture(scope="module")
def target():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
    cov = q @ torch.diag(torch.linspace(0.01, 0.09, D, dtype=torch.float64)) @ q.T
    mean = 0.5 + 0.1 * torch.randn(D, generator=g, dtype=torch.float64)
    return mean, cov


def exact_denoiser(mean, cov):
    eye = torch.eye(D, dtype=cov.dtype)

    def denoise(y, sigma):
        out = torch.empty_like(y)
        for s in torch.unique(sigma):
            rows = sigma == s
            gain = cov @ torch.linalg.inv(cov + float(s) ** 2 * eye)
            out[rows] = mean + (y[rows] - mean) @ gain.T
        return out
    return denoise


def assert_matches(x, mean, cov, mean_tol, cov_tol):
    emp_mean, emp_cov = x.mean(0), torch.cov(x.T)
    assert (emp_mean - mean).abs().max() < mean_tol, (emp_mean - mean).abs().max()
    rel = torch.linalg.norm(emp_cov - cov) / torch.linalg.norm(cov)
    assert rel < cov_tol, float(rel)


N = 3000


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_matches_the_gaussian(target, eta):
    mean, cov = target
    sig = samplers.sigma_schedule(10.0, 0.002, 200, "uniform")
    x0 = samplers.ddim_init((D,), list(range(N)), 10.0, mean=0.5, dtype=torch.float64)
    x = samplers.ddim(exact_denoiser(mean, cov), x0, sig, eta=eta, seeds=list(range(N, 2 * N)))
    assert_matches(x, mean, cov, mean_tol=0.02, cov_tol=0.1)


def test_a_wrong_denoiser_fails_the_check(target):
    mean, cov = target
    sig = samplers.sigma_schedule(10.0, 0.002, 50, "uniform")
    x0 = samplers.ddim_init((D,), list(range(N)), 10.0, dtype=torch.float64)
    x = samplers.ddim(exact_denoiser(mean, 2 * cov), x0, sig, eta=0.0, seeds=list(range(N)))
    with pytest.raises(AssertionError):
        assert_matches(x, mean, cov, mean_tol=0.02, cov_tol=0.1)


def test_quadratic_spacing_crowds_low_noise():
    u, q = samplers.sigma_schedule(1, 0.01, 10, "uniform"), samplers.sigma_schedule(1, 0.01, 10, "quadratic")
    assert u[0] == q[0] == 1 and u[-1] == pytest.approx(0.01) and q[-1] == pytest.approx(0.01)
    assert np.all(np.diff(u) < 0) and np.all(np.diff(q) < 0) and q[5] < u[5]
    with pytest.raises(FgsdError, match="spacing"):
        samplers.sigma_schedule(1, 0.01, 10, "cubic")


def test_ddim_inversion_round_trip(target):
    mean, cov = target
    den = exact_denoiser(mean, cov)
    sig = samplers.sigma_schedule(2.0, 0.001, 400, "uniform")
    x = mean + torch.randn(50, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) @ \
        torch.linalg.cholesky(cov).T
    latent = samplers.ddim_invert(den, x, sig)
    back = samplers.ddim(den, latent, sig, eta=0.0, seeds=list(range(50)))
    err = (back - x).norm(dim=1) / x.sub(mean).norm(dim=1)
    assert err.max() < 0.05, float(err.max())
    assert (latent - x).norm(dim=1).mean() > 1.0, "the latent is noise-like, not the image"


def test_samples_do_not_depend_on_the_batch(target):
    mean, cov = target
    den = exact_denoiser(mean, cov)
    seeds = [11, 12, 13, 14, 15]
    sig = samplers.sigma_schedule(5.0, 0.01, 20)
    x0 = samplers.ddim_init((D,), seeds, 5.0, dtype=torch.float64)
    full = samplers.ddim(den, x0, sig, eta=1.0, seeds=seeds)
    part = samplers.ddim(den, x0[1:3], sig, eta=1.0, seeds=seeds[1:3])
    torch.testing.assert_close(full[1:3], part)


def test_slerp_endpoints_and_norm():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 16, generator=g), torch.randn(3, 16, generator=g)
    torch.testing.assert_close(samplers.slerp(a, b, 0.0), a)
    torch.testing.assert_close(samplers.slerp(a, b, 1.0), b)
    mid = samplers.slerp(a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True), 0.5)
    torch.testing.assert_close(mid.norm(dim=1), torch.ones(3))
