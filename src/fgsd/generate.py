"""Sample sets (METHOD.md §6), one npz per set in the format of `samples.py`. The table of sets
(seed ids, models, params keys, how each is evaluated) is `stages.SAMPLE_SETS`; each set is one
`set_<name>(ctx)` function here.

Sets:
- conditional:   Algorithm B, per seen class, centroid from `sampling.exemplars` training crops.
- mixture:       Algorithm A with the mixture (unconditional) denoiser.
- interpolation: Algorithm C, phi_alpha = (1-alpha) phi_a + alpha phi_b with the same noise seed,
                 and the DDIM baseline: slerp between the DDIM latents of a real crop of each
                 class, decoded with phi_alpha.
- mixing:        Algorithm C', phi_a while the estimated sigma is above a switch level, phi_b below.
- fewshot:       Algorithm B for the held-out classes, centroid from N of their crops.
- nfe:           quality vs network evaluations: coarse-to-fine at several beta, DDIM at several
                 step counts started from the class's noisy Gaussian fit and from the mixture's,
                 same classes and centroids.
- inversion:     DDIM inversion round trips of test crops (`reference` holds the originals).
- guidance:      ADM-G, the baseline: the mixture model guided by the noise-aware classifier
                 (`guide.py`, `denoisers.Guided`) toward each seen class, at every scale of
                 `sampling.guidance_scales` (the same seeds at each), through coarse-to-fine and
                 DDIM (eta 0 and 1).

Every set records its cost: `nfe` (denoiser calls per sample), `gflop` per sample (torch's
FLOP counter on one call: machine-independent, so comparable across methods and runs) and, for
guidance, `guide_nfe` (guide forward+backward passes). Wall-clock seconds per block of samples
go to the `seconds` table, which is a benchmark: it differs from run to run by nature.
"""
from __future__ import annotations

import functools
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from . import checkpoints, files, references, samplers, samples, stages
from .data import load_split
from .denoisers import Guided, class_centroid, mix, per_sample, unet
from .errors import FgsdError
from .network import UNet
from .runtime import exemplars, generator, gflop_per_call, resolve_device, to_float, to_uint8

log = logging.getLogger("fgsd")


@torch.no_grad()
def stop_level(net, clean: torch.Tensor, sigma_final: float, factor: float, sigma0: float, device) -> float:
    """Where the samplers stop: max(sigma_final, factor x the median sigma-hat the network reads
    on clean held-out crops, ||x^(x) - x|| / sqrt(D)). Below that level the blind sampler's noise
    estimate measures the network's own error, not noise left in the sample, so a sample that
    goes on can only stop somewhere unlike real data. The conditional model is conditioned on
    each crop itself (an exemplar of its class)."""
    if factor == 0:
        return sigma_final
    res = []
    for i in range(0, len(clean), 256):
        x = clean[i:i + 256].to(device)
        out = net(x, x if net.match else None)
        res.append(((out - x).flatten(1).norm(dim=1) / x[0].numel() ** 0.5).cpu())
    level = factor * float(torch.cat(res).median())
    return min(max(sigma_final, level), 0.5 * sigma0)


class Context:
    """What every set needs: params, data, models, the sampler settings and the init mean."""

    def __init__(self, cfg, name, model, data_dir, device, inputs=None):
        self.s, self.seed, self.name = cfg["sampling"], cfg["seed"], name
        self.inputs = inputs or {}   # the set's files beyond the model and data (stages.SampleSet.inputs)
        self.cfg, self.data_dir = cfg, data_dir
        self.timings: list[dict] = []
        self.device = resolve_device(device)
        self.train, self.test = load_split(data_dir, "train"), load_split(data_dir, "test")
        self.unseen = load_split(data_dir, "unseen")
        self.n_seen = len(np.unique(self.train["labels"]))
        x = to_float(self.train["images"])
        self.shape = tuple(x.shape[1:])
        self.init_mean = x.mean(dim=(0, 2, 3)).view(-1, 1, 1)  # per channel, as in [C']
        self.model_path = Path(model)
        self.stop = None  # the samplers' stopping level, set when the model is loaded

    def model(self):
        """The model this set samples from (stages.SAMPLE_SETS names its kind); also sets the
        samplers' stopping level from it."""
        net, _ = checkpoints.load(self.model_path, UNet, (stages.SAMPLE_SETS[self.name].model,), self.device)
        self.stop = stop_level(net, to_float(self.test["images"]), self.s["sigma_final"], self.s["stop_factor"],
                               self.s["sigma0"], self.device)
        log.info("samplers stop at sigma %.4g (sigma_final %g, stop_factor %g)", self.stop, self.s["sigma_final"],
                 self.s["stop_factor"])
        return net

    def seeds(self, n: int) -> list[int]:
        return samples.seeds_for(self.seed, self.name, n)

    def crops(self, split: dict, label: int, region: int | None = None) -> torch.Tensor:
        keep = split["labels"] == label
        if region is not None:
            keep &= split["region"] == region
        return to_float(split["images"][keep])

    def timed(self, desc: str, n: int, t0: float) -> None:
        self.timings.append(dict(block=desc, n_samples=n, seconds=time.perf_counter() - t0,
                                 seconds_per_sample=(time.perf_counter() - t0) / max(n, 1)))

    def gflop(self, denoise) -> float:
        """GFLOP of one call of `denoise` on one sample (what a sampler step costs)."""
        y = (self.init_mean + 0.5 * torch.randn((1, *self.shape), generator=torch.Generator().manual_seed(0)))
        return gflop_per_call(lambda: denoise(y.to(self.device), torch.full((1,), 0.5, device=self.device),
                                              torch.zeros(1, dtype=torch.long)))

    def c2f(self, denoise, seeds, beta=None, desc="") -> tuple[torch.Tensor, np.ndarray]:
        s, t0 = self.s, time.perf_counter()
        bar = tqdm(desc=desc or "coarse-to-fine", unit="step", leave=False)
        out = samplers.coarse_to_fine(
            denoise, self.shape, seeds, sigma0=s["sigma0"], sigma_final=self.stop, h0=s["h0"],
            beta=s["beta"] if beta is None else beta, fixed_h=s["fixed_h"], init_mean=self.init_mean,
            max_steps=s["max_steps"], progress=lambda t, sig: (bar.update(1), bar.set_postfix(sigma=f"{sig:.3f}")))
        bar.close()
        log.info("%s: %d samples, %d network evaluations per sample on average (steps %d-%d)", desc, len(seeds),
                 float(out.nfe.mean()), int(out.nfe.min()) - 1, int(out.nfe.max()) - 1)
        self.timed(desc or "coarse-to-fine", len(seeds), t0)
        return out.x, out.nfe

    def schedule(self, n_steps: int) -> np.ndarray:
        """DDIM's noise levels from sigma0 down to the stopping level."""
        s = self.s
        return samplers.sigma_schedule(s["sigma0"], self.stop, n_steps, s["ddim_spacing"])

    @functools.cached_property
    def gaussian_fit(self) -> references.StationaryGaussians:
        """The stationary-Gaussian fit of the training crops, once per set (every DDIM run uses it)."""
        return references.StationaryGaussians(to_float(self.train["images"]), torch.from_numpy(self.train["labels"]))

    def gaussian_draws(self, labels, seeds, sigma: float) -> torch.Tensor:
        """Per sample, a draw of its class under the Gaussian fit, seen through noise sigma;
        labels None: of the fitted mixture (the component drawn from the class frequencies with the
        sample's own seed), the start of an unconditional sampler."""
        fit = self.gaussian_fit
        if labels is None:
            prior = fit.log_prior.exp().numpy()
            k = torch.tensor([np.random.default_rng([int(s), 5]).choice(len(prior), p=prior) for s in seeds])
        else:
            k = fit.index(torch.as_tensor(labels))
        return fit.noisy_sample(k, sigma, samplers.sample_generators(seeds))

    def ddim(self, denoise, seeds, n_steps, labels, eta=None, desc="ddim") -> tuple[torch.Tensor, np.ndarray]:
        """DDIM from sigma0. `ddim_init: gaussian` starts each sample from its class's noisy
        distribution at sigma0 under the stationary-Gaussian fit of the training crops,
        N(m_c, Σ_c + σ0² I); `mean` from the training mean + σ0 z, which keeps only
        σ0² / (λ + σ0²) of the variance λ of a direction not small against σ0² (the crop's mean
        grey level: λ = D · Var(crop mean)). labels None: the mixture fit's noisy distribution.
        eta: `sampling.ddim_eta` unless given."""
        t0 = time.perf_counter()
        if self.s["ddim_init"] == "gaussian":
            latent = self.gaussian_draws(labels, seeds, self.s["sigma0"]).to(self.device)
        else:
            latent = samplers.ddim_init(self.shape, seeds, self.s["sigma0"], mean=self.init_mean)
        eta = self.s["ddim_eta"] if eta is None else eta
        out = samplers.ddim(denoise, latent, self.schedule(n_steps), eta, seeds)
        self.timed(desc, len(seeds), t0)
        return out.x, out.nfe


def _class_centroids(ctx, model, labels) -> dict[int, dict]:
    return {c: class_centroid(model, ctx.crops(ctx.train, c), ctx.device, ctx.s["exemplars"], [ctx.seed, 11, c])
            for c in labels}


def set_conditional(ctx: Context) -> dict:
    model, k = ctx.model(), ctx.s["per_class"]
    labels = np.repeat(np.arange(ctx.n_seen), k)
    phi = _class_centroids(ctx, model, range(ctx.n_seen))
    seeds = ctx.seeds(len(labels))
    den = unet(model, ctx.device, per_sample([phi[c] for c in labels]))
    x, nfe = ctx.c2f(den, seeds, desc="conditional")
    return samples.table(x, labels, ["c2f"] * len(labels), nfe, seeds, param=np.full(len(labels), ctx.s["exemplars"]),
                         gflop=nfe * ctx.gflop(den))


def set_mixture(ctx: Context) -> dict:
    n = ctx.s["per_class"] * ctx.n_seen
    seeds = ctx.seeds(n)
    den = unet(ctx.model(), ctx.device)
    x, nfe = ctx.c2f(den, seeds, desc="mixture")
    return samples.table(x, np.full(n, -1), ["c2f"] * n, nfe, seeds, gflop=nfe * ctx.gflop(den))


def class_pairs(ctx: Context) -> list[tuple[int, int]]:
    """A seeded choice of distinct class pairs for interpolation and mixing."""
    g = np.random.default_rng([ctx.seed, 13])
    pairs = []
    while len(pairs) < min(ctx.s["pairs"], ctx.n_seen * (ctx.n_seen - 1) // 2):
        a, b = sorted(g.choice(ctx.n_seen, 2, replace=False).tolist())
        if (a, b) not in pairs:
            pairs.append((a, b))
    return pairs


def _pair_grid(ctx: Context, grid: list[float]):
    """The conditional model, the centroids of the paired classes, and per class pair the noise
    seeds and grid values of its samples: `per_pair` rows, each sweeping `grid` with one seed."""
    model, k = ctx.model(), ctx.s["per_pair"]
    pairs = class_pairs(ctx)
    phi = _class_centroids(ctx, model, sorted({c for p in pairs for c in p}))
    base = ctx.seeds(len(pairs) * k)
    grid_rows = [(a, b, [s for s in base[i * k:(i + 1) * k] for _ in grid], np.tile(grid, k))
                 for i, (a, b) in enumerate(pairs)]
    return model, phi, grid_rows


def set_interpolation(ctx: Context) -> dict:
    alphas = ctx.s["alphas"]
    model, phi, grid_rows = _pair_grid(ctx, alphas)
    sig = ctx.schedule(ctx.s["inversion_steps"])
    tables = []
    for a, b, seeds, al in grid_rows:
        n = len(al)
        cond = per_sample([mix(phi[a], phi[b], float(t)) for t in al])
        x, nfe = ctx.c2f(unet(model, ctx.device, cond), seeds, desc=f"interpolation {a}-{b}")
        tables.append(samples.table(x, np.full(n, a), ["c2f"] * n, nfe, seeds, param=al, class_b=np.full(n, b)))
        # DDIM baseline: invert one test crop of each class with its own centroid, slerp, decode with phi_alpha
        ends = torch.stack([ctx.crops(ctx.test, a)[0], ctx.crops(ctx.test, b)[0]])
        z = samplers.ddim_invert(unet(model, ctx.device, per_sample([phi[a], phi[b]])), ends, sig)
        lat = torch.cat([samplers.slerp(z[:1], z[1:], float(t)) for t in alphas])
        cond = per_sample([mix(phi[a], phi[b], float(t)) for t in alphas])
        x = samplers.ddim(unet(model, ctx.device, cond), lat, sig, 0.0, [0] * len(alphas)).x
        n = len(alphas)
        tables.append(samples.table(x, np.full(n, a), ["ddim-slerp"] * n, np.full(n, 2 * len(sig)), np.zeros(n),
                             param=alphas, class_b=np.full(n, b)))
    return samples.concat(tables)


def set_mixing(ctx: Context) -> dict:
    model, phi, grid_rows = _pair_grid(ctx, ctx.s["mixing_sigmas"])
    tables = []
    for a, b, seeds, sw in grid_rows:
        n = len(sw)
        den = unet(model, ctx.device, per_sample([phi[a]] * n), per_sample([phi[b]] * n),
                               torch.tensor(sw, dtype=torch.float32))
        x, nfe = ctx.c2f(den, seeds, desc=f"mixing {a}->{b}")
        tables.append(samples.table(x, np.full(n, a), ["c2f"] * n, nfe, seeds, param=sw, class_b=np.full(n, b)))
    return samples.concat(tables)


def fewshot_pools(ctx: Context, seen: bool) -> list[tuple[int, torch.Tensor]]:
    """(class, crops its N exemplars are drawn from) for the few-shot sets: every held-out class
    and its region-0 crops; or `sampling.fewshot_seen_classes` seen classes (a seeded choice) and
    their training crops, where the models know the class and only the conditioning is few-shot."""
    if not seen:
        classes = np.unique(ctx.unseen["labels"])
        if len(classes) == 0:
            raise FgsdError("few-shot samples need held-out classes: set data.n_unseen > 0")
        return [(int(c), ctx.crops(ctx.unseen, int(c), region=0)) for c in classes]
    m = min(ctx.s["fewshot_seen_classes"], ctx.n_seen)
    classes = np.sort(np.random.default_rng([ctx.seed, 16]).choice(ctx.n_seen, m, replace=False))
    return [(int(c), ctx.crops(ctx.train, int(c))) for c in classes]


def _fewshot(ctx: Context, seen: bool) -> dict:
    model, k = ctx.model(), ctx.s["fewshot_per_n"]
    phis, labels, ns = [], [], []
    for c, pool in fewshot_pools(ctx, seen):
        for n in sorted({min(n, len(pool)) for n in ctx.s["fewshot_n"]}):
            phis += [class_centroid(model, pool, ctx.device, n, [ctx.seed, 12, c, n])] * k
            labels += [c] * k
            ns += [n] * k
    seeds = ctx.seeds(len(labels))
    den = unet(model, ctx.device, per_sample(phis))
    x, nfe = ctx.c2f(den, seeds, desc="few-shot")
    return samples.table(x, labels, ["c2f"] * len(labels), nfe, seeds, param=ns, gflop=nfe * ctx.gflop(den))


def set_fewshot(ctx: Context) -> dict:
    return _fewshot(ctx, seen=False)


def set_fewshot_seen(ctx: Context) -> dict:
    return _fewshot(ctx, seen=True)


def set_nfe(ctx: Context) -> dict:
    model, k = ctx.model(), ctx.s["nfe_per_class"]
    labels = np.repeat(np.arange(ctx.n_seen), k)
    phi = _class_centroids(ctx, model, range(ctx.n_seen))
    den = unet(model, ctx.device, per_sample([phi[c] for c in labels]))
    per_call = ctx.gflop(den)
    seeds = ctx.seeds(len(labels))
    tables = []
    for beta in ctx.s["nfe_betas"]:
        x, nfe = ctx.c2f(den, seeds, beta=beta, desc=f"nfe: coarse-to-fine beta={beta}")
        tables.append(samples.table(x, labels, [f"c2f beta={beta:g}"] * len(labels), nfe, seeds,
                                    param=np.full(len(labels), beta), gflop=nfe * per_call))
    for steps in tqdm(ctx.s["ddim_steps"], desc="nfe: DDIM", leave=False):
        x, nfe = ctx.ddim(den, seeds, steps, labels, desc=f"nfe: ddim {steps}")
        log.info("nfe: DDIM %d steps, eta=%g", steps, ctx.s["ddim_eta"])
        tables.append(samples.table(x, labels, [f"ddim {steps}"] * len(labels), nfe, seeds,
                                    param=np.full(len(labels), steps), gflop=nfe * per_call))
    # DDIM from the mixture's noisy distribution (no class in the start): the like-for-like
    # comparison with unconditional and classifier-guided DDIM, whose start knows no class
    for steps in ctx.s["ddim_steps"]:
        x, nfe = ctx.ddim(den, seeds, steps, None, desc=f"nfe: ddim {steps} mixture start")
        tables.append(samples.table(x, labels, [f"ddim {steps} mixture start"] * len(labels), nfe, seeds,
                                    param=np.full(len(labels), steps), gflop=nfe * per_call))
    # the control for DDIM's Gaussian start: what the class's Gaussian fit alone gives, no network
    x = ctx.gaussian_draws(labels, seeds, 0.0)
    tables.append(samples.table(x, labels, ["gaussian fit"] * len(labels), np.zeros(len(labels)), seeds,
                                gflop=np.zeros(len(labels))))
    return samples.concat(tables)


def set_inversion(ctx: Context) -> dict:
    model, k = ctx.model(), ctx.s["inversion_per_class"]
    labels = np.repeat(np.arange(ctx.n_seen), k)
    phi = _class_centroids(ctx, model, range(ctx.n_seen))
    clean = torch.cat([ctx.crops(ctx.test, c)[:k] for c in range(ctx.n_seen)])
    den = unet(model, ctx.device, per_sample([phi[c] for c in labels]))
    sig = ctx.schedule(ctx.s["inversion_steps"])
    latent = samplers.ddim_invert(den, clean, sig)
    back = samplers.ddim(den, latent, sig, 0.0, [0] * len(labels)).x
    err = (back - clean).flatten(1).pow(2).mean(1).sqrt()
    log.info("DDIM inversion round trip (%d steps): RMSE %.4f (median over %d crops)", len(sig), err.median(), len(err))
    return samples.table(back, labels, ["ddim-inversion"] * len(labels), np.full(len(labels), 2 * len(sig)),
                  np.zeros(len(labels)), reference=to_uint8(clean), roundtrip_rmse=err.numpy().astype(np.float64))


def set_guidance(ctx: Context) -> dict:
    """ADM-G: per seen class, `guidance_per_class` seeds, each drawn at every guidance scale
    through coarse-to-fine (the guide reads the unguided residual's sigma) and DDIM with eta 0
    and 1 (the guide reads the schedule's sigma; the start is the mixture fit's noisy
    distribution, which knows no class)."""
    from .guide import batched, load_guide
    base = unet(ctx.model(), ctx.device)
    guide, classes = load_guide(ctx.inputs["guide"], ctx.device)
    if len(classes) != ctx.n_seen:
        raise FgsdError(f"{ctx.inputs['guide']}: the guide knows {len(classes)} classes, the data has {ctx.n_seen} "
                        "seen classes (retrain it on this data)")
    logits, s = batched(guide), ctx.s
    labels = np.repeat(np.arange(ctx.n_seen), s["guidance_per_class"])
    seeds, n = ctx.seeds(len(labels)), len(labels)
    den_gflop = ctx.gflop(base)
    guide_gflop = ctx.gflop(Guided(base, logits, labels, 1.0, "residual")) - den_gflop
    steps = s["guidance_ddim_steps"]
    tables = []
    for scale in tqdm(s["guidance_scales"], desc="guidance scales", leave=False):
        runs = [("c2f", "residual", None), (f"ddim {steps} eta=0", "sampler", 0.0), (f"ddim {steps} eta=1", "sampler", 1.0)]
        for variant, sigma_from, eta in runs:
            g = Guided(base, logits, labels, scale, sigma_from, expose_estimate=s["guidance_sigma_from"] == "unguided")
            desc = f"guidance s={scale:g} {variant}"
            if eta is None:
                x, nfe = ctx.c2f(g, seeds, desc=desc)
            else:
                x, nfe = ctx.ddim(g, seeds, steps, None, eta=eta, desc=desc)
            calls = g.guide_calls.numpy()
            tables.append(samples.table(x, labels, [variant] * n, nfe, seeds, param=np.full(n, scale),
                                        gflop=nfe * den_gflop + calls * guide_gflop, guide_nfe=calls))
    return samples.concat(tables)


def _d2c(ctx: Context):
    """D2C's prior (with its latent statistics) and autoencoder, and the cost of one call of each."""
    from . import d2c
    prior, mean, std = d2c.load_prior(ctx.model_path, ctx.device)
    ae = d2c.load_autoencoder(ctx.inputs["autoencoder"], ctx.device)
    shape = (len(mean), ctx.shape[1] // 2, ctx.shape[2] // 2)
    one = torch.full((1, *shape), 0.5, device=ctx.device)
    with torch.no_grad():
        cost = dict(prior=gflop_per_call(lambda: prior(one, None)), decoder=gflop_per_call(lambda: ae.decode(one)))
    return d2c, prior, mean, std, ae, shape, cost


def _latent_ddim(ctx: Context, prior, shape, seeds, desc) -> tuple[torch.Tensor, int]:
    """Latent images drawn from the prior by VE DDIM (sampling.d2c_steps, sigma0 -> sigma_final),
    from 0.5 + sigma0 z: the latent images' std is 0.2, small against sigma0 = 1, so this plain
    start is right here. Returns them and the prior calls per sample."""
    s, t0 = ctx.s, time.perf_counter()
    sig = samplers.sigma_schedule(s["sigma0"], s["sigma_final"], s["d2c_steps"], s["ddim_spacing"])
    latent = samplers.ddim_init(shape, seeds, s["sigma0"], mean=0.5, device=ctx.device)
    out = samplers.ddim(unet(prior, ctx.device), latent, sig, s["ddim_eta"], seeds)
    ctx.timed(desc, len(seeds), t0)
    return out.x.cpu(), len(sig)


def set_d2c(ctx: Context) -> dict:
    """D2C's unconditional samples: prior draws, decoded (the counterpart of the mixture set)."""
    d2c, prior, mean, std, ae, shape, cost = _d2c(ctx)
    n = ctx.s["per_class"] * ctx.n_seen
    seeds = ctx.seeds(n)
    ell, calls = _latent_ddim(ctx, prior, shape, seeds, "d2c unconditional")
    x = d2c.decode(ae, d2c.from_latent_image(ell, mean.cpu(), std.cpu()), ctx.device).clamp(0, 1)
    steps = ctx.s["d2c_steps"]
    return samples.table(x, np.full(n, -1), [f"d2c ddim {steps}"] * n, np.full(n, calls + 1), seeds,
                         gflop=np.full(n, calls * cost["prior"] + cost["decoder"]))


def _d2c_fewshot(ctx: Context, seen: bool) -> dict:
    """D2C few-shot generation for the held-out classes (seen: for `fewshot_seen_classes` seen
    classes), from the same N exemplars (and seeds) as the FGSD few-shot sets: a latent
    classifier r(c | z) (the N exemplars' latents against `d2c_unlabelled` unlabelled training
    latents: positives vs unlabelled), then prior proposals accepted with probability r, at most
    `d2c_cap` x `fewshot_per_n` of them. One pool of proposals serves every (class, N) (common
    random numbers; each rejection run still sees i.i.d. prior draws). Cost per accepted
    sample: proposals spent x prior calls / accepted, plus one decoder call."""
    from .d2c import training_crops
    d2c, prior, mean, std, ae, shape, cost = _d2c(ctx)
    s, k = ctx.s, ctx.s["fewshot_per_n"]
    pools = fewshot_pools(ctx, seen)
    pool_seeds = ctx.seeds(s["d2c_cap"] * k)
    ell, calls = _latent_ddim(ctx, prior, shape, pool_seeds, "d2c proposals")
    z_pool = d2c.from_latent_image(ell, mean.cpu(), std.cpu())
    crops, _ = training_crops(ctx.data_dir, ctx.cfg["d2c"]["protocol"])
    pick = np.sort(np.random.default_rng([ctx.seed, 14]).choice(len(crops), min(s["d2c_unlabelled"], len(crops)),
                                                                replace=False))
    unlabelled = d2c.encode(ae, crops[pick], ctx.device).flatten(1)
    tables, tried = [], []
    for c, pool in pools:
        for n in sorted({min(n, len(pool)) for n in s["fewshot_n"]}):
            positives = d2c.encode(ae, exemplars(pool, n, [ctx.seed, 12, c, n]), ctx.device).flatten(1)
            r = d2c.fit_logistic(torch.cat([positives, unlabelled]),
                                 torch.cat([torch.ones(len(positives)), torch.zeros(len(unlabelled))]),
                                 ctx.cfg["d2c"]["probe_l2"])
            kept, spent = d2c.rejection_sample(r(z_pool), k, generator(ctx.seed, 15, c, n))
            m = len(kept)
            log.info("d2c few-shot: class %d, N=%d: %d of %d accepted from %d proposals (rate %.3f)", c, n, m, k, spent,
                     m / spent)
            tried.append((c, n, m, spent))
            if m == 0:
                continue
            x = d2c.decode(ae, z_pool[kept], ctx.device).clamp(0, 1)
            per = spent / m
            tables.append(samples.table(
                x, np.full(m, c), ["d2c rejection"] * m, np.full(m, round(per * calls) + 1),
                np.asarray(pool_seeds)[kept.numpy()], param=np.full(m, n),
                gflop=np.full(m, per * calls * cost["prior"] + cost["decoder"]), acceptance_rate=np.full(m, m / spent),
                proposals_per_accepted=np.full(m, per)))
    if not tables:
        log.warning("d2c few-shot: no proposal was accepted for any class and N (sampling.d2c_cap bounds the tries)")
        tables = [samples.table(torch.zeros((0, *ctx.shape)), [], [], [], [], param=[], gflop=[], acceptance_rate=[],
                                proposals_per_accepted=[])]
    out = samples.concat(tables)
    # every (class, N) tried, accepted or not: what the acceptance rates are read from
    out.update({f"tried_{k}": np.asarray([t[i] for t in tried], np.int64)
                for i, k in enumerate(("label", "param", "accepted", "proposals"))})
    return out


def set_d2c_fewshot(ctx: Context) -> dict:
    return _d2c_fewshot(ctx, seen=False)


def set_d2c_fewshot_seen(ctx: Context) -> dict:
    return _d2c_fewshot(ctx, seen=True)


def generate(cfg: dict, name: str, model: str | Path, data: str | Path, samples_npz: str | Path, device="auto",
             seconds: str | Path | None = None, guide: str | Path | None = None,
             autoencoder: str | Path | None = None) -> None:
    """Draw sample set `name` from `model` (and the set's other inputs, `stages.SampleSet.inputs`:
    the guide) and write it to `samples_npz`; the wall-clock seconds of each block go to `seconds`."""
    if name not in stages.SAMPLE_SETS:
        raise FgsdError(f"unknown sample set '{name}': choose one of {list(stages.SAMPLE_SETS)}")
    wanted = stages.SAMPLE_SETS[name].inputs
    inputs = {k: v for k, v in dict(guide=guide, autoencoder=autoencoder).items() if v is not None}
    if set(inputs) != set(wanted):
        raise FgsdError(f"sample set '{name}' takes the inputs {sorted(wanted) or 'model and data only'}, "
                        f"got {sorted(inputs)}")
    torch.manual_seed(cfg["seed"])
    ctx = Context(cfg, name, model, data, device, inputs)
    table = globals()[stages.SAMPLE_SETS[name].function](ctx)  # the function the table names
    samples.save(samples_npz, table)
    if seconds is not None:
        files.save_csv(seconds, pd.DataFrame(ctx.timings, columns=["block", "n_samples", "seconds",
                                                                   "seconds_per_sample"]))
    log.info("wrote %d samples of set '%s' to %s", len(table["images"]), name, samples_npz)

