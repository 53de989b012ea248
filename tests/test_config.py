import pytest
from conftest import ROOT

from fgsd import config, stages
from fgsd.errors import FgsdError

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


@pytest.mark.parametrize("text,message", [
    ("train:\n  bach_size: 3\n", "unknown parameter 'train.bach_size' (not in params.yaml)"),
    ("data:\n  crop_size: big\n", "parameter 'data.crop_size' must be an integer, got 'big'"),
    ("data:\n  crop_size: -32\n", "parameter 'data.crop_size' must be >= 8, got -32"),
    ("data:\n  crop_size: 36\n", "parameter 'data.crop_size' must be a multiple of 8, got 36"),
    ("data:\n  dataset: texturez\n", "parameter 'data.dataset' must be one of pip-textures, mnist5k, fashion-mnist, "
                                     "folder, ufoai, 0ad, got 'texturez'"),
    ("data:\n  dataset: folder\n  folder: /no/such/dir\n",
     "parameter 'data.folder' is not an existing directory, got '/no/such/dir'"),
    ("data:\n  dataset: folder\n", "parameter 'data.folder' must name a directory when data.dataset is folder, got None"),
    ("data: 3\n", "parameter 'data' must be a mapping, got 3"),
    ("device: gpu\n", "parameter 'device' must be one of auto, cpu, cuda, got 'gpu'"),
    ("data:\n  color: 1\n", "parameter 'data.color' must be true or false, got 1"),
    ("train:\n  mixture:\n    steps: 0\n", "parameter 'train.mixture.steps' must be >= 1, got 0"),
    ("train:\n  conditional:\n    conditioner: shared\n", "parameter 'train.conditional.conditioner' must be one of "
                                                         "per_crop, per_class, got 'shared'"),
    ("sampling:\n  beta: 2.0\n", "parameter 'sampling.beta' must be <= 1, got 2.0"),
    ("sampling:\n  sigma_final: 2.0\n", "parameter 'sampling.sigma_final' must be below sampling.sigma0, got 2.0"),
    ("train:\n  replicate_seeds:\n  - 0\n", "parameter 'train.replicate_seeds' must not repeat the main 'seed' (its "
                                          "models are the first replicate), got [0]"),
    ("train:\n  replicate_seeds:\n  - 3\n  - 3\n", "parameter 'train.replicate_seeds' must not repeat items, got [3, 3]"),
    ("sampling:\n  alphas:\n  - 0.5\n  - 1.5\n", "parameter 'sampling.alphas[1]' must be <= 1, got 1.5"),
    ("model:\n  widths:\n  - 8\n", "parameter 'model.widths' must list at least 4 item(s), got [8]"),
    ("model:\n  match:\n  - middle\n", "parameter 'model.match[0]' must be one of enc1, enc2, enc3, mid, dec3, dec2, "
                                       "dec1, got 'middle'"),
    ("study:\n  sigmas:\n  - 1.0\n  - 4.0\n", "parameter 'study.sigmas' must not go above study.sigma_max (the "
                                               "study's models train up to it), got [1.0, 4.0]"),
    ("evaluate:\n  inception_weights: /no/weights.pth\n", "parameter 'evaluate.inception_weights' is not an "
                                                          "existing file (null = in-domain features only), "
                                                          "got '/no/weights.pth'"),
])
def test_bad_overlays_give_one_line_naming_file_and_key(tmp_path, text, message):
    overlay = _overlay(tmp_path, text)
    with pytest.raises(FgsdError) as err:
        config.load([BASE, overlay])
    assert str(err.value) == f"{overlay}: {message}"


def test_errors_in_params_yaml_itself_are_caught(tmp_path):
    """params.yaml is checked too: a typo there is not a new key, and a deleted key is missing."""
    text = BASE.read_text()
    bad = tmp_path / "params.yaml"
    bad.write_text(text.replace("  crop_size: 32", "  crop_sise: 32"))
    with pytest.raises(FgsdError, match=r"params.yaml: unknown parameter 'data.crop_sise'"):
        config.load([bad])
    bad.write_text(text.replace("  n_unseen: 2", ""))
    with pytest.raises(FgsdError, match=r"params.yaml: missing parameter 'data.n_unseen'$"):
        config.load([bad])
    # the overlay that sets a bad value is blamed, not params.yaml
    with pytest.raises(FgsdError, match=r"overlay.yaml: parameter 'seed' must be >= 0"):
        config.load([BASE, _overlay(tmp_path, "seed: -1\n")])


def test_checks_across_keys_blame_the_file_that_set_the_value(tmp_path):
    """Three files: the culprit is the middle one, so 'the last file' would be wrong."""
    culprit = tmp_path / "culprit.yaml"
    culprit.write_text("analysis:\n  kl_sigma_min: 1.0\n")
    later = tmp_path / "later.yaml"
    later.write_text("seed: 7\n")
    with pytest.raises(FgsdError, match=rf"^{culprit}: parameter 'analysis.kl_sigma_min' must be below"):
        config.load([BASE, culprit, later])
    # the relation broken by the later file's other key: that file is blamed
    later.write_text("analysis:\n  kl_sigma_max: 0.5\n")
    with pytest.raises(FgsdError, match=rf"^{later}: parameter 'analysis.kl_sigma_min'"):
        config.load([BASE, culprit, later])
    culprit.write_text("train:\n  sigma_law: square\n  sigma_min: 5.0\n")  # unused by the square law: no error
    config.load([BASE, culprit, later])
    later.write_text("train:\n  sigma_law: log_uniform\n")
    with pytest.raises(FgsdError, match=rf"^{later}: parameter 'train.sigma_min' must be below train.sigma_max"):
        config.load([BASE, culprit, later])
    culprit.write_text("data:\n  dataset: folder\n  folder: /no/such/dir\n")
    later.write_text("seed: 3\n")
    with pytest.raises(FgsdError, match=rf"^{culprit}: parameter 'data.folder' is not an existing directory"):
        config.load([BASE, culprit, later])


def test_snakemake_validate_uses_the_same_schema(tmp_path):
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate
    for preset in ([BASE], *([BASE, p] for p in sorted((ROOT / "config").glob("*.yaml")))):  # every overlay
        validate(config.load(preset), str(config.SCHEMA))
    bad = config.load([BASE])
    bad["data"]["crop_sise"] = 3
    with pytest.raises(WorkflowError):
        validate(bad, str(config.SCHEMA))


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(FgsdError, match="not found.*nope.yaml"):
        config.load([BASE, tmp_path / "nope.yaml"])
    with pytest.raises(FgsdError, match="not valid YAML"):
        config.load([BASE, _overlay(tmp_path, "data: [unclosed\n")])


def test_int_accepted_where_float_expected(tmp_path):
    cfg = config.load([BASE, _overlay(tmp_path, "train:\n  lr: 1\n")])
    assert cfg["train"]["lr"] == 1


def test_every_declared_key_exists_in_params():
    cfg = config.load([BASE])
    names = stages.stage_names()
    assert {s for s, stage in stages.STAGES.items() if stage.named} == set(names), "every named stage lists its names"
    for stage in stages.STAGES:
        for name in names.get(stage, [None]):
            config.select(cfg, stages.stage_keys(stage, name))  # raises KeyError on a key params.yaml lacks
    for kind in stages.MODEL_KINDS:
        assert f"train.{kind}" in config.select(cfg, stages.stage_keys("train", kind))


@pytest.mark.parametrize("overlay", ["model:\n  match:\n  - mid\n  - dec3\n", "model:\n  matching: shift\n"])
def test_matched_blocks_reach_only_the_conditional_training(tmp_path, overlay):
    """Trying another `model.match` or `model.matching` must not retrain the mixture and
    single-class models (their weights do not depend on it), and must retrain the conditional one."""
    from fgsd import network
    base = config.load([BASE])
    other = config.load([BASE, _overlay(tmp_path, overlay)])
    for kind in stages.MODEL_KINDS:
        keys = stages.stage_keys("train", kind)
        changed = config.digest(config.select(base, keys)) != config.digest(config.select(other, keys))
        assert changed == (kind == "conditional"), kind
        cfg = config.restrict(other, keys, f"stage 'train {kind}'")  # reading an undeclared key raises
        net = network.build(cfg["model"], channels=1, conditional=kind == "conditional")
        conditional = kind == "conditional"
        assert net.match == (tuple(other["model"]["match"]) if conditional else ())
        assert net.matching == (other["model"]["matching"] if conditional else "replace")


def test_a_stage_sees_only_the_keys_it_declares():
    """What keeps provenance, Snakemake's params trigger and dvc.yaml honest: a stage that reads a
    key it does not declare stops with the key's name (Figs 6 and 9 once read undeclared keys)."""
    cfg = config.restrict(config.load([BASE]), stages.stage_keys("figure", "fig6_samples"), "stage 'figure fig6'")
    assert cfg["sampling"]["beta"] == 0.1 and set(cfg) == {"sampling"}
    with pytest.raises(FgsdError, match="'figure fig6' read params key 'sampling.per_class'.*does not declare"):
        cfg["sampling"]["per_class"]
    with pytest.raises(FgsdError, match="read params key 'seed'"):
        cfg["seed"]


@pytest.mark.parametrize("text,value", [("train:\n  lr: 1e-4\n", 1e-4), ("train:\n  lr: 1E-3\n", 1e-3),
                                        ("train:\n  lr: 2.5e-4\n", 2.5e-4), ("train:\n  lr: 1.0e-4\n", 1e-4)])
def test_numbers_as_researchers_write_them(tmp_path, text, value):
    """YAML 1.1 (PyYAML) reads `1e-4` as a string; the params are read as YAML 1.2 numbers."""
    assert config.load([BASE, _overlay(tmp_path, text)])["train"]["lr"] == value


def test_a_yaml_syntax_error_is_one_line_with_file_line_and_column(tmp_path):
    path = _overlay(tmp_path, "train:\n  lr: [0.1\n  batch_size: 3\n")
    with pytest.raises(FgsdError) as err:
        config.load([BASE, path])
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}:3:") and "not valid YAML" in message
