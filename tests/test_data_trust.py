"""What CIFAR-10 reading may trust and what it must check: the official batches' pixel type and
labels, an image file's sample width, images in nested class folders (and the cache's view of
them), and the folders a failed download leaves behind."""
from __future__ import annotations

import os
import shutil
import struct
import urllib.error
import zlib
from pathlib import Path

import numpy as np
import pytest
import torchvision
from PIL import Image

import common.data as data
from common.data import CLASSES, load_cifar10
from conftest import args, load_script, make_images, one_error_line, run, write_official

task2 = load_script("task2")
CACHE_NAME = ".cifar10-uint8-cache.pt"
PER_CLASS = 40  # conftest's fake training set: 40 images a class, files 0000..0039


def private_copy(folder: Path, to: Path) -> Path:
    return shutil.copytree(folder, to, ignore=shutil.ignore_patterns(CACHE_NAME))


def first_train_index(class_name: str) -> int:
    """Index of train/<class>/0000.* in the loaded training set (class by class, files sorted)."""
    return CLASSES.index(class_name) * PER_CLASS


def png16(samples: np.ndarray) -> bytes:
    """A 16-bit PNG written chunk by chunk: greyscale (H, W) or RGB (H, W, 3) samples (Pillow
    writes 16-bit greyscale but not 16-bit RGB)."""
    height, width = samples.shape[:2]
    colour_type = 2 if samples.ndim == 3 else 0
    rows = samples.astype(">u2").reshape(height, -1)
    raw = b"".join(b"\0" + row.tobytes() for row in rows)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))
    ihdr = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


# ---------------------------------------------------------------- official batches

@pytest.mark.parametrize("pixels, words", [
    (lambda x: x.astype(np.int64) * 300, "int64 pixels from 0 to 76500"),
    # integers that would fit are refused too: the official batches are uint8, so another type
    # is another writer's, whose scale cannot be known
    (lambda x: x.astype(np.int64), "int64 pixels from 0 to 255"),
    (lambda x: x.astype(np.float32) / 255, "float32 pixels from 0.0 to 1.0"),
])
def test_official_batches_whose_pixels_are_not_uint8_are_one_line_exit_2(fake_arrays, tmp_path,
                                                                         capsys, pixels, words):
    (train_x, train_y), test = fake_arrays
    root = tmp_path / "official"
    write_official(root, (pixels(train_x), train_y), test)
    code, err = run(task2, args(root, tmp_path / "out"), capsys)
    line = one_error_line(err)
    assert code == 2
    assert f"the CIFAR-10 train batches in {root} hold {words}; expected uint8 (0-255)" in line


@pytest.mark.parametrize("label, words", [
    (1.5, "labels that are not whole numbers (such as 1.5)"),
    (float("nan"), "labels that are not whole numbers (such as nan)"),
    ("cat", "labels of type <U"),
])
def test_official_labels_that_are_not_whole_numbers_are_one_line_exit_2(fake_arrays, tmp_path,
                                                                        capsys, label, words):
    (train_x, train_y), test = fake_arrays
    labels = train_y.astype(object if isinstance(label, str) else np.float64)
    labels[7] = label
    root = tmp_path / "official"
    write_official(root, (train_x, labels), test)
    code, err = run(task2, args(root, tmp_path / "out"), capsys)
    line = one_error_line(err)
    assert code == 2 and f"the CIFAR-10 train batches in {root} hold {words}" in line


def test_whole_float_labels_are_read_as_their_numbers(fake_arrays, tmp_path):
    (train_x, train_y), test = fake_arrays
    write_official(tmp_path / "ints", (train_x, train_y), test)
    write_official(tmp_path / "floats", (train_x, train_y.astype(np.float64)), test)
    ints, _ = load_cifar10(tmp_path / "ints", download=False, progress=False)
    floats, _ = load_cifar10(tmp_path / "floats", download=False, progress=False)
    assert floats["train_labels"].dtype == ints["train_labels"].dtype
    assert floats["train_labels"].tolist() == ints["train_labels"].tolist()
    assert floats["digest"] == ints["digest"]


# ---------------------------------------------------------------- image files by sample width

def test_16_bit_images_keep_their_brightness(fake_image_folder, tmp_path):
    root = private_copy(fake_image_folder, tmp_path / "data")
    # 16-bit greyscale, as Pillow writes it from uint16 (it opens as mode I;16): 40000 >> 8
    grey = root / "train" / "cat" / "0000.png"
    Image.fromarray(np.full((32, 32), 40000, dtype=np.uint16)).save(grey)
    with Image.open(grey) as im:
        assert im.mode == "I;16"
    # 16-bit RGB: Pillow opens it as 8-bit RGB itself, keeping each sample's top byte
    rgb = np.zeros((32, 32, 3), dtype=np.uint16)
    rgb[...] = (65535, 32768, 256)
    (root / "train" / "dog" / "0000.png").write_bytes(png16(rgb))
    # 32-bit integer samples within 16 bits (older Pillow opened 16-bit PNGs as mode I)
    (root / "train" / "frog" / "0000.png").unlink()
    Image.fromarray(np.full((32, 32), 50000, dtype=np.int32)).save(
        root / "train" / "frog" / "0000.tif")

    loaded, _ = load_cifar10(root, download=False, progress=False)
    images = loaded["train_images"]
    assert images[first_train_index("cat")].unique().tolist() == [156]
    assert images[first_train_index("dog")][:, 0, 0].tolist() == [255, 128, 1]
    assert images[first_train_index("frog")].unique().tolist() == [195]


@pytest.mark.parametrize("samples, words", [
    (np.linspace(0, 1, 1024, dtype=np.float32).reshape(32, 32), "mode F pixels from 0.0 to 1.0"),
    (np.full((32, 32), 70000, dtype=np.int32), "mode I pixels from 70000 to 70000"),
])
def test_images_without_an_honest_0_255_scale_are_one_line_exit_2(fake_image_folder, tmp_path,
                                                                  capsys, samples, words):
    root = private_copy(fake_image_folder, tmp_path / "data")
    path = root / "test" / "ship" / "0004.tif"
    Image.fromarray(samples).save(path)
    code, err = run(task2, args(root, tmp_path / "out"), capsys)
    line = one_error_line(err)
    assert code == 2 and f"image {path} has {words}, which do not map onto 0-255" in line


# ---------------------------------------------------------------- nested class folders

def test_images_in_folders_below_a_class_folder_are_read(fake_image_folder, tmp_path):
    root = private_copy(fake_image_folder, tmp_path / "data")
    cat = root / "train" / "cat"
    before = {bytes(img.numpy()) for img in
              load_cifar10(fake_image_folder, download=False, progress=False)[0]["train_images"]}
    (cat / "sub" / "deeper").mkdir(parents=True)
    (cat / "0001.png").rename(cat / "sub" / "deeper" / "0001.png")
    (cat / "0002.png").rename(cat / "sub" / "0002.png")
    # a hidden folder's files are not the class's images (a notebook's checkpoint copies)
    (cat / ".ipynb_checkpoints").mkdir()
    shutil.copy(cat / "0003.png", cat / ".ipynb_checkpoints" / "0003-checkpoint.png")

    loaded, _ = load_cifar10(root, download=False, progress=False)
    assert len(loaded["train_labels"]) == 10 * PER_CLASS
    assert (loaded["train_labels"] == CLASSES.index("cat")).sum() == PER_CLASS
    assert {bytes(img.numpy()) for img in loaded["train_images"]} == before


def test_a_changed_nested_image_invalidates_the_cache(fake_image_folder, tmp_path):
    root = private_copy(fake_image_folder, tmp_path / "data")
    nested = root / "train" / "bird" / "sub" / "0005.png"
    nested.parent.mkdir()
    (root / "train" / "bird" / "0005.png").rename(nested)
    first, _ = load_cifar10(root, download=False, progress=False)
    assert (root / CACHE_NAME).is_file()

    other = make_images(1, seed=99)[0][CLASSES.index("bird")]
    Image.fromarray(other).save(nested)
    stat = nested.stat()
    os.utime(nested, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    second, _ = load_cifar10(root, download=False, progress=False)
    assert second["digest"] != first["digest"]
    assert any((img.permute(1, 2, 0).numpy() == other).all() for img in second["train_images"])


def test_a_link_back_up_a_class_folder_is_not_followed_twice(fake_image_folder, tmp_path):
    root = private_copy(fake_image_folder, tmp_path / "data")
    (root / "train" / "horse" / "loop").symlink_to(root / "train" / "horse")
    loaded, _ = load_cifar10(root, download=False, progress=False)
    assert len(loaded["train_labels"]) == 10 * PER_CLASS


# ---------------------------------------------------------------- a failed download

def refuse_download(self):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


@pytest.mark.parametrize("existing", ["", "a"])
def test_a_failed_download_removes_the_folders_it_created(tmp_path, capsys, monkeypatch,
                                                          existing):
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", refuse_download)
    if existing:
        (tmp_path / existing).mkdir()
    root = tmp_path / "a" / "b" / "c"
    code, err = run(task2, args(root, tmp_path / "out"), capsys)
    line = one_error_line(err)
    assert code == 2 and f"CIFAR-10 is not in {root} and downloading it failed" in line
    assert (tmp_path / "a").exists() == bool(existing)  # a folder that was there stays
    assert not (tmp_path / "a" / "b").exists()


def test_an_interrupted_download_removes_its_folders_and_stays_an_interrupt(tmp_path,
                                                                            monkeypatch):
    def interrupted(self):
        raise KeyboardInterrupt
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_cifar10(tmp_path / "a" / "b", progress=False)
    assert not (tmp_path / "a").exists()


def test_a_failed_download_keeps_a_folder_holding_what_it_wrote(tmp_path, monkeypatch):
    def partial(self):
        Path(self.root, self.filename).write_bytes(b"the first bytes of an archive")
        refuse_download(self)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", partial)
    root = tmp_path / "a" / "b"
    with pytest.raises(data.UserError, match="downloading it failed"):
        load_cifar10(root, progress=False)
    assert [p.name for p in root.iterdir()] == ["cifar-10-python.tar.gz"]
