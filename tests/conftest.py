"""Shared fixtures: tiny fake CIFAR-10 in both source formats (same pixels), built in a temp dir."""
from __future__ import annotations

import pickle
import runpy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from common.data import CLASSES

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)  # tiny tensors: one thread is faster and leaves the other core free


def make_images(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 32, 32, 3) uint8 images whose class is learnable (a class colour and stripe
    orientation plus noise), labels (N,)."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    yy, xx = np.mgrid[0:32, 0:32]
    for label in range(len(CLASSES)):
        colour = np.array([(label * 37) % 256, (label * 91) % 256, (label * 53 + 80) % 256])
        stripes = np.sin((xx * np.cos(label) + yy * np.sin(label)) * 0.8)[..., None]
        for _ in range(n_per_class):
            img = colour * (0.6 + 0.3 * stripes) + rng.normal(0, 25, (32, 32, 3))
            images.append(np.clip(img, 0, 255).astype(np.uint8))
            labels.append(label)
    return np.stack(images), np.array(labels)


def write_official(root: Path, train, test, batches: int = 5):
    """torchvision's cifar-10-batches-py layout: 5 pickled training batches + test_batch."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def dump(name, images, labels):
        with open(folder / name, "wb") as f:
            pickle.dump({"data": images.transpose(0, 3, 1, 2).reshape(len(images), -1),
                         "labels": labels.tolist()}, f)

    order = np.random.default_rng(0).permutation(len(train[0]))
    for i, chunk in enumerate(np.array_split(order, batches)):
        dump(f"data_batch_{i + 1}", train[0][chunk], train[1][chunk])
    dump("test_batch", *test)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(CLASSES)}, f)


def write_image_folder(root: Path, train, test, ext: str = "png"):
    from PIL import Image
    for split, (images, labels) in (("train", train), ("test", test)):
        counters = {}
        for img, label in zip(images, labels):
            d = root / split / CLASSES[label]
            d.mkdir(parents=True, exist_ok=True)
            k = counters.get(label, 0)
            counters[label] = k + 1
            Image.fromarray(img).save(d / f"{k:04d}.{ext}")


@pytest.fixture(scope="session")
def fake_arrays():
    """Training (40 per class) and test (10 per class) arrays shared by both formats."""
    return make_images(40, seed=1), make_images(10, seed=2)


@pytest.fixture(scope="session")
def fake_official(tmp_path_factory, fake_arrays) -> Path:
    root = tmp_path_factory.mktemp("official")
    write_official(root, *fake_arrays)
    return root


@pytest.fixture(scope="session")
def fake_image_folder(tmp_path_factory, fake_arrays) -> Path:
    root = tmp_path_factory.mktemp("imagefolder")
    write_image_folder(root, *fake_arrays)
    return root


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Keep every test's CIFAR-10 cache (when the data folder is read-only) out of ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def load_script(name: str) -> SimpleNamespace:
    """A task script's names (main, its constants), run from its file as `python NAME.py`
    runs it but without calling main: the scripts are programs, nothing imports them."""
    return SimpleNamespace(**runpy.run_path(str(ROOT / f"{name}.py")))
