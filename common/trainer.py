"""The generic Trainer: training steps, validation checks, early stopping, history,
checkpoints (resumable, atomic), interrupts and divergence, single process or DDP."""
from __future__ import annotations

import copy
import math
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import distributed as D
from .device import autocast
from .errors import DivergenceError, Interrupted, UserError
from .io import save_csv, save_json, save_torch

CHECKPOINT_NAME = "checkpoint.pt"  # everything needed to resume
BEST_NAME = "best.pt"              # the best model (lowest validation loss) as one dict


@torch.inference_mode()
def evaluate(model: nn.Module, loader, device, precision: str,
             forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[float, float]:
    """Mean loss and accuracy over a loader in eval mode (the model's mode is restored after),
    summed over DDP ranks. `forward(x)` gives the logits instead of `model(x)` (e.g. averaged
    over test-time views)."""
    was_training = model.training
    model.eval()
    forward = forward or model
    loss_sum = correct = count = 0.0
    for x, y in loader:
        with autocast(device, precision):
            logits = forward(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        count += len(y)
    model.train(was_training)
    loss_sum, correct, count = D.all_reduce_sum([loss_sum, correct, count], device)
    return loss_sum / max(count, 1), correct / max(count, 1)


@dataclass
class TrainerConfig:
    epochs: int
    validations_per_epoch: int = 2     # report: validation twice per epoch
    early_stop_count: int | None = 4   # report: stop after 4 checks without improvement
    precision: str = "fp32"
    progress: bool = True
    scheduler_interval: str = "epoch"  # when the LR scheduler steps: "epoch" or "step"
    output_dir: Path | None = None
    run_name: str = "run"
    args: dict = field(default_factory=dict)  # the command line, kept in checkpoints
    resume_command: str | None = None          # printed when interrupted


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict):
    # .cpu(): load_checkpoint maps the file onto the training device, but the generators only
    # accept CPU byte tensors (on CUDA every resume failed with "does not fit this model")
    torch.set_rng_state(state["torch"].cpu())
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


class Trainer:
    def __init__(self, model: nn.Module, optimizer, train_loader, val_loader, test_loader,
                 config: TrainerConfig, *, scheduler=None, device=None, train_eval_loader=None,
                 dist: D.DistInfo = D.DistInfo()):
        self.device = torch.device(device or "cpu")
        self.module = model.to(self.device, memory_format=torch.channels_last)
        self.model = self.module
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DDP(self.module, device_ids=ids)
        self.optimizer, self.scheduler = optimizer, scheduler
        self.loaders = {"train": train_loader, "val": val_loader, "test": test_loader,
                        "train_eval": train_eval_loader}
        self.config, self.dist = config, dist
        self.out = Path(config.output_dir) if config.output_dir else None
        # training state (all of it goes into the checkpoint)
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.best_val_loss = math.inf
        self.best_check = -1
        self.checks_without_improvement = 0
        self.best_model_state = None
        self.history = {"checks": [], "step_loss": []}
        self.running = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0}
        self.wall_time_s = 0.0
        self._stop_signal = None

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, loader) -> tuple[float, float]:
        return evaluate(self.module, loader, self.device, self.config.precision)

    def final_table(self) -> dict:
        """Report Table 2.b layout: loss and accuracy per split, eval mode, no augmentation."""
        table = {}
        for split, key in (("train", "train_eval"), ("validation", "val"), ("test", "test")):
            if self.loaders[key] is not None:
                loss, acc = self.evaluate(self.loaders[key])
                table[split] = {"loss": loss, "accuracy": acc}
        return table

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "early_stopping": {"best_val_loss": self.best_val_loss, "best_check": self.best_check,
                               "checks_without_improvement": self.checks_without_improvement},
            "best_model": self.best_model_state,
            "history": self.history,
            "running": self.running,
            "wall_time_s": self.wall_time_s,
            "rng": _rng_state(),
            "args": self.config.args,
        }

    def load_state_dict(self, state: dict):
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler and state.get("lr_scheduler"):
            self.scheduler.load_state_dict(state["lr_scheduler"])
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.global_step = state["global_step"]
        es = state["early_stopping"]
        self.best_val_loss, self.best_check = es["best_val_loss"], es["best_check"]
        self.checks_without_improvement = es["checks_without_improvement"]
        self.best_model_state = state["best_model"]
        self.history, self.running = state["history"], state["running"]
        self.wall_time_s = state["wall_time_s"]
        if self.dist.world_size == 1:  # other ranks' RNG streams are not in the file
            _set_rng_state(state["rng"])

    def load_checkpoint(self, path):
        path = Path(path)
        try:
            state = torch.load(path, map_location=self.device, weights_only=False)
        except FileNotFoundError:
            raise UserError(f"checkpoint {path} does not exist") from None
        except Exception as err:
            raise UserError(f"cannot read checkpoint {path}: {err}".splitlines()[0]) from None
        if not isinstance(state, dict) or "early_stopping" not in state:
            raise UserError(f"{path} is not a resumable checkpoint (use the {CHECKPOINT_NAME} "
                            "of a run's output folder)")
        try:
            self.load_state_dict(state)
        except (RuntimeError, KeyError, ValueError) as err:
            raise UserError(f"checkpoint {path} does not fit this model/optimizer: "
                            f"{str(err).splitlines()[0]}") from None

    def _save(self, name: str, state: dict):
        if self.out is not None and self.dist.is_main:
            save_torch(state, self.out / name)

    # ------------------------------------------------------------------ signals
    def _on_signal(self, signum, frame):
        self._stop_signal = self._stop_signal or signum  # keep the first one
        # A second Ctrl-C kills at once. Not under torchrun: it repeats the terminal's Ctrl-C
        # to every worker a moment later, which must not kill a worker mid-checkpoint (and it
        # escalates to SIGKILL by itself when workers do not stop).
        if not self.dist.enabled:
            signal.signal(signum, signal.SIG_DFL)

    def _install_signal_handlers(self):
        self._previous_handlers = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous_handlers[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread
                pass

    def _restore_signal_handlers(self):
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)

    # ------------------------------------------------------------------ training
    def _check_steps(self, steps_per_epoch: int) -> set[int]:
        k = max(1, self.config.validations_per_epoch)
        return {max(1, round(steps_per_epoch * (i + 1) / k)) for i in range(k)}

    def train_step(self, x, y):
        with autocast(self.device, self.config.precision):
            logits = self.model(x)
            loss = F.cross_entropy(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.scheduler is not None and self.config.scheduler_interval == "step":
            self.scheduler.step()
        return loss.item(), (logits.argmax(1) == y).sum().item()

    def _check(self, steps_per_epoch: int) -> bool:
        """Validation check: record history, update early stopping; True when it says stop."""
        loss_sum, correct, count = D.all_reduce_sum(
            [self.running["loss_sum"], self.running["correct"], self.running["count"]],
            self.device)
        val_loss, val_acc = self.evaluate(self.loaders["val"])
        test_loss, test_acc = (self.evaluate(self.loaders["test"])
                               if self.loaders["test"] is not None else (math.nan, math.nan))
        self.history["checks"].append({
            "epoch": round(self.global_step / steps_per_epoch, 4),
            "step": self.global_step,
            "train_loss": loss_sum / max(count, 1), "train_accuracy": correct / max(count, 1),
            "val_loss": val_loss, "val_accuracy": val_acc,
            "test_loss": test_loss, "test_accuracy": test_acc,
            "wall_time_s": round(self.wall_time_s + time.perf_counter() - self._t0, 2),
            "lr": self.optimizer.param_groups[0]["lr"],
        })
        self.running = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0}
        if not math.isfinite(val_loss):
            # the last optimizer step broke the weights although its loss was finite: stop
            # before they reach checkpoint.pt, so the last good checkpoint stays good
            self._diverged("validation loss", val_loss)
        check = len(self.history["checks"]) - 1
        if val_loss < self.best_val_loss:
            self.best_val_loss, self.best_check = val_loss, check
            self.checks_without_improvement = 0
            self.best_model_state = copy.deepcopy(self.module.state_dict())
            self._save(BEST_NAME, {"model": self.best_model_state,
                                   "optimizer": self.optimizer.state_dict(),
                                   "lr_scheduler": self.scheduler.state_dict()
                                   if self.scheduler else None,
                                   "epoch": self.epoch, "args": self.config.args})
        else:
            self.checks_without_improvement += 1
        limit = self.config.early_stop_count
        return bool(limit) and self.checks_without_improvement >= limit

    def _diverged(self, what: str, value: float):
        last_good = (f"; the last good checkpoint is {self.out / CHECKPOINT_NAME}"
                     if self.out is not None and (self.out / CHECKPOINT_NAME).exists() else "")
        raise DivergenceError(f"the {what} became {value} at epoch {self.epoch + 1}, step "
                              f"{self.global_step}; lower the learning rate (--lr){last_good}")

    def _interrupt(self):
        self.wall_time_s += time.perf_counter() - self._t0
        self._t0 = time.perf_counter()
        self._save(CHECKPOINT_NAME, self.state_dict())
        self._write_history()
        # the other ranks wait for rank 0's files: torchrun stops every worker as soon as
        # one exits non-zero, which could kill rank 0 before its checkpoint is written
        D.barrier(self.device)
        code = 128 + int(self._stop_signal or signal.SIGINT)
        name = signal.Signals(self._stop_signal or signal.SIGINT).name
        where = f"epoch {self.epoch + 1}, step {self.global_step}"
        msg = f"{name} received at {where}."
        if not self.dist.is_main:  # one full message (rank 0's) under torchrun
            raise Interrupted(f"rank {self.dist.rank}: {msg}", code)
        if self.out is not None:
            msg += f" Checkpoint written to {self.out / CHECKPOINT_NAME}."
            if self.config.resume_command:
                msg += f"\nResume with: {self.config.resume_command}"
        raise Interrupted(msg, code)

    def fit(self, resume=None) -> dict:
        """Train until `epochs` or the early stop; restore the best weights; return metrics."""
        if resume:
            self.load_checkpoint(resume)
        cfg = self.config
        train = self.loaders["train"]
        steps_per_epoch = len(train)
        check_steps = self._check_steps(steps_per_epoch)
        stopped_early = bool(cfg.early_stop_count) and \
            self.checks_without_improvement >= cfg.early_stop_count
        self._install_signal_handlers()
        self._t0 = time.perf_counter()
        try:
            while self.epoch < cfg.epochs and not stopped_early:
                train.set_epoch(self.epoch)
                bar = tqdm(total=steps_per_epoch, initial=self.step_in_epoch,
                           desc=f"{cfg.run_name} epoch {self.epoch + 1}/{cfg.epochs}",
                           disable=not (cfg.progress and self.dist.is_main), leave=False,
                           dynamic_ncols=True, mininterval=1.0)
                self.module.train()
                for x, y in train.batches(self.step_in_epoch):
                    local_loss, correct = self.train_step(x, y)
                    self.step_in_epoch += 1
                    self.global_step += 1
                    # one collective per step: the loss averaged over ranks (steps.csv), and
                    # divergence and stop requests decided alike on every rank (a NaN on one
                    # rank alone used to stop that rank only and leave the others blocked)
                    loss, stop = D.mean_and_any(local_loss, self._stop_signal is not None,
                                                self.device)
                    if not math.isfinite(loss):
                        self._diverged("training loss", loss)
                    self.history["step_loss"].append(loss)
                    self.running["loss_sum"] += local_loss * len(y)
                    self.running["correct"] += correct
                    self.running["count"] += len(y)
                    bar.update(1)
                    if self.step_in_epoch in check_steps:
                        stopped_early = self._check(steps_per_epoch)
                        last = self.history["checks"][-1]
                        bar.set_postfix(loss=f"{last['train_loss']:.3f}",
                                        val_acc=f"{last['val_accuracy']:.3f}")
                        if self.step_in_epoch < steps_per_epoch:  # end-of-epoch saves below
                            self.wall_time_s += time.perf_counter() - self._t0
                            self._t0 = time.perf_counter()
                            self._save(CHECKPOINT_NAME, self.state_dict())
                        if stopped_early:
                            break
                    if stop:
                        self._stop_signal = self._stop_signal or signal.SIGTERM
                        bar.close()
                        self._interrupt()
                bar.close()
                if self.scheduler is not None and cfg.scheduler_interval == "epoch":
                    self.scheduler.step()
                if not stopped_early:
                    self.epoch += 1
                    self.step_in_epoch = 0
                self.wall_time_s += time.perf_counter() - self._t0
                self._t0 = time.perf_counter()
                self._save(CHECKPOINT_NAME, self.state_dict())
                if self.dist.is_main and self.history["checks"]:
                    c = self.history["checks"][-1]
                    tqdm.write(f"{cfg.run_name} epoch {c['epoch']:.2f}: train loss "
                               f"{c['train_loss']:.4f} acc {c['train_accuracy']:.4f} | val loss "
                               f"{c['val_loss']:.4f} acc {c['val_accuracy']:.4f} | test acc "
                               f"{c['test_accuracy']:.4f} | {c['wall_time_s']:.0f} s", file=sys.stderr)
        finally:
            self._restore_signal_handlers()
        self.wall_time_s += time.perf_counter() - self._t0
        self._t0 = time.perf_counter()
        if self.best_model_state is not None:
            self.module.load_state_dict(self.best_model_state)
        final = self.final_table()
        result = {
            "run": cfg.run_name,
            "final": final,
            "epochs_completed": round(self.global_step / steps_per_epoch, 4),
            "stopped_early": stopped_early,
            "best_check": self.best_check,
            "best_epoch": (self.history["checks"][self.best_check]["epoch"]
                           if self.best_check >= 0 else None),
            "train_wall_time_s": round(self.wall_time_s, 2),
            "precision": cfg.precision,
            "device": str(self.device),
            "world_size": self.dist.world_size,
            "args": cfg.args,
        }
        self._write_history()
        if self.out is not None and self.dist.is_main:
            save_json(result, self.out / "metrics.json")
        return result

    def _write_history(self):
        if self.out is None or not self.dist.is_main:
            return
        save_csv(self.history["checks"], self.out / "history.csv")
        save_csv([{"step": i + 1, "loss": v} for i, v in enumerate(self.history["step_loss"])],
                 self.out / "steps.csv")
