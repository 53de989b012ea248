import pytest

from fgsd import config
from fgsd.errors import FgsdError

from conftest import ROOT

BASE = ROOT / "params.yaml"


def _overlay(tmp_path, text):
    p = tmp_path / "overlay.yaml"
    p.write_text(text)
    return p


def test_presets_load():
    default = config.load([BASE])
    smoke = config.load([BASE, ROOT / "config" / "smoke.yaml"])
    assert smoke["train"]["mixture"]["steps"] < default["train"]["mixture"]["steps"]
    assert smoke["data"]["dataset"] == default["data"]["dataset"]


@pytest.mark.parametrize("text,match", [
    ("train:\n  bach_size: 3\n", "unknown parameter 'train.bach_size'"),
    ("data:\n  crop_size: big\n", "'data.crop_size' must be int"),
    ("data:\n  crop_size: -32\n", "'data.crop_size' must be a positive multiple of 8"),
    ("data: 3\n", "'data' must be a mapping"),
    ("device: gpu\n", "'device' must be auto, cpu or cuda"),
    ("train:\n  mixture:\n    steps: 0\n", "'train.mixture.steps' must be positive"),
    ("sampling:\n  beta: 2.0\n", r"'sampling.beta' must be in \(0, 1\]"),
    ("sampling:\n  ddim_spacing: cubic\n", "'sampling.ddim_spacing' must be uniform or quadratic"),
    ("sampling:\n  alphas:\n  - 1.5\n", "'sampling.alphas' must lie in"),
    ("evaluate:\n  feature_dim: 20\n", "'evaluate.feature_dim' must be a positive multiple of 8"),
])
def test_bad_overlays_name_the_key(tmp_path, text, match):
    with pytest.raises(FgsdError, match=match):
        config.load([BASE, _overlay(tmp_path, text)])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(FgsdError, match="not found.*nope.yaml"):
        config.load([BASE, tmp_path / "nope.yaml"])
    with pytest.raises(FgsdError, match="not valid YAML"):
        config.load([BASE, _overlay(tmp_path, "data: [unclosed\n")])


def test_int_accepted_where_float_expected(tmp_path):
    cfg = config.load([BASE, _overlay(tmp_path, "train:\n  lr: 1\n")])
    assert cfg["train"]["lr"] == 1


def test_stage_keys_exist_in_params():
    cfg = config.load([BASE])
    for stage in ("data", "centroids"):
        config.select(cfg, config.stage_keys(stage))
    for kind in config.MODEL_KINDS:
        assert f"train.{kind}" in config.select(cfg, config.stage_keys("train", kind))
