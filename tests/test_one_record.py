"""One record of what ran, one validator, one rule for how a run starts: every value that
reaches torch meets its field's limit on every path in (a config file, api.train's keywords,
the options typed), and a folder always holds one run, whole."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common import api
from common.config import RunConfig, validated
from common.errors import UserError
from common.recipes import CNN1G, MODEL1, SPEEDRUN, Recipe, SpeedrunConfig
from conftest import args, interrupt_in, load_script, metrics, one_error_line, run

task2 = load_script("task2")
task3 = load_script("task3")


def config_file(tmp_path, change) -> str:
    data = RunConfig("task2", "cnn1g", "cnn1g", CNN1G).to_dict()
    change(data)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    return str(path)


BAD_FILES = {
    "nested 100,000 deep": None,  # written as text below: json cannot build it
    "another run's model": lambda d: d.update(model="model1"),
    "a model nobody builds": lambda d: d.update(model="vgg"),
    "a switch the model lacks": lambda d: d.update(model_kwargs={"foo": 1}),
    "eval batch 0": lambda d: d["recipe"].update(eval_batch_size=0),
    "negative translation": lambda d: d["recipe"]["augment"].update(translate_px=-4),
    "betas outside [0, 1)": lambda d: d["recipe"].update(betas=[2.0, -1]),
    "a zero std": lambda d: d["recipe"].update(normalization=[[0.5] * 3, [0.25, 0, 0.25]]),
    "no checks": lambda d: d["recipe"].update(checks_per_epoch=0),
    "negative noise": lambda d: d["recipe"]["augment"].update(noise_std=-0.1),
    "momentum for adam": lambda d: d["recipe"].update(opt="adam", momentum=0.9),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_a_config_file_outside_the_records_limits_is_one_line_exit_2_before_any_data(
        case, tmp_path, capsys):
    if BAD_FILES[case] is None:
        path = tmp_path / "config.json"
        path.write_text("[" * 100_000 + "]" * 100_000)
    else:
        path = config_file(tmp_path, BAD_FILES[case])
    # the data folder does not exist: an error about the record comes before it is read
    code, err = run(task2, ["--config", str(path), "--data-dir", str(tmp_path / "no-data"),
                            "--output-dir", str(tmp_path / "out"), "--no-progress"], capsys)
    line = one_error_line(err)
    assert code == 2 and "data" not in line.split(":")[-1], line
    assert not (tmp_path / "out" / "cnn1g").exists()


@pytest.mark.parametrize("setting, value", [("epochs", "1"), ("lr", "0.1"), ("seed", 0.5),
                                            ("batch_size", 2.5), ("epochs", 1.5),
                                            ("eval_batch_size", 0), ("checks_per_epoch", 0),
                                            ("momentum", float("nan")), ("patience", True)])
def test_api_train_refuses_a_value_of_the_wrong_kind_naming_the_setting_before_any_data(
        setting, value, tmp_path):
    with pytest.raises(UserError) as err:
        api.train("task2", "cnn1g", data_dir=tmp_path / "no-data", output_dir=tmp_path / "o",
                  **{setting: value})
    assert str(err.value).startswith(f"{setting}="), str(err.value)


def test_the_record_says_what_ran_not_auto(fake_image_folder, tmp_path, capsys):
    code, err = run(task2, args(fake_image_folder, tmp_path), capsys)
    assert code == 0, err
    written = json.loads((tmp_path / "cnn1g" / "config.json").read_text())
    assert written["precision"] in ("fp32", "bf16") and written["precision_asked"] == "auto"
    assert written["device"] == "cpu" and written["device_asked"] == "auto"
    assert metrics(tmp_path / "cnn1g")["config"] == written
    assert written["precision"] == metrics(tmp_path / "cnn1g")["precision"]


def test_a_config_replayed_keeps_the_precision_that_ran_and_a_typed_one_is_asked_anew():
    ran = RunConfig("task2", "cnn1g", "cnn1g", CNN1G).resolved("bf16", "cpu")
    replayed = RunConfig.from_dict(ran.to_dict(), "x")
    assert (replayed.precision, replayed.precision_asked) == ("bf16", "auto")
    retyped = replayed.with_settings(precision="fp32")
    assert (retyped.precision, retyped.precision_asked) == ("fp32", None)
    assert retyped.resolved("fp32", "cpu").precision_asked == "fp32"


# ---------------------------------------------------------------- generated: the schema itself

def field_values():
    """Any value a JSON file or a keyword argument could hold."""
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5))
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4), max_leaves=8)


RECIPE_FIELDS = [f.name for f in dataclasses.fields(Recipe)]
SPEEDRUN_FIELDS = [f.name for f in dataclasses.fields(SpeedrunConfig)]
RUN_FIELDS = ["seed", "subset", "precision", "device"]


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(RECIPE_FIELDS + RUN_FIELDS), value=field_values())
def test_any_value_for_any_setting_is_a_valid_record_or_one_user_error_naming_it(name, value):
    config = RunConfig("task3", "model1", "model1", MODEL1)
    try:
        built = config.with_settings(**{name: value})
    except UserError as err:
        assert err.setting is not None and err.setting.split(".")[0] == name
        return
    # accepted: the record reads back as itself, and it is valid as a file too
    assert RunConfig.from_dict(built.to_dict(), "x") == built
    for f in dataclasses.fields(built.recipe):
        v = getattr(built.recipe, f.name)
        assert not (isinstance(v, float) and math.isnan(v)), f.name


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(SPEEDRUN_FIELDS), value=field_values())
def test_any_speedrun_file_entry_is_a_valid_record_or_one_user_error(name, value):
    data = RunConfig("task3e", "speedrun", "speedrun", SPEEDRUN).to_dict()
    data["recipe"][name] = value
    try:
        config = RunConfig.from_dict(data, "f.json")
    except UserError as err:
        assert str(err).startswith(f"f.json: {name}"), str(err)
        return
    assert validated(config.to_dict()) == config


# ---------------------------------------------------------------- one folder, one run

@pytest.mark.slow
def test_a_trial_run_never_takes_an_unfinished_runs_place(fake_image_folder, tmp_path, capsys,
                                                           monkeypatch):
    import common.trainer
    interrupt_in(monkeypatch, common.trainer, "train_step", after=2)
    code, err = run(task2, args(fake_image_folder, tmp_path), capsys)
    assert code == 130, err
    checkpoint = tmp_path / "cnn1g" / "checkpoint.pt"
    before = checkpoint.read_bytes()
    monkeypatch.undo()
    code, err = run(task2, args(fake_image_folder, tmp_path, "--subset", "50"), capsys)
    line = one_error_line(err)
    assert code == 2 and "unfinished run cnn1g" in line and "subset 100" in line, line
    assert checkpoint.read_bytes() == before  # the printed resume command still works
    code, err = run(task2, args(fake_image_folder, tmp_path, "--resume", str(checkpoint)), capsys)
    assert code == 0, err


@pytest.mark.slow
def test_a_rerun_interrupted_in_a_finished_runs_folder_leaves_no_finished_run_behind(
        fake_image_folder, tmp_path, capsys, monkeypatch):
    assert run(task2, args(fake_image_folder, tmp_path), capsys)[0] == 0
    import common.trainer
    interrupt_in(monkeypatch, common.trainer, "train_step", after=1)
    code, err = run(task2, args(fake_image_folder, tmp_path, "--seed", "1"), capsys)
    assert code == 130, err
    folder = tmp_path / "cnn1g"
    assert not (folder / "metrics.json").exists() and not (folder / "confusion.csv").exists()
    assert json.loads((folder / "config.json").read_text())["seed"] == 1
    with pytest.raises(UserError, match="not a finished run"):
        api.load(folder)


def test_a_folder_written_before_the_owner_mark_is_owned_by_the_task_its_runs_record(
        tmp_path, capsys):
    from common.files import claim_folder
    run_dir = tmp_path / "baseline"
    run_dir.mkdir()
    RunConfig("task3cd", "baseline", "model1", MODEL1).save(run_dir)
    with pytest.raises(UserError, match="holds the results of task3cd"):
        claim_folder(tmp_path, "task3e")
    claim_folder(tmp_path, "task3cd")  # its own script may write there
    assert (tmp_path / ".task").read_text().strip() == "task3cd"


@pytest.mark.slow
def test_a_study_baseline_trained_with_other_settings_is_refused(fake_image_folder, tmp_path,
                                                                 capsys):
    task3cd = load_script("task3cd")
    assert run(task2, args(fake_image_folder, tmp_path / "t2"), capsys)[0] == 0
    code, err = run(task3cd, args(fake_image_folder, tmp_path / "cd", "--variants", "baseline",
                                  "--reuse-baseline", str(tmp_path / "t2" / "cnn1g")), capsys)
    line = one_error_line(err)
    assert code == 2 and "--reuse-baseline" in line and "model cnn1g (there)" in line, line


# ---------------------------------------------------------------- the files read back, by the same validator

def finished_copy(tmp_path, source="results/default/task2/cnn1g"):
    import shutil
    from pathlib import Path
    folder = tmp_path / "model1"
    shutil.copytree(Path(__file__).resolve().parents[1] / source, folder)
    return folder


@pytest.mark.parametrize("damage, words", [
    (lambda m: m["final"]["test"].update(accuracy="high"),
     "final.test.accuracy 'high': must be a number"),
    (lambda m: m.update(best_check=1.5), "best_check 1.5: must be a whole number"),
    (lambda m: m["machine"]["flags"].pop("amx"), "machine.flags.amx: is missing"),
    (lambda m: m["config"]["recipe"].update(lr=-1), "lr -1: must be greater than 0.0"),
])
def test_a_damaged_metrics_json_is_one_line_naming_the_place_and_value(tmp_path, damage, words):
    """metrics.json, its machine record and its run record are read by the one validator
    (common.config.checked): one line, the file, the place, the value and the rule."""
    from common.config import load_finished
    from common.files import RunDir
    folder = finished_copy(tmp_path)
    assert load_finished(RunDir(folder))["run"] == "cnn1g"  # as committed: read
    record = json.loads((folder / "metrics.json").read_text())
    damage(record)
    (folder / "metrics.json").write_text(json.dumps(record))
    with pytest.raises(UserError) as err:
        load_finished(RunDir(folder))
    assert str(err.value) == f"{folder / 'metrics.json'}: {words}"


def resumable_state() -> dict:
    """What Trainer.state_dict writes, by hand: every entry of common.config.Checkpoint."""
    import random

    import numpy as np
    import torch
    numpy = np.random.get_state()
    return {"model": {"w": torch.zeros(2)}, "optimizer": {"state": {}, "param_groups": []},
            "lr_scheduler": None, "epoch": 0, "step_in_epoch": 3, "global_step": 3,
            "best_model": None,
            "early_stopping": {"best_score": math.inf, "best_check": -1, "wait_count": 0},
            "running": {"loss_sum": 1.5, "correct": 2, "count": 4},
            "history": {"checks": [], "step_loss": [2.3, 2.2, 2.1]}, "wall_time_s": 1.0,
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                    "numpy": [numpy[0], numpy[1].tolist(), *numpy[2:]]},
            "config": RunConfig("task2", "cnn1g", "cnn1g", CNN1G).to_dict(), "precision": "fp32"}


@pytest.mark.parametrize("damage, words", [
    (lambda s: s.update(global_step="5"), "global_step '5': must be a whole number"),
    (lambda s: s["early_stopping"].update(best_score=math.nan),
     "early_stopping.best_score nan: must be a number, not NaN"),
    (lambda s: s["rng"].update(python=(3, s["rng"]["python"][1][:-1] + (625,), None)),
     "rng.python.1.624 625: must be at most 624"),
    (lambda s: s.pop("optimizer"), "optimizer: is missing"),
])
def test_a_damaged_checkpoint_is_one_line_naming_the_place_and_value(tmp_path, damage, words):
    import torch

    from common.config import read_checkpoint
    state = resumable_state()
    torch.save(state, tmp_path / "checkpoint.pt")
    assert read_checkpoint(tmp_path / "checkpoint.pt")["global_step"] == 3
    damage(state)
    torch.save(state, tmp_path / "checkpoint.pt")
    with pytest.raises(UserError) as err:
        read_checkpoint(tmp_path / "checkpoint.pt")
    assert (err.value.setting, str(err.value)) == (
        "resume", f"not a resumable checkpoint: {words}; use the checkpoint.pt of a run's output "
                  "folder (best.pt holds the best weights alone)")


@pytest.mark.parametrize("file, damage, words", [
    ("history.csv", lambda t: t.replace("\n1.0,", "\nhigh,", 1), "line 3: epoch 'high': must be a number"),
    ("confusion.csv", lambda t: t.replace("\nairplane,", "\nairplane,-", 1),
     "line 2: airplane '-"),
    ("confusion.csv", lambda t: t.replace("\nautomobile,", "\nplane,", 1),
     "line 3: class 'plane': must be 'airplane', "),
    ("confusion.csv", lambda t: t.replace("\nautomobile,", "\nairplane,", 1),
     "it has 2 rows of class airplane, not one"),
])
def test_a_damaged_csv_of_a_run_is_one_line_naming_its_line(tmp_path, file, damage, words):
    """history.csv and confusion.csv are read by the same validator, row by row: the file and
    its line, the column, the value and the rule."""
    from common.config import load_confusion, load_finished
    from common.data import CLASSES
    from common.files import RunDir
    folder = finished_copy(tmp_path)
    load_confusion(RunDir(folder), CLASSES)  # as committed: read
    path = folder / file
    path.write_text(damage(path.read_text()))
    with pytest.raises(UserError) as err:
        load_finished(RunDir(folder)) if file == "history.csv" else load_confusion(
            RunDir(folder), CLASSES)
    assert str(err.value).startswith(f"{path}: {words}"), str(err.value)
