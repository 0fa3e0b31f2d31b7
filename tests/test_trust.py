"""Signals at every moment of a script's life (start-up, training, shut-down; SIGINT, SIGTERM and
SIGHUP alike), output folders shared by two scripts, and paths as the operating system gives
them (names that are not valid UTF-8)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common import errors as signals  # while_starting, after_main
from common.cli import path_text
from conftest import ROOT, args, load_script, losses, metrics, one_error_line, run

task2 = load_script("task2")
task3cd = load_script("task3cd")
task3e = load_script("task3e")


def script_env(**extra) -> dict:
    return os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
                         "PYTHONUNBUFFERED": "1"} | extra


def default_hangup():
    """A child started by a test under nohup would inherit SIGHUP ignored; start it as a shell
    in a terminal starts a program."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


# ---------------------------------------------------------------- start-up and shut-down

@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP,
                                    signal.SIGXCPU, signal.SIGUSR1])
def test_a_signal_while_torch_is_imported_is_one_line_and_its_exit_code(tmp_path, signum):
    # importing torch takes seconds; half a second in, the script is inside those imports
    proc = subprocess.Popen([sys.executable, str(ROOT / "task2.py"), "--quick", "--data-dir",
                             str(tmp_path / "data")], cwd=tmp_path, env=script_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_hangup)
    time.sleep(0.5)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    assert err.splitlines() == [f"{signal.Signals(signum).name} received during start-up, "
                                "before anything was written"]
    assert not (tmp_path / "data").exists() and not (tmp_path / "outputs").exists()


def test_a_signal_after_main_returned_says_so_with_its_exit_code():
    code = ("import os, signal, time\n"
            "from common import errors as signals\n"
            "signals.while_starting('__main__')\n"
            "signals.after_main()\n"
            "os.kill(os.getpid(), signal.SIGINT)\n"
            "time.sleep(30)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=script_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 130
    assert proc.stderr == ("SIGINT received during shut-down; the script had finished and its "
                           "results are written\n")


def test_the_start_up_handler_is_not_installed_when_a_script_is_imported():
    before = signal.getsignal(signal.SIGINT)
    signals.while_starting("task2")  # what load_script and an import see as __name__
    assert signal.getsignal(signal.SIGINT) is before


# ---------------------------------------------------------------- SIGHUP in training

@pytest.mark.slow
def test_sighup_in_training_writes_a_checkpoint_and_prints_the_resume_command(
        fake_image_folder, tmp_path, capsys):
    out = tmp_path / "out"
    checkpoint = out / "cnn1g" / "checkpoint.pt"
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err:  # batch 1: hundreds of steps an epoch, a checkpoint at each check
        proc = subprocess.Popen([sys.executable, str(ROOT / "task2.py"),
                                 *args(fake_image_folder, out, "--epochs", "30", "--batch-size",
                                       "1", "--precision", "fp32")],
                                cwd=ROOT, env=script_env(), stdout=subprocess.DEVNULL, stderr=err,
                                preexec_fn=default_hangup)
        try:
            deadline = time.monotonic() + 240
            while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert proc.poll() is None and checkpoint.exists(), log.read_text()
            proc.send_signal(signal.SIGHUP)
            code = proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
    stderr = log.read_text()
    assert code == 129 and "Traceback" not in stderr, stderr
    assert "SIGHUP received at epoch " in stderr
    resume = [line for line in stderr.splitlines() if line.startswith("Resume with: ")]
    assert len(resume) == 1 and str(checkpoint) in resume[0]
    steps = len(losses(out / "cnn1g"))
    code, err = run(task2, resume[0].split()[4:] + ["--epochs", "1", "--batch-size", "1"], capsys)
    assert code == 0, err
    assert len(losses(out / "cnn1g")) > steps and metrics(out / "cnn1g")["epochs_completed"] == 1


def test_sighup_ignored_by_nohup_stays_ignored(fake_image_folder, tmp_path, capsys, monkeypatch):
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        import common.trainer
        from conftest import interrupt_in
        interrupt_in(monkeypatch, common.trainer, "train_step", signum=signal.SIGHUP, after=1)
        code, err = run(task2, args(fake_image_folder, tmp_path / "out", "--precision", "fp32"),
                        capsys)
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert code == 0, err
    assert metrics(tmp_path / "out" / "cnn1g")["epochs_completed"] == 1


# ---------------------------------------------------------------- one folder, one script

@pytest.mark.slow
def test_a_second_script_into_the_same_output_folder_is_refused_and_the_first_is_kept(
        fake_image_folder, tmp_path, capsys):
    out = tmp_path / "shared"
    code, err = run(task3cd, args(fake_image_folder, out, "--variants", "baseline",
                                  "--precision", "fp32"), capsys)
    assert code == 0, err
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code, err = run(task3e, args(fake_image_folder, out, "--variants", "baseline",
                                 "--precision", "fp32"), capsys)
    assert code == 2
    line = one_error_line(err)
    assert line.startswith(f"error: --output-dir {out}: holds the results of task3cd")
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before


def test_an_owner_mark_that_is_not_a_file_is_one_line_exit_2(fake_image_folder, tmp_path,
                                                             capsys):
    (tmp_path / "out" / ".task").mkdir(parents=True)
    code, err = run(task2, args(fake_image_folder, tmp_path / "out", "--precision", "fp32"),
                    capsys)
    assert code == 2 and "is not the file this package writes there" in one_error_line(err)


@pytest.mark.slow
def test_the_same_script_again_into_its_own_folder_is_not_refused(fake_image_folder, tmp_path,
                                                                   capsys):
    out = tmp_path / "out"
    for _ in range(2):
        code, err = run(task2, args(fake_image_folder, out, "--precision", "fp32"), capsys)
        assert code == 0, err


# ---------------------------------------------------------------- paths as the OS gives them

def test_a_name_that_is_not_valid_utf8_is_a_path_like_any_other():
    name = os.fsdecode(b"/tmp/caf\xe9-\xff")
    assert path_text(name) == name
    with pytest.raises(Exception, match="too long"):
        path_text(os.fsdecode(b"/tmp/" + b"\xff" * 256))


def test_data_and_output_folders_whose_names_are_not_utf8_train(fake_arrays, tmp_path, capsys):
    from conftest import write_image_folder
    data = Path(os.fsdecode(bytes(tmp_path) + b"/data-\xff\xfe"))
    out = Path(os.fsdecode(bytes(tmp_path) + b"/out-caf\xe9"))
    write_image_folder(data, *fake_arrays)
    code, err = run(task2, args(data, out, "--precision", "fp32"), capsys)
    assert code == 0, err
    assert (out / "cnn1g" / "metrics.json").is_file()


def test_a_16_bit_photograph_for_task4bc_keeps_its_brightness(tmp_path):
    import numpy as np
    from PIL import Image
    path = tmp_path / "grey16.png"
    Image.fromarray(np.full((40, 60), 32768, dtype=np.uint16)).save(path)  # mid-grey, 16 bits
    image = load_script("task4bc").load_image(path)
    assert image.shape == (3, 224, 224)
    assert float(image.mean()) == pytest.approx(128 / 255, abs=1e-3)  # not clipped to white


def test_an_image_too_large_for_predict_is_refused_before_decoding(tmp_path, monkeypatch):
    from PIL import Image
    from common.data import read_image
    from common.errors import UserError
    path = tmp_path / "large.png"
    Image.new("RGB", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5_000)
    with pytest.raises(UserError, match="declares 100x100 pixels"):
        read_image(path, size=None)
