"""Atomic, deterministic file output and logging: nothing half-written, same inputs -> same bytes."""
from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import json
import logging
import os
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .errors import FgsdError

log = logging.getLogger("fgsd")

# What this process read and wrote through this module: the provenance record's inputs and outputs.
READ: dict[str, None] = {}
WRITTEN: dict[str, None] = {}


def _note(book: dict, path: str | Path) -> None:
    path = Path(path).absolute()
    with contextlib.suppress(ValueError):
        path = path.relative_to(Path.cwd())
    book[str(path)] = None


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temp path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):  # left by a killed writer of `path`
        stale.unlink(missing_ok=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # e.g. a parent that is a file, or no permission
        raise FgsdError(f"cannot write {path}: {e.strerror or e} ({e.filename or path.parent})") from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
        _note(WRITTEN, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_npz(path: str | Path, **arrays) -> None:
    """np.savez with fixed zip timestamps, so equal arrays give byte-identical files."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FgsdError(f"missing input file: {path}")
    _note(READ, path)
    return path


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    path = _existing(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise FgsdError(f"cannot read {path}: {e}") from None


def save_json(path: str | Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def load_json(path: str | Path):
    return json.loads(_existing(path).read_text())


def load_csv(path: str | Path, **kwargs):
    import pandas as pd
    return pd.read_csv(_existing(path), **kwargs)


def load_torch(path: str | Path, device="cpu"):
    """A checkpoint written by this pipeline (full pickles: only load files you made). A file
    torch cannot read (truncated, not a checkpoint) is one error naming it."""
    import pickle

    import torch
    path = _existing(path)
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise FgsdError(f"cannot read {path} as a torch checkpoint ({first}); re-run the job that writes it") from None


def save_csv(path: str | Path, frame, float_format: str | None = "%.6g") -> None:
    """Tables are written at 6 significant digits; None keeps every digit (exact round trip)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format=float_format)


def save_torch(path: str | Path, obj) -> None:
    """torch.save through a buffer: saved to a file, the archive is named after the (random) temp
    file, so the same weights would give different bytes."""
    import torch
    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def setup_logging(log_file: str | Path | None) -> None:
    """Log to stderr and, when given, to the stage's log file (Snakemake's `log:`)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        try:
            Path(log_file).parent.mkdir(parents=True, exist_ok=True)
            handlers.append(logging.FileHandler(log_file, mode="w"))
        except OSError as e:
            raise FgsdError(f"cannot write the log {log_file}: {e.strerror or e}") from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        handlers=handlers, force=True)
