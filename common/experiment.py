"""Glue every task script shares: set-up from the command line (device, DDP, seed, data,
output folders), loaders for a recipe, and train_run(), which trains one named run with
the Trainer (or resumes it, or loads it when already finished)."""
from __future__ import annotations

import csv
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import distributed as D
from .augment import AugmentConfig
from .data import CIFAR10Splits, cifar10_splits
from .device import pick_device, resolve_precision
from .errors import UserError
from .io import ensure_writable_dir
from .loader import CIFAR_NORMALIZATION, TensorLoader
from .trainer import CHECKPOINT_NAME, Trainer, TrainerConfig
from .cli import resume_command

EVAL_BATCH_SIZE = 500  # evaluation only: larger batches are faster and change nothing


@dataclass
class Context:
    args: object
    task: str
    device: torch.device
    precision: str
    dist: D.DistInfo
    output_root: Path
    figure_dir: Path
    splits: CIFAR10Splits | None = None

    @property
    def is_main(self) -> bool:
        return self.dist.is_main


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup(args, task: str, load_data: bool = True) -> Context:
    """Device, DDP, seed, output folders and (unless load_data=False) the CIFAR-10 splits."""
    device = pick_device(args.device)
    dist = D.init_distributed(device.type)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    precision = resolve_precision(args.precision, device)
    trial = args.quick or args.subset is not None
    output_root = Path(args.output_dir or f"outputs/{task}")
    figure_dir = output_root if (args.output_dir or trial) else Path("plots")
    if dist.is_main:
        ensure_writable_dir(output_root)
        ensure_writable_dir(figure_dir)
    seed_everything(args.seed)
    ctx = Context(args, task, device, precision, dist, output_root, figure_dir)
    if load_data:
        ctx.splits = cifar10_splits(args.data_dir, seed=args.seed,
                                    subset=args.subset, progress=args.progress and dist.is_main)
    return ctx


def make_loaders(ctx: Context, batch_size: int, augment: AugmentConfig | None = None,
                 normalization=CIFAR_NORMALIZATION, resize: int | None = None,
                 eval_batch_size: int = EVAL_BATCH_SIZE) -> dict:
    """train (shuffled, augmented), train_eval (no augmentation), val and test loaders."""
    s = ctx.splits
    common = dict(device=ctx.device, normalization=normalization, resize=resize,
                  seed=ctx.args.seed, rank=ctx.dist.rank, world_size=ctx.dist.world_size)
    if batch_size > len(s.train):
        raise UserError(f"--batch-size {batch_size} is larger than the {len(s.train)} "
                        "training images")
    return {
        "train": TensorLoader(s.train.images, s.train.labels, batch_size, train=True,
                              augment=augment, **common),
        "train_eval": TensorLoader(s.train.images, s.train.labels, eval_batch_size,
                                   train=False, **common),
        "val": TensorLoader(s.val.images, s.val.labels, eval_batch_size, train=False, **common),
        "test": TensorLoader(s.test.images, s.test.labels, eval_batch_size, train=False, **common),
    }


def load_history(run_dir: Path) -> dict:
    def rows(name):
        with open(run_dir / name, newline="") as f:
            return list(csv.DictReader(f))
    checks = [{k: float(v) for k, v in r.items()} for r in rows("history.csv")]
    # steps.csv (the per-step training loss) is optional: results/ keeps only the checks
    steps = ([float(r["loss"]) for r in rows("steps.csv")]
             if (run_dir / "steps.csv").is_file() else [])
    return {"checks": checks, "step_loss": steps}


def load_finished_run(run_dir) -> dict:
    """A finished run's metrics.json with its history attached (resume, study baselines)."""
    run_dir = Path(run_dir)
    try:
        with open(run_dir / "metrics.json") as f:
            result = json.load(f)
        result["history"] = load_history(run_dir)
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"cannot load a finished run from {run_dir}: {err}") from None
    return result


def train_run(ctx: Context, name: str, model, optimizer, loaders: dict, *, epochs: int,
              scheduler=None, scheduler_interval: str = "epoch", early_stop_count: int | None = 4,
              validations_per_epoch: int = 2, recipe: dict | None = None) -> dict:
    """Train one run under ctx.output_root/name; returns metrics with its history attached.

    With --resume: a run whose checkpoint is the one named resumes from it, and a run already
    finished in this output folder is loaded rather than trained again.
    """
    args = ctx.args
    run_dir = ctx.output_root / name
    resume_from = None
    if args.resume:
        ckpt = Path(args.resume)
        if not ckpt.is_file():
            raise UserError(f"--resume {ckpt}: no such checkpoint file")
        if ckpt.resolve().parent == run_dir.resolve():
            resume_from = ckpt
        elif (run_dir / "metrics.json").is_file():
            result = load_finished_run(run_dir)
            if ctx.is_main:
                print(f"{name}: finished earlier, loaded from {run_dir}")
            return result
    # every rank starts from the same initial weights (DDP broadcasts rank 0's anyway);
    # augmentation and dropout draw rank-specific random numbers
    seed_everything(args.seed + ctx.dist.rank)
    config = TrainerConfig(
        epochs=epochs, validations_per_epoch=validations_per_epoch,
        early_stop_count=early_stop_count, precision=ctx.precision, progress=args.progress,
        scheduler_interval=scheduler_interval, output_dir=run_dir, run_name=name,
        args={k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool,
                                                                     type(None)))}
        | {"recipe": recipe or {}, "data_source": ctx.splits.source},
        resume_command=resume_command(sys.argv, run_dir / CHECKPOINT_NAME))
    if ctx.is_main:
        ensure_writable_dir(run_dir)
    trainer = Trainer(model, optimizer, loaders["train"], loaders["val"], loaders["test"], config,
                      scheduler=scheduler, device=ctx.device,
                      train_eval_loader=loaders.get("train_eval"), dist=ctx.dist)
    result = trainer.fit(resume=resume_from)
    result["history"] = trainer.history
    result["recipe"] = recipe or {}
    return result


def save_results(ctx: Context, results: dict[str, dict], name: str = "results"):
    """All runs' metrics (without the per-step history) as one JSON beside the runs."""
    from .io import save_json
    if ctx.is_main:
        save_json({k: {kk: vv for kk, vv in v.items() if kk != "history"}
                   for k, v in results.items()}, ctx.output_root / f"{name}.json")
