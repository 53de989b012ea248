"""D2C, the few-shot baseline: InfoNCE against a hand computation, rejection sampling against a
Gaussian-mixture prior whose class posterior is exact, the latent prior's DDIM on Gaussian
latents, the autoencoder's round trip, and the three stages end to end on tiny data."""
import math

import numpy as np
import pytest
import torch

from fgsd import d2c, data, files, generate, kl, samplers
from fgsd.errors import FgsdError


def test_info_nce_by_hand():
    """Two queries, one positive each, two queue negatives, T = 0.5: the loss is the mean over
    queries of -log(e^{q.k/T} / (e^{q.k/T} + sum_n e^{q.n/T}))."""
    q = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    k = torch.tensor([[0.8, 0.6], [0.0, 1.0]])
    queue = torch.tensor([[-1.0, 0.0], [0.0, -1.0]])
    t = 0.5
    by_hand = []
    for qi, ki in zip(q.tolist(), k.tolist()):
        pos = math.exp((qi[0] * ki[0] + qi[1] * ki[1]) / t)
        neg = sum(math.exp((qi[0] * n[0] + qi[1] * n[1]) / t) for n in queue.tolist())
        by_hand.append(-math.log(pos / (pos + neg)))
    assert float(d2c.info_nce(q, k, queue, t)) == pytest.approx(sum(by_hand) / 2, rel=1e-6)


def test_rejection_with_the_exact_posterior_draws_the_class():
    """Prior: 0.3 N(-1, 0.25) + 0.7 N(1.5, 0.5) in 2-d. Accepting each prior draw with the exact
    p(c = 0 | z) must accept at rate 0.3 and return class 0's mean and covariance."""
    g = torch.Generator().manual_seed(0)
    n, pi = 40000, torch.tensor([0.3, 0.7], dtype=torch.float64)
    means = torch.tensor([[-1.0, -1.0], [1.5, 1.5]], dtype=torch.float64)
    var = torch.tensor([0.25, 0.5], dtype=torch.float64)
    c = (torch.rand(n, generator=g, dtype=torch.float64) > pi[0]).long()
    z = means[c] + var[c].sqrt()[:, None] * torch.randn(n, 2, generator=g, dtype=torch.float64)
    logp = torch.log(pi) - ((z[:, None] - means[None]) ** 2).sum(2) / (2 * var) - torch.log(var)  # + const
    post = torch.softmax(logp, dim=1)[:, 0]
    kept, spent = d2c.rejection_sample(post, n, torch.Generator().manual_seed(1))
    assert spent == n and len(kept) / n == pytest.approx(0.3, abs=0.01)
    got = z[kept]
    assert (got.mean(0) - means[0]).abs().max() < 0.02
    torch.testing.assert_close(torch.cov(got.T), 0.25 * torch.eye(2, dtype=torch.float64), atol=0.015, rtol=0)
    kept, spent = d2c.rejection_sample(post, 100, torch.Generator().manual_seed(1))
    assert len(kept) == 100 and spent < n and post[:spent].numel() == spent, "stops at the 100th acceptance"
    with pytest.raises(AssertionError):  # accepting everything is not the class
        assert (z.mean(0) - means[0]).abs().max() < 0.02


def test_latent_ddim_draws_gaussian_latents():
    """The prior's sampler (VE DDIM on latent images, from 0.5 + sigma0 z) with the exact denoiser
    of a Gaussian on 4 x 2 x 2 latents reproduces its mean and covariance (what the learned prior
    is asked to do). Latent images are standardised per channel (mean 0.5, std 0.2), so the plain
    start is right up to a variance factor sigma0^2 / (lam + sigma0^2) >= 0.94 here."""
    g = torch.Generator().manual_seed(0)
    dim = 16
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    cov = q @ torch.diag(torch.linspace(0.005, 0.06, dim, dtype=torch.float64)) @ q.T
    mean = 0.5 + 0.01 * torch.randn(dim, generator=g, dtype=torch.float64)
    den = kl.gaussian_denoiser(mean, cov)
    n = 4000
    sig = samplers.sigma_schedule(1.0, 0.002, 100)
    x0 = samplers.ddim_init((dim,), list(range(n)), 1.0, mean=0.5, dtype=torch.float64)
    x = samplers.ddim(den, x0, sig, 0.0, list(range(n))).x
    assert (x.mean(0) - mean).abs().max() < 0.02
    assert torch.linalg.norm(torch.cov(x.T) - cov) / torch.linalg.norm(cov) < 0.15


def test_latent_images_round_trip():
    z = torch.randn(10, 4, 2, 2) * 3 + 1
    mean, std = d2c.latent_stats(z)
    ell = d2c.to_latent_image(z, mean, std)
    assert ell.mean(dim=(0, 2, 3)).sub(0.5).abs().max() < 1e-5 and ell.std(dim=(0, 2, 3)).sub(0.2).abs().max() < 1e-5
    torch.testing.assert_close(d2c.from_latent_image(ell, mean, std), z)


def test_logistic_classifier_separates_and_is_regularised():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(50, 3, generator=g) + 2, torch.randn(200, 3, generator=g)])
    y = torch.cat([torch.ones(50), torch.zeros(200)])
    r = d2c.fit_logistic(x, y, 0.01)
    p = r(x)
    assert p[:50].mean() > 0.7 > 0.2 > p[50:].mean()
    assert (d2c.fit_logistic(x, y, 100.0)(x)[:50].mean() - 0.2).abs() < 0.1, "strong L2: near the base rate"


def test_views_keep_range_and_shape():
    x = torch.rand(8, 1, 16, 16)
    v = d2c.views(x, torch.Generator().manual_seed(0), 0.25, 0.4)
    assert v.shape == x.shape and 0 <= float(v.min()) and float(v.max()) <= 1 and not torch.equal(v, x)


@pytest.fixture(scope="module")
def stages_run(tmp_path_factory):
    """The three D2C stages on the tiny synthetic textures (16x16 crops -> 4 x 8 x 8 latents)."""
    from conftest import ROOT, write_textures

    from fgsd import config
    tmp = tmp_path_factory.mktemp("d2c")
    cfg = config.load([ROOT / "params.yaml", ROOT / "config" / "smoke.yaml"])
    cfg["data"].update(dataset="folder", folder=str(write_textures(tmp / "tex")), scale=1.0, crop_size=16,
                       train_per_class=48, test_per_class=8, n_unseen=1)
    cfg["device"] = "cpu"
    cfg["d2c"].update(ae_steps=600, ae_batch=32, queue=64, checkpoint_every=200, eval_every=200, prior_steps=200,
                      prior_batch=32, nce_weight=0.1, ae_lr=0.003, protocol="transductive")
    data.prepare(cfg, tmp / "data")
    m = tmp / "models"
    d2c.train_autoencoder(cfg, tmp / "data", m / "ae.pt", m / "ae_log.csv", m / "ae.json", tmp / "state", "cpu")
    d2c.train_prior(cfg, tmp / "data", m / "ae.pt", m / "prior.pt", m / "prior_log.csv", m / "prior.json",
                    tmp / "state", "cpu")
    cfg["sampling"].update(fewshot_n=[1, 5], fewshot_per_n=3, d2c_cap=200, d2c_steps=5)
    return cfg, tmp


def test_the_autoencoder_reconstructs_and_reports_its_probes(stages_run):
    cfg, tmp = stages_run
    metrics = files.load_json(tmp / "models/ae.json")
    assert metrics["test_psnr"] > 23, metrics["test_psnr"]  # i.i.d. pixel noise (std 0.1) in these crops
    assert 0 <= metrics["latent_probe_accuracy"] <= 1 and 0 <= metrics["pixel_probe_accuracy"] <= 1
    log = files.load_csv(tmp / "models/ae_log.csv")
    assert {"reconstruction", "info_nce", "test_psnr"} <= set(log.columns) and log.test_psnr.iloc[-1] > log.test_psnr.iloc[0]


def test_the_contrastive_term_cannot_be_switched_off(stages_run):
    cfg, tmp = stages_run
    bad = {**cfg, "d2c": {**cfg["d2c"], "nce_weight": 0.0}}
    with pytest.raises(FgsdError, match="nce_weight"):
        d2c.train_autoencoder(bad, tmp / "data", tmp / "x.pt", tmp / "x.csv", tmp / "x.json", tmp / "s2", "cpu")


def test_autoencoder_training_resumes_to_the_same_weights(stages_run, caplog):
    cfg, tmp = stages_run
    cfg = {**cfg, "d2c": {**cfg["d2c"], "ae_steps": 40, "checkpoint_every": 10, "eval_every": 20}}
    out = tmp / "resume"
    d2c.train_autoencoder(cfg, tmp / "data", out / "a.pt", out / "a.csv", out / "a.json", out / "sa", "cpu")
    with pytest.raises(InterruptedError):
        d2c.train_autoencoder(cfg, tmp / "data", out / "b.pt", out / "b.csv", out / "b.json", out / "sb", "cpu",
                              interrupt_after=10)
    with caplog.at_level("INFO", logger="fgsd"):
        d2c.train_autoencoder(cfg, tmp / "data", out / "b.pt", out / "b.csv", out / "b.json", out / "sb", "cpu")
    assert "from step 10" in caplog.text and "computed steps 11 to 40 of 40" in caplog.text
    a, b = (torch.load(out / f"{k}.pt", weights_only=False)["state_dict"] for k in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_prior_trains_up_to_where_its_sampler_starts(stages_run, monkeypatch):
    """The latent prior's DDIM starts at sampling.sigma0: the prior trains on that range, not on
    the pixel denoisers' train.sigma_max."""
    cfg, tmp = stages_run
    cfg = {**cfg, "train": {**cfg["train"], "sigma_max": 3.0}, "sampling": {**cfg["sampling"], "sigma0": 0.7},
           "d2c": {**cfg["d2c"], "prior_steps": 3, "eval_every": 3}}
    seen = []
    loss = d2c.denoising_loss
    monkeypatch.setattr(d2c, "denoising_loss", lambda net, x, c, g, top, *a: seen.append(top) or loss(net, x, c, g, top, *a))
    m, out = tmp / "models", tmp / "prior_range"
    d2c.train_prior(cfg, tmp / "data", m / "ae.pt", out / "p.pt", out / "p.csv", out / "p.json", out / "s", "cpu")
    assert seen == [0.7] * 3


def test_d2c_seed_is_the_training_seed(stages_run):
    """`d2c.seed` retrains the autoencoder with another seed; null means the pipeline's seed."""
    cfg, tmp = stages_run
    out, weights = tmp / "seeds", {}
    for d2c_seed in (None, cfg["seed"], cfg["seed"] + 1):
        c = {**cfg, "d2c": {**cfg["d2c"], "ae_steps": 20, "eval_every": 20, "seed": d2c_seed}}
        d2c.train_autoencoder(c, tmp / "data", out / f"{d2c_seed}.pt", out / "l.csv", out / "m.json", out / "s", "cpu")
        weights[d2c_seed] = torch.load(out / f"{d2c_seed}.pt", weights_only=False)["state_dict"]
    same, other = weights[cfg["seed"]], weights[cfg["seed"] + 1]
    assert all(torch.equal(weights[None][k], same[k]) for k in same)
    assert not all(torch.equal(other[k], same[k]) for k in same)


def test_d2c_sets_use_the_fgsd_exemplars_and_count_their_proposals(stages_run, monkeypatch):
    cfg, tmp = stages_run
    chosen = []
    real = generate.exemplars
    monkeypatch.setattr(generate, "exemplars", lambda x, n, key: chosen.append((n, key)) or real(x, n, key))
    m = tmp / "models"
    generate.generate(cfg, "d2c_fewshot", m / "prior.pt", tmp / "data", tmp / "few.npz", "cpu", autoencoder=m / "ae.pt")
    t = files.load_npz(tmp / "few.npz")
    assert chosen == [(1, [0, 12, 3, 1]), (5, [0, 12, 3, 5])], "the FGSD few-shot set's exemplar keys"
    assert t["tried_label"].tolist() == [3, 3] and t["tried_param"].tolist() == [1, 5]
    assert (t["tried_proposals"] <= 200 * 3).all() and t["tried_accepted"].sum() == len(t["label"]) > 0
    assert set(t["label"]) == {3} and set(t["param"]) <= {1, 5}
    assert (t["acceptance_rate"] > 0).all() and (t["acceptance_rate"] <= 1).all()
    np.testing.assert_allclose(t["proposals_per_accepted"], 1 / t["acceptance_rate"])
    assert (t["nfe"] >= 6 + 1).all(), "at least one proposal's prior calls plus the decoder"
    generate.generate(cfg, "d2c", m / "prior.pt", tmp / "data", tmp / "unc.npz", "cpu", autoencoder=m / "ae.pt")
    u = files.load_npz(tmp / "unc.npz")
    assert len(u["images"]) == cfg["sampling"]["per_class"] * 3 and (u["label"] == -1).all()
    assert (u["nfe"] == cfg["sampling"]["d2c_steps"] + 2).all() and (u["gflop"] > 0).all()
