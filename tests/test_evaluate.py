"""predict.py --evaluate: a finished run scored on its test split reproduces metrics.json's test
scores exactly (its own data, subset, seed, precision and evaluation function), for a trainer
run, a speed-run seed (with and without test-time augmentation), a run made from a committed
config.json and every other kind of network; another CIFAR-10 folder with --data-dir; bad
runs, missing data and misplaced options in one line, exit 2, with an error that suggests
the finished runs that exist, never the folder it refused."""
from __future__ import annotations

import json
import shutil

import pytest

from common import api
from common.config import load_confusion
from common.files import RunDir
from conftest import ROOT, args, load_script, make_images, one_error_line, write_image_folder

task2 = load_script("task2")
task3 = load_script("task3")
predict = load_script("predict")


def cli(argv, capsys) -> tuple[int, str, str]:
    """predict.py's main(argv) -> (exit code, stdout, stderr)."""
    try:
        predict.main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def evaluated(run_dir, capsys, *more) -> dict:
    capsys.readouterr()  # what training printed before
    code, out, err = cli(["--run", str(run_dir), "--evaluate", "--json", *more], capsys)
    assert code == 0, err
    return json.loads(out)


def recorded_final(run_dir) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())["final"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, fake_image_folder, _session_cache):
    """A tiny finished task2 run (one epoch on 100 images), trained once for this module."""
    out = tmp_path_factory.mktemp("evaluate-run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(_session_cache))
        task2.main(args(fake_image_folder, out, "--precision", "fp32"))
    return out / "cnn1g"


# ---------------------------------------------------------------- the recorded scores, exactly

def test_evaluate_reproduces_a_quick_runs_test_loss_accuracy_and_confusion_exactly(
        run_dir, tmp_path, capsys):
    confusion = tmp_path / "confusion.csv"
    record = evaluated(run_dir, capsys, "--confusion", str(confusion))
    recorded = recorded_final(run_dir)["test"]
    assert record["test"]["accuracy"] == recorded["accuracy"]  # exactly: the same sums
    assert record["test"]["loss"] == recorded["loss"]
    assert record["recorded"] == {"test": recorded}
    assert record["own_data"] is True and record["images"] == 100 and record["subset"] == 100
    assert record["precision"] == "fp32" and record["device"] == "cpu"
    assert record["test"]["correct"] == sum(c["correct"] for c in record["per_class"])
    assert [c["images"] for c in record["per_class"]] == [10] * 10
    # the matrix the run wrote at its end, cell for cell
    assert confusion.read_text() == (run_dir / "confusion.csv").read_text()


def test_evaluate_prints_accuracy_loss_and_each_class_as_text(run_dir, capsys):
    code, out, err = cli(["--run", str(run_dir), "--evaluate"], capsys)
    assert code == 0, err
    recorded = recorded_final(run_dir)["test"]
    correct = round(recorded["accuracy"] * 100)
    lines = out.splitlines()
    assert lines[0] == f"{run_dir} (task2 cnn1g): fp32 on cpu"
    assert lines[1].endswith(", 100 test images (subset 100); the run's own data")
    assert lines[2] == (f"test: accuracy {100 * recorded['accuracy']:.2f} % ({correct} of "
                        f"100), loss {recorded['loss']:.4f}; metrics.json: the same")
    assert lines[3] == "per class:" and len(lines) == 14
    assert lines[4].split()[0] == "airplane" and lines[4].endswith("of 10)")


def test_evaluate_reproduces_a_speedrun_seeds_scores_with_and_without_tta(
        fake_image_folder, tmp_path, capsys):
    # subset 50 of the 100 test images: a subset drawn with the seed's own 3, not the speed-run's
    # data seed 0, would be other images
    api.train("task3e", "speedrun", data_dir=fake_image_folder, subset=50, epochs=2,
              batch_size=50, widths=(8, 16, 16), seed=3, precision="fp32", output_dir=tmp_path)
    seed_dir = tmp_path / "speedrun" / "seed3"
    record = evaluated(seed_dir, capsys)
    final = recorded_final(seed_dir)
    assert record["test"] == final["test"] | {"correct": round(final["test"]["accuracy"] * 50)}
    assert record["test_tta"]["accuracy"] == final["test_tta"]["accuracy"]
    assert record["test_tta"]["loss"] == final["test_tta"]["loss"]
    assert record["tta_level"] == 2 and record["images"] == 50
    # the per-class counts are the TTA score's, as the seed's confusion.csv
    rows = {r["class"]: r for r in load_confusion(RunDir(seed_dir))}
    assert [c["correct"] for c in record["per_class"]] == [
        int(rows[c["class"]][c["class"]]) for c in record["per_class"]]


@pytest.mark.slow  # bf16 is emulated on a CPU without bf16 instructions: 33 s on an AVX2 EPYC
def test_a_run_made_from_a_committed_config_in_bf16_reproduces_its_scores(
        fake_image_folder, tmp_path, capsys):
    # results/ holds no weights: the committed Model 1 record (its recipe and model) trained
    # tiny here, in bf16, which the evaluation must use again to give the same sums
    committed = ROOT / "results" / "task3" / "model1" / "config.json"
    task3.main(["--config", str(committed), *args(fake_image_folder, tmp_path, "--precision",
                                                  "bf16", "--subset", "50")])
    record = evaluated(tmp_path / "model1", capsys)
    recorded = recorded_final(tmp_path / "model1")["test"]
    assert (record["test"]["accuracy"], record["test"]["loss"]) == (recorded["accuracy"],
                                                                    recorded["loss"])
    assert record["precision"] == "bf16"


@pytest.mark.slow
@pytest.mark.parametrize("task, name, settings", [
    ("task3e", "silu", {}),
    ("task3cd", "tanh", {}),
    ("task4a", "resnet18_random_init", {"image_size": 40}),  # resized: another loader path
])
def test_every_kind_of_network_reproduces_its_recorded_scores(
        task, name, settings, fake_image_folder, tmp_path, capsys):
    api.train(task, name, data_dir=fake_image_folder, subset=50, epochs=1, batch_size=20,
              precision="fp32", output_dir=tmp_path, **settings)
    record = evaluated(tmp_path / name, capsys)
    recorded = recorded_final(tmp_path / name)["test"]
    assert (record["test"]["accuracy"], record["test"]["loss"]) == (recorded["accuracy"],
                                                                    recorded["loss"])


# ---------------------------------------------------------------- --data-dir

def test_data_dir_with_a_copy_of_the_runs_data_is_its_own_and_scores_the_same(
        run_dir, fake_image_folder, tmp_path, capsys):
    copy = shutil.copytree(fake_image_folder, tmp_path / "copy")
    record = evaluated(run_dir, capsys, "--data-dir", str(copy))
    assert record["data"] == f"image-folder:{copy}" and record["own_data"] is True
    assert record["test"] == recorded_final(run_dir)["test"] | {
        "correct": record["test"]["correct"]}


def test_data_dir_with_other_images_scores_them_and_says_they_are_not_the_runs(
        run_dir, tmp_path, capsys):
    write_image_folder(tmp_path, make_images(40, seed=7), make_images(3, seed=8))
    record = evaluated(run_dir, capsys, "--data-dir", str(tmp_path))
    assert record["own_data"] is False and record["images"] == 30  # all 30: fewer than 100
    assert record["recorded"] == {"test": recorded_final(run_dir)["test"]}
    assert sum(c["images"] for c in record["per_class"]) == 30


# ---------------------------------------------------------------- errors

def test_the_runs_data_gone_is_one_line_exit_2_naming_it_and_data_dir(
        fake_arrays, tmp_path, capsys):
    data = tmp_path / "data"
    write_image_folder(data, *fake_arrays)
    task2.main(args(data, tmp_path / "out", "--precision", "fp32"))
    shutil.rmtree(data)
    capsys.readouterr()
    code, out, err = cli(["--run", str(tmp_path / "out" / "cnn1g"), "--evaluate"], capsys)
    assert code == 2 and out == ""
    assert one_error_line(err) == (f"error: the run's data {data}: no CIFAR-10 there; give the "
                                   "CIFAR-10 folder with --data-dir")


@pytest.mark.parametrize("argv, message", [
    (["--evaluate", "--data-dir", "{tmp}"], "--data-dir {tmp}: no CIFAR-10 there"),
    (["--evaluate", "--data-dir", "{tmp}/nowhere"], "--data-dir {tmp}/nowhere: no CIFAR-10"),
    (["--evaluate", "x.png"], "give images to classify, --export FILE.onnx or --evaluate, "
                              "only one of them"),
    (["--evaluate", "--export", "{tmp}/m.onnx"], "only one of them"),
    (["x.png", "--data-dir", "{tmp}"], "--data-dir goes with --evaluate"),
    (["x.png", "--confusion", "{tmp}/c.csv"], "--confusion goes with --evaluate"),
    (["--evaluate", "--confusion", "{tmp}"], "--confusion {tmp}: is a folder"),
    (["--evaluate", "--confusion", "{run}/metrics.json"],
     "--confusion {run}/metrics.json: exists and is not a confusion matrix (CSV)"),
])
def test_evaluate_with_bad_data_or_options_is_one_line_exit_2(argv, message, run_dir, tmp_path,
                                                              capsys):
    fill = lambda text: text.format(tmp=tmp_path, run=run_dir)  # noqa: E731
    before = (run_dir / "metrics.json").read_bytes()
    code, out, err = cli(["--run", str(run_dir), *map(fill, argv)], capsys)
    assert code == 2 and out == ""
    assert fill(message) in one_error_line(err)
    assert (run_dir / "metrics.json").read_bytes() == before


def test_a_confusion_file_written_before_is_replaced(run_dir, tmp_path, capsys):
    path = tmp_path / "c.csv"
    evaluated(run_dir, capsys, "--confusion", str(path))
    path.write_text(path.read_text().replace(",10\n", ",999\n"))  # as if from another run
    evaluated(run_dir, capsys, "--confusion", str(path))
    assert path.read_text() == (run_dir / "confusion.csv").read_text()


# ---------------------------------------------------------------- the path it refused

@pytest.mark.parametrize("given", ["outputs/task2/cnn1g", "outputs/task3", "outputs", "."])
def test_a_refused_run_folder_suggests_the_finished_runs_that_exist_never_itself(
        given, run_dir, tmp_path, monkeypatch, capsys):
    # the README's next step after the main job (task3): outputs/task2/cnn1g does not exist
    monkeypatch.chdir(tmp_path)
    for name in ("model1", "model2"):
        shutil.copytree(run_dir, tmp_path / "outputs" / "task3" / name)
    (tmp_path / "outputs" / "task3" / "model2" / "best.pt").unlink()  # not finished
    code, out, err = cli(["--run", given, "--evaluate"], capsys)
    assert code == 2 and out == ""
    line = one_error_line(err)
    refused, advice = line.split("; ", 1)
    assert refused.startswith(f"error: {given} is not a finished run's folder")
    assert advice == "finished runs: outputs/task3/model1"


def test_with_no_finished_run_anywhere_the_error_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(["--run", "outputs/task2/cnn1g", "x.png"], capsys)
    assert code == 2
    assert one_error_line(err) == (
        "error: outputs/task2/cnn1g is not a finished run's folder (no config.json, best.pt, "
        "metrics.json); no finished run is under outputs/task2/cnn1g/ or outputs/: train one "
        "first (e.g. python task2.py)")
