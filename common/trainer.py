"""Training: a recipe's optimizer and schedule, the step, scoring (loss, accuracy, confusion), early stopping, what a run shows
while it trains, the generic Trainer (validation checks, best weights, the final table;
resumable from its checkpoint, stoppable by a signal, single process or DDP). The precision
a run trains in is chosen by common.precision."""
from __future__ import annotations

import contextlib
import copy
import math
import random
import signal
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import system
from .data import CLASSES, NUM_CLASSES
from .config import MAY_CHANGE_ON_RESUME, RunConfig
from .models import weights_problem
from .errors import DivergenceError, StopRequest, UserError
from .files import RunDir, ensure_writable_dir
from .recipes import OPTIMIZERS, SCHEDULES, CosineToZero, Recipe
from .system import autocast

# a checkpoint is a sound place to resume from when its validation loss is below twice that
# of guessing (ln 10): one at 5.8e17 is finite, yet every rate diverges again from it
SOUND_LOSS = 2 * math.log(NUM_CLASSES)


# ---------------------------------------------------------------- a recipe's optimizer and schedule

def make_optimizer(recipe: Recipe, params):
    if recipe.opt == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                               weight_decay=recipe.weight_decay)
    if recipe.opt == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, betas=recipe.betas,
                                weight_decay=recipe.weight_decay)
    if recipe.opt == "adamw":
        return torch.optim.AdamW(params, lr=recipe.lr, betas=recipe.betas,
                                 weight_decay=recipe.weight_decay)
    raise ValueError(f"unknown optimizer {recipe.opt!r}; choose from {OPTIMIZERS}")


def make_scheduler(schedule: str, optimizer, total_steps: int):
    """A scheduler stepped after every training step, or None for a constant rate."""
    if schedule == "constant":
        return None
    if schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, CosineToZero(total_steps))
    raise ValueError(f"unknown schedule {schedule!r}; choose from {SCHEDULES}")


def change_schedule(optimizer, scheduler, *, lr: float | None = None,
                    total_steps: int | None = None):
    """A resumed run's new rate and/or length, from the step it reached on.

    A new rate scales every group's current and base rate by new / old, which keeps any
    schedule's shape; a new length re-plans the schedules that depend on it (CosineToZero)."""
    if total_steps is not None and isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
        step = scheduler.last_epoch
        scheduler.lr_lambdas = [f.resized(total_steps, step) if hasattr(f, "resized") else f
                                for f in scheduler.lr_lambdas]
        for group, base, f in zip(optimizer.param_groups, scheduler.base_lrs,
                                  scheduler.lr_lambdas):
            group["lr"] = base * f(step)
    if lr is not None:
        ratio = lr / optimizer.param_groups[0].get("initial_lr", optimizer.param_groups[0]["lr"])
        for group in optimizer.param_groups:
            group["lr"] *= ratio
            group["initial_lr"] = group.get("initial_lr", group["lr"] / ratio) * ratio
        if scheduler is not None:
            scheduler.base_lrs = [base * ratio for base in scheduler.base_lrs]


# ---------------------------------------------------------------- the step and scoring

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


def check_finite(value: float, what: str, where: str, *, lr: float | None = None,
                 checkpoint=None):
    if not math.isfinite(value):
        raise DivergenceError(what, value, where, lr=lr, checkpoint=checkpoint)


@torch.inference_mode()
def evaluate(model: nn.Module, loader, device, precision: str,
             forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
             confusion: torch.Tensor | None = None) -> tuple[float, float]:
    """Mean loss and accuracy over a loader in eval mode (the model's mode is restored after),
    summed over DDP ranks. `forward(x)` gives the logits instead of `model(x)` (e.g. averaged
    over test-time views); `confusion` (classes x classes, zeros) receives the counts
    [true, predicted]."""
    was_training = model.training
    model.eval()
    forward = forward or model
    loss_sum = correct = count = 0.0
    for x, y in loader:
        with autocast(device, precision):
            logits = forward(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        predicted = logits.argmax(1)
        correct += (predicted == y).sum().item()
        count += len(y)
        if confusion is not None:
            n = len(confusion)
            confusion += torch.bincount((y * n + predicted).cpu(), minlength=n * n).view(n, n)
    model.train(was_training)
    loss_sum, correct, count = system.all_reduce_sum([loss_sum, correct, count], device)
    if confusion is not None:
        confusion.copy_(system.all_reduce_tensor(confusion, device))
    return loss_sum / max(count, 1), correct / max(count, 1)


def empty_confusion() -> torch.Tensor:
    return torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.int64)


def confusion_rows(matrix: torch.Tensor) -> list[dict]:
    """matrix[true, predicted] counts -> one row per true class, with its accuracy."""
    rows = []
    for true, name in enumerate(CLASSES):
        counts = [int(v) for v in matrix[true].tolist()]
        total = sum(counts)
        rows.append({"class": name, **dict(zip(CLASSES, counts)),
                     "accuracy": round(counts[true] / total, 4) if total else float("nan")})
    return rows


class RunningScore:
    """Training loss and accuracy summed since the last check."""

    def __init__(self):
        self.loss_sum = self.correct = self.count = 0.0

    def add(self, mean_loss: float, correct: float, n: int):
        self.loss_sum += mean_loss * n
        self.correct += correct
        self.count += n

    def means(self, device=None) -> tuple[float, float]:
        loss_sum, correct, count = system.all_reduce_sum(
            [self.loss_sum, self.correct, self.count], device)
        return loss_sum / max(count, 1), correct / max(count, 1)

    def state_dict(self) -> dict:
        return {"loss_sum": self.loss_sum, "correct": self.correct, "count": self.count}

    def load_state_dict(self, state: dict):
        self.loss_sum, self.correct, self.count = state["loss_sum"], state["correct"], state["count"]


# ---------------------------------------------------------------- early stopping and display

class EarlyStopping:
    """Early stopping as a unit with its own state (Lightning's EarlyStopping is the model):
    the loop reports each validation loss and asks whether to stop; the checkpoint stores it."""

    def __init__(self, patience: int | None):
        self.patience = patience          # checks without a lower validation loss; None: off
        self.best_score = math.inf        # the lowest validation loss so far
        self.best_check = -1              # its index in the run's checks
        self.wait_count = 0               # checks since then

    def update(self, val_loss: float, check: int) -> bool:
        """Record one check; True when it is the best so far."""
        if val_loss < self.best_score:
            self.best_score, self.best_check, self.wait_count = val_loss, check, 0
            return True
        self.wait_count += 1
        return False

    @property
    def should_stop(self) -> bool:
        return bool(self.patience) and self.wait_count >= self.patience

    def state_dict(self) -> dict:
        return {"best_score": self.best_score, "best_check": self.best_check,
                "wait_count": self.wait_count, "patience": self.patience}

    def load_state_dict(self, state: dict):
        # the patience is not restored: a resumed run takes the one it is given
        self.best_score, self.best_check = state["best_score"], state["best_check"]
        self.wait_count = state["wait_count"]


def progress_bar(total: int, desc: str, enabled: bool, initial: int = 0) -> tqdm:
    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, leave=False,
                dynamic_ncols=True, mininterval=1.0)


def log_epoch(run_name: str, row: dict, seconds_key: str = "wall_time_s"):
    """One line on stderr from a history row: the loss and accuracy of each split it has."""
    parts = []
    for split in ("train", "val", "test"):
        if f"{split}_accuracy" in row:
            loss = f"loss {row[f'{split}_loss']:.4f} " if split != "test" else ""
            parts.append(f"{split} {loss}acc {row[f'{split}_accuracy']:.4f}")
    tqdm.write(f"{run_name} epoch {row['epoch']:.2f}: {' | '.join(parts)} | "
               f"{row[seconds_key]:.0f} s", file=sys.stderr)


def duration(seconds: float) -> str:
    """12 s, 14 min, 2.1 h: as precise as a plan needs."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class RunEstimate:
    """How long the epoch and the run will take, from the steps this process took: the first
    WARMUP steps are left out (first calls allocate and dispatch slowly); a check costs what
    the checks so far cost, or, before the first, a guess from its evaluation images (a
    forward pass at about a third of a training step's forward and backward, per image).
    The loop calls start(), step_done() and check_done(); line() is said once, after TIMED
    steps (or at the first epoch's end), and left() keeps the progress bar current."""
    WARMUP, TIMED = 2, 5
    clock = staticmethod(time.perf_counter)  # a test's stub makes the numbers exact

    def __init__(self, *, epochs: int, steps_per_epoch: int, check_steps: set,
                 check_images: int, batch_size: int, early_stopping: bool):
        self.epochs, self.steps_per_epoch, self.check_steps = epochs, steps_per_epoch, check_steps
        self.check_images, self.batch_size = check_images, batch_size
        self.early_stopping = early_stopping
        self.step_times, self.check_times = [], []
        self._last, self.said = None, False

    def start(self):
        """The clock starts (again): an epoch begins; what came between is no step."""
        self._last = self.clock()

    def _lap(self) -> float:
        now = self.clock()
        seconds, self._last = now - self._last, now
        return seconds

    def step_done(self):
        self.step_times.append(self._lap())

    @property
    def timed(self) -> list[float]:
        """The steps after the warm-up; the warm-up's own while there are no others."""
        return self.step_times[self.WARMUP:] or self.step_times

    def check_done(self):
        self.check_times.append(self._lap())

    @property
    def step_time(self) -> float:
        return sum(self.timed) / len(self.timed)

    @property
    def check_time(self) -> float:
        if self.check_times:
            return sum(self.check_times) / len(self.check_times)
        return self.check_images * self.step_time / self.batch_size / 3

    def due(self, step_in_epoch: int) -> bool:
        """Time to say the line: enough steps timed, or the epoch over before that."""
        return not self.said and bool(self.step_times) and (
            len(self.step_times) >= self.WARMUP + self.TIMED
            or step_in_epoch == self.steps_per_epoch)

    def left(self, epoch: int, step_in_epoch: int) -> tuple[float, float]:
        """Seconds left in this epoch and in the run (every epoch trained: at most)."""
        t, c = self.step_time, self.check_time
        this_epoch = ((self.steps_per_epoch - step_in_epoch) * t
                      + sum(1 for k in self.check_steps if k > step_in_epoch) * c)
        later = (self.epochs - epoch - 1) * (self.steps_per_epoch * t + len(self.check_steps) * c)
        return this_epoch, this_epoch + later

    def line(self, name: str, epoch: int) -> str:
        """The plan, once: an epoch's time and the run's (from `epoch` on), with the sum that
        gives it."""
        self.said = True
        t, c, epochs = self.step_time, self.check_time, self.epochs - epoch
        one_epoch = self.steps_per_epoch * t + len(self.check_steps) * c
        checks = (f"{len(self.check_steps)} check{'s' * (len(self.check_steps) != 1)} x "
                  f"{c:.2f} s{'' if self.check_times else ' guessed from its evaluation images'}")
        first = len(self.step_times) - len(self.timed) + 1
        bound = ("at most", "; early stopping may end it sooner") if self.early_stopping else (
            "about", "")
        rest = "the run" if epoch == 0 else "the rest of the run"
        return (f"{name}: expected time, an estimate from steps {first}-{len(self.step_times)}: an "
                f"epoch about {duration(one_epoch)}, {rest} {bound[0]} {duration(epochs * one_epoch)}"
                f" = {epochs} epoch{'s' * (epochs != 1)} x ({self.steps_per_epoch:,} steps x "
                f"{t:.3f} s + {checks}){bound[1]}")


Scalars = Callable[[str, float, int], None]  # (tag, value, global step): a Trainer's `scalars`
CHECK_SCALARS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss",
                 "test_accuracy", "lr")  # of each check's history row, as tags "train/loss", ...


@contextlib.contextmanager
def tensorboard_writer(run_dir) -> Iterator[Scalars]:
    """A Trainer's `scalars` that TensorBoard shows as it trains (`tensorboard --logdir
    outputs`), written into run_dir/tensorboard; the file is flushed and closed when the block
    ends, however it ends (an interrupt, a divergence). A resumed run appends a second file
    beside the first; TensorBoard reads them as one run."""
    folder = _tensorboard_folder(run_dir)
    # imported when asked for: tensorboard costs most scripts a second to load and nothing else
    from torch.utils.tensorboard import SummaryWriter
    writer = SummaryWriter(log_dir=str(folder), flush_secs=10)
    try:
        yield writer.add_scalar
    finally:
        writer.close()


def _tensorboard_folder(run_dir) -> Path:
    """run_dir/tensorboard, made and written to once before the first step: SummaryWriter
    raises FileExistsError for a file or a dangling link of that name, PermissionError for a
    folder it cannot write to, both as tracebacks."""
    folder = Path(run_dir) / "tensorboard"
    if folder.is_symlink() and not folder.exists():
        problem = f"a link to {folder.readlink()}, which does not exist"
    elif folder.exists() and not folder.is_dir():
        problem = "a file, not a folder"
    else:
        return ensure_writable_dir(folder, setting="tensorboard", value=folder)
    raise UserError(f"{problem}; TensorBoard writes its event files into a folder of that "
                    "name", setting="tensorboard", value=folder)


# ---------------------------------------------------------------- the Trainer

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
    """Every generator's state in plain types (torch.load's weights_only reads them back)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [kind, keys.tolist(), pos, has_gauss, cached]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict):
    # .cpu(): the checkpoint may be mapped onto a GPU; the generators take CPU byte tensors
    torch.set_rng_state(state["torch"].cpu())
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def optimizer_problem(optimizer, state: dict) -> str | None:
    """Why a checkpoint's optimizer state does not fit `optimizer` (other groups, other
    parameters, buffers of other shapes), or None."""
    groups, saved = optimizer.param_groups, state.get("param_groups")
    if not isinstance(saved, list) or not isinstance(state.get("state"), dict) or \
            [len(g["params"]) for g in groups] != [len(g.get("params", ())) if isinstance(g, dict)
                                                  else -1 for g in saved]:
        return "the optimizer's parameter groups differ"
    params = [p for g in groups for p in g["params"]]
    ids = [i for g in saved for i in g["params"]]
    for index, buffers in state["state"].items():
        if index not in ids or not isinstance(buffers, dict):
            return f"the optimizer's state names parameter {index!r}, which it does not have"
        shape = params[ids.index(index)].shape
        for key, value in buffers.items():
            if isinstance(value, torch.Tensor) and value.dim() and value.shape != shape:
                return f"the optimizer's {key} of parameter {index} is {tuple(value.shape)}, " \
                       f"the parameter {tuple(shape)}"
    return None


def _changed(before: RunConfig, now: RunConfig):
    """(setting, old, new) for each recipe setting a resumed run changed (the others that may
    change, precision, device and the data's path, are the run's, not the recipe's)."""
    for key in MAY_CHANGE_ON_RESUME:
        if hasattr(now.recipe, key) and getattr(before.recipe, key) != getattr(now.recipe, key):
            yield key, getattr(before.recipe, key), getattr(now.recipe, key)


class Trainer:
    def __init__(self, model: nn.Module, optimizer, loaders: dict, config: RunConfig, *,
                 precision: str = "fp32", facts: dict | None = None, scheduler=None,
                 device="cpu", run_dir: RunDir | None = None,
                 dist: system.DistInfo = system.DistInfo(), progress: bool = False,
                 scalars: Scalars | None = None):
        """loaders: train, val, test and (for the final table) train_eval; test and
        train_eval may be None. config: the run's (its recipe sets the loop's length, checks,
        early stopping and label smoothing); precision: the one chosen for it; facts: what
        metrics.json says about how it ran, beside the config. scalars(tag, value, step):
        given each step's training loss ("train/step_loss") and, at each check, every
        split's loss and accuracy and the rate (CHECK_SCALARS), on the main process only
        (tensorboard_writer makes one)."""
        self.device = torch.device(device)
        self.raw_model = model.to(self.device, memory_format=torch.channels_last)
        self.model = self.raw_model  # what trains: the DDP wrapper under torchrun
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DDP(self.raw_model, device_ids=ids)
        self.optimizer, self.scheduler = optimizer, scheduler
        self.loaders = {"test": None, "train_eval": None} | loaders
        self.config, self.recipe, self.precision = config, config.recipe, precision
        self.facts, self.dist, self.run_dir, self.progress = facts or {}, dist, run_dir, progress
        self.scalars = scalars if dist.is_main else None
        self.early_stopping = EarlyStopping(self.recipe.patience)
        self.epoch = self.step_in_epoch = self.global_step = 0
        self.best_model_state = None  # the best check's weights: the final table's
        self.best_state = None  # the best check's whole state, in memory: where a divergence
        #                         resumes from (written as checkpoint.pt when one happens)
        self.history = {"checks": [], "step_loss": [], "changes": []}
        self.running = RunningScore()
        self.clock = Stopwatch()
        self.pace = {"images": 0, "seconds": 0.0}  # this process's training steps alone

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict:
        """Train until `epochs` or the early stop; restore the best weights; return metrics.
        A signal stops it at the next step with a checkpoint (Interrupted); one after the last
        step lets the run finish and is raised then, with the metrics as its `result`."""
        train = self.loaders["train"]
        steps_per_epoch = len(train)
        k = max(1, self.recipe.checks_per_epoch)
        check_steps = {max(1, round(steps_per_epoch * (i + 1) / k)) for i in range(k)}
        check_loaders = [self.loaders[k] for k in ("val", "test") if self.loaders[k] is not None]
        self.estimate = RunEstimate(
            epochs=self.recipe.epochs, steps_per_epoch=steps_per_epoch, check_steps=check_steps,
            check_images=sum(len(l) * l.batch_size for l in check_loaders),
            batch_size=train.batch_size, early_stopping=self.recipe.patience is not None)
        with StopRequest(self.dist.enabled) as stop:
            self.clock.start()
            while self.epoch < self.recipe.epochs and not self.early_stopping.should_stop:
                self._train_epoch(train, check_steps, stop)
            result = self._finish(steps_per_epoch)
            if stop.signal:  # in the last check or the final table: finished and written
                raise stop.interrupted("the end of training", result=result)
        return result

    def _train_epoch(self, train, check_steps: set, stop: StopRequest):
        train.set_epoch(self.epoch)
        self.raw_model.train()
        name = self.config.run
        bar = progress_bar(len(train), f"{name} epoch {self.epoch + 1}/{self.recipe.epochs}",
                           self.progress and self.dist.is_main, initial=self.step_in_epoch)
        shown, estimate = {}, self.estimate
        with bar:
            started = time.perf_counter()
            estimate.start()
            for x, y in train.batches(self.step_in_epoch):
                stop_now = self._step(x, y, stop)
                estimate.step_done()
                if estimate.due(self.step_in_epoch) and self.dist.is_main:
                    tqdm.write(estimate.line(name, self.epoch), file=sys.stderr)
                # tqdm's ETA is the epoch's; the run's (at most: every epoch trained) beside it
                shown["run_left"] = "<=" + duration(estimate.left(self.epoch,
                                                                  self.step_in_epoch)[1])
                bar.set_postfix(shown, refresh=False)
                bar.update(1)
                if self.step_in_epoch in check_steps:
                    self.pace["seconds"] += time.perf_counter() - started
                    self._check(len(train))
                    started = time.perf_counter()
                    last = self.history["checks"][-1]
                    shown.update(loss=f"{last['train_loss']:.3f}",
                                 val_acc=f"{last['val_accuracy']:.3f}")
                    if self.early_stopping.should_stop:
                        break
                    if self.step_in_epoch < len(train):  # the epoch's end saves below
                        self._save_checkpoint()
                    estimate.check_done()
                if stop_now:
                    stop.signal = stop.signal or signal.SIGTERM  # another rank was signalled
                    self._interrupt(stop)
        if not self.early_stopping.should_stop:
            self.epoch, self.step_in_epoch = self.epoch + 1, 0
        self._save_checkpoint()
        if self.dist.is_main and self.history["checks"]:
            log_epoch(name, self.history["checks"][-1])

    def _step(self, x, y, stop: StopRequest) -> bool:
        local_loss, correct = train_step(self.model, self.optimizer, x, y, self.device,
                                         self.precision, self.recipe.label_smoothing)
        if self.scheduler is not None:
            self.scheduler.step()
        self.step_in_epoch += 1
        self.global_step += 1
        self.pace["images"] += len(y)
        # one collective per step: the loss averaged over ranks (steps.csv), and divergence
        # and stop requests decided alike on every rank
        loss, stop_now = system.mean_and_any(local_loss, stop.signal is not None, self.device)
        self._check_finite(loss, "training loss")
        self.history["step_loss"].append(loss)
        if self.scalars is not None:
            self.scalars("train/step_loss", loss, self.global_step)
        self.running.add(local_loss, correct, len(y))
        return stop_now

    def _check(self, steps_per_epoch: int):
        """Validation check: history row, early stopping, best weights (best.pt: the weights
        once, with the record that rebuilds the network)."""
        train_loss, train_acc = self.running.means(self.device)
        self.running = RunningScore()
        val_loss, val_acc = self.evaluate(self.loaders["val"])
        test_loss, test_acc = (self.evaluate(self.loaders["test"])
                               if self.loaders["test"] is not None else (math.nan, math.nan))
        row = {
            "epoch": round(self.global_step / steps_per_epoch, 4), "step": self.global_step,
            "train_loss": train_loss, "train_accuracy": train_acc,
            "val_loss": val_loss, "val_accuracy": val_acc,
            "test_loss": test_loss, "test_accuracy": test_acc,
            "wall_time_s": round(self.clock.read(), 2),
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        self.history["checks"].append(row)
        if self.scalars is not None:  # a split without a loader (nan) has no curve
            for key in CHECK_SCALARS:
                if math.isfinite(row[key]):
                    self.scalars(key.replace("_", "/"), row[key], self.global_step)
        # weights broken by a step whose own loss was finite: stop before they are saved
        self._check_finite(val_loss, "validation loss")
        if self.early_stopping.update(val_loss, len(self.history["checks"]) - 1):
            self.best_model_state = copy.deepcopy(self.raw_model.state_dict())
            self.best_state = copy.deepcopy(self.state_dict())
            if self.run_dir is not None:
                self.run_dir.save_best(self.best_model_state, self.config.to_dict())

    def _finish(self, steps_per_epoch: int) -> dict:
        self.clock.stop()
        if self.best_model_state is not None:
            self.raw_model.load_state_dict(self.best_model_state)
        confusion = empty_confusion()
        final = self.final_table(confusion)
        best = self.early_stopping.best_check
        result = {
            "run": self.config.run,
            "final": final,
            "epochs_completed": round(self.global_step / steps_per_epoch, 4),
            "stopped_early": self.early_stopping.should_stop,
            "best_check": best,
            "best_epoch": self.history["checks"][best]["epoch"] if best >= 0 else None,
            "train_wall_time_s": round(self.clock.read(), 2),
            "train_images_per_s": round(self.images_per_second(), 1),
            "precision": self.precision,
            "device": str(self.device),
            "world_size": self.dist.world_size,
            "changes_on_resume": self.history["changes"],
            "config": self.config.to_dict(),
            **self.facts,
        }
        if self.run_dir is not None:
            self.run_dir.write_history(self.history)
            if "test" in final:
                self.run_dir.write_confusion(confusion_rows(confusion))
            self.run_dir.write_metrics(result)
        return result

    def images_per_second(self) -> float:
        """Training images per second of step time in this process (checks excluded)."""
        return self.pace["images"] / self.pace["seconds"] if self.pace["seconds"] else 0.0

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, loader, confusion=None) -> tuple[float, float]:
        return evaluate(self.raw_model, loader, self.device, self.precision,
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
            "config": self.config.to_dict(),
            "precision": self.precision,
        }

    def load_state_dict(self, state: dict, where=None):
        """A checkpoint that files.read_checkpoint accepted (`where`: its path, for messages);
        its weights and optimizer state are checked against this run's first (another
        architecture is the user's mistake, said in one line), and anything that fails after
        that is a bug and raises as one."""
        problem = weights_problem(self.raw_model, state["model"]) or \
            optimizer_problem(self.optimizer, state["optimizer"])
        if problem:
            raise UserError(f"does not fit this run ({problem})", setting="resume", value=where)
        self.raw_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler and state["lr_scheduler"]:
            self.scheduler.load_state_dict(state["lr_scheduler"])
        self.early_stopping.load_state_dict(state["early_stopping"])
        self.running.load_state_dict(state["running"])
        if self.dist.world_size == 1:  # other ranks' RNG streams are not in the file
            _set_rng_state(state["rng"])
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.global_step = state["global_step"]
        self.best_model_state = state["best_model"]
        self.history = {"changes": []} | state["history"]
        self.clock.elapsed = state["wall_time_s"]

    def resume(self, state: dict, where=None):
        """Continue from a checkpoint. What the run may change mid-run (config's
        MAY_CHANGE_ON_RESUME: the rate, the length, the patience, momentum, weight decay, label
        smoothing, the precision) takes effect from the step reached, and is recorded."""
        self.load_state_dict(state, where)
        before = RunConfig.from_dict(state["config"], where or "the checkpoint")
        changed = {k: {"from": old, "to": new} for k, old, new in _changed(before, self.config)}
        if state["precision"] != self.precision:
            changed["precision"] = {"from": state["precision"], "to": self.precision}
        if not changed:
            return
        steps = len(self.loaders["train"])
        change_schedule(self.optimizer, self.scheduler,
                        lr=self.recipe.lr if "lr" in changed else None,
                        total_steps=self.recipe.epochs * steps if "epochs" in changed else None)
        for key in ("momentum", "weight_decay"):
            if key in changed:
                for group in self.optimizer.param_groups:
                    if key in group:  # Adam has no momentum: the setting is SGD's
                        group[key] = getattr(self.recipe, key)
        self.history["changes"].append({"step": self.global_step,
                                        "epoch": round(self.global_step / steps, 4), **changed})

    def _save_checkpoint(self):
        if self.run_dir is not None:
            self.run_dir.save_checkpoint(self.state_dict())

    # ------------------------------------------------------------------ stopping
    def _where(self) -> str:
        return f"epoch {self.epoch + 1}, step {self.global_step}"

    def _check_finite(self, value: float, what: str):
        if math.isfinite(value):
            return
        sound = (self.run_dir is not None and self.best_state is not None
                 and self.early_stopping.best_score < SOUND_LOSS)
        if sound:  # the diverged state is worth nothing: resume from the best check's
            self.run_dir.save_checkpoint(self.best_state)
        check_finite(value, what, self._where(), lr=self.optimizer.param_groups[0]["lr"],
                     checkpoint=self.run_dir.checkpoint if sound else None)

    def _interrupt(self, stop: StopRequest):
        self._save_checkpoint()
        if self.run_dir is not None:
            self.run_dir.write_history(self.history)
        # the other ranks wait for rank 0's files: torchrun stops every worker as soon as
        # one exits non-zero, which could kill rank 0 before its checkpoint is written
        system.barrier(self.device)
        raise stop.interrupted(self._where(),
                               self.run_dir.checkpoint if self.run_dir is not None else None)
