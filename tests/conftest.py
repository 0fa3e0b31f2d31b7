"""Shared fixtures: tiny fake CIFAR-10 in both source formats (same pixels), built in a temp dir."""
from __future__ import annotations

import csv
import json
import os
import pickle
import runpy
import signal
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import settings

from common.config import RunConfig
from common.data import CLASSES
from common.recipes import Recipe

ROOT = Path(__file__).resolve().parents[1]

# Generated tests explore new cases on every local run; CI replays one fixed set of them, so a
# submission's check does not depend on which cases a random draw found that day.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
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


@pytest.fixture(scope="session")
def _session_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("xdg-cache")


@pytest.fixture(autouse=True)
def _private_cache(_session_cache, monkeypatch):
    """Keep the caches (CIFAR-10 beside a read-only data folder, the precision probe's verdicts)
    out of ~/.cache, in one folder for the session: each model is probed once, not per test
    (test_precision.py gives each of its tests a folder of its own)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(_session_cache))


@pytest.fixture(autouse=True)
def _short_precision_probe(monkeypatch):
    """The precision probe cut to 2 pairs and no time floor: a test's runs need a verdict, not
    a measurement (test_precision.py measures the probe itself, at its real limits)."""
    import common.precision
    monkeypatch.setattr(common.precision, "PROBE_MIN_PAIRS", 2)
    monkeypatch.setattr(common.precision, "PROBE_SECONDS", 0.0)
    monkeypatch.setattr(common.precision, "PROBE_MAX_SECONDS", 0.0)


def load_script(name: str) -> SimpleNamespace:
    """A task script's names (main, its constants), run from its file as `python NAME.py`
    runs it but without calling main: the scripts are programs, nothing imports them."""
    return SimpleNamespace(**runpy.run_path(str(ROOT / f"{name}.py")))


# ---------------------------------------------------------------- running a script in-process

def args(data, out, *extra) -> list[str]:
    """A tiny run: --subset 100 --batch-size 20 is 5 steps an epoch."""
    return ["--data-dir", str(data), "--output-dir", str(out), "--subset", "100",
            "--batch-size", "20", "--epochs", "1", "--no-progress", *extra]


def run(script, argv, capsys) -> tuple[int, str]:
    """main(argv) -> (exit code, stderr)."""
    try:
        script.main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if not line.startswith("cnn1g")]  # run logs
    assert len(lines) == 1, stderr
    return lines[0]


def losses(run_dir: Path) -> list[str]:
    with open(run_dir / "steps.csv") as f:
        return [r["loss"] for r in csv.DictReader(f)]


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def interrupt_in(monkeypatch, owner, name: str, signum=signal.SIGINT, after: int = 0):
    """Raise a real signal at the start of owner.name's call number after + 1."""
    original = getattr(owner, name)
    calls = []

    def wrapper(*a, **k):
        calls.append(1)
        if len(calls) == after + 1:
            signal.raise_signal(signum)
        return original(*a, **k)
    monkeypatch.setattr(owner, name, wrapper)


def trainer_config(run: str = "tiny", model: str = "cnn1g", **recipe) -> RunConfig:
    """A run configuration for a Trainer built by hand: the recipe's loop settings (epochs,
    checks_per_epoch, patience, ...) as given, the optimizer's whatever the test builds."""
    recipe = {"opt": "sgd", "lr": 0.05, "batch_size": 16} | recipe
    return RunConfig("test", run, model, Recipe(**recipe))
