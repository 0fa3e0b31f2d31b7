"""Every training recipe of the package, with the report's words beside its numbers, the kinds
of value a setting takes and the rate schedules' shapes; it loads without torch, so that a
script's --help names the recipes' values at once (the optimizers they become are built where
they train: common.trainer, common.speedrun).

Where a value comes from: "report X" is the report's section; "starter code" is the course's
starter code (the report does not restate it); "our choice" is ours, with the reason; "Jordan
2024" is "94% on CIFAR-10 in 3.29 seconds on a single GPU" (arXiv 2404.00498), whose
published values are sized for a GPU; "airbench94_muon" is the same author's later published
script (KellerJordan/cifar10-airbench), which trains the convolution filters with Muon (Jordan
et al. 2024, "Muon: an optimizer for hidden layers").

What each script trains is registered here too (PLANS: task -> run -> model, recipe, switches),
so that the library trains any script's run by name (common.api) without importing a script."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, Strict

CIFAR_NORMALIZATION = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))  # starter code (tasks 2-3)
IMAGENET_NORMALIZATION = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # report 4.a: ImageNet's
# the speed-run: CIFAR-10 training-set channel statistics (its whitening absorbs any scale)
SPEEDRUN_NORMALIZATION = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))

# The kinds of value a setting takes, with their limits: common.config validates every record
# (a config.json, a checkpoint's, the options typed, api.train's keywords) against the fields'
# annotations, so a limit is stated once, beside the field it limits. Strict: "1" is no number
# and True no count (a JSON file or a keyword argument is taken as written).
Flag = Annotated[bool, Strict()]
Whole = Annotated[int, Strict()]
Text = Annotated[str, Strict()]
Finite = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Count = Annotated[int, Strict(), Field(ge=1)]
WholeAtLeast0 = Annotated[int, Strict(), Field(ge=0)]
Positive = Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)]
AtLeast0 = Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False)]
Fraction = Annotated[float, Strict(), Field(ge=0, lt=1)]  # [0, 1): momentum, smoothing
RECORD = ConfigDict(extra="forbid")  # an entry no field names is a mistake, not a comment


@dataclass(frozen=True)
class AugmentConfig:
    __pydantic_config__ = RECORD
    hflip: Flag = False                 # horizontal flip with probability 0.5
    rotate_degrees: Annotated[float, Strict(), Field(ge=0, le=180)] = 0.0  # uniform in [-d, d]
    translate_px: WholeAtLeast0 = 0     # shift by a uniform whole number in [-t, t], x and y
    translate_reflect: Flag = False     # fill what a shift uncovers by mirroring (default: black)
    hue: Annotated[float, Strict(), Field(ge=0, le=0.5)] = 0.0  # colour jitter, torchvision's
    saturation: AtLeast0 = 0.0          #   semantics (kornia ColorJitter)
    noise_std: AtLeast0 = 0.0           # additive Gaussian noise (image in [0, 1]), then clamped

    @property
    def active(self) -> bool:
        return any(asdict(self).values())


PRECISION_CHOICES = ("auto", "fp32", "bf16")  # what a run may ask for (the record's, the options')
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
QUICK_SUBSET = 1000  # --quick, api.train(quick=True): 1,000 images per split and one epoch
OPTIMIZERS = ("sgd", "adam", "adamw")
FILTER_OPTIMIZERS = ("sgd", "muon")
SCHEDULES = ("constant", "cosine")
Triple = tuple[float, float, float]
Normalization = tuple[Triple, tuple[Positive, Positive, Positive]]  # (mean, std), per channel


@dataclass(frozen=True)
class Recipe:
    """A recipe's settings carry the command line's names (torchvision's references': --opt,
    --lr, --momentum, --weight-decay, --lr-scheduler, --label-smoothing, ...); each field's
    annotation is its limit (common.config validates a record against it)."""
    __pydantic_config__ = RECORD
    opt: Literal[OPTIMIZERS]
    lr: Positive
    batch_size: Count
    weight_decay: AtLeast0 = 0.0
    betas: tuple[Fraction, Fraction] = (0.9, 0.999)  # Adam/AdamW (torch's default)
    momentum: Fraction = 0.0          # SGD
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    epochs: Count = 10                # starter code: at most 10 epochs
    patience: Count | None = 4        # starter code: stop after 4 checks without a lower
    #                                   validation loss; None trains every epoch
    checks_per_epoch: Count = 2       # starter code: validation twice per epoch
    lr_scheduler: Literal[SCHEDULES] = "constant"  # or "cosine": to 0 over the run, every step
    label_smoothing: Fraction = 0.0   # torch's cross_entropy label_smoothing
    image_size: Annotated[int, Strict(), Field(ge=32)] = 32  # resized to this on the fly
    normalization: Normalization = CIFAR_NORMALIZATION
    eval_batch_size: Count = 500      # our choice: evaluation only, larger is faster


@dataclass(frozen=True)
class SpeedrunConfig:
    """The speed-run recipe (common.speedrun); the defaults are Jordan 2024's published values.
    Each field's annotation is its limit (common.config validates a record against it)."""
    __pydantic_config__ = RECORD
    widths: tuple[Count, Count, Count] = (64, 256, 256)  # channels of the three conv groups
    epochs: Count = 10
    batch_size: Count = 1024
    lr: Positive = 1.5               # peak, for the batch-mean loss
    bias_lr_scale: Positive = 64.0   # BatchNorm and whitening biases learn this much faster
    momentum: Fraction = 0.85        # Nesterov
    weight_decay: AtLeast0 = 2e-3    # per step at the peak rate, scaled by the schedule
    label_smoothing: Fraction = 0.2
    translate_px: WholeAtLeast0 = 2
    translate_reflect: Flag = False  # uncovered border black (ours); True: mirrored (Jordan 2024)
    whiten_patch: Count = 2
    whiten_eps: Positive = 5e-4
    whiten_images: Count = 5000      # images the whitening statistics come from
    whiten_bias_epochs: WholeAtLeast0 = 3
    bn_momentum: Annotated[float, Strict(), Field(gt=0, le=1)] = 0.4  # the newest batch's weight
    head_scale: Positive = 1 / 9
    warmup: Fraction = 0.23          # fraction of steps to the peak rate
    lr_start: AtLeast0 = 0.2         # schedule multipliers: start, peak 1, end
    lr_end: AtLeast0 = 0.07
    tta_level: Literal[0, 1, 2] = 2  # 0 none, 1 flip, 2 flip and one-pixel shifts
    filter_optimizer: Literal[FILTER_OPTIMIZERS] = "sgd"  # "sgd" (Jordan 2024) or "muon"
    muon_lr: Positive = 0.24         # airbench94_muon (at its batch 2,000): Muon's rate,
    muon_momentum: Fraction = 0.6    #   momentum (Nesterov) and Newton-Schulz iterations
    muon_ns_steps: Count = 3
    lookahead: Flag = False          # Jordan 2024 (airbench94): weights pulled back every 5 steps
    #                                  to a slow average (common.speedrun.Lookahead)
    low_res_epochs: WholeAtLeast0 = 0  # progressive resizing (our choice, a classic of fast
    low_res_px: Annotated[int, Strict(), Field(ge=8, le=32)] = 24  # training): first epochs' size
    activation: Literal["gelu", "relu"] = "gelu"  # "gelu" (Jordan 2024) or "relu"
    ema_epochs: WholeAtLeast0 = 0    # weight averaging (our choice, issue 33; hlb-CIFAR10 had
    ema_decay: Annotated[float, Strict(), Field(gt=0, lt=1)] = 0.99  # one): scored on an
    #                                  exponential moving average, per step
    #                                  at this decay, of the weights and BatchNorm statistics of
    #                                  the last epochs (torch.optim.swa_utils.AveragedModel)

    def with_batch_size(self, batch_size: int) -> "SpeedrunConfig":
        """Another batch, with the rates and the weight decay scaled with it: the published
        SGD values are per summed loss, so they scale with the batch; Muon's step has a fixed
        size whatever the loss, so its rate is scaled to keep the distance the filters move
        per epoch (docs/speedrun.md: at batch 512, 0.06 trained better than the published
        0.24)."""
        scale = batch_size / self.batch_size
        return replace(self, batch_size=batch_size, lr=self.lr * scale,
                       weight_decay=self.weight_decay * scale, muon_lr=self.muon_lr * scale)


# ---------------------------------------------------------------- the report's recipes

# report 2 (the starter code's recipe): SGD, lr 5e-2, batch 64, no augmentation
CNN1G = Recipe(opt="sgd", lr=5e-2, batch_size=64)

# report 3.a, Model 1: AdamW, lr 3e-4, weight decay 0.05, batch 32,
# horizontal flip (p = 0.5) and random rotation in [-3, 3] degrees; converged within 7 epochs
MODEL1 = Recipe(opt="adamw", lr=3e-4, weight_decay=0.05, batch_size=32,
                augment=AugmentConfig(hflip=True, rotate_degrees=3))

# report 3.a, Model 2: AdamW, lr 1e-3, betas (0.9, 0.999), weight decay 0.01, batch 64,
# colour jitter (hue 0.05, saturation 0.05) and horizontal flip (p = 0.5); converged in 8 epochs
MODEL2 = Recipe(opt="adamw", lr=1e-3, betas=(0.9, 0.999), weight_decay=0.01, batch_size=64,
                augment=AugmentConfig(hflip=True, hue=0.05, saturation=0.05))

# report 4.a: Adam, lr 5e-4, batch 32, no data augmentation, images resized to 224 (ResNet18's
# ImageNet size) with ImageNet's mean and std; Figure 6 converged within a few epochs (our
# choice: at most 5); evaluation in batches of 100 (500 at 224 pixels need about 5 GB)
RESNET18_TRANSFER = Recipe(opt="adam", lr=5e-4, batch_size=32, epochs=5, image_size=224,
                           normalization=IMAGENET_NORMALIZATION, eval_batch_size=100)

# Beyond the report, our choice: the speed-run recipe re-tuned for a 2-core CPU: conv groups
# 64/128/256 instead of 64/256/256, batch 512 with the SGD rate and weight decay halved (the
# published values scale with the batch); from airbench94_muon, the filters trained by Muon,
# at 0.06 (its 0.24 scaled from its batch 2,000 to ours), every rate decaying linearly from
# its peak to 0 without warm-up, and translations filled by mirroring. docs/speedrun.md has
# the measurements behind each choice. Every other value is Jordan 2024's.
SPEEDRUN = SpeedrunConfig(widths=(64, 128, 256), batch_size=512, epochs=11, lr=0.75,
                          weight_decay=1e-3, filter_optimizer="muon", muon_lr=0.06,
                          warmup=0.0, lr_start=1.0, lr_end=0.0, translate_reflect=True)


# ---------------------------------------------------------------- the studies' variants

@dataclass(frozen=True)
class Variant:
    """One run of a study (tasks 3c-3e): Model 1 with one change, to its switches or its
    recipe."""
    name: str
    description: str
    model_kwargs: dict = field(default_factory=dict)     # changes to Model1(...)
    recipe_changes: dict = field(default_factory=dict)   # changes to the base Recipe

    def plan(self, base: Recipe) -> tuple:
        """(run, model, recipe, model_kwargs): the variant as common.run.setup() plans it."""
        return self.name, "model1", replace(base, **self.recipe_changes), self.model_kwargs


def _by_name(*variants: Variant) -> dict[str, Variant]:
    return {v.name: v for v in variants}


# report 3.c-3.d (task3cd.py): Model 1 against each single change the report lists
TASK3CD_VARIANTS = _by_name(
    Variant("baseline", "Model 1 as in report 3.a (ReLU)"),
    # report 3.d: "TanH activation with Xavier weight initialization instead of ReLU"
    Variant("tanh", "TanH with Xavier initialisation", {"activation": "tanh", "init": "xavier"}),
    # report 3.c "better" list, reverted one at a time
    Variant("batch64", "batch 64 instead of 32", recipe_changes={"batch_size": 64}),
    Variant("filters_32_64_128", "filters [32, 64, 128] instead of [64, 64, 64]",
            {"filters": (32, 64, 128)}),
    Variant("no_augment", "no data augmentation", recipe_changes={"augment": AugmentConfig()}),
    Variant("no_batchnorm", "no BatchNorm2d after the convolutions", {"batchnorm": False}),
    Variant("sgd", "SGD (lr 5e-2, the starter's) instead of AdamW",
            recipe_changes={"opt": "sgd", "lr": 5e-2, "weight_decay": 0.0}),
    # report 3.c "worse" list
    Variant("rotate90", "rotation in [-90, 90] degrees (excessive augmentation)",
            recipe_changes={"augment": AugmentConfig(hflip=True, rotate_degrees=90)}),
    Variant("adam_lr5e-2", "Adam with a high learning rate (5e-2)",
            recipe_changes={"opt": "adam", "lr": 5e-2, "weight_decay": 0.0}),
    Variant("dropout", "dropout 0.5 in the classifier", {"dropout": 0.5}),
    Variant("batchnorm1d", "BatchNorm1d in the classifier", {"batchnorm1d": True}),
)

# report 3.e (task3e.py): attempts to improve Model 1 further
NOISE_STD = 0.03  # our choice: report 3.e names Gaussian noise without a level; 3 % of the range
TASK3E_VARIANTS = _by_name(
    Variant("baseline", "Model 1 as in report 3.a (ReLU)"),
    Variant("leaky_relu", "LeakyReLU (slope 0.01) instead of ReLU", {"activation": "leaky_relu"}),
    Variant("silu", "SiLU instead of ReLU", {"activation": "silu"}),
    Variant("gaussian_noise", f"plus Gaussian-noise augmentation (std {NOISE_STD})",
            recipe_changes={"augment": AugmentConfig(hflip=True, rotate_degrees=3,
                                                     noise_std=NOISE_STD)}),
    # a schedule needs a fixed length: cosine decay over the whole run, no early stop
    Variant("cosine", "cosine learning-rate decay over 10 epochs (no early stopping)",
            recipe_changes={"lr_scheduler": "cosine", "patience": None}),
)


# ---------------------------------------------------------------- what each script trains

def _study(variants: dict[str, Variant], base: Recipe) -> dict[str, tuple]:
    return {name: v.plan(base)[1:] for name, v in variants.items()}


# task -> run -> (model: a name of common.run.MODELS, recipe, model_kwargs): every run a script
# trains by name. The scripts take their runs from here, and common.api trains any of them.
PLANS: dict[str, dict[str, tuple]] = {
    "task2": {"cnn1g": ("cnn1g", CNN1G, {})},
    "task3": {"model1": ("model1", MODEL1, {}), "model2": ("model2", MODEL2, {})},
    "task3cd": _study(TASK3CD_VARIANTS, MODEL1),
    # "speedrun" is common.config.SPEEDRUN_MODEL (config imports this module, not the reverse)
    "task3e": {**_study(TASK3E_VARIANTS, MODEL1), "speedrun": ("speedrun", SPEEDRUN, {})},
    # report 4.a with ImageNet's weights, and the same recipe without transfer; a weights file
    # given to task4a.py trains a third run, resnet18_weights_file
    "task4a": {"resnet18_imagenet": ("resnet18", RESNET18_TRANSFER, {"weights": "imagenet"}),
               "resnet18_random_init": ("resnet18", RESNET18_TRANSFER, {"weights": "none"})},
}


def planned(task: str, runs) -> list[tuple]:
    """common.run.setup()'s plans, (run, model, recipe, model_kwargs), for these runs of
    `task`."""
    return [(run, *PLANS[task][run]) for run in runs]


# ---------------------------------------------------------------- schedules

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


class WarmupLinear:
    """The speed-run's rate multiplier (Jordan 2024): linear from `start` up to 1 at `warmup`
    of the run's `total` steps, then linear down to `end`."""

    def __init__(self, total: int, warmup: float, start: float, end: float):
        self.total, self.warmup, self.start, self.end = total, warmup, start, end

    def __call__(self, step: int) -> float:
        t = step / max(self.total, 1)
        if t < self.warmup:
            return self.start + (1 - self.start) * t / self.warmup
        return 1 + (self.end - 1) * (t - self.warmup) / (1 - self.warmup)
