"""A training recipe (optimizer, learning rate, batch, augmentation, schedule) as data, and
train_recipe(), which turns one into a run: loaders, optimizer, scheduler, Trainer."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from . import experiment
from .augment import AugmentConfig

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = (None, "cosine", "step", "onecycle")


@dataclass(frozen=True)
class Recipe:
    optimizer: str                    # "sgd", "adam" or "adamw"
    lr: float
    batch_size: int
    weight_decay: float = 0.0
    betas: tuple = (0.9, 0.999)       # Adam/AdamW
    momentum: float = 0.0             # SGD
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    epochs: int = 10
    early_stop_count: int | None = 4  # checks without a better validation loss
    schedule: str | None = None       # LR schedule over the whole run (task 3e)

    def describe(self) -> dict:
        d = asdict(self)
        d["augment"] = {k: v for k, v in d["augment"].items() if v}
        return d


def make_optimizer(recipe: Recipe, params, lr: float):
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=recipe.momentum,
                               weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=recipe.betas, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=recipe.betas,
                                 weight_decay=recipe.weight_decay)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}; choose from {OPTIMIZERS}")


def make_scheduler(recipe: Recipe, optimizer, lr: float, epochs: int, steps_per_epoch: int):
    """(scheduler, interval): every schedule here steps once per training step."""
    total = epochs * steps_per_epoch
    if recipe.schedule is None:
        return None, "epoch"
    if recipe.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total), "step"
    if recipe.schedule == "step":  # divide by 10 at half and three quarters of the run
        return torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=[total // 2, 3 * total // 4], gamma=0.1), "step"
    if recipe.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total), "step"
    raise ValueError(f"unknown schedule {recipe.schedule!r}; choose from {SCHEDULES}")


def train_recipe(ctx, name: str, make_model: Callable[[], torch.nn.Module], recipe: Recipe,
                 notes: dict | None = None, **loader_kwargs) -> dict:
    """Train make_model() by `recipe` as run `name`; --lr, --batch-size, --epochs and --patience
    override it (--patience 0: no early stopping).
    `notes` are recorded with the recipe in metrics.json; loader_kwargs go to make_loaders.

    The model is built right after seeding with --seed, so its initial weights depend on the
    seed alone, not on the runs a script trained before it (a study's variants, task3's Model 2
    after Model 1): every run is reproduced by running it on its own."""
    args = ctx.args
    experiment.seed_everything(args.seed)
    model = make_model()
    lr = args.lr or recipe.lr
    batch_size = args.batch_size or recipe.batch_size
    epochs = args.epochs or recipe.epochs
    patience = recipe.early_stop_count if args.patience is None else (args.patience or None)
    loaders = experiment.make_loaders(ctx, batch_size, recipe.augment, **loader_kwargs)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(recipe, params, lr)
    scheduler, interval = make_scheduler(recipe, optimizer, lr, epochs, len(loaders["train"]))
    return experiment.train_run(
        ctx, name, model, optimizer, loaders, epochs=epochs, scheduler=scheduler,
        scheduler_interval=interval, early_stop_count=patience,
        recipe=recipe.describe() | {"lr": lr, "batch_size": batch_size, "epochs": epochs,
                                    "early_stop_count": patience}
        | (notes or {}))
