"""Tests of bit-exact resume, SIGINT/SIGTERM checkpoints, atomic writes, divergence,
and torchrun/DDP (2 CPU processes over gloo)."""
from __future__ import annotations

import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import common.files as io
from common.data import AugmentConfig
from common.errors import DivergenceError, Interrupted
from common.data import TensorLoader
from common.models import Model1
from common.config import read_checkpoint
from common.files import BEST_NAME, CHECKPOINT_NAME, RunDir
from common.trainer import Trainer
from conftest import trainer_config

ROOT = Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH = 5  # 40 training images, batch 8; checks after steps 2 and 5 of each epoch


# ---------------------------------------------------------------- a tiny in-process trainer

def tiny_trainer(out: Path, epochs: int) -> Trainer:
    """Model 1 shrunk (BatchNorm buffers, dropout), AdamW, a StepLR and augmentation
    that draws random numbers every batch: everything a resume has to restore."""
    g = torch.Generator().manual_seed(123)
    images = torch.randint(0, 256, (60, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.arange(60) % 10
    torch.manual_seed(0)  # the same initial weights in every run
    model = Model1(filters=(4, 4, 4), hidden=8, dropout=0.2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
    augment = AugmentConfig(hflip=True, rotate_degrees=5, noise_std=0.05)
    train = TensorLoader(images[:40], labels[:40], 8, device="cpu", train=True, augment=augment,
                         seed=7)
    val = TensorLoader(images[40:50], labels[40:50], 16, device="cpu", train=False)
    test = TensorLoader(images[50:], labels[50:], 16, device="cpu", train=False)
    config = trainer_config(opt="adamw", lr=3e-3, batch_size=8, epochs=epochs,
                            checks_per_epoch=2, patience=4)
    torch.manual_seed(1)  # the augmentation and dropout stream, as common.run.train_run seeds it
    return Trainer(model, optimizer, {"train": train, "val": val, "test": test}, config,
                   scheduler=scheduler, run_dir=RunDir(out))


def signal_at_training_step(trainer: Trainer, step: int, signum=signal.SIGINT) -> dict:
    """Raise a real signal in this process during the forward pass of training step `step`;
    the returned dict gets the handler in place right after the trainer's handler ran."""
    seen = {"steps": 0}

    def hook(module, inputs):
        if module.training:
            seen["steps"] += 1
            if seen["steps"] == step:
                signal.raise_signal(signum)  # runs the Python handler before returning
                seen["handler_after"] = signal.getsignal(signum)
    trainer.raw_model.register_forward_pre_hook(hook)
    return seen


def run_summary(trainer: Trainer, result: dict) -> dict:
    checks = [{k: v for k, v in c.items() if k != "wall_time_s"}
              for c in trainer.history["checks"]]
    return {"checks": checks, "step_loss": trainer.history["step_loss"],
            "final": result["final"], "best_check": result["best_check"],
            "epochs_completed": result["epochs_completed"]}


def assert_same_tensors(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def assert_same_checkpoints(path_a: Path, path_b: Path):
    a = torch.load(path_a, weights_only=False)
    b = torch.load(path_b, weights_only=False)
    assert_same_tensors(a["model"], b["model"])
    assert_same_tensors(a["best_model"], b["best_model"])
    state_a, state_b = a["optimizer"]["state"], b["optimizer"]["state"]
    assert state_a.keys() == state_b.keys()
    for p in state_a:
        assert_same_tensors(state_a[p], state_b[p])
    assert a["lr_scheduler"] == b["lr_scheduler"]
    assert (a["epoch"], a["global_step"], a["early_stopping"]) == \
        (b["epoch"], b["global_step"], b["early_stopping"])


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    trainer = tiny_trainer(out, epochs=2)
    result = trainer.fit()
    return out, trainer, result


# ---------------------------------------------------------------- resume

def assert_resumed_run_matches(straight_run, folder: Path):
    """Resuming folder's checkpoint to the end gives the run never stopped, bit for bit."""
    out_a, straight, result_a = straight_run
    resumed = tiny_trainer(folder, epochs=2)
    resumed.resume(read_checkpoint(folder / CHECKPOINT_NAME))
    result_b = resumed.fit()
    assert_same_tensors(straight.raw_model.state_dict(), resumed.raw_model.state_dict())
    assert run_summary(resumed, result_b) == run_summary(straight, result_a)
    assert_same_checkpoints(out_a / CHECKPOINT_NAME, folder / CHECKPOINT_NAME)


def test_resume_after_one_epoch_gives_bit_identical_weights_history_and_steps(straight_run,
                                                                               tmp_path):
    _, straight, _ = straight_run
    assert len(straight.history["step_loss"]) == 2 * STEPS_PER_EPOCH
    assert len(straight.history["checks"]) == 4

    first = tiny_trainer(tmp_path, epochs=1)
    first.fit()
    ckpt = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=False)
    assert (ckpt["epoch"], ckpt["step_in_epoch"], ckpt["global_step"]) == (1, 0, STEPS_PER_EPOCH)
    assert ckpt["lr_scheduler"]["last_epoch"] == STEPS_PER_EPOCH
    assert {"torch", "python", "numpy"} <= ckpt["rng"].keys()

    assert_resumed_run_matches(straight_run, tmp_path)


def test_sigint_mid_epoch_then_resume_gives_bit_identical_run(straight_run, tmp_path):
    interrupted = tiny_trainer(tmp_path, epochs=2)
    signal_at_training_step(interrupted, 3)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(Interrupted) as err:
        interrupted.fit()
    assert err.value.exit_code == 130
    assert str(err.value) == "SIGINT received at epoch 1, step 3"
    assert err.value.checkpoint == tmp_path / CHECKPOINT_NAME  # the one to resume from
    assert signal.getsignal(signal.SIGINT) == before  # the trainer's handler is gone again

    ckpt = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=False)
    assert (ckpt["epoch"], ckpt["step_in_epoch"], ckpt["global_step"]) == (0, 3, 3)
    assert ckpt["running"]["count"] == 8  # step 3's batch, since the check after step 2
    with open(tmp_path / "history.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [2]
    with open(tmp_path / "steps.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3]

    assert_resumed_run_matches(straight_run, tmp_path)


def test_sigterm_exits_143_a_second_signal_would_kill_and_handlers_are_restored(tmp_path):
    trainer = tiny_trainer(tmp_path, epochs=1)
    seen = signal_at_training_step(trainer, 4, signal.SIGTERM)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as err:
        trainer.fit()
    assert err.value.exit_code == 143
    assert str(err.value) == "SIGTERM received at epoch 1, step 4"
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=False)["global_step"] == 4
    assert seen["handler_after"] == signal.SIG_DFL  # single process: no waiting for a 2nd one
    assert signal.getsignal(signal.SIGTERM) == before


# ---------------------------------------------------------------- atomic writes

def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("failure", [RuntimeError, KeyboardInterrupt])
def test_save_torch_failing_mid_write_keeps_old_checkpoint_and_leaves_no_temp_file(
        tmp_path, monkeypatch, failure):
    path = tmp_path / "checkpoint.pt"
    io.save_torch({"epoch": 1, "w": torch.arange(5.0)}, path)
    good = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"PK\x03\x04 half a zip file")
        f.flush()
        raise failure("disk full")
    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(failure):
        io.save_torch({"epoch": 2, "w": torch.zeros(5)}, path)
    assert path.read_bytes() == good
    state = torch.load(path, weights_only=True)
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.arange(5.0))
    assert files_in(tmp_path) == ["checkpoint.pt"]


def test_json_and_csv_writes_are_all_or_nothing(tmp_path):
    io.save_json({"accuracy": 0.5}, tmp_path / "metrics.json")
    io.save_csv([{"step": 1, "loss": 2.0}], tmp_path / "steps.csv")
    with pytest.raises(TypeError):  # not JSON: fails inside the write
        io.save_json({"accuracy": 0.9, "bad": object()}, tmp_path / "metrics.json")
    with pytest.raises(ValueError):  # the second row has a key the header lacks
        io.save_csv([{"step": 1, "loss": 1.0}, {"step": 2, "oops": 0}], tmp_path / "steps.csv")
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"accuracy": 0.5}
    assert (tmp_path / "steps.csv").read_text().splitlines() == ["step,loss", "1,2.0"]
    assert files_in(tmp_path) == ["metrics.json", "steps.csv"]


def test_atomic_write_of_new_file_gets_umask_permissions_not_mkstemp_0600(tmp_path):
    old = os.umask(0o022)
    try:
        path = io.save_json({}, tmp_path / "metrics.json")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == io._FILE_MODE
    assert io._FILE_MODE & 0o044  # readable by others under the usual umask (not 0600)


# ---------------------------------------------------------------- divergence

def test_nan_training_loss_names_step_suggests_lower_lr_and_keeps_last_good_checkpoint(
        tmp_path):
    trainer = tiny_trainer(tmp_path, epochs=2)
    calls = {"n": 0}

    def nan_at_step_4(module, inputs, output):
        if module.training:
            calls["n"] += 1
            if calls["n"] == 4:
                return output * float("nan")
    trainer.raw_model.register_forward_hook(nan_at_step_4)
    with pytest.raises(DivergenceError) as err:
        trainer.fit()
    assert str(err.value) == "the training loss became nan at epoch 1, step 4"
    # the advice: the best check's resumable checkpoint (the check after step 2), at the rate
    # in effect (StepLR halved 3e-3 after step 3)
    # (checkpoint.pt, rewritten as the best check's state: best.pt holds the weights alone)
    assert (err.value.checkpoint, err.value.lr) == (tmp_path / CHECKPOINT_NAME,
                                                    pytest.approx(1.5e-3))
    assert read_checkpoint(err.value.checkpoint)["global_step"] == 2
    assert DivergenceError.exit_code == 3
    ckpt = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=False)
    assert ckpt["global_step"] == 2  # the check after step 2 wrote it
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_weights_broken_by_a_finite_loss_step_are_never_checkpointed(tmp_path):
    """Step 5 (the end of epoch 1) has a finite loss but leaves NaN weights: the check after it
    must stop the run instead of writing those weights to checkpoint.pt."""
    trainer = tiny_trainer(tmp_path, epochs=2)
    calls = {"n": 0}

    def break_weights(optimizer, args, kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            with torch.no_grad():
                trainer.raw_model[0].weight.fill_(float("nan"))
    trainer.optimizer.register_step_post_hook(break_weights)
    with pytest.raises(DivergenceError, match=r"^the validation loss became nan at epoch 1, "
                                              r"step 5$"):
        trainer.fit()
    for name in (CHECKPOINT_NAME, BEST_NAME):
        state = torch.load(tmp_path / name, weights_only=False)
        assert torch.isfinite(state["model"]["0.weight"]).all(), name
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=False)["global_step"] == 2


# ---------------------------------------------------------------- the real script

def script_env() -> dict:
    return os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
                         "PYTHONUNBUFFERED": "1"}


def task3_args(data_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["--model", "2", "--subset", "400", "--data-dir", str(data_dir), "--output-dir",
            str(out), "--device", "cpu", "--no-progress", *extra]


@pytest.mark.slow
def test_huge_lr_exits_3_with_one_error_line_and_no_traceback(fake_image_folder, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "task3.py"),
         *task3_args(fake_image_folder, tmp_path, "--epochs", "1", "--lr", "1e8")],
        cwd=ROOT, env=script_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert " loss became " in errors[0] and ", step " in errors[0]
    assert "lower the learning rate (--lr)" in errors[0]
    assert not (tmp_path / "model2" / "metrics.json").exists()


def interrupt_task3(data_dir: Path, out: Path, signum) -> tuple[int, str]:
    """Start a long task3.py run, send `signum` once it has written its first checkpoint."""
    checkpoint = out / "model2" / CHECKPOINT_NAME
    log = out / "stderr.txt"
    with open(log, "w") as err:
        # batch 1: about 360 steps per epoch, so the first checkpoint (mid-epoch 1) comes
        # seconds before early stopping could end the run
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "task3.py"),
             *task3_args(data_dir, out, "--epochs", "50", "--batch-size", "1")],
            cwd=ROOT, env=script_env(), stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 240
            while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert proc.poll() is None, f"ended before the signal: {log.read_text()}"
            assert checkpoint.exists(), "no checkpoint within 240 s"
            proc.send_signal(signum)
            code = proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
    return code, log.read_text()


@pytest.mark.slow
def test_sigint_on_task3_exits_130_and_printed_resume_command_finishes(fake_image_folder,
                                                                       tmp_path):
    code, stderr = interrupt_task3(fake_image_folder, tmp_path, signal.SIGINT)
    assert code == 130, stderr
    assert "Traceback" not in stderr
    run_dir = tmp_path / "model2"
    assert {"checkpoint.pt", "history.csv", "steps.csv"} <= set(files_in(run_dir))
    assert not (run_dir / "metrics.json").exists()
    with open(run_dir / "steps.csv") as f:
        steps_before = [r["loss"] for r in csv.DictReader(f)]
    with open(run_dir / "history.csv") as f:
        checks_before = list(csv.DictReader(f))
    ckpt = torch.load(run_dir / CHECKPOINT_NAME, weights_only=False)
    assert ckpt["global_step"] == len(steps_before) >= 180
    assert len(checks_before) == len(ckpt["history"]["checks"]) >= 1

    resume_lines = [line for line in stderr.splitlines() if line.startswith("Resume with: ")]
    assert len(resume_lines) == 1, stderr
    command = shlex.split(resume_lines[0].removeprefix("Resume with: "))
    assert command[:2] == ["python", str(ROOT / "task3.py")]
    assert command[command.index("--resume") + 1] == str(run_dir / CHECKPOINT_NAME)
    # the printed command, with this interpreter and 1 epoch instead of 50 to finish soon
    command[0] = sys.executable
    command[command.index("--epochs") + 1] = "1"
    proc = subprocess.run(command, cwd=ROOT, env=script_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_completed"] >= ckpt["global_step"] / 360
    with open(run_dir / "steps.csv") as f:
        steps_after = [r["loss"] for r in csv.DictReader(f)]
    with open(run_dir / "history.csv") as f:
        checks_after = list(csv.DictReader(f))
    assert steps_after[:len(steps_before)] == steps_before  # continued, not restarted
    assert len(steps_after) > len(steps_before) or ckpt["step_in_epoch"] == 0
    assert checks_after[:len(checks_before)] == checks_before


@pytest.mark.slow
def test_sigterm_on_task3_exits_143_with_checkpoint_and_history(fake_image_folder, tmp_path):
    code, stderr = interrupt_task3(fake_image_folder, tmp_path, signal.SIGTERM)
    assert code == 143, stderr
    assert "SIGTERM received at epoch" in stderr and "Traceback" not in stderr
    assert "Resume with: python " in stderr and " --resume " in stderr
    run_dir = tmp_path / "model2"
    assert torch.load(run_dir / CHECKPOINT_NAME, weights_only=False)["global_step"] >= 180
    assert (run_dir / "history.csv").read_text().startswith("epoch,step,train_loss")
    assert not [n for n in files_in(run_dir) if n.endswith(".tmp")]


# ---------------------------------------------------------------- torchrun / DDP

@pytest.mark.slow
def test_torchrun_two_gloo_ranks_disjoint_shards_rank0_writes_identical_decisions(
        fake_image_folder, tmp_path):
    out, probes = tmp_path / "out", tmp_path / "probes"
    # 360 training images, batch 20: 9 steps of 20 images per rank and epoch, nothing dropped
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", str(ROOT / "tests" / "ddp_probe.py"), str(probes),
               *task3_args(fake_image_folder, out, "--epochs", "2", "--batch-size", "20")]
    proc = subprocess.run(command, cwd=ROOT, env=script_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ranks = [json.loads((probes / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]

    # every epoch: two disjoint shards of 180 images that together are the whole training set
    for epoch in ("0", "1"):
        shards = [r["seen"][epoch] for r in ranks]
        assert [len(s) for s in shards] == [180, 180]
        assert [len(set(s)) for s in shards] == [180, 180]
        assert not set(shards[0]) & set(shards[1])
    assert set(ranks[0]["seen"]["0"]) | set(ranks[1]["seen"]["0"]) == \
        set(ranks[0]["seen"]["1"]) | set(ranks[1]["seen"]["1"])
    assert ranks[0]["seen"]["0"] != ranks[0]["seen"]["1"]  # reshuffled each epoch

    # rank 0 alone wrote into the output folder
    out_resolved = str(out.resolve())
    written = [[w for w in r["writes"] if w.startswith(out_resolved)] for r in ranks]
    assert written[1] == []
    assert {Path(w).name for w in written[0]} >= {"checkpoint.pt", "best.pt", "history.csv",
                                                  "steps.csv", "metrics.json", "results.json"}
    assert files_in(out / "model2") == ["best.pt", "checkpoint.pt", "config.json", "confusion.csv",
                                        "confusion.png", "history.csv", "metrics.json",
                                        "steps.csv"]
    metrics = json.loads((out / "model2" / "metrics.json").read_text())
    assert metrics["world_size"] == 2

    # reduced losses and accuracies, early stopping and weights: the same on both ranks
    fits = [r["fit"] for r in ranks]
    assert fits[0]["checks"] == fits[1]["checks"] and len(fits[0]["checks"]) == 4
    assert fits[0]["step_loss"] == fits[1]["step_loss"] and len(fits[0]["step_loss"]) == 18
    assert fits[0]["weights"] == fits[1]["weights"]
    for key in ("final", "stopped_early", "best_check", "epochs_completed"):
        assert fits[0]["result"][key] == fits[1]["result"][key], key
    assert fits[0]["result"]["final"] == metrics["final"]
    assert metrics["final"]["train"]["accuracy"] > 0.1  # it learned something
