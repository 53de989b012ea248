"""Sample sets (METHOD.md §6), one npz per set, all with the same columns so that evaluation and
figures treat them alike:

    images (N,C,H,W) uint8   label (class index, -1 = none)   class_b (second class or -1)
    variant (sampler)        param (alpha, sigma switch, N exemplars, ...)   nfe (per sample)
    seed (the sample's noise seed)

Sets:
- conditional:   Algorithm B, per seen class, centroid from `sampling.exemplars` training crops.
- mixture:       Algorithm A with the mixture (unconditional) denoiser.
- interpolation: Algorithm C, phi_alpha = (1-alpha) phi_a + alpha phi_b with the same noise seed,
                 and the DDIM baseline: slerp between the DDIM latents of a real crop of each
                 class, decoded with phi_alpha.
- mixing:        Algorithm C', phi_a while the estimated sigma is above a switch level, phi_b below.
- fewshot:       Algorithm B for the held-out classes, centroid from N of their crops.
- nfe:           quality vs network evaluations: coarse-to-fine at several beta, DDIM at several
                 step counts, same classes and centroids.
- inversion:     DDIM inversion round trips of test crops (`reference` holds the originals).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import files, samplers
from .data import load_split
from .errors import FgsdError
from .train import load_model, resolve_device, to_float, to_uint8

log = logging.getLogger("fgsd")

SETS = ("conditional", "mixture", "interpolation", "mixing", "fewshot", "nfe", "inversion")


def seeds_for(seed: int, set_name: str, n: int) -> list[int]:
    """n noise seeds for a set: a pure function of (params seed, set), not of batch or device."""
    ss = np.random.SeedSequence([seed, SETS.index(set_name), 7])
    return [int(s) for s in ss.generate_state(n, dtype=np.uint32)]


def network_denoiser(model, device, phi=None, phi_fine=None, switch=None, batch=256) -> samplers.Denoiser:
    """The callable the samplers take. phi: per-sample raw block means {block: (N,K)}; with
    phi_fine and switch (N,), a sample uses phi_fine once its noise level is at or below switch."""
    @torch.no_grad()
    def denoise(y, level, rows):
        out = []
        for i in range(0, len(y), batch):
            r = rows[i:i + batch].cpu()
            cond = None
            if phi is not None:
                cond = {b: v[r] for b, v in phi.items()}
                if phi_fine is not None:
                    fine = (level[i:i + batch].cpu() <= switch[r])[:, None]
                    cond = {b: torch.where(fine, phi_fine[b][r], v) for b, v in cond.items()}
                cond = {b: v.to(device) for b, v in cond.items()}
            out.append(model(y[i:i + batch].to(device), cond).to(y.device))
        return torch.cat(out)
    return denoise


def centroid(model, images: torch.Tensor, n: int, key: list[int], device) -> dict:
    """Raw block means of the matched blocks averaged over n crops (0 or too many: all), drawn
    with a generator seeded by `key`, so a class gets the same exemplars in every set."""
    if 0 < n < len(images):
        images = images[np.sort(np.random.default_rng(key).choice(len(images), n, replace=False))]
    with torch.no_grad():
        return {b: v.cpu() for b, v in model.condition(images.to(device), average=True).items()}


def rows(phis: list[dict]) -> dict:
    """Stack per-sample centroids into the per-sample {block: (N,K)} format."""
    return {b: torch.cat([p[b] for p in phis]) for b in phis[0]}


def mix(pa: dict, pb: dict, alpha: float) -> dict:
    return {b: (1 - alpha) * pa[b] + alpha * pb[b] for b in pa}


class Context:
    """What every set needs: params, data, models, the sampler settings and the init mean."""

    def __init__(self, cfg, models_dir, data_dir, device):
        self.s, self.seed = cfg["sampling"], cfg["seed"]
        self.device = resolve_device(device)
        self.train, self.test = load_split(data_dir, "train"), load_split(data_dir, "test")
        self.unseen = load_split(data_dir, "unseen")
        self.n_seen = len(np.unique(self.train["labels"]))
        x = to_float(self.train["images"])
        self.shape = tuple(x.shape[1:])
        self.init_mean = x.mean(dim=(0, 2, 3)).view(-1, 1, 1)  # per channel, as in [C']
        self.models_dir = Path(models_dir)

    def model(self, kind):
        model, _ = load_model(self.models_dir / kind / "model.pt", self.device)
        return model

    def crops(self, split: dict, label: int, region: int | None = None) -> torch.Tensor:
        keep = split["labels"] == label
        if region is not None:
            keep &= split["region"] == region
        return to_float(split["images"][keep])

    def c2f(self, denoise, seeds, beta=None, desc="") -> tuple[torch.Tensor, np.ndarray]:
        s = self.s
        bar = tqdm(desc=desc or "coarse-to-fine", unit="step", leave=False)
        x, trace = samplers.coarse_to_fine(
            denoise, self.shape, seeds, sigma0=s["sigma0"], sigma_final=s["sigma_final"], h0=s["h0"],
            beta=s["beta"] if beta is None else beta, fixed_h=s["fixed_h"], init_mean=self.init_mean,
            max_steps=s["max_steps"], progress=lambda t, sig: (bar.update(1), bar.set_postfix(sigma=f"{sig:.3f}")))
        bar.close()
        log.info("%s: %d samples, %d network evaluations per sample on average (steps %d-%d)", desc, len(seeds),
                 float(trace.steps.float().mean()) + 1, int(trace.steps.min()), int(trace.steps.max()))
        return x, (trace.steps + 1).numpy()

    def schedule(self, n_steps: int) -> np.ndarray:
        """DDIM's noise levels from sigma0 down to sigma_final."""
        s = self.s
        return samplers.sigma_schedule(s["sigma0"], s["sigma_final"], n_steps, s["ddim_spacing"])

    def ddim(self, denoise, seeds, n_steps) -> tuple[torch.Tensor, np.ndarray]:
        latent = samplers.ddim_init(self.shape, seeds, self.s["sigma0"], mean=self.init_mean)
        x = samplers.ddim(denoise, latent, self.schedule(n_steps), self.s["ddim_eta"], seeds)
        return x, np.full(len(seeds), n_steps + 1)


def _table(images, label, variant, nfe, seed, param=None, class_b=None, **extra) -> dict:
    n = len(images)
    return dict(images=to_uint8(images), label=np.asarray(label, np.int64), variant=np.asarray(variant),
                nfe=np.asarray(nfe, np.int64), seed=np.asarray(seed, np.int64),
                param=np.zeros(n) if param is None else np.asarray(param, np.float64),
                class_b=np.full(n, -1, np.int64) if class_b is None else np.asarray(class_b, np.int64), **extra)


def _concat(tables: list[dict]) -> dict:
    return {k: np.concatenate([t[k] for t in tables]) for k in tables[0]}


def _class_centroids(ctx, model, labels) -> dict[int, dict]:
    return {c: centroid(model, ctx.crops(ctx.train, c), ctx.s["exemplars"], [ctx.seed, 11, c], ctx.device)
            for c in labels}


def set_conditional(ctx: Context) -> dict:
    model, k = ctx.model("conditional"), ctx.s["per_class"]
    labels = np.repeat(np.arange(ctx.n_seen), k)
    phi = _class_centroids(ctx, model, range(ctx.n_seen))
    seeds = seeds_for(ctx.seed, "conditional", len(labels))
    x, nfe = ctx.c2f(network_denoiser(model, ctx.device, rows([phi[c] for c in labels])), seeds, desc="conditional")
    return _table(x, labels, ["c2f"] * len(labels), nfe, seeds, param=np.full(len(labels), ctx.s["exemplars"]))


def set_mixture(ctx: Context) -> dict:
    n = ctx.s["per_class"] * ctx.n_seen
    seeds = seeds_for(ctx.seed, "mixture", n)
    x, nfe = ctx.c2f(network_denoiser(ctx.model("mixture"), ctx.device), seeds, desc="mixture")
    return _table(x, np.full(n, -1), ["c2f"] * n, nfe, seeds)


def class_pairs(ctx: Context) -> list[tuple[int, int]]:
    """A seeded choice of distinct class pairs for interpolation and mixing."""
    g = np.random.default_rng([ctx.seed, 13])
    pairs = []
    while len(pairs) < min(ctx.s["pairs"], ctx.n_seen * (ctx.n_seen - 1) // 2):
        a, b = sorted(g.choice(ctx.n_seen, 2, replace=False).tolist())
        if (a, b) not in pairs:
            pairs.append((a, b))
    return pairs


def _pair_grid(ctx: Context, set_name: str, grid: list[float]):
    """The conditional model, the centroids of the paired classes, and per class pair the noise
    seeds and grid values of its samples: `per_pair` rows, each sweeping `grid` with one seed."""
    model, k = ctx.model("conditional"), ctx.s["per_pair"]
    pairs = class_pairs(ctx)
    phi = _class_centroids(ctx, model, sorted({c for p in pairs for c in p}))
    base = seeds_for(ctx.seed, set_name, len(pairs) * k)
    grid_rows = [(a, b, [s for s in base[i * k:(i + 1) * k] for _ in grid], np.tile(grid, k))
                 for i, (a, b) in enumerate(pairs)]
    return model, phi, grid_rows


def set_interpolation(ctx: Context) -> dict:
    alphas = ctx.s["alphas"]
    model, phi, grid_rows = _pair_grid(ctx, "interpolation", alphas)
    sig = ctx.schedule(ctx.s["inversion_steps"])
    tables = []
    for a, b, seeds, al in grid_rows:
        n = len(al)
        cond = rows([mix(phi[a], phi[b], float(t)) for t in al])
        x, nfe = ctx.c2f(network_denoiser(model, ctx.device, cond), seeds, desc=f"interpolation {a}-{b}")
        tables.append(_table(x, np.full(n, a), ["c2f"] * n, nfe, seeds, param=al, class_b=np.full(n, b)))
        # DDIM baseline: invert one test crop of each class with its own centroid, slerp, decode with phi_alpha
        ends = torch.stack([ctx.crops(ctx.test, a)[0], ctx.crops(ctx.test, b)[0]])
        z = samplers.ddim_invert(network_denoiser(model, ctx.device, rows([phi[a], phi[b]])), ends, sig)
        lat = torch.cat([samplers.slerp(z[:1], z[1:], float(t)) for t in alphas])
        cond = rows([mix(phi[a], phi[b], float(t)) for t in alphas])
        x = samplers.ddim(network_denoiser(model, ctx.device, cond), lat, sig, 0.0, [0] * len(alphas))
        n = len(alphas)
        tables.append(_table(x, np.full(n, a), ["ddim-slerp"] * n, np.full(n, 2 * len(sig)), np.zeros(n),
                             param=alphas, class_b=np.full(n, b)))
    return _concat(tables)


def set_mixing(ctx: Context) -> dict:
    model, phi, grid_rows = _pair_grid(ctx, "mixing", ctx.s["mixing_sigmas"])
    tables = []
    for a, b, seeds, sw in grid_rows:
        n = len(sw)
        den = network_denoiser(model, ctx.device, rows([phi[a]] * n), rows([phi[b]] * n),
                               torch.tensor(sw, dtype=torch.float32))
        x, nfe = ctx.c2f(den, seeds, desc=f"mixing {a}->{b}")
        tables.append(_table(x, np.full(n, a), ["c2f"] * n, nfe, seeds, param=sw, class_b=np.full(n, b)))
    return _concat(tables)


def set_fewshot(ctx: Context) -> dict:
    model, k = ctx.model("conditional"), ctx.s["fewshot_per_n"]
    classes = np.unique(ctx.unseen["labels"])
    if len(classes) == 0:
        raise FgsdError("few-shot samples need held-out classes: set data.n_unseen > 0")
    phis, labels, ns = [], [], []
    for c in classes:
        pool = ctx.crops(ctx.unseen, int(c), region=0)
        for n in sorted({min(n, len(pool)) for n in ctx.s["fewshot_n"]}):
            phis += [centroid(model, pool, n, [ctx.seed, 12, int(c), n], ctx.device)] * k
            labels += [int(c)] * k
            ns += [n] * k
    seeds = seeds_for(ctx.seed, "fewshot", len(labels))
    x, nfe = ctx.c2f(network_denoiser(model, ctx.device, rows(phis)), seeds, desc="few-shot")
    return _table(x, labels, ["c2f"] * len(labels), nfe, seeds, param=ns)


def set_nfe(ctx: Context) -> dict:
    model, k = ctx.model("conditional"), ctx.s["nfe_per_class"]
    labels = np.repeat(np.arange(ctx.n_seen), k)
    phi = _class_centroids(ctx, model, range(ctx.n_seen))
    den = network_denoiser(model, ctx.device, rows([phi[c] for c in labels]))
    seeds = seeds_for(ctx.seed, "nfe", len(labels))
    tables = []
    for beta in ctx.s["nfe_betas"]:
        x, nfe = ctx.c2f(den, seeds, beta=beta, desc=f"nfe: coarse-to-fine beta={beta}")
        tables.append(_table(x, labels, [f"c2f beta={beta:g}"] * len(labels), nfe, seeds, param=np.full(len(labels), beta)))
    for steps in tqdm(ctx.s["ddim_steps"], desc="nfe: DDIM", leave=False):
        x, nfe = ctx.ddim(den, seeds, steps)
        log.info("nfe: DDIM %d steps, eta=%g", steps, ctx.s["ddim_eta"])
        tables.append(_table(x, labels, [f"ddim {steps}"] * len(labels), nfe, seeds, param=np.full(len(labels), steps)))
    return _concat(tables)


def set_inversion(ctx: Context) -> dict:
    model, k = ctx.model("conditional"), ctx.s["inversion_per_class"]
    labels = np.repeat(np.arange(ctx.n_seen), k)
    phi = _class_centroids(ctx, model, range(ctx.n_seen))
    clean = torch.cat([ctx.crops(ctx.test, c)[:k] for c in range(ctx.n_seen)])
    den = network_denoiser(model, ctx.device, rows([phi[c] for c in labels]))
    sig = ctx.schedule(ctx.s["inversion_steps"])
    latent = samplers.ddim_invert(den, clean, sig)
    back = samplers.ddim(den, latent, sig, 0.0, [0] * len(labels))
    err = (back - clean).flatten(1).pow(2).mean(1).sqrt()
    log.info("DDIM inversion round trip (%d steps): RMSE %.4f (median over %d crops)", len(sig), err.median(), len(err))
    return _table(back, labels, ["ddim-inversion"] * len(labels), np.full(len(labels), 2 * len(sig)),
                  np.zeros(len(labels)), reference=to_uint8(clean), roundtrip_rmse=err.numpy().astype(np.float64))


def generate(cfg: dict, set_name: str, models_dir, data_dir, out_path, device="auto") -> None:
    if set_name not in SETS:
        raise FgsdError(f"unknown sample set '{set_name}': choose one of {list(SETS)}")
    torch.manual_seed(cfg["seed"])
    ctx = Context(cfg, models_dir, data_dir, device)
    table = globals()[f"set_{set_name}"](ctx)
    files.save_npz(out_path, **table)
    log.info("wrote %d samples of set '%s' to %s", len(table["images"]), set_name, out_path)
