"""Report 1.g: the per-layer table of CNN1g, read off the nn.Module by forward hooks."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

INPUT_SHAPE = (3, 32, 32)  # report 1.g: a CIFAR-10 image, 3x32x32


@dataclass
class LayerRow:
    name: str
    output_shape: tuple[int, ...]
    weight_shape: tuple[int, ...] | None = None  # as PyTorch stores it: out x in (x K x K)
    biases: int = 0

    @property
    def weights(self) -> int:
        return math.prod(self.weight_shape) if self.weight_shape else 0

    @property
    def parameters(self) -> int:
        return self.weights + self.biases


def describe(module: nn.Module) -> str:
    """The report's name for a layer, e.g. Conv2D(F=32,K=5,S=1,P=2)."""
    if isinstance(module, nn.Conv2d):
        return (f"Conv2D(F={module.out_channels},K={module.kernel_size[0]},"
                f"S={module.stride[0]},P={module.padding[0]})")
    if isinstance(module, nn.MaxPool2d):
        return f"MaxPool(K={module.kernel_size},S={module.stride})"
    if isinstance(module, nn.Linear):
        return f"Fully-Connected({module.in_features} -> {module.out_features})"
    return type(module).__name__


def layer_rows(model: nn.Module, input_shape=INPUT_SHAPE) -> list[LayerRow]:
    """One row per leaf module in the order a forward pass runs them, after an Input row."""
    rows = [LayerRow("Input", tuple(input_shape))]

    def record(module, inputs, output):
        weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
        rows.append(LayerRow(describe(module), tuple(output.shape[1:]),
                             tuple(weight.shape) if weight is not None else None,
                             bias.numel() if bias is not None else 0))

    leaves = [m for m in model.modules() if not any(m.children())]
    handles = [m.register_forward_hook(record) for m in leaves]
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for handle in handles:
            handle.remove()
    return rows


def totals(rows: list[LayerRow]) -> tuple[int, int, int]:
    """(weights, biases, parameters) summed over the table."""
    return (sum(r.weights for r in rows), sum(r.biases for r in rows),
            sum(r.parameters for r in rows))


def shape_text(shape) -> str:
    return "x".join(map(str, shape))
