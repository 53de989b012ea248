"""Command line: `python -m fgsd <stage> [name] key=path ... [--log F] [--provenance F]`.

Every Snakemake rule and DVC stage is one such call. Dispatch only: `stages.py` says which
function runs a stage and which params keys it may read; the rule names every file it reads and
writes as key=path, and those become the function's keyword arguments.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import sys
from pathlib import Path

from . import stages
from .errors import FgsdError

log = logging.getLogger("fgsd")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="fgsd", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=list(stages.STAGES))
    ap.add_argument("args", nargs="*", help="the name (model kind, sample set, figure, evaluation group) for the "
                                            "stages that take one, then key=path for every file the stage reads "
                                            "or writes")
    ap.add_argument("--params", nargs="+", default=os.environ.get("FGSD_PARAMS", "params.yaml").split(),
                    help="params.yaml, then overlays (e.g. config/smoke.yaml), merged left to right "
                         "(default: $FGSD_PARAMS, which Snakemake sets, else params.yaml)")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), help="overrides params 'device'")
    ap.add_argument("--seed", type=int, help="overrides params 'seed' (a training replicate, train.replicate_seeds)")
    ap.add_argument("--log", help="also write the log to this file")
    ap.add_argument("--provenance", help="write the job's provenance record (params, code, input and output "
                                         "checksums) to this JSON file")
    return ap


def split_args(stage: str, args: list[str]) -> tuple[str | None, dict[str, str]]:
    """The stage's name (if it takes one) and its key=path arguments."""
    name = None
    if stages.STAGES[stage].named:
        if not args or "=" in args[0]:
            raise FgsdError(f"stage '{stage}' needs a name first (e.g. `python -m fgsd {stage} <name> key=path ...`)")
        name, args = args[0], args[1:]
    paths = {}
    for a in args:
        key, sep, value = a.partition("=")
        if not sep or not key.isidentifier():
            raise FgsdError(f"argument '{a}' is not key=path")
        paths[key] = value
    return name, paths


def check_name(stage: str, name: str | None) -> None:
    valid = stages.stage_names().get(stage)
    if valid is not None and name not in valid:
        raise FgsdError(f"unknown {stage} name '{name}': choose one of {list(valid)}")


def run(args: argparse.Namespace) -> None:
    from . import config, files
    files.setup_logging(args.log)
    name, paths = split_args(args.stage, args.args)
    check_name(args.stage, name)
    full = config.load(args.params)
    if args.seed is not None:
        full["seed"] = args.seed
    log.info("fgsd %s%s: params from %s", args.stage, f" {name}" if name else "", " + ".join(map(str, args.params)))
    keys = stages.stage_keys(args.stage, name)
    module, function = stages.function_of(args.stage, name)
    fn = getattr(importlib.import_module(f"fgsd.{module}"), function)
    wanted = inspect.signature(fn).parameters
    kwargs = dict(paths)
    if "cfg" in wanted:
        kwargs["cfg"] = config.restrict(full, keys, f"stage '{' '.join(filter(None, [args.stage, name]))}'")
    if "device" in wanted:
        kwargs["device"] = args.device or full["device"]
    if name is not None and args.stage != "figure":
        kwargs["name"] = name
    unknown = set(kwargs) - set(wanted)
    missing = [p.name for p in wanted.values() if p.default is p.empty and p.name not in kwargs]
    if unknown or missing:
        raise FgsdError(f"{module}.{function}: " + "; ".join(filter(None, [
            f"unexpected argument(s) {sorted(unknown)}" if unknown else "",
            f"missing argument(s) {missing}" if missing else ""])))
    fn(**kwargs)
    if args.provenance:
        from .provenance import record
        record(args.provenance, Path(args.provenance).stem, full, keys, args.params)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        run(args)
    except FgsdError as e:
        msg = f"fgsd {args.stage}: error: {e}"
        if logging.getLogger().handlers:
            log.error(msg)  # lands on stderr and in the stage's log file
        else:
            print(msg, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
