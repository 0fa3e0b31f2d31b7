"""The paths users walk: an interrupt in every phase, everything read from disk validated
before use, identity by content, what is recorded is what took effect. Each test is named for
the case it checks; the generative ones (hypothesis) look for the cases nobody listed."""
from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import common.data
import common.files
import common.cli
import common.trainer
from common.config import read_checkpoint
from common.files import FolderLock, _atomic
from common.errors import UserError
from conftest import (args, interrupt_in, load_script, losses, metrics, one_error_line, run,
                      write_official)

task2 = load_script("task2")
task3 = load_script("task3")
task3cd = load_script("task3cd")
task3e = load_script("task3e")
DOCUMENTED_EXITS = {0, 2, 3, 4, 130, 141, 143}
CACHE_NAME = ".cifar10-uint8-cache.pt"


def private_copy(folder: Path, to: Path) -> Path:
    return shutil.copytree(folder, to, ignore=shutil.ignore_patterns(CACHE_NAME))


def temporaries(*folders: Path) -> list[Path]:
    return [p for folder in folders for p in folder.rglob("*.tmp")]


@pytest.fixture
def first_epoch(fake_image_folder, tmp_path, capsys) -> Path:
    """task2 trained one epoch into tmp/a: its checkpoint."""
    assert run(task2, args(fake_image_folder, tmp_path / "a"), capsys)[0] == 0
    return tmp_path / "a" / "cnn1g" / "checkpoint.pt"


# ---------------------------------------------------------------- 1. an interrupt in every phase

def test_a_signal_while_the_data_cache_is_written_leaves_no_temporary(fake_image_folder,
                                                                       tmp_path, capsys,
                                                                       monkeypatch):
    data = private_copy(fake_image_folder, tmp_path / "data")
    interrupt_in(monkeypatch, common.files.os, "fsync")  # inside the atomic write
    code, err = run(task2, args(data, tmp_path / "out"), capsys)
    assert code == 130 and one_error_line(err).startswith("SIGINT received")
    assert not (data / CACHE_NAME).exists() and temporaries(data, tmp_path / "out") == []


def test_a_signal_while_the_data_cache_is_loaded_stops_the_script(fake_image_folder, tmp_path,
                                                                  capsys, monkeypatch):
    data = private_copy(fake_image_folder, tmp_path / "data")
    common.data.load_cifar10(data, download=False, progress=False)  # the cache exists
    interrupt_in(monkeypatch, common.data, "load_cache", signal.SIGTERM)
    code, err = run(task2, args(data, tmp_path / "out"), capsys)
    assert code == 143 and one_error_line(err).startswith("SIGTERM received")
    assert not (tmp_path / "out" / "cnn1g").exists()  # nothing trained after the signal


@pytest.mark.slow
def test_a_signal_while_a_checkpoint_is_loaded_stops_instead_of_calling_it_unreadable(
        first_epoch, fake_image_folder, tmp_path, capsys, monkeypatch):
    interrupt_in(monkeypatch, torch, "load")
    code, err = run(task2, args(fake_image_folder, tmp_path / "b", "--resume", str(first_epoch),
                                "--epochs", "2"), capsys)
    assert code == 130 and one_error_line(err).startswith("SIGINT received")
    assert read_checkpoint(first_epoch)["global_step"] == 5  # untouched


@pytest.mark.parametrize("phase, after", [("train_step", 0), ("evaluate", 0)])
@pytest.mark.slow
def test_a_signal_at_the_first_step_or_in_a_check_writes_a_checkpoint_that_resumes(
        fake_image_folder, tmp_path, capsys, monkeypatch, phase, after):
    original = getattr(common.trainer, phase)
    interrupt_in(monkeypatch, common.trainer, phase, after=after)
    out = tmp_path / "out"
    code, err = run(task2, args(fake_image_folder, out, "--epochs", "2", "--precision", "fp32"),
                    capsys)
    assert code == 130 and "Traceback" not in err
    assert "SIGINT received at epoch 1, step " in err
    resume = [line for line in err.splitlines() if line.startswith("Resume with: ")]
    assert len(resume) == 1 and str(out / "cnn1g" / "checkpoint.pt") in resume[0]
    monkeypatch.setattr(common.trainer, phase, original)
    code, err = run(task2, resume[0].split()[4:], capsys)   # without "Resume with: python X"
    assert code == 0, err
    assert metrics(out / "cnn1g")["epochs_completed"] == 2 and temporaries(out) == []


def test_a_writer_killed_mid_write_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    target = tmp_path / "cache.pt"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".cache.pt.{dead.pid}.abc123.tmp"       # SIGKILL: no cleanup ran
    live = tmp_path / f".cache.pt.{os.getppid()}.def456.tmp"    # a writer still at work
    stale.write_bytes(b"x" * 1000)
    live.write_bytes(b"y")
    _atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert not stale.exists() and live.exists()


# ---------------------------------------------------------------- 2. validated before use

def damaged_checkpoints(state: dict) -> dict:
    model = dict(state["model"])
    model.pop(next(iter(model)))
    wider = {k: torch.zeros(v.shape[0] + 1, *v.shape[1:]) if v.dim() else v
             for k, v in state["model"].items()}
    return {"no optimizer": {k: v for k, v in state.items() if k != "optimizer"},
            "no rng": {k: v for k, v in state.items() if k != "rng"},
            "a model weight missing": state | {"model": model},
            "an older architecture": state | {"model": wider},
            "a damaged step count": state | {"global_step": "5"},
            "a list": [1, 2, 3]}


def test_every_damaged_checkpoint_is_one_line_exit_2(first_epoch, fake_image_folder, tmp_path,
                                                     capsys):
    state = torch.load(first_epoch, weights_only=False)
    for case, damaged in damaged_checkpoints(state).items():
        path = tmp_path / f"{case.replace(' ', '_')}.pt"
        torch.save(damaged, path)
        code, err = run(task2, args(fake_image_folder, tmp_path / "out", "--resume", str(path),
                                    "--epochs", "2"), capsys)
        assert code == 2, (case, err)
        assert one_error_line(err).startswith(f"error: --resume {path}: "), case


@pytest.mark.parametrize("damage, words", [
    ("label 10", "labels outside 0-9"),
    ("fewer labels", "labels for images"),
])
def test_official_batches_with_bad_labels_are_one_line_exit_2(fake_arrays, tmp_path, capsys,
                                                              damage, words):
    (train_x, train_y), test = fake_arrays
    train_y = train_y.copy()
    if damage == "label 10":
        train_y[3] = 10
    root = tmp_path / "official"
    write_official(root, (train_x, train_y), test)
    if damage == "fewer labels":
        import pickle
        path = root / "cifar-10-batches-py" / "data_batch_2"
        batch = pickle.loads(path.read_bytes())
        batch["labels"] = batch["labels"][:-3]
        path.write_bytes(pickle.dumps(batch))
    code, err = run(task2, args(root, tmp_path / "out"), capsys)
    assert code == 2 and words in one_error_line(err)


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels and holds none (a decompression bomb's
    header): its size is known before any pixel is decoded."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0"))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("size, words", [
    ((100_000, 100_000), "could be decompression bomb"),  # PIL refuses the header itself
    ((12_000, 12_000), "is 12000x12000"),                 # PIL warns; the size check refuses
    ((64, 32), "is 64x32"),
])
def test_an_image_declaring_another_size_is_refused_before_decoding(fake_image_folder, tmp_path,
                                                                   capsys, size, words):
    data = private_copy(fake_image_folder, tmp_path / "data")
    (data / "train" / "cat" / "0000.png").write_bytes(png_header(*size))
    code, err = run(task2, args(data, tmp_path / "out"), capsys)
    line = one_error_line(err)
    assert code == 2 and words in line and "0000.png" in line


@pytest.mark.parametrize("kind", ["directory", "dangling link"])
def test_a_lock_that_cannot_be_opened_is_one_line_exit_2(fake_image_folder, tmp_path, capsys,
                                                         kind):
    out = tmp_path / "out"
    out.mkdir()
    if kind == "directory":
        (out / FolderLock.NAME).mkdir()
    else:
        (out / FolderLock.NAME).symlink_to(tmp_path / "gone" / "lock")
    code, err = run(task2, args(fake_image_folder, out), capsys)
    line = one_error_line(err)
    assert code == 2 and "cannot take the lock" in line and "--output-dir" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root opens another user's file")
def test_another_users_lock_is_one_line_exit_2(fake_image_folder, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / FolderLock.NAME).write_text("pid 1\n")
    (out / FolderLock.NAME).chmod(0)
    code, err = run(task2, args(fake_image_folder, out), capsys)
    assert code == 2 and "cannot take the lock" in one_error_line(err)


def test_a_folder_turned_read_only_before_its_lock_is_released_ends_quietly(tmp_path,
                                                                          monkeypatch):
    lock = FolderLock(tmp_path).acquire()
    unlink = Path.unlink

    def refused(self, missing_ok=False):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(Path, "unlink", refused)
    lock.release()  # no exception: the file stays, and the lock is free
    monkeypatch.setattr(Path, "unlink", unlink)
    FolderLock(tmp_path).acquire().release()


@pytest.mark.parametrize("script, extra, words", [
    (task2, ["--data-dir", ""], "--data-dir"),
    (task2, ["--output-dir", " "], "--output-dir"),
    (task3cd, ["--variants", ","], "no variant"),
    (task3e, ["--recipe", "speedrun", "--seeds", ","], "--seeds"),
])
def test_settings_that_select_nothing_are_errors(script, extra, words, tmp_path, capsys):
    code, err = run(script, [*extra, "--output-dir", str(tmp_path / "x")] if "--output-dir"
                    not in extra else extra, capsys)
    assert code == 2 and words in one_error_line(err)


def test_paths_are_read_as_a_shell_user_means_them(fake_image_folder, tmp_path, capsys,
                                                   monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    private_copy(fake_image_folder, tmp_path / "cifar")
    code, err = run(task2, args("~/cifar", "~/out"), capsys)
    assert code == 0, err
    assert metrics(tmp_path / "out" / "cnn1g")["data_source"] == f"image-folder:{tmp_path}/cifar"


# ---------------------------------------------------------------- 3. identity by content

@pytest.mark.slow
def test_a_finished_run_is_reused_by_a_resumed_script_only_with_the_same_settings(
        fake_image_folder, tmp_path, capsys):
    """Model 2 finished by the same command is loaded when Model 1 resumes; an older command's
    Model 2 (seed 5, lr 0.01) in the folder is not shown beside a seed-0 Model 1: it is trained
    again with this command's settings."""
    out = tmp_path / "out"
    base = args(fake_image_folder, out, "--precision", "fp32")
    resume = ["--model", "both", "--resume", str(out / "model1" / "checkpoint.pt")]
    assert run(task3, base + ["--model", "both"], capsys)[0] == 0
    model2 = metrics(out / "model2")
    code, err = run(task3, base + resume, capsys)
    assert code == 0, err
    assert metrics(out / "model2") == model2  # loaded, not trained again

    assert run(task3, base + ["--model", "2", "--seed", "5", "--lr", "0.01"], capsys)[0] == 0
    code, err = run(task3, base + resume, capsys)
    assert code == 0, err
    assert "model2: the finished run" in err and "seed 5 (finished) vs 0 (now)" in err
    retrained = metrics(out / "model2")
    assert retrained["config"]["seed"] == 0 and retrained["config"]["recipe"]["lr"] == 0.001


@pytest.mark.slow
def test_a_seed_is_used_whole(fake_image_folder, tmp_path, capsys):
    for seed, folder in (("0", "zero"), (str(2**70), "large"), (str(2**70), "again")):
        assert run(task2, args(fake_image_folder, tmp_path / folder, "--seed", seed),
                   capsys)[0] == 0
    zero, large, again = (losses(tmp_path / f / "cnn1g") for f in ("zero", "large", "again"))
    assert large != zero and again == large


# ---------------------------------------------------------------- 4. recorded = what took effect

def test_a_speedrun_batch_larger_than_the_data_is_refused_before_training(fake_image_folder,
                                                                           tmp_path, capsys):
    code, err = run(task3e, ["--recipe", "speedrun", "--data-dir", str(fake_image_folder),
                             "--output-dir", str(tmp_path), "--batch-size", "100000",
                             "--no-progress"], capsys)
    line = one_error_line(err)
    assert code == 2 and line.startswith("error: --batch-size 100000: larger than the 400")
    assert not (tmp_path / "speedrun" / "seed0").exists()


def test_quick_fills_in_only_what_was_not_given(fake_image_folder, tmp_path, capsys):
    code, err = run(task2, ["--data-dir", str(fake_image_folder), "--output-dir", str(tmp_path),
                            "--quick", "--epochs", "2", "--subset", "60", "--batch-size", "20",
                            "--no-progress"], capsys)
    assert code == 0, err
    m = metrics(tmp_path / "cnn1g")
    assert m["epochs_completed"] == 2 and m["config"]["subset"] == 60


@pytest.mark.slow
def test_a_precision_switched_on_resume_is_recorded(first_epoch, fake_image_folder, tmp_path,
                                                    capsys):
    before = metrics(first_epoch.parent)["precision"]  # what auto chose on this machine
    other = "fp32" if before == "bf16" else "bf16"
    code, err = run(task2, args(fake_image_folder, tmp_path / "b", "--resume", str(first_epoch),
                                "--epochs", "2", "--precision", other), capsys)
    assert code == 0, err
    m = metrics(tmp_path / "b" / "cnn1g")
    assert m["precision"] == other
    [change] = m["changes_on_resume"]
    assert change["precision"] == {"from": before, "to": other}


def test_a_bad_reuse_baseline_is_refused_before_any_variant_trains(fake_image_folder, tmp_path,
                                                                   capsys):
    code, err = run(task3cd, args(fake_image_folder, tmp_path, "--variants", "tanh,baseline",
                                  "--reuse-baseline", str(tmp_path / "nowhere")), capsys)
    assert code == 2 and "--reuse-baseline" in one_error_line(err)
    assert not (tmp_path / "tanh").exists()


def test_an_interrupted_model1_run_does_not_break_the_speedrun(fake_image_folder, tmp_path,
                                                               capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    half = tmp_path / "outputs" / "task3" / "model1"
    half.mkdir(parents=True)
    (half / "history.csv").write_text("epoch,step\n0.5,10\n")  # no metrics.json: interrupted
    code, err = run(task3e, ["--recipe", "speedrun", "--data-dir", str(fake_image_folder),
                             "--output-dir", str(tmp_path / "sr"), "--subset", "100",
                             "--epochs", "1", "--batch-size", "50", "--widths", "8,8,8",
                             "--seeds", "0", "--precision", "fp32", "--no-progress"], capsys)
    assert code == 0, err
    assert (tmp_path / "sr" / "task3e_speedrun_accuracy_vs_time.png").is_file()


# ---------------------------------------------------------------- 6. generated cases

def assert_clean_end(code, stderr: str):
    """The property every user path keeps: a documented exit code, no traceback, and for an
    error exactly one line that says so."""
    assert code in DOCUMENTED_EXITS, (code, stderr)
    assert "Traceback" not in stderr, stderr
    if code in (2, 3, 4):
        errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and stderr.rstrip().endswith(errors[0]), stderr


def run_with_deadline(script, argv, capsys, seconds: float) -> tuple[int, str]:
    """main(argv) with a SIGINT after `seconds` when it is still running: a long run is then
    also a test of the interrupt at a random moment."""
    running = threading.Lock()
    state = {"running": True}

    def stop():
        with running:
            if state["running"]:
                os.kill(os.getpid(), signal.SIGINT)
    previous = signal.signal(signal.SIGINT, lambda *a: None)  # a late signal lands here
    timer = threading.Timer(seconds, stop)
    timer.start()
    try:
        return run(script, argv, capsys)
    finally:
        with running:
            state["running"] = False
        timer.cancel()
        timer.join()
        signal.signal(signal.SIGINT, previous)


NUMBERS = st.sampled_from(["0", "1", "-1", "2", "1e-9", "1e9", "nan", "inf", "-inf", "0x10",
                           "3.5", "", " ", "9" * 30, "1_000", "٣"])
TEXTS = st.sampled_from(["", " ", "~", "~nobody/x", "a\nb", "-", "--", "/", ".", "..",
                         "x" * 300, "\u00e9t\u00e9", "*", "$HOME", "a,b", ","])
OPTIONS = {"--epochs": NUMBERS, "--batch-size": NUMBERS, "--lr": NUMBERS, "--seed": NUMBERS,
           "--subset": NUMBERS, "--patience": NUMBERS, "--output-dir": TEXTS,
           "--data-dir": TEXTS, "--resume": TEXTS, "--device": TEXTS, "--precision": TEXTS,
           "--model": st.sampled_from(["1", "2", "both", "3", ""])}


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chosen=st.dictionaries(st.sampled_from(sorted(OPTIONS)), st.just(None), max_size=3)
       .flatmap(lambda keys: st.fixed_dictionaries({k: OPTIONS[k] for k in keys})))
@pytest.mark.slow
def test_generated_options_end_in_a_documented_code_and_one_line(chosen, fake_image_folder,
                                                                  tmp_path_factory, capsys,
                                                                  monkeypatch):
    tmp = tmp_path_factory.mktemp("gen")
    monkeypatch.chdir(tmp)                  # relative paths land here
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # a download is refused at once
    argv = ["--data-dir", str(fake_image_folder), "--output-dir", str(tmp / "out"),
            "--subset", "40", "--epochs", "1", "--batch-size", "20", "--precision", "fp32",
            "--no-progress", "--model", "2"]
    for option, value in chosen.items():
        argv += [option, value.replace("$HOME", str(tmp))]
    code, err = run_with_deadline(task3, argv, capsys, seconds=3.0)
    assert_clean_end(code, err)


def test_a_damaged_number_in_the_saved_random_state_ends_in_one_line(resumable, tmp_path,
                                                                     capsys):
    """A byte flipped inside Python's RNG state can leave a negative number there, which
    random.setstate refuses with an OverflowError (found by the generated test below)."""
    path, data, state = resumable
    version, internal, gauss = state["rng"]["python"]
    damaged = state | {"rng": state["rng"] | {"python": (version, (-1,) + internal[1:], gauss)}}
    torch.save(damaged, tmp_path / "c.pt")
    code, err = run(task2, args(data, tmp_path / "out", "--resume", str(tmp_path / "c.pt"),
                                "--epochs", "2"), capsys)
    assert code == 2, err
    assert_clean_end(code, err)


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.floats(0.0, 1.0), flip=st.integers(0, 10**6), key=st.sampled_from(
    ["model", "optimizer", "epoch", "history", "running", "rng", "config", "precision",
     "early_stopping", "wall_time_s"]), junk=st.sampled_from([None, "x", 3, [], {}, -1.5]))
@pytest.mark.slow
def test_generated_damage_to_a_checkpoint_ends_in_exit_0_or_one_line(
        resumable, tmp_path_factory, capsys, cut, flip, key, junk):
    """A checkpoint truncated, with a byte changed, or with one entry replaced: the resume
    either works or ends in one line, exit 2."""
    path, data, state = resumable
    tmp = tmp_path_factory.mktemp("damaged")
    raw = bytearray(path.read_bytes())
    if cut < 0.3:
        raw = raw[:int(len(raw) * cut / 0.3)]
    elif cut < 0.6:
        raw[flip % len(raw)] ^= 0xFF
    else:
        torch.save(state | {key: junk}, tmp / "c.pt")
        raw = bytearray((tmp / "c.pt").read_bytes())
    (tmp / "c.pt").write_bytes(bytes(raw))
    code, err = run(task2, args(data, tmp / "out", "--resume", str(tmp / "c.pt"), "--epochs",
                                "2"), capsys)
    assert code in (0, 2, 3), err     # 3: a changed weight can make the resumed run diverge
    assert_clean_end(code, err)


@pytest.fixture(scope="module")
def resumable(fake_image_folder, tmp_path_factory):
    """A task2 checkpoint after one epoch, its data and its state."""
    out = tmp_path_factory.mktemp("resumable")
    try:
        task2.main(args(fake_image_folder, out))
    except SystemExit as e:
        assert e.code == 0
    path = out / "cnn1g" / "checkpoint.pt"
    return path, fake_image_folder, torch.load(path, weights_only=False)


def test_the_error_wording_names_the_option_and_its_value():
    err = UserError("must be positive", setting="batch_size", value=0)
    assert common.cli.word_user_error(err) == "--batch-size 0: must be positive"
    err = UserError("cannot write to output folder x: Read-only", setting="output_dir")
    assert common.cli.word_user_error(err) == ("cannot write to output folder x: Read-only; "
                                               "choose another with --output-dir")
