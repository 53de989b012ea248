"""The study the paper does not have: what drives the conditional gain.

One setting is a number of training classes and a crop scale (`stages.study_settings`). Each gets
its own data (a nested seeded draw of classes from `study.dataset`, no held-out classes), a
mixture and a conditional model trained with the main recipe for `study.steps` steps up to
`study.sigma_max`, each at its own peak rate `study.lr.<kind>` (the conditional one matching
the blocks `study.match`), and a PSNR table at `study.sigmas` beside the three reference
denoisers (and the conditional model given a wrong-class exemplar, to tell whether it uses its
exemplar at all). The report reads conditional − mixture against the Gaussian references' class
worth (gaussian-class − gaussian-mixture), the gain a denoiser that knew the class exactly would
get if the classes were stationary Gaussians, and G∞, its σ → ∞ limit.

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
from .analysis import exemplar_partners, psnr_table
from .data import load_split, prepare
from .errors import FgsdError
from .figures import plt  # pyplot behind figures' non-interactive backend
from .runtime import resolve_device, to_float

log = logging.getLogger("fgsd")

YLABELS = {"learned_gain": "conditional − mixture PSNR (dB)",
           "mixture_vs_gaussian_mixture": "mixture model − Gaussian mixture (dB)",
           "wrong_exemplar_cost": "right − wrong-class exemplar (dB)"}


def _plain(cfg: dict) -> dict:
    return json.loads(json.dumps(cfg))


def setting_data_config(cfg: dict, setting: str) -> dict:
    """The data params of a setting: the main `data` block with the study's dataset, class count and scale."""
    k, scale = stages.parse_setting(setting)
    s = cfg["study"]
    d = dict(_plain(cfg["data"]), dataset=s["dataset"], scale=scale, max_classes=k, n_unseen=0, min_size=s["min_size"],
             train_per_class=s["train_per_class"], test_per_class=s["test_per_class"])
    return {"seed": cfg["seed"], "data": d}


def setting_train_config(cfg: dict, kind: str) -> dict:
    """The main training recipe, with the study's steps, noise range, evaluation levels, the peak
    rate of model `kind` (`study.lr.<kind>`: README, "Which learning rate") and, for the
    conditional model, its matched blocks (`study.match`). Its conditional model trains from
    random weights (`init: scratch`): the study's jobs do not chain a mixture model into it, as
    the main job's `train.conditional.init: mixture` does; one x' per crop (`conditioner: per_crop`),
    as the study was measured."""
    out = _plain(cfg)
    s = out.pop("study")
    if kind == "conditional":
        out["model"]["match"] = s["match"]
    out["train"].update(sigma_max=s["sigma_max"], lr=s["lr"][kind], eval_every=s["steps"],
                        eval_crops_per_class=s["test_per_class"],
                        mixture={"steps": s["steps"]},
                        conditional={"steps": s["steps"], "init": "scratch", "conditioner": "per_crop"})
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


def train_setting(cfg: dict, name: str, data: str | Path, model: str | Path, train_log: str | Path,
                  config_json: str | Path, metrics: str | Path, state: str | Path, device: str = "auto") -> None:
    """One of the setting's two models (`name`: mixture or conditional): `train.train` itself, so it
    resumes after a kill as the main ones do."""
    if name not in stages.STUDY_KINDS:
        raise FgsdError(f"the study trains {stages.STUDY_KINDS}, not '{name}'")
    train.train(setting_train_config(cfg, name), name, data, model, train_log, config_json, metrics, state, device,
                lr_key=f"study.lr.{name}")


@torch.no_grad()
def evaluate_setting(cfg: dict, data: str | Path, mixture: str | Path, conditional: str | Path, table: str | Path,
                     device: str = "auto") -> None:
    """Per class and sigma: mean output PSNR of the two models (the conditional one given another
    test crop of the same class, as the main sweep's headline, and a crop of another class: does it
    use its exemplar at all?) and of the references, on the same noise for every training seed; G∞
    of the setting's training crops as a column."""
    dev, seed = resolve_device(device), cfg["seed"]
    test, train_split = load_split(data, "test"), load_split(data, "train")
    classes = [str(c) for c in test["classes"]]
    x, labels = to_float(test["images"]), torch.from_numpy(test["labels"])
    x_train, l_train = to_float(train_split["images"]), torch.from_numpy(train_split["labels"])
    mix = checkpoints.load(mixture, network.UNet, ("mixture",), dev)[0]
    cond = checkpoints.load(conditional, network.UNet, ("conditional",), dev)[0]
    same, wrong = exemplar_partners(labels, seed)
    denoisers = {("conditional", "exemplar"): lambda y, i: cond(y, x[same[i]].to(dev)),
                 ("conditional", "wrong"): lambda y, i: cond(y, x[wrong[i]].to(dev)),
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
    (classes weigh equally), the learned and the Gaussian class worth, the smallest and median
    per-class learned gain, and what a wrong-class exemplar costs the conditional model (NaN for a
    table written before that row existed)."""
    rows = []
    for path in tables:
        setting, seed = Path(path).parent.parent.name, int(Path(path).parent.name.removeprefix("seed"))
        k, scale = stages.parse_setting(setting)
        t = files.load_csv(path)
        for sigma, g in t.groupby("sigma"):
            wrong = g.conditioning == "wrong"
            cls = g[~wrong].pivot_table(index="cls", columns="model", values="output_psnr")
            learned = cls["conditional"] - cls["mixture"]
            mean = cls.mean()
            cost = cls["conditional"] - g[wrong].set_index("cls").output_psnr if wrong.any() else learned * np.nan
            rows.append(dict(setting=setting, classes=k, scale=scale, seed=seed, sigma=sigma,
                             input_psnr=float(g.input_psnr.mean()), **{m: float(v) for m, v in mean.items()},
                             learned_gain=float(learned.mean()), learned_gain_min=float(learned.min()),
                             learned_gain_median=float(learned.median()),
                             wrong_exemplar_cost=float(cost.mean()),
                             gaussian_gain=float(mean["gaussian-class"] - mean["gaussian-mixture"]),
                             mixture_vs_gaussian_mixture=float(mean["mixture"] - mean["gaussian-mixture"]),
                             g_infinity_db=float(g.g_infinity_db.iloc[0])))
    return pd.DataFrame(rows).sort_values(["classes", "scale", "seed", "sigma"]).reset_index(drop=True)


def flag_ignored_exemplars(table: pd.DataFrame) -> pd.DataFrame:
    """Mark each setting and seed whose conditional model ignores its exemplar: a wrong-class one
    costs it less than `train.IGNORED_EXEMPLAR_DB` at every sigma. Its gain over the mixture model, if
    any, then comes from training, not from the class (README, "Which learning rate"); a warning
    names them."""
    largest_cost = table.groupby(["setting", "seed"]).wrong_exemplar_cost.transform("max")
    out = table.assign(ignores_exemplar=largest_cost < train.IGNORED_EXEMPLAR_DB)
    for (setting, seed), g in out[out.ignores_exemplar].groupby(["setting", "seed"]):
        log.warning("study: the conditional model of %s seed %d ignores its exemplar (a wrong-class exemplar costs "
                    "at most %.3f dB): its learned gain is not the class's", setting, seed, g.wrong_exemplar_cost.max())
    return out


def report(cfg: dict, tables: str, gain: str | Path, pdf: str | Path, png: str | Path) -> None:
    """The study's table (`gain`) and figure: the gain against the number of classes and against the
    scale, the mixture model against the Gaussian mixture, and the wrong-exemplar cost."""
    table = flag_ignored_exemplars(gains(tables.split(",")))
    files.save_csv(gain, table)
    s = cfg["study"]
    figures.style()
    fig, axes = plt.subplots(1, 4, figsize=(18, 3.8), layout="constrained")
    colors = dict(zip(sorted(table.sigma.unique()), plt.cm.viridis(np.linspace(0.1, 0.85, table.sigma.nunique()))))
    axis_rows = {"classes": table[table.scale == s["class_axis_scale"]], "scale": table[table.classes == s["scale_axis_classes"]]}
    panels = [(axes[0], "classes", "learned_gain"), (axes[1], "scale", "learned_gain"),
              (axes[2], "classes", "mixture_vs_gaussian_mixture"), (axes[3], "classes", "wrong_exemplar_cost")]
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
        ax.set_ylabel(YLABELS[column])
    axes[0].set_title(f"gain vs classes (scale {s['class_axis_scale']:g})")
    axes[1].set_title(f"gain vs scale ({s['scale_axis_classes']} classes)")
    axes[2].set_title(f"learned vs Gaussian mixture (scale {s['class_axis_scale']:g})")
    axes[3].set_title(f"does it use the exemplar? (scale {s['class_axis_scale']:g})")
    axes[0].legend(title="solid: learned, dashed: Gaussian", fontsize=7, title_fontsize=7)
    figures.save(fig, pdf, png)
    log.info("study: %d settings x seeds x sigmas\n%s", len(table), table[["setting", "seed", "sigma", "learned_gain",
                                                                         "gaussian_gain", "mixture_vs_gaussian_mixture",
                                                                         "wrong_exemplar_cost"]]
             .to_string(index=False, float_format="%.2f"))
