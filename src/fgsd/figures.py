"""Paper figures 2-5 rendered from the pipeline's data, one function per figure, one style.

Each figure is written as PDF and PNG with fixed metadata, so the files are byte-reproducible.
"""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch

from . import checkpoints, files, summary
from .data import load_split
from .network import UNet
from .runtime import generator, to_float

COLORS = {"conditional": "#1f77b4", "mixture": "#ff7f0e", "single": "#2ca02c"}
REFERENCE_STYLE = {"trivial-mean": ":", "gaussian-mixture": "--", "gaussian-class": "-."}


def style() -> None:
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.0)
    plt.rcParams.update({"figure.dpi": 150, "savefig.bbox": "tight", "svg.hashsalt": "fgsd"})


def save(fig, pdf: str | Path, png: str | Path) -> None:
    """PDF and PNG with no dates in them: the same figure gives the same bytes."""
    os.environ.setdefault("SOURCE_DATE_EPOCH", "0")
    with files.atomic_path(pdf) as tmp:
        fig.savefig(tmp, format="pdf", metadata={"CreationDate": None, "ModDate": None})
    with files.atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=150)
    plt.close(fig)


def _show(ax, img: np.ndarray, edge: str | None = None) -> None:
    ax.imshow(np.clip(img, 0, 1).transpose(1, 2, 0).squeeze(), cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([]), ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(edge is not None)
        if edge:
            spine.set_edgecolor(edge), spine.set_linewidth(2.5)


@torch.no_grad()
def fig2_denoising_grid(cfg, conditional, mixture, data, pdf, png) -> None:
    """Noisy crops of 4 classes (rows) denoised with exemplars of the same 4 classes (columns)."""
    test = load_split(data, "test")
    x, labels = to_float(test["images"]), torch.from_numpy(test["labels"])
    k = len(torch.unique(labels))
    chosen = [int(c) for c in np.linspace(0, k - 1, 4).round()]
    first = lambda c, i: x[torch.nonzero(labels == c).flatten()[i]]
    clean = torch.stack([first(c, 0) for c in chosen])
    exemplars = torch.stack([first(c, 1) for c in chosen])
    cond, _ = checkpoints.load(conditional, UNet, ("conditional",))
    mix, _ = checkpoints.load(mixture, UNet, ("mixture",))
    sigmas = cfg["analysis"]["fig2_sigmas"]
    n = 7 * len(sigmas) - 1  # 6 columns per panel, one blank column between panels
    fig, axes = plt.subplots(5, n, figsize=(n * 1.1, 5 * 1.1),
                             gridspec_kw={"width_ratios": ([1] * 6 + [0.4]) * (len(sigmas) - 1) + [1] * 6})
    for spacer in range(6, n, 7):
        for a in axes[:, spacer]:
            a.set_axis_off()
    for p, s in enumerate(sigmas):
        noisy = clean + s * torch.randn(clean.shape, generator=generator(cfg["seed"], 40, p))
        cols = slice(7 * p, 7 * p + 6)
        ax = axes[:, cols]
        ax[0, 0].set_axis_off(), ax[0, 5].set_axis_off()
        ax[0, 0].set_title(f"σ = {s:g}", loc="left", fontsize=10)
        for j in range(4):
            _show(ax[0, j + 1], exemplars[j].numpy(), "#2ca02c")
            ax[0, j + 1].set_title(str(test["classes"][chosen[j]]).split("-")[-1], fontsize=7)
        for i in range(4):
            _show(ax[i + 1, 0], noisy[i].numpy())
            outs = cond(noisy[i:i + 1].expand(4, -1, -1, -1), exemplars)
            for j in range(4):
                _show(ax[i + 1, j + 1], outs[j].numpy(), "#d62728" if i == j else None)
            _show(ax[i + 1, 5], mix(noisy[i:i + 1])[0].numpy(), "#ff7f0e")
        ax[1, 0].set_ylabel("noisy"), ax[1, 5].set_title("mixture", fontsize=7)
    fig.suptitle("Feature-guided denoising: rows = noisy crops, columns = conditioning exemplar (green); "
                 "red = correct conditioning, orange = mixture model", fontsize=8)
    save(fig, pdf, png)


def _seed_band(ax, by_seed, model, conditioning, label, color) -> None:
    """Mean over training seeds, and ± one std over seeds as a band (two or more seeds)."""
    d = by_seed[(by_seed.model == model) & (by_seed.conditioning == conditioning)]
    mean, std = (d.groupby("sigma").gain.agg(how) for how in ("mean", "std"))
    x = -20 * np.log10(mean.index.to_numpy())
    n = d.seed.nunique()
    ax.plot(x, mean.values, marker="o", color=color, label=f"{label} ({n} seed{'s' if n > 1 else ''})")
    if n > 1:
        ax.fill_between(x, (mean - std).values, (mean + std).values, color=color, alpha=0.25, lw=0)


def _reference_lines(ax, d) -> None:
    """The untrained references' mean output - input PSNR over the crops of `d` (summary.REFERENCES)."""
    refs = d[d.model.isin(summary.REFERENCES)].groupby(["model", "noise_db"]).gain.mean()
    for name, style in REFERENCE_STYLE.items():
        if name in refs.index.get_level_values(0):
            ax.plot(refs[name].index, refs[name].values, color="0.35", lw=1, ls=style, label=f"{name} (no training)")


def fig3_axes(cfg, sweep_df, seeds_df):
    """The Fig 3 figure. Each panel carries the references on its own crops: all test crops on
    the left; y0's crops on the right, where the single-class oracle is judged against the
    class-known Gaussian (a learned reference must beat the analytic ones first)."""
    d = sweep_df.assign(gain=sweep_df.output_psnr - sweep_df.input_psnr, noise_db=-20 * np.log10(sweep_df.sigma))
    y0 = cfg["train"]["single"]["class"]
    right = d[((d.model == "conditional") & (d.conditioning == "y0-centroid")) | (d.model == "single")].copy()
    right["denoiser"] = np.where(right.model == "single", f"single-class ({y0})", f"conditional on {y0}")
    right["images"] = np.where(right.is_y0, f"class {y0}", "other classes")
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    kw = dict(x="noise_db", y="gain", errorbar=("ci", 95), n_boot=200, seed=cfg["seed"], marker="o")
    if seeds_df.seed.nunique() > 1:
        _seed_band(ax[0], seeds_df, "conditional", "exemplar", "conditional (correct exemplar)", COLORS["conditional"])
        _seed_band(ax[0], seeds_df, "mixture", "none", "mixture", COLORS["mixture"])
    else:  # one seed: bootstrap bands over the (correlated) test crops
        left = d[((d.model == "conditional") & (d.conditioning == "exemplar")) | (d.model == "mixture")].copy()
        left["denoiser"] = np.where(left.model == "mixture", "mixture", "conditional (correct exemplar)")
        sns.lineplot(left, hue="denoiser", ax=ax[0], palette=[COLORS["conditional"], COLORS["mixture"]],
                     hue_order=["conditional (correct exemplar)", "mixture"], **kw)
    kw.pop("marker")  # the right panel tells the crops apart by marker, so dashes stay the references'
    sns.lineplot(right, hue="denoiser", style="images", ax=ax[1], palette=[COLORS["conditional"], COLORS["single"]],
                 dashes=False, markers={f"class {y0}": "o", "other classes": "X"}, **kw)
    _reference_lines(ax[0], d)
    _reference_lines(ax[1], d[d.is_y0])
    for a in ax:
        a.legend(fontsize=7)
        a.set_xlabel("input PSNR (dB) = -20 log10 σ")
    ax[0].set_ylabel("output PSNR - input PSNR (dB)")
    ax[0].set_title("conditional vs mixture (all classes)")
    ax[1].set_title(f"conditioned on {y0} vs a denoiser trained on {y0} only\n(references on {y0}'s crops)",
                    fontsize=9)
    return fig


def fig3_psnr_gain(cfg, sweep, by_seed, pdf, png) -> None:
    """Output - input PSNR vs input PSNR: conditional vs mixture over training seeds (left), vs
    single-class for the main seed's models (right), each beside the untrained references."""
    save(fig3_axes(cfg, files.load_csv(sweep), files.load_csv(by_seed)), pdf, png)


def fig4_separation(separation, phi_mixture, phi_conditional, data, pdf, png) -> None:
    """Per model: centroid distances vs within-class spread, per-layer separation, mid-layer scatter."""
    sep = files.load_csv(separation)
    test = load_split(data, "test")
    phi_files = {"mixture": phi_mixture, "conditional": phi_conditional}
    fig, ax = plt.subplots(2, 3, figsize=(13, 7), layout="constrained")
    for r, model in enumerate(("mixture", "conditional")):
        s = sep[(sep.model == model) & (sep.layer == "all")]
        bins = np.histogram_bin_edges(np.log10(np.concatenate([s.centroid_sqdist, s.within_geomean])), 20)
        ax[r, 0].hist(np.log10(s.centroid_sqdist), bins, color=COLORS["mixture"], alpha=0.8, label="‖φ_y − φ_y'‖²")
        ax[r, 0].hist(np.log10(s.within_geomean), bins, color="gray", alpha=0.6, label="√(v_y v_y')")
        ax[r, 0].set_xlabel("log10 squared distance (class pairs)"), ax[r, 0].legend(fontsize=7)
        ax[r, 0].set_ylabel(f"{model}\ncount")
        med = sep[(sep.model == model) & (sep.layer != "all")].groupby("layer", sort=False).ratio.median()
        ax[r, 1].bar(med.index, med.values, color=COLORS[model])
        ax[r, 1].axhline(1, color="k", lw=0.8, ls="--"), ax[r, 1].set_yscale("log")
        ax[r, 1].set_ylabel("median separation ratio r_l")
        f = files.load_npz(phi_files[model])
        mid = list(f["layers"]).index("mid")
        lo = int(np.sum(f["layer_sizes"][:mid]))
        sl = slice(lo, lo + int(f["layer_sizes"][mid]))
        lab = f["labels_test"]
        ca, cb = np.unique(lab)[0], np.unique(lab)[-1]
        p1, p2 = f["phi_test"][lab == ca][0, sl], f["phi_test"][lab == cb][0, sl]
        ax[r, 2].scatter(np.abs(p1), np.abs(p2), s=8, color=COLORS[model])
        top = max(np.abs(p1).max(), np.abs(p2).max()) * 1.05
        ax[r, 2].plot([0, top], [0, top], "k--", lw=0.8)
        ax[r, 2].set_xlabel(f"|w φ_mid(x1)|, x1 ∈ {test['classes'][ca]}", fontsize=8)
        ax[r, 2].set_ylabel(f"|w φ_mid(x2)|, x2 ∈ {test['classes'][cb]}", fontsize=8)
    ax[0, 1].set_title("r_l = median over pairs of ‖Δφ_l‖² / √(v_y,l v_y',l)", fontsize=9)
    save(fig, pdf, png)


def fig5_density_distance(density, data, pdf, png) -> None:
    """Symmetric KL through the conditional denoiser vs squared centroid distance."""
    d = files.load_csv(density).sort_values("sym_kl").reset_index(drop=True)
    corr, corr_diff = summary.correlations(d), summary.correlations(d, "sym_kl_diff_form")
    test = load_split(data, "test")
    names = [str(c) for c in test["classes"]]
    close, far = d.head(3), d.tail(3)
    fig = plt.figure(figsize=(12, 4.6))
    grid = fig.add_gridspec(3, 7, width_ratios=[1, 1, 1.1, 4, 0.3, 1, 1])
    ax = fig.add_subplot(grid[:, 3])
    ax.scatter(d.centroid_sqdist, d.sym_kl, s=14, color="gray")
    ax.scatter(close.centroid_sqdist, close.sym_kl, s=30, color="#d62728", label="3 closest pairs")
    ax.scatter(far.centroid_sqdist, far.sym_kl, s=30, color="#1f77b4", label="3 most distant pairs")
    ax.set_yscale("symlog", linthresh=max(1.0, float(d.sym_kl.abs().median()) / 100))
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xlabel("‖φ_y − φ_y'‖² (conditional model, w-weighted)")
    ax.set_ylabel("symmetric KL estimate (MSE-gap form, symlog)")
    matched = summary.correlations(d, x="centroid_sqdist_matched")
    share = sorted(summary.centroid_share(d).items(), key=lambda kv: -kv[1])[:2]
    ax.set_title(f"Pearson r = {corr['pearson']:.2f}, Spearman ρ = {corr['spearman']:.2f} ({corr['n_pairs']} pairs, "
                 f"{corr['n_negative']} < 0)\ndifference form: r = {corr_diff['pearson']:.2f}, "
                 f"ρ = {corr_diff['spearman']:.2f}; matched blocks' ‖φ_y − φ_y'‖² alone: ρ = {matched['spearman']:.2f}"
                 f"\nshare of the x-axis: " + ", ".join(f"{b} {v:.0%}" for b, v in share), fontsize=9)
    control = summary.correlations(d, x="centroid_sqdist_mixture")
    top = ax.twiny()  # the control: the mixture model's features, not trained for conditioning
    top.scatter(d.centroid_sqdist_mixture, d.sym_kl, s=14, facecolors="none", edgecolors=COLORS["mixture"],
                label=f"control: mixture model's ‖φ_y − φ_y'‖² (top axis), ρ = {control['spearman']:.2f}")
    top.set_xlabel("‖φ_y − φ_y'‖² (mixture model, control)", fontsize=8, color=COLORS["mixture"])
    top.grid(False)
    handles = ax.get_legend_handles_labels()
    extra = top.get_legend_handles_labels()
    ax.legend(handles[0] + extra[0], handles[1] + extra[1], fontsize=7)
    for rows, cols, color in ((close, (0, 1), "#d62728"), (far, (5, 6), "#1f77b4")):
        for i, (_, row) in enumerate(rows.iterrows()):
            for col, name in zip(cols, (row.cls_a, row.cls_b)):
                a = fig.add_subplot(grid[i, col])
                img = test["images"][test["labels"] == names.index(name)][0] / 255
                _show(a, img, color)
                a.set_title(name.split("-")[-1], fontsize=6)
    save(fig, pdf, png)



style()  # every figure of the pipeline is drawn in this style
