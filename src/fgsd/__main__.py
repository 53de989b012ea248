"""Command line: `python -m fgsd <stage> ...`. Every Snakemake rule and DVC stage is one such call."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from .errors import FgsdError

log = logging.getLogger("fgsd")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", nargs="+", default=os.environ.get("FGSD_PARAMS", "params.yaml").split(),
                   help="params.yaml, then overlays (e.g. config/smoke.yaml), merged left to right "
                        "(default: $FGSD_PARAMS, which Snakemake sets, else params.yaml)")
    p.add_argument("--log", help="also write the log to this file")


def _device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="overrides params 'device'")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="fgsd", description=__doc__)
    sub = ap.add_subparsers(dest="stage", required=True)
    p = sub.add_parser("data", help="prepare train/test/unseen crops")
    _common(p)
    p.add_argument("--out", required=True, help="output directory, results/data/<dataset>")
    p = sub.add_parser("train", help="train one model kind")
    _common(p), _device(p)
    p.add_argument("--kind", required=True, help="mixture | conditional | single")
    p.add_argument("--data", required=True, help="data directory from the data stage")
    p.add_argument("--out", required=True, help="output directory for model.pt and logs")
    p.add_argument("--state", default="results/.state", help="where resumable training state lives")
    p = sub.add_parser("centroids", help="features, class centroids and within-class variances")
    _common(p), _device(p)
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("dvc-yaml", help="write dvc.yaml from the Snakemake DAG")
    p.add_argument("--out", default="dvc.yaml")
    p.add_argument("--check", action="store_true", help="fail if the file differs instead of writing it")
    return ap


def run(args: argparse.Namespace) -> None:
    if args.stage == "dvc-yaml":
        from . import dvcgen
        dvcgen.main(args.out, check=args.check)
        return
    from . import config, files
    files.setup_logging(args.log)
    cfg = config.load(args.params)
    log.info("fgsd %s: params from %s", args.stage, " + ".join(map(str, args.params)))
    device = getattr(args, "device", None) or cfg.get("device", "auto")
    if args.stage == "data":
        from .data import prepare
        prepare(cfg, args.out)
    elif args.stage == "train":
        from .train import train
        train(cfg, args.kind, args.data, args.out, args.state, device)
    elif args.stage == "centroids":
        from .centroids import compute
        compute(cfg, args.model, args.data, args.out, device)


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
