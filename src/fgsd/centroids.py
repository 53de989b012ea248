"""Centroid stage: phi of every clean train/test/unseen crop under one model, class centroids
phi_y = mean_{x in y} phi(x) and within-class variances v_y = mean ||phi(x) - phi_y||^2 (§2.2).

Analyses use the weighted feature w * phi (w = the conditional model's learned per-channel
weights, ones for the other models), as the authors' `get_channel_means(with_params=True)`.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import files, network
from .data import load_split
from .train import load_model, resolve_device, to_float

log = logging.getLogger("fgsd")
SPLITS = ("train", "test", "unseen")


@torch.no_grad()
def features(model: network.UNet, images: np.ndarray, device, batch: int) -> np.ndarray:
    out = [model.phi(to_float(images[i:i + batch]).to(device)).cpu() for i in range(0, len(images), batch)]
    return torch.cat(out).numpy() if out else np.zeros((0, int(model.weights().numel())), np.float32)


def class_stats(phi: np.ndarray, labels: np.ndarray, slices: dict[str, slice]):
    """Centroids (K, D) and within-class variance per class and layer (K, L)."""
    classes = np.unique(labels)
    cent = np.stack([phi[labels == c].mean(0) for c in classes])
    var = np.stack([[((phi[labels == c][:, s] - cent[k, s]) ** 2).sum(1).mean() for s in slices.values()]
                    for k, c in enumerate(classes)])
    return classes, cent, var


def compute(cfg: dict, model_path: str | Path, data_dir: str | Path, out_dir: str | Path, device="auto") -> None:
    dev = resolve_device(device)
    model, meta = load_model(model_path, dev)
    slices = network.layer_slices(model.widths)
    w = model.weights().numpy()
    arrays = {"w": w, "layers": np.array(list(slices)), "layer_sizes": np.array([s.stop - s.start for s in slices.values()])}
    rows = []
    for split in SPLITS:
        d = load_split(data_dir, split)
        phi = features(model, d["images"], dev, cfg["features"]["batch_size"]) * w
        arrays[f"phi_{split}"], arrays[f"labels_{split}"] = phi.astype(np.float32), d["labels"]
        arrays["classes"] = d["classes"]
        if len(phi) == 0:
            continue
        classes, cent, var = class_stats(phi, d["labels"], slices)
        arrays[f"centroids_{split}"], arrays[f"centroid_labels_{split}"] = cent.astype(np.float32), classes
        arrays[f"within_var_{split}"] = var.astype(np.float32)
        for k, c in enumerate(classes):
            n = int((d["labels"] == c).sum())
            for j, (layer, s) in enumerate(slices.items()):
                rows.append(dict(model=meta["kind"], split=split, cls=str(d["classes"][c]), layer=layer, n=n,
                                 centroid_sqnorm=float((cent[k, s] ** 2).sum()), within_var=float(var[k, j])))
        log.info("%s %s: %d crops, mean within-class variance %.4g", meta["kind"], split, len(phi), var.sum(1).mean())
    out_dir = Path(out_dir)
    files.save_npz(out_dir / "phi.npz", **arrays)
    files.save_csv(out_dir / "centroids.csv", pd.DataFrame(rows))
