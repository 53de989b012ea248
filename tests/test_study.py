"""The study stage: its settings, its data (nested class draws, no held-out classes), and a whole
chain (data -> two trainings -> PSNR table -> report) on synthetic textures, in-process and through
the stage functions with only their declared params, as the command line runs them."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, write_textures

from fgsd import config, files, stages, study
from fgsd.errors import FgsdError


def test_settings_cover_both_axes_once_and_parse_back():
    s = dict(classes=[10, 30, 100], class_axis_scale=0.25, scales=[0.25, 0.5, 1.0], scale_axis_classes=30)
    names = stages.study_settings(s)
    assert names == ["k10_s0.25", "k30_s0.25", "k100_s0.25", "k30_s0.5", "k30_s1"]
    assert [stages.parse_setting(n) for n in names] == [(10, 0.25), (30, 0.25), (100, 0.25), (30, 0.5), (30, 1.0)]
    default = config.load([ROOT / "params.yaml"])["study"]
    assert all(__import__("re").fullmatch(stages.SETTING_PATTERN, n) for n in stages.study_settings(default))


@pytest.fixture
def study_cfg(tmp_path) -> dict:
    """The smoke preset's study on 8 synthetic textures, two class counts at one scale."""
    cfg = config.load([ROOT / "params.yaml", ROOT / "config" / "smoke.yaml"])
    cfg["data"].update(folder=str(write_textures(tmp_path / "tex", n_classes=8, size=160)), crop_size=16)
    cfg["study"].update(dataset="folder", classes=[3, 6], class_axis_scale=1.0, scales=[1.0], scale_axis_classes=3,
                        train_per_class=24, test_per_class=4, steps=12, lr=dict(mixture=0.003, conditional=0.002))
    cfg["train"].update(batch_size=16, checkpoint_every=6, lr=0.001)  # unlike the study's rates and blocks, so
    cfg["model"]["match"] = ["mid"]  # the test can tell which of the two keys a study training read
    cfg["device"] = "cpu"
    return cfg


def stage_cfg(cfg: dict, stage: str, name: str | None = None):
    """What `python -m fgsd <stage> [name]` hands the function: only the declared keys."""
    return config.restrict(cfg, stages.stage_keys(stage, name), stage)


def test_study_chain_reports_the_gain_its_tables_hold(study_cfg, tmp_path):
    tables = []
    for setting in stages.study_settings(study_cfg["study"]):
        root = tmp_path / setting
        study.prepare_setting(stage_cfg(study_cfg, "study_data"), setting, root / "data")
        for kind in stages.STUDY_KINDS:
            out = root / "seed0" / kind
            study.train_setting(stage_cfg(study_cfg, "study_train", kind), kind, root / "data", out / "model.pt",
                                out / "log.csv", out / "config.json", out / "metrics.json", root / ".state",
                                device="cpu")
        tables.append(str(root / "seed0" / "psnr.csv"))
        study.evaluate_setting(stage_cfg(study_cfg, "study_eval"), root / "data", root / "seed0/mixture/model.pt",
                               root / "seed0/conditional/model.pt", tables[-1], device="cpu")

    manifests = [files.load_json(tmp_path / s / "data/manifest.json") for s in ("k3_s1", "k6_s1")]
    assert [len(m["classes"]) for m in manifests] == [3, 6] and not manifests[0]["unseen_classes"]
    assert set(manifests[0]["classes"]) < set(manifests[1]["classes"]), "the class axis draws nested sets"
    trained = {kind: files.load_json(tmp_path / f"k3_s1/seed0/{kind}/config.json")["params"]
               for kind in stages.STUDY_KINDS}
    assert trained["conditional"]["train.sigma_max"] == 3.0 and trained["conditional"]["sigmas"] == [0.3, 1.0, 3.0]
    assert study_cfg["train"]["lr"] not in (0.002, 0.003), "the fixture must tell the study's rates from train.lr"
    assert {k: t["train.lr"] for k, t in trained.items()} == study_cfg["study"]["lr"], "each kind's own study rate"
    assert study_cfg["study"]["match"] != study_cfg["model"]["match"], "the fixture must tell the two apart"
    assert trained["conditional"]["model.match"] == study_cfg["study"]["match"], "the study's matched blocks"
    assert "model.match" not in trained["mixture"], "the mixture model does not depend on the matched blocks"

    study.report(stage_cfg(study_cfg, "study_report"), ",".join(tables), tmp_path / "gain.csv",
                 tmp_path / "fig.pdf", tmp_path / "fig.png")
    gain = files.load_csv(tmp_path / "gain.csv")
    assert len(gain) == 2 * 3 and (tmp_path / "fig.pdf").stat().st_size > 0 and (tmp_path / "fig.png").is_file()
    for (setting, sigma), row in gain.set_index(["setting", "sigma"]).iterrows():
        t = files.load_csv(tmp_path / setting / "seed0/psnr.csv")
        t = t[t.sigma == sigma]
        cond = t[t.model == "conditional"].pivot_table(index="cls", columns="conditioning", values="output_psnr")
        np.testing.assert_allclose(row.wrong_exemplar_cost, (cond.exemplar - cond.wrong).mean(), atol=1e-4)
        t = t[t.conditioning != "wrong"].pivot_table(index="cls", columns="model", values="output_psnr")
        assert len(t) == stages.parse_setting(setting)[0]
        np.testing.assert_allclose(row.learned_gain, (t.conditional - t.mixture).mean(), atol=1e-4)
        np.testing.assert_allclose(row.learned_gain_min, (t.conditional - t.mixture).min(), atol=1e-4)
        np.testing.assert_allclose(row.gaussian_gain, (t["gaussian-class"] - t["gaussian-mixture"]).mean(), atol=1e-4)
        np.testing.assert_allclose(row.mixture_vs_gaussian_mixture, (t.mixture - t["gaussian-mixture"]).mean(),
                                   atol=1e-4)
    # a Gaussian reference knows sigma: at sigma 3 it must beat the noisy input by far
    assert (gain[gain.sigma == 3.0]["gaussian-mixture"] > gain[gain.sigma == 3.0].input_psnr + 10).all()


def _table(path, wrong: dict[str, float], low_sigma_wrong: dict[str, float] | None = None):
    """A setting's PSNR table at sigma 1 (and 0.3 when `low_sigma_wrong` is given): two classes, the
    conditional model given a wrong-class exemplar scoring `wrong[cls]`."""
    rows = []
    levels = {1.0: wrong, **({0.3: low_sigma_wrong} if low_sigma_wrong else {})}
    for sigma, wrong_at in levels.items():
        for cls, cond, mix in (("a", 20.0, 19.0), ("b", 18.0, 18.5)):
            for model, conditioning, out in (("conditional", "exemplar", cond), ("conditional", "wrong", wrong_at[cls]),
                                             ("mixture", "none", mix), ("gaussian-class", "class", 21.0),
                                             ("gaussian-mixture", "none", 20.0), ("trivial-mean", "none", 15.0)):
                rows.append(dict(model=model, conditioning=conditioning, sigma=sigma, cls=cls, input_psnr=0.0,
                                 output_psnr=out, n=4, g_infinity_db=1.5))
    path.parent.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def test_gains_average_over_classes_and_read_setting_and_seed_from_the_path(tmp_path):
    g = study.gains([_table(tmp_path / "k2_s0.5" / "seed7" / "psnr.csv", {"a": 19.0, "b": 18.5})]).iloc[0]
    assert (g.setting, g.classes, g.scale, g.seed) == ("k2_s0.5", 2, 0.5, 7)
    assert g.learned_gain == pytest.approx(0.25) and g.learned_gain_min == pytest.approx(-0.5)
    assert g.gaussian_gain == pytest.approx(1.0) and g.mixture_vs_gaussian_mixture == pytest.approx(-1.25)
    assert g.wrong_exemplar_cost == pytest.approx(0.25), "right minus wrong exemplar, classes weighing equally"


def test_a_conditional_model_that_ignores_its_exemplar_is_flagged_by_name(tmp_path, caplog):
    """The second learning-rate study's failure: the gain may even look fine, but a wrong-class exemplar costs nothing."""
    # seed 0 uses its exemplar at sigma 1 only (as at low noise, where the crop shows its class); seed 1 at none
    same = {"a": 20.0, "b": 18.0}
    used = _table(tmp_path / "k2_s0.5" / "seed0" / "psnr.csv", {"a": 18.0, "b": 18.0}, low_sigma_wrong=same)
    ignored = _table(tmp_path / "k2_s0.5" / "seed1" / "psnr.csv", {"a": 20.0, "b": 17.95}, low_sigma_wrong=same)
    table = study.flag_ignored_exemplars(study.gains([used, ignored]))
    assert table.groupby("seed").ignores_exemplar.agg(set).to_dict() == {0: {False}, 1: {True}}
    assert "k2_s0.5 seed 1 ignores its exemplar" in caplog.text and "seed 0" not in caplog.text


def test_asking_for_more_classes_than_the_dataset_keeps_names_the_key(study_cfg, tmp_path):
    with pytest.raises(FgsdError, match="study.classes.*keeps 8"):
        study.prepare_setting(stage_cfg(study_cfg, "study_data"), "k20_s1", tmp_path / "data")


def test_a_diverging_study_training_names_study_lr(study_cfg, tmp_path):
    """A study model's rate comes from study.lr.<kind>, so that is the key its training errors tell the user to lower."""
    study.prepare_setting(stage_cfg(study_cfg, "study_data"), "k3_s1", tmp_path / "data")
    study_cfg["study"]["lr"]["mixture"] = 1e30
    out = tmp_path / "model"
    with pytest.raises(FgsdError, match=r"training mixture diverged: .*lower study\.lr\.mixture or check the data"):
        study.train_setting(stage_cfg(study_cfg, "study_train", "mixture"), "mixture", tmp_path / "data", out / "model.pt",
                            out / "log.csv", out / "config.json", out / "metrics.json", tmp_path / ".state", device="cpu")
    assert not (out / "model.pt").exists()
