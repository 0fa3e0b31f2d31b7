"""Atomic file writes (temporary file, then rename): a crash never leaves a half-written file,
and a write the disk refuses (full, read-only) ends in one OutputError line."""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

import torch

from .errors import OutputError, UserError


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


def _atomic(path, data: bytes):
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            os.chmod(tmp, _FILE_MODE)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:  # full disk, read-only folder, lost mount: the old file stays
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path


def save_torch(obj, path):
    # serialised in memory first: torch's file writer reports a full disk as a RuntimeError
    # from its zip container, the plain write below as the OSError it is
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return _atomic(path, buffer.getvalue())


def save_text(text: str, path):
    return _atomic(path, text.encode("utf-8"))


def save_json(obj, path):
    return _atomic(path, (json.dumps(obj, indent=2) + "\n").encode())


def save_csv(rows: list[dict], path):
    """rows: list of dicts sharing keys (the first row's keys are the header)."""
    text = io.StringIO()
    if rows:
        writer = csv.DictWriter(text, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        writer.writerows(rows)
    return _atomic(path, text.getvalue().encode())


def save_figure(fig, path, metadata: dict | None = None):
    """A matplotlib figure as PNG, atomically; no date or version in it (the same figure gives
    the same bytes), `metadata` as its text chunks."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight",
                metadata={"Software": None, **(metadata or {})})
    return _atomic(path, buffer.getvalue())
