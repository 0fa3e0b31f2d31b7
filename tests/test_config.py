"""One run configuration: built by precedence (recipe, --config, options typed), written once as
config.json, given back to train the same run again; the recipe's settings on the command line;
errors caught where a file is read, not around the package's own logic."""
from __future__ import annotations

import json

import pytest
import torch

import common.system
from common.config import SCHEMA_VERSION, RunConfig, load_config
from common.errors import UserError
from common.recipes import CNN1G, MODEL1
from conftest import args, load_script, losses, metrics, one_error_line, run

task2 = load_script("task2")
task3 = load_script("task3")


def test_the_config_is_built_by_precedence_recipe_then_file_then_typed():
    base = RunConfig("task2", "cnn1g", "cnn1g", CNN1G)
    file = base.with_settings(lr=0.01, momentum=0.9, seed=3)
    built = file.with_settings(lr=0.02, patience=0)
    assert (built.recipe.lr, built.recipe.momentum, built.seed) == (0.02, 0.9, 3)
    assert built.recipe.patience is None and built.recipe.opt == CNN1G.opt
    assert RunConfig.from_dict(built.to_dict(), "x") == built  # the record reads back as itself


@pytest.mark.parametrize("setting, value", [("lr", 0.0), ("momentum", 1.0),
                                            ("weight_decay", -1e-3), ("label_smoothing", 1.5),
                                            ("opt", "lbfgs"), ("lr_scheduler", "step"),
                                            ("widths", (8, 8, 8))])
def test_a_setting_outside_its_limits_or_foreign_to_the_recipe_is_a_user_error(setting, value):
    with pytest.raises(UserError) as err:
        RunConfig("task3", "model1", "model1", MODEL1).with_settings(**{setting: value})
    assert err.value.setting == setting


def test_a_damaged_config_file_is_one_line_exit_2(fake_image_folder, tmp_path, capsys):
    good = RunConfig("task2", "cnn1g", "cnn1g", CNN1G).to_dict()
    cases = {"not json": "{", "lr a string": json.dumps(good | {"recipe": good["recipe"] | {
        "lr": "high"}}), "old schema": json.dumps(good | {"schema_version": 0}),
             "unknown entry": json.dumps(good | {"colour": "red"}),
             "another task's": json.dumps(good | {"task": "task3", "run": "model1",
                                                  "model": "model1"})}
    for name, text in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(text)
        code, err = run(task2, args(fake_image_folder, tmp_path / "o", "--config", str(path)),
                        capsys)
        assert code == 2, (name, err)
        assert str(path) in one_error_line(err), name


@pytest.mark.slow
def test_a_run_given_back_as_its_config_trains_the_same_steps(fake_image_folder, tmp_path, capsys):
    first = tmp_path / "first"
    code, err = run(task2, args(fake_image_folder, first, "--precision", "fp32", "--momentum",
                                "0.5", "--label-smoothing", "0.1", "--lr-scheduler", "cosine"),
                    capsys)
    assert code == 0, err
    config = load_config(first / "cnn1g" / "config.json")
    assert config.schema_version == SCHEMA_VERSION and config.recipe.momentum == 0.5
    assert (config.recipe.label_smoothing, config.recipe.lr_scheduler) == (0.1, "cosine")
    assert metrics(first / "cnn1g")["config"] == config.to_dict()
    assert torch.load(first / "cnn1g" / "checkpoint.pt")["config"] == config.to_dict()
    code, err = run(task2, ["--config", str(first / "cnn1g" / "config.json"), "--output-dir",
                            str(tmp_path / "again"), "--no-progress"], capsys)
    assert code == 0, err
    assert losses(tmp_path / "again" / "cnn1g") == losses(first / "cnn1g")


@pytest.mark.slow
def test_a_config_selects_its_run_in_a_script_with_several(fake_image_folder, tmp_path, capsys):
    code, err = run(task3, args(fake_image_folder, tmp_path / "a", "--model", "2",
                                "--precision", "fp32"), capsys)
    assert code == 0, err
    code, err = run(task3, ["--config", str(tmp_path / "a" / "model2" / "config.json"),
                            "--output-dir", str(tmp_path / "b"), "--no-progress"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "b").iterdir() if p.is_dir()) == ["model2"]


@pytest.mark.slow
def test_a_resume_honours_momentum_and_weight_decay_and_refuses_another_optimizer(
        fake_image_folder, tmp_path, capsys):
    out = tmp_path / "out"
    base = args(fake_image_folder, out, "--precision", "fp32", "--momentum", "0.5")
    assert run(task2, base, capsys)[0] == 0
    checkpoint = str(out / "cnn1g" / "checkpoint.pt")
    # --momentum 0: Adam has none, and a record never says it used one (the validator refuses
    # adam with the 0.5 of `base` before the checkpoint is compared)
    code, err = run(task2, base + ["--resume", checkpoint, "--opt", "adam", "--momentum", "0"],
                    capsys)
    assert code == 2 and "opt sgd (checkpoint) vs adam (now)" in one_error_line(err)
    code, err = run(task2, base + ["--resume", checkpoint, "--epochs", "2", "--momentum", "0.8",
                                   "--weight-decay", "1e-4"], capsys)
    assert code == 0, err
    change, = metrics(out / "cnn1g")["changes_on_resume"]
    assert change["momentum"] == {"from": 0.5, "to": 0.8}
    assert change["weight_decay"] == {"from": 0.0, "to": 1e-4}
    assert metrics(out / "cnn1g")["config"]["recipe"]["momentum"] == 0.8


@pytest.mark.slow
def test_a_bug_during_resume_is_not_reworded_as_a_users_mistake(fake_image_folder, tmp_path,
                                                                capsys, monkeypatch):
    out = tmp_path / "out"
    base = args(fake_image_folder, out, "--precision", "fp32")
    assert run(task2, base, capsys)[0] == 0

    def planted_bug(*a, **k):
        raise TypeError("a bug in the package")
    monkeypatch.setattr(common.system, "set_rng_state", planted_bug)
    with pytest.raises(TypeError, match="a bug in the package"):
        task2.main(base + ["--epochs", "2", "--resume", str(out / "cnn1g" / "checkpoint.pt")])


def test_every_pt_file_loads_with_plain_torch_load(fake_image_folder, tmp_path, capsys):
    assert run(task2, args(fake_image_folder, tmp_path, "--precision", "fp32"), capsys)[0] == 0
    for name in ("checkpoint.pt", "best.pt"):
        state = torch.load(tmp_path / "cnn1g" / name)  # weights_only=True, torch's default
        assert state["config"]["run"] == "cnn1g"
