"""Nothing lost, nothing silently wrong: resume that honours what the user asked, full and
read-only disks, interrupts outside the training loop, large seeds, two runs into one folder,
a closed output pipe. Each test failed before the mechanism it names existed."""
from __future__ import annotations

import csv
import errno
import math
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import common.data
import common.files
from common.files import FolderLock
from common.recipes import CosineToZero
from common.trainer import change_schedule
from conftest import (args, interrupt_in, load_script, losses, make_images, metrics,
                      one_error_line, run, write_image_folder)

task2 = load_script("task2")
task3 = load_script("task3")
task3cd = load_script("task3cd")
task3e = load_script("task3e")
ROOT = Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH = 5  # --subset 100 --batch-size 20: 100 training images


@pytest.fixture
def first_epoch(fake_image_folder, tmp_path, capsys):
    """task2 trained one epoch into tmp/a; its checkpoint copied to tmp/backup/."""
    assert run(task2, args(fake_image_folder, tmp_path / "a"), capsys)[0] == 0
    backup = tmp_path / "backup" / "checkpoint.pt"
    backup.parent.mkdir()
    shutil.copy(tmp_path / "a" / "cnn1g" / "checkpoint.pt", backup)
    return backup


# ---------------------------------------------------------------- resume is explicit and honest

@pytest.mark.slow
def test_a_checkpoint_from_another_folder_continues_its_run(first_epoch, fake_image_folder,
                                                            tmp_path, capsys):
    out = tmp_path / "b"
    code, err = run(task2, args(fake_image_folder, out, "--epochs", "2", "--resume",
                                str(first_epoch)), capsys)
    assert code == 0, err
    before, after = losses(tmp_path / "a" / "cnn1g"), losses(out / "cnn1g")
    assert len(after) == 2 * STEPS_PER_EPOCH and after[:STEPS_PER_EPOCH] == before
    resumed = metrics(out / "cnn1g")
    assert resumed["epochs_completed"] == 2
    # --precision auto keeps the checkpoint's precision rather than measuring again
    assert resumed["precision"] == metrics(tmp_path / "a" / "cnn1g")["precision"]
    assert resumed["precision_reason"] == "auto: the checkpoint's, as the run began"


@pytest.mark.slow
def test_a_checkpoint_of_another_script_or_run_is_refused(first_epoch, fake_image_folder,
                                                          tmp_path, capsys):
    code, err = run(task3, args(fake_image_folder, tmp_path / "c", "--model", "2", "--resume",
                                str(first_epoch)), capsys)
    assert code == 2
    line = one_error_line(err)
    assert "task2" in line and "cnn1g" in line and "not of task3" in line
    assert not (tmp_path / "c" / "model2").exists()  # nothing trained from scratch


@pytest.mark.parametrize("extra, fragment", [
    (["--batch-size", "10"], "batch_size 20 (checkpoint) vs 10 (now)"),
    (["--seed", "1"], "seed 0 (checkpoint) vs 1 (now)"),
    (["--subset", "80"], "subset 100 (checkpoint) vs 80 (now)"),
])
@pytest.mark.slow
def test_settings_that_cannot_change_mid_run_are_checked_against_the_checkpoint(
        first_epoch, fake_image_folder, tmp_path, capsys, extra, fragment):
    code, err = run(task2, args(fake_image_folder, tmp_path / "d", "--epochs", "2",
                                "--resume", str(first_epoch), *extra), capsys)
    assert code == 2
    assert fragment in one_error_line(err)


@pytest.mark.slow
def test_other_data_is_refused_on_resume(first_epoch, fake_image_folder, tmp_path, capsys,
                                         monkeypatch):
    """Other images behind the same relative path, from another working folder: refused."""
    elsewhere = tmp_path / "elsewhere"
    write_image_folder(elsewhere / fake_image_folder.name, make_images(40, seed=11),
                       make_images(10, seed=12))
    monkeypatch.chdir(elsewhere)
    code, err = run(task2, args(fake_image_folder.name, tmp_path / "d", "--epochs", "2",
                                "--resume", str(first_epoch)), capsys)
    line = one_error_line(err)
    assert code == 2 and "data_digest " in line and "other images" in line


@pytest.mark.slow
def test_the_same_data_by_another_path_or_from_another_folder_resumes(
        first_epoch, fake_image_folder, tmp_path, capsys, monkeypatch):
    """Identity by content: the data named by a relative path from elsewhere, or a copy of it
    in another folder, is the data the run began with."""
    copy = shutil.copytree(fake_image_folder, tmp_path / "copy",
                           ignore=shutil.ignore_patterns(".cifar10-uint8-cache.pt"))
    monkeypatch.chdir(fake_image_folder.parent)
    code, err = run(task2, args(fake_image_folder.name, tmp_path / "e", "--epochs", "2",
                                "--resume", str(first_epoch)), capsys)
    assert code == 0, err
    code, err = run(task2, args(copy, tmp_path / "f", "--epochs", "2", "--resume",
                                str(first_epoch)), capsys)
    assert code == 0, err
    assert metrics(tmp_path / "f" / "cnn1g")["epochs_completed"] == 2


@pytest.mark.slow
def test_after_a_divergence_the_advised_resume_with_a_lower_rate_finishes(
        fake_image_folder, tmp_path, capsys, monkeypatch):
    """The optimizer breaks the weights at step 4 whenever its rate is above 0.02: the run
    diverges, and the command its message advises (the same with --resume and a lower --lr)
    continues from the best check's checkpoint with the new rate, recorded as a change."""
    step = torch.optim.SGD.step

    def fragile_step(self, *a, **k):
        result = step(self, *a, **k)
        if self.param_groups[0]["lr"] > 0.02:  # the run's steps, not the precision probe's
            fragile_step.calls += 1
        if fragile_step.calls == 4:
            with torch.no_grad():
                for p in self.param_groups[0]["params"]:
                    p.fill_(math.nan)
        return result
    fragile_step.calls = 0
    monkeypatch.setattr(torch.optim.SGD, "step", fragile_step)
    out = tmp_path / "e"
    code, err = run(task2, args(fake_image_folder, out, "--epochs", "2"), capsys)
    assert code == 3
    line = one_error_line(err)
    assert "became nan at epoch 1, step 5" in line
    assert "resume from the best check" in line and " with: python " in line
    advised = line.split(" with: ", 1)[1].split()
    # checkpoint.pt now holds the best check's state (best.pt: the best weights alone)
    assert advised[advised.index("--resume") + 1] == str(out / "cnn1g" / "checkpoint.pt")
    assert advised[-2:] == ["--lr", "0.005"]                # a tenth of the recipe's 0.05

    code, err = run(task2, advised[2:], capsys)             # without "python task2.py"
    assert code == 0, err
    m = metrics(out / "cnn1g")
    assert m["epochs_completed"] == 2
    assert m["changes_on_resume"] == [{"step": 2, "epoch": 0.4, "lr": {"from": 0.05, "to": 0.005}}]
    with open(out / "cnn1g" / "history.csv") as f:
        rates = [float(r["lr"]) for r in csv.DictReader(f)]
    assert rates[0] == 0.05 and set(rates[1:]) == {0.005}
    assert m["config"]["recipe"]["lr"] == 0.005


def cosine_run(steps: int, total: int = 100):
    """An optimizer and its cosine schedule (rate 1.0) after `steps` training steps."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, CosineToZero(total))
    return optimizer, scheduler, advance(optimizer, scheduler, steps)


def advance(optimizer, scheduler, steps: int) -> list[float]:
    rates = []
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        rates.append(optimizer.param_groups[0]["lr"])
    return rates


def test_a_cosine_schedule_resumed_longer_decays_from_where_it_was_to_the_new_end():
    optimizer, scheduler, _ = cosine_run(60)
    reached = optimizer.param_groups[0]["lr"]
    state = scheduler.state_dict()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, CosineToZero(100))
    scheduler.load_state_dict(state)                     # what a resume restores
    change_schedule(optimizer, scheduler, total_steps=200)
    rates = [optimizer.param_groups[0]["lr"]] + advance(optimizer, scheduler, 140)
    assert rates[0] == pytest.approx(reached)            # no jump at the resume
    assert all(b <= a for a, b in zip(rates, rates[1:]))  # never climbs back up
    assert rates[-1] == pytest.approx(0.0, abs=1e-12) and rates[70] > 0.1 * reached


def test_a_new_rate_on_resume_keeps_the_schedule_shape():
    optimizer, scheduler, _ = cosine_run(50)
    change_schedule(optimizer, scheduler, lr=0.1)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5)  # half-way down
    assert advance(optimizer, scheduler, 1)[0] == pytest.approx(0.1 * CosineToZero(100)(51))


# ---------------------------------------------------------------- the disk says no

@pytest.mark.parametrize("failure, words", [
    (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
    (PermissionError(errno.EACCES, "Permission denied"), "Permission denied"),
])
def test_a_full_or_read_only_disk_mid_run_ends_in_one_line_exit_4_old_checkpoint_intact(
        fake_image_folder, tmp_path, capsys, monkeypatch, failure, words):
    out = tmp_path / "f"
    mkstemp = common.files.tempfile.mkstemp
    writes = []

    def failing_mkstemp(*a, **k):
        if k.get("prefix", "").startswith((".checkpoint.pt", ".best.pt")):
            writes.append(k.get("prefix"))
        if len(writes) > 3:  # the first checkpoint and best.pt are written, then the disk fills
            raise failure
        return mkstemp(*a, **k)
    monkeypatch.setattr(common.files.tempfile, "mkstemp", failing_mkstemp)
    code, err = run(task2, args(fake_image_folder, out, "--epochs", "2"), capsys)
    assert code == 4
    line = one_error_line(err)
    assert line.startswith("error: cannot write ") and words in line
    monkeypatch.undo()
    state = torch.load(out / "cnn1g" / "checkpoint.pt", weights_only=False)
    assert state["global_step"] == 2  # the check after step 2 wrote it, whole
    assert not [p for p in (out / "cnn1g").iterdir() if p.name.endswith(".tmp")]


def test_a_cache_that_cannot_be_written_never_fails_the_run(fake_image_folder, tmp_path, capsys,
                                                            monkeypatch):
    data = shutil.copytree(fake_image_folder, tmp_path / "data",
                           ignore=shutil.ignore_patterns(".cifar10-uint8-cache.pt"))

    mkstemp = common.files.tempfile.mkstemp

    def full_disk(*a, prefix="", **k):  # the disk refuses the cache alone
        if "cifar10" in prefix:
            raise OSError(errno.ENOSPC, "No space left on device")
        return mkstemp(*a, prefix=prefix, **k)
    monkeypatch.setattr(common.files.tempfile, "mkstemp", full_disk)
    with pytest.warns(UserWarning, match="could not write the CIFAR-10 cache"):
        code, err = run(task2, args(data, tmp_path / "out"), capsys)
    assert code == 0, err
    assert metrics(tmp_path / "out" / "cnn1g")["epochs_completed"] == 1


# ---------------------------------------------------------------- seeds, folders, pipes

@pytest.mark.parametrize("seed", [pytest.param(10**15, marks=pytest.mark.slow),
                                  pytest.param(1_764_387_000_123_456_789,
                                               marks=pytest.mark.slow), 2**70])
def test_any_large_seed_trains(fake_image_folder, tmp_path, capsys, seed):
    code, err = run(task2, args(fake_image_folder, tmp_path, "--seed", str(seed)), capsys)
    assert code == 0, err
    assert metrics(tmp_path / "cnn1g")["config"]["seed"] == seed


def test_a_second_run_into_a_folder_being_written_stops_with_one_line(fake_image_folder,
                                                                      tmp_path, capsys):
    out = tmp_path / "g"
    out.mkdir()
    lock = FolderLock(out).acquire()  # what the first run holds while it writes
    try:
        code, err = run(task2, args(fake_image_folder, out), capsys)
    finally:
        lock.release()
    assert code == 2 and "is being written by another run (pid " in one_error_line(err)
    assert not (out / "cnn1g").exists()
    assert run(task2, args(fake_image_folder, out), capsys)[0] == 0  # free again


@pytest.mark.slow
def test_a_closed_output_pipe_ends_quietly():
    proc = subprocess.run(f"{sys.executable} -m task1 | head -c 20", shell=True, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert len(proc.stdout) == 20
    assert "Traceback" not in proc.stderr and "Broken pipe" not in proc.stderr, proc.stderr


# ---------------------------------------------------------------- interrupts anywhere

@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_the_data_is_decoded_ends_in_one_line(fake_image_folder, tmp_path, capsys,
                                                              monkeypatch, signum, code):
    import common.data
    data = shutil.copytree(fake_image_folder, tmp_path / "data",
                           ignore=shutil.ignore_patterns(".cifar10-uint8-cache.pt"))
    interrupt_in(monkeypatch, common.data, "_decode_image_folder", signum)
    exit_code, err = run(task2, args(data, tmp_path / "out"), capsys)
    assert exit_code == code
    assert one_error_line(err).startswith(f"{signal.Signals(signum).name} received")
    assert not (data / ".cifar10-uint8-cache.pt").exists()


def test_a_signal_during_the_final_table_still_writes_metrics_and_history(
        fake_image_folder, tmp_path, capsys, monkeypatch):
    from common.trainer import Trainer
    interrupt_in(monkeypatch, Trainer, "final_table")
    code, err = run(task2, args(fake_image_folder, tmp_path), capsys)
    assert code == 130 and "SIGINT received at the end of training" in err
    assert metrics(tmp_path / "cnn1g")["epochs_completed"] == 1
    assert len(losses(tmp_path / "cnn1g")) == STEPS_PER_EPOCH


@pytest.mark.slow
def test_a_signal_between_study_variants_keeps_the_finished_one(fake_image_folder, tmp_path,
                                                                 capsys, monkeypatch):
    import common.run
    interrupt_in(monkeypatch, common.run, "train_run", after=1)  # as the second one begins
    code, err = run(task3cd, args(fake_image_folder, tmp_path, "--variants", "baseline,tanh"),
                    capsys)
    assert code == 130 and "Traceback" not in err
    assert metrics(tmp_path / "baseline")["epochs_completed"] == 1
    assert not (tmp_path / "tanh").exists()


@pytest.mark.slow
def test_a_signal_in_the_speedrun_keeps_the_finished_seeds(fake_image_folder, tmp_path, capsys,
                                                           monkeypatch):
    from common import speedrun
    interrupt_in(monkeypatch, speedrun.SpeedrunNet, "init_whitening", signal.SIGTERM, after=1)
    code, err = run(task3e, ["--recipe", "speedrun", "--data-dir", str(fake_image_folder),
                             "--output-dir", str(tmp_path), "--subset", "100", "--epochs", "1",
                             "--batch-size", "50", "--widths", "8,8,8", "--seeds", "0,1",
                             "--no-progress"], capsys)
    assert code == 143 and "Traceback" not in err
    assert (tmp_path / "speedrun" / "seed0" / "metrics.json").is_file()
    assert not (tmp_path / "speedrun" / "seed1").exists()
