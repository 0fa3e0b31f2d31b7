"""What a run shows while it trains: a progress bar per epoch and one log line per epoch."""
from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(total: int, desc: str, enabled: bool, initial: int = 0) -> tqdm:
    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, leave=False,
                dynamic_ncols=True, mininterval=1.0)


def log_epoch(run_name: str, row: dict, seconds_key: str = "wall_time_s"):
    """One line on stderr from a history row: the loss and accuracy of each split it has."""
    parts = []
    for split, label in (("train", "train"), ("val", "val"), ("test", "test")):
        if f"{split}_accuracy" in row:
            loss = f"loss {row[f'{split}_loss']:.4f} " if split != "test" else ""
            parts.append(f"{label} {loss}acc {row[f'{split}_accuracy']:.4f}")
    tqdm.write(f"{run_name} epoch {row['epoch']:.2f}: {' | '.join(parts)} | "
               f"{row[seconds_key]:.0f} s", file=sys.stderr)
