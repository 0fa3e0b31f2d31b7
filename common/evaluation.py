"""Scoring a model on a loader: mean loss, accuracy and, when asked, the confusion matrix."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed as D
from .device import autocast


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
    loss_sum, correct, count = D.all_reduce_sum([loss_sum, correct, count], device)
    if confusion is not None:
        confusion.copy_(D.all_reduce_tensor(confusion, device))
    return loss_sum / max(count, 1), correct / max(count, 1)
