"""ADM-G's guide (Dhariwal & Nichol 2021; BASELINES.md §1): a noise-aware classifier
p(c | y, sigma) whose gradient steers the unconditional (mixture) denoiser toward a class.

The network follows openai/guided-diffusion's `EncoderUNetModel` at small scale: the down half
of a UNet of residual blocks, the noise level entering every block by adaptive group norm
(scale-shift) from a sinusoidal embedding of c_noise(sigma), self-attention at the coarsest
level and in the middle, and an attention-pool head. Its input is c_in(sigma) (y - 0.5), EDM's
scaling (the VP scaling for unit-variance data). It is trained on the seen classes only, with
cross-entropy on crops noised by the denoisers' own sigma law, and it is never the judge of
samples (evaluation keeps the independent clean classifier).
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from . import checkpoints, files, stages
from .data import load_split
from .denoisers import draw_sigma
from .errors import FgsdError
from .runtime import autocast, generator, require_finite, resolve_device, to_float

log = logging.getLogger("fgsd")

SIGMA_FLOOR = 1e-3      # c_noise treats lower noise as this (the training law reaches 0)
BANDS = (0.0, 0.05, 0.2, 0.5, 1.0)  # sigma bands of the accuracy log (the top band is open)


def c_noise(sigma: torch.Tensor) -> torch.Tensor:
    """The noise level as the embedding sees it: log sigma mapped linearly so that sigma 1e-3..1
    spans 0..1000, the range of ADM's integer timesteps (its embedding's periods suit it)."""
    return 1000 * (torch.log(sigma.clamp_min(SIGMA_FLOOR)) / math.log(1 / SIGMA_FLOOR) + 1)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of a real-valued timestep (ADM's, cos then sin)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    """GN-SiLU-conv, then AdaGN: GN(h)(1 + scale) + shift from the embedding, SiLU, zero-init conv;
    a 1x1 skip when the width changes; `down` average-pools both paths (ADM's resblock_updown)."""

    def __init__(self, c_in: int, c_out: int, emb: int, groups: int, down: bool = False):
        super().__init__()
        self.in_norm, self.in_conv = nn.GroupNorm(groups, c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb, 2 * c_out)
        self.out_norm, self.out_conv = nn.GroupNorm(groups, c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight), nn.init.zeros_(self.out_conv.bias)
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)
        self.down = down

    def forward(self, x, emb):
        h = F.silu(self.in_norm(x))
        if self.down:
            h, x = F.avg_pool2d(h, 2), F.avg_pool2d(x, 2)
        h = self.in_conv(h)
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.out_conv(F.silu(self.out_norm(h) * (1 + scale) + shift))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over positions, residual, zero-init output projection."""

    def __init__(self, channels: int, head_channels: int, groups: int):
        super().__init__()
        self.heads = max(channels // head_channels, 1)
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv, self.proj = nn.Conv1d(channels, 3 * channels, 1), nn.Conv1d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight), nn.init.zeros_(self.proj.bias)

    def forward(self, x, emb=None):
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x).flatten(2))
        return x + self.proj(attend(qkv, self.heads)).view(b, c, h, w)


def attend(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, 3C, T) -> (B, C, T): softmax(q k^T / sqrt(d)) v per head."""
    b, c3, t = qkv.shape
    q, k, v = qkv.view(b * heads, c3 // heads, t).chunk(3, dim=1)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2).reshape(b, -1, t)


class AttentionPool(nn.Module):
    """CLIP's attention pool: the spatial-mean token attends over all positions (with a learned
    positional embedding); its output, projected, is the logits."""

    def __init__(self, size: int, channels: int, head_channels: int, n_out: int):
        super().__init__()
        self.pos = nn.Parameter(torch.randn(channels, size * size + 1) / channels ** 0.5)
        self.qkv, self.out = nn.Conv1d(channels, 3 * channels, 1), nn.Conv1d(channels, n_out, 1)
        self.heads = max(channels // head_channels, 1)

    def forward(self, x):
        x = x.flatten(2)
        x = torch.cat([x.mean(dim=2, keepdim=True), x], dim=2) + self.pos[None]
        return self.out(attend(self.qkv(x), self.heads))[:, :, 0]


class Guide(nn.Module):
    """EncoderUNet: stem conv, per level `depth` ResBlocks (attention at the coarsest level)
    joined by down-ResBlocks, middle ResBlock-Attention-ResBlock, GN-SiLU-attention pool."""

    def __init__(self, channels: int, n_classes: int, image_size: int, width: int = 16,
                 channel_mult=(1, 2, 2), depth: int = 1, head_channels: int = 16, groups: int = 8,
                 sigma_data: float = 0.25):
        super().__init__()
        self.config = dict(channels=channels, n_classes=n_classes, image_size=image_size, width=width,
                           channel_mult=list(channel_mult), depth=depth, head_channels=head_channels,
                           groups=groups, sigma_data=sigma_data)
        emb = 4 * width
        self.width, self.sigma_data = width, sigma_data
        self.embed = nn.Sequential(nn.Linear(width, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.stem = nn.Conv2d(channels, width, 3, padding=1)
        self.blocks = nn.ModuleList()
        c, size = width, image_size
        for level, mult in enumerate(channel_mult):
            for _ in range(depth):
                self.blocks.append(ResBlock(c, width * mult, emb, groups))
                c = width * mult
                if level == len(channel_mult) - 1:
                    self.blocks.append(AttentionBlock(c, head_channels, groups))
            if level < len(channel_mult) - 1:
                self.blocks.append(ResBlock(c, c, emb, groups, down=True))
                size //= 2
        self.middle = nn.ModuleList([ResBlock(c, c, emb, groups), AttentionBlock(c, head_channels, groups),
                                     ResBlock(c, c, emb, groups)])
        self.head_norm = nn.GroupNorm(groups, c)
        self.pool = AttentionPool(size, c, head_channels, n_classes)

    def forward(self, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Logits of p(c | y, sigma) for noisy images y in [0, 1] + noise, sigma (B,)."""
        sigma = sigma.to(y.dtype).view(-1)
        c_in = 1 / torch.sqrt(self.sigma_data ** 2 + sigma ** 2)
        h = self.stem(c_in.view(-1, 1, 1, 1) * (y - 0.5))
        emb = self.embed(timestep_embedding(c_noise(sigma), self.width).to(y.dtype))
        for block in [*self.blocks, *self.middle]:
            h = block(h, emb)
        return self.pool(F.silu(self.head_norm(h)))


def augment(x: torch.Tensor, g: torch.Generator, max_zoom: float) -> torch.Tensor:
    """ADM's random crop for crops already cut: zoom each crop by a factor in [1, max_zoom] and take
    a random window of the original size (bilinear), then flip horizontally and vertically at
    random. Textures keep their class under all of these."""
    n = len(x)
    zoom = 1 + (max_zoom - 1) * torch.rand(n, generator=g)
    shift = (1 - 1 / zoom)[:, None] * (2 * torch.rand(n, 2, generator=g) - 1)
    flips = torch.where(torch.rand(n, 2, generator=g) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = flips[:, 0] / zoom, flips[:, 1] / zoom
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


class NoisyAccuracy:
    """Held-out accuracy per sigma band on fixed test crops, noise and noise levels (the log
    guided-diffusion users ask for: a guide near chance at every sigma is a failed run)."""

    def __init__(self, x: torch.Tensor, labels: torch.Tensor, seed: int, sigma_max: float, device):
        g = generator(seed, 41)
        self.sigma = draw_sigma(len(x), g, sigma_max)
        self.noisy = x + self.sigma.view(-1, 1, 1, 1) * torch.randn(x.shape, generator=g)
        self.labels, self.device = labels, device

    @torch.no_grad()
    def __call__(self, model: Guide) -> dict[str, float]:
        model.eval()
        pred = torch.cat([model(self.noisy[i:i + 256].to(self.device), self.sigma[i:i + 256].to(self.device))
                          .argmax(1).cpu() for i in range(0, len(self.noisy), 256)])
        model.train()
        right = (pred == self.labels).float()
        out = {"accuracy": float(right.mean())}
        for lo, hi in zip(BANDS[:-1], BANDS[1:]):
            k = (self.sigma >= lo) & ((self.sigma < hi) if hi < BANDS[-1] else torch.ones_like(right, dtype=bool))
            out[band_name(lo, hi)] = float(right[k].mean()) if k.any() else float("nan")
        return out


def band_name(lo: float, hi: float) -> str:
    return f"accuracy_sigma_{lo:g}-{hi:g}" if hi < BANDS[-1] else f"accuracy_sigma_{lo:g}+"


def learning_rate(lr: float, step: int, steps: int) -> float:
    """ADM's anneal_lr: linear from lr to 0 over the run."""
    return lr * (1 - step / steps)


def train_guide(cfg: dict, data: str | Path, model: str | Path, train_log: str | Path, metrics: str | Path,
                state: str | Path, device="auto", interrupt_after: int | None = None) -> dict:
    """Train the guide on noised crops of the seen classes; resumable from `state`/guide.pt."""
    gcfg, seed = cfg["guide"], cfg["seed"]
    sigma_max = cfg["sampling"]["sigma0"]  # the samplers it guides start there: it never sees more noise
    dev = resolve_device(device)
    train, test = load_split(data, "train"), load_split(data, "test")
    x, y = to_float(train["images"]), torch.from_numpy(train["labels"])
    classes = [str(c) for c in train["classes"]][:int(y.max()) + 1]
    steps, batch = gcfg["steps"], gcfg["batch_size"]
    torch.manual_seed(seed)
    net = Guide(x.shape[1], len(classes), x.shape[-1], gcfg["width"], gcfg["channel_mult"], gcfg["depth"],
                gcfg["head_channels"], gcfg["groups"], cfg["train"]["sigma_data"]).to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=gcfg["lr"], weight_decay=gcfg["weight_decay"])
    held_out = NoisyAccuracy(to_float(test["images"]), torch.from_numpy(test["labels"]), seed, sigma_max, dev)
    keeper = checkpoints.Resumable(state, "guide", cfg, stages.stage_keys("guide"), data)
    step, rows, loss_sum, right, seen = 0, [], 0.0, 0.0, 0
    saved = keeper.load(dev)
    if saved:
        net.load_state_dict(saved["model"]), opt.load_state_dict(saved["optimizer"])
        step, rows, loss_sum, right, seen = (saved[k] for k in ("step", "rows", "loss_sum", "right", "seen"))
    first, t0 = step, time.time()
    precision, float_format = autocast(dev, cfg["train"]["precision"], "the guide")
    log.info("training the guide: %d params, %d crops of %d classes, %d steps of %d on %s",
             sum(p.numel() for p in net.parameters()), len(x), len(classes), steps, batch, dev)
    net.train()
    bar = tqdm(total=steps, initial=step, desc="guide", unit="step", mininterval=2, dynamic_ncols=True)
    while step < steps:
        g = generator(seed, 40, step)
        idx = torch.randint(len(x), (batch,), generator=g)
        sigma = draw_sigma(batch, g, sigma_max)
        clean = augment(x[idx], g, gcfg["max_zoom"])
        noisy = clean + sigma.view(-1, 1, 1, 1) * torch.randn(clean.shape, generator=g)
        with precision:  # train.precision: bf16 autocasts the forward pass and loss alone
            logits = net(noisy.to(dev), sigma.to(dev))
            loss = F.cross_entropy(logits, y[idx].to(dev))
        lr = learning_rate(gcfg["lr"], step, steps)
        require_finite(loss, "the guide", step + 1, lr, "guide.lr", keeper.last_good())
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        loss_sum += loss.item()
        right += float((logits.argmax(1).cpu() == y[idx]).float().sum())
        seen += batch
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        if step % gcfg["eval_every"] == 0 or step == steps:
            rows.append(dict(step=step, lr=lr, train_loss=loss_sum / (seen / batch), train_accuracy=right / seen,
                             **held_out(net)))
            loss_sum, right, seen = 0.0, 0.0, 0
            log.info("step %d  loss %.3f  held-out noisy accuracy %.3f", step, rows[-1]["train_loss"],
                     rows[-1]["accuracy"])
        if step % gcfg["checkpoint_every"] == 0 and step < steps:
            keeper.save(step=step, model=net.state_dict(), optimizer=opt.state_dict(), rows=rows, loss_sum=loss_sum,
                        right=right, seen=seen)
            if interrupt_after is not None and step >= interrupt_after:
                raise InterruptedError(f"interrupted after step {step}")
    bar.close()
    log.info("trained the guide: computed steps %d to %d of %d in %.1f s", first + 1, steps, steps, time.time() - t0)
    final = rows[-1]
    if final["accuracy"] <= 1.5 / len(classes):
        raise FgsdError(f"the guide's held-out noisy accuracy is {final['accuracy']:.3f}, no better than chance "
                        f"(1/{len(classes)}); no model was written; lower guide.lr or train longer")
    net.eval()
    checkpoints.save(model, "guide", net, classes=classes, sigma_max=sigma_max)
    files.save_csv(train_log, pd.DataFrame(rows))
    files.save_json(metrics, dict(steps=steps, n_train=len(x), n_test=len(held_out.labels), n_classes=len(classes),
                                  classes=classes, final={k: v for k, v in final.items() if k != "lr"},
                                  training_precision=float_format))
    keeper.done()
    return final


def load_guide(path: str | Path, device="cpu") -> tuple[Guide, list[str]]:
    model, meta = checkpoints.load(path, Guide, ("guide",), device)
    model.requires_grad_(False)
    return model, meta["classes"]


def batched(model: Guide, batch: int = 256):
    """The guide as `logits(y, sigma)`, in chunks of `batch` (gradients flow through)."""
    def logits(y, sigma):
        return torch.cat([model(y[i:i + batch], sigma[i:i + batch]) for i in range(0, len(y), batch)])
    return logits


def band_table(train_log: pd.DataFrame) -> dict[str, float]:
    """The last logged accuracy per sigma band (for the summary and the figure)."""
    last = train_log.iloc[-1]
    return {c: float(last[c]) for c in train_log.columns if c.startswith("accuracy")
            and np.isfinite(last[c])}
