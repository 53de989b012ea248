"""The sample-set file format, as a public API: every sampler's output, whatever the method, is
one npz with the same columns, so evaluation and figures treat all sets alike.

    images   (N, C, H, W) uint8     label    class index (-1: none, e.g. the mixture model)
    class_b  second class or -1     variant  sampler / setting, e.g. "c2f", "ddim 25"
    param    the set's knob (alpha, switch sigma, N exemplars, steps...)
    nfe      network evaluations of the sample      seed  the sample's noise seed

A set may add columns of its own (e.g. `reference` for inversion round trips; `gflop` per sample
and `guide_nfe`, guide passes, for the sets that methods are compared on). Also here: each
set's noise seeds, and the one helper that reads a value out of the metrics table.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import files, stages
from .errors import FgsdError
from .runtime import to_uint8

COLUMNS = ("images", "label", "variant", "nfe", "seed", "param", "class_b")
COST = ("nfe", "gflop", "guide_nfe")  # per-sample cost columns, averaged per group by the evaluation


def table(images: torch.Tensor, label, variant, nfe, seed, param=None, class_b=None, **extra) -> dict:
    """One block of samples in the common format (images in [0, 1], stored as uint8)."""
    n = len(images)
    return dict(images=to_uint8(images), label=np.asarray(label, np.int64), variant=np.asarray(variant),
                nfe=np.asarray(nfe, np.int64), seed=np.asarray(seed, np.int64),
                param=np.zeros(n) if param is None else np.asarray(param, np.float64),
                class_b=np.full(n, -1, np.int64) if class_b is None else np.asarray(class_b, np.int64), **extra)


def concat(tables: list[dict]) -> dict:
    return {k: np.concatenate([t[k] for t in tables]) for k in tables[0]}


def save(path: str | Path, samples: dict) -> None:
    missing = [c for c in COLUMNS if c not in samples]
    if missing:
        raise FgsdError(f"sample set for {path} lacks the columns {missing}")
    files.save_npz(path, **samples)


def load(path: str | Path) -> dict[str, np.ndarray]:
    samples = files.load_npz(path)
    missing = [c for c in COLUMNS if c not in samples]
    if missing:
        raise FgsdError(f"{path}: not a sample set (missing columns {missing})")
    return samples


def seeds_for(seed: int, set_name: str, n: int) -> list[int]:
    """n noise seeds for a set: a pure function of (params seed, the set's fixed seed id), not of
    the batch, the device, or which other sets exist."""
    ss = np.random.SeedSequence([seed, stages.SAMPLE_SETS[set_name].seed_id, 7])
    return [int(s) for s in ss.generate_state(n, dtype=np.uint32)]


def read_metrics(paths: list[str | Path], rounded: bool = False) -> pd.DataFrame:
    """Evaluation groups' metric rows (exact floats), concatenated in the order given. rounded:
    as samples.csv states them (6 significant digits), which is what the figures show."""
    frame = pd.concat([files.load_csv(p, float_precision="round_trip") for p in paths], ignore_index=True)
    if rounded:
        frame = pd.read_csv(io.StringIO(frame.to_csv(index=False, float_format="%.6g")))
    return frame


def metric(t: pd.DataFrame, set_name: str, name: str, variant=None, param=None, extractor=None):
    """The first row of the metrics table for (set, metric[, variant, param, extractor]), or None."""
    k = (t.set == set_name) & (t.metric == name)
    if variant is not None:
        k &= t.variant == variant
    if param is not None:
        k &= t.param == param
    if extractor is not None:
        k &= t.extractor == extractor
    rows = t[k]
    return rows.iloc[0] if len(rows) else None


EXTRACTOR = "fgsd-classifier"  # the in-domain feature extractor's name in torch-fidelity (evaluate.py)
FIDELITY = ("kid", "fid", "precision", "recall")  # computed on a feature extractor's features
QUALITY = ("accuracy", "judged_synthetic", *FIDELITY)  # the judge's two numbers and the fidelity ones


def quality(t: pd.DataFrame, set_name: str, name: str, variant=None, param=None):
    """metric() for a QUALITY name: the fidelity ones on the in-domain extractor's features."""
    return metric(t, set_name, name, variant, param, EXTRACTOR if name in FIDELITY else None)


COMPARED = (*QUALITY, *COST)


def comparison(t: pd.DataFrame) -> pd.DataFrame:
    """Feature guidance vs classifier guidance vs the mixture model (BASELINES.md §3), one row per
    method x sampler x knob: judge accuracy, class-marginal KID/FID and precision/recall on the
    in-domain features, and the cost per sample (denoiser calls, guide passes, GFLOP). ADM-G has
    no unseen-class row: its guide knows only the classes it was trained on."""
    rows = []

    def add(method, conditioning, classes, set_name, variant, param, knob):
        k = (t.set == set_name) & (t.variant == variant) & (t.param == param)
        if not k.any():
            return
        row = dict(method=method, conditioning=conditioning, classes=classes, sampler=variant, knob=knob)
        for m in ("acceptance_rate", "proposals_per_accepted"):
            r = metric(t[k], set_name, m)
            if r is not None:
                row[m] = float(r.value)
        for m in COMPARED:
            r = quality(t[k], set_name, m) if m in QUALITY else metric(t[k], set_name, m)
            row[m] = float(r.value) if r is not None else (0.0 if m == "guide_nfe" else float("nan"))
        count = [r for r in (metric(t[k], set_name, m) for m in ("accuracy", "nfe", "acceptance_rate")) if r is not None]
        row["n_samples"] = int(count[0].n_samples) if count else 0
        rows.append(row)

    for r in t[(t.set == "guidance") & (t.metric == "accuracy")].itertuples():
        add("mixture model" if r.param == 0 else "ADM-G", "class label" if r.param else "none (s = 0)", "seen",
            "guidance", r.variant, r.param, f"s={r.param:g}")
    for r in t[(t.set == "conditional") & (t.metric == "accuracy")].itertuples():
        add("FGSD", "centroid of the class's training crops", "seen", "conditional", r.variant, r.param,
            "default sampler")
    for r in t[(t.set == "nfe") & (t.metric == "accuracy") & (t.variant != "gaussian fit")].itertuples():
        add("FGSD", "centroid of the class's training crops", "seen", "nfe", r.variant, r.param, r.variant)
    for r in t[(t.set == "fewshot") & (t.metric == "accuracy")].itertuples():
        add("FGSD", f"centroid of {int(r.param)} exemplars", "unseen", "fewshot", r.variant, r.param,
            f"N={int(r.param)}")
    for r in t[(t.set == "d2c") & (t.metric == "nfe")].itertuples():
        add("D2C", "none (unconditional)", "seen", "d2c", r.variant, r.param, "prior draws")
    for r in t[(t.set == "d2c_fewshot") & (t.metric == "acceptance_rate")].itertuples():
        add("D2C", f"latent classifier from {int(r.param)} exemplars", "unseen", "d2c_fewshot", r.variant, r.param,
            f"N={int(r.param)}")
    for r in t[(t.set == "fewshot_seen") & (t.metric == "accuracy")].itertuples():
        add("FGSD", f"centroid of {int(r.param)} exemplars", "seen, few-shot", "fewshot_seen", r.variant, r.param,
            f"N={int(r.param)}")
    for r in t[(t.set == "d2c_fewshot_seen") & (t.metric == "acceptance_rate")].itertuples():
        add("D2C", f"latent classifier from {int(r.param)} exemplars", "seen, few-shot", "d2c_fewshot_seen", r.variant,
            r.param, f"N={int(r.param)}")
    if rows and any(r["method"] == "ADM-G" for r in rows):
        rows.append(dict(method="ADM-G", conditioning="class label", classes="unseen", sampler="n/a",
                         knob="n/a: the guide knows only its training classes", n_samples=0))
    return pd.DataFrame(rows)


def headline(t: pd.DataFrame) -> dict:
    """The numbers summary.json carries, each beside its sample counts."""
    def pick(set_name, variant, name, extractor=None):
        r = metric(t, set_name, name, variant=variant, extractor=extractor)
        return dict(value=float(r.value), n_samples=int(r.n_samples), n_real=int(r.n_real))
    out = {}
    for name in (stages.REFERENCE, "conditional", "mixture"):
        variant = "train crops" if name == stages.REFERENCE else "c2f"
        out[name] = {m: pick(name, variant, m, extractor=EXTRACTOR) for m in FIDELITY}
        out[name]["classes_covered"] = pick(name, variant, "classes_covered")
        out[name]["judged_synthetic"] = pick(name, variant, "judged_synthetic")
        if name != stages.REFERENCE:
            out[name].update({m: pick(name, variant, m) for m in ("nn_rmse_median", "frac_closer_than_test_p05")})
    out["conditional"]["accuracy"] = pick("conditional", "c2f", "accuracy")
    if ((t.set == "nfe") & (t.variant == "gaussian fit")).any():  # the no-network control the judge must reject
        out["gaussian_fit_control"] = {m: pick("nfe", "gaussian fit", m) for m in ("accuracy", "judged_synthetic")}
    out["nn_rmse_median_test_crops"] = pick("conditional", "c2f", "nn_rmse_median_test_crops")
    few = t[(t.set == "fewshot") & (t.metric == "accuracy")]
    out["fewshot_accuracy_by_n_exemplars"] = {str(int(r.param)): dict(value=float(r.value), n_samples=int(r.n_samples))
                                              for r in few.itertuples()}
    out["ddim_inversion_roundtrip_rmse"] = pick("inversion", "ddim-inversion", "roundtrip_rmse_median")
    return out
