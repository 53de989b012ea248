"""Analysis stages (METHOD.md §2.5, §7): PSNR-vs-noise sweep, feature separation, density
distance, and the headline numbers in summary.json.

Separation statistic (Fig 4, middle), per layer l: the median over class pairs of
    r_l(y, y') = ||phi_{y,l} - phi_{y',l}||² / sqrt(v_{y,l} v_{y',l})
(between-centroid squared distance over the geometric mean of the within-class variances,
w-weighted features, training crops). r > 1: the two classes' clouds are further apart than
they are wide.
"""
from __future__ import annotations

import itertools
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats

from . import files, kl, network
from .data import load_split
from .train import epoch_plan, generator, load_model, resolve_device, to_float

log = logging.getLogger("fgsd")


def class_centroids(model: network.UNet, x: torch.Tensor, labels: torch.Tensor, device) -> dict[int, dict]:
    """Raw matched-block centroid phi_y of each class from its (clean) crops."""
    return {int(c): model.condition(x[labels == c].to(device), average=True) for c in torch.unique(labels)}


def _tile(cond: dict, n: int) -> dict:
    return {b: v.expand(n, -1) for b, v in cond.items()}


@torch.no_grad()
def sweep(cfg: dict, models_dir: str | Path, data_dir: str | Path, out_csv: str | Path, device="auto") -> None:
    """Output PSNR of every test crop at every sigma, for each denoiser and conditioning."""
    a, seed, dev = cfg["analysis"], cfg["seed"], resolve_device(device)
    test, train = load_split(data_dir, "test"), load_split(data_dir, "train")
    classes = [str(c) for c in test["classes"]]
    x, labels = to_float(test["images"]), torch.from_numpy(test["labels"])
    models = {k: load_model(Path(models_dir) / k / "model.pt", dev)[0] for k in ("mixture", "conditional", "single")}
    y0 = classes.index(cfg["train"]["single"]["class"])
    cond = models["conditional"]
    centroids = class_centroids(cond, to_float(train["images"]), torch.from_numpy(train["labels"]), dev)
    _, same = epoch_plan(generator(seed, 20), labels)              # another crop of the same class
    shift = torch.randint(1, len(torch.unique(labels)), (len(labels),), generator=generator(seed, 21))
    other = (labels + shift) % len(torch.unique(labels))           # a random other class
    wrong = torch.stack([torch.nonzero(labels == c).flatten()[i % int((labels == c).sum())]
                         for i, c in enumerate(other.tolist())])
    stack = lambda ids: {b: torch.cat([centroids[i][b] for i in ids]) for b in cond.match}  # noqa: E731
    denoisers = {
        ("conditional", "exemplar"): lambda y, i: cond(y, x[same[i]].to(dev)),
        ("conditional", "centroid"): lambda y, i: cond(y, stack(labels[i].tolist())),
        ("conditional", "wrong"): lambda y, i: cond(y, x[wrong[i]].to(dev)),
        ("conditional", "y0-centroid"): lambda y, i: cond(y, _tile(centroids[y0], len(i))),
        ("mixture", "none"): lambda y, i: models["mixture"](y),
        ("single", "none"): lambda y, i: models["single"](y),
    }
    rows = []
    for j, s in enumerate(a["sigmas"]):
        z = torch.randn(x.shape, generator=generator(seed, 22, j))
        for i0 in range(0, len(x), a["batch_size"]):
            i = torch.arange(i0, min(i0 + a["batch_size"], len(x)))
            clean = x[i].to(dev)
            noisy = clean + s * z[i].to(dev)
            p_in = network.psnr(noisy, clean).cpu()
            for (model, conditioning), f in denoisers.items():
                p_out = network.psnr(f(noisy, i), clean).cpu()
                rows += [dict(model=model, conditioning=conditioning, cls=classes[int(labels[k])],
                              is_y0=int(labels[k]) == y0, sigma=s, image=int(k), input_psnr=float(pi),
                              output_psnr=float(po)) for k, pi, po in zip(i.tolist(), p_in, p_out)]
        log.info("sigma %.4g done", s)
    files.save_csv(out_csv, pd.DataFrame(rows))


def separation(phi_files: dict[str, str | Path], out_csv: str | Path) -> None:
    """Per model, layer and class pair: centroid distance and within-class spread (train crops)."""
    rows = []
    for model, path in phi_files.items():
        f = files.load_npz(path)
        layers, sizes = [str(s) for s in f["layers"]], f["layer_sizes"]
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        cent, var, labels = f["centroids_train"], f["within_var_train"], f["centroid_labels_train"]
        for a, b in itertools.combinations(range(len(labels)), 2):
            for j, layer in enumerate(layers + ["all"]):
                s = slice(0, bounds[-1]) if layer == "all" else slice(bounds[j], bounds[j + 1])
                va, vb = (var[a].sum(), var[b].sum()) if layer == "all" else (var[a, j], var[b, j])
                d2 = float(((cent[a, s] - cent[b, s]) ** 2).sum())
                rows.append(dict(model=model, layer=layer, cls_a=str(f["classes"][labels[a]]),
                                 cls_b=str(f["classes"][labels[b]]), centroid_sqdist=d2,
                                 within_geomean=float(np.sqrt(va * vb)), ratio=d2 / float(np.sqrt(va * vb))))
    files.save_csv(out_csv, pd.DataFrame(rows))


@torch.no_grad()
def density(cfg: dict, model_path: str | Path, phi_path: str | Path, data_dir: str | Path,
            out_csv: str | Path, device="auto") -> None:
    """Symmetrised KL-through-denoisers between class pairs, with the conditional denoiser
    conditioned on the correct vs the wrong class centroid, against ||phi_y - phi_y'||²."""
    a, seed, dev = cfg["analysis"], cfg["seed"], resolve_device(device)
    model, _ = load_model(model_path, dev)
    test, train = load_split(data_dir, "test"), load_split(data_dir, "train")
    x, labels = to_float(test["images"]).to(dev), torch.from_numpy(test["labels"])
    centroids = class_centroids(model, to_float(train["images"]), torch.from_numpy(train["labels"]), dev)
    feats = files.load_npz(phi_path)
    phi_c = {int(c): feats["centroids_train"][k] for k, c in enumerate(feats["centroid_labels_train"])}
    sigmas = kl.log_grid(a["kl_sigma_min"], a["kl_sigma_max"], a["kl_n_sigmas"])
    pairs = list(itertools.combinations(sorted(centroids), 2))
    if len(pairs) > a["kl_max_pairs"]:
        keep = np.random.default_rng(seed).choice(len(pairs), a["kl_max_pairs"], replace=False)
        pairs = [pairs[k] for k in sorted(keep)]
    denoiser = lambda c: (lambda y: model(y, _tile(centroids[c], len(y))))  # noqa: E731
    rows = []
    for ya, yb in pairs:
        g = generator(seed, 30, ya, yb)
        kl_ab, sq_ab, _ = kl.kl_divergence(x[labels == ya], denoiser(ya), denoiser(yb), sigmas, a["kl_n_noise"], g)
        kl_ba, sq_ba, _ = kl.kl_divergence(x[labels == yb], denoiser(yb), denoiser(ya), sigmas, a["kl_n_noise"], g)
        rows.append(dict(cls_a=str(test["classes"][ya]), cls_b=str(test["classes"][yb]), kl_ab=kl_ab, kl_ba=kl_ba,
                         sym_kl=kl_ab + kl_ba, sym_kl_diff_form=sq_ab + sq_ba,
                         centroid_sqdist=float(((phi_c[ya] - phi_c[yb]) ** 2).sum()),
                         n_a=int((labels == ya).sum()), n_b=int((labels == yb).sum())))
        log.info("%s vs %s: symmetric KL %.4g", rows[-1]["cls_a"], rows[-1]["cls_b"], rows[-1]["sym_kl"])
    files.save_csv(out_csv, pd.DataFrame(rows))


def psnr_gain(sweep_df: pd.DataFrame) -> pd.DataFrame:
    """Mean output-minus-input PSNR per (model, conditioning, sigma): the Fig 3 curves."""
    d = sweep_df.assign(gain=sweep_df.output_psnr - sweep_df.input_psnr)
    return d.groupby(["model", "conditioning", "sigma"], as_index=False).agg(
        gain=("gain", "mean"), input_psnr=("input_psnr", "mean"), n=("gain", "size"))


def correlations(density_df: pd.DataFrame, column: str = "sym_kl") -> dict:
    x, y = density_df.centroid_sqdist, density_df[column]
    return dict(pearson=float(stats.pearsonr(x, y)[0]), spearman=float(stats.spearmanr(x, y)[0]), n_pairs=len(x),
                n_negative=int((y < 0).sum()))


def summary(sweep_csv, separation_csv, density_csv, out_json, gain_csv, samples_json, classifier_json) -> None:
    sw = files.load_csv(sweep_csv)
    gain = psnr_gain(sw)
    files.save_csv(gain_csv, gain)
    g = gain.set_index(["model", "conditioning", "sigma"])["gain"]
    lo, hi = sw.sigma.min(), sw.sigma.max()
    cond_gain = {f"sigma={s:.4g}": float(g["conditional", "exemplar", s] - g["mixture", "none", s]) for s in (lo, hi)}
    sep = files.load_csv(separation_csv)
    ratios = sep.groupby(["model", "layer"]).ratio.median()
    dens = files.load_csv(density_csv)
    out = dict(
        psnr_gain_conditional_minus_mixture_db=cond_gain,
        psnr_n_test_images=int(sw.image.nunique()),
        separation_median_ratio={m: {l: float(ratios[m, l]) for l in ratios[m].index} for m in ratios.index.levels[0]},
        density_vs_centroid_distance=correlations(dens),
        density_diff_form_vs_centroid_distance=correlations(dens, "sym_kl_diff_form"),
        sample_quality=files.load_json(samples_json),
        classifier={k: v for k, v in files.load_json(classifier_json).items() if k != "per_class_accuracy"},
    )
    files.save_json(out_json, out)
