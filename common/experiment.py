"""One run of a recipe, and what a script sets up once for all its runs: device, DDP, the
output folder (locked), the CIFAR-10 splits and the checkpoint to resume from.

The library takes typed values: a script resolves its command line into RunSettings (and
recipe Overrides) once; nothing here reads an argparse namespace."""
from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import distributed as D
from . import plotting
from .data import CIFAR10Splits, cifar10_splits
from .device import pick_device, resolve_precision
from .precision import choose_precision
from .errors import UserError
from .io import ensure_writable_dir, save_json
from .loader import TensorLoader
from .recipes import Overrides, Recipe, make_optimizer
from .rundir import FolderLock, RunDir, read_checkpoint
from .schedules import make_scheduler
from .seeding import seed_everything
from .trainer import Trainer, TrainerConfig


@dataclass(frozen=True)
class RunSettings:
    """How and where a script runs, as opposed to what it trains (the recipe)."""
    task: str                          # the script: its runs' checkpoints name it
    data_dir: str | None = None        # None: $CIFAR10_DIR, else ./data/cifar10
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0
    subset: int | None = None          # at most this many images per split
    output_dir: str | None = None      # None: outputs/<task>, figures of full runs to plots/
    resume: str | None = None          # a checkpoint.pt to continue
    progress: bool = False
    overrides: Overrides = field(default_factory=Overrides)
    argv: tuple = ()                   # the command line as typed (records, resume commands)

    @property
    def command(self) -> str:
        return " ".join(shlex.quote(a) for a in self.argv)


@dataclass
class Session:
    settings: RunSettings
    device: torch.device
    dist: D.DistInfo
    output_root: Path
    figure_dir: Path
    splits: CIFAR10Splits | None = None
    resume_state: dict | None = None   # the checkpoint named by settings.resume
    lock: FolderLock | None = None

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def choose_precision(self, make_model, batch_size: int, image_size: int = 32) -> tuple[str, str]:
        """(precision, why) for this model: --precision, or under auto the faster here (a
        measured probe on a CPU); under torchrun every rank takes rank 0's choice."""
        precision, why = choose_precision(self.settings.precision, self.device, make_model,
                                          batch_size, image_size)
        if self.dist.enabled:
            bf16, = D.all_reduce_sum([float(precision == "bf16") if self.is_main else 0.0],
                                     self.device)
            precision = "bf16" if bf16 else "fp32"
        return precision, why

    def resume_command(self, checkpoint) -> str:
        """The command that continues this script from `checkpoint`: the same one, with
        --resume CHECKPOINT (under torchrun, a torchrun command)."""
        out, argv = [], iter(self.settings.argv[1:])
        for a in argv:
            if a == "--resume":
                next(argv, None)  # and its value
            elif not a.startswith("--resume="):
                out.append(a)
        launcher = ["python"]
        if self.dist.enabled:
            launcher = ["torchrun", f"--nproc_per_node={os.environ.get('LOCAL_WORLD_SIZE', '1')}"]
        return " ".join(shlex.quote(a) for a in launcher + out + ["--resume", str(checkpoint)])


def setup(settings: RunSettings, runs: list[str]) -> Session:
    """Device, DDP, the output folder (locked while this script writes it), the checkpoint to
    resume (checked against `runs`, the runs this script will train) and the data."""
    resume_state = None
    if settings.resume:
        resume_state = read_checkpoint(settings.resume)
        _check_resume_target(resume_state, settings, runs)
    device = pick_device(settings.device)
    dist = D.init_distributed(device.type)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    resolve_precision(settings.precision, device)  # an impossible one fails before the data
    trial = settings.subset is not None
    output_root = Path(settings.output_dir or f"outputs/{settings.task}")
    figure_dir = output_root if (settings.output_dir or trial) else Path("plots")
    lock = None
    if dist.is_main:
        ensure_writable_dir(output_root)
        ensure_writable_dir(figure_dir)
        lock = FolderLock(output_root).acquire()
    session = Session(settings, device, dist, output_root, figure_dir,
                      resume_state=resume_state, lock=lock)
    session.splits = cifar10_splits(settings.data_dir, seed=settings.seed, subset=settings.subset,
                                    progress=settings.progress and dist.is_main)
    return session


def _check_resume_target(state: dict, settings: RunSettings, runs: list[str]):
    record = state["args"]
    task, run = record.get("task"), record.get("run")
    if task != settings.task:
        raise UserError(f"--resume {settings.resume} is a checkpoint of {task}'s run {run}, "
                        f"not of {settings.task}; resume it with {task}")
    if run not in runs:
        raise UserError(f"--resume {settings.resume} is a checkpoint of run {run}, which this "
                        f"command does not train (it trains {', '.join(runs)})")


# what a run cannot change mid-run: a checkpoint resumes only under the same values
FIXED_ON_RESUME = ("batch_size", "image_size", "data", "subset", "seed")


def run_record(session: Session, name: str, recipe: Recipe, notes: dict | None = None) -> dict:
    s = session.settings
    return {"task": s.task, "run": name, "batch_size": recipe.batch_size,
            "image_size": recipe.image_size, "data": session.splits.source,
            "subset": s.subset, "seed": s.seed, "recipe": recipe.describe() | (notes or {}),
            "command": s.command}


def _check_fixed(state: dict, record: dict, checkpoint):
    saved = state["args"]
    differ = [f"{k} {saved.get(k)} (checkpoint) vs {record[k]} (now)"
              for k in FIXED_ON_RESUME if saved.get(k) != record[k]]
    if differ:
        raise UserError(f"--resume {checkpoint} cannot continue with other settings: "
                        f"{'; '.join(differ)}; these cannot change mid-run")


def make_loaders(session: Session, recipe: Recipe) -> dict:
    """train (shuffled, augmented), train_eval (no augmentation), val and test loaders."""
    s = session.splits
    if recipe.batch_size > len(s.train):
        raise UserError(f"--batch-size {recipe.batch_size} is larger than the {len(s.train)} "
                        "training images")
    common = dict(device=session.device, normalization=recipe.normalization,
                  resize=recipe.image_size if recipe.image_size != 32 else None,
                  seed=session.settings.seed, rank=session.dist.rank,
                  world_size=session.dist.world_size)
    evaluation = dict(batch_size=recipe.eval_batch_size, train=False, **common)
    return {
        "train": TensorLoader(s.train.images, s.train.labels, recipe.batch_size, train=True,
                              augment=recipe.augment, **common),
        "train_eval": TensorLoader(s.train.images, s.train.labels, **evaluation),
        "val": TensorLoader(s.val.images, s.val.labels, **evaluation),
        "test": TensorLoader(s.test.images, s.test.labels, **evaluation),
    }


def train_recipe(session: Session, name: str, make_model: Callable[[], torch.nn.Module],
                 recipe: Recipe, notes: dict | None = None) -> dict:
    """Train make_model() by `recipe` (with the command line's overrides) as run `name` under
    the output folder; returns metrics with the history attached.

    The model is built right after seeding, so its initial weights depend on the seed alone,
    not on the runs a script trained before it: every run is reproduced by running it alone.
    With --resume: the run the checkpoint belongs to continues from it; a run already finished
    in the output folder is loaded rather than trained again."""
    settings = session.settings
    recipe = settings.overrides.apply(recipe)
    run_dir = RunDir(session.output_root / name, writer=session.is_main)
    resume = session.resume_state
    if resume is not None and resume["args"]["run"] != name:
        resume = None
        if run_dir.is_finished():
            if session.is_main:
                print(f"{name}: finished earlier, loaded from {run_dir.path}")
            return run_dir.load_finished()
    record = run_record(session, name, recipe, notes)
    if resume is not None:
        _check_fixed(resume, record, settings.resume)
    seed_everything(settings.seed)
    model = make_model()
    loaders = make_loaders(session, recipe)
    if resume is not None and settings.precision == "auto" and "precision" in resume["args"]:
        precision, why = resume["args"]["precision"], "auto: the checkpoint's, as the run began"
    else:  # the probe leaves the seeded stream as it was
        precision, why = session.choose_precision(make_model, recipe.batch_size,
                                                  recipe.image_size)
    record["precision"], record["precision_reason"] = precision, why
    if session.is_main:
        print(f"{name}: {precision} ({record['precision_reason']})", file=sys.stderr)
    optimizer = make_optimizer(recipe, [p for p in model.parameters() if p.requires_grad])
    scheduler = make_scheduler(recipe.schedule, optimizer, recipe.epochs * len(loaders["train"]))
    # every rank starts from the same weights (DDP broadcasts rank 0's anyway); augmentation
    # and dropout draw rank-specific random numbers
    seed_everything(settings.seed + session.dist.rank)
    config = TrainerConfig(epochs=recipe.epochs, checks_per_epoch=recipe.checks_per_epoch,
                           patience=recipe.patience, precision=precision,
                           progress=settings.progress, run_name=name, record=record,
                           resume_command=session.resume_command(run_dir.checkpoint))
    trainer = Trainer(model, optimizer, loaders, config, scheduler=scheduler,
                      device=session.device, run_dir=run_dir.create(), dist=session.dist)
    result = trainer.fit(resume=resume)
    if session.is_main and "test" in result["final"]:
        acc = 100 * result["final"]["test"]["accuracy"]
        plotting.plot_confusion(run_dir.confusion(), run_dir / "confusion.png",
                                f"{name}: test set, best weights ({acc:.2f} % correct)")
    return result | {"history": trainer.history}


def save_results(session: Session, results: dict[str, dict], name: str = "results"):
    """All runs' metrics (without the per-step history) as one JSON beside the runs."""
    if session.is_main:
        save_json({k: {kk: vv for kk, vv in v.items() if kk != "history"}
                   for k, v in results.items()}, session.output_root / f"{name}.json")

