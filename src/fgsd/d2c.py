"""D2C (Sinha, Song, Meng & Ermon 2021; BASELINES.md §2): few-shot conditional generation from a
contrastive autoencoder and a diffusion prior on its latents.

Three stages, as the official code trains them (its joint objective did not fit in memory):
1. `train_autoencoder`: a convolutional autoencoder (NVAE-style residual cells, GroupNorm, one x2
   down-sampling: 32x32 grey crops -> 4x16x16 latents) trained with a reconstruction loss plus
   MoCo-v2 InfoNCE on the flattened latents (momentum encoder, queue, temperature).
2. `train_prior`: the project's blind UNet on standardised latent images (a departure from D2C's
   t-conditioned VP UNet that reuses the tested denoiser, loss and VE DDIM; VE DDIM is VP DDIM
   under x_t = sqrt(a) x_sigma, BASELINES.md §2.5).
3. `rejection_sample`: from N labelled exemplars, a latent classifier r(c | z) (positives vs
   unlabelled latents), prior draws accepted with probability r, up to a cap on proposals.

Departures, stated: a Gaussian likelihood (summed squared error; the decoder returns the mean)
instead of a discretised logistic mixture; the contrastive weight is a param and must be > 0
(the released code multiplied it by 0.0 until a late fix).
"""
from __future__ import annotations

import copy
import logging
import math
import time

import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from . import checkpoints, files, network, stages
from .data import load_split
from .denoisers import denoising_loss
from .errors import FgsdError
from .network import UNet
from .network import psnr as image_psnr
from .runtime import autocast, generator, require_finite, resolve_device, to_float

log = logging.getLogger("fgsd")


class Cell(nn.Module):
    """NVAE's residual cell with GroupNorm: x + 0.1 (GN-SiLU-conv)x2 (x)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.body = nn.Sequential(nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                  nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x):
        return x + 0.1 * self.body(x)


class Autoencoder(nn.Module):
    """Deterministic encoder/decoder (D2C's latent has no sampling and no KL term)."""

    def __init__(self, channels: int = 1, width: int = 16, latent: int = 4, cells: int = 1, groups: int = 8):
        super().__init__()
        self.config = dict(channels=channels, width=width, latent=latent, cells=cells, groups=groups)
        w = width
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, w, 3, padding=1), *[Cell(w, groups) for _ in range(cells)],
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), *[Cell(2 * w, groups) for _ in range(cells)],
            nn.ELU(), nn.Conv2d(2 * w, 2 * w, 1), nn.ELU(), nn.Conv2d(2 * w, latent, 3, padding=1))
        self.decoder = nn.Sequential(
            nn.Conv2d(latent, 2 * w, 3, padding=1), *[Cell(2 * w, groups) for _ in range(cells)],
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(2 * w, w, 3, padding=1),
            *[Cell(w, groups) for _ in range(cells)], nn.SiLU(), nn.Conv2d(w, channels, 3, padding=1))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x - 0.5)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z) + 0.5


class Head(nn.Module):
    """MoCo-v2's projection of the flattened latent: Linear-ReLU-Linear, L2-normalised."""

    def __init__(self, dim: int, out: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, out))

    def forward(self, z):
        return F.normalize(self.net(z.flatten(1)), dim=1)


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo's InfoNCE: -log exp(q.k+/T) / (exp(q.k+/T) + sum_queue exp(q.n/T)), mean over the
    batch; q, k (B, d) and queue (K, d) L2-normalised, k and queue without gradient."""
    positive = (q * k).sum(1, keepdim=True)
    negative = q @ queue.T
    logits = torch.cat([positive, negative], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


def autoencoder_loss(net, head, key_enc, key_head, xq: torch.Tensor, xk: torch.Tensor, queue: torch.Tensor,
                     a: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stage 1's objective on two views of a batch: rec_weight x summed squared reconstruction
    error of the query view + nce_weight x InfoNCE against the key stream (no gradient; its
    output, float32 whatever the autocast, joins the queue). Returns (loss, rec, nce, keys)."""
    zq = net.encode(xq)
    rec = (net.decode(zq) - xq).pow(2).flatten(1).sum(1).mean()
    with torch.no_grad():
        k = key_head(key_enc(xk - 0.5)).float()
    nce = info_nce(head(zq), k, queue, a["temperature"])
    return a["rec_weight"] * rec + a["nce_weight"] * nce, rec, nce, k


def views(x: torch.Tensor, g: torch.Generator, min_scale: float, jitter: float) -> torch.Tensor:
    """One augmented view per crop, for grey textures: a random resized crop (area fraction in
    [min_scale, 1]), brightness and contrast jitter (strength `jitter`, with probability 0.8) and
    h/v flips; no hue or colour operations."""
    n = len(x)
    side = torch.sqrt(min_scale + (1 - min_scale) * torch.rand(n, generator=g))
    flips = torch.where(torch.rand(n, 2, generator=g) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = flips[:, 0] * side, flips[:, 1] * side
    theta[:, :, 2] = (1 - side)[:, None] * (2 * torch.rand(n, 2, generator=g) - 1)
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    on = (torch.rand(n, generator=g) < 0.8).float()
    bright = 1 + on * jitter * (2 * torch.rand(n, generator=g) - 1)
    contrast = 1 + on * jitter * (2 * torch.rand(n, generator=g) - 1)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * contrast.view(-1, 1, 1, 1).to(x.device) + mean * bright.view(-1, 1, 1, 1).to(x.device)
    return out.clamp(0, 1)


def rejection_sample(accept_prob: torch.Tensor, n_wanted: int, g: torch.Generator) -> tuple[torch.Tensor, int]:
    """Rejection sampling over a sequence of i.i.d. prior proposals with acceptance
    probabilities `accept_prob` (the cap is its length): proposal i is kept when u_i < p_i, in
    order, until `n_wanted` are kept. Returns the kept indices and the proposals spent.
    Accepting with p = r(c | z) = p(c | z) under the prior draws exactly p(z | c), at rate pi_c."""
    u = torch.rand(len(accept_prob), generator=g)
    kept = torch.nonzero(u < accept_prob.cpu()).flatten()
    if len(kept) >= n_wanted:
        return kept[:n_wanted], int(kept[n_wanted - 1]) + 1
    return kept, len(accept_prob)


def linear_model(x: torch.Tensor, targets: torch.Tensor, l2: float, loss_fn, out_shape: tuple = (),
                 steps: int = 200):
    """An L2-regularised linear model on standardised features, fitted by L-BFGS: returns
    z -> logits. The linear probe and D2C's latent classifier are both this."""
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    xs = (x - mean) / std
    w = torch.zeros((x.shape[1], *out_shape), dtype=x.dtype, requires_grad=True)
    b = torch.zeros(out_shape, dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_fn(xs @ w + b, targets) + 0.5 * l2 * w.pow(2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    w, b = w.detach(), b.detach()
    return lambda z: ((z.flatten(1).to(x.dtype) - mean) / std) @ w + b


def fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float):
    """Binary logistic regression (y in {0, 1}): returns z -> p(y = 1 | z) (D2C's latent
    classifier r(c | z))."""
    logits = linear_model(x, y.to(x.dtype), l2, F.binary_cross_entropy_with_logits)
    return lambda z: torch.sigmoid(logits(z))


def softmax_probe(x: torch.Tensor, y: torch.Tensor, l2: float):
    """Multinomial logistic regression (the linear probe of D2C's representation claim):
    returns z -> predicted labels."""
    logits = linear_model(x, y, l2, F.cross_entropy, (int(y.max()) + 1,))
    return lambda z: logits(z).argmax(1)


LATENT_CENTRE, LATENT_SCALE = 0.5, 0.2  # latent image = 0.5 + 0.2 z_std: sigma in (0, 1] spans 5 latent stds


def to_latent_image(z: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return LATENT_CENTRE + LATENT_SCALE * (z - mean) / std


def from_latent_image(ell: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (ell - LATENT_CENTRE) / LATENT_SCALE * std + mean


def latent_stats(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std over (N, H, W), as D2C's save_latents.py."""
    return z.mean(dim=(0, 2, 3), keepdim=True)[0], z.std(dim=(0, 2, 3), keepdim=True)[0]


# --- stage 1: the contrastive autoencoder -------------------------------------------------------
def training_crops(data, protocol: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The crops stages 1 and 2 may see: the seen classes' training crops (strict, as the FGSD
    mixture model), plus the held-out classes' region-0 crops without labels (transductive,
    D2C's own setting: an upper bound)."""
    train = load_split(data, "train")
    x, y = to_float(train["images"]), torch.from_numpy(train["labels"])
    if protocol == "transductive":
        unseen = load_split(data, "unseen")
        keep = unseen["region"] == 0
        x = torch.cat([x, to_float(unseen["images"][keep])])
        y = torch.cat([y, torch.full((int(keep.sum()),), -1, dtype=y.dtype)])
    return x, y


def model_seed(cfg: dict) -> int:
    """The seed D2C's two trainings draw from: `d2c.seed`, or the pipeline's `seed` when null. A
    separate key, so the baseline's seed spread is measured without retraining anything else (the
    exemplars, proposals and held-out noise keep the pipeline's seed)."""
    return cfg["seed"] if cfg["d2c"]["seed"] is None else cfg["d2c"]["seed"]


def train_autoencoder(cfg: dict, data, model, train_log, metrics, state, device="auto",
                      interrupt_after: int | None = None) -> dict:
    """Stage 1: reconstruction + MoCo-v2 InfoNCE on the flattened latents; held-out
    reconstruction PSNR and the InfoNCE loss logged; the latents' linear probe against one on
    pixels (D2C's representation claim) in the metrics."""


    a, seed = cfg["d2c"], model_seed(cfg)
    if a["nce_weight"] <= 0:
        raise FgsdError("parameter 'd2c.nce_weight' must be > 0: without it this is not D2C (the released code "
                        "multiplied the contrastive term by 0.0 until a late fix)")
    dev = resolve_device(device)
    x, _ = training_crops(data, a["protocol"])
    test = load_split(data, "test")
    xt = to_float(test["images"])
    torch.manual_seed(seed)
    net = Autoencoder(x.shape[1], a["width"], a["latent_channels"], a["cells"], a["groups"]).to(dev)
    dim = a["latent_channels"] * (x.shape[-1] // 2) ** 2
    head = Head(dim, a["proj_dim"]).to(dev)
    key_enc, key_head = copy.deepcopy(net.encoder).requires_grad_(False), copy.deepcopy(head).requires_grad_(False)
    queue = F.normalize(torch.randn(a["queue"], a["proj_dim"], generator=generator(seed, 51)), dim=1).to(dev)
    opt = torch.optim.AdamW([*net.parameters(), *head.parameters()], lr=a["ae_lr"], weight_decay=a["ae_weight_decay"])
    keeper = checkpoints.Resumable(state, "d2c_autoencoder", cfg, stages.stage_keys("d2c_autoencoder"), data)
    step, rows, sums = 0, [], [0.0, 0.0, 0]
    saved = keeper.load(dev)
    if saved:
        net.load_state_dict(saved["net"]), head.load_state_dict(saved["head"]), opt.load_state_dict(saved["opt"])
        key_enc.load_state_dict(saved["key_enc"]), key_head.load_state_dict(saved["key_head"])
        queue, step, rows, sums = saved["queue"].to(dev), saved["step"], saved["rows"], saved["sums"]
    first, t0, steps, batch = step, time.time(), a["ae_steps"], a["ae_batch"]
    precision, float_format = autocast(dev, cfg["train"]["precision"], "the D2C autoencoder")
    log.info("D2C stage 1 (%s): autoencoder %d params, %d crops, latent %s, %d steps of %d on %s", a["protocol"],
             sum(p.numel() for p in net.parameters()), len(x), (a["latent_channels"], x.shape[-1] // 2,
                                                                 x.shape[-1] // 2), steps, batch, dev)
    bar = tqdm(total=steps, initial=step, desc="d2c autoencoder", unit="step", mininterval=2, dynamic_ncols=True)
    while step < steps:
        g = generator(seed, 50, step)
        idx = torch.randint(len(x), (batch,), generator=g)
        xq = views(x[idx], g, a["min_crop_scale"], a["jitter"]).to(dev)
        xk = views(x[idx], g, a["min_crop_scale"], a["jitter"]).to(dev)
        with torch.no_grad():
            for ek, eq in ((key_enc, net.encoder), (key_head, head)):
                for pk, pq in zip(ek.parameters(), eq.parameters()):
                    pk.lerp_(pq, 1 - a["momentum"])
        with precision:  # train.precision: bf16 autocasts the forward passes and loss alone
            loss, rec, nce, k = autoencoder_loss(net, head, key_enc, key_head, xq, xk, queue, a)
        require_finite(loss, "the D2C autoencoder", step + 1, a["ae_lr"], "d2c.ae_lr", keeper.last_good())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        queue = torch.cat([k, queue])[:a["queue"]]
        step += 1
        sums = [sums[0] + rec.item(), sums[1] + nce.item(), sums[2] + 1]
        bar.update(1)
        if step % a["eval_every"] == 0 or step == steps:
            rows.append(dict(step=step, reconstruction=sums[0] / sums[2], info_nce=sums[1] / sums[2],
                             test_psnr=float(reconstruct_psnr(net, xt, dev).mean())))
            sums = [0.0, 0.0, 0]
            log.info("step %d  reconstruction %.3g  InfoNCE %.3f  held-out PSNR %.2f dB", step,
                     rows[-1]["reconstruction"], rows[-1]["info_nce"], rows[-1]["test_psnr"])
        if step % a["checkpoint_every"] == 0 and step < steps:
            keeper.save(step=step, net=net.state_dict(), head=head.state_dict(), opt=opt.state_dict(),
                        key_enc=key_enc.state_dict(), key_head=key_head.state_dict(), queue=queue.cpu(), rows=rows,
                        sums=sums)
            if interrupt_after is not None and step >= interrupt_after:
                raise InterruptedError(f"interrupted after step {step}")
    bar.close()
    log.info("trained the D2C autoencoder: computed steps %d to %d of %d in %.1f s", first + 1, steps, steps,
             time.time() - t0)
    net.eval()
    probe = linear_probes(net, data, a["probe_l2"], dev)
    log.info("held-out reconstruction %.2f dB; linear probe accuracy: latents %.3f, pixels %.3f", rows[-1]["test_psnr"],
             probe["latent_probe_accuracy"], probe["pixel_probe_accuracy"])
    checkpoints.save(model, "d2c_autoencoder", net, protocol=a["protocol"], image_shape=list(x.shape[1:]))
    files.save_csv(train_log, pd.DataFrame(rows))
    files.save_json(metrics, dict(steps=steps, n_train=len(x), protocol=a["protocol"],
                                  test_psnr=rows[-1]["test_psnr"], info_nce=rows[-1]["info_nce"], **probe,
                                  training_precision=float_format))
    keeper.done()
    return rows[-1]


@torch.no_grad()
def encode(net: Autoencoder, x: torch.Tensor, device, batch: int = 256) -> torch.Tensor:
    return torch.cat([net.encode(x[i:i + batch].to(device)).cpu() for i in range(0, len(x), batch)])


@torch.no_grad()
def decode(net: Autoencoder, z: torch.Tensor, device, batch: int = 256) -> torch.Tensor:
    return torch.cat([net.decode(z[i:i + batch].to(device)).cpu() for i in range(0, len(z), batch)])


def reconstruct_psnr(net: Autoencoder, x: torch.Tensor, device) -> torch.Tensor:
    was = net.training
    net.eval()
    out = image_psnr(decode(net, encode(net, x, device), device).clamp(0, 1), x)
    net.train(was)
    return out


def linear_probes(net: Autoencoder, data, l2: float, device) -> dict:
    """Test accuracy of a linear probe on the seen classes, trained on the training crops'
    latents and, for comparison, on their pixels."""
    train, test = load_split(data, "train"), load_split(data, "test")
    x, y = to_float(train["images"]), torch.from_numpy(train["labels"]).long()
    xt, yt = to_float(test["images"]), torch.from_numpy(test["labels"]).long()
    out = {}
    for name, f, ft in (("latent", encode(net, x, device), encode(net, xt, device)), ("pixel", x, xt)):
        predict = softmax_probe(f.flatten(1), y, l2)
        out[f"{name}_probe_accuracy"] = float((predict(ft) == yt).float().mean())
    out["probe_n_train"], out["probe_n_test"] = len(y), len(yt)
    return out


# --- stage 2: the latent diffusion prior -----------------------------------------------------------
def train_prior(cfg: dict, data, autoencoder, model, train_log, metrics, state, device="auto") -> dict:
    """Stage 2: encode the crops and their mirror images (as D2C's save_latents.py), standardise
    per channel (the statistics are saved with the model), and train the project's blind UNet
    on the latent images 0.5 + 0.2 z_std with the denoisers' loss and sigma law."""


    a, seed = cfg["d2c"], model_seed(cfg)
    dev = resolve_device(device)
    ae = load_autoencoder(autoencoder, dev)
    x, _ = training_crops(data, a["protocol"])
    z = encode(ae, torch.cat([x, x.flip(-1)]), dev)
    mean, std = latent_stats(z)
    ell = to_latent_image(z, mean, std)
    held = ell[torch.randperm(len(ell), generator=generator(cfg["seed"], 53))[:256]]  # the same for every d2c.seed
    torch.manual_seed(seed)
    net = network.UNet(channels=ell.shape[1], widths=a["prior_widths"], output="gated").to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=a["prior_lr"])
    keeper = checkpoints.Resumable(state, "d2c_prior", cfg, stages.stage_keys("d2c_prior"), data,
                                   autoencoder=files.sha256(autoencoder))
    step, rows, loss_sum, n = 0, [], 0.0, 0
    saved = keeper.load(dev)
    if saved:
        net.load_state_dict(saved["net"]), opt.load_state_dict(saved["opt"])
        step, rows, loss_sum, n = saved["step"], saved["rows"], saved["loss_sum"], saved["n"]
    steps, batch, t0, first = a["prior_steps"], a["prior_batch"], time.time(), step
    precision, float_format = autocast(dev, cfg["train"]["precision"], "the D2C prior")
    log.info("D2C stage 2: prior UNet %d params on %d latent images %s, %d steps of %d on %s",
             network.n_params(net), len(ell), tuple(ell.shape[1:]), steps, batch, dev)
    bar = tqdm(total=steps, initial=step, desc="d2c prior", unit="step", mininterval=2, dynamic_ncols=True)
    while step < steps:
        g = generator(seed, 52, step)
        idx = torch.randint(len(ell), (batch,), generator=g)
        lr = a["prior_lr"] * 0.5 * (1 + math.cos(math.pi * step / steps))
        for group in opt.param_groups:
            group["lr"] = lr
        with precision:  # train.precision: bf16 autocasts the forward pass and loss alone
            loss = denoising_loss(net, ell[idx].to(dev), None, g, cfg["sampling"]["sigma0"])  # where its DDIM starts
        require_finite(loss, "the D2C prior", step + 1, lr, "d2c.prior_lr", keeper.last_good())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step, loss_sum, n = step + 1, loss_sum + loss.item(), n + 1
        bar.update(1)
        if step % a["eval_every"] == 0 or step == steps:
            rows.append(dict(step=step, lr=lr, train_loss=loss_sum / n, **held_out_psnr(net, held, dev, cfg["seed"])))
            loss_sum, n = 0.0, 0
            log.info("step %d  loss %.4g  held-out latent PSNR at sigma 0.1/0.5: %.2f / %.2f dB", step,
                     rows[-1]["train_loss"], rows[-1]["psnr@0.1"], rows[-1]["psnr@0.5"])
        if step % a["checkpoint_every"] == 0 and step < steps:
            keeper.save(step=step, net=net.state_dict(), opt=opt.state_dict(), rows=rows, loss_sum=loss_sum, n=n)
    bar.close()
    log.info("trained the D2C prior: computed steps %d to %d of %d in %.1f s", first + 1, steps, steps, time.time() - t0)
    net.eval()
    checkpoints.save(model, "d2c_prior", net, latent_mean=mean, latent_std=std, protocol=a["protocol"],
                     latent_shape=list(ell.shape[1:]))
    files.save_csv(train_log, pd.DataFrame(rows))
    files.save_json(metrics, dict(steps=steps, n_latents=len(ell), protocol=a["protocol"], final=rows[-1],
                                  training_precision=float_format))
    keeper.done()
    return rows[-1]


@torch.no_grad()
def held_out_psnr(net, ell: torch.Tensor, device, seed: int) -> dict:
    """Denoising PSNR of the prior on fixed latent images and noise (in latent-image units)."""
    net.eval()
    out = {}
    for s in (0.1, 0.5):
        noise = torch.randn(ell.shape, generator=generator(seed, 54, int(s * 100)))
        clean = ell.to(device)
        out[f"psnr@{s}"] = float(image_psnr(net(clean + s * noise.to(device), None), clean).mean())
    net.train()
    return out


def load_autoencoder(path, device="cpu") -> Autoencoder:
    net, _ = checkpoints.load(path, Autoencoder, ("d2c_autoencoder",), device)
    return net.requires_grad_(False)


def load_prior(path, device="cpu"):
    """(UNet, latent mean, latent std) of a trained prior."""
    net, meta = checkpoints.load(path, UNet, ("d2c_prior",), device)
    return net.requires_grad_(False), meta["latent_mean"], meta["latent_std"]
