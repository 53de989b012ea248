"""Figures of the sample sets: per-class sample grids, interpolation and class mixing, few-shot
classes, and sample quality against network evaluations. Images are tiled into one mosaic per
panel (one imshow each), so a grid of hundreds of crops stays light and sharp.
"""
from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import samples
from .data import load_split
from .figures import save

PAD = 2  # pixels between tiles


def mosaic(rows: list[list[np.ndarray]], cols: int | None = None) -> np.ndarray:
    """uint8 C x H x W crops in rows -> one H x W (x 3) float image with white gaps."""
    c, h, w = rows[0][0].shape
    cols = cols or max(len(r) for r in rows)
    out = np.ones((len(rows) * (h + PAD) - PAD, cols * (w + PAD) - PAD, c))
    for i, r in enumerate(rows):
        for j, img in enumerate(r):
            out[i * (h + PAD):i * (h + PAD) + h, j * (w + PAD):j * (w + PAD) + w] = img.transpose(1, 2, 0) / 255
    return out.squeeze(-1) if c == 1 else out


def show(ax, img: np.ndarray, title: str = "", row_labels: list[str] | None = None, tile: int = 32,
         col_labels: list[str] | None = None) -> None:
    ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    step = tile + PAD
    ax.set_yticks([i * step + tile / 2 for i in range(len(row_labels))] if row_labels else [])
    ax.set_yticklabels(row_labels or [], fontsize=6)
    ax.set_xticks([j * step + tile / 2 for j in range(len(col_labels))] if col_labels else [])
    ax.set_xticklabels(col_labels or [], fontsize=6)
    ax.tick_params(length=0)
    ax.grid(False)
    for s in ax.spines.values():
        s.set_visible(False)


def _metric(table: pd.DataFrame, set_name: str, metric: str, param=None, variant=None) -> str:
    r = samples.metric(table, set_name, metric, variant=variant, param=param)
    return f"{r.value:.2f} (n={r.n_samples})" if r is not None else "n/a"


def _per_class(table: pd.DataFrame, cls: str) -> str:
    """'right | phase-randomised' fractions of one class's feature-guided samples, as the judge sees them."""
    r = [samples.metric(table, "conditional", f"{m}.{cls}", variant="c2f") for m in ("accuracy", "judged_synthetic")]
    return " | ".join(f"{x.value:.2f}" if x is not None else "n/a" for x in r)


def _short(name: str) -> str:
    return name.split("-", 1)[-1]


def fig6_samples(cfg, conditional, mixture, metrics, data, pdf, png) -> None:
    """Per seen class: training exemplars, feature-guided samples; beside them, mixture samples."""
    cond = samples.load(conditional)
    mix = samples.load(mixture)
    train, table = load_split(data, "train"), samples.read_metrics([metrics], rounded=True)
    classes = [str(c) for c in train["classes"]]
    labels = np.unique(cond["label"])
    k = min(8, int((cond["label"] == labels[0]).sum()))
    ex = [list(train["images"][train["labels"] == c][:3]) for c in labels]
    smp = [list(cond["images"][cond["label"] == c][:k]) for c in labels]
    per_row = min(k, len(mix["images"]) // len(labels))
    mx = [list(mix["images"][i * per_row:(i + 1) * per_row]) for i in range(len(labels))]
    tile = train["images"].shape[-1]
    fig, ax = plt.subplots(1, 3, figsize=(2 + 0.5 * (3 + 2 * max(k, 3)), 0.42 * len(labels) + 1.2),
                           gridspec_kw={"width_ratios": [3, k, per_row]})
    show(ax[0], mosaic(ex), "training crops", [_short(classes[c]) for c in labels], tile)
    show(ax[1], mosaic(smp), f"feature-guided (Alg. B), accuracy {_metric(table, 'conditional', 'accuracy')}"
         "\nper row: judged right | judged phase-randomised", [_per_class(table, classes[c]) for c in labels], tile)
    show(ax[2], mosaic(mx), "mixture model (Alg. A)\nrows are not classes", tile=tile)
    files_note = "centroid from all training crops" if cfg["sampling"]["exemplars"] == 0 else \
        f"centroid from {cfg['sampling']['exemplars']} training crops"
    fig.suptitle(f"Samples per class ({files_note}; β={cfg['sampling']['beta']}, h0={cfg['sampling']['h0']})",
                 fontsize=9)
    save(fig, pdf, png)


def fig7_interpolation(interpolation, mixing, data, pdf, png) -> None:
    """Algorithm C (phi_alpha, same noise seed along a row; last row per pair: DDIM slerp between
    inverted real crops) and Algorithm C' (class a above the switch sigma, class b below)."""
    interp = samples.load(interpolation)
    mixing = samples.load(mixing)
    classes = [str(c) for c in load_split(data, "train")["classes"]]
    tile = interp["images"].shape[-1]
    fig, ax = plt.subplots(1, 2, figsize=(12, 0.5 * len(interp["images"]) / len(np.unique(interp["param"])) + 1.5))
    for a, t, name, fmt in ((ax[0], interp, "Alg. C: φ_α = (1-α) φ_a + α φ_b", "α={:g}"),
                            (ax[1], mixing, "Alg. C': class a while σ̂ > s, then class b", "s={:g}")):
        params = list(dict.fromkeys(t["param"].tolist()))
        rows, labels = [], []
        for key in dict.fromkeys(zip(t["label"].tolist(), t["class_b"].tolist(), t["variant"].tolist(),
                                     t["seed"].tolist())):
            k = (t["label"] == key[0]) & (t["class_b"] == key[1]) & (t["variant"] == key[2]) & (t["seed"] == key[3])
            rows.append(list(t["images"][k]))
            labels.append(f"{_short(classes[key[0]])}→{_short(classes[key[1]])}" +
                          (" (DDIM slerp)" if key[2] == "ddim-slerp" else ""))
        show(a, mosaic(rows, len(params)), name, labels, tile, [fmt.format(p) for p in params])
    fig.suptitle("Out-of-distribution generation by feature interpolation, and coarse-to-fine class mixing", fontsize=9)
    save(fig, pdf, png)


def fig8_fewshot(fewshot, metrics, data, pdf, png) -> None:
    """Held-out classes: real crops, then samples from centroids of N exemplars per row."""
    few = samples.load(fewshot)
    unseen, table = load_split(data, "unseen"), samples.read_metrics([metrics], rounded=True)
    classes = [str(c) for c in unseen["classes"]]
    tile = few["images"].shape[-1]
    rows, labels = [], []
    for c in np.unique(few["label"]):
        real = unseen["images"][(unseen["labels"] == c) & (unseen["region"] == 1)]
        k = int(((few["label"] == c) & (few["param"] == few["param"][0])).sum())
        rows.append(list(real[:k])), labels.append(f"{_short(classes[c])}: held-out crops")
        for n in np.unique(few["param"][few["label"] == c]):
            rows.append(list(few["images"][(few["label"] == c) & (few["param"] == n)]))
            labels.append(f"N = {int(n)}")
    fig, ax = plt.subplots(figsize=(2 + 0.45 * max(len(r) for r in rows), 0.45 * len(rows) + 1))
    acc = ", ".join(f"N={int(n)}: {_metric(table, 'fewshot', 'accuracy', param=n)}" for n in np.unique(few["param"]))
    show(ax, mosaic(rows), f"Few-shot classes (never trained on): samples from a centroid of N exemplars\n"
                           f"classifier accuracy {acc}", labels, tile)
    save(fig, pdf, png)


def fig9_quality_nfe(cfg, metrics, reference, pdf, png) -> None:
    """KID and classifier accuracy of conditional samples vs network evaluations per sample."""
    t = samples.read_metrics([metrics], rounded=True)
    t = t[t.set == "nfe"]
    wide = t[t.extractor.fillna("").isin(["", "fgsd-classifier"])].pivot_table(
        index="variant", columns="metric", values="value").reset_index()
    eta = cfg["sampling"]["ddim_eta"]
    wide["sampler"] = np.select(
        [wide.variant.str.endswith("mixture start"), wide.variant.str.startswith("ddim")],
        [f"DDIM (η={eta:g}), start: the mixture's noisy Gaussian fit", f"DDIM (η={eta:g}), start: the class's"],
        "coarse-to-fine (Alg. B)")
    control = wide[wide.variant == "gaussian fit"]  # no network: drawn as a line, not a point at NFE 0
    wide = wide[wide.variant != "gaussian fit"]
    n = int(t.n_samples.iloc[0])
    real = samples.read_metrics([reference], rounded=True).query(
        "set == 'real' and metric == 'kid' and extractor == 'fgsd-classifier'")
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    for a, metric, label in ((ax[0], "kid", "KID (in-domain features)"), (ax[1], "accuracy", "classifier accuracy")):
        for sampler, d in wide.groupby("sampler"):
            d = d.sort_values("nfe")
            a.errorbar(d.nfe, d[metric], yerr=d["kid_std"] if metric == "kid" else None, marker="o", capsize=3,
                       label=sampler)
            for r in d.itertuples():
                a.annotate(r.variant.split(" ")[1], (r.nfe, getattr(r, metric)), fontsize=6,
                           textcoords="offset points", xytext=(3, 3))
        if len(control):
            a.axhline(control[metric].iloc[0], color="0.35", ls=":", lw=1,
                      label="class's Gaussian fit alone (no network; DDIM's start without its noise)")
        a.set_xscale("log"), a.set_xlabel("network evaluations per sample"), a.set_ylabel(label)
        a.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        a.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax[1].set_ylim(-0.02, 1.02)
    if len(real):
        ax[0].axhline(real.value.iloc[0], color="grey", ls="--", lw=1, label="real train vs test crops")
    ax[0].legend(fontsize=6, loc="best"), ax[1].legend(fontsize=6, loc="best")
    fig.suptitle(f"Sample quality vs cost: {n} conditional samples per setting against held-out crops", fontsize=9)
    save(fig, pdf, png)



def fig10_guidance(cfg, guidance, metrics, guide_log, data, pdf, png) -> None:
    """Feature guidance vs classifier guidance (ADM-G) vs the mixture model at their cost; the
    guide's held-out accuracy per sigma band; ADM-G samples across scales."""
    t = samples.read_metrics(metrics.split(","), rounded=True)
    comp = samples.comparison(t)
    comp = comp[comp.classes == "seen"].dropna(subset=["gflop"])
    fig = plt.figure(figsize=(13, 8))
    grid = fig.add_gridspec(2, 3, height_ratios=[1, 1.25], hspace=0.35, wspace=0.3)
    axes = [fig.add_subplot(grid[0, i]) for i in range(3)]
    adm = comp[comp.method.isin(["ADM-G", "mixture model"])]
    real = samples.metric(t, "real", "kid", extractor=samples.EXTRACTOR)
    for a, m, label in ((axes[0], "accuracy", "judge accuracy (independent classifier)"),
                        (axes[1], "kid", "KID (in-domain features, class-marginal)")):
        for sampler, d in adm.groupby("sampler", sort=False):
            d = d.assign(s=d.knob.str.removeprefix("s=").astype(float)).sort_values("s")  # a line along s
            a.plot(d.gflop, d[m], marker="o", ms=4, lw=1, label=f"ADM-G, {sampler}")
            for r in d.itertuples():
                a.annotate(f"s={r.knob.split('=')[1]}", (r.gflop, getattr(r, m)), fontsize=5.5,
                           textcoords="offset points", xytext=(2, 3))
        f = comp[comp.method == "FGSD"]
        head_start = f.sampler.str.startswith("ddim") & ~f.sampler.str.endswith("mixture start")
        a.scatter(f.gflop[~head_start], f[m][~head_start], marker="*", s=70, color="k", zorder=5,
                  label="FGSD (conditional denoiser), start without class")
        a.scatter(f.gflop[head_start], f[m][head_start], marker="*", s=70, facecolors="none", edgecolors="k",
                  zorder=5, label="FGSD, DDIM from the class's Gaussian fit (a head start)")
        for r in f.itertuples():
            a.annotate(r.knob.replace("default sampler", "default"), (r.gflop, getattr(r, m)), fontsize=5.5,
                       textcoords="offset points", xytext=(3, -8))
        a.set_xscale("log"), a.set_xlabel("GFLOP per sample (denoiser + guide passes)"), a.set_ylabel(label)
        a.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        a.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    if real is not None:
        axes[1].axhline(real.value, color="grey", ls="--", lw=1, label="real train vs test crops")
    axes[0].axhline(1 / max(cfg_classes(data), 1), color="0.6", ls=":", lw=1, label="chance")
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=6, loc="best"), axes[1].legend(fontsize=6, loc="best")
    n = int(comp.n_samples.max()) if len(comp) else 0
    axes[0].set_title(f"class hit rate vs cost (up to {n} samples per point)", fontsize=8)
    axes[1].set_title("sample quality vs cost", fontsize=8)
    log = pd.read_csv(guide_log)
    bands = [c for c in log.columns if c.startswith("accuracy_sigma")]
    axes[2].bar(range(len(bands)), log[bands].iloc[-1], color="tab:purple")
    axes[2].axhline(1 / max(cfg_classes(data), 1), color="0.6", ls=":", lw=1, label="chance")
    axes[2].set_xticks(range(len(bands)), [b.removeprefix("accuracy_sigma_") for b in bands], fontsize=7)
    axes[2].set_xlabel("noise level σ of the held-out crops"), axes[2].set_ylabel("guide accuracy")
    axes[2].set_ylim(0, 1), axes[2].legend(fontsize=6)
    axes[2].set_title("ADM-G's guide on noisy held-out crops (never the judge)", fontsize=8)
    g = samples.load(guidance)
    classes = [str(c) for c in load_split(data, "train")["classes"]]
    labels = np.unique(g["label"])[:8]
    scales = sorted(np.unique(g["param"]))
    ax = fig.add_subplot(grid[1, :])
    variant = str(g["variant"][0])
    first = (g["param"] == scales[0]) & (g["variant"] == variant)
    per = min(2, min(int((first & (g["label"] == c)).sum()) for c in labels))
    rows = []
    for s in scales:
        k = (g["param"] == s) & (g["variant"] == variant)
        rows.append([img for c in labels for img in g["images"][k & (g["label"] == c)][:per]])
    show(ax, mosaic(rows), f"ADM-G samples ({variant}), {per} per class (columns) at each guidance scale (rows); "
         "s = 0 is the mixture model, the same seeds in every row",
         row_labels=[f"s={s:g}" for s in scales], tile=g["images"].shape[-1],
         col_labels=[_short(classes[c]) if j == 0 else "" for c in labels for j in range(per)])
    save(fig, pdf, png)


def cfg_classes(data) -> int:
    return len(np.unique(load_split(data, "train")["labels"]))


def fig11_fewshot_baselines(cfg, fewshot, d2c_fewshot, metrics, data, pdf, png) -> None:
    """Held-out classes from N exemplars: FGSD centroids vs D2C rejection sampling."""
    t = samples.read_metrics(metrics.split(","), rounded=True)
    fig = plt.figure(figsize=(13, 8))
    grid = fig.add_gridspec(2, 3, height_ratios=[1, 1.3], hspace=0.35, wspace=0.3)
    axes = [fig.add_subplot(grid[0, i]) for i in range(3)]
    for set_name, label, style, colour, alpha in (
            ("fewshot", "FGSD (centroid of N exemplars)", "o-", "tab:blue", 1.0),
            ("d2c_fewshot", "D2C (rejection sampling)", "s--", "tab:orange", 1.0),
            ("fewshot_seen", "FGSD, seen classes", "o-", "tab:blue", 0.35),
            ("d2c_fewshot_seen", "D2C, seen classes", "s--", "tab:orange", 0.35)):
        for a, m in ((axes[0], "accuracy"), (axes[2], "kid")):
            d = t[(t.set == set_name) & (t.metric == m)].sort_values("param")
            a.plot(d.param, d.value, style, color=colour, alpha=alpha, label=label)
            for r in d.itertuples():
                a.annotate(f"n={r.n_samples}", (r.param, r.value), fontsize=6, textcoords="offset points",
                           xytext=(3, 3))
    for set_name, alpha, label in (("d2c_fewshot", 1.0, "held-out classes"), ("d2c_fewshot_seen", 0.35, "seen classes")):
        acc = t[(t.set == set_name) & (t.metric == "acceptance_rate")].sort_values("param")
        axes[1].plot(acc.param, acc.value.clip(lower=1e-4), "s--", color="tab:orange", alpha=alpha, label=label)
        for r in acc.itertuples():
            axes[1].annotate(f"{int(r.n_samples)}/{int(r.n_real)}", (r.param, max(r.value, 1e-4)), fontsize=6,
                             textcoords="offset points", xytext=(3, 3))
    axes[1].legend(fontsize=6)
    n_classes = len(np.unique(load_split(data, "unseen")["labels"]))
    axes[0].axhline(1 / max(n_classes + cfg_classes(data), 1), color="0.6", ls=":", lw=1, label="chance")
    axes[0].set_ylim(-0.02, 1.02), axes[0].set_ylabel("judge accuracy"), axes[0].legend(fontsize=6)
    axes[1].set_yscale("log"), axes[1].set_ylabel("D2C acceptance rate (accepted/proposals)")
    axes[2].set_ylabel("KID vs held-out crops of the class"), axes[2].legend(fontsize=6)
    for a in axes:
        a.set_xscale("log"), a.set_xlabel("N exemplars")
        a.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        a.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    few, d2 = samples.load(fewshot), samples.load(d2c_fewshot)
    unseen = load_split(data, "unseen")
    classes = [str(c) for c in load_split(data, "train")["classes"]]
    labels, per = np.unique(few["label"])[:3], 6
    blank = np.full_like(few["images"][0], 255)

    def cells(images):  # `per` tiles, blank-padded (a shortfall shows as blanks)
        return list(images[:per]) + [blank] * (per - min(len(images), per))
    rows, names = [[t for c in labels for t in cells(unseen["images"][(unseen["labels"] == c) &
                                                                      (unseen["region"] == 0)])]], ["real crops"]
    for n in np.unique(few["param"]):
        for name, t_ in (("FGSD", few), ("D2C", d2)):
            rows.append([t for c in labels for t in cells(t_["images"][(t_["label"] == c) & (t_["param"] == n)])])
            names.append(f"{name}, N={int(n)}")
    ax = fig.add_subplot(grid[1, :])
    show(ax, mosaic(rows), "held-out classes (columns, six tiles each): real crops, then samples per N (blank: "
         "nothing accepted)", row_labels=names, tile=few["images"].shape[-1],
         col_labels=[_short(classes[c]) if j == per // 2 else "" for c in labels for j in range(per)])
    save(fig, pdf, png)
