"""Summary stage: the headline numbers of a run in summary.json (a DVC metric), each with the
counts behind it, and the Fig 3 curves in psnr_gain.csv (a DVC plot)."""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import pandas as pd
from scipy import stats

from . import files, samples, stages
from .errors import FgsdError


def psnr_gain(sweep_df: pd.DataFrame) -> pd.DataFrame:
    """Mean output-minus-input PSNR per (model, conditioning, sigma): the Fig 3 curves."""
    d = sweep_df.assign(gain=sweep_df.output_psnr - sweep_df.input_psnr)
    return d.groupby(["model", "conditioning", "sigma"], as_index=False).agg(
        gain=("gain", "mean"), input_psnr=("input_psnr", "mean"), n=("gain", "size"))


def correlations(density_df: pd.DataFrame, column: str = "sym_kl", x: str = "centroid_sqdist") -> dict:
    x, y = density_df[x], density_df[column]
    return dict(pearson=float(stats.pearsonr(x, y)[0]), spearman=float(stats.spearmanr(x, y)[0]), n_pairs=len(x),
                n_negative=int((y < 0).sum()))


REFERENCES = ("trivial-mean", "gaussian-mixture", "gaussian-class")  # model names of the untrained denoisers


def psnr_table(sw: pd.DataFrame) -> dict:
    """Mean output PSNR per denoiser and sigma, the references and the input beside the models
    (the single-class model on its own class's crops only)."""
    keep = sw[sw.conditioning.isin(["none", "exemplar", "class"]) & ((sw.model != "single") | sw.is_y0)]
    means = keep.groupby(["model", "sigma"]).output_psnr.mean()
    out = {m: {f"{s:.4g}": float(v) for s, v in means[m].items()} for m in means.index.levels[0]}
    out["input"] = {f"{s:.4g}": float(v) for s, v in sw.groupby("sigma").input_psnr.mean().items()}
    return out


def class_worth(sw: pd.DataFrame) -> dict:
    """What knowing the class is worth (dB) at each sigma: the conditional model over the mixture
    model (all test crops, and y0's crops alone); the exact Gaussian references (class-known over
    class-blind); the single-class oracle over the mixture model on y0's crops."""
    def mean(model, conditioning, y0_only=False):
        d = sw[(sw.model == model) & (sw.conditioning == conditioning)]
        return (d[d.is_y0] if y0_only else d).groupby("sigma").output_psnr.mean()
    pairs = {"conditional_minus_mixture": mean("conditional", "exemplar") - mean("mixture", "none"),
             "gaussian_class_minus_mixture": mean("gaussian-class", "class") - mean("gaussian-mixture", "none"),
             "oracle_single_minus_mixture_on_y0": mean("single", "none", True) - mean("mixture", "none", True),
             "conditional_minus_mixture_on_y0": mean("conditional", "exemplar", True) - mean("mixture", "none", True)}
    return {k: {f"{s:.4g}": float(v) for s, v in d.items()} for k, d in pairs.items()}


def wrong_conditioning_cost(sw: pd.DataFrame) -> dict:
    """Output PSNR with a correct exemplar minus with a crop of another class (dB), per sigma:
    what the conditional model loses when told the wrong class (the paper's Fig 2 by numbers)."""
    d = sw[sw.model == "conditional"].groupby(["conditioning", "sigma"]).output_psnr.mean()
    return {f"{s:.4g}": float(v) for s, v in (d["exemplar"] - d["wrong"]).items()}


def per_class_gain(sw: pd.DataFrame, sigma: float) -> dict:
    """Conditional (correct exemplar) minus mixture output PSNR per class at `sigma`, so a class
    that conditioning does not help is seen, not averaged away."""
    d = sw[sw.sigma == sigma]
    mean = lambda model, cond: d[(d.model == model) & (d.conditioning == cond)].groupby("cls").output_psnr.mean()
    return {c: float(v) for c, v in (mean("conditional", "exemplar") - mean("mixture", "none")).items()}


def per_class_gains(sw: pd.DataFrame) -> dict:
    """per_class_gain at sigma = 1 (the paper's top noise level) and at the sweep's largest sigma
    (3 with config/sigma3.yaml), where the class is worth most."""
    grid = set(sw.sigma)
    return {f"sigma={s:.4g}": per_class_gain(sw, s) for s in sorted({1.0, max(grid)}) if s in grid}


def below_references(table: dict, model: str) -> list[str]:
    """The sigmas at which `model` (judged on all test crops) is beaten by a reference denoiser,
    or by its own input at sigma >= 0.01."""
    return [s for s, v in table[model].items()
            if v < max(table[r][s] for r in REFERENCES) or (float(s) >= 0.01 and v < table["input"][s])]


def separation_extremes(sep: pd.DataFrame) -> dict:
    """Per model and layer: the smallest pair separation ratio, its pair, and every merged pair
    (ratio <= 1: two classes' clouds no further apart than they are wide). Medians hide these."""
    out = {}
    for (model, layer), d in sep.groupby(["model", "layer"], sort=False):
        worst = d.loc[d.ratio.idxmin()]
        merged = d[d.ratio <= 1]
        out.setdefault(model, {})[layer] = dict(min_ratio=float(worst.ratio), min_pair=[worst.cls_a, worst.cls_b],
                                                n_merged=len(merged), merged=[[a, b] for a, b in zip(merged.cls_a, merged.cls_b)],
                                                n_pairs=len(d))
    return out


def spread(values) -> dict:
    """Mean and sample std (ddof 1; null with one value) over training seeds, and the values."""
    v = pd.Series(values, dtype=float)
    return {"mean": float(v.mean()), "std": None if len(v) < 2 else float(v.std(ddof=1)), "values": v.tolist()}


def seed_spread(sweeps: dict[int, pd.DataFrame]) -> dict:
    """The PSNR headline numbers for each training seed's models (all swept on the same test
    noise), and their mean and std over seeds (ddof 1; null with one seed): the spread every
    claim about a learned model is read against."""
    per_seed = {}
    for seed, sw in sweeps.items():
        table, worth = psnr_table(sw), class_worth(sw)
        oracle, on_y0 = worth["oracle_single_minus_mixture_on_y0"], worth["conditional_minus_mixture_on_y0"]
        per_seed[seed] = {"conditional_minus_mixture_db": worth["conditional_minus_mixture"],
                          "oracle_single_minus_mixture_on_y0_db": oracle,
                          # the yardstick: the conditional model's gain as a fraction of the oracle's, same crops
                          "conditional_share_of_oracle_gain_on_y0": {s: on_y0[s] / oracle[s] for s in oracle},
                          "wrong_conditioning_cost_db": wrong_conditioning_cost(sw),
                          **{f"output_psnr_db.{m}": table[m] for m in ("mixture", "conditional", "single")}}
    out = {"seeds": list(per_seed), "n_seeds": len(per_seed)}
    for metric in next(iter(per_seed.values())):
        values = pd.DataFrame({seed: v[metric] for seed, v in per_seed.items()})  # rows: sigma, columns: seed
        out[metric] = {s: spread(values.loc[s]) for s in values.index}
    return out


def sample_seed_spread(frames: dict[int, pd.DataFrame]) -> dict:
    """The sample-quality headline of each training seed's conditional (FGSD) and mixture sets
    (the same sampling noise, the same judge), with mean and std over seeds (ddof 1; null with
    one seed): one seed's accuracy or KID can sit far from another's."""
    out = {"seeds": list(frames), "n_seeds": len(frames)}
    for set_name in stages.REPLICATED_SETS:
        out[set_name] = {}
        for name in samples.QUALITY:
            rows = [samples.quality(t, set_name, name, variant="c2f") for t in frames.values()]
            if any(r is None for r in rows):
                continue  # e.g. the mixture set has no class to be right about
            out[set_name][name] = {**spread([r.value for r in rows]), "n_samples": int(rows[0].n_samples)}
        by_class = by_class_quality(frames, set_name)
        if by_class:
            out[set_name]["by_class"] = by_class
    return out


def by_class_quality(frames: dict[int, pd.DataFrame], set_name: str) -> dict:
    """Per class, the judge's accuracy and fraction judged phase-randomised of a set's c2f samples
    (evaluate's `accuracy.<class>` rows) over training seeds: which classes the samples miss."""
    first, out = next(iter(frames.values())), {}
    for name in ("accuracy", "judged_synthetic"):
        for metric in first.metric[(first.set == set_name) & first.metric.str.startswith(f"{name}.")].unique():
            rows = [samples.metric(t, set_name, metric, variant="c2f") for t in frames.values()]
            if all(r is not None for r in rows):
                out.setdefault(metric.removeprefix(f"{name}."), {})[name] = spread([float(r.value) for r in rows])
    return out


def centroid_share(dens: pd.DataFrame) -> dict[str, float]:
    """Each phi block's share of the conditional model's squared centroid distance, summed over
    the class pairs: which blocks Fig 5's x-axis measures (the matched ones, or others)."""
    blocks = [c.removeprefix("centroid_sqdist_") for c in dens.columns
              if c.startswith("centroid_sqdist_") and c not in ("centroid_sqdist_matched", "centroid_sqdist_mixture")]
    total = dens.centroid_sqdist.sum()
    return {b: float(dens[f"centroid_sqdist_{b}"].sum() / total) for b in blocks}


AGREEMENT = ("sym_kl", "sym_kl_diff_form", "centroid_sqdist", "centroid_sqdist_matched", "centroid_sqdist_mixture")


def seed_agreement(tables: dict[int, pd.DataFrame]) -> dict:
    """For each of Fig 5's two axes (and the control): the Spearman correlation between two
    training seeds' values over the same class pairs, for every pair of seeds, with mean and std.
    Says whether Fig 5's spread over seeds comes from the density estimates or from the features."""
    keys = ["cls_a", "cls_b"]
    out = {}
    for column in AGREEMENT:
        rhos = []
        for (_, a), (_, b) in itertools.combinations(tables.items(), 2):
            both = a[keys + [column]].merge(b[keys + [column]], on=keys)
            rhos.append(float(stats.spearmanr(both[f"{column}_x"], both[f"{column}_y"])[0]))
        out[column] = spread(rhos) if rhos else None
    return out


def feature_numbers(sep: pd.DataFrame, extremes: dict, dens: pd.DataFrame) -> dict[str, float]:
    """One training seed's Fig 4-5 numbers, flat: how the density distance ranks against the
    centroid distance (both KL forms, the grid started at half and twice kl_sigma_min, the
    mixture-feature control) with its negative pairs; per model and layer the median and the
    smallest pair separation ratio and the number of merged pairs. extremes: separation_extremes(sep)."""
    out = {}
    for name, corr in (("mse_gap", correlations(dens)), ("diff_form", correlations(dens, "sym_kl_diff_form")),
                       ("mse_gap_half_min", correlations(dens, "sym_kl_half_min")),
                       ("mse_gap_double_min", correlations(dens, "sym_kl_double_min")),
                       ("control_mixture_features", correlations(dens, x="centroid_sqdist_mixture")),
                       ("matched_blocks", correlations(dens, x="centroid_sqdist_matched"))):
        out |= {f"density.{name}.{k}": float(corr[k]) for k in ("spearman", "pearson", "n_negative")}
    out |= {f"density.centroid_share.{b}": v for b, v in centroid_share(dens).items()}
    medians = sep.groupby(["model", "layer"]).ratio.median()
    for model, layers in extremes.items():
        for layer, e in layers.items():
            out |= {f"separation.{model}.{layer}.median_ratio": float(medians[model, layer]),
                    f"separation.{model}.{layer}.min_ratio": e["min_ratio"],
                    f"separation.{model}.{layer}.n_merged": float(e["n_merged"])}
    return out


def feature_seeds(cfg: dict, separation: str | Path, density: str | Path, replicate_separations: str,
                  replicate_densities: str, table: str | Path, spread_json: str | Path) -> None:
    """The separation and density-distance numbers of every training seed's models (`seed`, then
    train.replicate_seeds; the replicate files comma-separated in that order), one row per seed
    and number in `table`, their mean and std over seeds in `spread_json`, per class pair the
    seeds at which it is merged (ratio <= 1), and how well two seeds agree on each axis of Fig 5
    (`seed_agreement`)."""
    seeds = [cfg["seed"], *cfg["train"]["replicate_seeds"]]
    seps = [separation, *(p for p in replicate_separations.split(",") if p)]
    dens = [density, *(p for p in replicate_densities.split(",") if p)]
    if not len(seps) == len(dens) == len(seeds):
        raise FgsdError(f"feature_seeds: {len(seps)} separation and {len(dens)} density tables for seeds {seeds}")
    per_seed, merged, tables = {}, {}, {}
    for seed, sep_path, dens_path in zip(seeds, seps, dens):
        sep, tables[seed] = files.load_csv(sep_path), files.load_csv(dens_path)
        extremes = separation_extremes(sep)
        per_seed[seed] = feature_numbers(sep, extremes, tables[seed])
        for model, layers in extremes.items():
            for layer, e in layers.items():
                for a, b in e["merged"]:
                    merged.setdefault(model, {}).setdefault(layer, {}).setdefault(f"{a} | {b}", []).append(seed)
    files.save_csv(table, pd.DataFrame([dict(seed=seed, metric=k, value=v) for seed, m in per_seed.items()
                                        for k, v in m.items()]))
    first = next(iter(per_seed.values()))
    files.save_json(spread_json, {"seeds": seeds, "n_seeds": len(seeds),
                                  **{k: spread([m[k] for m in per_seed.values()]) for k in first},
                                  "merged_pairs_seeds": merged, "seed_agreement": seed_agreement(tables)})


def comparison_records(metrics: pd.DataFrame, d2c_protocol: str) -> list[dict]:
    """The method comparison as JSON records (NaN -> null); D2C's rows name the protocol its
    autoencoder and prior were trained under (strict, or transductive: an upper bound)."""
    rows = samples.comparison(metrics).to_dict("records")
    for row in rows:
        if row["method"] == "D2C":
            row["method"] = f"D2C ({d2c_protocol})"
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()} for row in rows]


def curves_by_seed(sweeps: dict[int, pd.DataFrame]) -> pd.DataFrame:
    """The Fig 3 curves of every training seed, one block of rows per seed."""
    return pd.concat([psnr_gain(sw).assign(seed=seed) for seed, sw in sweeps.items()], ignore_index=True)


def summary(cfg: dict, sweep: str | Path, separation: str | Path, density: str | Path, references_json: str | Path,
            set_metrics: str, classifier_metrics: str | Path, guide_metrics: str | Path, d2c_metrics: str | Path,
            replicate_sweeps: str, replicate_set_metrics: str, feature_seeds_json: str | Path,
            summary_json: str | Path, gain: str | Path, gain_by_seed: str | Path) -> None:
    """summary.json: the headline numbers, each with its counts; psnr_gain.csv: the Fig 3 curves
    (and per training seed, psnr_gain_by_seed.csv). set_metrics: the evaluation groups' metric
    files the sample-quality headline quotes (stages.HEADLINE_GROUPS); replicate_sweeps: the
    sweeps of the models of train.replicate_seeds, in that order; replicate_set_metrics: the
    metrics of their stages.REPLICATED_SETS, seed by seed; all comma-separated; feature_seeds_json:
    Figs 4-5's numbers over every training seed (`feature_seeds`), quoted as they are."""
    sw = files.load_csv(sweep)
    metrics = samples.read_metrics(set_metrics.split(","))
    replicates = [p for p in replicate_sweeps.split(",") if p]
    if len(replicates) != len(cfg["train"]["replicate_seeds"]):
        raise FgsdError(f"summary: {len(replicates)} replicate sweeps for train.replicate_seeds "
                        f"{cfg['train']['replicate_seeds']}")
    sweeps = {cfg["seed"]: sw, **{seed: files.load_csv(p) for seed, p in zip(cfg["train"]["replicate_seeds"], replicates)}}
    per_seed = [p for p in replicate_set_metrics.split(",") if p]
    k = len(stages.REPLICATED_SETS)
    if len(per_seed) != k * len(replicates):
        raise FgsdError(f"summary: {len(per_seed)} replicate sample metrics for {len(replicates)} seeds x "
                        f"{stages.REPLICATED_SETS}")
    sample_frames = {cfg["seed"]: metrics, **{seed: samples.read_metrics(per_seed[i * k:(i + 1) * k])
                                              for i, seed in enumerate(cfg["train"]["replicate_seeds"])}}
    curves = psnr_gain(sw)
    files.save_csv(gain, curves)
    files.save_csv(gain_by_seed, curves_by_seed(sweeps))
    g = curves.set_index(["model", "conditioning", "sigma"])["gain"]
    lo, hi = sw.sigma.min(), sw.sigma.max()
    cond_gain = {f"sigma={s:.4g}": float(g["conditional", "exemplar", s] - g["mixture", "none", s]) for s in (lo, hi)}
    sep = files.load_csv(separation)
    ratios = sep.groupby(["model", "layer"]).ratio.median()
    dens = files.load_csv(density)
    table = psnr_table(sw)
    out = dict(
        psnr_gain_conditional_minus_mixture_db=cond_gain,
        seeds=seed_spread(sweeps),
        psnr_n_test_images=int(sw.image.nunique()),
        output_psnr_db=table,
        class_worth_db=class_worth(sw),
        wrong_conditioning_cost_db=wrong_conditioning_cost(sw),
        per_class_gain_db=per_class_gains(sw),
        g_infinity_db=files.load_json(references_json)["g_infinity_db"],
        sigmas_where_below_a_reference={m: below_references(table, m) for m in ("mixture", "conditional")},
        separation_median_ratio={m: {k: float(ratios[m, k]) for k in ratios[m].index} for m in ratios.index.levels[0]},
        separation_extremes=separation_extremes(sep),
        feature_seeds=files.load_json(feature_seeds_json),
        density_vs_centroid_distance=correlations(dens),
        density_diff_form_vs_centroid_distance=correlations(dens, "sym_kl_diff_form"),
        density_vs_mixture_centroid_distance_control=correlations(dens, x="centroid_sqdist_mixture"),
        density_vs_matched_centroid_distance=correlations(dens, x="centroid_sqdist_matched"),
        centroid_distance_share_by_block=centroid_share(dens),
        density_grid_start_sensitivity={f"{form}kl_sigma_min{k}": correlations(dens, f"sym_kl{column}{k}")
                                        for form, column in (("", ""), ("diff_form_", "_diff_form"))
                                        for k in ("_half_min", "_double_min")},
        sample_quality=samples.headline(metrics),
        sample_quality_seeds=sample_seed_spread(sample_frames),
        method_comparison=comparison_records(metrics, files.load_json(d2c_metrics)["protocol"]),
        guide=files.load_json(guide_metrics)["final"] | {"note": "ADM-G's guide: held-out noisy crops of the seen "
                                                         "classes, accuracy per sigma band; never the judge"},
        d2c_autoencoder=files.load_json(d2c_metrics),
        classifier={k: v for k, v in files.load_json(classifier_metrics).items() if k != "per_class_accuracy"},
    )
    files.save_json(summary_json, out)
