"""Training stage (METHOD.md §2.4, §5): mixture, conditional (feature-guided) and single-class.

    L = E ||f(x + sigma z, phi(x')) - x||^2,  sigma = u^2, u ~ U(0,1)   (sum over pixels, mean over batch)

(the paper's loss; `train.sigma_max`, `train.loss_weight`, `train.lr_schedule` and `train.ema`
select the alternatives that `benchmarks/train_study.py` compares.)

x' is another clean training crop of the same class, re-paired every epoch, and gradients flow
through its stream (`train.conditional.conditioner`: one x' per crop, or one per class and step,
shared by the step's crops of that class). Everything random is a pure function of (seed, step):
the batch order and pairing of an epoch and the noise of a step. A run resumed from its last
saved state therefore ends with exactly the weights of an uninterrupted run.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from . import checkpoints, config, files, network, stages
from .data import class_conditioners, epoch_plan, load_split, other_class_partner
from .denoisers import denoising_loss
from .errors import FgsdError
from .runtime import autocast, compiled, generator, require_finite, resolve_device, to_float

log = logging.getLogger("fgsd")


class Interrupted(RuntimeError):
    """Raised by tests to simulate a kill right after a checkpoint."""


def select_classes(split: dict, kind: str, single_class: str) -> tuple[dict, list[str]]:
    """All seen classes, or only y0 for the single-class model."""
    classes = [str(c) for c in split["classes"]]
    if kind != "single":
        return split, classes
    if single_class not in classes:
        raise FgsdError(f"parameter 'train.single.class' is '{single_class}', not a class of this dataset; "
                        f"choose one of {classes}")
    keep = split["labels"] == classes.index(single_class)
    if not keep.any():
        raise FgsdError(f"parameter 'train.single.class': '{single_class}' is a held-out (unseen) class; "
                        "pick a training class")
    return {**split, "images": split["images"][keep], "labels": split["labels"][keep]}, classes


def learning_rate(t: dict, step: int, steps: int) -> float:
    """The learning rate of `step`: the authors' step decay, or a cosine anneal to 0 over the run."""
    if t["lr_schedule"] == "step":
        return t["lr"] * t["lr_decay_factor"] ** (step // t["lr_decay_every"])
    return t["lr"] * 0.5 * (1 + math.cos(math.pi * step / steps))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, net: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * net, for every parameter and buffer."""
    for e, p in zip(ema.state_dict().values(), net.state_dict().values()):
        if e.dtype.is_floating_point:
            e.lerp_(p, 1 - decay)
        else:
            e.copy_(p)


USEFUL_GAIN_DB, USEFUL_FROM_SIGMA = 1.0, 0.1


def require_useful(scores: dict, sigmas: list[float], kind: str, lr_key: str = "train.lr") -> None:
    """A finite but useless model is an error, not a saved model: one that does not improve on
    its noisy input (PSNR -20 log10 sigma) by USEFUL_GAIN_DB at any sigma >= USEFUL_FROM_SIGMA,
    where any denoiser worth the name gains several dB (the trivial one: ~18 dB at sigma 1).
    This is what a far too high train.lr leaves: a network that copies its input, or worse."""
    gain = {s: scores[f"psnr@{s:.4g}"] + 20 * np.log10(s) for s in sigmas if s >= USEFUL_FROM_SIGMA}
    if gain and max(gain.values()) < USEFUL_GAIN_DB:
        best = max(gain, key=gain.get)
        raise FgsdError(f"training {kind} produced a useless model: at best {gain[best]:+.2f} dB over its noisy "
                        f"input (sigma {best:g}), below {USEFUL_GAIN_DB:g} dB at every sigma >= {USEFUL_FROM_SIGMA:g}; "
                        f"no model was written; lower {lr_key} or train longer")


IGNORED_EXEMPLAR_DB = 0.1  # a wrong-class exemplar costing less than this at every sigma: the exemplar is ignored


def wrong_exemplar_cost(scores: dict, sigmas: list[float]) -> dict[str, float]:
    """What a wrong-class exemplar costs the conditional model at each sigma (dB; empty for the
    other kinds). About 0 at every sigma: its matched features collapsed to a constant and it
    ignores its class (README, "Study"), which no PSNR of its own shows."""
    return {f"{s:.4g}": scores[f"psnr@{s:.4g}"] - scores[f"wrong@{s:.4g}"] for s in sigmas if f"wrong@{s:.4g}" in scores}


def warn_if_exemplar_ignored(cost: dict[str, float], kind: str) -> None:
    if cost and max(cost.values()) < IGNORED_EXEMPLAR_DB:
        log.warning("the %s model ignores its exemplar: a wrong-class one costs it at most %.3f dB at any sigma "
                    "(below %g dB); its features collapsed, so it is a blind denoiser with extra inputs",
                    kind, max(cost.values()), IGNORED_EXEMPLAR_DB)


class HeldOutPSNR:
    """Test PSNR per sigma on fixed crops, noise and (for the conditional model) conditioners; for
    the conditional model also `wrong@sigma`, the PSNR given a crop of another class instead."""

    def __init__(self, test: dict, sigmas: list[float], per_class: int, seed: int, device):
        labels = torch.from_numpy(test["labels"])
        g = generator(seed, 2)
        keep = torch.cat([torch.nonzero(labels == c).flatten()[:per_class] for c in torch.unique(labels)])
        self.clean = to_float(test["images"])[keep]
        self.labels = labels[keep]
        _, self.partner = epoch_plan(generator(seed, 2, 1), self.labels)
        several = len(torch.unique(self.labels)) > 1
        self.wrong = other_class_partner(generator(seed, 2, 2), self.labels) if several else None
        self.noise = torch.randn((len(sigmas),) + self.clean.shape, generator=g)
        self.sigmas, self.device = sigmas, device

    @torch.no_grad()
    def __call__(self, model) -> dict[str, float]:
        model.eval()
        conditioners = {"psnr": self.partner if model.match else None}
        if model.match and self.wrong is not None:  # a conditional model on two or more classes
            conditioners["wrong"] = self.wrong
        out = {}
        for name, partner in conditioners.items():
            for s, z in zip(self.sigmas, self.noise):
                vals = []
                for i in range(0, len(self.clean), 256):
                    clean = self.clean[i:i + 256].to(self.device)
                    noisy = clean + s * z[i:i + 256].to(self.device)
                    cond = self.clean[partner[i:i + 256]].to(self.device) if partner is not None else None
                    vals.append(network.psnr(model(noisy, cond), clean).cpu())
                out[f"{name}@{s:.4g}"] = float(torch.cat(vals).mean())
        model.train()
        out["psnr_mean"] = float(np.mean([v for k, v in out.items() if k.startswith("psnr@")]))
        return out


def conditioner_mode(t: dict, kind: str, n_classes: int) -> str:
    """How the conditional model's x' are drawn in this run: `train.conditional.conditioner`, except
    that per_class becomes per_crop (with a warning) when there are at least as many classes as
    crops in a batch, where sharing saves nothing; "" for the other kinds."""
    if kind != "conditional":
        return ""
    mode = t["conditional"]["conditioner"]
    if mode == "per_class" and n_classes >= t["batch_size"]:
        log.warning("train.conditional.conditioner: per_class runs per_crop here: %d classes are not fewer than "
                    "the %d crops of a batch (train.batch_size)", n_classes, t["batch_size"])
        return "per_crop"
    return mode


def warm_start(net: network.UNet, kind: str, cfg: dict, init: str | Path | None) -> dict:
    """Load the mixture model when `train.<kind>.init` is `mixture` (single-class or conditional):
    the model then starts from the best class-blind denoiser, not from noise, and its steps go to
    the class (the conditional model's per-channel weights w start at 1, as from scratch).
    Returns what the resumable state and config.json record of it (the file's checksum)."""
    if not stages.fine_tunes_mixture(kind, cfg):
        if init is not None:
            raise FgsdError(f"init={init} was given, but only a single-class or conditional model with "
                            f"train.<kind>.init: mixture starts from another model ({kind} model here)")
        return {}
    if init is None:
        raise FgsdError(f"parameter 'train.{kind}.init' is 'mixture': the {kind} training needs "
                        "init=<the mixture model.pt>")
    mixture, _ = checkpoints.load(init, network.UNet, ("mixture",), next(net.parameters()).device)
    def blind(config):  # the architecture without the conditional model's own keys
        return {k: v for k, v in config.items() if k not in network.CONDITIONAL_CONFIG}
    if blind(mixture.config) != blind(net.config):
        raise FgsdError(f"{init}: its architecture {mixture.config} is not params 'model' {net.config}; "
                        f"retrain the mixture model")
    missing, unexpected = net.load_state_dict(mixture.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("match_weight.") for k in missing), (missing, unexpected)
    log.info("%s model: fine-tuning the mixture model %s%s", kind, init,
             f" on {cfg['train']['single']['class']}" if kind == "single" else "")
    return dict(init_sha256=files.sha256(init))


def train(cfg: dict, name: str, data: str | Path, model: str | Path, train_log: str | Path, config_json: str | Path,
          metrics: str | Path, state: str | Path, device: str = "auto", interrupt_after: int | None = None,
          lr_key: str = "train.lr", init: str | Path | None = None) -> dict:
    """Train model kind `name`; write the checkpoint, its log, resolved config and final metrics.
    Resumable state lives in the `state` directory, outside Snakemake's declared outputs. `lr_key`
    is the params key that set `cfg["train"]["lr"]`, which the errors tell the user to lower.
    init: the mixture model a single-class or conditional model fine-tunes (`warm_start`)."""
    kind = name
    if kind not in stages.MODEL_KINDS:
        raise FgsdError(f"unknown model kind '{kind}': choose one of {stages.MODEL_KINDS}")
    t, seed = cfg["train"], cfg["seed"]
    dev = resolve_device(device)
    manifest = files.load_json(Path(data) / stages.MANIFEST)
    y0 = t["single"]["class"] if kind == "single" else None
    train_set, classes = select_classes(load_split(data, "train"), kind, y0)
    test_set, _ = select_classes(load_split(data, "test"), kind, y0)
    x, labels = to_float(train_set["images"]), torch.from_numpy(train_set["labels"])
    batch, steps = t["batch_size"], t[kind]["steps"]
    if len(x) < batch:
        raise FgsdError(f"train.batch_size={batch} is larger than the {len(x)} training crops of the {kind} model")
    per_epoch = len(x) // batch
    conditioner = conditioner_mode(t, kind, len(torch.unique(labels)))

    torch.manual_seed(seed)
    net = network.build(cfg["model"], channels=x.shape[1], conditional=kind == "conditional").to(dev)
    started_from = warm_start(net, kind, cfg, init)
    opt = torch.optim.Adam(net.parameters(), lr=t["lr"])
    step_net, ran = compiled(net, t["compile"], kind)
    precision, float_format = autocast(dev, t["precision"], kind)
    ema = copy.deepcopy(net) if t["ema"] > 0 else None  # the weights that are evaluated and saved
    final_net = ema if ema is not None else net
    test_psnr = HeldOutPSNR(test_set, cfg["sigmas"], t["eval_crops_per_class"], seed, dev)
    tracked = config.select(cfg, stages.stage_keys("train", kind))
    keeper = checkpoints.Resumable(state, kind, cfg, stages.stage_keys("train", kind), data, kind=kind,
                                   **started_from)
    step, rows, loss_sum, loss_n = 0, [], 0.0, 0
    saved = keeper.load(dev)
    if saved:
        net.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        if ema is not None:
            ema.load_state_dict(saved["ema"])
        step, rows, loss_sum, loss_n = saved["step"], saved["rows"], saved["loss_sum"], saved["loss_n"]

    log.info("training %s: %d params, %d crops, %d steps of %d on %s (%s, %s%s)", kind, network.n_params(net),
             len(x), steps, batch, dev, ran, float_format, f", x' {conditioner}" if conditioner else "")
    net.train()
    epoch, order, partner = None, None, None
    first = step
    bar = tqdm(total=steps * batch, initial=step * batch, unit="img", unit_scale=True, mininterval=2,
               desc=f"train {kind}", dynamic_ncols=True)
    t0 = time.time()
    while step < steps:
        if step // per_epoch != epoch:
            epoch = step // per_epoch
            order, partner = epoch_plan(generator(seed, 1, epoch), labels)
        idx = order[(step % per_epoch) * batch:(step % per_epoch + 1) * batch]
        cond, cond_rows = None, None
        if conditioner == "per_crop":
            cond = x[partner[idx]].to(dev)
        elif conditioner == "per_class":
            shared, cond_rows = class_conditioners(idx, partner, labels)
            cond, cond_rows = x[shared].to(dev), cond_rows.to(dev)
        with precision:
            loss = denoising_loss(step_net, x[idx].to(dev), cond, generator(seed, 3, step), sigma_max=t["sigma_max"],
                                  weight=t["loss_weight"], sigma_data=t["sigma_data"], law=t["sigma_law"],
                                  sigma_min=t["sigma_min"], square_share=t["square_share"], rows=cond_rows)
        for group in opt.param_groups:
            group["lr"] = learning_rate(t, step, steps)
        require_finite(loss, kind, step + 1, learning_rate(t, step, steps), lr_key, keeper.last_good())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema is not None:
            ema_update(ema, net, t["ema"])
        step += 1
        loss_sum, loss_n = loss_sum + loss.item(), loss_n + 1
        bar.update(batch)
        bar.set_postfix(loss=f"{loss.item():.3g}", refresh=False)
        if step % t["eval_every"] == 0 or step == steps:
            rows.append(dict(step=step, epoch=epoch, lr=opt.param_groups[0]["lr"],
                             train_loss=loss_sum / loss_n, **test_psnr(final_net)))
            loss_sum, loss_n = 0.0, 0
            log.info("step %d  loss %.4g  test PSNR %.2f dB", step, rows[-1]["train_loss"], rows[-1]["psnr_mean"])
        if step % t["checkpoint_every"] == 0 and step < steps:
            keeper.save(step=step, model=net.state_dict(), optimizer=opt.state_dict(),
                        ema=ema.state_dict() if ema is not None else None, rows=rows, loss_sum=loss_sum, loss_n=loss_n)
            if interrupt_after is not None and step >= interrupt_after:
                raise Interrupted(f"interrupted after step {step}")
    bar.close()
    log.info("trained %s: computed steps %d to %d of %d in %.1f s", kind, first + 1, steps, steps, time.time() - t0)
    bad = [name for name, p in final_net.state_dict().items() if p.is_floating_point() and not torch.isfinite(p).all()]
    if bad:
        raise FgsdError(f"training {kind} ended with non-finite weights in {bad[:3]}; no model was written "
                        f"(lower {lr_key})")

    require_useful(rows[-1], cfg["sigmas"], kind, lr_key)
    cost = wrong_exemplar_cost(rows[-1], cfg["sigmas"])
    warn_if_exemplar_ignored(cost, kind)
    meta = dict(classes=classes, train_classes=sorted({classes[i] for i in labels.tolist()}),
                image_shape=list(x.shape[1:]))
    checkpoints.save(model, kind, final_net, **meta)
    files.save_csv(train_log, pd.DataFrame(rows))
    final = {k: v for k, v in rows[-1].items() if k.startswith("psnr")}
    files.save_json(config_json, dict(kind=kind, model_config=net.config, **meta, params=tracked,
                                      n_params=network.n_params(net), data_sha256=manifest["sha256"],
                                      steps_per_epoch=per_epoch, training_steps=ran, training_precision=float_format,
                                      **({"conditioner": conditioner} if conditioner else {}), **started_from))
    files.save_json(metrics, dict(kind=kind, steps=steps, final_train_loss=rows[-1]["train_loss"],
                                  test_psnr=final, n_test=len(test_psnr.clean),
                                  **({"wrong_exemplar_cost_db": cost} if cost else {})))
    keeper.done()
    return final
