"""Plumbing every stage shares: the device, seeded RNG streams and the uint8 <-> float image
conversion. Small and torch-only, so no stage imports another stage's module for it."""
from __future__ import annotations

import numpy as np
import torch

from .errors import FgsdError


def resolve_device(name: str) -> torch.device:
    """'auto' is CUDA when torch sees it; asking for CUDA without it is an error, not a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise FgsdError("device 'cuda' was asked for but torch sees no CUDA device (use --device auto or cpu)")
    return torch.device(name)


def generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded from integer keys (same numbers on every device and batch size):
    one independent stream per (seed, purpose, index...)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence(list(keys)).generate_state(1)[0]))


def to_float(images: np.ndarray) -> torch.Tensor:
    """uint8 crops -> float in [0, 1] (the pipeline's image convention)."""
    return torch.from_numpy(images).float() / 255


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """The inverse of `to_float` (exact for images that came from it), clipping to [0, 1]."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def require_finite(loss: torch.Tensor, who: str, step: int, lr: float, lr_key: str, kept: str) -> None:
    """Every training loop's guard: a NaN or inf loss ends the run with one line (nothing is
    written; `kept` says what survives), instead of training on and saving garbage."""
    if not torch.isfinite(loss):
        raise FgsdError(f"training {who} diverged: the loss is {loss.item()} at step {step} (lr {lr:g}); no model "
                        f"was written, {kept}; lower {lr_key} or check the data")


def gflop_per_call(fn) -> float:
    """GFLOP that one call of fn() runs, backward passes included (torch's FLOP counter: matrix
    products and convolutions): a cost that does not depend on the machine or its load."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def exemplars(images: torch.Tensor, n: int, key: list[int]) -> torch.Tensor:
    """n of `images` (0 or more than there are: all), chosen by a generator seeded by `key`: the
    same exemplars of a class for every method that conditions on N of them (FGSD centroids, D2C)."""
    if 0 < n < len(images):
        return images[np.sort(np.random.default_rng(key).choice(len(images), n, replace=False))]
    return images
