"""Time a user can plan with: the expected time of an epoch and of the run, said once after
the first steps (from a stubbed clock here: its numbers follow from the step times), and
--help answered without importing torch."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from common import system
from common.data import TensorLoader, cifar10_splits
from common.recipes import QUICK_SUBSET, SpeedrunConfig
from common.speedrun import train_speedrun
from common.trainer import Progress, Trainer
from conftest import trainer_config


class FakeTime:
    """A clock that moves only when the model computes: a training batch takes `step`
    seconds (the first two `warmup` seconds: the slow first steps), an evaluation batch
    `evaluation` seconds."""

    def __init__(self, step=0.5, warmup=5.0, evaluation=0.1):
        self.now, self.step, self.warmup, self.evaluation = 1000.0, step, warmup, evaluation
        self.training_batches = 0

    def __call__(self) -> float:
        return self.now

    def model(self) -> nn.Module:
        torch.manual_seed(0)
        clock = self

        class Timed(nn.Sequential):
            def forward(self, x):
                if self.training:
                    clock.training_batches += 1
                    clock.now += clock.warmup if clock.training_batches <= 2 else clock.step
                else:
                    clock.now += clock.evaluation
                return super().forward(x)
        return Timed(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))


def fit_timed(monkeypatch, steps_per_epoch, dist=system.DistInfo(), **recipe):
    clock = FakeTime()
    monkeypatch.setattr(Progress, "clock", staticmethod(clock))
    g = torch.Generator().manual_seed(0)
    n = 16 * steps_per_epoch
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % 10
    train = TensorLoader(images, labels, 16, device="cpu", train=True)
    val = TensorLoader(images[:40], labels[:40], 20, device="cpu", train=False)  # 2 batches
    model = clock.model()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.05),
                      {"train": train, "val": val}, trainer_config(**recipe), dist=dist)
    trainer.fit()


def estimate_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "expected time" in line]


def test_the_run_says_once_its_epoch_and_whole_time_from_the_steps_after_warm_up(
        monkeypatch, capsys):
    # 10 steps an epoch, checks after steps 5 and 10: the line comes after step 7, with one
    # check measured (2 evaluation batches, 0.2 s); the two slow first steps are left out
    fit_timed(monkeypatch, 10, epochs=20, patience=None)
    lines = estimate_lines(capsys.readouterr().err)
    assert len(lines) == 1
    assert lines[0] == ("tiny: expected time, an estimate from steps 3-7: an epoch about 5 s, "
                        "the run about 2 min = 20 epochs x (10 steps x 0.500 s + 2 checks x "
                        "0.20 s)")


def test_with_early_stopping_the_run_time_is_at_most_and_a_check_is_guessed_before_the_first(
        monkeypatch, capsys):
    # 20 steps an epoch: the line comes after step 7, before the first check (step 10); a
    # check's 40 evaluation images at a third of a training image's 0.5 s / 16
    fit_timed(monkeypatch, 20, epochs=50, patience=4)
    lines = estimate_lines(capsys.readouterr().err)
    assert lines == ["tiny: expected time, an estimate from steps 3-7: an epoch about 11 s, "
                     "the run at most 9 min = 50 epochs x (20 steps x 0.500 s + 2 checks x "
                     "0.42 s guessed from its evaluation images); early stopping may end it "
                     "sooner"]


def test_under_torchrun_only_rank_0_says_the_expected_time(monkeypatch, capsys):
    fit_timed(monkeypatch, 10, dist=system.DistInfo(rank=1), epochs=2, patience=None)
    assert estimate_lines(capsys.readouterr().err) == []


def test_the_speed_run_says_its_expected_time_once(fake_official, monkeypatch, capsys):
    ticks = iter(range(10_000))
    monkeypatch.setattr(Progress, "clock", staticmethod(lambda: 0.25 * next(ticks)))
    splits = cifar10_splits(fake_official, seed=0, subset=200)
    cfg = SpeedrunConfig(widths=(8, 16, 16), batch_size=50, epochs=3, whiten_images=100)
    result, _ = train_speedrun(splits, cfg, device="cpu", monitor=True)
    steps = len(result["history"]["step_loss"]) // 3
    lines = estimate_lines(capsys.readouterr().err)
    assert len(lines) == 1
    assert f"3 epochs x ({steps} steps x 0.250 s + 1 check x " in lines[0]
    assert "the run about" in lines[0] and "at most" not in lines[0]


# ---------------------------------------------------------------- --help without torch

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = [["task2.py"], ["task3.py"], ["task3cd.py"], ["task3e.py"],
            ["task3e.py", "--recipe", "speedrun"], ["task4a.py"], ["task4bc.py"], ["predict.py"],
            ["report.py"], ["-m", "task1"], ["-m", "bench.machine_record"],
            ["-m", "bench.speedrun_candidates"]]


def imported(importtime_log: str) -> set[str]:
    """The modules `python -X importtime` reports ("import time: self | cumulative | name")."""
    return {line.rsplit("|", 1)[1].strip() for line in importtime_log.splitlines()
            if line.startswith("import time:") and line.count("|") == 2}


@pytest.mark.parametrize("program", PROGRAMS, ids=" ".join)
def test_help_answers_without_importing_torch(program):
    done = subprocess.run([sys.executable, "-X", "importtime", *program, "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage:")
    modules = imported(done.stderr)
    assert "common.errors" in modules  # the log is read right
    assert "torch" not in modules


def test_help_text_of_quick_says_what_it_does_not_how_long():
    done = subprocess.run([sys.executable, "task2.py", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    text = " ".join(done.stdout.split())
    assert f"--quick a first try: --subset {QUICK_SUBSET} (images per split) and --epochs 1" in text
    assert "minute" not in text
