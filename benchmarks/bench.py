"""Speed measurements (never timed assertions in tests). Each writes one CSV under benchmarks/out/.

    python benchmarks/bench.py throughput   # training img/s and GFLOP/s (eager, compiled, compiled bf16), sampler
                                            # NFE/s; the judge's, guide's and D2C's steps, float32 and bf16
    python benchmarks/bench.py pipeline     # no-op re-run time of snakemake and dvc repro (needs a finished
                                            # main job), and the main job's time from its benchmark TSVs
    python benchmarks/bench.py flops --params params.yaml config/paper.yaml   # FLOPs per training step
    python benchmarks/bench.py threads      # the compiled bf16 training step: one job on every core vs one
                                            # 1-thread job per core side by side (the rules' JOB_THREADS)
    python benchmarks/bench.py eval         # evaluation forward passes (float32, no grad) per crop against the
                                            # batch size (analysis.batch_size, denoisers.unet's chunks)

FLOPs come from torch's flop counter (a multiply-add counts 2). The ceilings are measured here
(an SGEMM) and quoted from DESIGN.md §4 (FMA peak, UNet convolutions) for comparison.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from fgsd import config, network  # noqa: E402
from fgsd.denoisers import denoising_loss  # noqa: E402
from fgsd.runtime import autocast, generator  # noqa: E402

OUT = ROOT / "benchmarks" / "out"
DESIGN_CEILINGS_GFLOPS = {"fma_peak_2core": 190.0, "unet_conv_2core": 60.0}


def timed(fn, warmup: int, reps: int) -> float:
    """Seconds per call, after warm-up."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def sgemm_gflops(n: int = 2048) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n ** 3 / timed(lambda: a @ b, 2, 5) / 1e9


def timing_row(what: str, n: int, seconds: float, gflop: float) -> dict:
    """One row of the throughput table: n images per call, `seconds` and `gflop` per call."""
    return dict(what=what, batch=n, seconds=seconds, images_per_s=n / seconds, gflop_per_call=gflop,
                gflops=gflop / seconds)


def training_step(cfg: dict, kind: str, shared: int = 0):
    """(model, conditioning crops, step) on random crops: step(net=model, precision=None) is the
    training stage's step (sigma = u^2, pixel sum, batch mean), `net` the model or its compiled
    form, `precision` train.precision's autocast, which covers the loss alone. shared: that many
    conditioner crops shared by the batch (train.conditional.conditioner: per_class), else one per crop."""
    size, batch = cfg["data"]["crop_size"], cfg["train"]["batch_size"]
    torch.manual_seed(0)
    model = network.build(cfg["model"], 1, conditional=kind == "conditional")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, cond = torch.rand(batch, 1, size, size), torch.rand(shared or batch, 1, size, size)
    rows = torch.arange(batch) % shared if shared else None

    def step(net=model, precision=None):
        with precision or contextlib.nullcontext():
            loss = denoising_loss(net, x, cond if model.match else None, generator(0, 3, 0), rows=rows)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model, cond, step


def throughput(cfg: dict, reps: int) -> pd.DataFrame:
    size, batch = cfg["data"]["crop_size"], cfg["train"]["batch_size"]
    rows = []
    ceiling = sgemm_gflops()
    for kind in ("mixture", "conditional"):
        model, cond, step = training_step(cfg, kind)
        f = flops(step) / 1e9
        rows.append(timing_row(f"train step {kind}", batch, timed(step, 2, reps), f))
        fast = torch.compile(model)  # train.compile: the same step through TorchInductor (warm-up compiles it)
        rows.append(timing_row(f"train step {kind}, compiled", batch, timed(lambda: step(fast), 3, reps), f))
        bf16, ran = autocast(torch.device("cpu"), "bf16", "the benchmark")  # train.precision: bf16, as training runs it
        if ran == "bf16":
            rows.append(timing_row(f"train step {kind}, compiled bf16", batch,
                                   timed(lambda: step(fast, bf16), 3, reps), f))
        if kind == "conditional":  # per_class: one conditioner crop per class (11 in the default data)
            shared_model, _, shared_step = training_step(cfg, kind, shared=11)
            fast_shared = torch.compile(shared_model)
            rows.append(timing_row("train step conditional per_class (11), compiled" + (" bf16" if ran == "bf16" else ""),
                                   batch, timed(lambda: shared_step(fast_shared, bf16), 3, reps),
                                   flops(shared_step) / 1e9))
        model.eval()
        n = 176  # the conditional sample set of the default preset
        y = torch.rand(n, 1, size, size)
        phi = {b: v.expand(n, -1) for b, v in model.condition(cond, average=True).items()} if model.match else None
        with torch.no_grad():
            rows.append(timing_row(f"sampler NFE {kind}", n, timed(lambda: model(y, phi), 1, reps),
                                   flops(lambda: model(y, phi)) / 1e9))
    df = pd.DataFrame(rows + other_training_steps(cfg, reps))
    df["frac_of_sgemm_here"] = df.gflops / ceiling
    for name, value in DESIGN_CEILINGS_GFLOPS.items():
        df[f"frac_of_{name}"] = df.gflops / value
    df["sgemm_gflops_here"] = ceiling
    df["threads"] = torch.get_num_threads()
    return df


def other_training_steps(cfg: dict, reps: int) -> list[dict]:
    """The judge's, the ADM-G guide's and D2C's two training steps (eager, as the pipeline trains
    them), float32 and under train.precision: bf16's autocast, at the preset's sizes and batches."""
    from fgsd.classifier import Classifier
    from fgsd.d2c import Autoencoder, Head, autoencoder_loss
    from fgsd.guide import Guide
    e, gd, a, size = cfg["evaluate"], cfg["guide"], cfg["d2c"], cfg["data"]["crop_size"]
    n_classes = 11  # the default data's seen classes (the judge adds the phase-randomised one)
    bf16, ran = autocast(torch.device("cpu"), "bf16", "the benchmark")

    def judge():
        net = Classifier(1, n_classes + 1, e["classifier_width"], e["feature_dim"])
        x, y = torch.rand(e["classifier_batch"], 1, size, size), torch.randint(n_classes, (e["classifier_batch"],))
        return list(net.parameters()), x, lambda: torch.nn.functional.cross_entropy(net(x)[1], y)

    def guide():
        net = Guide(1, n_classes, size, gd["width"], gd["channel_mult"], gd["depth"], gd["head_channels"],
                    gd["groups"], cfg["train"]["sigma_data"])
        x, y, s = (torch.rand(gd["batch_size"], 1, size, size), torch.randint(n_classes, (gd["batch_size"],)),
                   torch.rand(gd["batch_size"]))
        return list(net.parameters()), x, lambda: torch.nn.functional.cross_entropy(net(x, s), y)

    def autoencoder():
        net = Autoencoder(1, a["width"], a["latent_channels"], a["cells"], a["groups"])
        head = Head(a["latent_channels"] * (size // 2) ** 2, a["proj_dim"])
        keys = copy.deepcopy(net.encoder).requires_grad_(False), copy.deepcopy(head).requires_grad_(False)
        x, queue = torch.rand(a["ae_batch"], 1, size, size), torch.randn(a["queue"], a["proj_dim"])
        return ([*net.parameters(), *head.parameters()], x,
                lambda: autoencoder_loss(net, head, *keys, x, x.flip(-1), queue, a)[0])  # the stage's own loss

    def prior():
        net = network.UNet(channels=a["latent_channels"], widths=a["prior_widths"], output="gated")
        x = torch.rand(a["prior_batch"], a["latent_channels"], size // 2, size // 2)
        return list(net.parameters()), x, lambda: denoising_loss(net, x, None, generator(0, 3, 0))

    rows = []
    for what, build in (("judge", judge), ("guide", guide), ("d2c autoencoder", autoencoder), ("d2c prior", prior)):
        for name, precision in [("", None), *([(" bf16", bf16)] if ran == "bf16" else [])]:
            torch.manual_seed(0)
            params, x, loss = build()
            opt = torch.optim.Adam(params, lr=1e-4)

            def step():
                with precision or contextlib.nullcontext():
                    value = loss()
                opt.zero_grad(set_to_none=True)
                value.backward()
                opt.step()
            rows.append(timing_row(f"train step {what}{name}", len(x), timed(step, 3, reps), flops(step) / 1e9))
    return rows


def compiled_step(cfg: dict, kind: str):
    """The training stage's step as the default runs it: compiled (train.compile), under
    train.precision."""
    model, _, step = training_step(cfg, kind)
    fast = torch.compile(model)
    precision, _ = autocast(torch.device("cpu"), cfg["train"]["precision"], "the benchmark")
    return lambda: step(fast, precision)


def threads(params: list[str], reps: int) -> pd.DataFrame:
    """Images per second of the training step summed over jobs running side by side: one job with
    every core's thread, then one 1-thread job per core (each job a process of its own, as the
    pipeline runs them; Snakemake sets OMP_NUM_THREADS to a job's threads)."""
    cfg, cores, rows = config.load(params), len(os.sched_getaffinity(0)), []
    batch = cfg["train"]["batch_size"]
    for kind in ("mixture", "conditional"):
        for jobs, per_job in ((1, cores), (cores, 1)):
            cmd = [sys.executable, __file__, "step", "--kind", kind, "--reps", str(reps), "--params", *params]
            env = dict(os.environ, OMP_NUM_THREADS=str(per_job))
            procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(jobs)]
            seconds = [float(p.communicate()[0].split()[-1]) for p in procs]
            rows.append(dict(what=f"train step {kind}, compiled {cfg['train']['precision']}",
                             jobs=jobs, threads_per_job=per_job, seconds_per_step=sum(seconds) / jobs,
                             images_per_s=sum(batch / t for t in seconds)))
    df = pd.DataFrame(rows)
    df["vs_one_job"] = df.images_per_s / df.groupby("what").images_per_s.transform("first")
    return df


def eval_batches(cfg: dict, reps: int, n: int = 512) -> pd.DataFrame:
    """Milliseconds per crop of the denoisers' evaluation forward pass (float32, no grad, the
    conditional model on one centroid) when n crops go through in chunks of each batch size."""
    size, rows = cfg["data"]["crop_size"], []
    for kind in ("mixture", "conditional"):
        torch.manual_seed(0)
        model = network.build(cfg["model"], 1, conditional=kind == "conditional").eval()
        y = torch.rand(n, 1, size, size)
        phi = model.condition(y[:8], average=True) if model.match else None
        for batch in (32, 64, 128, 256):
            cond = {b: v.expand(batch, -1) for b, v in phi.items()} if phi else None

            def chunks():
                for i in range(0, n, batch):
                    model(y[i:i + batch], cond)
            with torch.no_grad():
                rows.append(dict(what=f"eval forward {kind}", batch=batch, ms_per_crop=1e3 * timed(chunks, 1, reps) / n))
    df = pd.DataFrame(rows)
    df["vs_256"] = df.ms_per_crop / df.groupby("what").ms_per_crop.transform("last")
    df["threads"] = torch.get_num_threads()
    return df


def step_flops(cfg: dict, probe_batch: int = 8) -> pd.DataFrame:
    """FLOPs of one training step at the preset's batch and crop size, counted on a small batch
    and scaled (linear in batch): sizes a preset too big to time here, e.g. config/paper.yaml."""
    size, batch, steps = cfg["data"]["crop_size"], cfg["train"]["batch_size"], cfg["train"]
    rows = []
    for kind in ("mixture", "conditional"):
        model = network.build(cfg["model"], model_channels(cfg), conditional=kind == "conditional")
        x = torch.rand(probe_batch, model_channels(cfg), size, size)
        f = flops(lambda: model(x, x if model.match else None).pow(2).sum().backward()) * batch / probe_batch
        rows.append(dict(what=f"train step {kind}", batch=batch, crop=size,
                         params_millions=sum(p.numel() for p in model.parameters()) / 1e6,
                         tflop_per_step=f / 1e12, steps=steps[kind]["steps"],
                         pflop_total=f * steps[kind]["steps"] / 1e15))
    return pd.DataFrame(rows)


def model_channels(cfg: dict) -> int:
    return 3 if cfg["data"]["color"] else 1


def pipeline() -> pd.DataFrame:
    rows = []
    for name, cmd in (("snakemake no-op re-run", ["snakemake", "--cores", "all"]),
                      ("dvc repro no-op re-run", ["dvc", "repro"])):
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        rows.append(dict(what=name, seconds=time.perf_counter() - start, ok=proc.returncode == 0))
    tsvs = sorted((ROOT / "results" / "benchmarks").glob("*.tsv"))
    if tsvs:
        per_job = {p.stem: float(pd.read_csv(p, sep="\t")["s"].iloc[-1]) for p in tsvs}
        rows.append(dict(what="main job, sum of job times", seconds=sum(per_job.values()), ok=True))
        rows += [dict(what=f"job {k}", seconds=v, ok=True) for k, v in per_job.items()]
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("throughput", "pipeline", "flops", "threads", "step", "eval"))
    ap.add_argument("--params", nargs="+", default=[str(ROOT / "params.yaml")])
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--kind", default="mixture", help="step: the model kind")
    args = ap.parse_args()
    if args.what == "step":  # one job of `threads`: prints its seconds per step
        print(timed(compiled_step(config.load(args.params), args.kind), 5, args.reps))
        return
    if args.what == "threads":
        df = threads(args.params, args.reps)
    elif args.what == "throughput":
        df = throughput(config.load(args.params), args.reps)
    elif args.what == "flops":
        df = step_flops(config.load(args.params))
    elif args.what == "eval":
        df = eval_batches(config.load(args.params), args.reps)
    else:
        df = pipeline()
    OUT.mkdir(parents=True, exist_ok=True)
    df.to_csv(OUT / f"{args.what}.csv", index=False, float_format="%.4g")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
