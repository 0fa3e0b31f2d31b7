"""The Trainer: early stopping on a scripted validation loss (stop point, best weights
restored), a tiny real training run above chance, and the files a run writes."""
import copy
import csv
import json

import pytest
import torch
from torch import nn

from common.data import TensorLoader
from common.models import CNN1g
from common.trainer import evaluate
from common.errors import UserError
from common.config import read_checkpoint
from common.files import BEST_NAME, CHECKPOINT_NAME, RunDir
from common.trainer import Trainer
from conftest import trainer_config


def as_tensors(arrays):
    images, labels = arrays
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)


def tiny_loaders(n=64, batch_size=16):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % 10
    train = TensorLoader(images, labels, batch_size, device="cpu", train=True)
    val = TensorLoader(images[:20], labels[:20], 20, device="cpu", train=False)
    return train, val


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- early stopping

# (scripted validation losses, index of the best check, number of checks run)
SCRIPTS = {
    # best at check 2, then 4 checks without improvement: stop at the 6th check
    "best-at-2": ([1.0, 0.8, 0.9, 0.85, 0.95, 0.99, 0.7, 0.6], 1, 6),
    # improvements at checks 3 and 5 reset the count: best at check 5, stop at the 9th
    "reset": ([1.0, 1.1, 0.9, 1.2, 0.5, 0.6, 0.7, 0.8, 0.9, 0.1], 4, 9),
    # never better than the first check: stop at the 5th
    "best-at-1": ([1.0, 1.1, 1.2, 1.3, 1.4, 0.1], 0, 5),
}


@pytest.mark.parametrize("checks_per_epoch", [1, 2])
@pytest.mark.parametrize("script", SCRIPTS)
def test_early_stopping_stops_after_4_checks_without_improvement_and_restores_best_weights(
        script, checks_per_epoch, tmp_path, monkeypatch):
    losses, best, n_checks = SCRIPTS[script]
    train, val = tiny_loaders()  # 4 training steps per epoch
    model = tiny_model()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.05),
                      {"train": train, "val": val},
                      trainer_config(epochs=50, checks_per_epoch=checks_per_epoch, patience=4),
                      run_dir=RunDir(tmp_path))
    weights_at_check = {}

    def scripted_evaluate(loader, confusion=None):
        check = len(trainer.history["checks"])  # the check being recorded
        if loader is val and check not in weights_at_check:
            weights_at_check[check] = copy.deepcopy(trainer.raw_model.state_dict())
            return losses[check], 0.5
        return 0.5, 0.5  # the final table after training

    monkeypatch.setattr(trainer, "evaluate", scripted_evaluate)
    result = trainer.fit()

    assert len(trainer.history["checks"]) == n_checks
    assert [c["val_loss"] for c in trainer.history["checks"]] == losses[:n_checks]
    assert result["stopped_early"] is True
    assert result["best_check"] == best
    assert trainer.global_step == n_checks * 4 // checks_per_epoch
    assert result["epochs_completed"] == pytest.approx(n_checks / checks_per_epoch)
    final = trainer.raw_model.state_dict()
    assert same_weights(final, weights_at_check[best])
    assert not same_weights(final, weights_at_check[n_checks - 1])  # training moved on
    saved = torch.load(tmp_path / BEST_NAME, weights_only=False)
    assert same_weights(saved["model"], weights_at_check[best])


def test_without_patience_runs_every_epoch_and_keeps_best_weights(monkeypatch):
    losses = [1.0, 0.5, 0.9, 0.95, 0.96, 0.97, 0.98, 0.1]  # the last: the final table
    train, val = tiny_loaders()
    model = tiny_model()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.05),
                      {"train": train, "val": val},
                      trainer_config(epochs=7, checks_per_epoch=1, patience=None))
    weights_at_check = {}

    def scripted_evaluate(loader, confusion=None):
        check = len(trainer.history["checks"])
        if loader is val and check not in weights_at_check:
            weights_at_check[check] = copy.deepcopy(trainer.raw_model.state_dict())
            return losses[check], 0.5
        return 0.5, 0.5

    monkeypatch.setattr(trainer, "evaluate", scripted_evaluate)
    result = trainer.fit()
    assert len(trainer.history["checks"]) == 7 and result["stopped_early"] is False
    assert result["best_check"] == 1 and result["epochs_completed"] == 7
    assert same_weights(trainer.raw_model.state_dict(), weights_at_check[1])


# ---------------------------------------------------------------- a real tiny run

@pytest.fixture(scope="module")
def trained(fake_arrays, tmp_path_factory):
    """CNN1g + AdamW, one epoch on the 400 fake training images (2 checks), output written."""
    out = tmp_path_factory.mktemp("run")
    (train_x, train_y), (test_x, test_y) = as_tensors(fake_arrays[0]), as_tensors(fake_arrays[1])
    val_idx = torch.arange(0, 400, 10)  # 4 per class held out for validation
    train_idx = torch.tensor([i for i in range(400) if i % 10])
    loaders = dict(
        train=TensorLoader(train_x[train_idx], train_y[train_idx], 16, device="cpu", train=True),
        val=TensorLoader(train_x[val_idx], train_y[val_idx], 100, device="cpu", train=False),
        test=TensorLoader(test_x, test_y, 100, device="cpu", train=False),
        train_eval=TensorLoader(train_x[train_idx], train_y[train_idx], 200, device="cpu",
                                train=False))
    torch.manual_seed(0)
    model = CNN1g()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10, gamma=0.5)
    config = trainer_config(opt="adamw", lr=2e-3, epochs=1, checks_per_epoch=2, patience=4)
    trainer = Trainer(model, optimizer, loaders, config, scheduler=scheduler,
                      run_dir=RunDir(out))
    return trainer, trainer.fit(), out


def test_tiny_training_reaches_accuracy_far_above_chance(trained):
    _, result, _ = trained
    assert result["final"]["test"]["accuracy"] >= 0.6  # chance: 0.1 (about 0.88 here)
    assert result["final"]["train"]["accuracy"] >= 0.6
    assert result["final"]["test"]["loss"] < 1.5  # chance: ln 10 = 2.30
    assert set(result["final"]) == {"train", "validation", "test"}


def test_training_loss_falls_during_the_run(trained):
    trainer, _, _ = trained
    steps = trainer.history["step_loss"]
    assert len(steps) == 22  # 360 // 16
    assert sum(steps[-5:]) / 5 < 0.6 * sum(steps[:5]) / 5


def test_run_writes_metrics_history_steps_and_checkpoints(trained):
    trainer, result, out = trained
    names = {p.name for p in out.iterdir()}
    assert {"metrics.json", "history.csv", "steps.csv", BEST_NAME, CHECKPOINT_NAME} <= names
    assert not [n for n in names if n.endswith(".tmp")]  # no leftovers of atomic writes
    with open(out / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["final"]["test"]["accuracy"] == pytest.approx(result["final"]["test"]["accuracy"])
    assert metrics["run"] == "tiny" and metrics["epochs_completed"] == 1
    with open(out / "history.csv", newline="") as f:
        history = list(csv.DictReader(f))
    assert len(history) == len(trainer.history["checks"]) == 2
    assert [int(r["step"]) for r in history] == [11, 22]
    assert [float(r["epoch"]) for r in history] == [0.5, 1.0]
    for row, check in zip(history, trainer.history["checks"]):
        assert float(row["val_loss"]) == pytest.approx(check["val_loss"])
        assert float(row["test_accuracy"]) == pytest.approx(check["test_accuracy"])
        assert float(row["train_loss"]) == pytest.approx(check["train_loss"])
    with open(out / "steps.csv", newline="") as f:
        steps = list(csv.DictReader(f))
    assert [int(r["step"]) for r in steps] == list(range(1, 23))
    assert float(steps[0]["loss"]) == pytest.approx(trainer.history["step_loss"][0])


def test_best_pt_holds_the_best_weights_once_with_the_record_that_rebuilds_the_network(trained):
    trainer, result, out = trained
    best = torch.load(out / BEST_NAME)  # plain types: weights_only, torch's default
    assert set(best) == {"model", "config"}  # the speed-run's best.pt has the same two keys
    assert best["config"]["recipe"]["lr"] == 2e-3 and best["config"]["run"] == "tiny"
    assert same_weights(best["model"], trainer.raw_model.state_dict())  # best weights restored
    best_loss = min(c["val_loss"] for c in trainer.history["checks"])
    assert trainer.history["checks"][result["best_check"]]["val_loss"] == best_loss
    with pytest.raises(UserError, match="best.pt holds the best weights alone"):
        read_checkpoint(out / BEST_NAME)  # resume reads checkpoint.pt


def test_checkpoint_pt_holds_the_resumable_state_after_the_epoch(trained):
    trainer, _, out = trained
    ckpt = torch.load(out / CHECKPOINT_NAME, weights_only=False)
    assert {"model", "optimizer", "lr_scheduler", "epoch", "config", "early_stopping",
            "history", "rng"} <= set(ckpt)
    assert ckpt["epoch"] == 1 and ckpt["step_in_epoch"] == 0 and ckpt["global_step"] == 22
    assert ckpt["lr_scheduler"]["last_epoch"] == 22  # stepped after every training step
    assert len(ckpt["history"]["checks"]) == 2


# ---------------------------------------------------------------- evaluation
def test_evaluate_scores_in_eval_mode_restores_the_mode_and_takes_another_forward():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.9), nn.Linear(3 * 32 * 32, 10))
    _, val = tiny_loaders()
    x, y = next(iter(val))
    with torch.no_grad():
        model.eval()
        logits = model(x)
        model.train()
    expected = (nn.functional.cross_entropy(logits, y).item(),
                (logits.argmax(1) == y).float().mean().item())
    loss, acc = evaluate(model, val, "cpu", "fp32")
    assert model.training  # restored
    assert loss == pytest.approx(expected[0], rel=1e-5) and acc == pytest.approx(expected[1])
    # a forward that always answers class 3 scores exactly the share of label 3
    always_3 = lambda v: nn.functional.one_hot(torch.full((len(v),), 3), 10).float()
    assert evaluate(model, val, "cpu", "fp32", forward=always_3)[1] == pytest.approx(
        (y == 3).float().mean().item())
