"""The tables in fgsd/stages.py and what is derived from them: every row points at a function
that exists, code dependencies follow the imports, and the command line passes key=path."""
import dataclasses
import importlib
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fgsd import __main__ as cli
from fgsd import checkpoints, network, stages
from fgsd.classifier import Classifier
from fgsd.errors import FgsdError


def test_every_row_names_a_function_that_takes_what_the_rule_gives():
    for stage, row in stages.STAGES.items():
        names = {"figure": list(stages.FIGURES)}.get(stage, [None])
        for name in names:
            module, function = stages.function_of(stage, name)
            fn = getattr(importlib.import_module(f"fgsd.{module}"), function)
            params = inspect.signature(fn).parameters
            assert not row.named or stage == "figure" or "name" in params, stage
            if stage == "figure":
                assert set(stages.FIGURES[name].inputs) | {"pdf", "png"} <= set(params), name
                assert ("data" in params) == stages.FIGURES[name].data, name
    generate = importlib.import_module("fgsd.generate")
    for name, row in stages.SAMPLE_SETS.items():
        assert callable(getattr(generate, row.function)), name
        assert row.model in stages.MODEL_KINDS + stages.BASELINE_MODELS


def test_seed_ids_are_fixed_and_distinct():
    """A set's noise seeds depend on its id alone, so the ids of existing sets never change."""
    ids = {name: row.seed_id for name, row in stages.SAMPLE_SETS.items()}
    assert ids == {"conditional": 0, "mixture": 1, "interpolation": 2, "mixing": 3, "fewshot": 4, "nfe": 5,
                   "inversion": 6, "guidance": 7, "d2c": 8, "d2c_fewshot": 9,
                   "fewshot_seen": 10, "d2c_fewshot_seen": 11}
    assert len(set(ids.values())) == len(ids)


def test_how_a_set_is_scored_reruns_its_evaluation_not_its_sampling(monkeypatch):
    before = {stage: stages.spec(stage, "conditional") for stage in ("sample", "evaluate")}
    row = stages.SAMPLE_SETS["conditional"]
    monkeypatch.setitem(stages.SAMPLE_SETS, "conditional",
                        dataclasses.replace(row, evaluation=stages.Evaluation(per_class=not row.evaluation.per_class)))
    assert stages.spec("sample", "conditional") == before["sample"]
    assert stages.spec("evaluate", "conditional") != before["evaluate"]
    monkeypatch.setitem(stages.SAMPLE_SETS, "conditional", dataclasses.replace(row, keys=("per_class",)))
    assert stages.spec("sample", "conditional") != before["sample"], "a sampling key is the sampling job's"


def test_code_dependencies_follow_the_imports():
    train = stages.code_modules("train")
    assert {"train", "denoisers", "network", "data", "checkpoints", "__main__"} <= set(train)
    assert not {"classifier", "evaluate", "generate", "stages"} & set(train)
    assert "train" not in stages.code_modules("classifier"), "editing the training loop leaves the judge alone"
    assert "train" not in stages.code_modules("generate") and "train" not in stages.code_modules("evaluate")
    importers = [m.stem for m in stages.SRC.glob("*.py") if "train" in stages._imports(m.stem)]
    assert importers == ["study"], f"only the command line and the study (its own trainings) reach train.py: {importers}"
    main_job = {m for stage in stages.STAGES if not stage.startswith("study") for m in stages.code_modules(
        stages.function_of(stage, "fig3_psnr_gain" if stage == "figure" else None)[0])}
    assert "study" not in main_job, "editing the study re-runs nothing in the main job"
    assert stages.code_files("figure", "fig3_psnr_gain")[0].startswith("src/fgsd/")


def test_the_command_line_takes_a_name_then_key_path_pairs():
    assert cli.split_args("train", ["mixture", "data=d", "model=m.pt"]) == ("mixture", {"data": "d", "model": "m.pt"})
    assert cli.split_args("data", ["out=x"]) == (None, {"out": "x"})
    with pytest.raises(FgsdError, match="needs a name"):
        cli.split_args("train", ["data=d"])
    with pytest.raises(FgsdError, match="not key=path"):
        cli.split_args("data", ["oops"])
    with pytest.raises(FgsdError, match="unknown sample name 'nope'"):
        cli.check_name("sample", "nope")


def test_one_checkpoint_format_with_errors_that_name_the_file(tmp_path):
    unet = network.UNet(widths=(8, 16, 16, 32), conditional=True)
    checkpoints.save(tmp_path / "c.pt", "conditional", unet, classes=["a"])
    model, meta = checkpoints.load(tmp_path / "c.pt", network.UNet, ("conditional",))
    assert meta["kind"] == "conditional" and meta["classes"] == ["a"] and model.match == ("mid",)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), unet.state_dict().values()))
    with pytest.raises(FgsdError, match=r"c\.pt: holds a 'conditional' model where 'mixture' was expected"):
        checkpoints.load(tmp_path / "c.pt", network.UNet, ("mixture",))
    clf = Classifier(channels=1, n_classes=3, width=16, feature_dim=16)
    checkpoints.save(tmp_path / "k.pt", "classifier", clf, classes=["a", "b", "c"])
    with pytest.raises(FgsdError, match=r"k\.pt: holds a 'classifier' model"):
        checkpoints.load(tmp_path / "k.pt", network.UNet, stages.MODEL_KINDS)
    data = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(FgsdError, match=r"cannot read .*cut\.pt as a torch checkpoint"):
        checkpoints.load(tmp_path / "cut.pt", network.UNet, ("conditional",))
    ckpt = torch.load(tmp_path / "c.pt", weights_only=False)
    ckpt["model_config"]["widths"] = [16, 16, 16, 32]
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(FgsdError, match=r"bad\.pt: weights do not fit the stored 'conditional' architecture"):
        checkpoints.load(tmp_path / "bad.pt", network.UNet, ("conditional",))
    with pytest.raises(FgsdError, match="missing model file"):
        checkpoints.load(tmp_path / "none.pt", network.UNet, ("conditional",))


def test_importing_fgsd_sets_mkl_reproducibility_unless_the_user_did():
    """The stages run with Intel MKL's run-to-run reproducibility conditions (before torch loads),
    and a value the user exported wins."""
    show = "import os, fgsd; print(os.environ['MKL_CBWR'], os.environ['MKL_DYNAMIC'], os.environ['OMP_DYNAMIC'])"
    env = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "MKL_DYNAMIC", "OMP_DYNAMIC")}
    out = subprocess.run([sys.executable, "-c", show], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["AUTO,STRICT", "FALSE", "FALSE"]
    out = subprocess.run([sys.executable, "-c", show], env=dict(env, MKL_CBWR="COMPATIBLE"), capture_output=True,
                         text=True, check=True).stdout
    assert out.split() == ["COMPATIBLE", "FALSE", "FALSE"]


def test_the_fine_tuned_trainings_read_the_same_seeds_mixture_model():
    from fgsd import config
    cfg = config.load([Path(__file__).resolve().parents[1] / "params.yaml"])
    assert cfg["train"]["single"]["init"] == cfg["train"]["conditional"]["init"] == "mixture"
    assert stages.warm_start("single", cfg) == {"init": "results/models/mixture/model.pt"}
    assert stages.warm_start("single", cfg, "2") == {"init": "results/replicates/seed2/models/mixture/model.pt"}
    assert stages.warm_start("conditional", cfg, "1") == {"init": "results/replicates/seed1/models/mixture/model.pt"}
    assert stages.warm_start("mixture", cfg) == {}
    cfg["train"]["single"]["init"] = cfg["train"]["conditional"]["init"] = "scratch"
    assert stages.warm_start("single", cfg) == stages.warm_start("conditional", cfg) == {}
