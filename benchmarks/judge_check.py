"""Does the judge reject phase-randomised crops for their texture, or for their wrap-around? The
negatives it trains on are made by FFT over the 32x32 crop, so they are periodic and real crops
are not. Here it judges, per class, windows of the whole source image (the test regions are too
small for 64x64 windows; the question is periodic vs not, on the same pixels):

  real           32x32 crops;
  periodic       the same crops phase-randomised at 32x32 (what the judge trained on);
  non-periodic   64x64 windows phase-randomised at 64x64, then their central 32x32: the same
                 local statistics with no wrap-around.

If the judge used the wrap-around, it would reject the periodic crops and accept the non-periodic
ones. It prints the fraction of each judged phase-randomised.

    .venv/bin/python benchmarks/judge_check.py --classifier results/models/classifier/model.pt
      -> benchmarks/out/judge_check.csv
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from fgsd import classifier, config, data, sources  # noqa: E402
from fgsd.runtime import to_float  # noqa: E402

OUT = ROOT / "benchmarks" / "out"


def windows(img: np.ndarray, n: int, size: int, rng, name: str) -> torch.Tensor:
    """n random size x size windows of a grey image, in [0, 1] (the data stage's own cropping)."""
    return to_float(data._random_crops(img, n, size, rng, f"the source image of '{name}'"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classifier", default="results/models/classifier/model.pt")
    ap.add_argument("--params", nargs="*", default=[str(ROOT / "params.yaml")])
    ap.add_argument("--per-class", type=int, default=64)
    args = ap.parse_args()
    cfg = config.load(args.params)
    d = cfg["data"]
    if d["dataset"] != "pip-textures":
        raise SystemExit("this check reads the pip-textures source images (data.dataset: pip-textures)")
    model, classes = classifier.load_classifier(args.classifier)
    synthetic, size, rng = len(classes), d["crop_size"], np.random.default_rng(cfg["seed"])
    g = torch.Generator().manual_seed(cfg["seed"])
    raw = {c.name: c for c in sources.pip_textures(color=False)[0]}
    rows = []
    for name in classes:
        img = data._rescale(raw[name].texture, d["scale"])
        real = windows(img, args.per_class, size, rng, name)
        big = classifier.phase_randomised(windows(img, args.per_class, 2 * size, rng, name), g)
        lo = size // 2
        kinds = dict(real=real, periodic=classifier.phase_randomised(real, g),
                     non_periodic=big[..., lo:lo + size, lo:lo + size])
        for kind, x in kinds.items():
            _, pred = classifier.predict(model, x, "cpu")
            rows.append(dict(cls=name, kind=kind, n=len(x), judged_phase_randomised=float((pred == synthetic).float().mean()),
                             judged_own_class=float((pred == classes.index(name)).float().mean())))
    t = pd.DataFrame(rows)
    OUT.mkdir(parents=True, exist_ok=True)
    t.to_csv(OUT / "judge_check.csv", index=False)
    print(t.pivot(index="cls", columns="kind", values="judged_phase_randomised").round(2).to_string())
    print("\nmean over classes:\n" + t.groupby("kind")[["judged_phase_randomised", "judged_own_class"]].mean().round(3)
          .to_string())


if __name__ == "__main__":
    main()
