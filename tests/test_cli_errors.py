"""task3.py from the command line: every user error is exit code 2 and one line on stderr
starting with "error:" (no traceback, nothing half-written); --help lists the common options;
a --quick run succeeds and writes its metrics and figures.

Starting Python with torch costs seconds here, so the cases share one subprocess: a driver runs
`task3.py` as __main__ (runpy: what `python task3.py` does) once per case, with its own argv,
catching SystemExit and capturing stdout and stderr per case; one case also runs as a real
`python task3.py` to keep the driver honest."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.slow  # every case runs task3.py in a subprocess

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
BASE = ["--model", "2", "--quick", "--no-progress"]
COMMON_OPTIONS = ["--data-dir", "--epochs", "--batch-size", "--lr", "--device", "--seed",
                  "--output-dir", "--subset", "--no-progress", "--quick"]

DRIVER = r"""
import contextlib, io, json, runpy, sys, time, traceback
cases_file, results_file = sys.argv[1:3]
cases = json.load(open(cases_file))
results = {}
for name, argv in cases.items():
    out, err = io.StringIO(), io.StringIO()
    sys.argv = ["task3.py"] + argv
    code, start = 0, time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path("task3.py", run_name="__main__")
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
    results[name] = {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue(),
                     "seconds": round(time.perf_counter() - start, 2)}
    json.dump(results, open(results_file, "w"))  # after every case: a hang loses nothing
"""


def environment(tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "CIFAR10_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp / "xdg-cache")
    # no download may reach the network: a proxy on a closed port refuses at once
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env[var] = "http://127.0.0.1:9"
    env.pop("no_proxy", None)
    env.pop("NO_PROXY", None)
    return env


def copy_folder(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".cifar10-uint8-cache.pt"))
    return dst


def files_under(path: Path) -> list:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def assert_one_error_line(stderr: str, *fragments: str):
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# ---------------------------------------------------------------- the error cases

def make_cases(tmp: Path, fake_image_folder: Path) -> tuple[dict, dict]:
    """{case: argv} and {case: (exit code, fragments the error line must contain)}."""
    argv, expect = {}, {}

    def case(name, data_dir, extra, code, *fragments, out=None):
        argv[name] = BASE + ["--data-dir", str(data_dir),
                             "--output-dir", str(out or tmp / "out" / name)] + extra
        expect[name] = (code, fragments)

    not_cifar = tmp / "not-cifar"
    not_cifar.mkdir()
    (not_cifar / "notes.txt").write_text("my holiday photos\n")
    case("folder_without_cifar", not_cifar, [], 2, str(not_cifar), "holds neither")

    missing = copy_folder(fake_image_folder, tmp / "missing-class")
    shutil.rmtree(missing / "train" / "cat")
    case("missing_class_folder", missing, [], 2, "missing class folders: cat",
         str(missing / "train"))

    extra = copy_folder(fake_image_folder, tmp / "extra-folder")
    shutil.copytree(extra / "train" / "dog", extra / "train" / "unicorn")
    case("extra_folder", extra, [], 2, "unexpected folders: unicorn")

    garbage = copy_folder(fake_image_folder, tmp / "garbage-image")
    bad_png = garbage / "test" / "dog" / "0003.png"
    bad_png.write_bytes(b"this is not a PNG file at all" * 5)
    case("unreadable_image", garbage, [], 2, "cannot read image", str(bad_png))

    wrong_size = copy_folder(fake_image_folder, tmp / "wrong-size")
    small_png = wrong_size / "train" / "frog" / "0001.png"
    Image.fromarray(np.zeros((28, 30, 3), dtype=np.uint8)).save(small_png)
    case("image_not_32x32", wrong_size, [], 2, str(small_png), "30x28", "32x32")

    for name, extra_args, fragment in [
            ("batch_size_zero", ["--batch-size", "0"], "--batch-size"),
            ("batch_size_negative", ["--batch-size", "-8"], "--batch-size"),
            ("lr_zero", ["--lr", "0"], "--lr"),
            ("lr_negative", ["--lr", "-0.1"], "--lr"),
            ("lr_nan", ["--lr", "nan"], "--lr"),
            ("epochs_zero", ["--epochs", "0"], "--epochs"),
            ("subset_zero", ["--subset", "0"], "--subset"),
            ("subset_negative", ["--subset", "-5"], "--subset"),
            ("patience_negative", ["--patience", "-1"], "--patience")]:
        case(name, fake_image_folder, extra_args, 2, fragment)
    case("batch_larger_than_training_set", fake_image_folder, ["--batch-size", "5000"], 2,
         "--batch-size 5000", "360 training images")

    blocker = tmp / "file.txt"
    blocker.write_text("not a folder\n")
    case("output_dir_under_a_file", fake_image_folder, [], 2, "output folder",
         str(blocker / "out"), out=blocker / "out")

    if not torch.cuda.is_available():
        case("cuda_without_gpu", fake_image_folder, ["--device", "cuda"], 2, "--device cuda")

    # a checkpoint that does not exist must not silently start a fresh run
    case("resume_missing_checkpoint", fake_image_folder,
         ["--subset", "20", "--batch-size", "10", "--resume", str(tmp / "nowhere" / "checkpoint.pt")],
         2, str(tmp / "nowhere" / "checkpoint.pt"))

    # an empty folder means "download CIFAR-10 here": offline, that fails in one line
    empty = tmp / "empty"
    empty.mkdir()
    case("empty_folder_download", empty, [], 2, "download", str(empty))
    case("missing_folder_download", tmp / "no-such-folder", [], 2, "download",
         str(tmp / "no-such-folder"))

    argv["help"] = ["--help"]
    # last: a successful run of both models, so that both of task 3's figures are drawn
    # (--model 2 alone draws none); 20 images per split keep it to seconds
    argv["quick_run"] = ["--model", "both", "--quick", "--subset", "20", "--batch-size", "10",
                         "--no-progress", "--data-dir", str(fake_image_folder),
                         "--output-dir", str(tmp / "out" / "quick_run")]
    return argv, expect


@pytest.fixture(scope="module")
def cli(tmp_path_factory, fake_image_folder):
    tmp = tmp_path_factory.mktemp("cli")
    argv, expect = make_cases(tmp, fake_image_folder)
    (tmp / "cases.json").write_text(json.dumps(argv))
    proc = subprocess.run([PYTHON, "-c", DRIVER, str(tmp / "cases.json"), str(tmp / "results.json")],
                          cwd=ROOT, env=environment(tmp), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp / "results.json").read_text())
    return {"tmp": tmp, "results": results, "expect": expect}


ERROR_CASES = ["folder_without_cifar", "missing_class_folder", "extra_folder", "unreadable_image",
               "image_not_32x32", "batch_size_zero", "batch_size_negative", "lr_zero",
               "lr_negative", "lr_nan", "epochs_zero", "subset_zero", "subset_negative",
               "patience_negative",
               "batch_larger_than_training_set", "output_dir_under_a_file",
               "cuda_without_gpu"]


@pytest.mark.parametrize("name", ERROR_CASES)
def test_bad_input_exits_2_with_one_error_line(cli, name):
    if name not in cli["expect"]:
        pytest.skip("a CUDA GPU is present")
    result = cli["results"][name]
    code, fragments = cli["expect"][name]
    assert_one_error_line(result["stderr"], *fragments)
    assert result["code"] == code


@pytest.mark.parametrize("name", ["folder_without_cifar", "missing_class_folder", "extra_folder",
                                  "unreadable_image", "image_not_32x32",
                                  "batch_larger_than_training_set"])
def test_bad_data_writes_no_file_into_the_output_folder(cli, name):
    out = cli["tmp"] / "out" / name
    assert cli["results"][name]["code"] == 2
    assert not out.exists() or files_under(out) == []


def test_bad_data_writes_no_cache_beside_broken_folders(cli):
    for folder in ("missing-class", "extra-folder", "garbage-image", "wrong-size"):
        assert not (cli["tmp"] / folder / ".cifar10-uint8-cache.pt").exists()


def test_unwritable_output_folder_leaves_nothing_half_written(cli):
    tmp = cli["tmp"]
    assert cli["results"]["output_dir_under_a_file"]["code"] == 2
    assert (tmp / "file.txt").read_text() == "not a folder\n"
    assert not (tmp / "out" / "output_dir_under_a_file").exists()
    assert not list(tmp.glob("**/.write-test-*"))
    assert not list(tmp.glob("**/*.tmp"))


def test_resume_from_a_missing_checkpoint_is_an_error_not_a_fresh_run(cli):
    result = cli["results"]["resume_missing_checkpoint"]
    out = cli["tmp"] / "out" / "resume_missing_checkpoint"
    assert not (out / "model2" / "metrics.json").exists(), \
        "--resume with a missing checkpoint silently trained from scratch"
    assert_one_error_line(result["stderr"], *cli["expect"]["resume_missing_checkpoint"][1])
    assert result["code"] == 2


def test_help_exits_0_and_lists_every_common_option(cli):
    result = cli["results"]["help"]
    assert result["code"] == 0
    assert result["stderr"] == ""
    for option in COMMON_OPTIONS + ["--model"]:
        assert option in result["stdout"], option


def test_empty_data_folder_attempts_a_download_that_fails_with_one_line(cli):
    result, empty = cli["results"]["empty_folder_download"], cli["tmp"] / "empty"
    assert_one_error_line(result["stderr"], *cli["expect"]["empty_folder_download"][1])
    assert result["code"] == 2
    assert files_under(empty) == []  # no partial archive left behind
    assert files_under(cli["tmp"] / "out" / "empty_folder_download") == []


def test_missing_data_folder_attempts_a_download_that_fails_with_one_line(cli):
    result = cli["results"]["missing_folder_download"]
    assert_one_error_line(result["stderr"], *cli["expect"]["missing_folder_download"][1])
    assert result["code"] == 2
    assert files_under(cli["tmp"] / "no-such-folder") == []


def test_quick_run_exits_0_and_writes_metrics_and_figures(cli):
    result, out = cli["results"]["quick_run"], cli["tmp"] / "out" / "quick_run"
    assert result["code"] == 0, result["stderr"][-3000:]
    assert "Traceback" not in result["stderr"]
    for run in ("model1", "model2"):
        metrics = json.loads((out / run / "metrics.json").read_text())
        assert metrics["epochs_completed"] == 1
        assert set(metrics["final"]) == {"train", "validation", "test"}
        assert metrics["config"]["subset"] == 20 and metrics["config"]["recipe"]["epochs"] == 1
        for name in ("history.csv", "steps.csv", "best.pt", "checkpoint.pt"):
            assert (out / run / name).is_file(), (run, name)
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"model1", "model2"}
    for figure in ("task3_figure2_model1.png", "task3_figure3_models.png"):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure
        assert figure in result["stdout"]
    assert "Table 3.b" in result["stdout"]
    assert not list(out.glob("**/*.tmp"))


def test_task3_runs_as_a_real_script(tmp_path):
    """The driver's runpy stands for `python task3.py`: check one error case for real."""
    proc = subprocess.run([PYTHON, "task3.py", "--model", "2", "--quick", "--lr", "-1",
                           "--output-dir", str(tmp_path / "out")], cwd=ROOT,
                          env=environment(tmp_path), capture_output=True, text=True, timeout=300)
    assert_one_error_line(proc.stderr, "--lr")
    assert proc.returncode == 2
