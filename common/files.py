"""Files: atomic writes, a run's folder and the files it holds, and the owner and lock of an
output folder. Everything a run writes goes through here; what it holds is read back, each file
checked against its type, by common.config (load_finished, read_checkpoint, load_confusion).

  checkpoint.pt  everything needed to resume (one dict, torchvision's keys plus the loop's state;
                 after a divergence, the state of the best check)
  best.pt        the best weights (a state_dict under "model", scored by the final table) and
                 the run's record under "config": what rebuilds the network, in every loop
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
import warnings
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
# every file a run writes in its folder ("config.json": common.config.CONFIG_NAME)
RUN_FILES = (METRICS_NAME, CONFUSION_NAME, "confusion.png", HISTORY_NAME, STEPS_NAME, BEST_NAME,
             CHECKPOINT_NAME, "config.json")
# what torch.load raises for a file that is not a (complete, readable) torch file; a damaged
# pickle can declare an object of any size (MemoryError, OverflowError: found by generated tests)
UNREADABLE = (OSError, EOFError, RuntimeError, ValueError, KeyError, AttributeError, TypeError,
              ImportError, IndexError, MemoryError, OverflowError, struct.error,
              pickle.UnpicklingError, zipfile.BadZipFile)


# ---------------------------------------------------------------- atomic writes

def ensure_writable_dir(path, setting: str = "output_dir", value=None) -> Path:
    """`path` made and writable, or a UserError about `setting`, the option whose value (the
    output folder itself, or `value`, which names this folder) it is."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-", delete=True)
        probe.close()
    except OSError as err:
        reason = err.strerror or err
        if value is not None:
            raise UserError(f"cannot be written to ({reason})", setting=setting,
                            value=value) from None
        raise UserError(f"cannot write to output folder {path}: {reason}",
                        setting=setting) from None
    return path


def output_file(path, setting: str, kind: str, replaceable) -> Path:
    """Where a file named by the user (predict.py's --export, --confusion) is to be written
    whole, checked before the work that makes it: a bad path is the user's (UserError, exit 2),
    not a disk failing mid-run (OutputError, 4). Refused: a folder (or a name ending in /), a
    dangling link (as cp refuses to write through one), what is not a regular file (a device,
    a pipe), an existing file that `replaceable(path)` does not recognise as `kind` (it would be
    lost), and a folder that is a file or cannot be written in. A link to a file is followed:
    the path returned is the file to write. Missing folders are created by the write."""
    text, path = os.fspath(path), Path(path)

    def refused(problem: str) -> UserError:
        return UserError(problem, setting=setting, value=text)
    if text.endswith(os.sep) or path.is_dir():  # is_dir follows links: one to a folder too
        raise refused(f"is a folder; give a file name, such as {path / ('model' + path.suffix)}"
                      if path.suffix else "is a folder; give a file name in it")
    if path.is_symlink() and not path.exists():
        raise refused(f"is a link to {os.readlink(path)}, which does not exist; remove the "
                      "link or give another name")
    path = path.resolve() if path.is_symlink() else path
    if path.exists() and not path.is_file():
        raise refused("exists and is not a regular file (a device, a pipe or a socket)")
    if path.exists() and not replaceable(path):
        raise refused(f"exists and is not {kind}; only {kind} is replaced: remove it or give "
                      "another name")
    folder = path.parent
    while not os.path.lexists(folder):  # the deepest folder that exists: the write makes the rest
        folder = folder.parent
    if not folder.is_dir():
        raise refused(f"{folder} is not a folder" + (" but a file" if folder.is_file() else ""))
    if not os.access(folder, os.W_OK | os.X_OK):
        raise refused(f"cannot write in {folder} (no permission, or a read-only file system)")
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files and a rename keeps the mode: give them what open() would, so that
# others can read a shared results folder
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


def _atomic(path, data: bytes, if_unwritable: str | None = None) -> Path | None:
    """Write `data` to `path` atomically; a write the disk refuses is an OutputError, or,
    for a file that is only an optimisation (a cache), the warning `if_unwritable` and None."""
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
        if if_unwritable is None:
            raise OutputError(path, err.strerror or str(err)) from None
        warnings.warn(f"{if_unwritable}: cannot write {path}: {err.strerror or err}")
        return None
    finally:  # an exception, an interrupt included: no temporary stays behind
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path


def save_bytes(data: bytes, path) -> Path:
    """Any file the package writes whole (an ONNX export), atomically."""
    return _atomic(path, data)


def save_torch(obj, path, if_unwritable: str | None = None) -> Path | None:
    # serialised in memory first: torch's file writer reports a full disk as a RuntimeError
    # from its zip container, the plain write below as the OSError it is
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return _atomic(path, buffer.getvalue(), if_unwritable)


def save_text(text: str, path) -> Path:
    return _atomic(path, text.encode("utf-8"))


def save_json(obj, path, if_unwritable: str | None = None) -> Path | None:
    return _atomic(path, (json.dumps(obj, indent=2) + "\n").encode(), if_unwritable)


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


def load_cache(path):
    """A cache file the package wrote, or None when it is absent, unreadable or not a torch
    file: a cache is rebuilt rather than trusted (its content is checked by its reader)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except UNREADABLE:
        return None


# ---------------------------------------------------------------- a run's folder

class RunDir:
    """A run's folder. `setting`: the option that named it (e.g. reuse_baseline), which a
    damaged file's UserError then names."""

    def __init__(self, path, writer: bool = True, setting: str | None = None):
        self.path = Path(path)
        self.writer = writer
        self.setting = setting

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_NAME

    def create(self) -> "RunDir":
        if self.writer:
            ensure_writable_dir(self.path)
        return self

    def write(self, name: str, data):
        """One of the run's files, whole and atomically, in the format its name says: .pt
        torch.save's, .json JSON, .csv rows (dicts sharing their keys). Only the writer (rank 0
        under torchrun) writes."""
        if self.writer:
            {".pt": save_torch, ".json": save_json, ".csv": save_csv}[Path(name).suffix](
                data, self.path / name)

    def save_best(self, weights: dict, config: dict):
        """best.pt, the one format of both loops: the best weights (a state_dict) under
        "model" and the run's record under "config", which rebuilds the network."""
        self.write(BEST_NAME, {"model": weights, "config": config})

    def write_history(self, history: dict):
        self.write(HISTORY_NAME, history["checks"])
        self.write(STEPS_NAME, [{"step": i + 1, "loss": v}
                                for i, v in enumerate(history["step_loss"])])

    def clear(self):
        """Remove what a run writes here (a run about to start in its place): a folder holds
        one run, whole, never one run's weights beside another's metrics."""
        if not self.writer:
            return
        for name in RUN_FILES:
            try:
                (self.path / name).unlink(missing_ok=True)
            except OSError as err:  # a read-only folder: the new run could not write either
                raise OutputError(self.path / name, err.strerror or str(err)) from None

    def is_finished(self) -> bool:
        return (self.path / METRICS_NAME).is_file()

# ---------------------------------------------------------------- the folder's owner and lock

OWNER_NAME = ".task"  # the script whose results an output folder holds


def claim_folder(folder, task: str, mark: bool = True):
    """Mark `folder` as holding `task`'s results, or refuse when it holds another script's: two
    scripts write files of the same names (results.csv, a run called baseline/), and the
    second would replace the first's without a word. mark=False refuses without marking (before
    anything there is replaced, while the run may still be refused)."""
    path = Path(folder) / OWNER_NAME
    if path.exists() and not path.is_file():
        raise UserError(f"{path} is not the file this package writes there; remove it",
                        setting="output_dir", value=Path(folder))
    try:
        owner = path.read_text().strip() if path.is_file() else _recorded_owner(Path(folder))
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read {path} ({err})", setting="output_dir") from None
    if owner and owner != task:
        raise UserError(f"holds the results of {owner}; {task} writes files of the same names "
                        f"there", setting="output_dir", value=Path(folder))
    if mark and not path.is_file():
        save_text(task + "\n", path)


def _recorded_owner(folder: Path) -> str | None:
    """The script a folder written before the .task mark belongs to: the task its runs'
    config.json record (a record that cannot be read names nobody)."""
    for record in sorted(folder.glob("*/config.json")) + sorted(folder.glob("*/*/config.json")):
        try:
            task = json.loads(record.read_text()).get("task")
        except (OSError, ValueError, AttributeError):  # AttributeError: JSON but no object
            continue
        if isinstance(task, str) and task:
            return task
    return None


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
