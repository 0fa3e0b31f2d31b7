"""Training: a recipe's optimizer and schedule, the step and its scoring, early stopping, what a
run shows while it trains, and the Trainer (checks, best weights, resume, signals, DDP)."""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import signal
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import system
from .data import CLASSES, NUM_CLASSES
from .config import MAY_CHANGE_ON_RESUME, RunConfig
from .models import weights_problem
from .errors import DivergenceError, StopRequest, UserError
from .files import CHECKPOINT_NAME, CONFUSION_NAME, METRICS_NAME, RunDir, ensure_writable_dir
from .recipes import SCHEDULES, CosineToZero, Recipe
from .system import autocast

# a checkpoint is a sound place to resume from when its validation loss is below twice that
# of guessing (ln 10): one at 5.8e17 is finite, yet every rate diverges again from it
SOUND_LOSS = 2 * math.log(NUM_CLASSES)


# ---------------------------------------------------------------- a recipe's optimizer and schedule

def make_optimizer(recipe: Recipe, params):
    if recipe.opt == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                               weight_decay=recipe.weight_decay)
    adam = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[recipe.opt]  # recipes.OPTIMIZERS
    return adam(params, lr=recipe.lr, betas=recipe.betas, weight_decay=recipe.weight_decay)


def make_scheduler(schedule: str, optimizer, total_steps: int):
    """A scheduler stepped after every training step, or None for a constant rate."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose from {SCHEDULES}")
    return (torch.optim.lr_scheduler.LambdaLR(optimizer, CosineToZero(total_steps))
            if schedule == "cosine" else None)


def change_schedule(optimizer, scheduler, *, lr=None, total_steps=None):
    """A resumed run's new rate (every group's current and base rate scaled by new / old: any
    schedule keeps its shape) and/or length (CosineToZero re-planned from the step reached)."""
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


def train_step(model, optimizer, x, y, device, precision, label_smoothing=0.0) -> tuple[float, int]:
    """One optimizer step; (batch-mean loss, correct predictions)."""
    with autocast(device, precision):
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item(), (logits.argmax(1) == y).sum().item()


@torch.inference_mode()
def evaluate(model: nn.Module, loader, device, precision: str, forward: Callable | None = None,
             confusion: torch.Tensor | None = None) -> tuple[float, float]:
    """Mean loss and accuracy over a loader in eval mode (the model's mode restored after), over
    DDP ranks. `forward(x)`: the logits instead of `model(x)` (e.g. averaged over test-time
    views); `confusion` (classes x classes, zeros) receives the counts [true, predicted]."""
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
    if confusion is not None:
        confusion.copy_(system.all_reduce_tensor(confusion, device))
    return RunningScore(loss_sum, correct, count).means(device)


def empty_confusion() -> torch.Tensor:
    return torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.int64)


def confusion_rows(matrix: torch.Tensor) -> list[dict]:
    """matrix[true, predicted] counts -> one row per true class, with its accuracy."""
    return [{"class": name, **dict(zip(CLASSES, counts)),
             "accuracy": round(counts[true] / sum(counts), 4) if sum(counts) else float("nan")}
            for true, (name, counts) in enumerate(zip(CLASSES, matrix.tolist()))]


@dataclasses.dataclass
class RunningScore:
    """Training loss and accuracy summed since the last check (a checkpoint's `running`)."""
    loss_sum: float = 0.0
    correct: float = 0.0
    count: float = 0.0

    def add(self, mean_loss: float, correct: float, n: int):
        self.loss_sum += mean_loss * n
        self.correct += correct
        self.count += n

    def means(self, device=None) -> tuple[float, float]:
        loss_sum, correct, count = system.all_reduce_sum(dataclasses.astuple(self), device)
        return loss_sum / max(count, 1), correct / max(count, 1)


@dataclasses.dataclass
class EarlyStopping:
    """Early stopping as a unit with its own state (Lightning's EarlyStopping is the model):
    the loop reports each validation loss and asks whether to stop; the checkpoint stores it."""
    best_score: float = math.inf  # the lowest validation loss so far
    best_check: int = -1          # its index in the run's checks
    wait_count: int = 0           # checks since then
    patience: int | None = None   # checks without a lower validation loss; None: off

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


def duration(seconds: float) -> str:
    """12 s, 14 min, 2.1 h: as precise as a plan needs."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclasses.dataclass
class Progress:
    """What a training loop shows on stderr and its running score, one call a step and a check:
    each epoch's bar with the run's time left beside tqdm's ETA (the epoch's), the expected time
    said once (after TIMED steps or at the first epoch's end), each epoch's log line. Times come
    from this process's steps after the first WARMUP (which allocate and dispatch slowly); a
    check costs what the checks so far cost, or before the first a guess from its images (a
    forward pass at about a third of a training step, per image)."""
    name: str
    epochs: int
    steps_per_epoch: int
    check_steps: set
    check_images: int
    batch_size: int
    early_stopping: bool
    say: bool  # the expected time and the log lines: the main process's
    show_bar: bool
    left_prefix: str = ""  # "<=": the run's time left is at most (every epoch trained)
    running: RunningScore = dataclasses.field(default_factory=RunningScore)  # since the last score()
    # running sums, not lists: a step's work stays the same however long the run
    steps: int = 0
    step_seconds: float = 0.0      # every step's
    timed_seconds: float = 0.0     # the steps' after the first WARMUP
    checks: int = 0
    check_seconds: float = 0.0
    said: bool = False
    WARMUP, TIMED = 2, 5
    clock = staticmethod(time.perf_counter)  # a test's stub makes the numbers exact

    @contextlib.contextmanager
    def training(self, epoch: int, step_in_epoch: int = 0):
        """An epoch's bar, from the step reached; the clock starts (again): what came between
        epochs is no step."""
        self.epoch, self.step_in_epoch, self.shown = epoch, step_in_epoch, {}
        with tqdm(total=self.steps_per_epoch, initial=step_in_epoch, leave=False,
                  desc=f"{self.name} epoch {epoch + 1}/{self.epochs}", disable=not self.show_bar,
                  dynamic_ncols=True, mininterval=1.0) as self.bar:
            self.last = self.clock()  # when the last step or check ended
            yield

    def step(self, loss: float, correct: float, images: int):
        """A step is done: its score added, its time taken, the plan said once (after TIMED
        steps, or at the first epoch's end if sooner), the run's time left shown."""
        self.running.add(loss, correct, images)
        now = self.clock()
        self.steps, self.step_seconds = self.steps + 1, self.step_seconds + (now - self.last)
        if self.steps > self.WARMUP:
            self.timed_seconds += now - self.last
        self.last, self.step_in_epoch = now, self.step_in_epoch + 1
        first = self.WARMUP + 1 if self.steps > self.WARMUP else 1  # the steps timed: first on
        t = (self.timed_seconds if first > 1 else self.step_seconds) / (self.steps - first + 1)
        c = (self.check_seconds / self.checks if self.checks
             else self.check_images * t / self.batch_size / 3)
        n = len(self.check_steps)
        one_epoch = self.steps_per_epoch * t + n * c
        if self.say and not self.said and (self.steps >= self.WARMUP + self.TIMED
                                           or self.step_in_epoch == self.steps_per_epoch):
            self.said, epochs = True, self.epochs - self.epoch
            checks = (f"{n} check{'s' * (n != 1)} x {c:.2f} s"
                      f"{'' if self.checks else ' guessed from its evaluation images'}")
            bound = ("at most", "; early stopping may end it sooner") if self.early_stopping \
                else ("about", "")
            rest = "the run" if self.epoch == 0 else "the rest of the run"
            tqdm.write(f"{self.name}: expected time, an estimate from steps "
                       f"{first}-{self.steps}: an epoch "
                       f"about {duration(one_epoch)}, {rest} {bound[0]} "
                       f"{duration(epochs * one_epoch)} = {epochs} epoch{'s' * (epochs != 1)} x "
                       f"({self.steps_per_epoch:,} steps x {t:.3f} s + {checks}){bound[1]}",
                       file=sys.stderr)
        left = ((self.steps_per_epoch - self.step_in_epoch) * t
                + sum(k > self.step_in_epoch for k in self.check_steps) * c
                + (self.epochs - self.epoch - 1) * one_epoch)
        self.shown["run_left"] = self.left_prefix + duration(left)
        self.bar.set_postfix(self.shown, refresh=False)
        self.bar.update(1)

    def check_done(self, **shown):
        """A check is done (its files written): its time taken, `shown` beside the bar."""
        now = self.clock()
        self.checks, self.check_seconds = self.checks + 1, self.check_seconds + (now - self.last)
        self.last = now
        self.shown.update(shown)

    def score(self, device=None) -> tuple[float, float]:
        """The training loss and accuracy since the last call, over DDP ranks."""
        means, self.running = self.running.means(device), RunningScore()
        return means

    def log(self, row: dict, seconds_key: str = "wall_time_s"):
        """An epoch's line from its history row: the loss and accuracy of each split it has."""
        if not self.say:
            return
        parts = []
        for split in ("train", "val", "test"):
            if f"{split}_accuracy" in row:
                loss = f"loss {row[f'{split}_loss']:.4f} " if split != "test" else ""
                parts.append(f"{split} {loss}acc {row[f'{split}_accuracy']:.4f}")
        tqdm.write(f"{self.name} epoch {row['epoch']:.2f}: {' | '.join(parts)} | "
                   f"{row[seconds_key]:.0f} s", file=sys.stderr)


Scalars = Callable[[str, float, int], None]  # (tag, value, global step): a Trainer's `scalars`
CHECK_SCALARS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss",
                 "test_accuracy", "lr")  # of each check's history row, as tags "train/loss", ...


@contextlib.contextmanager
def tensorboard_writer(run_dir) -> Iterator[Scalars]:
    """A Trainer's `scalars` into run_dir/tensorboard (`tensorboard --logdir outputs`), closed
    however the block ends; a resumed run's second file is read as the same run."""
    folder = Path(run_dir) / "tensorboard"
    # checked before the first step: SummaryWriter raises FileExistsError for a file or a
    # dangling link of that name, PermissionError for a folder it cannot write to
    if folder.is_symlink() and not folder.exists() or folder.exists() and not folder.is_dir():
        problem = ("a file, not a folder" if folder.exists() else
                   f"a link to {folder.readlink()}, which does not exist")
        raise UserError(f"{problem}; TensorBoard writes its event files into a folder of that "
                        "name", setting="tensorboard", value=folder)
    ensure_writable_dir(folder, setting="tensorboard", value=folder)
    # imported when asked for: tensorboard costs most scripts a second to load and nothing else
    from torch.utils.tensorboard import SummaryWriter
    writer = SummaryWriter(log_dir=str(folder), flush_secs=10)
    try:
        yield writer.add_scalar
    finally:
        writer.close()


# ---------------------------------------------------------------- the Trainer

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


class Trainer:
    def __init__(self, model: nn.Module, optimizer, loaders: dict, config: RunConfig, *,
                 precision="fp32", facts: dict | None = None, scheduler=None, device="cpu",
                 run_dir: RunDir | None = None, dist=system.DistInfo(), progress=False,
                 scalars: Scalars | None = None):
        """loaders: train, val and, or None, test and train_eval (the final table's). config:
        the run's (its recipe: the loop's length, checks, patience, label smoothing); facts:
        what metrics.json says of how it ran. scalars(tag, value, step), on the main process:
        each step's "train/step_loss" and each check's CHECK_SCALARS (tensorboard_writer)."""
        self.device = torch.device(device)
        self.raw_model = model.to(self.device, memory_format=torch.channels_last)
        self.model = self.raw_model  # what trains: the DDP wrapper under torchrun
        if dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.raw_model, device_ids=ids)
        self.optimizer, self.scheduler = optimizer, scheduler
        self.loaders = {"test": None, "train_eval": None} | loaders
        self.config, self.recipe, self.precision = config, config.recipe, precision
        self.facts, self.dist, self.run_dir = facts or {}, dist, run_dir
        self.scalars = scalars if dist.is_main else None
        self.early_stopping = EarlyStopping(patience=self.recipe.patience)
        train, k = self.loaders["train"], max(1, self.recipe.checks_per_epoch)
        self.progress = Progress(  # its running score: a checkpoint's `running`
            config.run, self.recipe.epochs, len(train),
            {max(1, round(len(train) * (i + 1) / k)) for i in range(k)},
            sum(len(l) * l.batch_size for l in (self.loaders["val"], self.loaders["test"])
                if l is not None), train.batch_size, early_stopping=bool(self.recipe.patience),
            say=dist.is_main, show_bar=progress and dist.is_main, left_prefix="<=")
        self.epoch = self.step_in_epoch = self.global_step = self.images_trained = 0
        self.wall_time_s = 0.0  # in fit() before this call: a resumed run's
        self.history = {"checks": [], "step_loss": [], "changes": []}
        self.best_model_state = None  # the best check's weights: the final table's
        self.best_state = None  # its whole state: checkpoint.pt after a divergence

    def fit(self) -> dict:
        """Train until `epochs` or the early stop; restore the best weights; return metrics.
        A signal stops it at the next step with a checkpoint (Interrupted); one after the last
        step lets the run finish and is raised then, with the metrics as its `result`."""
        self.started = time.perf_counter() - self.wall_time_s  # the wall clock's 0 s
        with StopRequest(self.dist.enabled) as stop:
            while self.epoch < self.recipe.epochs and not self.early_stopping.should_stop:
                self._train_epoch(stop)
            self.wall_time_s = time.perf_counter() - self.started
            if self.best_model_state is not None:
                self.raw_model.load_state_dict(self.best_model_state)
            confusion = empty_confusion()
            final = self.final_table(confusion)
            best = self.early_stopping.best_check
            result = {
                "run": self.config.run, "final": final,
                "epochs_completed": round(self.global_step / len(self.loaders["train"]), 4),
                "stopped_early": self.early_stopping.should_stop, "best_check": best,
                "best_epoch": self.history["checks"][best]["epoch"] if best >= 0 else None,
                "train_wall_time_s": round(self.wall_time_s, 2),
                "train_images_per_s": round(self.images_per_second(), 1),
                "precision": self.precision, "device": str(self.device),
                "world_size": self.dist.world_size, "changes_on_resume": self.history["changes"],
                "config": self.config.to_dict(), **self.facts}
            if self.run_dir is not None:
                self.run_dir.write_history(self.history)
                if "test" in final:
                    self.run_dir.write(CONFUSION_NAME, confusion_rows(confusion))
                self.run_dir.write(METRICS_NAME, result)
            if stop.signal:  # in the last check or the final table: finished and written
                raise stop.interrupted("the end of training", result=result)
        return result

    def _train_epoch(self, stop: StopRequest):
        train, progress = self.loaders["train"], self.progress
        train.set_epoch(self.epoch)
        self.raw_model.train()
        with progress.training(self.epoch, self.step_in_epoch):
            for x, y in train.batches(self.step_in_epoch):
                local_loss, correct = train_step(self.model, self.optimizer, x, y, self.device,
                                                 self.precision, self.recipe.label_smoothing)
                if self.scheduler is not None:
                    self.scheduler.step()
                self.step_in_epoch += 1
                self.global_step += 1
                self.images_trained += len(y)
                # one collective per step: the loss averaged over ranks (steps.csv), and
                # divergence and stop requests decided alike on every rank
                loss, stop_now = system.mean_and_any(local_loss, stop.signal is not None, self.device)
                if not math.isfinite(loss):
                    self._diverged(loss, "training loss")
                self.history["step_loss"].append(loss)
                if self.scalars is not None:
                    self.scalars("train/step_loss", loss, self.global_step)
                progress.step(local_loss, correct, len(y))
                if self.step_in_epoch in progress.check_steps:
                    self._check()
                    if self.early_stopping.should_stop:
                        break
                    if self.step_in_epoch < len(train) and self.run_dir is not None:
                        self.run_dir.write(CHECKPOINT_NAME, self.state_dict())  # the epoch's end: below
                    last = self.history["checks"][-1]
                    progress.check_done(loss=f"{last['train_loss']:.3f}",
                                        val_acc=f"{last['val_accuracy']:.3f}")
                if stop_now:
                    stop.signal = stop.signal or signal.SIGTERM  # another rank was signalled
                    self._interrupt(stop)
        if not self.early_stopping.should_stop:
            self.epoch, self.step_in_epoch = self.epoch + 1, 0
        if self.run_dir is not None:
            self.run_dir.write(CHECKPOINT_NAME, self.state_dict())
        if self.history["checks"]:
            progress.log(self.history["checks"][-1])

    def _check(self):
        """A check: its history row, early stopping, the best weights (best.pt)."""
        train_loss, train_acc = self.progress.score(self.device)
        val_loss, val_acc = self.evaluate(self.loaders["val"])
        test_loss, test_acc = (self.evaluate(self.loaders["test"])
                               if self.loaders["test"] is not None else (math.nan, math.nan))
        row = {"epoch": round(self.global_step / len(self.loaders["train"]), 4),
               "step": self.global_step, "train_loss": train_loss, "train_accuracy": train_acc,
               "val_loss": val_loss, "val_accuracy": val_acc,
               "test_loss": test_loss, "test_accuracy": test_acc,
               "wall_time_s": round(time.perf_counter() - self.started, 2),
               "lr": self.optimizer.param_groups[0]["lr"]}
        self.history["checks"].append(row)
        if self.scalars is not None:  # a split without a loader (nan) has no curve
            for key in CHECK_SCALARS:
                if math.isfinite(row[key]):
                    self.scalars(key.replace("_", "/"), row[key], self.global_step)
        # weights broken by a step whose own loss was finite: stop before they are saved
        if not math.isfinite(val_loss):
            self._diverged(val_loss, "validation loss")
        if self.early_stopping.update(val_loss, len(self.history["checks"]) - 1):
            self.best_state = copy.deepcopy(self.state_dict()
                                            | {"best_model": self.raw_model.state_dict()})
            self.best_model_state = self.best_state["best_model"]
            if self.run_dir is not None:
                self.run_dir.save_best(self.best_model_state, self.config.to_dict())

    def images_per_second(self) -> float:
        """Training images per second of step time in this process (checks excluded)."""
        seconds = self.progress.step_seconds
        return self.images_trained / seconds if seconds else 0.0

    def evaluate(self, loader, confusion=None) -> tuple[float, float]:
        return evaluate(self.raw_model, loader, self.device, self.precision, confusion=confusion)

    def final_table(self, confusion=None) -> dict:
        """Report Table 2.b layout: loss and accuracy per split, eval mode, no augmentation;
        the test set's confusion matrix into `confusion`."""
        table = {}
        for split, key in (("train", "train_eval"), ("validation", "val"), ("test", "test")):
            if self.loaders[key] is not None:
                loss, acc = self.evaluate(self.loaders[key], confusion if key == "test" else None)
                table[split] = {"loss": loss, "accuracy": acc}
        return table

    def state_dict(self) -> dict:
        return {
            "model": self.raw_model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "early_stopping": dataclasses.asdict(self.early_stopping),
            "best_model": self.best_model_state, "history": self.history,
            "running": dataclasses.asdict(self.progress.running),
            "wall_time_s": time.perf_counter() - self.started, "rng": system.rng_state(),
            "config": self.config.to_dict(), "precision": self.precision}

    def resume(self, state: dict, where=None):
        """Continue from a checkpoint read_checkpoint accepted (`where`: its path). Weights or
        optimizer state that do not fit are the user's mistake (one line); what fails after is
        a bug. What may change (MAY_CHANGE_ON_RESUME) applies from the step reached, recorded."""
        problem = weights_problem(self.raw_model, state["model"]) or \
            optimizer_problem(self.optimizer, state["optimizer"])
        if problem:
            raise UserError(f"does not fit this run ({problem})", setting="resume", value=where)
        self.raw_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler and state["lr_scheduler"]:
            self.scheduler.load_state_dict(state["lr_scheduler"])
        # the patience is not restored: a resumed run takes the one it is given
        saved, running = state["early_stopping"], state["running"]
        self.early_stopping = EarlyStopping(saved["best_score"], saved["best_check"],
                                            saved["wait_count"], self.recipe.patience)
        self.progress.running = RunningScore(running["loss_sum"], running["correct"], running["count"])
        if self.dist.world_size == 1:  # other ranks' RNG streams are not in the file
            system.set_rng_state(state["rng"])
        self.epoch, self.step_in_epoch, self.global_step, self.wall_time_s = (
            state["epoch"], state["step_in_epoch"], state["global_step"], state["wall_time_s"])
        self.best_model_state = state["best_model"]
        self.history = {"changes": []} | state["history"]
        # the recipe's settings a resumed run changed (precision, device and the data's path
        # may change too: they are the run's, not the recipe's)
        old = vars(RunConfig.from_dict(state["config"], where or "the checkpoint").recipe)
        new = vars(self.recipe)
        changed = {k: {"from": old[k], "to": new[k]} for k in MAY_CHANGE_ON_RESUME
                   if k in new and old[k] != new[k]}
        if state["precision"] != self.precision:
            changed["precision"] = {"from": state["precision"], "to": self.precision}
        if not changed:
            return
        steps = len(self.loaders["train"])
        change_schedule(self.optimizer, self.scheduler,
                        lr=self.recipe.lr if "lr" in changed else None,
                        total_steps=self.recipe.epochs * steps if "epochs" in changed else None)
        for group in self.optimizer.param_groups:
            for key in ("momentum", "weight_decay"):
                if key in changed and key in group:  # Adam has no momentum: it is SGD's
                    group[key] = new[key]
        self.history["changes"].append({"step": self.global_step,
                                        "epoch": round(self.global_step / steps, 4), **changed})

    def _diverged(self, value: float, what: str):
        sound = (self.run_dir is not None and self.best_state is not None
                 and self.early_stopping.best_score < SOUND_LOSS)
        if sound:  # the diverged state is worth nothing: resume from the best check's
            self.run_dir.write(CHECKPOINT_NAME, self.best_state)
        raise DivergenceError(what, value, f"epoch {self.epoch + 1}, step {self.global_step}",
                              lr=self.optimizer.param_groups[0]["lr"],
                              checkpoint=self.run_dir.checkpoint if sound else None)

    def _interrupt(self, stop: StopRequest):
        if self.run_dir is not None:
            self.run_dir.write(CHECKPOINT_NAME, self.state_dict())
            self.run_dir.write_history(self.history)
        # the other ranks wait for rank 0's files: torchrun stops every worker as soon as
        # one exits non-zero, which could kill rank 0 before its checkpoint is written
        system.barrier(self.device)
        raise stop.interrupted(f"epoch {self.epoch + 1}, step {self.global_step}",
                               self.run_dir.checkpoint if self.run_dir is not None else None)
