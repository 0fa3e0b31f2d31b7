"""Atomic file writes (temporary file, then rename): a crash never leaves a half-written file."""
from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path

import torch

from .errors import UserError


def ensure_writable_dir(path) -> Path:
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-", delete=True)
        probe.close()
    except OSError as err:
        raise UserError(f"cannot write to output folder {path}: {err.strerror or err}; "
                        "choose another with --output-dir") from None
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files, and the rename kept that mode: metrics and checkpoints were
# unreadable to anyone else (a shared results folder); give them what open() would
_FILE_MODE = 0o666 & ~_umask()


def _atomic(path, write):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.chmod(tmp, _FILE_MODE)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_torch(obj, path):
    return _atomic(path, lambda f: torch.save(obj, f))


def save_text(text: str, path):
    return _atomic(path, lambda f: f.write(text.encode("utf-8")))


def save_json(obj, path):
    return _atomic(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def save_csv(rows: list[dict], path):
    """rows: list of dicts sharing keys (the first row's keys are the header)."""
    def write(f):
        import io
        text = io.StringIO()
        if rows:
            writer = csv.DictWriter(text, fieldnames=list(rows[0].keys()))
            writer.writeheader()
            writer.writerows(rows)
        f.write(text.getvalue().encode())
    return _atomic(path, write)


def save_figure(fig, path):
    """Save a matplotlib figure as PNG atomically."""
    def write(f):
        fig.savefig(f, format="png", dpi=120, bbox_inches="tight")
    return _atomic(path, write)
