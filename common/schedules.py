"""Learning-rate schedules, stepped after every training step, and how a resumed run changes
its rate or its length from the step it reached."""
from __future__ import annotations

import math

import torch

SCHEDULES = (None, "cosine")


class CosineToZero:
    """The rate multiplier of a cosine decay to 0 at `total` steps, from `value` at step
    `start`. A run resumed with another length continues from where it is: resized() keeps
    the multiplier reached and decays it to 0 at the new end (LambdaLR stores this object's
    fields in its state_dict, so a resumed run gets them back)."""

    def __init__(self, total: int, start: int = 0, value: float = 1.0):
        self.total, self.start, self.value = total, start, value

    def __call__(self, step: int) -> float:
        t = min(1.0, max(0.0, (step - self.start) / max(1, self.total - self.start)))
        return self.value * 0.5 * (1 + math.cos(math.pi * t))

    def resized(self, total: int, step: int) -> "CosineToZero":
        return CosineToZero(total, step, self(step))


def make_scheduler(schedule: str | None, optimizer, total_steps: int):
    """A scheduler stepped after every training step, or None for a constant rate."""
    if schedule is None:
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
