"""Sample sets on tiny trained models: every set writes the shared columns, the same seed gives
byte-identical files, interpolation rows share their noise, and class mixing switches the
conditioner at the requested noise level."""
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import train_into

from fgsd import checkpoints, d2c, data, denoisers, files, generate, guide, network, samplers, stages
from fgsd.runtime import to_float


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import ROOT, write_textures

    from fgsd import config
    tmp = tmp_path_factory.mktemp("gen")
    cfg = config.load([ROOT / "params.yaml", ROOT / "config" / "smoke.yaml"])
    cfg["data"].update(dataset="folder", folder=str(write_textures(tmp / "tex")), scale=1.0, crop_size=16,
                       train_per_class=24, test_per_class=6, n_unseen=1)
    cfg["train"].update(batch_size=16, eval_every=6, eval_crops_per_class=3)
    cfg["device"] = "cpu"
    data.prepare(cfg, tmp / "data")
    for kind in ("mixture", "conditional"):
        cfg["train"][kind]["steps"] = 40
        init = {"init": tmp / "models/mixture/model.pt"} if kind == "conditional" else {}
        train_into(cfg, kind, tmp / "data", tmp / "models" / kind, tmp / "state", device="cpu", **init)
    cfg["guide"].update(steps=40, batch_size=16, eval_every=20, checkpoint_every=100)
    g = tmp / "models" / "guide"
    guide.train_guide(cfg, tmp / "data", g / "model.pt", g / "train_log.csv", g / "metrics.json", tmp / "state", "cpu")
    # D2C's two stages, transductive so that the held-out class has proposals to accept
    cfg["d2c"].update(ae_steps=60, ae_batch=16, queue=32, eval_every=30, checkpoint_every=100, prior_steps=40,
                      prior_batch=16, protocol="transductive")
    a, pr = tmp / "models" / "d2c_autoencoder", tmp / "models" / "d2c_prior"
    d2c.train_autoencoder(cfg, tmp / "data", a / "model.pt", a / "train_log.csv", a / "metrics.json", tmp / "state",
                          "cpu")
    d2c.train_prior(cfg, tmp / "data", a / "model.pt", pr / "model.pt", pr / "train_log.csv", pr / "metrics.json",
                    tmp / "state", "cpu")
    cfg["sampling"].update(sigma_final=0.1, beta=0.5, h0=0.05, fewshot_n=[1, 5, 500], d2c_cap=200)
    return cfg, tmp


def _model(tmp, name):
    return tmp / "models" / stages.SAMPLE_SETS[name].model / "model.pt"


def _inputs(tmp, name):
    """The set's files beyond model and data (the guide), as the rule passes them."""
    return {k: tmp / "models" / Path(v).parent.name / "model.pt" for k, v in stages.SAMPLE_SETS[name].inputs.items()}


@pytest.mark.parametrize("name", stages.SAMPLE_SETS)
def test_every_set_writes_the_shared_columns(trained, name):
    cfg, tmp = trained
    out = tmp / f"{name}.npz"
    generate.generate(cfg, name, _model(tmp, name), tmp / "data", out, "cpu", seconds=tmp / f"{name}.csv",
                      **_inputs(tmp, name))
    t = files.load_npz(out)
    n = len(t["images"])
    assert n > 0 and t["images"].dtype == np.uint8 and t["images"].shape[1:] == (1, 16, 16)
    for col in ("label", "class_b", "variant", "param", "nfe", "seed"):
        assert len(t[col]) == n, col
    assert (t["nfe"][t["variant"] != "gaussian fit"] > 1).all()  # the one row that uses no network
    generate.generate(cfg, name, _model(tmp, name), tmp / "data", tmp / f"{name}-again.npz", "cpu", **_inputs(tmp, name))
    assert out.read_bytes() == (tmp / f"{name}-again.npz").read_bytes(), "same seed, same file"


def test_set_contents(trained):
    cfg, tmp = trained
    s = cfg["sampling"]
    cond = files.load_npz(tmp / "conditional.npz")
    assert np.bincount(cond["label"]).tolist() == [s["per_class"]] * 3
    assert len(np.unique(cond["seed"])) == len(cond["seed"]), "every sample has its own noise"
    interp = files.load_npz(tmp / "interpolation.npz")
    c2f = interp["variant"] == "c2f"
    assert sorted(set(interp["param"][c2f])) == s["alphas"]
    assert len(np.unique(interp["seed"][c2f])) == s["pairs"] * s["per_pair"], "one noise seed per row"
    few = files.load_npz(tmp / "fewshot.npz")
    assert set(few["label"]) == {3} and sorted(set(few["param"])) == [1, 5, 24], "N is capped by the crops there are"
    inv = files.load_npz(tmp / "inversion.npz")
    test = data.load_split(tmp / "data", "test")
    k = s["inversion_per_class"]
    want = np.concatenate([test["images"][test["labels"] == c][:k] for c in range(3)])
    assert np.array_equal(inv["reference"], want), "the round trip starts from the first test crops of each class"
    rmse = (to_float(inv["images"]) - to_float(inv["reference"])).flatten(1).pow(2).mean(1).sqrt().numpy()
    np.testing.assert_allclose(inv["roundtrip_rmse"], rmse, atol=1 / 255)  # up to the uint8 rounding
    nfe = files.load_npz(tmp / "nfe.npz")
    ddim = [v for v in dict.fromkeys(nfe["variant"]) if v.startswith("ddim")]
    assert (nfe["nfe"][nfe["variant"] == "gaussian fit"] == 0).all()
    assert ddim == [f"ddim {k}" for k in s["ddim_steps"]] + [f"ddim {k} mixture start" for k in s["ddim_steps"]]
    assert all((nfe["nfe"][nfe["variant"] == f"ddim {k}"] == k + 1).all() for k in s["ddim_steps"])
    k = s["ddim_steps"][-1]
    assert not np.array_equal(nfe["images"][nfe["variant"] == f"ddim {k}"],
                              nfe["images"][nfe["variant"] == f"ddim {k} mixture start"]), "the start knows no class"
    gflop = nfe["gflop"] / np.maximum(nfe["nfe"], 1)
    assert np.allclose(gflop[nfe["nfe"] > 0], gflop[nfe["nfe"] > 0][0]), "one denoiser call costs the same everywhere"


def test_guidance_set_counts_the_guide_and_keeps_seeds_across_scales(trained):
    """Every scale x sampler draws the same seeds and labels; s = 0 calls no guide and costs the
    denoiser alone; s > 0 calls the guide once per denoiser call and costs more; guidance moves
    the samples."""
    cfg, tmp = trained
    t = files.load_npz(tmp / "guidance.npz")
    s = cfg["sampling"]
    blocks = list(dict.fromkeys(zip(t["param"].tolist(), t["variant"].tolist())))
    assert {p for p, _ in blocks} == set(s["guidance_scales"]) and len({v for _, v in blocks}) == 3
    first = (t["param"] == blocks[0][0]) & (t["variant"] == blocks[0][1])
    assert np.bincount(t["label"][first]).tolist() == [s["guidance_per_class"]] * 3
    for p, v in blocks:
        k = (t["param"] == p) & (t["variant"] == v)
        assert np.array_equal(t["seed"][k], t["seed"][first]) and np.array_equal(t["label"][k], t["label"][first])
        if p == 0:
            assert (t["guide_nfe"][k] == 0).all()
        else:
            assert (t["guide_nfe"][k] == t["nfe"][k]).all()
    per_call = t["gflop"] / t["nfe"]
    assert (per_call[t["param"] > 0] > 1.3 * per_call[t["param"] == 0].max()).all()
    ddim = [v for _, v in blocks if v.startswith("ddim")][0]
    lo, hi = min(s["guidance_scales"]), max(s["guidance_scales"])
    assert not np.array_equal(t["images"][(t["param"] == lo) & (t["variant"] == ddim)],
                              t["images"][(t["param"] == hi) & (t["variant"] == ddim)])
    seconds = files.load_csv(tmp / "guidance.csv")
    assert len(seconds) == len(blocks) and (seconds.seconds > 0).all()


class Recorder(torch.nn.Module):
    """Stands in for the network: returns each sample's (scalar) conditioner as its output."""

    def forward(self, y, cond):
        return cond["mid"][:, :1, None, None].expand_as(y).clone()


def test_mixing_switches_the_conditioner_at_the_requested_level():
    coarse, fine = {"mid": torch.zeros(4, 2)}, {"mid": torch.ones(4, 2)}  # class a -> 0, class b -> 1
    den = denoisers.unet(Recorder(), "cpu", coarse, fine, torch.tensor([0.0, 0.3, 0.3, 1.0]), batch=3)
    out = den(torch.zeros(4, 1, 2, 2), torch.tensor([0.5, 0.5, 0.2, 0.5]), torch.arange(4))
    assert out[:, 0, 0, 0].tolist() == [0.0, 0.0, 1.0, 1.0]
    # rows say which samples the batch holds once others have finished
    out = den(torch.zeros(2, 1, 2, 2), torch.tensor([0.2, 0.5]), torch.tensor([1, 3]))
    assert out[:, 0, 0, 0].tolist() == [1.0, 1.0]


def test_mixing_set_runs_class_a_coarse_then_class_b_fine(trained, monkeypatch):
    """The real set function (pairs, seeds, conditioners, sampler), with the Recorder as network
    and one grey level per class as centroid, so a sample ends at the grey level of the class it
    was last conditioned on. A switch at sigma0 conditions on class b from the first step; one
    below every level never leaves class a. Swapping a and b in the set fails."""
    cfg, tmp = trained
    sigma0 = cfg["sampling"]["sigma0"]
    cfg = {**cfg, "sampling": {**cfg["sampling"], "mixing_sigmas": [1e-9, sigma0]}}
    grey = lambda c: 0.2 + 0.2 * c
    monkeypatch.setattr(generate.Context, "model", lambda self: setattr(self, "stop", 0.02) or Recorder())
    monkeypatch.setattr(generate, "_class_centroids",
                        lambda ctx, model, labels: {c: {"mid": torch.full((1, 2), grey(c))} for c in labels})
    ctx = generate.Context(cfg, "mixing", _model(tmp, "mixing"), tmp / "data", "cpu")
    got = generate.set_mixing(ctx)
    assert len(got["label"]) == 2 * cfg["sampling"]["pairs"] * cfg["sampling"]["per_pair"]
    assert (got["label"] < got["class_b"]).all()
    for switch, ends_as in ((1e-9, got["label"]), (sigma0, got["class_b"])):
        rows = got["param"] == switch
        level = to_float(got["images"][rows]).mean(dim=(1, 2, 3))
        torch.testing.assert_close(level, torch.tensor([grey(c) for c in ends_as[rows]], dtype=level.dtype),
                                   atol=1 / 255, rtol=0)


def test_centroid_exemplars_are_seeded_and_capped(trained):
    cfg, tmp = trained
    model, _ = checkpoints.load(tmp / "models/conditional/model.pt", network.UNet, ("conditional",))
    crops = to_float(data.load_split(tmp / "data", "train")["images"][:10])
    a = denoisers.class_centroid(model, crops, "cpu", 3, [0, 1])
    b = denoisers.class_centroid(model, crops, "cpu", 3, [0, 1])
    c = denoisers.class_centroid(model, crops, "cpu", 3, [0, 2])
    torch.testing.assert_close(a, b)
    assert not torch.equal(a["mid"], c["mid"])
    torch.testing.assert_close(denoisers.class_centroid(model, crops, "cpu", 0, [0]),
                               denoisers.class_centroid(model, crops, "cpu", 99, [0]))


class Offset(torch.nn.Module):
    """A 'denoiser' that adds a constant: its sigma-hat on any image is exactly that constant."""
    match = ()

    def __init__(self, c):
        super().__init__()
        self.c = c

    def forward(self, y, cond=None):
        return y + self.c


def test_samplers_stop_at_the_networks_own_error_floor():
    clean = torch.rand(10, 1, 8, 8)
    assert generate.stop_level(Offset(0.02), clean, 0.01, 1.25, 1.0, "cpu") == pytest.approx(0.025)
    assert generate.stop_level(Offset(0.002), clean, 0.01, 1.25, 1.0, "cpu") == 0.01, "never below sigma_final"
    assert generate.stop_level(Offset(0.02), clean, 0.01, 0.0, 1.0, "cpu") == 0.01, "factor 0: sigma_final only"
    assert generate.stop_level(Offset(0.9), clean, 0.01, 1.25, 1.0, "cpu") == 0.5, "at most half of sigma0"


def test_ddim_starts_where_sampling_ddim_init_says(trained):
    """With a denoiser that returns its input, DDIM ends where it started: the class's Gaussian
    draw through sigma0 (`gaussian`), or the training mean plus sigma0 noise (`mean`)."""
    cfg, tmp = trained
    identity = lambda y, sigma, rows: y
    labels, seeds = np.array([0, 1, 2]), [5, 6, 7]
    for init in ("gaussian", "mean"):
        cfg = {**cfg, "sampling": {**cfg["sampling"], "ddim_init": init}}
        ctx = generate.Context(cfg, "nfe", _model(tmp, "nfe"), tmp / "data", "cpu")
        ctx.stop = 0.05
        x, _ = ctx.ddim(identity, seeds, 4, labels)
        want = (ctx.gaussian_draws(labels, seeds, cfg["sampling"]["sigma0"]) if init == "gaussian" else
                samplers.ddim_init(ctx.shape, seeds, cfg["sampling"]["sigma0"], mean=ctx.init_mean))
        torch.testing.assert_close(x, want)
