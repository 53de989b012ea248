"""Provenance: which params, code and inputs made each output.

Every job writes one record (results/provenance/<job>.json) beside its outputs: the params
subtree the stage reads and its hash, the git commit with a dirty flag, a hash of the library
code, and the sha256 of every file the job read and wrote through `fgsd.files`. The `provenance`
stage joins the records into one table (one row per output file) that the Snakemake report shows.
"""
from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pandas as pd

from . import config, files

ROOT = Path(__file__).resolve().parents[2]
CODE_PATHS = ("src", "workflow", "Snakefile", "params.yaml", "config", "pyproject.toml")


def git_state(root: Path = ROOT) -> dict:
    """HEAD and whether the code or params differ from it (results and dvc.lock do not count);
    nulls outside a git checkout."""
    def git(*args):
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    try:
        head = git("rev-parse", "HEAD")
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}
    if head.returncode != 0:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=normal", "--", *CODE_PATHS)
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def code_digest() -> str:
    """sha256 over the library's sources: pins the code even in a dirty tree or outside git."""
    h = hashlib.sha256()
    for path in sorted((ROOT / "src" / "fgsd").glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


VOLATILE = "benchmarks"  # a folder of timings (e.g. seconds per sample), which differ from run to run by nature


def _checksums(paths) -> dict[str, str]:
    """sha256 of each file that still exists, skipping resumable state under hidden folders and
    timings under a `benchmarks` folder (a checksum of a timing would make every record differ
    between two runs of the same code on the same data)."""
    return {p: files.sha256(p) for p in sorted(paths)
            if Path(p).is_file() and not any(part.startswith(".") or part == VOLATILE for part in Path(p).parts)}


def record(path: str | Path, job: str, cfg: dict, keys: list[str], params_files: list[str]) -> dict:
    """Write the record of the job that just ran in this process."""
    import numpy
    import torch
    params = config.select(cfg, keys)
    rec = dict(job=job, params_files=[str(p) for p in params_files], params=params,
               params_sha256=config.digest(params), git=git_state(), code_sha256=code_digest(),
               inputs=_checksums(files.READ), outputs=_checksums(set(files.WRITTEN) - {str(path)}),
               versions={"torch": torch.__version__, "numpy": numpy.__version__})
    files.save_json(path, rec)
    return rec


def table(records: str, table_csv: str | Path, html: str | Path) -> pd.DataFrame:
    """One row per output file: its checksum, the job, params hash, commit, dirty flag, code hash,
    and a digest of its inputs' checksums (the full list is in the job's record). records: the
    jobs' record files, comma-separated; html: the same table for the Snakemake report."""
    rows = []
    for rec_path in sorted(records.split(",")):
        rec = files.load_json(rec_path)
        inputs = config.digest(rec["inputs"])
        for out, sha in rec["outputs"].items():
            rows.append(dict(file=out, sha256=sha[:16], job=rec["job"], params_sha256=rec["params_sha256"],
                             git_commit=(rec["git"]["commit"] or "")[:12], git_dirty=rec["git"]["dirty"],
                             code_sha256=rec["code_sha256"][:16], n_inputs=len(rec["inputs"]),
                             inputs_sha256=inputs, record=str(rec_path)))
    frame = pd.DataFrame(rows)
    files.save_csv(table_csv, frame)
    with files.atomic_path(html) as tmp:  # what the Snakemake report shows
        tmp.write_text("<!DOCTYPE html><meta charset='utf-8'><title>Provenance</title><style>"
                       "body{font:13px sans-serif}td,th{padding:2px 8px;border-bottom:1px solid #ddd}</style>"
                       + frame.drop(columns="record").to_html(index=False, border=0) + "\n")
    return frame
