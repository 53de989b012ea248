"""Training stage (METHOD.md §2.4, §5): mixture, conditional (feature-guided) and single-class.

    L = E ||f(x + sigma z, phi(x')) - x||^2,  sigma = u^2, u ~ U(0,1)   (sum over pixels, mean over batch)

x' is another clean training crop of the same class, re-paired every epoch, and gradients flow
through its stream. Everything random is a pure function of (seed, step): the batch order and
pairing of an epoch and the noise of a step. A run resumed from its last saved state therefore
ends with exactly the weights of an uninterrupted run.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from . import config as cfgmod
from . import files, network
from .data import load_split
from .errors import FgsdError

log = logging.getLogger("fgsd")


class Interrupted(RuntimeError):
    """Raised by tests to simulate a kill right after a checkpoint."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise FgsdError("device 'cuda' was asked for but torch sees no CUDA device (use --device auto or cpu)")
    return torch.device(name)


def generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded from integer keys (same numbers on every device and batch size)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence(list(keys)).generate_state(1)[0]))


def epoch_plan(g: torch.Generator, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch order of an epoch, and each crop's conditioner: the next crop of its class in a
    random cycle, so a crop is never its own conditioner (unless its class has one crop)."""
    order = torch.randperm(len(labels), generator=g)
    partner = torch.arange(len(labels))
    for c in torch.unique(labels):
        members = torch.nonzero(labels == c).flatten()
        cycle = members[torch.randperm(len(members), generator=g)]
        partner[cycle] = torch.roll(cycle, -1)
    return order, partner


def to_float(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).float() / 255


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """The inverse of `to_float` (exact for images that came from it), clipping to [0, 1]."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


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


class Evaluator:
    """Test PSNR per sigma on fixed crops, noise and (for the conditional model) conditioners."""

    def __init__(self, test: dict, sigmas: list[float], per_class: int, seed: int, device):
        labels = torch.from_numpy(test["labels"])
        g = generator(seed, 2)
        keep = torch.cat([torch.nonzero(labels == c).flatten()[:per_class] for c in torch.unique(labels)])
        self.clean = to_float(test["images"])[keep]
        self.labels = labels[keep]
        _, self.partner = epoch_plan(generator(seed, 2, 1), self.labels)
        self.noise = torch.randn((len(sigmas),) + self.clean.shape, generator=g)
        self.sigmas, self.device = sigmas, device

    @torch.no_grad()
    def __call__(self, model) -> dict[str, float]:
        model.eval()
        out = {}
        for s, z in zip(self.sigmas, self.noise):
            vals = []
            for i in range(0, len(self.clean), 256):
                clean = self.clean[i:i + 256].to(self.device)
                noisy = clean + s * z[i:i + 256].to(self.device)
                cond = self.clean[self.partner[i:i + 256]].to(self.device) if model.match else None
                vals.append(network.psnr(model(noisy, cond), clean).cpu())
            out[f"psnr@{s:.4g}"] = float(torch.cat(vals).mean())
        model.train()
        out["psnr_mean"] = float(np.mean(list(out.values())))
        return out


def train(cfg: dict, kind: str, data_dir: str | Path, out_dir: str | Path, state_dir: str | Path,
          device: str = "auto", interrupt_after: int | None = None) -> dict:
    if kind not in cfgmod.MODEL_KINDS:
        raise FgsdError(f"unknown model kind '{kind}': choose one of {cfgmod.MODEL_KINDS}")
    t, seed = cfg["train"], cfg["seed"]
    dev = resolve_device(device)
    manifest = files.load_json(Path(data_dir) / "manifest.json")
    train_set, classes = select_classes(load_split(data_dir, "train"), kind, t["single"]["class"])
    test_set, _ = select_classes(load_split(data_dir, "test"), kind, t["single"]["class"])
    x, labels = to_float(train_set["images"]), torch.from_numpy(train_set["labels"])
    batch, steps = t["batch_size"], t[kind]["steps"]
    if len(x) < batch:
        raise FgsdError(f"train.batch_size={batch} is larger than the {len(x)} training crops of the {kind} model")
    per_epoch = len(x) // batch

    torch.manual_seed(seed)
    model = network.build(cfg["model"], channels=x.shape[1], conditional=kind == "conditional").to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=t["lr"])
    evaluate = Evaluator(test_set, t["eval_sigmas"], t["eval_crops_per_class"], seed, dev)
    tracked = cfgmod.select(cfg, cfgmod.stage_keys("train", kind))
    fingerprint = cfgmod.digest({"params": tracked, "kind": kind, "data": manifest["sha256"]})

    state_path = Path(state_dir) / f"{kind}.pt"
    step, rows, loss_sum, loss_n = 0, [], 0.0, 0
    if state_path.is_file():
        state = files.load_torch(state_path, dev)
        if state["fingerprint"] == fingerprint:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            step, rows, loss_sum, loss_n = state["step"], state["rows"], state["loss_sum"], state["loss_n"]
            log.info("resuming %s training from step %d (%s)", kind, step, state_path)
        else:
            log.info("ignoring %s: it was saved with other params or data", state_path)

    log.info("training %s: %d params, %d crops, %d steps of %d on %s", kind, network.n_params(model),
             len(x), steps, batch, dev)
    model.train()
    epoch, order, partner = None, None, None
    bar = tqdm(total=steps * batch, initial=step * batch, unit="img", unit_scale=True, mininterval=2,
               desc=f"train {kind}", dynamic_ncols=True)
    t0 = time.time()
    while step < steps:
        if step // per_epoch != epoch:
            epoch = step // per_epoch
            order, partner = epoch_plan(generator(seed, 1, epoch), labels)
        idx = order[(step % per_epoch) * batch:(step % per_epoch + 1) * batch]
        g = generator(seed, 3, step)
        sigma = torch.rand(batch, generator=g) ** 2
        noise = torch.randn(x[idx].shape, generator=g)
        clean = x[idx].to(dev)
        noisy = clean + sigma.view(-1, 1, 1, 1).to(dev) * noise.to(dev)
        cond = x[partner[idx]].to(dev) if kind == "conditional" else None
        loss = (model(noisy, cond) - clean).pow(2).flatten(1).sum(1).mean()
        for group in opt.param_groups:
            group["lr"] = t["lr"] * t["lr_decay_factor"] ** (step // t["lr_decay_every"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        loss_sum, loss_n = loss_sum + loss.item(), loss_n + 1
        bar.update(batch)
        bar.set_postfix(loss=f"{loss.item():.3g}", refresh=False)
        if step % t["eval_every"] == 0 or step == steps:
            rows.append(dict(step=step, epoch=epoch, lr=opt.param_groups[0]["lr"],
                             train_loss=loss_sum / loss_n, **evaluate(model)))
            loss_sum, loss_n = 0.0, 0
            log.info("step %d  loss %.4g  test PSNR %.2f dB", step, rows[-1]["train_loss"], rows[-1]["psnr_mean"])
        if step % t["checkpoint_every"] == 0 and step < steps:
            files.save_torch(state_path, dict(step=step, model=model.state_dict(), optimizer=opt.state_dict(),
                                              rows=rows, loss_sum=loss_sum, loss_n=loss_n, fingerprint=fingerprint))
            if interrupt_after is not None and step >= interrupt_after:
                raise Interrupted(f"interrupted after step {step}")
    bar.close()
    log.info("trained %s in %.1f s", kind, time.time() - t0)

    out_dir = Path(out_dir)
    meta = dict(kind=kind, model_config=model.config, classes=classes,
                train_classes=sorted({classes[i] for i in labels.tolist()}), image_shape=list(x.shape[1:]))
    files.save_torch(out_dir / "model.pt", dict(meta, state_dict={k: v.cpu() for k, v in model.state_dict().items()}))
    files.save_csv(out_dir / "train_log.csv", pd.DataFrame(rows))
    final = {k: v for k, v in rows[-1].items() if k.startswith("psnr")}
    files.save_json(out_dir / "config.json", dict(meta, params=tracked, n_params=network.n_params(model),
                                                  data_sha256=manifest["sha256"], steps_per_epoch=per_epoch))
    files.save_json(out_dir / "metrics.json", dict(kind=kind, steps=steps, final_train_loss=rows[-1]["train_loss"],
                                                   test_psnr=final, n_test=len(evaluate.clean)))
    state_path.unlink(missing_ok=True)
    return final


def load_model(path: str | Path, device="cpu") -> tuple[network.UNet, dict]:
    path = Path(path)
    if not path.is_file():
        raise FgsdError(f"missing model file: {path}")
    ckpt = files.load_torch(path, device)
    c = ckpt["model_config"]
    model = network.UNet(**c).to(device)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, {k: v for k, v in ckpt.items() if k != "state_dict"}
