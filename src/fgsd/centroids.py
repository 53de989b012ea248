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

from . import checkpoints, files, network, stages
from .data import load_split
from .runtime import resolve_device, to_float

log = logging.getLogger("fgsd")


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


def compute(cfg: dict, model: str | Path, data: str | Path, phi: str | Path, table: str | Path, device="auto") -> None:
    """phi.npz (features, centroids, variances) and centroids.csv (one row per split, class, layer)."""
    dev = resolve_device(device)
    net, meta = checkpoints.load(model, network.UNet, stages.MODEL_KINDS, dev)
    slices = network.layer_slices(net.widths)
    w = net.weights().numpy()
    arrays = {"w": w, "layers": np.array(list(slices)), "layer_sizes": np.array([s.stop - s.start for s in slices.values()])}
    rows = []
    for split in stages.SPLITS:
        d = load_split(data, split)
        feats = features(net, d["images"], dev, cfg["features"]["batch_size"]) * w
        arrays[f"phi_{split}"], arrays[f"labels_{split}"] = feats.astype(np.float32), d["labels"]
        arrays["classes"] = d["classes"]
        if len(feats) == 0:
            continue
        classes, cent, var = class_stats(feats, d["labels"], slices)
        arrays[f"centroids_{split}"], arrays[f"centroid_labels_{split}"] = cent.astype(np.float32), classes
        arrays[f"within_var_{split}"] = var.astype(np.float32)
        for k, c in enumerate(classes):
            n = int((d["labels"] == c).sum())
            for j, (layer, s) in enumerate(slices.items()):
                rows.append(dict(model=meta["kind"], split=split, cls=str(d["classes"][c]), layer=layer, n=n,
                                 centroid_sqnorm=float((cent[k, s] ** 2).sum()), within_var=float(var[k, j])))
        log.info("%s %s: %d crops, mean within-class variance %.4g", meta["kind"], split, len(feats), var.sum(1).mean())
    files.save_npz(phi, **arrays)
    files.save_csv(table, pd.DataFrame(rows))
