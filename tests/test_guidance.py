"""Classifier guidance (ADM-G) against a Gaussian mixture, where everything is exact: the mixture
denoiser, each class's denoiser and the class posterior p(c | y, sigma). Guidance with s = 1 and
the exact posterior *is* the class denoiser (grad log p(y|c) = grad log p(y) + grad log p(c|y)),
so both samplers must then draw the class's Gaussian; other scales have no closed form, so only
their trend is tested. Also: the guide network's gradient against finite differences, and its
training (resume, accuracy per sigma band)."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from fgsd import data, guide, kl, samplers
from fgsd.denoisers import Guided

D, N = 8, 3000


class Mixture:
    """p(x) = sum_c pi_c N(mu_c, Sigma_c), with its exact denoisers and class posterior."""

    def __init__(self, means, covs, prior):
        self.means, self.covs = means, covs
        self.log_prior = torch.log(torch.as_tensor(prior, dtype=torch.float64))
        self.classes = [kl.gaussian_denoiser(m, c) for m, c in zip(means, covs)]

    def logits(self, y, sigma):
        """log pi_c + log N(y; mu_c, Sigma_c + sigma^2 I), per row (differentiable in y)."""
        eye = torch.eye(y.shape[1], dtype=y.dtype)
        out = []
        for m, c, lp in zip(self.means, self.covs, self.log_prior):
            cov = c[None] + sigma.view(-1, 1, 1) ** 2 * eye
            diff = (y - m)[..., None]
            maha = (diff.transpose(1, 2) @ torch.linalg.solve(cov, diff)).view(-1)
            out.append(lp - 0.5 * maha - 0.5 * torch.logdet(cov))
        return torch.stack(out, dim=1)

    def denoise(self, y, sigma, rows=None):
        post = torch.softmax(self.logits(y, sigma), dim=1)
        return sum(post[:, k:k + 1] * f(y, sigma) for k, f in enumerate(self.classes))


@pytest.fixture(scope="module")
def mixture():
    g = torch.Generator().manual_seed(1)
    covs = []
    for k in range(2):
        q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
        covs.append(q @ torch.diag(torch.linspace(0.005, 0.04 * (k + 1), D, dtype=torch.float64)) @ q.T)
    means = [torch.full((D,), 0.35, dtype=torch.float64), torch.full((D,), 0.65, dtype=torch.float64)]
    return Mixture(means, covs, [0.5, 0.5])


def assert_matches(x, mean, cov, mean_tol=0.02, cov_tol=0.1):
    assert (x.mean(0) - mean).abs().max() < mean_tol, float((x.mean(0) - mean).abs().max())
    rel = torch.linalg.norm(torch.cov(x.T) - cov) / torch.linalg.norm(cov)
    assert rel < cov_tol, float(rel)


def test_scale_one_with_the_exact_posterior_is_the_class_denoiser(mixture):
    g = torch.Generator().manual_seed(2)
    y = 0.5 + torch.randn(64, D, generator=g, dtype=torch.float64)
    sigma = torch.exp(torch.empty(64, dtype=torch.float64).uniform_(math.log(0.01), math.log(3), generator=g))
    labels = torch.tensor([0, 1] * 32)
    out = Guided(mixture.denoise, mixture.logits, labels, 1.0)(y, sigma, torch.arange(64))
    for c in (0, 1):
        k = labels == c
        torch.testing.assert_close(out[k], mixture.classes[c](y[k], sigma[k]), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_with_scale_one_draws_the_class(mixture, eta):
    sig = samplers.sigma_schedule(10.0, 0.002, 200, "uniform")
    x0 = samplers.ddim_init((D,), list(range(N)), 10.0, mean=0.5, dtype=torch.float64)
    for c in (0, 1):
        den = Guided(mixture.denoise, mixture.logits, torch.full((N,), c), 1.0)
        x = samplers.ddim(den, x0, sig, eta=eta, seeds=list(range(N, 2 * N))).x
        assert_matches(x, mixture.means[c], mixture.covs[c])


def test_a_wrong_scale_fails_the_check(mixture):
    sig = samplers.sigma_schedule(10.0, 0.002, 100, "uniform")
    x0 = samplers.ddim_init((D,), list(range(N)), 10.0, mean=0.5, dtype=torch.float64)
    x = samplers.ddim(Guided(mixture.denoise, mixture.logits, torch.zeros(N), 0.5), x0, sig, 0.0, list(range(N))).x
    with pytest.raises(AssertionError):
        assert_matches(x, mixture.means[0], mixture.covs[0])


def test_higher_scales_concentrate_on_the_class(mixture):
    """No closed form for s != 1: the mean clean posterior p(c | x) of the samples must rise with
    s, and their spread fall."""
    sig = samplers.sigma_schedule(10.0, 0.002, 100, "uniform")
    n = 1000
    x0 = samplers.ddim_init((D,), list(range(n)), 10.0, mean=0.5, dtype=torch.float64)
    mass, spread = [], []
    for s in (0.0, 1.0, 4.0):
        x = samplers.ddim(Guided(mixture.denoise, mixture.logits, torch.zeros(n), s), x0, sig, 0.0, list(range(n))).x
        post = torch.softmax(mixture.logits(x, torch.zeros(n, dtype=torch.float64)), dim=1)[:, 0]
        mass.append(float(post.mean()))
        spread.append(float(torch.cov(x.T).trace()))
    assert mass[0] == pytest.approx(0.5, abs=0.05)
    assert mass[0] < mass[1] < mass[2]
    assert spread[1] > spread[2]


def _never_called(y, sigma):
    raise AssertionError("the guide was called at s = 0")


@pytest.mark.parametrize("sampler", ["ddim", "ddim eta=1", "c2f"])
def test_scale_zero_is_the_unguided_sampler_and_guidance_changes_the_output(mixture, sampler):
    """s = 0 is bitwise the base sampler, without a guide call; s > 0 must change the samples
    in every sampler (a DDIM path that silently ignores the guide is a known bug elsewhere)."""
    n, seeds = 64, list(range(64))
    labels = torch.zeros(n, dtype=torch.long)

    def draw(den):
        if sampler == "c2f":
            return samplers.coarse_to_fine(den, (D,), seeds, sigma0=1.0, sigma_final=0.05, h0=0.1, beta=0.5,
                                           fixed_h=False, max_steps=500, init_mean=0.5, dtype=torch.float64).x
        eta = 1.0 if "eta=1" in sampler else 0.0
        x0 = samplers.ddim_init((D,), seeds, 10.0, mean=0.5, dtype=torch.float64)
        return samplers.ddim(den, x0, samplers.sigma_schedule(10.0, 0.01, 20), eta, seeds).x

    sigma_from = "residual" if sampler == "c2f" else "sampler"
    base = draw(mixture.denoise)
    assert torch.equal(draw(Guided(mixture.denoise, _never_called, labels, 0.0, sigma_from)), base)
    guided = draw(Guided(mixture.denoise, mixture.logits, labels, 2.0, sigma_from))
    assert (guided - base).abs().max() > 0.05


HD = 1024
LAM = torch.tensor([0.09, 0.05, 0.03, 0.01], dtype=torch.float64)


def test_coarse_to_fine_with_scale_one_draws_the_class():
    """The blind sampler on two 1024-d classes of rank 4 whose means differ by 0.1 per pixel: the
    guide reads sigma from the unguided residual, so s = 1 is the class denoiser only up to that
    estimate; the samples must still sit on their class (clean posterior ~1, mean within 0.01)
    where the unguided ones split about evenly."""
    g = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(HD, len(LAM), generator=g, dtype=torch.float64))
    means = [torch.full((HD,), m, dtype=torch.float64) for m in (0.45, 0.55)]

    def class_denoiser(m):
        return lambda y, s, rows=None: m + (((y - m) @ basis) * LAM / (LAM + s[:, None] ** 2)) @ basis.T

    def logits(y, s):
        out = []
        for m in means:  # log N(y; m, B diag(LAM) B^T + s^2 I), up to a constant shared by the classes
            r = y - m
            c = r @ basis
            var = LAM + s[:, None] ** 2
            maha = ((r * r).sum(1) - (c * c).sum(1)) / s ** 2 + (c * c / var).sum(1)
            out.append(-0.5 * maha - 0.5 * torch.log(var).sum(1) - (HD - len(LAM)) * torch.log(s))
        return torch.stack(out, 1)

    def mixture(y, s, rows=None):
        post = torch.softmax(logits(y, s), 1)
        return sum(post[:, k:k + 1] * class_denoiser(m)(y, s) for k, m in enumerate(means))

    n, seeds = 200, list(range(200))
    kw = dict(sigma0=1.0, sigma_final=0.02, h0=0.05, beta=0.5, fixed_h=False, max_steps=2000, init_mean=0.5,
              dtype=torch.float64)
    for c in (0, 1):
        den = Guided(mixture, logits, torch.full((n,), c), 1.0, "residual")
        x = samplers.coarse_to_fine(den, (HD,), seeds, **kw).x
        post = torch.softmax(logits(x, torch.full((n,), 0.02, dtype=torch.float64)), 1)[:, c]
        assert float(post.mean()) > 0.95
        assert abs(float(x.mean()) - float(means[c][0])) < 0.01
    x = samplers.coarse_to_fine(mixture, (HD,), seeds, **kw).x
    post = torch.softmax(logits(x, torch.full((n,), 0.02, dtype=torch.float64)), 1)[:, 0]
    assert 0.3 < float(post.mean()) < 0.7


def test_the_guide_gradient_matches_finite_differences():
    """grad_y log p(c | y, sigma) by autograd through the network, its input scaling
    c_in(sigma) (y - 0.5) included, against central differences in float64."""
    torch.manual_seed(0)
    net = guide.Guide(1, 3, 8, width=8, channel_mult=(1, 2), depth=1, head_channels=8, groups=4).double()
    for p in net.parameters():  # move the zero-initialised convs off zero, so every path carries gradient
        p.data += 0.05 * torch.randn_like(p)
    y = 0.5 + 0.3 * torch.randn(2, 1, 8, 8, dtype=torch.float64)
    sigma = torch.tensor([0.3, 0.8], dtype=torch.float64)
    den = Guided(lambda y, s, rows: y, net, torch.tensor([2, 0]), 1.0)
    grad = den.grad_log_prob(y, sigma, torch.arange(2))
    eps = 1e-6
    for i, j in [(0, 0), (0, 27), (1, 63)]:
        bump = torch.zeros_like(y)
        bump.view(2, -1)[i, j] = eps
        with torch.no_grad():
            lp = [torch.log_softmax(net(y + d, sigma), 1)[i, [2, 0][i]] for d in (bump, -bump)]
        assert float(grad.view(2, -1)[i, j]) == pytest.approx(float(lp[0] - lp[1]) / (2 * eps), rel=1e-5, abs=1e-9)


def test_the_guided_shift_is_s_sigma_squared_times_the_gradient():
    """The wrapper's shift, with the level the sampler hands in, for two scales."""
    torch.manual_seed(0)
    net = guide.Guide(1, 3, 8, width=8, channel_mult=(1, 2), depth=1, head_channels=8, groups=4).double()
    y = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    sigma = torch.tensor([0.1, 0.5, 2.0], dtype=torch.float64)
    labels, rows = torch.tensor([0, 1, 2]), torch.arange(3)
    g = Guided(lambda y, s, r: 0.9 * y, net, labels, 1.0).grad_log_prob(y, sigma, rows)
    for s in (0.5, 3.0):
        out = Guided(lambda y, s, r: 0.9 * y, net, labels, s)(y, sigma, rows)
        torch.testing.assert_close(out, 0.9 * y + s * sigma.view(-1, 1, 1, 1) ** 2 * g)


def test_augment_keeps_shape_range_and_flips():
    x = torch.rand(16, 1, 8, 8)
    out = guide.augment(x, torch.Generator().manual_seed(0), 1.0)  # no zoom: pure flips, exact
    for a, b in zip(x, out):
        assert any(torch.allclose(b, f, atol=1e-5) for f in (a, a.flip(-1), a.flip(-2), a.flip(-1).flip(-2)))
    z = guide.augment(x, torch.Generator().manual_seed(0), 1.25)
    assert z.shape == x.shape and 0 <= float(z.min()) and float(z.max()) <= 1


@pytest.fixture
def guide_data(tiny_cfg, tmp_path):
    cfg = tiny_cfg
    cfg["guide"].update(steps=40, batch_size=16, checkpoint_every=10, eval_every=20, width=8, head_channels=8,
                        groups=4, lr=3e-3)
    data.prepare(cfg, tmp_path / "data")
    return cfg, tmp_path


def _train(cfg, tmp, out, state, **kw):
    o = tmp / out
    return guide.train_guide(cfg, tmp / "data", o / "model.pt", o / "train_log.csv", o / "metrics.json",
                             tmp / state, device="cpu", **kw)


def test_guide_training_resumes_to_the_same_weights(guide_data, caplog):
    cfg, tmp = guide_data
    _train(cfg, tmp, "full", "sa")
    with pytest.raises(InterruptedError):
        _train(cfg, tmp, "resumed", "sb", interrupt_after=10)
    with caplog.at_level("INFO", logger="fgsd"):
        _train(cfg, tmp, "resumed", "sb")
    assert "resuming guide training from step 10" in caplog.text
    assert "computed steps 11 to 40 of 40" in caplog.text
    a = torch.load(tmp / "full/model.pt", weights_only=False)["state_dict"]
    b = torch.load(tmp / "resumed/model.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp / "full/train_log.csv").read_bytes() == (tmp / "resumed/train_log.csv").read_bytes()


def test_guide_log_has_accuracy_per_sigma_band_and_learns(guide_data):
    """Three classes of gratings: clean-ish crops are easy, so held-out accuracy at sigma < 0.05
    must beat chance clearly; every band of the log is present."""
    cfg, tmp = guide_data
    cfg["guide"].update(steps=150, eval_every=75, checkpoint_every=1000)
    _train(cfg, tmp, "g", "s")
    log = pd.read_csv(tmp / "g/train_log.csv")
    bands = [guide.band_name(lo, hi) for lo, hi in zip(guide.BANDS[:-1], guide.BANDS[1:])]
    assert set(bands) <= set(log.columns)
    assert log[bands[0]].iloc[-1] > 0.6  # chance: 1/3
    model, classes = guide.load_guide(tmp / "g/model.pt")
    assert len(classes) == 3 and not any(p.requires_grad for p in model.parameters())


def test_a_guide_no_better_than_chance_is_refused(guide_data):
    cfg, tmp = guide_data
    cfg["guide"].update(lr=1e-9)
    with pytest.raises(Exception, match="no better than chance"):
        _train(cfg, tmp, "bad", "s")
    assert not (tmp / "bad/model.pt").exists()


def test_the_comparison_table_has_every_method_and_no_unseen_adm_g_numbers():
    """One row per method x sampler x knob, cost beside quality; ADM-G has no unseen-class numbers."""
    from fgsd import samples
    rows = []

    def add(set_name, variant, param, **metrics):
        for m, v in metrics.items():
            ext = samples.EXTRACTOR if m in ("kid", "fid", "precision", "recall") else ""
            rows.append(dict(set=set_name, variant=variant, param=param, metric=m, value=v, n_samples=10, n_real=20,
                             extractor=ext))
    for s in (0.0, 2.0):
        add("guidance", "c2f", s, accuracy=0.1 + s / 10, kid=1.0 - s / 10, fid=9.0, precision=0.5, recall=0.5,
            nfe=60.0, gflop=4.0 + s, guide_nfe=60.0 * (s > 0))
    add("conditional", "c2f", 0.0, accuracy=0.22, kid=0.46, fid=14.0, precision=0.4, recall=0.7, nfe=62.0, gflop=4.4)
    add("nfe", "gaussian fit", 0.0, accuracy=0.89, nfe=0.0, gflop=0.0)
    add("fewshot", "c2f", 5.0, accuracy=0.12, nfe=63.0, gflop=4.5)
    table = samples.comparison(pd.DataFrame(rows))
    assert list(table.method) == ["mixture model", "ADM-G", "FGSD", "FGSD", "ADM-G"]
    adm = table[(table.method == "ADM-G") & (table.classes == "seen")].iloc[0]
    assert adm.accuracy == pytest.approx(0.3) and adm.gflop == 6.0 and adm.guide_nfe == 60 and adm.knob == "s=2"
    assert table[table.method == "mixture model"].guide_nfe.iloc[0] == 0
    assert "gaussian fit" not in set(table.sampler), "the no-network control is not a method"
    unseen = table[(table.method == "ADM-G") & (table.classes == "unseen")].iloc[0]
    assert unseen.knob.startswith("n/a") and np.isnan(unseen.accuracy)
    assert table[table.classes == "unseen"].method.tolist() == ["FGSD", "ADM-G"]


def test_the_guide_trains_up_to_where_the_samplers_start(guide_data, monkeypatch):
    """The guide only ever guides from sampling.sigma0 down: it trains on that range, not on the
    denoisers' train.sigma_max (3 in config/sigma3.yaml), whose top would waste its steps."""
    cfg, tmp = guide_data
    cfg["train"]["sigma_max"], cfg["sampling"]["sigma0"] = 3.0, 0.7
    seen = []
    draw = guide.draw_sigma
    monkeypatch.setattr(guide, "draw_sigma", lambda n, g, top, *a: seen.append(top) or draw(n, g, top, *a))
    _train(cfg, tmp, "range", "s_range")
    assert seen and set(seen) == {0.7}
