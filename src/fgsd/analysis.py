"""Analysis stages (METHOD.md §2.5, §7): PSNR-vs-noise sweep, feature separation and density
distance (the headline numbers are `summary.py`).

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

from . import checkpoints, files, kl, network, references
from .data import epoch_plan, load_split, other_class_partner
from .denoisers import class_centroid, unet
from .runtime import generator, resolve_device, to_float

log = logging.getLogger("fgsd")


def class_centroids(model: network.UNet, x: torch.Tensor, labels: torch.Tensor, device) -> dict[int, dict]:
    """Raw matched-block centroid phi_y of each class from all its (clean) crops."""
    return {int(c): class_centroid(model, x[labels == c], device) for c in torch.unique(labels)}


def _tile(cond: dict, n: int, device) -> dict:
    return {b: v.expand(n, -1).to(device) for b, v in cond.items()}


def exemplar_partners(labels: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per test crop, the index of the exemplar the conditional model is given: another crop of its
    own class, and a crop of a random other class (the wrong conditioning)."""
    _, same = epoch_plan(generator(seed, 20), labels)
    return same, other_class_partner(generator(seed, 21), labels)


@torch.no_grad()
def psnr_table(denoisers: dict, refs: dict, x: torch.Tensor, labels: torch.Tensor, classes: list[str],
               sigmas: list[float], seed: int, batch_size: int, dev) -> pd.DataFrame:
    """Output PSNR of every crop of `x` at every sigma, one row per (denoiser, crop, sigma), all
    denoisers on the same noise. denoisers: (model, conditioning) -> f(noisy, rows) on `dev`;
    refs: the same for the reference denoisers, f(noisy, sigma, rows) on the CPU."""
    rows = []
    for j, s in enumerate(sigmas):
        z = torch.randn(x.shape, generator=generator(seed, 22, j))
        for i0 in range(0, len(x), batch_size):
            i = torch.arange(i0, min(i0 + batch_size, len(x)))
            clean = x[i].to(dev)
            noisy = clean + s * z[i].to(dev)
            p_in = network.psnr(noisy, clean).cpu()
            outputs = {key: f(noisy, i) for key, f in denoisers.items()}
            level = torch.full((len(i),), float(s))
            outputs.update({key: f(noisy.cpu(), level, i).to(dev) for key, f in refs.items()})
            for (model, conditioning), out in outputs.items():
                p_out = network.psnr(out, clean).cpu()
                rows += [dict(model=model, conditioning=conditioning, cls=classes[int(labels[k])], sigma=s,
                              image=int(k), input_psnr=float(pi), output_psnr=float(po))
                         for k, pi, po in zip(i.tolist(), p_in, p_out)]
        log.info("sigma %.4g done", s)
    return pd.DataFrame(rows)


@torch.no_grad()
def sweep(cfg: dict, mixture: str | Path, conditional: str | Path, single: str | Path, data: str | Path,
          table: str | Path, references_json: str | Path | None = None, device="auto") -> None:
    """Output PSNR of every test crop at every sigma, for each denoiser and conditioning, beside
    the reference denoisers that need no training (`references.py`, fitted to the training
    crops; model names trivial-mean, gaussian-mixture, gaussian-class). references_json: G∞ (the
    replicate sweeps leave it out: it does not depend on the training seed)."""
    a, seed, dev = cfg["analysis"], cfg["seed"], resolve_device(device)
    test, train = load_split(data, "test"), load_split(data, "train")
    classes = [str(c) for c in test["classes"]]
    x, labels = to_float(test["images"]), torch.from_numpy(test["labels"])
    models = {k: checkpoints.load(path, network.UNet, (k,), dev)[0]
              for k, path in (("mixture", mixture), ("conditional", conditional), ("single", single))}
    y0 = classes.index(cfg["train"]["single"]["class"])
    cond = models["conditional"]
    x_train, l_train = to_float(train["images"]), torch.from_numpy(train["labels"])
    centroids = class_centroids(cond, x_train, l_train, dev)
    same, wrong = exemplar_partners(labels, seed)
    stack = lambda ids: {b: torch.cat([centroids[i][b] for i in ids]).to(dev) for b in cond.match}
    denoisers = {
        ("conditional", "exemplar"): lambda y, i: cond(y, x[same[i]].to(dev)),
        ("conditional", "centroid"): lambda y, i: cond(y, stack(labels[i].tolist())),
        ("conditional", "wrong"): lambda y, i: cond(y, x[wrong[i]].to(dev)),
        ("conditional", "y0-centroid"): lambda y, i: cond(y, _tile(centroids[y0], len(i), dev)),
        ("mixture", "none"): lambda y, i: models["mixture"](y),
        ("single", "none"): lambda y, i: models["single"](y),
    }
    gauss = references.StationaryGaussians(x_train, l_train)
    refs = references.reference_denoisers(gauss, labels)
    frame = psnr_table(denoisers, refs, x, labels, classes, cfg["sigmas"], seed, a["batch_size"], dev)
    frame.insert(3, "is_y0", frame.cls == classes[y0])
    files.save_csv(table, frame)
    g_inf = references.g_infinity(x_train, l_train)
    log.info("G_inf (class-known minus class-blind MMSE gain as sigma -> inf): %.2f dB", g_inf)
    if references_json is not None:
        files.save_json(references_json, dict(g_infinity_db=g_inf, n_train=len(x_train), n_classes=len(gauss.classes)))


def separation(phi_mixture: str | Path, phi_conditional: str | Path, table: str | Path) -> None:
    """Per model, layer and class pair: centroid distance and within-class spread (train crops)."""
    rows = []
    for model, path in (("mixture", phi_mixture), ("conditional", phi_conditional)):
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
    files.save_csv(table, pd.DataFrame(rows))


@torch.no_grad()
def density(cfg: dict, model: str | Path, phi: str | Path, phi_mixture: str | Path, data: str | Path,
            table: str | Path, device="auto") -> None:
    """Symmetrised KL-through-denoisers between class pairs, with the conditional denoiser
    conditioned on the correct vs the wrong class centroid, against ||phi_y - phi_y'||². The
    integrand is also evaluated at kl_sigma_min / 2 and 2 kl_sigma_min, so each pair's KL (both
    forms) is reported with the grid starting there too: how much it rests on its lowest sigma.
    The mixture model's centroid distance is the control: features not trained for
    conditioning, against the same KL estimates. The conditional model's centroid distance is
    also given per phi block and over the matched blocks alone (the features the denoiser is
    conditioned on, so the only ones the KL estimate can see)."""
    a, seed, dev = cfg["analysis"], cfg["seed"], resolve_device(device)
    net, _ = checkpoints.load(model, network.UNet, ("conditional",), dev)
    test, train = load_split(data, "test"), load_split(data, "train")
    x, labels = to_float(test["images"]).to(dev), torch.from_numpy(test["labels"])
    centroids = class_centroids(net, to_float(train["images"]), torch.from_numpy(train["labels"]), dev)
    phi_c, phi_m = ({int(c): f["centroids_train"][k] for k, c in enumerate(f["centroid_labels_train"])}
                    for f in (files.load_npz(phi), files.load_npz(phi_mixture)))
    slices = network.layer_slices(net.widths)  # phi's blocks: the x-axis split by block, the matched ones summed
    grid = kl.log_grid(a["kl_sigma_min"], a["kl_sigma_max"], a["kl_n_sigmas"])
    lo = a["kl_sigma_min"]
    sigmas = np.unique(np.concatenate([grid, [lo / 2, 2 * lo]]))
    on_grid = np.isin(sigmas, grid)
    spans = {"": on_grid, "_half_min": on_grid | (sigmas == lo / 2),
             "_double_min": (on_grid & (sigmas >= 2 * lo)) | (sigmas == 2 * lo)}
    pairs = list(itertools.combinations(sorted(centroids), 2))
    if len(pairs) > a["kl_max_pairs"]:
        keep = np.random.default_rng(seed).choice(len(pairs), a["kl_max_pairs"], replace=False)
        pairs = [pairs[k] for k in sorted(keep)]
    blocks = next(iter(centroids.values()))  # every class has the same matched blocks
    by_label = {b: torch.zeros(max(centroids) + 1, v.shape[-1], dtype=v.dtype) for b, v in blocks.items()}
    for c, cond in centroids.items():  # row c: class c's centroid, so a crop's `rows` entry names its conditioner
        for b, v in cond.items():
            by_label[b][c] = v.reshape(-1)
    conditional = unet(net, dev, by_label)
    crops = {c: x[labels == c] for c in centroids}
    gaps = kl.class_gaps(crops, conditional, pairs, sigmas, a["kl_n_noise"],
                         {c: generator(seed, 30, c) for c in centroids})
    rows = []
    for ya, yb in pairs:
        gap_ab, gap_ba = gaps[ya, yb], gaps[yb, ya]
        row = dict(cls_a=str(test["classes"][ya]), cls_b=str(test["classes"][yb]),
                   kl_ab=kl.integrate(grid, gap_ab[on_grid, 0]), kl_ba=kl.integrate(grid, gap_ba[on_grid, 0]))
        for suffix, keep in spans.items():
            row[f"sym_kl{suffix}"] = kl.integrate(sigmas[keep], gap_ab[keep, 0] + gap_ba[keep, 0])
        for suffix, keep in spans.items():
            row[f"sym_kl_diff_form{suffix}"] = kl.integrate(sigmas[keep], gap_ab[keep, 1] + gap_ba[keep, 1])
        sq = (phi_c[ya] - phi_c[yb]) ** 2
        by_block = {f"centroid_sqdist_{b}": float(sq[s].sum()) for b, s in slices.items()}
        rows.append(dict(row, centroid_sqdist=float(sq.sum()),
                         centroid_sqdist_matched=sum(by_block[f"centroid_sqdist_{b}"] for b in net.match),
                         centroid_sqdist_mixture=float(((phi_m[ya] - phi_m[yb]) ** 2).sum()), **by_block,
                         n_a=int((labels == ya).sum()), n_b=int((labels == yb).sum())))
        log.info("%s vs %s: symmetric KL %.4g", rows[-1]["cls_a"], rows[-1]["cls_b"], rows[-1]["sym_kl"])
    files.save_csv(table, pd.DataFrame(rows))
