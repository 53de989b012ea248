"""Generate dvc.yaml from the Snakemake DAG, so `dvc repro` runs exactly Snakemake's commands.

Snakemake is the source of truth (DESIGN.md §3). Each Snakemake job becomes one DVC stage with
the same shell command, its inputs as deps, its tracked params keys as params, its outputs as
outs (metrics JSON as metrics, train logs and the PSNR gain as plots). All are cached: results/
is not in git, so the DVC cache and remote are where every output is versioned. `python -m fgsd.dvcgen`
writes dvc.yaml; `--check` fails when the committed one is out of date (the test suite runs it).
"""
from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

import yaml

from .errors import FgsdError

HEADER = ("# Generated from the Snakemake DAG by `python -m fgsd.dvcgen`; do not edit by hand.\n"
          "# `dvc repro` runs the same commands as `snakemake --cores all` on params.yaml.\n")


def snakemake_jobs(snakefile: str = "Snakefile", target: str = "all", configfiles: tuple[str, ...] = ()) -> list:
    """The jobs of the DAG that produces `target`, in topological order (private API: pinned).
    configfiles: preset overlays on params.yaml, as `snakemake --configfile` takes them."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        OutputSettings,
        ResourceSettings,
        StorageSettings,
        WorkflowSettings,
    )
    with contextlib.redirect_stderr(io.StringIO()), SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        wf = api.workflow(resource_settings=ResourceSettings(cores=1),
                          config_settings=ConfigSettings(configfiles=[Path(p) for p in configfiles]),
                          storage_settings=StorageSettings(), workflow_settings=WorkflowSettings(),
                          snakefile=Path(snakefile))
        dag_api = wf.dag(DAGSettings(targets={target}, forceall=True))
        workflow = dag_api.workflow_api._workflow
        workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True, nolock=True)
        workflow._build_dag()
        return [job for level in workflow.dag.toposorted()
                for job in sorted(level, key=lambda j: (j.rule.name, str(j.wildcards)))]


def stage(job) -> tuple[str, dict]:
    name = "_".join([job.rule.name, *map(str, job.wildcards)])
    outs, metrics, plots = [], [], []
    for f in map(str, job.output):
        if f.endswith("metrics.json") or (f.startswith("results/metrics/") and f.endswith(".json")):
            metrics.append(f)
        elif f.endswith("train_log.csv"):
            plots.append({f: {"x": "step", "y": "psnr_mean"}})
        elif f.endswith("psnr_gain.csv"):
            plots.append({f: {"x": "input_psnr", "y": "gain"}})
        else:
            outs.append(f)
    spec = {"cmd": job.shellcmd.strip(), "deps": sorted(set(map(str, job.input)))}
    tracked = job.params.get("tracked") if hasattr(job.params, "get") else None
    if tracked:
        spec["params"] = sorted(tracked)
    spec["outs"] = outs
    if metrics:
        spec["metrics"] = metrics
    if plots:
        spec["plots"] = plots
    return name, spec


def render(configfiles: tuple[str, ...] = ()) -> str:
    stages = dict(stage(job) for job in snakemake_jobs(configfiles=configfiles) if job.shellcmd)
    return HEADER + yaml.safe_dump({"stages": stages}, sort_keys=False, width=120)


def main(out: str = "dvc.yaml", check: bool = False, configfiles: tuple[str, ...] = ()) -> None:
    text = render(configfiles)
    path = Path(out)
    if check:
        if not path.is_file() or path.read_text() != text:
            raise FgsdError(f"{out} is out of date with the Snakemake DAG: run `python -m fgsd.dvcgen` (make dvc-yaml)")
        print(f"{out} matches the Snakemake DAG", file=sys.stderr)
        return
    path.write_text(text)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(prog="python -m fgsd.dvcgen", description="write dvc.yaml from the Snakemake DAG")
    ap.add_argument("--out", default="dvc.yaml")
    ap.add_argument("--check", action="store_true", help="fail if the file differs instead of writing it")
    ap.add_argument("--configfile", nargs="*", default=[],
                    help="preset overlays on params.yaml: the stages of their DAG (e.g. the smoke preset's seeds)")
    a = ap.parse_args()
    try:
        main(a.out, check=a.check, configfiles=tuple(a.configfile))
    except FgsdError as e:
        sys.exit(f"fgsd.dvcgen: error: {e}")
