"""Files: atomic writes, a run's folder and its on-disk format, the checkpoint reader, and the
lock on an output folder. Everything a run writes goes through here; so does everything that
reads a finished run back.

  checkpoint.pt  everything needed to resume (one dict, torchvision's keys plus the loop's state)
  best.pt        the same, taken at the best validation check: the weights the final table is
                 scored with, and a sound place to resume from after a divergence
  metrics.json   the final table and how the run went
  history.csv    one row per validation check;  steps.csv  the training loss of every step
  confusion.csv  the test set's confusion matrix and per-class accuracy

A write goes to a temporary file named with the writer's pid, then is renamed: a crash leaves
no half-written file, and a temporary left by a killed writer is removed by the next write of
the same file. Only the writer (rank 0 under torchrun) touches the disk."""
from __future__ import annotations

import csv
import errno
import fcntl
import io
import json
import os
import pickle
import struct
import tempfile
import zipfile
from pathlib import Path

import torch

from .errors import OutputError, UserError

CHECKPOINT_NAME = "checkpoint.pt"
BEST_NAME = "best.pt"
METRICS_NAME = "metrics.json"
HISTORY_NAME = "history.csv"
STEPS_NAME = "steps.csv"
CONFUSION_NAME = "confusion.csv"
# what a resumable checkpoint holds (common.trainer.Trainer.state_dict), with the types its
# entries must have before anything uses them (None allowed where a run may have none)
CHECKPOINT_KEYS = {"model": dict, "optimizer": dict, "lr_scheduler": (dict, type(None)),
                   "epoch": int, "step_in_epoch": int, "global_step": int,
                   "early_stopping": dict, "best_model": (dict, type(None)), "history": dict,
                   "running": dict, "wall_time_s": (int, float), "rng": dict, "asked": dict,
                   "args": dict}
# what torch.load raises for a file that is not a (complete, readable) torch file; a damaged
# pickle can declare an object of any size (MemoryError, OverflowError: found by generated tests)
UNREADABLE = (OSError, EOFError, RuntimeError, ValueError, KeyError, AttributeError, TypeError,
              ImportError, IndexError, MemoryError, OverflowError, struct.error,
              pickle.UnpicklingError, zipfile.BadZipFile)


# ---------------------------------------------------------------- atomic writes

def ensure_writable_dir(path) -> Path:
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-", delete=True)
        probe.close()
    except OSError as err:
        raise UserError(f"cannot write to output folder {path}: {err.strerror or err}",
                        setting="output_dir") from None
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files, and the rename kept that mode: metrics and checkpoints were
# unreadable to anyone else (a shared results folder); give them what open() would
_FILE_MODE = 0o666 & ~_umask()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _sweep_stale(path: Path):
    """Remove the temporaries of `path` whose writer died (SIGKILL gives it no chance)."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _atomic(path, data: bytes) -> Path:
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _sweep_stale(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.",
                                   suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            os.chmod(tmp, _FILE_MODE)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:  # full disk, read-only folder, lost mount: the old file stays
        raise OutputError(path, err.strerror or str(err)) from None
    finally:  # an exception, an interrupt included: no temporary stays behind
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path


def save_torch(obj, path) -> Path:
    # serialised in memory first: torch's file writer reports a full disk as a RuntimeError
    # from its zip container, the plain write below as the OSError it is
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return _atomic(path, buffer.getvalue())


def save_text(text: str, path) -> Path:
    return _atomic(path, text.encode("utf-8"))


def save_json(obj, path) -> Path:
    return _atomic(path, (json.dumps(obj, indent=2) + "\n").encode())


def save_csv(rows: list[dict], path) -> Path:
    """rows: list of dicts sharing keys (the first row's keys are the header)."""
    text = io.StringIO()
    if rows:
        writer = csv.DictWriter(text, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        writer.writerows(rows)
    return _atomic(path, text.getvalue().encode())


def save_figure(fig, path, metadata: dict | None = None) -> Path:
    """A matplotlib figure as PNG, atomically; no date or version in it (the same figure gives
    the same bytes), `metadata` as its text chunks."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight",
                metadata={"Software": None, **(metadata or {})})
    return _atomic(path, buffer.getvalue())


def load_torch(path, map_location="cpu", weights_only: bool = False, *,
               setting: str | None = None):
    """torch.load, with a file that is not a readable torch file as one UserError line (about
    `setting`, when the file is a setting's value)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only)
    except UNREADABLE as err:  # truncated, foreign, unreadable: all the file's fault
        detail = f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"
        if setting is not None:
            raise UserError(f"cannot be read ({detail})", setting=setting, value=path) from None
        raise UserError(f"cannot read {path} ({detail})") from None


# ---------------------------------------------------------------- a run's folder

class RunDir:
    def __init__(self, path, writer: bool = True):
        self.path = Path(path)
        self.writer = writer

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_NAME

    @property
    def best(self) -> Path:
        return self.path / BEST_NAME

    def create(self) -> "RunDir":
        if self.writer:
            ensure_writable_dir(self.path)
        return self

    def save_checkpoint(self, state: dict, best: bool = False):
        if self.writer:
            save_torch(state, self.best if best else self.checkpoint)

    def write_history(self, history: dict):
        if not self.writer:
            return
        save_csv(history["checks"], self.path / HISTORY_NAME)
        save_csv([{"step": i + 1, "loss": v} for i, v in enumerate(history["step_loss"])],
                 self.path / STEPS_NAME)

    def write_metrics(self, metrics: dict):
        if self.writer:
            save_json(metrics, self.path / METRICS_NAME)

    def write_confusion(self, rows: list[dict]):
        if self.writer:
            save_csv(rows, self.path / CONFUSION_NAME)

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
            if not isinstance(result, dict) or "final" not in result:
                raise ValueError("not the metrics of a finished run")
            result["history"] = load_history(self.path)
        except (OSError, ValueError, KeyError) as err:
            raise UserError(f"cannot load a finished run from {self.path}: {err}",
                            value=self.path) from None
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


def _checkpoint_problem(state) -> str | None:
    """Why `state` is not a resumable checkpoint, or None."""
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not a dict"
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing:
        return f"it lacks {', '.join(missing[:4])}"
    wrong = [k for k, kind in CHECKPOINT_KEYS.items()
             if not isinstance(state[k], kind) or isinstance(state[k], bool)]
    if wrong:
        return f"its {', '.join(wrong[:4])} {'is' if len(wrong) == 1 else 'are'} damaged"
    history = state["history"]
    if not (isinstance(history.get("checks"), list) and isinstance(history.get("step_loss"), list)
            and all(isinstance(c, dict) for c in history["checks"])):
        return "its history is damaged"
    return None


def read_checkpoint(path) -> dict:
    """A resumable checkpoint, or one UserError line saying why the file is not one."""
    path = Path(path)
    if not path.is_file():
        raise UserError("no such checkpoint file", setting="resume", value=path)
    state = load_torch(path, setting="resume")
    problem = _checkpoint_problem(state)
    if problem:
        raise UserError(f"not a resumable checkpoint ({problem}); use the {CHECKPOINT_NAME} or "
                        f"{BEST_NAME} of a run's output folder", setting="resume", value=path)
    return state


# ---------------------------------------------------------------- the folder's lock

class FolderLock:
    """An exclusive lock on an output folder while a script writes it: a second run into the
    same folder stops at once instead of mixing its files with the first's. The script's end
    releases it (common.run.exits_cleanly), and the operating system whenever the process
    ends, so the lock of a dead process is free at once."""

    NAME = ".lock"
    held: set = set()  # this process's locks

    def __init__(self, folder):
        self.path = Path(folder) / self.NAME
        self._file = None

    def acquire(self) -> "FolderLock":
        try:
            self._file = open(self.path, "a+")
        except OSError as err:  # a directory, a dangling link, another user's file
            raise UserError(f"cannot take the lock {self.path} ({err.strerror or err}); "
                            "remove it if no run is writing there",
                            setting="output_dir") from None
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            self._file = None
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                raise UserError(f"cannot lock {self.path} ({err.strerror or err})",
                                setting="output_dir") from None
            raise UserError(f"{self.path.parent} is being written by another run ({holder}); "
                            "wait for it to finish", setting="output_dir") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"pid {os.getpid()}\n")
        self._file.flush()
        FolderLock.held.add(self)
        return self

    def release(self):
        if self._file is not None:
            try:
                self.path.unlink(missing_ok=True)  # still ours: the next run makes a new one
            except OSError:  # the folder turned read-only: the file stays, unlocked
                pass
            self._file.close()
            self._file = None
        FolderLock.held.discard(self)

    @classmethod
    def release_all(cls):
        for lock in list(cls.held):
            lock.release()
