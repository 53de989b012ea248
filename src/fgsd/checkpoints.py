"""One checkpoint format for every network the pipeline trains (denoisers, classifiers, and the
baselines' models): {kind, model_config, <metadata>, state_dict}. `model_config` rebuilds the
architecture, so a checkpoint loads without params.yaml; `kind` says what it is, so a stage that
is handed the wrong file says so instead of failing deep inside torch."""
from __future__ import annotations

import logging
from pathlib import Path

from . import config, files, stages
from .errors import FgsdError

log = logging.getLogger("fgsd")

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


class Resumable:
    """A training loop's state (weights, optimiser, log rows, counters), saved every few steps
    outside Snakemake's outputs under a fingerprint of the stage's params and data: a killed job
    resumes where it stopped, and a state saved with other params or data is ignored, not mixed in."""

    def __init__(self, state_dir: str | Path, name: str, cfg: dict, stage_keys: tuple[str, ...], data: str | Path,
                 **extra):
        self.path = Path(state_dir) / f"{name}.pt"
        manifest = files.load_json(Path(data) / stages.MANIFEST)
        self.fingerprint = config.digest(dict(params=config.select(cfg, stage_keys), data=manifest["sha256"], **extra))

    def load(self, device) -> dict | None:
        """The saved state, or None when there is none that fits."""
        if not self.path.is_file():
            return None
        saved = files.load_torch(self.path, device)
        if saved.get("fingerprint") != self.fingerprint:
            log.info("ignoring %s: it was saved with other params or data", self.path)
            return None
        log.info("resuming %s training from step %d (%s)", self.path.stem, saved["step"], self.path)
        return saved

    def save(self, **state) -> None:
        files.save_torch(self.path, dict(state, fingerprint=self.fingerprint))

    def last_good(self) -> str:
        """Where a diverged run can restart from (for `runtime.require_finite`)."""
        return f"the last good state is {self.path}" if self.path.is_file() else "no state was saved yet"

    def done(self) -> None:
        self.path.unlink(missing_ok=True)
