import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import train_cli, train_into

from fgsd import centroids, checkpoints, data, files, network, runtime, train
from fgsd.errors import FgsdError
from fgsd.runtime import generator


@pytest.fixture
def prepared(tiny_cfg, tmp_path):
    data.prepare(tiny_cfg, tmp_path / "data")
    return tiny_cfg, tmp_path


def _weights(path):
    return torch.load(path, weights_only=False)["state_dict"]


def _same_weights(a, b):
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _counting_steps(monkeypatch) -> list:
    """Each call of the training loss appends to the returned list: the steps really computed."""
    calls = []
    real = train.denoising_loss
    monkeypatch.setattr(train, "denoising_loss", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def _interrupted_and_resumed(cfg: dict, kind: str, tmp, monkeypatch):
    """Train `kind` into tmp/resumed, interrupted after step 4, then again; the second run must
    resume (compute fewer than all steps). Returns its model file."""
    with pytest.raises(train.Interrupted):
        train_into(cfg, kind, tmp / "data", tmp / "resumed", tmp / "state_b", interrupt_after=4)
    computed = _counting_steps(monkeypatch)
    train_into(cfg, kind, tmp / "data", tmp / "resumed", tmp / "state_b")
    assert 0 < len(computed) < cfg["train"][kind]["steps"], "the run was not resumed"
    return tmp / "resumed" / "model.pt"


@pytest.mark.parametrize("kind", ["conditional", "mixture"])
def test_resumed_training_ends_with_the_same_weights(prepared, kind, monkeypatch, caplog):
    """Training is a pure function of seed and step, so equal weights alone do not prove a resume:
    the second run must also say so and compute only the steps after the saved state."""
    cfg, tmp = prepared
    steps = cfg["train"][kind]["steps"]
    train_into(cfg, kind, tmp / "data", tmp / "full", tmp / "state_a")
    with pytest.raises(train.Interrupted):
        train_into(cfg, kind, tmp / "data", tmp / "resumed", tmp / "state_b", interrupt_after=4)
    assert (tmp / "state_b" / f"{kind}.pt").is_file()
    assert not (tmp / "resumed" / "model.pt").exists()
    saved_at = torch.load(tmp / "state_b" / f"{kind}.pt", weights_only=False)["step"]
    assert 4 <= saved_at < steps
    computed = _counting_steps(monkeypatch)
    with caplog.at_level("INFO", logger="fgsd"):
        train_into(cfg, kind, tmp / "data", tmp / "resumed", tmp / "state_b")
    assert f"resuming {kind} training from step {saved_at}" in caplog.text
    assert len(computed) == steps - saved_at
    assert _same_weights(tmp / "full" / "model.pt", tmp / "resumed" / "model.pt")
    assert (tmp / "full" / "train_log.csv").read_bytes() == (tmp / "resumed" / "train_log.csv").read_bytes()
    assert not (tmp / "state_b" / f"{kind}.pt").exists(), "state is removed once the model is final"


def test_state_from_other_params_is_not_resumed(prepared, monkeypatch):
    cfg, tmp = prepared
    with pytest.raises(train.Interrupted):
        train_into(cfg, "mixture", tmp / "data", tmp / "a", tmp / "state", interrupt_after=4)
    cfg["train"]["lr"] = 0.002
    computed = _counting_steps(monkeypatch)
    train_into(cfg, "mixture", tmp / "data", tmp / "a", tmp / "state")
    assert len(computed) == cfg["train"]["mixture"]["steps"], "a state saved with other params was resumed"
    train_into(cfg, "mixture", tmp / "data", tmp / "b", tmp / "fresh")
    assert _same_weights(tmp / "a" / "model.pt", tmp / "b" / "model.pt")


def test_outputs_and_log(prepared):
    cfg, tmp = prepared
    final = train_into(cfg, "conditional", tmp / "data", tmp / "m", tmp / "s")
    log = pd.read_csv(tmp / "m" / "train_log.csv")
    assert list(log["step"]) == [6, 12]
    assert {"step", "epoch", "lr", "train_loss", "psnr_mean", "psnr@1", "wrong@1"} <= set(log.columns)
    assert np.isfinite(log["train_loss"]).all()
    assert final["psnr_mean"] == pytest.approx(log["psnr_mean"].iloc[-1], abs=1e-3)  # CSV keeps 6 digits
    psnr = [c for c in log.columns if c.startswith("psnr@")]
    assert log["psnr_mean"].iloc[-1] == pytest.approx(log[psnr].iloc[-1].mean(), abs=1e-4), "wrong@ is not in the mean"
    cost = files.load_json(tmp / "m" / "metrics.json")["wrong_exemplar_cost_db"]
    assert cost["1"] == pytest.approx(log["psnr@1"].iloc[-1] - log["wrong@1"].iloc[-1], abs=1e-4)
    c = files.load_json(tmp / "m" / "config.json")
    assert c["kind"] == "conditional" and c["params"]["train.conditional"]["steps"] == 12
    model, meta = checkpoints.load(tmp / "m" / "model.pt", network.UNet, ("conditional",))
    manifest = files.load_json(tmp / "data" / "manifest.json")
    assert model.match == tuple(cfg["model"]["match"]), "the checkpoint rebuilds the matched blocks it was trained with"
    assert model.matching == cfg["model"]["matching"]
    assert meta["classes"] == manifest["classes"] + manifest["unseen_classes"]


def test_conditioners_are_other_crops_of_the_same_class():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    for epoch in range(5):
        order, partner = data.epoch_plan(generator(0, 1, epoch), labels)
        assert sorted(order.tolist()) == list(range(9))
        assert (labels[partner] == labels).all()
        assert (partner != torch.arange(9)).all()
    _, p0 = data.epoch_plan(generator(0, 1, 0), labels)
    _, p1 = data.epoch_plan(generator(0, 1, 1), labels)
    assert not torch.equal(p0, p1), "pairs are re-drawn every epoch"


def test_per_class_conditioners_are_one_other_crop_of_each_class():
    """One crop per class (sorted label order), of that class, outside the batch whenever the
    class has crops outside it; each batch crop's row points at its own class's crop."""
    labels = torch.tensor([0] * 4 + [1] * 3 + [2] * 5)
    for epoch in range(5):
        order, partner = data.epoch_plan(generator(0, 1, epoch), labels)
        for start in range(0, 12, 4):
            idx = order[start:start + 4]
            crops, rows = data.class_conditioners(idx, partner, labels)
            assert labels[crops].tolist() == [0, 1, 2]
            assert (labels[crops][rows] == labels[idx]).all()
            for crop in crops.tolist():
                if (labels == labels[crop]).sum() > (labels[idx] == labels[crop]).sum():
                    assert crop not in idx.tolist(), "a crop conditions itself though its class has others"
    whole = torch.tensor([0, 0, 1, 1, 1])  # class 0 lies wholly in the batch: one of its own crops it is
    crops, rows = data.class_conditioners(torch.tensor([0, 1, 2]), torch.tensor([1, 0, 3, 4, 2]), whole)
    assert crops.tolist() == [1, 3] and rows.tolist() == [0, 0, 1]  # class 1: the partner of crop 2, not itself
    gappy = torch.tensor([2, 2, 7, 7, 9])
    crops, rows = data.class_conditioners(torch.tensor([0, 4]), torch.tensor([1, 0, 3, 2, 4]), gappy)
    assert gappy[crops].tolist() == [2, 7, 9] and rows.tolist() == [0, 2]


def test_per_class_conditioner_runs_one_crop_per_class_and_resumes(prepared, monkeypatch, caplog):
    """train.conditional.conditioner: per_class feeds the loss one crop per seen class and each
    batch crop's row; it trains another model than per_crop, resumes exactly, is recorded, and
    runs per_crop (with a warning) when a batch holds no more crops than there are classes."""
    cfg, tmp = prepared
    cfg["train"]["conditional"]["conditioner"] = "per_class"
    seen, real = [], train.denoising_loss
    monkeypatch.setattr(train, "denoising_loss", lambda *a, **k: seen.append(
        (len(a[1]), len(a[2]), k["rows"])) or real(*a, **k))
    train_into(cfg, "conditional", tmp / "data", tmp / "shared", tmp / "s")
    recorded = files.load_json(tmp / "shared" / "config.json")
    n_classes = len(recorded["train_classes"])
    assert recorded["conditioner"] == "per_class" and recorded["params"]["train.conditional"]["conditioner"] == "per_class"
    assert len(seen) == cfg["train"]["conditional"]["steps"]
    assert all(n == cfg["train"]["batch_size"] and k == n_classes and len(rows) == n for n, k, rows in seen)
    monkeypatch.undo()
    assert _same_weights(tmp / "shared" / "model.pt", _interrupted_and_resumed(cfg, "conditional", tmp, monkeypatch))
    cfg["train"]["conditional"]["conditioner"] = "per_crop"
    train_into(cfg, "conditional", tmp / "data", tmp / "each", tmp / "s")
    assert not _same_weights(tmp / "shared" / "model.pt", tmp / "each" / "model.pt")
    cfg["train"].update(batch_size=n_classes)
    cfg["train"]["conditional"]["conditioner"] = "per_class"
    with caplog.at_level("WARNING", logger="fgsd"):
        train_into(cfg, "conditional", tmp / "data", tmp / "few", tmp / "s")
    assert "conditioner: per_class runs per_crop here" in caplog.text
    assert files.load_json(tmp / "few" / "config.json")["conditioner"] == "per_crop"


def test_wrong_conditioners_are_crops_of_another_class():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    for stream in range(5):
        wrong = data.other_class_partner(generator(0, 3, stream), labels)
        assert (labels[wrong] != labels).all()
    gappy = torch.tensor([2, 2, 7, 7, 9])  # labels of a subset of the classes
    assert (gappy[data.other_class_partner(generator(0, 3), gappy)] != gappy).all()
    drawn = torch.stack([labels[data.other_class_partner(generator(0, 4, i), labels)] for i in range(200)])
    assert set(drawn[:, 0].tolist()) == {1, 2}, "every other class can be drawn"


def test_a_conditional_model_that_ignores_its_exemplar_is_warned_about(caplog):
    sigmas = [0.3, 1.0]
    used = {"psnr@0.3": 25.0, "wrong@0.3": 25.0, "psnr@1": 20.0, "wrong@1": 19.0}  # uses it at high noise only
    ignored = {"psnr@0.3": 25.0, "wrong@0.3": 25.0, "psnr@1": 20.0, "wrong@1": 19.95}
    assert train.wrong_exemplar_cost(used, sigmas) == pytest.approx({"0.3": 0.0, "1": 1.0})
    assert train.wrong_exemplar_cost({"psnr@1": 20.0}, [1.0]) == {}, "no wrong@ columns: not a conditional model"
    train.warn_if_exemplar_ignored(train.wrong_exemplar_cost(used, sigmas), "conditional")
    assert "ignores its exemplar" not in caplog.text
    train.warn_if_exemplar_ignored(train.wrong_exemplar_cost(ignored, sigmas), "conditional")
    assert "the conditional model ignores its exemplar" in caplog.text


def test_single_class_model_trains_on_y0_only(prepared):
    cfg, tmp = prepared
    cfg["train"]["single"]["init"] = "scratch"
    train_into(cfg, "single", tmp / "data", tmp / "m", tmp / "s")
    assert files.load_json(tmp / "m" / "config.json")["train_classes"] == ["tex0"]
    cfg["train"]["single"]["class"] = files.load_json(tmp / "data" / "manifest.json")["unseen_classes"][0]
    with pytest.raises(FgsdError, match="unseen"):
        train_into(cfg, "single", tmp / "data", tmp / "m2", tmp / "s")
    cfg["train"]["single"]["class"] = "nope"
    with pytest.raises(FgsdError, match="train.single.class"):
        train_into(cfg, "single", tmp / "data", tmp / "m2", tmp / "s")


def _same_shared_weights(mixture, tuned):
    """The tuned model holds the mixture model's every weight; its own extra ones (the conditional
    model's per-channel w) are at their initial 1."""
    wm, wt = _weights(mixture), _weights(tuned)
    extra = set(wt) - set(wm)
    return (all(k.startswith("match_weight.") for k in extra) and all(torch.equal(wm[k], wt[k]) for k in wm)
            and all(torch.equal(wt[k], torch.ones_like(wt[k])) for k in extra))


@pytest.mark.parametrize(("kind", "matching"), [("single", "replace"), ("conditional", "replace"),
                                              ("conditional", "shift")])
def test_a_model_fine_tunes_the_mixture_model(prepared, kind, matching):
    """train.<kind>.init: mixture loads the mixture model before the first step (at a vanishing
    rate the tuned model *is* the mixture model, in either matching form; from scratch it is not),
    records the file's checksum, and refuses a missing init, an init for another kind and a
    missing file."""
    cfg, tmp = prepared
    cfg["model"]["matching"] = matching
    train_into(cfg, "mixture", tmp / "data", tmp / "mix", tmp / "s")
    init = tmp / "mix" / "model.pt"
    cfg["train"]["lr"] = 1e-30
    cfg["train"][kind]["init"] = "mixture"
    train_into(cfg, kind, tmp / "data", tmp / "tuned", tmp / "s", init=init)
    assert _same_shared_weights(init, tmp / "tuned" / "model.pt")
    assert files.load_json(tmp / "tuned" / "config.json")["init_sha256"] == files.sha256(init)
    cfg["train"][kind]["init"] = "scratch"
    train_into(cfg, kind, tmp / "data", tmp / "scratch", tmp / "s")
    assert not _same_shared_weights(init, tmp / "scratch" / "model.pt")
    with pytest.raises(FgsdError, match="only a single-class or conditional model with train.<kind>.init: mixture"):
        train_into(cfg, kind, tmp / "data", tmp / "x", tmp / "s", init=init)
    cfg["train"][kind]["init"] = "mixture"
    with pytest.raises(FgsdError, match=f"'train.{kind}.init' is 'mixture'.*needs init="):
        train_into(cfg, kind, tmp / "data", tmp / "x", tmp / "s")
    with pytest.raises(FgsdError, match="only a single-class or conditional model"):
        train_into(cfg, "mixture", tmp / "data", tmp / "x", tmp / "s", init=init)
    with pytest.raises(FgsdError, match="missing model file"):
        train_into(cfg, kind, tmp / "data", tmp / "x", tmp / "s", init=tmp / "nope.pt")
    cfg["model"]["widths"] = [w * 2 for w in cfg["model"]["widths"]]
    with pytest.raises(FgsdError, match="is not params 'model'"):
        train_into(cfg, kind, tmp / "data", tmp / "x", tmp / "s", init=init)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_a_gpu_is_a_clear_error(prepared):
    cfg, tmp = prepared
    with pytest.raises(FgsdError, match="no CUDA device"):
        train_into(cfg, "mixture", tmp / "data", tmp / "m", tmp / "s", device="cuda")


def test_centroids_stage(prepared):
    cfg, tmp = prepared
    train_into(cfg, "conditional", tmp / "data", tmp / "m", tmp / "s")
    centroids.compute(cfg, tmp / "m" / "model.pt", tmp / "data", tmp / "f" / "phi.npz", tmp / "f" / "centroids.csv",
                      device="cpu")
    phi = files.load_npz(tmp / "f" / "phi.npz")
    assert phi["phi_train"].shape == (72, 8 + 16 + 16 + 32 + 16 + 16)
    assert phi["centroids_train"].shape == (3, phi["phi_train"].shape[1])
    # centroid = mean of the class's (w-weighted) features; variance = mean squared distance to it
    k0 = phi["phi_train"][phi["labels_train"] == 0]
    np.testing.assert_allclose(phi["centroids_train"][0], k0.mean(0), rtol=1e-5)
    mid = slice(40, 72)
    np.testing.assert_allclose(phi["within_var_train"][0, 3], ((k0[:, mid] - k0[:, mid].mean(0)) ** 2).sum(1).mean(),
                               rtol=1e-4)
    table = pd.read_csv(tmp / "f" / "centroids.csv")
    assert set(table["split"]) == {"train", "test", "unseen"}
    assert set(table["layer"]) == {"enc1", "enc2", "enc3", "mid", "dec3", "dec2"}


def test_killed_process_resumes_to_the_same_weights(prepared, tmp_path):
    """A real SIGKILL mid-run, then a restart: same final weights as an uninterrupted run."""
    cfg, tmp = prepared
    cfg["train"]["mixture"]["steps"] = 400
    cfg["train"].update(checkpoint_every=20, eval_every=400)
    import yaml
    params = tmp / "params.yaml"
    params.write_text(yaml.safe_dump(cfg))
    def cmd(out, state):
        return [sys.executable, "-m", "fgsd", *train_cli("mixture", tmp / "data", tmp / out, tmp / state),
                "--params", str(params)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd("killed", "state"), env=env, stderr=subprocess.DEVNULL)
    state = tmp / "state" / "mixture.pt"
    deadline = time.time() + 120
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state.exists() and not (tmp / "killed" / "model.pt").exists()
    saved_at = torch.load(state, weights_only=False)["step"]
    rerun = subprocess.run(cmd("killed", "state"), env=env, check=True, stderr=subprocess.PIPE, text=True).stderr
    subprocess.run(cmd("clean", "state2"), env=env, check=True, stderr=subprocess.DEVNULL)
    assert f"resuming mixture training from step {saved_at}" in rerun
    assert f"computed steps {saved_at + 1} to 400 of 400" in rerun, "the restart recomputed steps it had saved"
    assert _same_weights(tmp / "killed" / "model.pt", tmp / "clean" / "model.pt")
    assert (tmp / "killed" / "train_log.csv").read_bytes() == (tmp / "clean" / "train_log.csv").read_bytes()


def test_learning_rate_schedules():
    t = dict(lr=1e-3, lr_schedule="step", lr_decay_every=300, lr_decay_factor=0.5)
    assert [train.learning_rate(t, s, 1500) for s in (0, 299, 300, 900)] == [1e-3, 1e-3, 5e-4, 1.25e-4]
    t["lr_schedule"] = "cosine"
    assert train.learning_rate(t, 0, 1000) == 1e-3
    assert train.learning_rate(t, 500, 1000) == pytest.approx(5e-4)
    assert train.learning_rate(t, 999, 1000) == pytest.approx(1e-3 * 0.5 * (1 + np.cos(np.pi * 0.999)))


def test_ema_follows_the_moving_average():
    net, ema = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        ema.weight.fill_(0.0), ema.bias.fill_(0.0), net.weight.fill_(1.0), net.bias.fill_(2.0)
    for _ in range(3):
        train.ema_update(ema, net, 0.9)
    torch.testing.assert_close(ema.weight, torch.full((1, 2), 1 - 0.9 ** 3))
    torch.testing.assert_close(ema.bias, torch.full((1,), 2 * (1 - 0.9 ** 3)))


def test_loss_weights_and_sigma_law():
    from fgsd import denoisers
    s = torch.tensor([0.01, 0.25, 1.0])
    assert denoisers.loss_weight(s, "none", 0.25) == 1.0
    torch.testing.assert_close(denoisers.loss_weight(s, "edm", 0.25), (s ** 2 + 0.0625) / (s * 0.25) ** 2)
    a, b = denoisers.draw_sigma(1000, generator(0)), denoisers.draw_sigma(1000, generator(0), 3.0)
    torch.testing.assert_close(b, 3 * a)
    assert a.max() <= 1 and float((a < 0.01).float().mean()) == pytest.approx(0.1, abs=0.03)  # P(u < 0.1)
    c = denoisers.draw_sigma(4000, generator(0), 1.0, "log_uniform", 0.001)  # log10 sigma ~ U(-3, 0)
    assert 0.001 <= c.min() and c.max() <= 1
    for below, p in ((0.01, 1 / 3), (0.1, 2 / 3)):  # each decade holds a third of the draws
        assert float((c < below).float().mean()) == pytest.approx(p, abs=0.03)
    # mixed: P(sigma > t) = share (1 - sqrt(t)) + (1 - share) log(1 / t) / log(1 / sigma_min)
    m = denoisers.draw_sigma(8000, generator(0), 1.0, "mixed", 0.001, square_share=0.25)
    for t in (0.3, 0.01):
        want = 0.25 * (1 - t ** 0.5) + 0.75 * np.log(1 / t) / np.log(1000)
        assert float((m > t).float().mean()) == pytest.approx(want, abs=0.02)
    torch.testing.assert_close(denoisers.draw_sigma(100, generator(0), 1.0, "mixed", 0.001, square_share=1.0)[:1],
                               a[:1])  # share 1 draws the square law's first value (its u comes first)
    with pytest.raises(ValueError, match="sigma_law"):
        denoisers.draw_sigma(4, generator(0), 1.0, "uniform")


def test_training_with_ema_resumes_to_the_same_weights(prepared, monkeypatch):
    cfg, tmp = prepared
    cfg["train"].update(ema=0.9, lr_schedule="cosine", loss_weight="edm", sigma_max=2.0)
    train_into(cfg, "mixture", tmp / "data", tmp / "full", tmp / "state_a")
    assert _same_weights(tmp / "full" / "model.pt", _interrupted_and_resumed(cfg, "mixture", tmp, monkeypatch))
    cfg["train"]["ema"] = 0.0
    train_into(cfg, "mixture", tmp / "data", tmp / "raw", tmp / "state_c")
    assert not _same_weights(tmp / "full" / "model.pt", tmp / "raw" / "model.pt"), "the EMA weights are saved"


def test_compiled_steps_train_the_saved_model_and_resume_exactly(prepared, monkeypatch):
    """train.compile (the default): the compiled step must train the module that is evaluated and
    saved (it shares its weights), land within float noise of the eager run, and a compiled run
    killed mid-way must resume to the same weights, as the eager one does."""
    cfg, tmp = prepared
    cfg["train"]["compile"] = False
    eager = train_into(cfg, "conditional", tmp / "data", tmp / "eager", tmp / "state_e")
    cfg["train"]["compile"] = True
    full = train_into(cfg, "conditional", tmp / "data", tmp / "full", tmp / "state_a")
    assert files.load_json(tmp / "full" / "config.json")["training_steps"] == "compiled"
    assert files.load_json(tmp / "eager" / "config.json")["training_steps"] == "eager"
    assert not _same_weights(tmp / "full" / "model.pt", tmp / "eager" / "model.pt"), "the compiled step never ran"
    for key, value in eager.items():  # 12 steps of Adam: the two runs differ only by rounding (up to 0.07 dB
        assert full[key] == pytest.approx(value, abs=0.1), key  # seen at 1/255, where these models are poor)
    assert _same_weights(tmp / "full" / "model.pt", _interrupted_and_resumed(cfg, "conditional", tmp, monkeypatch))


def test_a_machine_that_cannot_compile_trains_eagerly_and_says_why(prepared, monkeypatch, caplog):
    cfg, tmp = prepared
    cfg["train"]["compile"] = True

    def no_compiler(fn, *args, **kwargs):
        def fails(*a, **k):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")
        return fails
    monkeypatch.setattr(torch, "compile", no_compiler)
    with caplog.at_level("WARNING", logger="fgsd"):
        train_into(cfg, "mixture", tmp / "data", tmp / "out", tmp / "state")
    assert "training mixture eagerly" in caplog.text and "No working C++ compiler" in caplog.text
    assert files.load_json(tmp / "out" / "config.json")["training_steps"].startswith("eager: InvalidCxxCompiler")


def test_bf16_steps_train_float32_weights_close_to_fp32_and_resume_exactly(prepared, monkeypatch):
    """train.precision: bf16 (forced on, so a machine without native bf16 tests it too, emulated):
    the forward pass runs in bfloat16, the saved weights stay float32 within rounding of the fp32
    run, and a bf16 run killed mid-way resumes to the same weights."""
    cfg, tmp = prepared
    monkeypatch.setattr(runtime, "bf16_native", lambda device: True)
    cfg["train"]["precision"] = "fp32"
    fp32 = train_into(cfg, "conditional", tmp / "data", tmp / "fp32", tmp / "state_f")
    cfg["train"]["precision"] = "bf16"
    bf16 = train_into(cfg, "conditional", tmp / "data", tmp / "full", tmp / "state_a")
    assert files.load_json(tmp / "full" / "config.json")["training_precision"] == "bf16"
    assert files.load_json(tmp / "fp32" / "config.json")["training_precision"] == "fp32"
    assert all(w.dtype == torch.float32 for w in _weights(tmp / "full" / "model.pt").values() if w.is_floating_point())
    assert not _same_weights(tmp / "full" / "model.pt", tmp / "fp32" / "model.pt"), "bf16 autocast never ran"
    for key, value in fp32.items():  # 12 steps: the two runs differ by bf16 rounding only
        assert bf16[key] == pytest.approx(value, abs=0.3), key
    assert _same_weights(tmp / "full" / "model.pt", _interrupted_and_resumed(cfg, "conditional", tmp, monkeypatch))


def test_a_device_without_native_bf16_trains_in_fp32_and_says_why(prepared, monkeypatch, caplog):
    cfg, tmp = prepared
    cfg["train"]["precision"] = "fp32"
    train_into(cfg, "mixture", tmp / "data", tmp / "fp32", tmp / "state_f")
    monkeypatch.setattr(runtime, "bf16_native", lambda device: False)
    cfg["train"]["precision"] = "bf16"
    with caplog.at_level("WARNING", logger="fgsd"):
        train_into(cfg, "mixture", tmp / "data", tmp / "out", tmp / "state")
    assert "training mixture in float32" in caplog.text and "no native bfloat16" in caplog.text
    assert files.load_json(tmp / "out" / "config.json")["training_precision"] == "fp32: cpu has no native bfloat16"
    assert _same_weights(tmp / "out" / "model.pt", tmp / "fp32" / "model.pt"), "the fallback is plain float32"


def test_a_diverging_run_stops_with_one_line_and_writes_no_model(prepared):
    cfg, tmp = prepared
    cfg["train"]["lr"] = 1e30
    with pytest.raises(FgsdError, match=r"training mixture diverged: the loss is (nan|inf) at step \d+ .*lower train.lr"):
        train_into(cfg, "mixture", tmp / "data", tmp / "m", tmp / "s")
    assert not (tmp / "m" / "model.pt").exists()


@pytest.mark.parametrize("output", ["gated", "residual"])
def test_a_finite_but_useless_model_is_not_written(prepared, output):
    """train.lr 1e6 leaves finite weights that copy the input (gated) or wreck it (residual)."""
    cfg, tmp = prepared
    cfg["train"]["lr"] = 1e6
    cfg["model"]["output"] = output
    with pytest.raises(FgsdError, match=r"training mixture produced a useless model: at best [-+]\d+\.\d+ dB over "
                                        r"its noisy input .*lower train.lr"):
        train_into(cfg, "mixture", tmp / "data", tmp / "m", tmp / "s")
    assert not (tmp / "m" / "model.pt").exists()
    scores = {f"psnr@{s:.4g}": -20 * np.log10(s) + 1.5 * (s == 1.0) for s in cfg["sigmas"]}
    train.require_useful({**scores, "psnr_mean": 0.0}, cfg["sigmas"], "mixture")  # +1.5 dB at sigma 1: kept


def test_a_diverging_classifier_stops_with_one_line(prepared):
    from fgsd import classifier
    cfg, tmp = prepared
    cfg["evaluate"]["classifier_lr"] = 1e30
    with pytest.raises(FgsdError, match=r"training classifier diverged: the loss is (nan|inf) at step \d+"):
        classifier.train_classifier(cfg, tmp / "data", tmp / "c" / "model.pt", tmp / "c" / "metrics.json", "cpu")
    assert not (tmp / "c").exists()


def test_the_judge_guide_and_d2c_trainings_follow_train_precision(prepared, monkeypatch):
    """train.precision is one switch for every training step: the judge, the ADM-G guide and D2C's
    autoencoder and prior train in bf16 autocast too (forced on, so a machine without native bf16
    emulates it), record it, and end with weights that differ from a float32 run's."""
    from fgsd import classifier, d2c, guide
    cfg, tmp = prepared
    monkeypatch.setattr(runtime, "bf16_native", lambda device: True)
    cfg["evaluate"]["classifier_steps"] = 6
    cfg["guide"].update(steps=40, batch_size=16, eval_every=40, checkpoint_every=100)  # past its chance guard
    cfg["d2c"].update(ae_steps=6, ae_batch=16, queue=32, eval_every=6, checkpoint_every=100, prior_steps=6,
                      prior_batch=16, protocol="transductive")

    def trainings(out):
        out.mkdir()
        classifier.train_classifier(cfg, tmp / "data", out / "judge.pt", out / "judge.json", "cpu")
        guide.train_guide(cfg, tmp / "data", out / "guide.pt", out / "g.csv", out / "guide.json", out / "s", "cpu")
        d2c.train_autoencoder(cfg, tmp / "data", out / "ae.pt", out / "a.csv", out / "ae.json", out / "s", "cpu")
        d2c.train_prior(cfg, tmp / "data", tmp / "fp32" / "ae.pt", out / "prior.pt", out / "p.csv",  # one encoder
                        out / "prior.json", out / "s", "cpu")

    for precision in ("fp32", "bf16"):
        cfg["train"]["precision"] = precision
        trainings(tmp / precision)
    for name in ("judge", "guide", "ae", "prior"):
        metrics = files.load_json(tmp / "bf16" / f"{name}.json")
        assert metrics["training_precision"] == "bf16", name
        assert files.load_json(tmp / "fp32" / f"{name}.json")["training_precision"] == "fp32", name
        assert not _same_weights(tmp / "bf16" / f"{name}.pt", tmp / "fp32" / f"{name}.pt"), f"{name}: no autocast"
