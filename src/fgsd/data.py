"""Data stage: raw classes -> train/test/unseen crops as uint8 npz + manifest.json.

Textures: one class = one image; training crops come from the top (1 - test_fraction) of the
(rescaled) image and test crops from the bottom, so the two never overlap. Image datasets: each
image is padded or centre-cropped to the crop size and the class split by count. A seeded choice
of `n_unseen` classes is held out of all training (unseen.npz) for few-shot experiments.
"""
from __future__ import annotations

import logging
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import files, stages
from .errors import FgsdError
from .runtime import to_float
from .sources import LOADERS, RawClass

log = logging.getLogger("fgsd")


def _class_rng(seed: int, name: str) -> np.random.Generator:
    """Per-class stream: a class's crops do not depend on which other classes exist."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _chw(img: np.ndarray) -> np.ndarray:
    return img[None] if img.ndim == 2 else img.transpose(2, 0, 1)


def _rescale(img: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1:
        return img
    h, w = img.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(img).resize(size, Image.LANCZOS))


def _random_crops(region: np.ndarray, n: int, size: int, rng, what: str) -> np.ndarray:
    h, w = region.shape[:2]
    if h < size or w < size:
        raise FgsdError(f"{what} is too small for data.crop_size={size}: that region is {h}x{w} pixels "
                        f"(lower data.crop_size or data.test_fraction, or raise data.scale)")
    rows = rng.integers(0, h - size + 1, n)
    cols = rng.integers(0, w - size + 1, n)
    return np.stack([_chw(region[r:r + size, c:c + size]) for r, c in zip(rows, cols)])


def texture_crops(c: RawClass, d: dict, rng) -> tuple[np.ndarray, np.ndarray]:
    img = _rescale(c.texture, d["scale"])
    split = round(img.shape[0] * (1 - d["test_fraction"]))
    where = f"image {c.origin} (class '{c.name}', rescaled by data.scale={d['scale']})"
    train = _random_crops(img[:split], d["train_per_class"], d["crop_size"], rng, f"the training region of {where}")
    test = _random_crops(img[split:], d["test_per_class"], d["crop_size"], rng, f"the test region of {where}")
    return train, test


def _fit(img: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square, shrink to `size` if larger, zero-pad to `size` if smaller."""
    h, w = img.shape[:2]
    s = min(h, w)
    img = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    if s > size:
        img = np.asarray(Image.fromarray(img).resize((size, size), Image.LANCZOS))
    pad = size - img.shape[0]
    if pad > 0:
        widths = [(pad // 2, pad - pad // 2)] * 2 + [(0, 0)] * (img.ndim - 2)
        img = np.pad(img, widths)
    return _chw(img)


def _check_small(c: RawClass, d: dict) -> None:
    """Images smaller than the crop would become crops that are mostly zero padding: an error
    naming the first one, unless data.pad_small asks for the padding (then a warning counts them)."""
    pool = c.images + (c.test_images or [])
    small = [i for i, img in enumerate(pool) if min(img.shape[:2]) < d["crop_size"]]
    if not small:
        return
    i = small[0]
    where = c.files[i] if c.files else f"image {i} of {c.origin}"
    if not d["pad_small"]:
        h, w = pool[i].shape[:2]
        raise FgsdError(f"class '{c.name}': {where} is {h}x{w} pixels, smaller than data.crop_size={d['crop_size']} "
                        f"({len(small)} of {len(pool)} images are): lower data.crop_size, or set data.pad_small: "
                        "true to zero-pad them")
    log.warning("class '%s': %d of %d images are smaller than data.crop_size=%d and are zero-padded "
                "(data.pad_small), e.g. %s", c.name, len(small), len(pool), d["crop_size"], where)


def image_crops(c: RawClass, d: dict, rng) -> tuple[np.ndarray, np.ndarray]:
    _check_small(c, d)
    n_train, n_test = d["train_per_class"], d["test_per_class"]
    if c.test_images is not None:
        train_pool, test_pool = c.images, c.test_images
        test_idx = rng.permutation(len(test_pool))[:n_test]
        train_idx = rng.permutation(len(train_pool))[:n_train]
    else:
        train_pool = test_pool = c.images
        if len(c.images) <= n_test:
            raise FgsdError(f"class '{c.name}' ({c.origin}) has {len(c.images)} images: "
                            f"need more than data.test_per_class={n_test}")
        perm = rng.permutation(len(c.images))
        test_idx, train_idx = perm[:n_test], perm[n_test:n_test + n_train]
    fit = lambda pool, idx: np.stack([_fit(pool[i], d["crop_size"]) for i in idx])
    return fit(train_pool, train_idx), fit(test_pool, test_idx)


def _check_classes(classes: list[RawClass], n_unseen: int) -> None:
    names = [c.name for c in classes]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise FgsdError(f"duplicate class names: {sorted(dup)}")
    for c in classes:
        if c.texture is None and not c.images:
            raise FgsdError(f"class '{c.name}' is empty ({c.origin})")
    if len(classes) - n_unseen < 2:
        raise FgsdError(f"data.n_unseen={n_unseen} leaves fewer than 2 training classes "
                        f"(the dataset has {len(classes)})")


FLAT_STD = 5.0  # grey levels: a texture whose thumbnail varies less than this is a flat colour, not a texture


def _thumbnail(img: np.ndarray) -> np.ndarray:
    grey = Image.fromarray(img).convert("L").resize((64, 64), Image.BILINEAR)
    return np.asarray(grey, np.float64).ravel()


def select_textures(classes: list[RawClass], d: dict, seed: int) -> tuple[list[RawClass], dict[str, str]]:
    """Drop texture classes that are too small, flat or near-duplicates of a kept one (greedy, in
    name order), then keep at most `max_classes`: the first ones of a seeded permutation, so a smaller
    count draws a subset of a larger one (the study's class axis). Returns the kept classes and why
    each other went."""
    kept, dropped, thumbs = [], {}, []  # thumbs: (name, standardised thumbnail) of kept textures
    for c in classes:
        if c.texture is None:
            kept.append(c)
            continue
        if min(c.texture.shape[:2]) < d["min_size"]:
            dropped[c.name] = f"smaller than data.min_size={d['min_size']}"
            continue
        t = _thumbnail(c.texture)
        if t.std() < FLAT_STD:
            dropped[c.name] = f"flat (thumbnail std below {FLAT_STD:g} grey levels)"
            continue
        t = (t - t.mean()) / t.std()
        corr = [float(t @ u) / t.size for _, u in thumbs]
        if corr and d["dedup_corr"] < 1 and max(corr) > d["dedup_corr"]:
            twin = thumbs[int(np.argmax(corr))][0]
            dropped[c.name] = f"near-duplicate of {twin} (correlation {max(corr):.3f} > data.dedup_corr)"
            continue
        kept.append(c)
        thumbs.append((c.name, t))
    if d["max_classes"] and len(kept) > d["max_classes"]:
        chosen = set(np.random.default_rng([seed, 1]).permutation(len(kept))[:d["max_classes"]].tolist())
        dropped.update({c.name: "not drawn (data.max_classes)" for i, c in enumerate(kept) if i not in chosen})
        kept = [c for i, c in enumerate(kept) if i in chosen]
    if dropped:
        log.info("kept %d classes, dropped %d (reasons in manifest.json)", len(kept), len(dropped))
    return kept, dropped


def prepare(cfg: dict, out: str | Path) -> dict:
    """Write the stage.DATA_FILES into `out`. Every output is built in memory first, so a bad
    input leaves nothing partial behind."""
    d, seed = cfg["data"], cfg["seed"]
    if d["dataset"] not in LOADERS:
        raise FgsdError(f"parameter 'data.dataset' is '{d['dataset']}': choose one of {sorted(LOADERS)}")
    raw, provenance = LOADERS[d["dataset"]](color=d["color"], folder=d["folder"])
    raw, dropped = select_textures(sorted(raw, key=lambda c: c.name), d, seed)
    _check_classes(raw, d["n_unseen"])
    held_out = set(np.random.default_rng(seed).permutation(len(raw))[:d["n_unseen"]].tolist())
    seen = [c for i, c in enumerate(raw) if i not in held_out]
    unseen = [c for i, c in enumerate(raw) if i in held_out]
    names = np.array([c.name for c in seen + unseen])

    splits = {split: ([], []) for split in stages.SPLITS}
    regions = []
    for label, c in enumerate(seen + unseen):
        rng = _class_rng(seed, c.name)
        train, test = texture_crops(c, d, rng) if c.texture is not None else image_crops(c, d, rng)
        if label < len(seen):
            for split, x in (("train", train), ("test", test)):
                splits[split][0].append(x)
                splits[split][1].append(np.full(len(x), label))
        else:
            splits["unseen"][0].extend([train, test])
            splits["unseen"][1].extend([np.full(len(train), label), np.full(len(test), label)])
            regions += [np.zeros(len(train), np.int64), np.ones(len(test), np.int64)]
        log.info("class %-24s train %4d  test %4d%s", c.name, len(train), len(test),
                 "" if label < len(seen) else "  (unseen)")

    out_dir = Path(out)
    arrays = {}
    for split, (xs, ys) in splits.items():
        shape = (0, 1 if not d["color"] else 3, d["crop_size"], d["crop_size"])
        arrays[split] = dict(images=np.concatenate(xs) if xs else np.zeros(shape, np.uint8),
                             labels=np.concatenate(ys).astype(np.int64) if ys else np.zeros(0, np.int64),
                             classes=names)
    arrays["unseen"]["region"] = np.concatenate(regions) if regions else np.zeros(0, np.int64)
    for split, arrs in arrays.items():
        files.save_npz(out_dir / f"{split}.npz", **arrs)
    counts = {split: {str(names[k]): int(n) for k, n in zip(*np.unique(a["labels"], return_counts=True))}
              for split, a in arrays.items()}
    manifest = dict(dataset=d["dataset"], seed=seed, params=d, provenance=provenance,
                    classes=[c.name for c in seen], unseen_classes=[c.name for c in unseen], dropped=dropped,
                    image_shape=list(arrays["train"]["images"].shape[1:]), counts=counts,
                    sha256={f"{s}.npz": files.sha256(out_dir / f"{s}.npz") for s in arrays})
    files.save_json(out_dir / stages.MANIFEST, manifest)
    return manifest


def load_split(data_dir: str | Path, split: str) -> dict[str, np.ndarray]:
    return files.load_npz(Path(data_dir) / f"{split}.npz")


def labelled_crops(data_dir: str | Path, split: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Crops of every class for `split` (train or test): seen classes from train/test.npz, held-out
    classes from the matching region of unseen.npz (top = train, bottom = test)."""
    part = load_split(data_dir, split)
    unseen = load_split(data_dir, "unseen")
    keep = unseen["region"] == (0 if split == "train" else 1)
    x = np.concatenate([part["images"], unseen["images"][keep]])
    y = np.concatenate([part["labels"], unseen["labels"][keep]])
    return to_float(x), torch.from_numpy(y), [str(c) for c in part["classes"]]


def other_class_partner(g: torch.Generator, labels: torch.Tensor) -> torch.Tensor:
    """Per crop, the index of a crop of a random other class: the wrong conditioner, which costs a
    conditional model that uses its class (and costs nothing to one whose features collapsed)."""
    classes = torch.unique(labels)
    position = torch.searchsorted(classes, labels)
    other = classes[(position + torch.randint(1, len(classes), (len(labels),), generator=g)) % len(classes)]
    return torch.stack([torch.nonzero(labels == c).flatten()[i % int((labels == c).sum())]
                        for i, c in enumerate(other.tolist())])


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


def class_conditioners(idx: torch.Tensor, partner: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One conditioner crop per class for the batch `idx`, shared by the batch's crops of that
    class (`train.conditional.conditioner: per_class`): the conditioner stream then runs on one
    crop per class, not one per batch crop. A class's crop is its first batch crop's partner, or the
    next one along the partner cycle that is not in the batch, so no crop conditions itself (unless
    its whole class is in the batch); an absent class gets its first crop's partner (a fixed count
    of crops per step, so the compiled step keeps one shape). Returns (crop index per class, in
    sorted-label order; each batch crop's row into it)."""
    classes = torch.unique(labels)
    in_batch = torch.zeros(len(labels), dtype=torch.bool)
    in_batch[idx] = True
    rows = torch.searchsorted(classes, labels[idx])
    chosen = []
    for k, c in enumerate(classes.tolist()):
        first = idx[rows == k]
        crop = int(partner[first[0]] if len(first) else partner[torch.nonzero(labels == c)[0, 0]])
        for _ in range(int((labels == c).sum())):
            if not in_batch[crop]:
                break
            crop = int(partner[crop])
        chosen.append(crop)
    return torch.tensor(chosen), rows
