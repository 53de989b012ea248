"""Blind UNet denoiser (METHOD.md §3.1) and its feature-guided variant (§2.3, §3.3).

One class serves the mixture, single-class and conditional models. phi(x) is the vector of
spatial channel means at block outputs (after each block's last ReLU). The conditional model
replaces the channel means of matched blocks with w * phi_y (replacement form, §2.3):

    a~(u) = a(u) - mean_u a + w * phi_y

or moves them by w towards phi_y (shift form): a~(u) = a(u) + w * (phi_y - mean_u a), which lets
a channel learn to keep its own mean (w -> 0) where the crop knows it better than the class does.
The two coincide at w = 1. phi_y comes from a conditioner stream through the same, unmodified weights.
"""
from __future__ import annotations

import torch
from torch import nn

BLOCKS = ("enc1", "enc2", "enc3", "mid", "dec3", "dec2", "dec1")  # every block with an output
OUTPUTS = ("residual", "clean", "gated", "gated_mean")  # what the last conv predicts: the noise, the clean
# image, or a clean estimate a and a per-pixel gate g with x^ = g y + (1 - g) a (a learned skip:
# residual-like at low noise, clean-image-like at high noise, still a function of y alone);
# gated_mean: the same with a relative to the noisy crop's mean (a = 0, g = 0 is the trivial denoiser)
MATCHINGS = ("replace", "shift")  # the two forms of METHOD.md §2.3
CONDITIONAL_CONFIG = ("conditional", "match", "matching")  # config keys of the conditional model alone
TAPS = BLOCKS[:6]  # phi layers; dec1 (last decoder block) feeds the output conv and is excluded


class ScaleNorm(nn.Module):
    """'LayerNorm' of UNet_flex: divide by the per-sample std over (C,H,W), times a learned
    per-channel gain; no mean subtraction and no bias (§3.1)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        gain = torch.randn(channels) * (2 / (9 * 64))
        self.gain = nn.Parameter(gain.clamp(-0.025, 0.025))
        self.eps = eps

    def forward(self, x):
        std = x.var(dim=(1, 2, 3), keepdim=True, unbiased=False).sqrt()
        return x / (std + self.eps) * self.gain[None, :, None, None]


def conv_stack(c_in: int, c_out: int, n: int, bias: bool, first_norm: bool = True) -> nn.Sequential:
    """n x [Conv3x3 -> Norm -> ReLU]; the first conv maps c_in -> c_out."""
    layers: list[nn.Module] = []
    for i in range(n):
        layers.append(nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=bias))
        if i > 0 or first_norm:
            layers.append(ScaleNorm(c_out))
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """3-level blind UNet (UNet_flex). `conditional=True` adds one learned weight per channel at
    every block output (init 1) and matches the means of the blocks listed in `match`, in the
    form `matching` names."""

    def __init__(self, channels=1, widths=(16, 32, 64, 128), enc_convs=(2, 2, 2), mid_convs=3,
                 dec_convs=(2, 2, 2), output="residual", bias=True, upsample_bias=True,
                 conditional=False, match=("mid",), matching="replace"):
        super().__init__()
        k = list(widths)
        self.config = dict(channels=channels, widths=k, enc_convs=list(enc_convs), mid_convs=mid_convs,
                           dec_convs=list(dec_convs), output=output, bias=bias,
                           upsample_bias=upsample_bias, conditional=conditional, match=list(match), matching=matching)
        if output not in OUTPUTS:
            raise ValueError(f"unknown output '{output}'; choose from {OUTPUTS}")
        self.output = output
        self.enc = nn.ModuleList([conv_stack(channels if b == 0 else k[b - 1], k[b], enc_convs[b], bias,
                                             first_norm=b > 0) for b in range(3)])
        self.pool = nn.AvgPool2d(2, 2)
        self.mid = conv_stack(k[2], k[3], mid_convs, bias)
        self.up = nn.ModuleList([nn.ConvTranspose2d(k[b + 1], k[b], 2, stride=2, bias=upsample_bias and b > 0)
                                 for b in range(3)])
        self.dec = nn.ModuleList([conv_stack(2 * k[b], k[b], dec_convs[b] - (b == 0), bias) for b in range(3)])
        self.final = nn.Conv2d(k[0], channels * (2 if output.startswith("gated") else 1), 3, padding=1, bias=bias)
        self.widths = dict(zip(BLOCKS, [k[0], k[1], k[2], k[3], k[2], k[1], k[0]]))
        unknown = set(match) - set(BLOCKS)
        if unknown:
            raise ValueError(f"unknown blocks to match: {sorted(unknown)}; choose from {BLOCKS}")
        if matching not in MATCHINGS:
            raise ValueError(f"unknown matching '{matching}'; choose from {MATCHINGS}")
        self.matching = matching
        self.match = tuple(b for b in BLOCKS if b in match) if conditional else ()
        self.match_weight = nn.ParameterDict(
            {b: nn.Parameter(torch.ones(self.widths[b])) for b in BLOCKS}) if conditional else None
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    # --- the two streams -------------------------------------------------------------------
    def _block(self, name, h, cond, record):
        """Record the block's channel means, then (if matched) replace them with w * phi_y, or
        move them by w towards phi_y."""
        if record is not None:
            record[name] = h.mean(dim=(2, 3))
        if cond is not None and name in self.match:
            w, own = self.match_weight[name], h.mean(dim=(2, 3), keepdim=True)  # (K,), (B, K, 1, 1)
            if self.matching == "replace":
                h = h - own + (w * cond[name])[:, :, None, None]  # cond: (B or 1, K)
            else:
                h = h + w[:, None, None] * (cond[name][:, :, None, None] - own)
        return h

    def _run(self, x, cond=None, record=None, upto=None):
        """Forward pass; stops after block `upto` (returns None) when only means are needed."""
        skips, h = [], x
        for b in range(3):
            name = f"enc{b + 1}"
            h = self._block(name, self.enc[b](h), cond, record)
            if upto == name:
                return None
            skips.append(h)
            h = self.pool(h)
        h = self._block("mid", self.mid(h), cond, record)
        if upto == "mid":
            return None
        for b in (2, 1, 0):
            name = f"dec{b + 1}"
            h = torch.cat([self.up[b](h), skips[b]], dim=1)
            h = self._block(name, self.dec[b](h), cond, record)
            if upto == name:
                return None
        out = self.final(h)
        if self.output == "residual":
            return x - out
        if self.output == "clean":
            return out
        estimate, gate = out.chunk(2, dim=1)  # gated: x^ = g y + (1 - g) a, g = sigmoid(gate) per pixel
        g = torch.sigmoid(gate)
        if self.output == "gated_mean":
            estimate = estimate + x.mean(dim=(2, 3), keepdim=True)
        return g * x + (1 - g) * estimate

    def block_means(self, x, upto: str | None = None) -> dict[str, torch.Tensor]:
        """Raw channel means of every block of the unmodified network (the conditioner stream)."""
        record: dict[str, torch.Tensor] = {}
        self._run(x, record=record, upto=upto)
        return record

    def condition(self, exemplars: torch.Tensor, average: bool = False) -> dict[str, torch.Tensor]:
        """phi_y of matched blocks from exemplar images: per exemplar, or their centroid."""
        if not self.match:
            raise ValueError("this model is not conditional: it has no matched blocks")
        deepest = max(self.match, key=BLOCKS.index)
        means = self.block_means(exemplars, upto=deepest)
        return {b: (means[b].mean(0, keepdim=True) if average else means[b]) for b in self.match}

    def forward(self, x, cond=None, rows=None):
        """Denoise x. cond: None (unconditional), exemplar images (B or 1 of them), or
        precomputed raw means {block: (B or 1, K)} as returned by `condition`. rows (B,): x[i] is
        conditioned on cond's row rows[i] (exemplars shared by several crops run through the
        conditioner stream once)."""
        if cond is not None and not self.match:
            raise ValueError("conditioning given to an unconditional model")
        if self.match and cond is None:
            raise ValueError("the conditional model needs a conditioner (exemplars or phi)")
        if isinstance(cond, torch.Tensor):
            cond = self.condition(cond)
        if rows is not None:
            cond = {b: v[rows] for b, v in cond.items()}
        return self._run(x, cond=cond)

    # --- features ----------------------------------------------------------------------------
    def weights(self, layers=TAPS) -> torch.Tensor:
        """w over the phi layers (ones for an unconditional model)."""
        if self.match_weight is None:
            return torch.ones(sum(self.widths[b] for b in layers))
        return torch.cat([self.match_weight[b].detach() for b in layers])

    @torch.no_grad()
    def phi(self, x, layers=TAPS) -> torch.Tensor:
        """Raw phi(x): concatenated channel means of `layers`, (B, D)."""
        means = self.block_means(x, upto=max(layers, key=BLOCKS.index))
        return torch.cat([means[b] for b in layers], dim=1)


def layer_slices(widths: dict[str, int], layers=TAPS) -> dict[str, slice]:
    """Where each layer sits inside the concatenated phi vector."""
    out, start = {}, 0
    for b in layers:
        out[b] = slice(start, start + widths[b])
        start += widths[b]
    return out


def build(model_cfg: dict, channels: int, conditional: bool) -> UNet:
    return UNet(channels=channels, widths=model_cfg["widths"], enc_convs=model_cfg["enc_convs"],
                mid_convs=model_cfg["mid_convs"], dec_convs=model_cfg["dec_convs"],
                output=model_cfg["output"], bias=model_cfg["bias"],
                upsample_bias=model_cfg["upsample_bias"], conditional=conditional,
                match=model_cfg["match"] if conditional else (),
                matching=model_cfg["matching"] if conditional else "replace")


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def psnr(estimate: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR with peak 1 (METHOD.md §8)."""
    mse = (estimate - clean).flatten(1).pow(2).mean(1)
    return 10 * torch.log10(1 / mse.clamp_min(1e-20))


