"""The networks: the CNNs of report tasks 1.g, 2 and 3 (one definition each, shared by task1 and
the trainers), and ResNet18 for task 4 with its ImageNet weights."""
from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from .data import NUM_CLASSES
from .errors import UserError
from .files import UNREADABLE, load_torch

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,  # the speed-run's (Jordan 2024)
}


def _cnn(kernels, filters, hidden, num_classes, act=nn.ReLU, batchnorm=False, dropout=0.0,
         batchnorm1d=False) -> list[nn.Module]:
    """The layers of a CNN for 32x32 images: a conv (padding k // 2 keeps the size) of each of
    `kernels` [+ BatchNorm2d] + act, the convs in len(filters) equal stages of filters[i]
    channels each ending in maxpool(2), then flatten [-> dropout] -> FC hidden [->
    BatchNorm1d] -> act [-> dropout] -> FC num_classes (softmax lives in the loss)."""
    layers, in_ch, per_stage = [], 3, len(kernels) // len(filters)
    for i, kernel in enumerate(kernels):
        out_ch = filters[i // per_stage]
        layers += [nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=not batchnorm),
                   *[nn.BatchNorm2d(out_ch)] * batchnorm, act(),
                   *[nn.MaxPool2d(2, 2)] * ((i + 1) % per_stage == 0)]
        in_ch = out_ch
    side = 32 >> len(filters)
    return [*layers, nn.Flatten(), *[nn.Dropout(dropout)] * bool(dropout),
            nn.Linear(in_ch * side * side, hidden), *[nn.BatchNorm1d(hidden)] * batchnorm1d,
            act(), *[nn.Dropout(dropout)] * bool(dropout), nn.Linear(hidden, num_classes)]


class CNN1g(nn.Sequential):
    """Report 1.g / task 2: three conv(5x5, pad 2)+ReLU+maxpool(2) stages of 32/64/128 filters,
    then 2048 -> 64 -> 10. 390,410 parameters."""

    def __init__(self, filters=(32, 64, 128), hidden=64, num_classes=NUM_CLASSES):
        super().__init__(*_cnn((5,) * len(filters), filters, hidden, num_classes))


class Model1(nn.Sequential):
    """Report 3.a Model 1: three blocks of [conv, BatchNorm2d, act] x 2 + maxpool(2), then
    flatten -> FC 64 -> act -> FC 10 (softmax lives in the loss).

    The first conv is 7x7 pad 3, the others 5x5 pad 2. The keyword arguments are the switches
    the task 3c/3e ablations flip; the defaults are the report's model.
    """

    def __init__(self, filters=(64, 64, 64), activation="relu", batchnorm=True,
                 init="default", dropout=0.0, batchnorm1d=False, hidden=64,
                 num_classes=NUM_CLASSES):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
        if init not in ("default", "xavier"):
            raise ValueError(f"unknown init {init!r}; choose 'default' or 'xavier'")
        super().__init__(*_cnn((7,) + (5,) * (2 * len(filters) - 1), filters, hidden,
                               num_classes, ACTIVATIONS[activation], batchnorm, dropout,
                               batchnorm1d))
        if init == "xavier":
            # report 3.c: TanH "with Xavier weight initialization"
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.xavier_uniform_(m.weight, gain=nn.init.calculate_gain("tanh"))
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)


class Model2(nn.Sequential):
    """Report 3.a Model 2: conv(32, 5x5)-conv(64)-conv(128)-conv(64), each + ReLU + maxpool(2),
    then flatten -> FC 64 -> ReLU -> FC 10.

    The report says the 3x3 convs use padding 2 *and* that the final maps are 2x2. Those cannot
    both hold: with padding 2 the maps go 32->16->9->5->3 (64x3x3). We take the self-consistent
    reading in which the 3x3 convs keep the size (padding 1): 32->16->8->4->2, 64x2x2 = 256 features.
    """

    def __init__(self, filters=(32, 64, 128, 64), hidden=64, num_classes=NUM_CLASSES):
        super().__init__(*_cnn((5,) + (3,) * (len(filters) - 1), filters, hidden, num_classes))


def count_parameters(model: nn.Module) -> int:
    """The number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------- ResNet18 (report task 4)

IMAGENET_WEIGHTS = ResNet18_Weights.IMAGENET1K_V1  # torchvision's enum: url, file name, hash
# report 4.a: only "the last five convolutional layers and the fully-connected one" learn;
# layer4 holds exactly five convolutions (four 3x3 and the 1x1 shortcut)
TRAINABLE = ("layer4", "fc")
DOWNLOAD_TIMEOUT_S = 30  # per network read: a stalled connection ends in an error, not a hang


def is_random(spec: str) -> bool:
    """'none' names no weights: random initialisation, no transfer."""
    return spec == "none"


def describe_weights(spec: str) -> str:
    """For titles, run records and messages."""
    if spec == "imagenet":
        return "ImageNet weights"
    if is_random(spec):
        return "random weights, no pretraining"
    return f"weights from {spec}"


def _one_line(err: BaseException, limit: int = 300) -> str:
    """The exception as one short line (load_state_dict lists every key on its own line)."""
    text = " ".join(str(getattr(err, "reason", None) or err).split())
    text = text if len(text) <= limit else text[:limit] + " ..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def imagenet_state_dict(progress: bool = False) -> dict:
    """torchvision's ImageNet state_dict for ResNet18, from its cache or downloaded into it."""
    # where torchvision looks for (and downloads) it: <hub>/checkpoints/resnet18-f37072fd.pth
    cached = Path(torch.hub.get_dir(), "checkpoints", Path(urlparse(IMAGENET_WEIGHTS.url).path)
                  .name)
    was_cached = cached.is_file()
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return IMAGENET_WEIGHTS.get_state_dict(progress=progress, check_hash=True,
                                               weights_only=True)
    except UNREADABLE as err:  # the network, the disk or the cached file; OSError included
        if was_cached:
            raise UserError(f"torchvision's cached ImageNet weights {cached} cannot be read "
                            f"({_one_line(err)}); delete the file to download it again",
                            setting="weights", value="imagenet") from None
        raise UserError(f"the ImageNet weights of ResNet18 are not in torchvision's cache and "
                        f"could not be downloaded ({_one_line(err)}); give a copy of "
                        f"{cached.name}, or put that file at {cached} (see docs/task4.md)",
                        setting="weights", value="imagenet") from None
    finally:
        socket.setdefaulttimeout(previous_timeout)


def load_weights(spec: str, progress: bool = False) -> dict | None:
    """The resnet18 state_dict `spec` names: 'imagenet', a file's path, or 'none' (None:
    random initialisation); checked to fit ResNet18, so a wrong file is reported at once."""
    if is_random(spec):
        return None
    if spec == "imagenet":
        state = imagenet_state_dict(progress)
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise UserError("no such file (expected a resnet18 state_dict, 'imagenet' or "
                            "'none')", setting="weights", value=spec)
        # weights_only: a state_dict is only tensors, and a foreign file runs no code
        state = load_torch(path, weights_only=True, setting="weights")
    problem = weights_problem(resnet18(weights=None), state)
    if problem:
        raise UserError(f"is not a resnet18 state_dict: {problem}", setting="weights", value=spec)
    return state


def weights_problem(model: nn.Module, weights: dict) -> str | None:
    """Why `weights` (a checkpoint's, a state_dict file's) cannot load into `model` (not a
    dict of tensors, other names or shapes: another architecture), or None."""
    if not isinstance(weights, dict):
        return f"it holds {type(weights).__name__}, not a state_dict"
    own = model.state_dict()
    odd = [k for k in own if k not in weights] + [k for k in weights if k not in own]
    if odd:
        return f"the weights' names differ: {', '.join(map(str, odd[:3]))}"
    for name, tensor in own.items():
        theirs = weights[name]
        if not isinstance(theirs, torch.Tensor) or theirs.shape != tensor.shape:
            shape = tuple(theirs.shape) if isinstance(theirs, torch.Tensor) else type(theirs)
            return f"{name} is {shape} in the checkpoint, {tuple(tensor.shape)} in the model"
    return None


def load_resnet18(spec: str, progress: bool = False) -> nn.Module:
    """torchvision's ResNet18 (1000 ImageNet classes) with the weights `spec` names
    (load_weights; none: random initialisation, from torch's global generator)."""
    state = load_weights(spec, progress)
    model = resnet18(weights=None)
    if state is not None:
        model.load_state_dict(state)
    return model


def resnet18_for_transfer(weights: str = "imagenet") -> nn.Module:
    """Report 4.a's network: ResNet18 starting from `weights` (load_weights' spec), a new
    CIFAR-10 head, every layer but TRAINABLE frozen."""
    return prepare_for_transfer(load_resnet18(weights))


def prepare_for_transfer(model: nn.Module, num_classes: int = NUM_CLASSES) -> nn.Module:
    """A new num_classes head, and every parameter outside TRAINABLE frozen.

    Only requires_grad is switched off (report 4.a freezes the other layers without saying
    more; the simplest reading): in train mode the BatchNorm layers
    of the frozen stages still update their running statistics to CIFAR-10's upscaled images
    (their learned scale and shift stay ImageNet's).
    """
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    for name, param in model.named_parameters():
        param.requires_grad = name.split(".")[0] in TRAINABLE
    return model
