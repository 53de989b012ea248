"""One checkpoint format for every network the pipeline trains (denoisers, classifiers, and the
baselines' models): {kind, model_config, <metadata>, state_dict}. `model_config` rebuilds the
architecture, so a checkpoint loads without params.yaml; `kind` says what it is, so a stage that
is handed the wrong file says so instead of failing deep inside torch."""
from __future__ import annotations

from pathlib import Path

from . import files
from .errors import FgsdError

KINDS = ("mixture", "conditional", "single", "classifier", "guide", "d2c_autoencoder", "d2c_prior")


def save(path: str | Path, kind: str, model, **meta) -> None:
    """Weights on the CPU plus everything needed to rebuild and interpret them."""
    if kind not in KINDS:
        raise FgsdError(f"no architecture registered for checkpoint kind '{kind}' (fgsd.checkpoints.KINDS)")
    files.save_torch(path, dict(kind=kind, model_config=model.config, **meta,
                                state_dict={k: v.cpu() for k, v in model.state_dict().items()}))


def load(path: str | Path, architecture, kinds: tuple[str, ...], device="cpu"):
    """(model in eval mode, metadata) from a checkpoint of one of `kinds`, rebuilt as
    `architecture` (the caller names the class, so its module is among the caller's imports)."""
    path = Path(path)
    if not path.is_file():
        raise FgsdError(f"missing model file: {path}")
    ckpt = files.load_torch(path, device)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "model_config" not in ckpt:
        raise FgsdError(f"{path}: not a checkpoint written by this pipeline (no model_config/state_dict)")
    kind = ckpt.get("kind")
    if kind not in kinds:
        raise FgsdError(f"{path}: holds a '{kind}' model where {' or '.join(repr(k) for k in kinds)} was expected")
    try:
        model = architecture(**ckpt["model_config"]).to(device)
        model.load_state_dict(ckpt["state_dict"])
    except (TypeError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0]
        raise FgsdError(f"{path}: weights do not fit the stored '{kind}' architecture ({first})") from None
    model.eval()
    return model, {k: v for k, v in ckpt.items() if k != "state_dict"}
