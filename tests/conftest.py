"""Shared fixtures: a small synthetic texture folder and a tiny resolved config on top of it."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fgsd import config, stages

ROOT = Path(__file__).resolve().parents[1]


def write_textures(folder: Path, n_classes: int = 4, size: int = 96, seed: int = 0) -> Path:
    """Oriented gratings plus noise: stationary, and easy to tell apart."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    for k in range(n_classes):
        angle, freq = np.pi * k / n_classes, 0.15 + 0.1 * k
        img = 0.5 + 0.3 * np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy)) + 0.1 * rng.standard_normal((size, size))
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(folder / f"tex{k}.png")
    return folder


def train_into(cfg: dict, kind: str, data_dir, out_dir, state_dir, **kw) -> dict:
    """`train.train` with its four outputs in one folder, as the pipeline lays them out."""
    from fgsd import train
    out = Path(out_dir)
    return train.train(cfg, kind, data_dir, model=out / "model.pt", train_log=out / "train_log.csv",
                       config_json=out / "config.json", metrics=out / "metrics.json", state=state_dir, **kw)


def train_cli(kind: str, data_dir, out_dir, state_dir) -> list[str]:
    """The same as a `python -m fgsd train` argument list (what the Snakemake rule runs)."""
    out = Path(out_dir)
    return ["train", kind, f"data={data_dir}", f"model={out / 'model.pt'}", f"train_log={out / 'train_log.csv'}",
            f"config_json={out / 'config.json'}", f"metrics={out / 'metrics.json'}", f"state={state_dir}"]


@pytest.fixture
def texture_dir(tmp_path) -> Path:
    return write_textures(tmp_path / "textures")


@pytest.fixture
def tiny_cfg(texture_dir) -> dict:
    """params.yaml + smoke overlay, on the synthetic folder, at 16x16: trains in seconds."""
    cfg = config.load([ROOT / "params.yaml", ROOT / "config" / "smoke.yaml"])
    cfg["data"].update(dataset="folder", folder=str(texture_dir), scale=1.0, crop_size=16,
                       train_per_class=24, test_per_class=6, n_unseen=1)
    cfg["train"].update(batch_size=16, checkpoint_every=4, eval_every=6, eval_crops_per_class=3)
    cfg["train"]["single"]["class"] = "tex0"  # seed 0 holds out tex2
    cfg["train"]["conditional"]["init"] = "scratch"  # trained alone here; fine-tuned in test_train and the chains
    for kind in stages.MODEL_KINDS:
        cfg["train"][kind]["steps"] = 12
    cfg["device"] = "cpu"
    return cfg


@pytest.fixture(autouse=True)
def _fixed_threads(monkeypatch):
    """Same thread count in every test: CPU reductions are then bit-reproducible."""
    import torch
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield




os.environ.setdefault("DVC_NO_ANALYTICS", "1")
