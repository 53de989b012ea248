"""The study the paper does not have: what drives the conditional gain.

One setting is a number of training classes and a crop scale (`stages.study_settings`). Each gets
its own data (a nested seeded draw of classes from `study.dataset`, no held-out classes), a
mixture and a conditional model trained with the main recipe for `study.steps` steps up to
`study.sigma_max`, and a PSNR table at `study.sigmas` beside the three reference denoisers. The
report reads conditional − mixture against the Gaussian references' class worth
(gaussian-class − gaussian-mixture), the gain a denoiser that knew the class exactly would get if
the classes were stationary Gaussians, and G∞, its σ → ∞ limit.

Run with `snakemake --cores all study` (README, "Study"); not part of the main job.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import checkpoints, figures, files, network, references, stages, train
from .analysis import psnr_table
from .data import epoch_plan, load_split, prepare
from .errors import FgsdError
from .figures import plt  # pyplot behind figures' non-interactive backend
from .runtime import generator, resolve_device, to_float

log = logging.getLogger("fgsd")


def _plain(cfg: dict) -> dict:
    return json.loads(json.dumps(cfg))


def setting_data_config(cfg: dict, setting: str) -> dict:
    """The data params of a setting: the main `data` block with the study's dataset, class count and scale."""
    k, scale = stages.parse_setting(setting)
    s = cfg["study"]
    d = dict(_plain(cfg["data"]), dataset=s["dataset"], scale=scale, max_classes=k, n_unseen=0, min_size=s["min_size"],
             train_per_class=s["train_per_class"], test_per_class=s["test_per_class"])
    return {"seed": cfg["seed"], "data": d}


def setting_train_config(cfg: dict) -> dict:
    """The main training recipe, with the study's steps, noise range, peak rate and evaluation levels."""
    out = _plain(cfg)
    s = out.pop("study")
    out["train"].update(sigma_max=s["sigma_max"], lr=s["lr"], eval_every=s["steps"],
                        eval_crops_per_class=s["test_per_class"],
                        mixture={"steps": s["steps"]}, conditional={"steps": s["steps"]})
    out["sigmas"] = s["sigmas"]
    return out


def prepare_setting(cfg: dict, setting: str, out: str | Path) -> None:
    """The setting's crops; an error when the dataset has fewer classes than the setting asks for."""
    k, _ = stages.parse_setting(setting)
    manifest = prepare(setting_data_config(cfg, setting), out)
    if len(manifest["classes"]) < k:
        raise FgsdError(f"parameter 'study.classes' (or 'study.scale_axis_classes') asks for {k} classes, but "
                        f"study.dataset '{cfg['study']['dataset']}' keeps {len(manifest['classes'])} "
                        f"(study.min_size={cfg['study']['min_size']}, data.dedup_corr): lower the count")


def train_setting(cfg: dict, kind: str, data: str | Path, model: str | Path, train_log: str | Path,
                  config_json: str | Path, metrics: str | Path, state: str | Path, device: str = "auto") -> None:
    """One of the setting's two models: `train.train` itself, so it resumes after a kill as the main ones do."""
    if kind not in stages.STUDY_KINDS:
        raise FgsdError(f"the study trains {stages.STUDY_KINDS}, not '{kind}'")
    train.train(setting_train_config(cfg), kind, data, model, train_log, config_json, metrics, state, device,
                lr_key="study.lr")


@torch.no_grad()
def evaluate_setting(cfg: dict, data: str | Path, mixture: str | Path, conditional: str | Path, table: str | Path,
                     device: str = "auto") -> None:
    """Per class and sigma: mean output PSNR of the two models (the conditional one given another
    test crop of the same class, as the main sweep's headline) and of the references, on the same
    noise for every training seed; G∞ of the setting's training crops as a column."""
    dev, seed = resolve_device(device), cfg["seed"]
    test, train_split = load_split(data, "test"), load_split(data, "train")
    classes = [str(c) for c in test["classes"]]
    x, labels = to_float(test["images"]), torch.from_numpy(test["labels"])
    x_train, l_train = to_float(train_split["images"]), torch.from_numpy(train_split["labels"])
    mix = checkpoints.load(mixture, network.UNet, ("mixture",), dev)[0]
    cond = checkpoints.load(conditional, network.UNet, ("conditional",), dev)[0]
    _, same = epoch_plan(generator(seed, 20), labels)
    denoisers = {("conditional", "exemplar"): lambda y, i: cond(y, x[same[i]].to(dev)),
                 ("mixture", "none"): lambda y, i: mix(y)}
    refs = references.reference_denoisers(references.StationaryGaussians(x_train, l_train), labels)
    rows = psnr_table(denoisers, refs, x, labels, classes, cfg["study"]["sigmas"], seed, cfg["analysis"]["batch_size"],
                      dev)
    per_class = (rows.groupby(["model", "conditioning", "sigma", "cls"], sort=False)
                 .agg(input_psnr=("input_psnr", "mean"), output_psnr=("output_psnr", "mean"), n=("output_psnr", "size"))
                 .reset_index())
    per_class["g_infinity_db"] = references.g_infinity(x_train, l_train)
    files.save_csv(table, per_class)


def gains(tables: list[str]) -> pd.DataFrame:
    """One row per setting, seed and sigma: every denoiser's mean output PSNR over the test crops
    (classes weigh equally), the learned and the Gaussian class worth, and the smallest and median
    per-class learned gain."""
    rows = []
    for path in tables:
        setting, seed = Path(path).parent.parent.name, int(Path(path).parent.name.removeprefix("seed"))
        k, scale = stages.parse_setting(setting)
        t = files.load_csv(path)
        for sigma, g in t.groupby("sigma"):
            cls = g.pivot_table(index="cls", columns="model", values="output_psnr")
            learned = cls["conditional"] - cls["mixture"]
            mean = cls.mean()
            rows.append(dict(setting=setting, classes=k, scale=scale, seed=seed, sigma=sigma,
                             input_psnr=float(g.input_psnr.mean()), **{m: float(v) for m, v in mean.items()},
                             learned_gain=float(learned.mean()), learned_gain_min=float(learned.min()),
                             learned_gain_median=float(learned.median()),
                             gaussian_gain=float(mean["gaussian-class"] - mean["gaussian-mixture"]),
                             mixture_vs_gaussian_mixture=float(mean["mixture"] - mean["gaussian-mixture"]),
                             g_infinity_db=float(g.g_infinity_db.iloc[0])))
    return pd.DataFrame(rows).sort_values(["classes", "scale", "seed", "sigma"]).reset_index(drop=True)


def report(cfg: dict, tables: str, gain: str | Path, pdf: str | Path, png: str | Path) -> None:
    """The study's table (`gain`) and figure: the gain against the number of classes and against the scale."""
    table = gains(tables.split(","))
    files.save_csv(gain, table)
    s = cfg["study"]
    figures.style()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    colors = dict(zip(sorted(table.sigma.unique()), plt.cm.viridis(np.linspace(0.1, 0.85, table.sigma.nunique()))))
    axis_rows = {"classes": table[table.scale == s["class_axis_scale"]], "scale": table[table.classes == s["scale_axis_classes"]]}
    panels = [(axes[0], "classes", "learned_gain"), (axes[1], "scale", "learned_gain"),
              (axes[2], "classes", "mixture_vs_gaussian_mixture")]
    for ax, axis, column in panels:
        rows = axis_rows[axis]
        for sigma, g in rows.groupby("sigma"):
            by = g.groupby(axis)[column]
            ax.errorbar(by.mean().index, by.mean(), yerr=by.std().fillna(0), color=colors[sigma], marker="o", capsize=3,
                        label=f"σ = {sigma:g}")
            if column == "learned_gain":
                gauss = g.groupby(axis).gaussian_gain.mean()
                ax.plot(gauss.index, gauss, color=colors[sigma], ls="--", marker="x")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_xticks(sorted(rows[axis].unique()), [f"{v:g}" for v in sorted(rows[axis].unique())])
        ax.minorticks_off()
        ax.set_xlabel("training classes" if axis == "classes" else "texture scale (crop covers more texture to the left)")
        ax.set_ylabel("conditional − mixture PSNR (dB)" if column == "learned_gain"
                      else "mixture model − Gaussian mixture (dB)")
    axes[0].set_title(f"gain vs classes (scale {s['class_axis_scale']:g})")
    axes[1].set_title(f"gain vs scale ({s['scale_axis_classes']} classes)")
    axes[2].set_title(f"learned vs Gaussian mixture (scale {s['class_axis_scale']:g})")
    axes[0].legend(title="solid: learned, dashed: Gaussian", fontsize=7, title_fontsize=7)
    figures.save(fig, pdf, png)
    log.info("study: %d settings x seeds x sigmas\n%s", len(table), table[["setting", "seed", "sigma", "learned_gain",
                                                                         "gaussian_gain", "mixture_vs_gaussian_mixture"]]
             .to_string(index=False, float_format="%.2f"))
