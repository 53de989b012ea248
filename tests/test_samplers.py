"""Every sampler against a Gaussian target, whose MMSE denoiser is exact: the samples' mean and
covariance must match the target's; DDIM inversion must round-trip; samples must not depend on
the batch they were drawn in.

The coarse-to-fine sampler estimates sigma from the residual, which is only right when most
dimensions carry noise alone (as for images), so its target is a 1024-d Gaussian of rank 4.
Its output is not an exact sample even then: each step loses the posterior variance along the
signal directions. That loss is known in closed form (`predicted_moments`), so the sampler is
checked against it tightly, and against the target itself where the predicted loss is small."""
import numpy as np
import pytest
import torch

from fgsd import kl, samplers
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
    return kl.gaussian_denoiser(mean, cov)  # the MMSE denoiser of N(mean, cov) at each row's sigma


def assert_matches(x, mean, cov, mean_tol, cov_tol):
    emp_mean, emp_cov = x.mean(0), torch.cov(x.T)
    assert (emp_mean - mean).abs().max() < mean_tol, (emp_mean - mean).abs().max()
    rel = torch.linalg.norm(emp_cov - cov) / torch.linalg.norm(cov)
    assert rel < cov_tol, float(rel)


N = 3000

# --- coarse-to-fine (Algorithm A) on a 1024-d Gaussian of rank 4 --------------------------------
HD = 1024
LAM = torch.tensor([0.09, 0.05, 0.03, 0.01], dtype=torch.float64)


@pytest.fixture(scope="module")
def low_rank():
    g = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(HD, len(LAM), generator=g, dtype=torch.float64))
    mean = 0.5 + 0.1 * torch.randn(HD, generator=g, dtype=torch.float64)

    def denoise(y, level, rows=None):  # exact MMSE denoiser at the level handed in, per sample
        c = (y - mean) @ basis
        return mean + (c * LAM / (LAM + level[:, None] ** 2)) @ basis.T
    return mean, basis, denoise


def paper_h(n: int, h0: float, fixed_h: bool) -> list[float]:
    """The step sizes of [K] §4 (h_t = h0 t / (1 + h0 (t - 1))) or h0 throughout, written here
    rather than taken from the sampler, so a wrong schedule in the sampler cannot match itself."""
    return [h0] * n if fixed_h else [h0 * t / (1 + h0 * (t - 1)) for t in range(1, n + 1)]


def predicted_moments(trace, sigma0, h0, beta, fixed_h, offset):
    """Mean and variance of the output along each signal direction, by running the sampler's
    linear recursion on them: c <- (1 - h a) c + gamma z, a = l^2 / (lam + l^2), then the final
    denoising multiplies by lam / (lam + l^2). Only the measured sigma_t come from the trace."""
    m, v = offset, LAM + sigma0 ** 2
    hs = paper_h(len(trace.sigma), h0, fixed_h)
    levels = [sigma0] + [(1 - beta * h) * s for h, s in zip(hs, trace.sigma)]
    for h, s, lev in zip(hs, trace.sigma, levels):
        a = lev ** 2 / (LAM + lev ** 2)
        m, v = (1 - h * a) * m, (1 - h * a) ** 2 * v + ((1 - beta * h) ** 2 - (1 - h) ** 2) * s ** 2
    f = LAM / (LAM + levels[-1] ** 2)
    return f * m, f ** 2 * v


def test_step_size_schedules_by_hand():
    """h0 = 0.01: h_1 = 0.01, h_2 = 0.02 / 1.01, h_3 = 0.03 / 1.02, h_10 = 0.1 / 1.09; fixed: 0.01."""
    assert [samplers.step_size(t, 0.01, False) for t in (1, 2, 3, 10)] == pytest.approx(
        [0.01, 0.0198019802, 0.0294117647, 0.0917431193], abs=1e-10)
    assert [samplers.step_size(t, 0.01, True) for t in (1, 2, 50)] == [0.01, 0.01, 0.01]
    assert samplers.step_size(10 ** 6, 0.01, False) == pytest.approx(1, abs=1e-3)  # tends to 1


# the sampler takes no defaults (they live in params.yaml); these are the tests' settings
C2F = dict(sigma0=1.0, sigma_final=0.01, h0=0.01, beta=0.5, fixed_h=False, max_steps=5000)


def c2f(denoise, shape, seeds, **kw):
    return samplers.coarse_to_fine(denoise, shape, seeds, **{**C2F, **kw})


def run_c2f(low_rank, n, denoise=None, **kw):
    mean, basis, exact = low_rank
    out = c2f(denoise or exact, (HD,), list(range(n)), dtype=torch.float64, **kw)
    x, trace = out.x, out.trace
    c = (x - mean) @ basis
    pm, pv = predicted_moments(trace, 1.0, kw["h0"], kw["beta"], kw.get("fixed_h", False), (0.5 - mean) @ basis)
    return x, c, pm, pv, trace


@pytest.mark.parametrize("h0,beta,fixed_h", [(0.05, 0.5, False), (0.01, 0.05, False), (0.1, 0.5, True)])
def test_coarse_to_fine_matches_its_predicted_moments(low_rank, h0, beta, fixed_h):
    n = 1000
    x, c, pm, pv, trace = run_c2f(low_rank, n, h0=h0, beta=beta, fixed_h=fixed_h)
    se_var = pv * (2 / n) ** 0.5
    assert ((c.var(0) - pv).abs() < 4 * se_var).all(), (c.var(0) / pv)
    assert ((c.mean(0) - pm).abs() < 4 * (pv / n).sqrt()).all()
    off = x - low_rank[0] - c @ low_rank[1].T
    assert off.abs().max() < 1e-3, "noise left outside the signal subspace"
    assert trace.nfe == int(trace.steps.max()) + 1 and len(trace.h) == int(trace.steps.max())
    assert trace.steps.min() < trace.steps.max(), "samples stop on their own"
    assert trace.sigma[0] > 0.9 and trace.sigma[-1] < 0.02 and trace.level[-1] < trace.level[0] / 10
    assert trace.h == pytest.approx(paper_h(len(trace.h), h0, fixed_h), rel=1e-12)


def test_coarse_to_fine_with_small_fixed_steps_matches_the_target(low_rank):
    """h = 0.04: the predicted variance loss is under 5 %, so the samples match the target."""
    n = 1000
    _, c, pm, pv, _ = run_c2f(low_rank, n, h0=0.04, beta=0.5, fixed_h=True)
    assert ((pv / LAM - 1).abs() < 0.05).all()
    assert ((c.var(0) - pv).abs() < 4 * pv * (2 / n) ** 0.5).all()
    assert ((c.var(0) / LAM - 1).abs() < 0.2).all(), c.var(0) / LAM
    assert (c.mean(0).abs() < 4 * (LAM / n).sqrt()).all()


def test_coarse_to_fine_rejects_a_wrong_denoiser(low_rank):
    mean, basis, _ = low_rank

    def wrong(y, level, rows=None):  # believes the signal is twice as strong
        c = (y - mean) @ basis
        return mean + (c * 2 * LAM / (2 * LAM + level[:, None] ** 2)) @ basis.T
    n = 1000
    _, c, _, pv, _ = run_c2f(low_rank, n, denoise=wrong, h0=0.05, beta=0.5)
    assert ((c.var(0) - pv).abs() > 4 * pv * (2 / n) ** 0.5).any()


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_matches_the_gaussian(target, eta):
    mean, cov = target
    sig = samplers.sigma_schedule(10.0, 0.002, 200, "uniform")
    x0 = samplers.ddim_init((D,), list(range(N)), 10.0, mean=0.5, dtype=torch.float64)
    x = samplers.ddim(exact_denoiser(mean, cov), x0, sig, eta=eta, seeds=list(range(N, 2 * N))).x
    assert_matches(x, mean, cov, mean_tol=0.02, cov_tol=0.1)


def test_ddim_from_sigma_1_needs_the_noisy_data_distribution():
    """At sigma0 = 1 a direction with variance lam = 1 is not small against sigma0²: started from
    mean + sigma0 z, deterministic DDIM keeps only sigma0² / (lam + sigma0²) = half its variance;
    started from N(m, Σ + sigma0² I) (what ddim_init: gaussian draws) it reproduces the target."""
    lam = torch.tensor([1.0, 0.05, 0.01], dtype=torch.float64)
    mean = torch.tensor([0.5, 0.4, 0.6], dtype=torch.float64)
    cov = torch.diag(lam)
    sig = samplers.sigma_schedule(1.0, 0.002, 200, "uniform")
    z = samplers.per_sample_randn(samplers.sample_generators(list(range(N))), (3,), dtype=torch.float64)
    matched = samplers.ddim(exact_denoiser(mean, cov), mean + z * (lam + 1).sqrt(), sig, 0.0, list(range(N))).x
    assert_matches(matched, mean, cov, mean_tol=0.05, cov_tol=0.1)
    plain = samplers.ddim(exact_denoiser(mean, cov), mean + z, sig, 0.0, list(range(N))).x
    assert float(plain[:, 0].var()) == pytest.approx(0.5, rel=0.1), "the loss the Gaussian start removes"


def test_a_wrong_denoiser_fails_the_check(target):
    mean, cov = target
    sig = samplers.sigma_schedule(10.0, 0.002, 50, "uniform")
    x0 = samplers.ddim_init((D,), list(range(N)), 10.0, dtype=torch.float64)
    x = samplers.ddim(exact_denoiser(mean, 2 * cov), x0, sig, eta=0.0, seeds=list(range(N))).x
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
    back = samplers.ddim(den, latent, sig, eta=0.0, seeds=list(range(50))).x
    err = (back - x).norm(dim=1) / x.sub(mean).norm(dim=1)
    assert err.max() < 0.05, float(err.max())
    assert (latent - x).norm(dim=1).mean() > 1.0, "the latent is noise-like, not the image"


def test_coarse_to_fine_does_not_depend_on_the_batch(low_rank):
    den = low_rank[2]
    seeds = [21, 22, 23, 24]
    full = c2f(den, (HD,), seeds, h0=0.05, dtype=torch.float64).x
    part = c2f(den, (HD,), seeds[2:], h0=0.05, dtype=torch.float64).x
    torch.testing.assert_close(full[2:], part)


def test_coarse_to_fine_errors_name_the_fix():
    with pytest.raises(FgsdError, match="diverged.*lower h0"):
        c2f(lambda y, s, r: 3 * y, (D,), [0], h0=0.5)
    with pytest.raises(FgsdError, match="did not reach sigma_final.*max_steps=20"):
        c2f(lambda y, s, r: y - 0.5, (D,), [0], max_steps=20)


def test_samples_do_not_depend_on_the_batch(target):
    mean, cov = target
    den = exact_denoiser(mean, cov)
    seeds = [11, 12, 13, 14, 15]
    sig = samplers.sigma_schedule(5.0, 0.01, 20)
    x0 = samplers.ddim_init((D,), seeds, 5.0, dtype=torch.float64)
    full = samplers.ddim(den, x0, sig, eta=1.0, seeds=seeds).x
    part = samplers.ddim(den, x0[1:3], sig, eta=1.0, seeds=seeds[1:3]).x
    torch.testing.assert_close(full[1:3], part)


def test_slerp_endpoints_and_norm():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 16, generator=g), torch.randn(3, 16, generator=g)
    torch.testing.assert_close(samplers.slerp(a, b, 0.0), a)
    torch.testing.assert_close(samplers.slerp(a, b, 1.0), b)
    mid = samplers.slerp(a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True), 0.5)
    torch.testing.assert_close(mid.norm(dim=1), torch.ones(3))


def test_samplers_stop_at_the_first_non_finite_value():
    nan = lambda y, s, r: torch.full_like(y, float("nan"))  # a NaN model
    with pytest.raises(FgsdError, match="non-finite values at step 1"):
        c2f(nan, (D,), [0])
    x0 = samplers.ddim_init((D,), [0], 1.0)
    with pytest.raises(FgsdError, match="DDIM: the denoiser returned non-finite"):
        samplers.ddim(nan, x0, samplers.sigma_schedule(1.0, 0.01, 5), eta=0.0, seeds=[0])
