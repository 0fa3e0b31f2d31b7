"""ResNet18 for report task 4: ImageNet weights (torchvision's cache or download, a local file, or
none), a 10-class head, and every parameter frozen except layer4 and fc."""
from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from .errors import UserError

IMAGENET_WEIGHTS = ResNet18_Weights.IMAGENET1K_V1  # torchvision's enum: url, file name, hash
NUM_CLASSES = 10
# report 4.a: only "the last five convolutional layers and the fully-connected one" learn;
# layer4 holds exactly five convolutions (four 3x3 and the 1x1 shortcut)
TRAINABLE = ("layer4", "fc")
DOWNLOAD_TIMEOUT_S = 30  # per network read: a stalled connection ends in an error, not a hang
WEIGHTS_HELP = ("imagenet: torchvision's ImageNet weights (IMAGENET1K_V1; from its cache, "
                "downloaded there when absent and online); none: random initialisation (no "
                "transfer; outputs say so); PATH: a resnet18 state_dict file, e.g. a copy of "
                "resnet18-f37072fd.pth (default: imagenet)")


def add_weights_option(parser):
    parser.add_argument("--weights", default="imagenet", metavar="imagenet|none|PATH",
                        help=WEIGHTS_HELP)


def is_random(spec: str) -> bool:
    return spec == "none"


def describe_weights(spec: str) -> str:
    """For titles, run records and messages."""
    if spec == "imagenet":
        return "ImageNet weights"
    if is_random(spec):
        return "random weights, no pretraining"
    return f"weights from {spec}"


def weights_cache_path() -> Path:
    """Where torchvision looks for (and downloads) the ImageNet weights file."""
    file_name = Path(urlparse(IMAGENET_WEIGHTS.url).path).name  # resnet18-f37072fd.pth
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def _one_line(err: Exception, limit: int = 300) -> str:
    """The exception as one short line (load_state_dict lists every key on its own line)."""
    text = " ".join(str(getattr(err, "reason", None) or err).split())
    text = text if len(text) <= limit else text[:limit] + " ..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def imagenet_state_dict(progress: bool = False) -> dict:
    """torchvision's ImageNet state_dict for ResNet18, from its cache or downloaded into it."""
    cached = weights_cache_path()
    was_cached = cached.is_file()
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return IMAGENET_WEIGHTS.get_state_dict(progress=progress, check_hash=True,
                                               weights_only=True)
    # whatever fails in here is the network, the disk or the cached file, not our code
    except Exception as err:
        if was_cached:
            raise UserError(f"torchvision's cached ImageNet weights {cached} cannot be read "
                            f"({_one_line(err)}); delete the file to download it again, or "
                            "pass --weights PATH") from None
        raise UserError(f"the ImageNet weights of ResNet18 are not in torchvision's cache and "
                        f"could not be downloaded ({_one_line(err)}); pass --weights PATH to a "
                        f"copy of {cached.name}, or put that file at {cached} (see docs/task4.md)") from None
    finally:
        socket.setdefaulttimeout(previous_timeout)


def state_dict_from_file(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--weights {path}: no such file (expected a resnet18 state_dict, "
                        "'imagenet' or 'none')")
    try:
        # weights_only: a state_dict is only tensors, and a foreign file runs no code
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, not a torch file, unreadable: all the file's fault
        raise UserError(f"--weights {path} cannot be read as a state_dict ({_one_line(err)}); "
                        "expected a file written by torch.save(resnet18().state_dict(), PATH)"
                        ) from None


def load_weights(spec: str, progress: bool = False) -> dict | None:
    """The resnet18 state_dict `spec` names: 'imagenet', a file's path, or 'none' (None:
    random initialisation); checked to fit ResNet18, so a wrong file is reported at once."""
    if is_random(spec):
        return None
    state = imagenet_state_dict(progress) if spec == "imagenet" else state_dict_from_file(spec)
    try:
        resnet18(weights=None).load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:  # other keys or shapes, or no dict
        raise UserError(f"--weights {spec} is not a resnet18 state_dict: "
                        f"{_one_line(err)}") from None
    return state


def resnet18_with(state: dict | None) -> nn.Module:
    """torchvision's ResNet18 (1000 ImageNet classes) with weights from load_weights (None:
    random initialisation, from torch's global generator)."""
    model = resnet18(weights=None)
    if state is not None:
        model.load_state_dict(state)
    return model


def load_resnet18(spec: str, progress: bool = False) -> nn.Module:
    return resnet18_with(load_weights(spec, progress))


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
