"""Report 1.b: how much a 1-pixel shift of the input changes each layer's output in CNN1g."""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from common.models import CNN1g
from task1.layer_table import describe

SEED = 0
SHIFT = 1  # pixels to the right: a "small translation"
IMAGE_SIZE = 32
BLUR = 5  # box-blur width that makes the random texture smooth


@dataclass
class ShiftRow:
    name: str
    output_shape: tuple[int, ...]
    change: float                    # ||f(shifted x) - f(x)|| / ||f(x)||
    change_shift_undone: float | None  # the same after shifting f(shifted x) back; None: not a whole pixel
    change_if_subsampled: float | None = None  # max-pool rows: keeping every 2nd pixel instead


def smooth_image(seed: int = SEED) -> torch.Tensor:
    """A smooth random 3-channel texture; periodic, so torch.roll is a translation without a seam."""
    noise = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))
    return F.avg_pool2d(F.pad(noise, [BLUR // 2] * 4, mode="circular"), BLUR, stride=1)


def relative_change(new: torch.Tensor, old: torch.Tensor) -> float:
    return float((new - old).norm() / old.norm())


def feature_extractor(seed: int = SEED) -> list[nn.Module]:
    """CNN1g's conv/ReLU/max-pool stages (untrained, seeded) up to Flatten."""
    torch.manual_seed(seed)
    model = CNN1g()
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            # circular padding + torch.roll: the shifted image loses no pixels at the border, so
            # equivariance can be checked exactly instead of up to border effects
            module.padding_mode = "circular"
    return list(itertools.takewhile(lambda m: not isinstance(m, nn.Flatten), model))


@torch.no_grad()
def shift_table(seed: int = SEED) -> list[ShiftRow]:
    x = smooth_image(seed)
    x_shifted = torch.roll(x, SHIFT, dims=-1)
    rows = [ShiftRow("Input", tuple(x.shape[1:]), relative_change(x_shifted, x), 0.0)]
    downsampling = 1  # the input shift is SHIFT / downsampling pixels at the current layer
    for layer in feature_extractor(seed):
        y, y_shifted = layer(x), layer(x_shifted)
        subsampled = None
        if isinstance(layer, nn.MaxPool2d):
            # control: the same downsampling without the max, to see what the max itself does
            s = layer.stride
            subsampled = relative_change(x_shifted[..., ::s, ::s], x[..., ::s, ::s])
            downsampling *= s
        undone = None
        if SHIFT % downsampling == 0:
            undone = relative_change(torch.roll(y_shifted, -(SHIFT // downsampling), dims=-1), y)
        rows.append(ShiftRow(describe(layer), tuple(y.shape[1:]), relative_change(y_shifted, y),
                             undone, subsampled))
        x, x_shifted = y, y_shifted
    return rows
