"""In-domain classifier: the judge of class membership for generated samples, and the feature
extractor torch-fidelity uses for FID/KID/precision-recall (Inception weights cannot be
downloaded here; DESIGN.md §3). Trained on clean training crops of every class, the held-out
(unseen) classes included, since it evaluates the few-shot samples too; the generative models
never see it.

A judge of texture classes is easily fooled by second-order statistics: draws of a class's
stationary-Gaussian fit (its mean and power spectrum, no network) score 0.89 on a judge trained on
real crops alone. So it also learns one extra class, "phase-randomised": training crops with their
Fourier amplitudes kept and their phases scrambled (`evaluate.phase_negatives` of every batch).
Such a crop has every second-order statistic of a real one and none of its structure, so a sample
is judged to be its class only if it carries more than a Gaussian texture would.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from . import checkpoints, files
from .data import labelled_crops
from .runtime import autocast, generator, require_finite, resolve_device

log = logging.getLogger("fgsd")


class Classifier(nn.Module):
    """Three conv stages and a global average pool: `features` is the pooled vector."""

    def __init__(self, channels: int, n_classes: int, width: int = 32, feature_dim: int = 64):
        super().__init__()
        self.config = dict(channels=channels, n_classes=n_classes, width=width, feature_dim=feature_dim)

        def stage(c_in, c_out):
            return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.ReLU(),
                    nn.Conv2d(c_out, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.ReLU()]
        self.body = nn.Sequential(*stage(channels, width), nn.AvgPool2d(2), *stage(width, 2 * width), nn.AvgPool2d(2),
                                  *stage(2 * width, feature_dim), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(feature_dim, n_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x in [0, 1] -> (features, logits)."""
        feat = self.body(x - 0.5)
        return feat, self.head(feat)


@torch.no_grad()
def predict(model: Classifier, x: torch.Tensor, device, batch: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, predicted labels) of images in [0, 1]."""
    feats, preds = [], []
    for i in range(0, len(x), batch):
        f, logits = model(x[i:i + batch].to(device))
        feats.append(f.cpu()), preds.append(logits.argmax(1).cpu())
    return torch.cat(feats), torch.cat(preds)


def phase_randomised(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Each crop's mean and Fourier amplitudes with the phases of white noise (Hermitian, so the
    result is real): the same power spectrum, none of the structure; clipped to [0, 1] as samples are."""
    m = x.mean((-2, -1), keepdim=True)
    amplitude = torch.fft.fft2(x - m).abs()
    w = torch.fft.fft2(torch.randn(x.shape, generator=g))
    return (m + torch.fft.ifft2(amplitude * w / w.abs().clamp_min(1e-12)).real).clamp(0, 1)


def with_negatives(x: torch.Tensor, y: torch.Tensor, fraction: float, synthetic: int, g: torch.Generator):
    """The first `fraction` of a batch replaced by its phase-randomised crops, labelled `synthetic`."""
    k = round(fraction * len(x))
    if k == 0:
        return x, y
    return torch.cat([phase_randomised(x[:k], g), x[k:]]), torch.cat([torch.full((k,), synthetic), y[k:]])


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random horizontal flips: textures keep their class under a mirror."""
    flip = torch.rand(len(x), generator=g) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def train_classifier(cfg: dict, data: str | Path, model: str | Path, metrics: str | Path, device="auto") -> dict:
    """Train on clean crops of every class; write the checkpoint and its test accuracy."""
    e, seed = cfg["evaluate"], cfg["seed"]
    device = resolve_device(device)
    x, y, classes = labelled_crops(data, "train")
    xt, yt, _ = labelled_crops(data, "test")
    model_path, metrics_path = model, metrics
    synthetic = len(classes)  # the phase-randomised class, after the real ones
    torch.manual_seed(seed)
    model = Classifier(x.shape[1], len(classes) + (e["phase_negatives"] > 0), e["classifier_width"],
                       e["feature_dim"]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=e["classifier_lr"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, e["classifier_steps"])
    precision, float_format = autocast(device, cfg["train"]["precision"], "the classifier")
    bar = tqdm(range(e["classifier_steps"]), desc="classifier", unit="step")
    for step in bar:
        g = generator(seed, 31, step)
        idx = torch.randint(len(x), (e["classifier_batch"],), generator=g)
        xb, yb = with_negatives(augment(x[idx], g), y[idx], e["phase_negatives"], synthetic, g)
        with precision:  # train.precision: bf16 autocasts the forward pass and loss alone
            _, logits = model(xb.to(device))
            loss = nn.functional.cross_entropy(logits, yb.to(device))
        require_finite(loss, "classifier", step + 1, sched.get_last_lr()[0], "evaluate.classifier_lr",
                       "it keeps no state and retrains from scratch")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step(), sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    _, pred = predict(model, xt, device)
    acc = {c: float((pred[yt == k] == k).float().mean()) for k, c in enumerate(classes) if (yt == k).any()}
    scores = dict(test_accuracy=float((pred == yt).float().mean()), n_test=len(yt), n_train=len(x),
                  n_classes=len(classes), per_class_accuracy=acc, training_precision=float_format)
    if e["phase_negatives"] > 0:  # held-out crops, phase-randomised with a seed training never used
        _, pred_pr = predict(model, phase_randomised(xt, generator(seed, 32)), device)
        scores.update(real_judged_synthetic=float((pred == synthetic).float().mean()),
                      phase_randomised_rejected=float((pred_pr == synthetic).float().mean()))
        log.info("classifier: %.3f of phase-randomised test crops rejected, %.3f of real ones",
                 scores["phase_randomised_rejected"], scores["real_judged_synthetic"])
    log.info("classifier: test accuracy %.3f on %d crops of %d classes", scores["test_accuracy"], len(yt), len(classes))
    checkpoints.save(model_path, "classifier", model, classes=classes)
    files.save_json(metrics_path, scores)
    return scores


def load_classifier(path: str | Path, device="cpu") -> tuple[Classifier, list[str]]:
    """(model, its real classes); a prediction equal to len(classes) is "phase-randomised"."""
    model, meta = checkpoints.load(path, Classifier, ("classifier",), device)
    return model, meta["classes"]
