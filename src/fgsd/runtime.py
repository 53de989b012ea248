"""Plumbing every stage shares: the device, seeded RNG streams, the uint8 <-> float image
conversion, compiled and bfloat16 training steps. Small and torch-only, so no stage imports another
stage's module for it."""
from __future__ import annotations

import contextlib
import logging

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


def compiled(net: torch.nn.Module, enabled: bool, who: str) -> tuple[torch.nn.Module, str]:
    """The module training steps call: torch.compile(net) (TorchInductor; about 1.4x faster steps
    on a CPU, README "Compiled training") when enabled and the machine can compile, else net itself.
    It shares net's parameters, so what is saved and evaluated is net. Compiled and eager steps differ
    in the last float digits, so the second value says which ran ("compiled", "eager", or
    "eager: <why>" when compiling was asked for and is unavailable, which is also logged)."""
    if not enabled:
        return net, "eager"
    try:  # inductor needs a C++ compiler on a CPU (and triton on CUDA): find out on a tiny function, there
        torch.compile(lambda a: a * 2 + 1)(torch.ones(2, device=next(net.parameters()).device))
    except Exception as exc:  # any failure here means "cannot compile on this machine"
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        logging.getLogger("fgsd").warning("training %s eagerly: train.compile is true but torch.compile fails on this "
                                          "machine (%s); set train.compile: false to silence this", who, why)
        return net, f"eager: {why}"
    return torch.compile(net), "compiled"


def bf16_native(device: torch.device) -> bool:
    """Whether the device computes bfloat16 in hardware: a GPU that supports it, or a CPU with
    AVX512-BF16 or AMX (elsewhere torch emulates bf16 convolutions, slower than float32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def autocast(device: torch.device, precision: str, who: str) -> tuple[contextlib.AbstractContextManager, str]:
    """The context a training step's forward pass and loss run in (every training loop's: the
    denoisers', the judge's, the guide's, D2C's): bfloat16 autocast (train.precision: bf16; the
    weights, the optimiser state and every evaluation stay float32)
    when the device computes bf16 natively, else nothing. The second value says which ran
    ("bf16", "fp32", or "fp32: <why>" when bf16 was asked for and is not native, which is logged)."""
    if precision == "fp32":
        return contextlib.nullcontext(), "fp32"
    if not bf16_native(device):
        why = f"{device.type} has no native bfloat16"
        logging.getLogger("fgsd").warning("training %s in float32: train.precision is bf16 but this %s; set "
                                          "train.precision: fp32 to silence this", who, why)
        return contextlib.nullcontext(), f"fp32: {why}"
    return torch.autocast(device.type, dtype=torch.bfloat16), "bf16"


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
