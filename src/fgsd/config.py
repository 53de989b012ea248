"""Load params.yaml plus overlays into one resolved config, and say which keys each stage reads.

One config flow: every stage and the Snakefile call `load()` on the same list of files, so what
Snakemake tracks and what the stage uses cannot drift apart.
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import yaml

from .errors import FgsdError

MODEL_KINDS = ("mixture", "conditional", "single")

# Dotted params keys each stage reads; Snakemake tracks their values and dvc.yaml lists them.
_STAGE_KEYS = {
    "data": ["seed", "data"],
    "train": ["seed", "device", "model", "train.batch_size", "train.lr", "train.lr_decay_every",
              "train.lr_decay_factor", "train.checkpoint_every", "train.eval_every",
              "train.eval_sigmas", "train.eval_crops_per_class"],
    "centroids": ["device", "features"],
    "sweep": ["seed", "device", "analysis.sigmas", "analysis.batch_size", "train.single.class"],
    "density": ["seed", "device", "analysis.kl_sigma_min", "analysis.kl_sigma_max", "analysis.kl_n_sigmas",
                "analysis.kl_n_noise", "analysis.kl_max_pairs"],
    "sample": ["seed", "device"] + [f"sampling.{k}" for k in ("sigma0", "sigma_final", "h0", "beta", "fixed_h",
                                                             "max_steps")],
    "classifier": ["seed", "device", "evaluate.classifier_steps", "evaluate.classifier_batch",
                   "evaluate.classifier_lr", "evaluate.classifier_width", "evaluate.feature_dim"],
    "evaluate": ["seed", "device", "evaluate.kid_subset_size", "evaluate.inception_weights"],
    "separation": [],
    "summary": [],
    "figure": [],
}
_SAMPLE_KEYS = {  # beyond the sampler settings every set shares
    "conditional": ["per_class", "exemplars"],
    "mixture": ["per_class"],
    "interpolation": ["pairs", "per_pair", "alphas", "exemplars", "inversion_steps", "ddim_spacing"],
    "mixing": ["pairs", "per_pair", "mixing_sigmas", "exemplars"],
    "fewshot": ["fewshot_n", "fewshot_per_n"],
    "nfe": ["nfe_per_class", "nfe_betas", "ddim_steps", "ddim_eta", "ddim_spacing", "exemplars"],
    "inversion": ["inversion_steps", "inversion_per_class", "ddim_spacing", "exemplars"],
}
_FIGURE_KEYS = {"fig2_denoising_grid": ["seed", "analysis.fig2_sigmas"], "fig3_psnr_gain": ["seed", "train.single.class"]}


def stage_keys(stage: str, kind: str | None = None, name: str | None = None, sample_set: str | None = None) -> list[str]:
    """The params keys that stage `stage` (of model `kind`, figure `name` or `sample_set`) depends on."""
    keys = list(_STAGE_KEYS[stage])
    if stage == "train":
        keys.append(f"train.{kind}")
    if stage == "sample":
        keys += [f"sampling.{k}" for k in _SAMPLE_KEYS[sample_set]]
    if stage == "figure":
        keys += _FIGURE_KEYS.get(name, [])
    return keys


def _read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FgsdError(f"params file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise FgsdError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise FgsdError(f"{path}: top level must be a mapping of keys")
    return data


def _same_type(base, value) -> bool:
    if base is None or value is None:
        return True
    if isinstance(base, bool) or isinstance(value, bool):
        return isinstance(base, bool) and isinstance(value, bool)
    if isinstance(base, (int, float)) and isinstance(value, (int, float)):
        return isinstance(base, float) or isinstance(value, int)
    return isinstance(value, type(base))


def _merge(base: dict, overlay: dict, origin: str, prefix: str = "") -> None:
    """Overlay `overlay` onto `base` in place; unknown keys and type changes are errors."""
    for key, value in overlay.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            raise FgsdError(f"{origin}: unknown parameter '{dotted}' (not in params.yaml)")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise FgsdError(f"{origin}: parameter '{dotted}' must be a mapping")
            _merge(base[key], value, origin, dotted + ".")
        elif not _same_type(base[key], value):
            raise FgsdError(f"{origin}: parameter '{dotted}' must be {type(base[key]).__name__}, "
                            f"got {type(value).__name__} ({value!r})")
        else:
            base[key] = copy.deepcopy(value)


def load(paths: list[str | Path]) -> dict:
    """Merge params files left to right; the first (params.yaml) defines every allowed key."""
    if not paths:
        raise FgsdError("no params file given")
    cfg = _read_yaml(paths[0])
    for path in paths[1:]:
        _merge(cfg, _read_yaml(path), str(path))
    check(cfg, str(paths[-1]))
    return cfg


def check(cfg: dict, origin: str) -> None:
    """Value checks the type system cannot express; each error names its key."""
    def need(cond, key, what):
        if not cond:
            raise FgsdError(f"{origin}: parameter '{key}' {what}, got {get(cfg, key)!r}")
    d, t = cfg["data"], cfg["train"]
    need(d["crop_size"] >= 8 and d["crop_size"] % 8 == 0, "data.crop_size", "must be a positive multiple of 8")
    need(d["train_per_class"] > 0, "data.train_per_class", "must be positive")
    need(d["test_per_class"] > 0, "data.test_per_class", "must be positive")
    need(0 < d["test_fraction"] < 1, "data.test_fraction", "must be in (0, 1)")
    need(0 < d["scale"] <= 1, "data.scale", "must be in (0, 1]")
    need(d["n_unseen"] >= 0, "data.n_unseen", "must be >= 0")
    need(cfg["device"] in ("auto", "cpu", "cuda"), "device", "must be auto, cpu or cuda")
    need(len(cfg["model"]["widths"]) == 4, "model.widths", "must list 4 channel widths")
    need(cfg["model"]["dec_convs"][0] >= 2, "model.dec_convs", "must have at least 2 convs in the last block")
    for kind in MODEL_KINDS:
        need(t[kind]["steps"] > 0, f"train.{kind}.steps", "must be positive")
    need(t["batch_size"] > 0, "train.batch_size", "must be positive")
    s, e = cfg["sampling"], cfg["evaluate"]
    need(0 < s["beta"] <= 1, "sampling.beta", "must be in (0, 1]")
    need(0 < s["h0"] <= 1, "sampling.h0", "must be in (0, 1]")
    need(0 < s["sigma_final"] < s["sigma0"], "sampling.sigma_final", "must be in (0, sampling.sigma0)")
    need(0 <= s["ddim_eta"] <= 1, "sampling.ddim_eta", "must be in [0, 1]")
    need(s["ddim_spacing"] in ("uniform", "quadratic"), "sampling.ddim_spacing", "must be uniform or quadratic")
    need(all(0 <= a <= 1 for a in s["alphas"]), "sampling.alphas", "must lie in [0, 1]")
    need(all(n > 0 for n in s["fewshot_n"]), "sampling.fewshot_n", "must be positive counts")
    need(all(n > 0 for n in s["ddim_steps"]), "sampling.ddim_steps", "must be positive step counts")
    need(all(0 < b <= 1 for b in s["nfe_betas"]), "sampling.nfe_betas", "must lie in (0, 1]")
    for key in ("per_class", "pairs", "per_pair", "fewshot_per_n", "nfe_per_class", "inversion_steps",
                "inversion_per_class", "max_steps"):
        need(s[key] > 0, f"sampling.{key}", "must be positive")
    need(s["exemplars"] >= 0, "sampling.exemplars", "must be >= 0 (0 = all training crops)")
    need(e["feature_dim"] > 0 and e["feature_dim"] % 8 == 0, "evaluate.feature_dim", "must be a positive multiple of 8")
    need(e["classifier_width"] > 0 and e["classifier_width"] % 8 == 0, "evaluate.classifier_width",
         "must be a positive multiple of 8")
    need(e["kid_subset_size"] >= 2, "evaluate.kid_subset_size", "must be at least 2")


def get(cfg: dict, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def _canonical(value):
    return {k: _canonical(value[k]) for k in sorted(value)} if isinstance(value, dict) else value


def select(cfg: dict, keys: list[str]) -> dict:
    """The sub-config made of `keys` (dotted), as a flat dict with sorted keys: what a stage's
    result depends on. Sorted, so the key order of an overlay file does not look like a change."""
    return {k: _canonical(get(cfg, k)) for k in keys}


def digest(obj) -> str:
    """Short stable hash of a JSON-able object (params subtrees, for resume and provenance)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def snakemake_params_files(workflow, config: dict) -> list[str]:
    """params.yaml plus the `--configfile` overlays, checked to give exactly Snakemake's config.

    Stages get the file list, not values, so `--config key=value` (which would reach Snakemake
    but not the stages) is refused with a pointer to overlays."""
    cwd = Path.cwd()
    paths = ["params.yaml"]
    for p in workflow.overwrite_configfiles:
        p = Path(p)
        p = p.relative_to(cwd) if p.is_absolute() and p.is_relative_to(cwd) else p
        if str(p) != "params.yaml":
            paths.append(str(p))
    if load(paths) != config:
        raise FgsdError("--config overrides are not passed to the stages: put the keys in a YAML "
                        "overlay and pass it with --configfile (see config/smoke.yaml)")
    return paths
