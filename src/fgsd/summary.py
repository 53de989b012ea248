"""Summary stage: the headline numbers of a run in summary.json (a DVC metric), each with the
counts behind it, and the Fig 3 curves in psnr_gain.csv (a DVC plot)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from scipy import stats

from . import files, samples


def psnr_gain(sweep_df: pd.DataFrame) -> pd.DataFrame:
    """Mean output-minus-input PSNR per (model, conditioning, sigma): the Fig 3 curves."""
    d = sweep_df.assign(gain=sweep_df.output_psnr - sweep_df.input_psnr)
    return d.groupby(["model", "conditioning", "sigma"], as_index=False).agg(
        gain=("gain", "mean"), input_psnr=("input_psnr", "mean"), n=("gain", "size"))


def correlations(density_df: pd.DataFrame, column: str = "sym_kl") -> dict:
    x, y = density_df.centroid_sqdist, density_df[column]
    return dict(pearson=float(stats.pearsonr(x, y)[0]), spearman=float(stats.spearmanr(x, y)[0]), n_pairs=len(x),
                n_negative=int((y < 0).sum()))


def summary(sweep: str | Path, separation: str | Path, density: str | Path, set_metrics: str,
            classifier_metrics: str | Path, summary_json: str | Path, gain: str | Path) -> None:
    """summary.json: the headline numbers, each with its counts; psnr_gain.csv: the Fig 3 curves.
    set_metrics: the evaluation groups' metric files the sample-quality headline quotes
    (stages.HEADLINE_GROUPS), comma-separated."""
    sw = files.load_csv(sweep)
    curves = psnr_gain(sw)
    files.save_csv(gain, curves)
    g = curves.set_index(["model", "conditioning", "sigma"])["gain"]
    lo, hi = sw.sigma.min(), sw.sigma.max()
    cond_gain = {f"sigma={s:.4g}": float(g["conditional", "exemplar", s] - g["mixture", "none", s]) for s in (lo, hi)}
    sep = files.load_csv(separation)
    ratios = sep.groupby(["model", "layer"]).ratio.median()
    dens = files.load_csv(density)
    out = dict(
        psnr_gain_conditional_minus_mixture_db=cond_gain,
        psnr_n_test_images=int(sw.image.nunique()),
        separation_median_ratio={m: {k: float(ratios[m, k]) for k in ratios[m].index} for m in ratios.index.levels[0]},
        density_vs_centroid_distance=correlations(dens),
        density_diff_form_vs_centroid_distance=correlations(dens, "sym_kl_diff_form"),
        sample_quality=samples.headline(samples.read_metrics(set_metrics.split(","))),
        classifier={k: v for k, v in files.load_json(classifier_metrics).items() if k != "per_class_accuracy"},
    )
    files.save_json(summary_json, out)
