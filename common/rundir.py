"""A run's folder and its on-disk format, in one place: the Trainer, the studies and the
speed-run write through it, and everything that reads a finished run back reads through it.

  checkpoint.pt  everything needed to resume (one dict, torchvision's keys plus the loop's state)
  best.pt        the weights the final table is scored with: {model, optimizer, lr_scheduler,
                 epoch, args}
  metrics.json   the final table and how the run went
  history.csv    one row per validation check;  steps.csv  the training loss of every step
  confusion.csv  the test set's confusion matrix and per-class accuracy (best weights)

Only the writer (rank 0 under torchrun) touches the disk."""
from __future__ import annotations

import csv
import fcntl
import json
import os
from pathlib import Path

import torch

from .data import CLASSES
from .errors import UserError
from .io import ensure_writable_dir, save_csv, save_json, save_torch

CHECKPOINT_NAME = "checkpoint.pt"
BEST_NAME = "best.pt"
METRICS_NAME = "metrics.json"
HISTORY_NAME = "history.csv"
STEPS_NAME = "steps.csv"
CONFUSION_NAME = "confusion.csv"


class RunDir:
    def __init__(self, path, writer: bool = True):
        self.path = Path(path)
        self.writer = writer

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_NAME

    def create(self) -> "RunDir":
        if self.writer:
            ensure_writable_dir(self.path)
        return self

    # ---------------------------------------------------------------- writing
    def save_checkpoint(self, state: dict):
        if self.writer:
            save_torch(state, self.checkpoint)

    def save_best(self, state: dict):
        if self.writer:
            save_torch(state, self.path / BEST_NAME)

    def write_history(self, history: dict):
        if not self.writer:
            return
        save_csv(history["checks"], self.path / HISTORY_NAME)
        save_csv([{"step": i + 1, "loss": v} for i, v in enumerate(history["step_loss"])],
                 self.path / STEPS_NAME)

    def write_metrics(self, metrics: dict):
        if self.writer:
            save_json(metrics, self.path / METRICS_NAME)

    def write_confusion(self, matrix: torch.Tensor):
        """matrix[true, predicted] counts -> one row per true class, with its accuracy."""
        if self.writer:
            save_csv(confusion_rows(matrix), self.path / CONFUSION_NAME)

    # ---------------------------------------------------------------- reading
    def confusion(self) -> list[dict]:
        with open(self.path / CONFUSION_NAME, newline="") as f:
            return list(csv.DictReader(f))

    def is_finished(self) -> bool:
        return (self.path / METRICS_NAME).is_file()

    def load_finished(self) -> dict:
        """metrics.json with the history attached (["history"]: checks and step losses)."""
        try:
            with open(self.path / METRICS_NAME) as f:
                result = json.load(f)
            result["history"] = load_history(self.path)
        except (OSError, ValueError, KeyError) as err:
            raise UserError(f"cannot load a finished run from {self.path}: {err}") from None
        return result


def load_history(run_dir) -> dict:
    run_dir = Path(run_dir)

    def rows(name):
        with open(run_dir / name, newline="") as f:
            return list(csv.DictReader(f))
    checks = [{k: float(v) for k, v in r.items()} for r in rows(HISTORY_NAME)]
    steps = ([float(r["loss"]) for r in rows(STEPS_NAME)]
             if (run_dir / STEPS_NAME).is_file() else [])
    return {"checks": checks, "step_loss": steps}


def confusion_rows(matrix: torch.Tensor) -> list[dict]:
    rows = []
    for true, name in enumerate(CLASSES):
        counts = [int(v) for v in matrix[true].tolist()]
        total = sum(counts)
        rows.append({"class": name, **dict(zip(CLASSES, counts)),
                     "accuracy": round(counts[true] / total, 4) if total else float("nan")})
    return rows


def read_checkpoint(path, map_location="cpu") -> dict:
    """A resumable checkpoint, or one line saying why the file is not one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--resume {path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # truncated, foreign, unreadable: all the file's fault
        raise UserError(f"cannot read checkpoint {path}: {err}".splitlines()[0]) from None
    if not isinstance(state, dict) or "early_stopping" not in state or "args" not in state:
        raise UserError(f"{path} is not a resumable checkpoint (use the {CHECKPOINT_NAME} "
                        "of a run's output folder)")
    return state


class FolderLock:
    """An exclusive lock on an output folder while a script writes it: a second run into the
    same folder stops at once instead of mixing its files with the first's. The script's end
    releases it (exits_cleanly), and the operating system whenever the process ends."""

    NAME = ".lock"
    held: set = set()  # this process's locks

    def __init__(self, folder):
        self.path = Path(folder) / self.NAME
        self._file = None

    def acquire(self) -> "FolderLock":
        self._file = open(self.path, "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            self._file = None
            raise UserError(f"{self.path.parent} is being written by another run ({holder}); "
                            "wait for it to finish or choose another --output-dir") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"pid {os.getpid()}\n")
        self._file.flush()
        FolderLock.held.add(self)
        return self

    def release(self):
        if self._file is not None:
            self.path.unlink(missing_ok=True)  # still ours: the next run makes a new one
            self._file.close()
            self._file = None
        FolderLock.held.discard(self)

    @classmethod
    def release_all(cls):
        for lock in list(cls.held):
            lock.release()
