"""Command line: `python -m fgsd <stage> ...`. Every Snakemake rule and DVC stage is one such call."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .errors import FgsdError

log = logging.getLogger("fgsd")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", nargs="+", default=os.environ.get("FGSD_PARAMS", "params.yaml").split(),
                   help="params.yaml, then overlays (e.g. config/smoke.yaml), merged left to right "
                        "(default: $FGSD_PARAMS, which Snakemake sets, else params.yaml)")
    p.add_argument("--log", help="also write the log to this file")
    p.add_argument("--provenance", help="write the job's provenance record (params, code, input and output "
                                        "checksums) to this JSON file")


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
    p = sub.add_parser("sweep", help="output PSNR vs noise level for every denoiser and conditioning")
    _common(p), _device(p)
    p.add_argument("--models", required=True, help="directory holding <kind>/model.pt")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help="tidy CSV")
    p = sub.add_parser("separation", help="centroid distances vs within-class spread, per layer")
    _common(p)
    p.add_argument("--features", required=True, help="directory holding <kind>/phi.npz")
    p.add_argument("--out", required=True)
    p = sub.add_parser("density", help="symmetric KL through the conditional denoiser, per class pair")
    _common(p), _device(p)
    p.add_argument("--model", required=True)
    p.add_argument("--phi", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("sample", help="one sample set (conditional, mixture, interpolation, ...)")
    _common(p), _device(p)
    p.add_argument("set", help="conditional | mixture | interpolation | mixing | fewshot | nfe | inversion")
    p.add_argument("--models", required=True, help="directory holding <kind>/model.pt")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help="the set's npz")
    p = sub.add_parser("classifier", help="train the in-domain classifier (evaluation judge and FID features)")
    _common(p), _device(p)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help="output directory for model.pt and metrics.json")
    p = sub.add_parser("evaluate", help="accuracy, KID/FID/precision/recall and memorisation of the samples")
    _common(p), _device(p)
    p.add_argument("--samples", required=True, help="directory holding the sample sets' npz files")
    p.add_argument("--data", required=True)
    p.add_argument("--classifier", required=True, help="the classifier's model.pt")
    p.add_argument("--out", required=True, help="tidy CSV; the headline JSON goes beside it as samples.json")
    p = sub.add_parser("summary", help="headline numbers -> summary.json")
    _common(p)
    p.add_argument("--analysis", required=True, help="directory with sweep.csv, separation.csv, density.csv")
    p.add_argument("--samples", required=True, help="samples.json from the evaluate stage")
    p.add_argument("--classifier", required=True, help="the classifier's metrics.json")
    p.add_argument("--out", required=True)
    p = sub.add_parser("figure", help="render one paper figure (PDF + PNG)")
    _common(p)
    p.add_argument("name", help="fig2_denoising_grid | fig3_psnr_gain | fig4_separation | fig5_density_distance"
                                " | fig6_samples | fig7_interpolation | fig8_fewshot | fig9_quality_nfe")
    p.add_argument("--results", default="results", help="the results directory to read")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help="the PDF path; the PNG goes beside it")
    p = sub.add_parser("provenance", help="join the jobs' provenance records into one table")
    _common(p)
    p.add_argument("records", nargs="+", help="results/provenance/*.json")
    p.add_argument("--out", required=True, help="CSV, one row per output file")
    p = sub.add_parser("dvc-yaml", help="write dvc.yaml from the Snakemake DAG")
    p.add_argument("--out", default="dvc.yaml")
    p.add_argument("--check", action="store_true", help="fail if the file differs instead of writing it")
    return ap


def _phi_files(features_dir: str) -> dict[str, str]:
    """The feature files the separation statistics and Fig 4 compare."""
    return {k: f"{features_dir}/{k}/phi.npz" for k in ("mixture", "conditional")}


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
    elif args.stage == "sweep":
        from .analysis import sweep
        sweep(cfg, args.models, args.data, args.out, device)
    elif args.stage == "separation":
        from .analysis import separation
        separation(_phi_files(args.features), args.out)
    elif args.stage == "density":
        from .analysis import density
        density(cfg, args.model, args.phi, args.data, args.out, device)
    elif args.stage == "sample":
        from .generate import generate
        generate(cfg, args.set, args.models, args.data, args.out, device)
    elif args.stage == "classifier":
        from .classifier import train_classifier
        train_classifier(cfg, args.data, args.out, device)
    elif args.stage == "evaluate":
        from .evaluate import evaluate
        evaluate(cfg, args.samples, args.data, args.classifier, args.out,
                 os.path.join(os.path.dirname(args.out), "samples.json"), device)
    elif args.stage == "summary":
        from .analysis import summary
        a = args.analysis
        summary(f"{a}/sweep.csv", f"{a}/separation.csv", f"{a}/density.csv", args.out, f"{a}/psnr_gain.csv",
                args.samples, args.classifier)
    elif args.stage == "figure":
        from . import figures, sample_figures
        figures.style()
        r = args.results
        inputs = {"fig2_denoising_grid": (f"{r}/models", args.data),
                  "fig3_psnr_gain": (f"{r}/analysis/sweep.csv",),
                  "fig4_separation": (f"{r}/analysis/separation.csv", _phi_files(f"{r}/features"), args.data),
                  "fig5_density_distance": (f"{r}/analysis/density.csv", args.data)}
        inputs.update({name: (f"{r}/samples", f"{r}/metrics/samples.csv", args.data) for name in sample_figures.FIGURES})
        draw = {**figures.FIGURES, **sample_figures.FIGURES}
        if args.name not in draw:
            raise FgsdError(f"unknown figure '{args.name}': choose one of {sorted(draw)}")
        draw[args.name](cfg, *inputs[args.name], args.out)
    elif args.stage == "provenance":
        from .provenance import table
        table(args.records, args.out)
    if args.provenance:
        from .provenance import record
        keys = config.stage_keys(args.stage, kind=getattr(args, "kind", None), name=getattr(args, "name", None),
                                 sample_set=getattr(args, "set", None))
        record(args.provenance, Path(args.provenance).stem, cfg, keys, args.params)


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
