"""Tests of the training-speed benchmark (bench/train_speed.py): that it runs end to end on the
tiny fake CIFAR-10 and writes every number issue 7 asks for. No timing assertions: speed claims
live in the benchmark's output, not in unit tests."""
import json

import pytest
import torch

from bench import train_speed
from common.data import cifar10_splits

REQUIRED_KEYS = ("ceiling_img_s", "classic_img_s", "project_img_s", "classic_epoch_s",
                 "project_epoch_s")
QUICK = ["--steps", "2", "--warmup", "1", "--eval-batches", "1"]


def run(tmp_path, data_dir, *extra, quick=QUICK) -> dict:
    path = tmp_path / "speed.json"
    returned = train_speed.main(["--data-dir", str(data_dir), "--device", "cpu",
                                 "--json", str(path), *quick, *extra])
    written = json.loads(path.read_text())
    assert written["models"].keys() == returned["models"].keys()
    return written


def test_benchmark_writes_every_required_key_per_model_as_positive_numbers(
        tmp_path, fake_image_folder, capsys):
    report = run(tmp_path, fake_image_folder, "--precisions", "fp32")
    assert list(report["models"]) == ["model1", "cnn1g"]
    for name, model in report["models"].items():
        for key in REQUIRED_KEYS:
            assert isinstance(model[key], float) and model[key] > 0, (name, key)
        assert model["precision"] == "fp32"
        assert model["ceiling_contiguous_img_s"] > 0
        assert model["train_ratio"] == pytest.approx(model["project_img_s"]
                                                     / model["ceiling_img_s"])
        assert model["epoch_ratio"] == pytest.approx(model["project_epoch_s"]
                                                     / model["classic_epoch_s"])
        assert model["targets"]["train_ratio_pass"] == (model["train_ratio"] >= 0.95)
        assert model["targets"]["epoch_ratio_pass"] == (model["epoch_ratio"] <= 0.4)
        assert model["precisions"]["fp32"]["project"]["steps"] == 2
        assert model["classic"]["steps"] == 2
    env = report["environment"]
    assert env["split_sizes"] == {"train": 360, "val": 40, "test": 100}
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    out = capsys.readouterr().out
    assert out.count("fp32 project img/s >= 0.95 x ceiling") == 2
    assert out.count("fp32 project epoch s <= 0.4 x classic") == 2


def test_benchmark_measures_bf16_and_reads_the_official_format(tmp_path, fake_official):
    report = run(tmp_path, fake_official, "--models", "cnn1g", "--precisions", "fp32,bf16",
                 quick=["--steps", "1", "--warmup", "0", "--eval-batches", "1"])
    model = report["models"]["cnn1g"]
    assert model["precision"] == "fp32"  # the package's default on CPU
    for precision in ("fp32", "bf16"):
        entry = model["precisions"][precision]
        assert entry["ceiling"]["img_s"] > 0 and entry["project"]["epoch_s"] > 0
        assert entry["epoch_ratio"] == pytest.approx(entry["project"]["epoch_s"]
                                                     / model["classic_epoch_s"])
    assert report["environment"]["data_source"].startswith("official:")


def test_emulated_bf16_is_measured_on_few_steps_and_native_bf16_on_all(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(train_speed, "cpu_has_bf16", lambda: False)
    assert train_speed.plan_for("bf16", cpu, 50, 3, 4) == train_speed.Plan(3, 1, 1, 0)
    assert train_speed.plan_for("fp32", cpu, 50, 3, 4) == train_speed.Plan(50, 3, 4, 1)
    monkeypatch.setattr(train_speed, "cpu_has_bf16", lambda: True)
    assert train_speed.plan_for("bf16", cpu, 50, 3, 4) == train_speed.Plan(50, 3, 4, 1)


def test_epoch_extrapolation_adds_training_checks_and_worker_start_ups():
    project = train_speed.epoch_seconds(45_000, 150.0, 15_000, 500.0)
    assert project == {"train_s": 300.0, "eval_s": 60.0, "epoch_s": 360.0}
    classic = train_speed.epoch_seconds(45_000, 100.0, 60_000, 400.0, train_startup_s=1.0,
                                        eval_startups_per_check=3, eval_startup_s=0.5)
    assert classic["train_s"] == 451.0
    assert classic["eval_s"] == 2 * (150.0 + 1.5)
    assert classic["epoch_s"] == 451.0 + 303.0


def test_classic_pipeline_trains_on_the_same_45000_5000_split_as_the_package(fake_image_folder):
    splits = cifar10_splits(fake_image_folder, seed=0, download=False, progress=False)
    train, test = train_speed.classic_datasets(fake_image_folder, augment=None)
    assert len(train) == len(splits.train) and len(test) == len(splits.test)
    labels = [train.dataset.targets[i] for i in train.indices]
    assert labels == splits.train.labels.tolist()
    for i in (0, len(train) - 1):
        x, _ = train[i]  # ToTensor + Normalize(0.5, 0.25)
        pixels = (x * 0.25 + 0.5) * 255
        assert torch.allclose(pixels, splits.train.images[i].float(), atol=0.01)


@pytest.mark.parametrize("argv, message", [
    (["--models", "model3"], "--models: unknown model3"),
    (["--precisions", "fp16"], "--precisions: unknown fp16"),
    (["--steps", "0"], "--steps must be at least 1"),
])
def test_bad_options_end_in_one_line_and_exit_code_2(argv, message, fake_image_folder, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_speed.main(["--data-dir", str(fake_image_folder), *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and message in err


def test_a_folder_without_cifar10_ends_in_one_line_and_exit_code_2(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not CIFAR-10")
    with pytest.raises(SystemExit) as exit_info:
        train_speed.main(["--data-dir", str(tmp_path), "--steps", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.strip().count("\n") == 0


def test_an_unwritable_json_path_fails_before_measuring(tmp_path, fake_image_folder, capsys):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(SystemExit) as exit_info:
        train_speed.main(["--data-dir", str(fake_image_folder),
                          "--json", str(tmp_path / "a-file" / "speed.json")])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert "--json" in captured.err and "measured" not in captured.out
