"""What buys the most denoising per CPU-minute? Trains the mixture model (or, with --kind, the
conditional one) of a preset under several training recipes at the same step budget and reports,
per recipe, wall time and test PSNR per noise level beside the reference denoisers that need no
training (fgsd.references).

    .venv/bin/python benchmarks/train_study.py --data results/data/pip-textures --steps 1500
      -> benchmarks/out/train_study.csv (one row per recipe and sigma)

Measurements, not assertions: CPU speed differs between machines, so compare recipes within one
run. The recipes are overlays on params.yaml (`--params` adds preset files before them).
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from fgsd import analysis, checkpoints, config, network, references, train  # noqa: E402
from fgsd.data import load_split  # noqa: E402
from fgsd.runtime import generator, to_float  # noqa: E402

OUT = ROOT / "benchmarks" / "out"
SIGMAS = (0.00392, 0.0135, 0.0464, 0.16, 0.296, 0.55, 1.0, 1.73, 2.0, 3.0)
STEPS_BATCH = 64  # --steps counts steps of this batch; a recipe with another batch sees the same crops


def merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) else v
    return out


def recipe(output: str = "residual", schedule: str = "cosine", law: str = "square", batch: int = 64,
           lr: float = 0.001, sigma_max: float = 1.0, precision: str = "fp32", **train) -> dict:
    """Overrides of params.yaml's model / train sections. Every recipe names its output, schedule,
    noise law, batch, peak rate, noise range and float precision, so a row keeps its meaning when
    the defaults move (the rows of README "Training recipe" were measured at 0.001, sigma_max 1
    and float32 unless named)."""
    return {"model": {"output": output}, "train": {"lr_schedule": schedule, "sigma_law": law, "batch_size": batch,
                                                   "lr": lr, "sigma_max": sigma_max, "precision": precision, **train}}


BIAS_FREE = {"model": {"bias": False, "upsample_bias": False}}
RECIPES = {  # name -> overrides; the same crops are seen under every batch size (steps scale with 1 / batch)
    "paper (step decay)": recipe(schedule="step"),
    "cosine": recipe(),
    "cosine + ema": recipe(ema=0.995),
    "cosine + edm weight": recipe(loss_weight="edm"),
    "cosine + sigma_max 3": recipe(sigma_max=3.0),
    "cosine + clean output": recipe("clean"),
    "cosine + gated output": recipe("gated"),
    "cosine + gated + bias-free": merge(recipe("gated"), BIAS_FREE),
    "cosine + bias-free": merge(recipe(), BIAS_FREE),
    "gated + log-uniform": recipe("gated", law="log_uniform"),
    "gated + log-uniform + lr 2e-3": recipe("gated", law="log_uniform", lr=0.002),
    "gated + log-uniform + sigma_max 3": recipe("gated", law="log_uniform", sigma_max=3.0),
    "gated + log-uniform + edm weight": recipe("gated", law="log_uniform", loss_weight="edm"),
    "gated + log-uniform + edm weight + sigma_max 3": recipe("gated", law="log_uniform", loss_weight="edm",
                                                             sigma_max=3.0),
    "gated + log-uniform + batch 32": recipe("gated", law="log_uniform", batch=32),  # + config/log_uniform.yaml
    "gated + mixed 0.5": recipe("gated", law="mixed", square_share=0.5),
    "gated + mixed 0.5 + batch 32": recipe("gated", law="mixed", square_share=0.5, batch=32),  # the default
    "gated + mixed 0.25 + batch 32": recipe("gated", law="mixed", square_share=0.25, batch=32),
    "gated-mean + log-uniform": recipe("gated_mean", law="log_uniform"),
    "gated-mean + log-uniform + batch 32": recipe("gated_mean", law="log_uniform", batch=32),
    "gated-mean + log-uniform + batch 16": recipe("gated_mean", law="log_uniform", batch=16),
    "gated-mean + log-uniform + batch 32 + sigma_max 3": recipe("gated_mean", law="log_uniform", batch=32,
                                                                sigma_max=3.0),
    # the study's question (README, "Study"): which peak rate trains 0 A.D. crops up to sigma 3?
    **{f"gated + mixed 0.5 + batch 32 + sigma_max 3 + lr {lr:g}": recipe("gated", law="mixed", square_share=0.5,
                                                                          batch=32, sigma_max=3.0, lr=lr)
       for lr in (3e-4, 1e-3, 3e-3, 5e-3, 1e-2)},
    # README "Training up to sigma = 3 with today's recipe": the default mixture model (the lr 0.003, sigma_max 3
    # row above), beside it at sigma_max 1 and with a quarter of the draws from the square law
    "gated + mixed 0.5 + batch 32 + lr 0.003": recipe("gated", law="mixed", square_share=0.5, batch=32, lr=3e-3),
    "gated + mixed 0.25 + batch 32 + sigma_max 3 + lr 0.003": recipe("gated", law="mixed", square_share=0.25,
                                                                     batch=32, sigma_max=3.0, lr=3e-3),
    # README "A narrower network for the same minutes": the default recipe at half the widths (half the
    # step time here), trained for twice the steps (--steps 2600)
    "gated + mixed 0.5 + batch 32 + lr 0.003 + half width": merge(
        recipe("gated", law="mixed", square_share=0.5, batch=32, lr=3e-3), {"model": {"widths": [8, 16, 32, 64]}}),
    # README "Compiled training": the default recipe with its training step compiled (train.compile)
    "gated + mixed 0.5 + batch 32 + lr 0.003 + compiled": recipe("gated", law="mixed", square_share=0.5, batch=32,
                                                                 lr=3e-3, compile=True),
    "gated + mixed 0.5 + batch 32 + lr 0.003 + eager": recipe("gated", law="mixed", square_share=0.5, batch=32,
                                                              lr=3e-3, compile=False),
    # README "bfloat16 training": the compiled default with its forward pass in bf16 autocast (train.precision)
    "gated + mixed 0.5 + batch 32 + lr 0.003 + compiled + bf16": recipe("gated", law="mixed", square_share=0.5,
                                                                        batch=32, lr=3e-3, compile=True,
                                                                        precision="bf16"),
}


@torch.no_grad()
def test_psnr(denoise, x: torch.Tensor, labels: torch.Tensor, seed: int) -> dict[float, float]:
    out = {}
    for j, s in enumerate(SIGMAS):
        y = x + s * torch.randn(x.shape, generator=generator(seed, 90, j))
        out[s] = float(network.psnr(denoise(y, torch.full((len(y),), s), torch.arange(len(y))), x).mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="results/data/pip-textures", help="a data stage's output directory")
    ap.add_argument("--params", nargs="*", default=[], help="preset overlays on params.yaml")
    ap.add_argument("--steps", type=int, default=1500, help=f"training steps at batch {STEPS_BATCH}")
    ap.add_argument("--recipes", nargs="*", default=list(RECIPES), help="a subset of the recipes")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--out", type=Path, default=OUT / "train_study.csv", help="the table to write")
    ap.add_argument("--kind", choices=("mixture", "conditional"), default="mixture",
                    help="the model to train; the conditional one is tested with the sweep's exemplars")
    ap.add_argument("--init", type=Path, help="a mixture model.pt the conditional model fine-tunes "
                                              "(train.conditional.init: mixture); without it, it trains from scratch")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    base = config.load([ROOT / "params.yaml", *a.params])
    base["device"] = "cpu"
    tr, te = load_split(a.data, "train"), load_split(a.data, "test")
    x, xl = to_float(tr["images"]), torch.from_numpy(tr["labels"])
    xt, lt = to_float(te["images"]), torch.from_numpy(te["labels"])
    gauss = references.StationaryGaussians(x, xl)
    rows = []
    for name, den in (("reference: trivial-mean", references.trivial()),
                      ("reference: gaussian-mixture", references.gaussian_mixture(gauss)),
                      ("reference: gaussian-class", references.gaussian_class(gauss, lt))):
        rows += [dict(recipe=name, steps=0, seconds=0.0, sigma=s, psnr=p) for s, p in test_psnr(den, xt, lt, 0).items()]
    for name in a.recipes:
        cfg = merge(base, RECIPES[name])
        steps = a.steps * STEPS_BATCH // cfg["train"]["batch_size"]
        cfg["train"].update(eval_every=steps, checkpoint_every=10 * steps)
        cfg["train"][a.kind]["steps"] = steps
        if a.kind == "conditional":
            cfg["train"]["conditional"]["init"] = "mixture" if a.init else "scratch"
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            t0 = time.perf_counter()
            train.train(cfg, a.kind, a.data, model=out / "model.pt", train_log=out / "log.csv",
                        config_json=out / "config.json", metrics=out / "metrics.json", state=out / "state",
                        init=a.init if a.kind == "conditional" else None)
            seconds = time.perf_counter() - t0
            net, _ = checkpoints.load(out / "model.pt", network.UNet, (a.kind,))
        if a.kind == "conditional":  # another crop of the same class, as the sweep's "exemplar" rows
            same = analysis.exemplar_partners(lt, base["seed"])[0]
            psnr = test_psnr(lambda y, s, r: net(y, xt[same[r]]), xt, lt, 0)
        else:
            psnr = test_psnr(lambda y, s, r: net(y), xt, lt, 0)
        rows += [dict(recipe=name, kind=a.kind, steps=steps, seconds=seconds, sigma=s, psnr=p) for s, p in psnr.items()]
        print(f"{name:28s} {seconds:6.0f} s  " + "  ".join(f"{s:g}:{p:5.2f}" for s, p in psnr.items()), flush=True)
    frame = pd.DataFrame(rows)
    frame["input_psnr"] = [float(network.psnr(xt + s * torch.randn(xt.shape, generator=generator(0, 90, SIGMAS.index(s))),
                                              xt).mean()) for s in frame.sigma]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(a.out, index=False, float_format="%.4g")
    print(frame.pivot_table(index="recipe", columns="sigma", values="psnr", sort=False).round(2).to_string())


if __name__ == "__main__":
    main()
