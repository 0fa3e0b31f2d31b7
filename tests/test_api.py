"""common.api from Python as a notebook uses it: api.train trains any script's run by name
through the scripts' own path, twice in one process, and returns the trained model with its
metrics; api.load reads the run back; another process is still stopped by the folder's lock;
the registry holds what the scripts train (docs/extending.md followed: tests/test_extending.py)."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from common import api, recipes
from common import run as run_module
from common.config import SPEEDRUN_MODEL
from common.data import SPEEDRUN_NORMALIZATION
from common.errors import UserError
from common.files import FolderLock
from common.recipes import MODEL1, PLANS, Recipe
from conftest import ROOT, load_script, losses, metrics

RUN_FILES = {"config.json", "metrics.json", "history.csv", "steps.csv", "confusion.csv",
             "confusion.png", "best.pt", "checkpoint.pt"}


def tiny(data, out, **more) -> dict:
    """api.train's settings for a run of 5 steps (100 images, batch 20, one epoch)."""
    return dict(data_dir=data, subset=100, epochs=1, batch_size=20, precision="fp32",
                output_dir=out) | more


@pytest.fixture(scope="module")
def test_images(fake_arrays) -> torch.Tensor:
    return torch.from_numpy(fake_arrays[1][0]).permute(0, 3, 1, 2).contiguous()


# ---------------------------------------------------------------- the registry

def test_the_registry_holds_every_run_the_scripts_train_with_a_model_the_package_builds():
    # the scripts' runs, each in PLANS; a script or model added as docs/extending.md says
    # (tests/test_extending.py) is beside them, not a failure of this test
    scripts = {"task2": ["cnn1g"], "task3": ["model1", "model2"],
               "task3cd": list(load_script("task3cd").VARIANTS),
               "task3e": [*load_script("task3e").VARIANTS, "speedrun"],
               "task4a": list(load_script("task4a").RUN_NAMES.values())}
    assert {task: list(PLANS[task]) for task in scripts} == scripts
    # the report's studies, all there: 3.c-3.d's eleven and 3.e's four attempts
    assert {"baseline", "tanh", "batch64", "filters_32_64_128", "no_augment", "no_batchnorm",
            "sgd", "rotate90", "adam_lr5e-2", "dropout", "batchnorm1d"} <= set(PLANS["task3cd"])
    assert {"baseline", "leaky_relu", "silu", "gaussian_noise", "cosine",
            "speedrun"} <= set(PLANS["task3e"])
    for task, runs in PLANS.items():
        for name, (model, recipe, model_kwargs) in runs.items():
            assert model in run_module.MODELS or model == SPEEDRUN_MODEL, (task, name)
    # a variant is Model 1 with its own changes, nothing else
    assert PLANS["task3cd"]["batch64"] == ("model1", Recipe(**{
        **MODEL1.__dict__, "batch_size": 64}), {})
    assert PLANS["task3e"]["silu"] == ("model1", MODEL1, {"activation": "silu"})
    assert PLANS["task3e"]["speedrun"] == (SPEEDRUN_MODEL, recipes.SPEEDRUN, {})


# ---------------------------------------------------------------- training from Python

@pytest.mark.slow
def test_train_twice_in_one_process_returns_the_model_and_metrics_and_load_reads_it_back(
        fake_image_folder, tmp_path, test_images):
    first = api.train("task2", "cnn1g", **tiny(fake_image_folder, tmp_path))
    run_dir = tmp_path / "cnn1g"
    assert first.run_dir == run_dir and RUN_FILES <= {p.name for p in run_dir.iterdir()}
    assert not first.model.training and isinstance(first.model, run_module.MODELS["cnn1g"])
    written = metrics(run_dir)
    assert first.metrics["final"] == written["final"] and written["command"].startswith(
        "api.train('task2', 'cnn1g', data_dir=")
    assert written["config"]["subset"] == 100 and written["config"]["recipe"]["batch_size"] == 20
    assert len(first.metrics["history"]["step_loss"]) == 5
    steps = losses(run_dir)
    assert FolderLock.held == set()  # released: the second call may lock the folder again
    second = api.train("task2", "cnn1g", **tiny(fake_image_folder, tmp_path))
    assert losses(run_dir) == steps  # trained again from the same seed: the same steps
    assert second.metrics["final"] == first.metrics["final"]
    loaded = api.load(run_dir)
    assert not loaded.model.training and loaded.config == second.config
    assert torch.equal(loaded.predict(test_images), second.predict(test_images))
    assert torch.equal(loaded.predict(test_images), first.predict(test_images))
    # the run's test split (all 100 fake test images) scores as its metrics say, to the image
    labels = torch.arange(10).repeat_interleave(10)
    correct = (loaded.predict(test_images).argmax(1) == labels).sum().item()
    assert correct == round(100 * written["final"]["test"]["accuracy"])


@pytest.mark.slow
def test_another_process_is_stopped_by_the_lock_and_takes_it_once_train_returned(
        fake_image_folder, tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from common.files import FolderLock; "
         f"FolderLock({str(tmp_path)!r}).acquire(); print('held', flush=True); sys.stdin.read()"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(UserError, match=rf"being written by another run \(pid {holder.pid}\)"):
            api.train("task2", "cnn1g", **tiny(fake_image_folder, tmp_path))
    finally:
        holder.communicate("")
    api.train("task2", "cnn1g", **tiny(fake_image_folder, tmp_path))
    taker = subprocess.run(
        [sys.executable, "-c", "from common.files import FolderLock; "
         f"FolderLock({str(tmp_path)!r}).acquire(); print('took it')"],
        cwd=ROOT, capture_output=True, text=True)
    assert taker.stdout == "took it\n", taker.stderr


def test_a_failed_train_releases_the_lock_and_names_the_setting(fake_image_folder, tmp_path):
    # batch 500 is refused after the folder is locked and the data read (100 images)
    with pytest.raises(UserError, match="batch_size=500: larger than the 100 training images"):
        api.train("task2", "cnn1g", **tiny(fake_image_folder, tmp_path, batch_size=500))
    assert FolderLock.held == set()
    with pytest.raises(UserError, match="subset=0: must be at least 1"):
        api.train("task2", "cnn1g", **tiny(fake_image_folder, tmp_path, subset=0))


@pytest.mark.parametrize("call, message", [
    (dict(task="task2", run="cnn1g", subsett=100, frobnicate=1),
     "task2 cnn1g: unknown setting(s) frobnicate, subsett; the settings are "),
    (dict(task="task3e", run="speedrun", patience=3), "unknown setting(s) patience"),
    (dict(task="task9", run="cnn1g"), "no script 'task9'; choose from task2, task3, "),
    (dict(task="task3", run="model3"), "task3 has no run 'model3'; choose from model1, model2"),
])
def test_unknown_scripts_runs_and_settings_are_one_user_error_naming_them(call, message,
                                                                          tmp_path):
    with pytest.raises(UserError) as info:
        api.train(**call, output_dir=tmp_path)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


@pytest.mark.slow
def test_the_speedrun_trains_one_seed_through_api_and_loads_with_its_normalization(
        fake_image_folder, tmp_path, test_images):
    trained = api.train("task3e", "speedrun", data_dir=fake_image_folder, subset=100, epochs=1,
                        batch_size=50, widths=(8, 16, 16), seed=3, precision="fp32",
                        output_dir=tmp_path)
    assert trained.run_dir == tmp_path / "speedrun" / "seed3"
    assert trained.metrics["config"]["seed"] == 3 and "test_tta" in trained.metrics["final"]
    assert trained.preprocess == api.Preprocess(SPEEDRUN_NORMALIZATION, 32)
    assert trained.predict(test_images).shape == (100, 10)
    assert FolderLock.held == set()
