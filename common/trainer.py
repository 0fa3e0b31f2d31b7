"""The generic Trainer: training steps, validation checks, early stopping, best weights, the
final table; resumable from its checkpoint, stoppable by a signal, single process or DDP.
The run's files go through a RunDir, early stopping through an EarlyStopping object."""
from __future__ import annotations

import copy
import math
import random
import signal
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import distributed as D
from .data import CLASSES
from .device import autocast
from .early_stopping import EarlyStopping
from .errors import DivergenceError, Interrupted
from .evaluation import evaluate
from .progress import log_epoch, progress_bar
from .rundir import RunDir
from .schedules import change_schedule
from .signals import StopRequest


@dataclass
class TrainerConfig:
    epochs: int
    checks_per_epoch: int
    patience: int | None               # checks without a lower validation loss; None: off
    precision: str = "fp32"
    progress: bool = True
    run_name: str = "run"
    record: dict = field(default_factory=dict)  # what the run is: kept in every file it writes
    resume_command: str | None = None           # printed when interrupted or diverged


def train_step(model, optimizer, x, y, device, precision: str,
               label_smoothing: float = 0.0) -> tuple[float, int]:
    """One optimizer step; (batch-mean loss, correct predictions)."""
    with autocast(device, precision):
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item(), (logits.argmax(1) == y).sum().item()


def check_finite(value: float, what: str, where: str, advice: str = ""):
    if not math.isfinite(value):
        raise DivergenceError(f"the {what} became {value} at {where}; lower the learning rate "
                              f"(--lr){advice}")


class RunningScore:
    """Training loss and accuracy summed since the last check."""

    def __init__(self):
        self.loss_sum = self.correct = self.count = 0.0

    def add(self, mean_loss: float, correct: float, n: int):
        self.loss_sum += mean_loss * n
        self.correct += correct
        self.count += n

    def means(self, device=None) -> tuple[float, float]:
        loss_sum, correct, count = D.all_reduce_sum([self.loss_sum, self.correct, self.count],
                                                    device)
        return loss_sum / max(count, 1), correct / max(count, 1)

    def state_dict(self) -> dict:
        return {"loss_sum": self.loss_sum, "correct": self.correct, "count": self.count}

    def load_state_dict(self, state: dict):
        self.loss_sum, self.correct, self.count = state["loss_sum"], state["correct"], state["count"]


class Stopwatch:
    """Seconds spent in fit(), over every resume."""

    def __init__(self):
        self.elapsed, self._start = 0.0, None

    def start(self):
        self._start = time.perf_counter()

    def read(self) -> float:
        return self.elapsed + (time.perf_counter() - self._start if self._start else 0.0)

    def stop(self):
        self.elapsed, self._start = self.read(), None


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict):
    # .cpu(): the checkpoint may be mapped onto a GPU; the generators take CPU byte tensors
    torch.set_rng_state(state["torch"].cpu())
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


class Trainer:
    def __init__(self, model: nn.Module, optimizer, loaders: dict, config: TrainerConfig, *,
                 scheduler=None, device="cpu", run_dir: RunDir | None = None,
                 dist: D.DistInfo = D.DistInfo()):
        """loaders: train, val, test and (for the final table) train_eval; test and
        train_eval may be None."""
        self.device = torch.device(device)
        self.raw_model = model.to(self.device, memory_format=torch.channels_last)
        self.model = self.raw_model  # what trains: the DDP wrapper under torchrun
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DDP(self.raw_model, device_ids=ids)
        self.optimizer, self.scheduler = optimizer, scheduler
        self.loaders = {"test": None, "train_eval": None} | loaders
        self.config, self.dist, self.run_dir = config, dist, run_dir
        self.early_stopping = EarlyStopping(config.patience)
        self.epoch = self.step_in_epoch = self.global_step = 0
        self.best_model_state = None
        self.history = {"checks": [], "step_loss": [], "changes": []}
        self.running = RunningScore()
        self.clock = Stopwatch()
        group = optimizer.param_groups[0]
        # what this run was asked for: a resumed run compares it with its checkpoint's
        self.asked = {"lr": group.get("initial_lr", group["lr"]), "epochs": config.epochs,
                      "patience": config.patience}

    # ------------------------------------------------------------------ the loop
    def fit(self, resume: dict | None = None) -> dict:
        """Train until `epochs` or the early stop; restore the best weights; return metrics."""
        if resume is not None:
            self.resume(resume)
        train = self.loaders["train"]
        steps_per_epoch = len(train)
        k = max(1, self.config.checks_per_epoch)
        check_steps = {max(1, round(steps_per_epoch * (i + 1) / k)) for i in range(k)}
        with StopRequest(self.dist.enabled) as stop:
            self.clock.start()
            while self.epoch < self.config.epochs and not self.early_stopping.should_stop:
                self._train_epoch(train, check_steps, stop)
            result = self._finish(steps_per_epoch)
            if stop.requested:  # during the final table: it finished, and is written
                raise stop.interrupted("the end of training; every result is written")
        return result

    def _train_epoch(self, train, check_steps: set, stop: StopRequest):
        train.set_epoch(self.epoch)
        self.raw_model.train()
        cfg = self.config
        bar = progress_bar(len(train), f"{cfg.run_name} epoch {self.epoch + 1}/{cfg.epochs}",
                           cfg.progress and self.dist.is_main, initial=self.step_in_epoch)
        with bar:
            for x, y in train.batches(self.step_in_epoch):
                stop_now = self._step(x, y, stop)
                bar.update(1)
                if self.step_in_epoch in check_steps:
                    self._check(len(train))
                    last = self.history["checks"][-1]
                    bar.set_postfix(loss=f"{last['train_loss']:.3f}",
                                    val_acc=f"{last['val_accuracy']:.3f}")
                    if self.early_stopping.should_stop:
                        break
                    if self.step_in_epoch < len(train):  # the epoch's end saves below
                        self._save_checkpoint()
                if stop_now:
                    stop.signal = stop.signal or signal.SIGTERM  # another rank was signalled
                    self._interrupt(stop)
        if not self.early_stopping.should_stop:
            self.epoch, self.step_in_epoch = self.epoch + 1, 0
        self._save_checkpoint()
        if self.dist.is_main and self.history["checks"]:
            log_epoch(cfg.run_name, self.history["checks"][-1])

    def _step(self, x, y, stop: StopRequest) -> bool:
        local_loss, correct = train_step(self.model, self.optimizer, x, y, self.device,
                                         self.config.precision)
        if self.scheduler is not None:
            self.scheduler.step()
        self.step_in_epoch += 1
        self.global_step += 1
        # one collective per step: the loss averaged over ranks (steps.csv), and divergence
        # and stop requests decided alike on every rank
        loss, stop_now = D.mean_and_any(local_loss, stop.requested, self.device)
        check_finite(loss, "training loss", self._where(), self._advice())
        self.history["step_loss"].append(loss)
        self.running.add(local_loss, correct, len(y))
        return stop_now

    def _check(self, steps_per_epoch: int):
        """Validation check: history row, early stopping, best weights."""
        train_loss, train_acc = self.running.means(self.device)
        self.running = RunningScore()
        val_loss, val_acc = self.evaluate(self.loaders["val"])
        test_loss, test_acc = (self.evaluate(self.loaders["test"])
                               if self.loaders["test"] is not None else (math.nan, math.nan))
        self.history["checks"].append({
            "epoch": round(self.global_step / steps_per_epoch, 4), "step": self.global_step,
            "train_loss": train_loss, "train_accuracy": train_acc,
            "val_loss": val_loss, "val_accuracy": val_acc,
            "test_loss": test_loss, "test_accuracy": test_acc,
            "wall_time_s": round(self.clock.read(), 2),
            "lr": self.optimizer.param_groups[0]["lr"],
        })
        # weights broken by a step whose own loss was finite: stop before they are saved
        check_finite(val_loss, "validation loss", self._where(), self._advice())
        if self.early_stopping.update(val_loss, len(self.history["checks"]) - 1):
            self.best_model_state = copy.deepcopy(self.raw_model.state_dict())
            if self.run_dir is not None:
                self.run_dir.save_best({
                    "model": self.best_model_state, "optimizer": self.optimizer.state_dict(),
                    "lr_scheduler": self.scheduler.state_dict() if self.scheduler else None,
                    "epoch": self.epoch, "args": self.config.record})

    def _finish(self, steps_per_epoch: int) -> dict:
        self.clock.stop()
        if self.best_model_state is not None:
            self.raw_model.load_state_dict(self.best_model_state)
        confusion = torch.zeros(len(CLASSES), len(CLASSES), dtype=torch.int64)
        final = self.final_table(confusion)
        best = self.early_stopping.best_check
        result = {
            "run": self.config.run_name,
            "final": final,
            "epochs_completed": round(self.global_step / steps_per_epoch, 4),
            "stopped_early": self.early_stopping.should_stop,
            "best_check": best,
            "best_epoch": self.history["checks"][best]["epoch"] if best >= 0 else None,
            "train_wall_time_s": round(self.clock.read(), 2),
            "precision": self.config.precision,
            "device": str(self.device),
            "world_size": self.dist.world_size,
            "changes_on_resume": self.history["changes"],
            "args": self.config.record,
        }
        if self.run_dir is not None:
            self.run_dir.write_history(self.history)
            if "test" in final:
                self.run_dir.write_confusion(confusion)
            self.run_dir.write_metrics(result)
        return result

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, loader, confusion=None) -> tuple[float, float]:
        return evaluate(self.raw_model, loader, self.device, self.config.precision,
                        confusion=confusion)

    def final_table(self, confusion=None) -> dict:
        """Report Table 2.b layout: loss and accuracy per split, eval mode, no augmentation;
        the test set's confusion matrix into `confusion`."""
        table = {}
        for split, key in (("train", "train_eval"), ("validation", "val"), ("test", "test")):
            if self.loaders[key] is not None:
                loss, acc = self.evaluate(self.loaders[key], confusion if key == "test" else None)
                table[split] = {"loss": loss, "accuracy": acc}
        return table

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {
            "model": self.raw_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "early_stopping": self.early_stopping.state_dict(),
            "best_model": self.best_model_state,
            "history": self.history,
            "running": self.running.state_dict(),
            "wall_time_s": self.clock.read(),
            "rng": _rng_state(),
            "asked": self.asked,
            "args": self.config.record,
        }

    def load_state_dict(self, state: dict):
        self.raw_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler and state.get("lr_scheduler"):
            self.scheduler.load_state_dict(state["lr_scheduler"])
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.global_step = state["global_step"]
        self.early_stopping.load_state_dict(state["early_stopping"])
        self.best_model_state = state["best_model"]
        self.history = {"changes": []} | state["history"]
        self.running.load_state_dict(state["running"])
        self.clock.elapsed = state["wall_time_s"]
        if self.dist.world_size == 1:  # other ranks' RNG streams are not in the file
            _set_rng_state(state["rng"])

    def resume(self, state: dict):
        """Continue from a checkpoint. What this run was asked for and may change mid-run (the
        rate, the length, the patience) takes effect from the step reached, and is recorded."""
        self.load_state_dict(state)
        before = state["asked"]
        changed = {k: {"from": before[k], "to": v} for k, v in self.asked.items()
                   if before[k] != v}
        if not changed:
            return
        steps = len(self.loaders["train"])
        change_schedule(self.optimizer, self.scheduler,
                        lr=self.asked["lr"] if "lr" in changed else None,
                        total_steps=self.config.epochs * steps if "epochs" in changed else None)
        self.history["changes"].append({"step": self.global_step,
                                        "epoch": round(self.global_step / steps, 4), **changed})

    def _save_checkpoint(self):
        if self.run_dir is not None:
            self.run_dir.save_checkpoint(self.state_dict())

    # ------------------------------------------------------------------ stopping
    def _where(self) -> str:
        return f"epoch {self.epoch + 1}, step {self.global_step}"

    def _advice(self) -> str:
        if self.run_dir is None or not self.run_dir.checkpoint.exists():
            return ""
        advice = f"; the last good checkpoint is {self.run_dir.checkpoint}"
        if self.config.resume_command:
            lower = self.optimizer.param_groups[0]["lr"] / 10
            advice += f"; resume with: {self.config.resume_command} --lr {lower:g}"
        return advice

    def _interrupt(self, stop: StopRequest):
        self._save_checkpoint()
        if self.run_dir is not None:
            self.run_dir.write_history(self.history)
        # the other ranks wait for rank 0's files: torchrun stops every worker as soon as
        # one exits non-zero, which could kill rank 0 before its checkpoint is written
        D.barrier(self.device)
        err = stop.interrupted(self._where())
        if not self.dist.is_main:  # one full message (rank 0's) under torchrun
            raise Interrupted(f"rank {self.dist.rank}: {err}", err.exit_code)
        msg = str(err)
        if self.run_dir is not None:
            msg += f" Checkpoint written to {self.run_dir.checkpoint}."
            if self.config.resume_command:
                msg += f"\nResume with: {self.config.resume_command}"
        raise Interrupted(msg, err.exit_code)
