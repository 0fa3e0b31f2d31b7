"""Training-speed benchmark (issue 7): for Model 1 and the 1.g CNN, the compute ceiling, the
classic per-image DataLoader pipeline and this package's pipeline, in images/s and in seconds
per epoch including evaluation, with the two target ratios.

  python -m bench.train_speed --data-dir DIR                  # the full benchmark
  python -m bench.train_speed --data-dir DIR --steps 3        # a quick check that it runs
  python -m bench.train_speed --data-dir DIR --json speed.json --compile

The pipelines, each timed over --steps training steps after --warmup untimed ones:
  ceiling  forward + backward + optimizer step on a few pre-made batches (augmented, normalised,
           channels_last, already on the device): compute and nothing else
  classic  torchvision dataset with per-image PIL transforms in a DataLoader with 2 workers,
           model in the default memory format, fp32; each check re-evaluates the training,
           validation and test sets (batch 64, 2 workers, torch.no_grad)
  project  common.loader.TensorLoader (built by common.experiment.make_loaders, as the task
           scripts build it) feeding common.trainer.train_step; each check evaluates
           validation and test with Trainer.evaluate (batch 500)

Seconds per epoch are extrapolated, not run (see epoch_seconds): training images / measured
training images/s, plus 2 checks x the images a check evaluates / measured evaluation images/s
(measured on --eval-batches batches of 500 test images, the classic on as many images in
batches of 64). The classic epoch also pays its DataLoader worker start-up, measured as the
time to the first batch: once for training and once per split and check (7 per epoch).
Data loading and decoding before training (the package's uint8 cache) is not counted.

bf16 on a CPU without bf16 instructions is emulated and about 13x slower than fp32, so there it
is measured on at most 3 steps and 1 evaluation batch.
"""
from __future__ import annotations

import argparse
import itertools
import math
import platform
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from common import experiment
from common.augment import AugmentConfig
from common.data import (CLASSES, OFFICIAL_SUBDIR, VALIDATION_FRACTION, CIFAR10Splits,
                         cifar10_splits, detect_source, resolve_data_dir, stratified_split)
from common.device import autocast, cpu_has_bf16, pick_device, resolve_precision
from common.distributed import DistInfo
from common.errors import UserError, exits_cleanly
from common.io import ensure_writable_dir, save_json
from common.loader import CIFAR_NORMALIZATION
from common.models import CNN1g, Model1
from common.recipes import CNN1G, MODEL1, Recipe, make_optimizer
from common.trainer import Trainer, TrainerConfig, train_step

# ---------------------------------------------------------------- what is measured

CHECKS_PER_EPOCH = 2           # report: validation twice per epoch
CLASSIC_WORKERS = 2            # the classic DataLoader (issue 7)
CLASSIC_EVAL_BATCH_SIZE = 64   # the starter code's evaluation batch
TARGET_TRAIN_RATIO = 0.95      # issue 7: project images/s >= 95 % of the ceiling
TARGET_EPOCH_RATIO = 0.40      # issue 7: project s/epoch <= 0.4 x the classic pipeline's
EMULATED_BF16_STEPS = 3        # bf16 without bf16 instructions: ~3 s per Model 1 step
WARMUP_STEPS = 3
EVAL_BATCHES = 4               # 4 x 500 test images


@dataclass(frozen=True)
class Subject:
    """A model and the recipe its task script trains it with."""
    title: str
    make_model: Callable
    recipe: Recipe
    default_steps: int  # about 12 s of fp32 training per pipeline on a 2-core CPU

    @property
    def batch_size(self) -> int:
        return self.recipe.batch_size

    @property
    def augment(self) -> AugmentConfig | None:
        return self.recipe.augment if self.recipe.augment.active else None

    def make_optimizer(self, params):
        return make_optimizer(self.recipe, params)

    @property
    def summary(self) -> str:
        r = self.recipe
        augment = ", ".join(f"{k} {v:g}" if not isinstance(v, bool) else k
                            for k, v in r.describe()["augment"].items()) or "no augmentation"
        return (f"{r.optimizer} lr {r.lr:g}" + (f" wd {r.weight_decay:g}" if r.weight_decay else "")
                + f", batch {r.batch_size}, {augment}")


SUBJECTS = {
    "model1": Subject("Model 1", Model1, MODEL1, 50),   # report 3.a (task3.py)
    "cnn1g": Subject("CNN 1.g", CNN1g, CNN1G, 150),     # report 1.g / task 2 (task2.py)
}


@dataclass(frozen=True)
class Plan:
    steps: int          # timed training steps
    warmup: int         # untimed training steps before them (the first one timed on its own)
    eval_batches: int   # timed evaluation batches of 500 (the classic: as many images)
    eval_warmup: int    # untimed evaluation batches before them (0 or 1)


def plan_for(precision: str, device: torch.device, steps: int, warmup: int,
             eval_batches: int) -> Plan:
    if precision == "bf16" and bf16_is_emulated(device):
        return Plan(min(steps, EMULATED_BF16_STEPS), min(warmup, 1), 1, 0)
    return Plan(steps, warmup, eval_batches, 1 if warmup else 0)


def bf16_is_emulated(device: torch.device) -> bool:
    return device.type == "cpu" and not cpu_has_bf16()


class Clock:
    """perf_counter that waits for the GPU first, so queued kernels are counted."""

    def __init__(self, device: torch.device):
        self.device = device

    def __call__(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elif self.device.type == "mps":
            torch.mps.synchronize()
        return time.perf_counter()


def epoch_seconds(train_images: int, train_img_s: float, eval_images_per_check: int,
                  eval_img_s: float, checks: int = CHECKS_PER_EPOCH,
                  train_startup_s: float = 0.0, eval_startups_per_check: int = 0,
                  eval_startup_s: float = 0.0) -> dict:
    """One epoch extrapolated from measured rates: training, then `checks` evaluations."""
    train_s = train_images / train_img_s + train_startup_s
    eval_s = checks * (eval_images_per_check / eval_img_s
                       + eval_startups_per_check * eval_startup_s)
    return {"train_s": train_s, "eval_s": eval_s, "epoch_s": train_s + eval_s}


# ---------------------------------------------------------------- ceiling: ready tensors

def ceiling_step(model, optimizer, x, y, device, precision):
    with autocast(device, precision):
        loss = F.cross_entropy(model(x).float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def measure_ceiling(subject: Subject, batches: list, device, precision: str, plan: Plan,
                    clock: Clock, memory_format=torch.channels_last) -> dict:
    """memory_format=torch.contiguous_format checks that channels_last is the faster one."""
    torch.manual_seed(0)
    model = subject.make_model().to(device, memory_format=memory_format).train()
    optimizer = subject.make_optimizer(model.parameters())
    pool = itertools.cycle([(x.contiguous(memory_format=memory_format), y) for x, y in batches])
    for _ in range(plan.warmup):
        ceiling_step(model, optimizer, *next(pool), device, precision)
    start = clock()
    for _ in range(plan.steps):
        ceiling_step(model, optimizer, *next(pool), device, precision)
    seconds = clock() - start
    return {"img_s": plan.steps * subject.batch_size / seconds, "s_per_step": seconds / plan.steps,
            "steps": plan.steps, "warmup": plan.warmup}


# ---------------------------------------------------------------- project: the package's pipeline

def project_loaders(subject: Subject, splits: CIFAR10Splits, device) -> dict:
    """train / train_eval / val / test loaders, built by the task scripts' make_loaders."""
    session = experiment.Session(experiment.RunSettings(task="bench"), device, "fp32",
                                 DistInfo(), output_root=Path("."), figure_dir=Path("."),
                                 splits=splits)
    return experiment.make_loaders(session, subject.recipe)


def project_trainer(subject: Subject, splits: CIFAR10Splits, device, precision: str,
                    compile_model: bool = False) -> Trainer:
    """Loaders, model, optimizer and Trainer built the way task scripts build them
    (common.recipe.train_recipe)."""
    loaders = project_loaders(subject, splits, device)
    torch.manual_seed(0)
    model = subject.make_model()
    if compile_model:
        model = torch.compile(model)
    optimizer = subject.make_optimizer([p for p in model.parameters() if p.requires_grad])
    config = TrainerConfig(epochs=1, checks_per_epoch=subject.recipe.checks_per_epoch,
                           patience=None, precision=precision, progress=False)
    return Trainer(model, optimizer, loaders, config, device=device)


def endless(loader):
    """Training batches across epoch boundaries (tiny data sets run out within --steps)."""
    for epoch in itertools.count():
        loader.set_epoch(epoch)
        yield from loader.batches()


def measure_project(trainer: Trainer, plan: Plan, clock: Clock) -> dict:
    """Trainer.train_step on TensorLoader batches (batch preparation inside the timing), then
    Trainer.evaluate on test batches of 500."""
    train = trainer.loaders["train"]
    batches = endless(train)
    trainer.raw_model.train()

    def step(x, y):
        train_step(trainer.model, trainer.optimizer, x, y, trainer.device,
                   trainer.config.precision)
    first_step_s = None
    for i in range(plan.warmup):
        start = clock()
        step(*next(batches))
        if i == 0:
            first_step_s = clock() - start
    start = clock()
    for _ in range(plan.steps):
        step(*next(batches))
    seconds = clock() - start

    test = trainer.loaders["test"]
    first_eval_batch_s = None
    if plan.eval_warmup:
        start = clock()
        trainer.evaluate(itertools.islice(test.batches(), 1))
        first_eval_batch_s = clock() - start
    eval_batches = min(plan.eval_batches, len(test))
    eval_images = min(eval_batches * test.batch_size, len(test.labels))
    start = clock()
    trainer.evaluate(itertools.islice(test.batches(), eval_batches))
    eval_seconds = clock() - start
    return {"img_s": plan.steps * train.batch_size / seconds, "s_per_step": seconds / plan.steps,
            "steps": plan.steps, "warmup": plan.warmup, "first_step_s": first_step_s,
            "eval_img_s": eval_images / eval_seconds, "eval_images": eval_images,
            "eval_batch_size": test.batch_size, "eval_s_per_batch": eval_seconds / eval_batches,
            "first_eval_batch_s": first_eval_batch_s,
            "train_images_per_epoch": len(train) * train.batch_size}


def project_epoch(result: dict, splits: CIFAR10Splits) -> dict:
    return epoch_seconds(result["train_images_per_epoch"], result["img_s"],
                         len(splits.val) + len(splits.test), result["eval_img_s"])


# ---------------------------------------------------------------- classic: DataLoader + PIL

def classic_transforms(augment: AugmentConfig | None):
    from torchvision import transforms
    per_image = []
    if augment is not None:
        extra = {k for k, v in vars(augment).items() if v} - {"hflip", "rotate_degrees"}
        if extra:
            raise ValueError(f"no classic transform for {sorted(extra)}")
        if augment.hflip:
            per_image.append(transforms.RandomHorizontalFlip())
        if augment.rotate_degrees:
            per_image.append(transforms.RandomRotation(augment.rotate_degrees))
    return transforms.Compose(per_image + [transforms.ToTensor(),
                                           transforms.Normalize(*CIFAR_NORMALIZATION)])


def classic_datasets(root: Path, augment: AugmentConfig | None, seed: int = 0):
    """(training subset with the recipe's transforms, test set with ToTensor + Normalize) read
    by torchvision from the same folder, split 45,000 / 5,000 as the package splits it."""
    from torch.utils.data import Subset
    from torchvision import datasets

    train_tf, eval_tf = classic_transforms(augment), classic_transforms(None)
    if detect_source(root) == "official":
        class PresentCIFAR10(datasets.CIFAR10):
            # presence instead of md5, as in common.data: re-packed copies fail the md5 check
            # (a one-time cost at start-up, outside every timing)
            def _check_integrity(self):
                return (Path(self.root) / self.base_folder).is_dir()

            def _load_meta(self):
                self.classes = list(CLASSES)

        folder = root.parent if root.name == OFFICIAL_SUBDIR else root
        train = PresentCIFAR10(str(folder), train=True, transform=train_tf)
        test = PresentCIFAR10(str(folder), train=False, transform=eval_tf)
    else:
        train = datasets.ImageFolder(str(root / "train"), transform=train_tf)
        test = datasets.ImageFolder(str(root / "test"), transform=eval_tf)
    train_idx, _ = stratified_split(torch.tensor(train.targets), VALIDATION_FRACTION, seed)
    return Subset(train, train_idx.tolist()), test


def classic_train_step(model, optimizer, x, y, device):
    x, y = x.to(device), y.to(device)
    out = model(x)
    loss = F.cross_entropy(out, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item(), (out.argmax(1) == y).sum().item()  # the running loss/accuracy


@torch.no_grad()
def classic_eval_batch(model, x, y, device):
    x, y = x.to(device), y.to(device)
    out = model(x)
    return F.cross_entropy(out, y, reduction="sum").item(), (out.argmax(1) == y).sum().item()


def measure_classic(subject: Subject, root: Path, device, plan: Plan, clock: Clock) -> dict:
    from torch.utils.data import DataLoader

    train_set, test_set = classic_datasets(root, subject.augment)
    torch.manual_seed(0)
    model = subject.make_model().to(device).train()  # default memory format, fp32
    optimizer = subject.make_optimizer(model.parameters())

    loader = DataLoader(train_set, batch_size=subject.batch_size, shuffle=True,
                        num_workers=CLASSIC_WORKERS)
    full_batches = len(train_set) // subject.batch_size
    warmup = max(1, min(plan.warmup, full_batches - 1))  # the first batch is always a warm-up
    steps = min(plan.steps, full_batches - warmup)
    if steps < 1:
        raise UserError(f"{len(train_set)} training images are too few to time the classic "
                        f"pipeline at batch {subject.batch_size}")
    start = clock()
    batches = iter(loader)
    first = next(batches)
    startup_s = clock() - start  # worker start-up and the first batch
    classic_train_step(model, optimizer, *first, device)
    for _ in range(warmup - 1):
        classic_train_step(model, optimizer, *next(batches), device)
    start = clock()
    for _ in range(steps):
        classic_train_step(model, optimizer, *next(batches), device)
    seconds = clock() - start
    del batches  # stop the workers before the next measurement

    eval_loader = DataLoader(test_set, batch_size=CLASSIC_EVAL_BATCH_SIZE, shuffle=False,
                             num_workers=CLASSIC_WORKERS)
    wanted = math.ceil(plan.eval_batches * subject.recipe.eval_batch_size / CLASSIC_EVAL_BATCH_SIZE)
    eval_batches = min(wanted, len(eval_loader) - 1)
    if eval_batches < 1:
        raise UserError(f"{len(test_set)} test images are too few to time the classic evaluation")
    model.eval()
    start = clock()
    batches = iter(eval_loader)
    first = next(batches)
    eval_startup_s = clock() - start
    classic_eval_batch(model, *first, device)
    eval_images = 0
    start = clock()
    for _ in range(eval_batches):
        x, y = next(batches)
        classic_eval_batch(model, x, y, device)
        eval_images += len(y)
    eval_seconds = clock() - start
    del batches
    return {"img_s": steps * subject.batch_size / seconds, "s_per_step": seconds / steps,
            "steps": steps, "warmup": warmup, "startup_s": startup_s,
            "eval_img_s": eval_images / eval_seconds, "eval_images": eval_images,
            "eval_batch_size": CLASSIC_EVAL_BATCH_SIZE, "eval_startup_s": eval_startup_s,
            "workers": CLASSIC_WORKERS}


def classic_epoch(result: dict, splits: CIFAR10Splits) -> dict:
    return epoch_seconds(len(splits.train), result["img_s"],
                         len(splits.train) + len(splits.val) + len(splits.test),
                         result["eval_img_s"], train_startup_s=result["startup_s"],
                         eval_startups_per_check=3, eval_startup_s=result["eval_startup_s"])


# ---------------------------------------------------------------- one model

def pre_made_batches(subject: Subject, splits: CIFAR10Splits, device, count: int = 4) -> list:
    """A few batches exactly as the project's loader makes them, made once."""
    loader = project_loaders(subject, splits, device)["train"]
    return [(x.clone(), y.clone()) for x, y in itertools.islice(loader.batches(), count)]


def benchmark_model(name: str, args, splits: CIFAR10Splits, root: Path, device,
                    headline: str) -> dict:
    subject = SUBJECTS[name]
    clock = Clock(device)
    steps = args.steps or subject.default_steps
    batches = pre_made_batches(subject, splits, device)
    by_precision = {}
    for precision in args.precisions:
        plan = plan_for(precision, device, steps, args.warmup, args.eval_batches)
        ceiling = measure_ceiling(subject, batches, device, precision, plan, clock)
        project = measure_project(project_trainer(subject, splits, device, precision), plan, clock)
        project |= project_epoch(project, splits)
        by_precision[precision] = {"ceiling": ceiling, "project": project,
                                   "train_ratio": project["img_s"] / ceiling["img_s"]}
        if not (precision == "bf16" and bf16_is_emulated(device)):
            by_precision[precision]["ceiling_contiguous"] = measure_ceiling(
                subject, batches, device, precision, plan, clock, torch.contiguous_format)
        if args.compile:
            by_precision[precision]["compile"] = measure_compile(subject, splits, device,
                                                                 precision, plan, clock, project)
    classic = measure_classic(subject, root, device, plan_for("fp32", device, steps, args.warmup,
                                                             args.eval_batches), clock)
    classic |= classic_epoch(classic, splits)
    classic["precision"] = "fp32"
    for entry in by_precision.values():
        entry["epoch_ratio"] = entry["project"]["epoch_s"] / classic["epoch_s"]
    head = by_precision[headline]
    return {
        "ceiling_img_s": head["ceiling"]["img_s"],
        "classic_img_s": classic["img_s"],
        "project_img_s": head["project"]["img_s"],
        "classic_epoch_s": classic["epoch_s"],
        "project_epoch_s": head["project"]["epoch_s"],
        "precision": headline,
        "train_ratio": head["train_ratio"],
        "epoch_ratio": head["epoch_ratio"],
        "targets": {"train_ratio_min": TARGET_TRAIN_RATIO, "epoch_ratio_max": TARGET_EPOCH_RATIO,
                    "train_ratio_pass": head["train_ratio"] >= TARGET_TRAIN_RATIO,
                    "epoch_ratio_pass": head["epoch_ratio"] <= TARGET_EPOCH_RATIO},
        "ceiling_contiguous_img_s": head.get("ceiling_contiguous", {}).get("img_s"),
        "batch_size": subject.batch_size,
        "recipe": subject.summary,
        "classic": classic,
        "precisions": by_precision,
    }


def measure_compile(subject: Subject, splits, device, precision: str, plan: Plan, clock: Clock,
                    eager: dict) -> dict:
    """The project pipeline with torch.compile(model): compile time is the first training step
    and the first evaluation batch, less a steady one; does it pay within one epoch?"""
    plan = replace(plan, warmup=max(plan.warmup, 2), eval_warmup=1)
    trainer = project_trainer(subject, splits, device, precision, compile_model=True)
    result = measure_project(trainer, plan, clock)
    result |= project_epoch(result, splits)
    compile_s = (max(0.0, result["first_step_s"] - result["s_per_step"])
                 + max(0.0, result["first_eval_batch_s"] - result["eval_s_per_batch"]))
    saved_per_epoch = eager["epoch_s"] - result["epoch_s"]
    result |= {"compile_s": compile_s,
               "pays_within_first_epoch": compile_s + result["epoch_s"] < eager["epoch_s"],
               "break_even_epochs": compile_s / saved_per_epoch if saved_per_epoch > 0 else None}
    return result


# ---------------------------------------------------------------- report

def environment(device, splits: CIFAR10Splits, root: Path, args, headline: str) -> dict:
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                device_name = next(line.split(":", 1)[1].strip() for line in f
                                   if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
    return {"device": str(device), "device_name": device_name, "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_has_bf16": cpu_has_bf16(), "threads": torch.get_num_threads(),
            "data_dir": str(root), "data_source": splits.source,
            "split_sizes": {"train": len(splits.train), "val": len(splits.val),
                            "test": len(splits.test)},
            "headline_precision": headline, "precisions": args.precisions,
            "steps": {name: args.steps or SUBJECTS[name].default_steps for name in args.models},
            "warmup": args.warmup, "eval_batches": args.eval_batches,
            "compile": args.compile}


METHOD = {
    "img_s": "training images per second over the timed steps, after the warm-up steps",
    "epoch_s": "training images / training img/s + checks_per_epoch x (images evaluated per "
               "check / evaluation img/s); classic adds DataLoader worker start-up (time to the "
               "first batch) once for training and once per split and check",
    "checks_per_epoch": CHECKS_PER_EPOCH,
    "project_eval_splits": ["val", "test"],
    "classic_eval_splits": ["train", "val", "test"],
    "eval_img_s": "measured on --eval-batches x 500 test images (project, Trainer.evaluate) and "
                  "as many in batches of 64 (classic, 2 workers, torch.no_grad)",
    "train_ratio": "project img/s / ceiling img/s, same precision",
    "ceiling_contiguous": "the ceiling with model and batches in the default (contiguous) memory "
                          "format instead of channels_last: is channels_last the faster?",
    "epoch_ratio": "project s/epoch / classic s/epoch (classic always fp32)",
}


def seconds(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def print_report(results: dict, env: dict):
    sizes = env["split_sizes"]
    print(f"\nTraining speed on {env['device']} ({env['device_name']}, "
          f"{env['cpu_capability'] if env['device'] == 'cpu' else 'CUDA'}, "
          f"{env['threads']} thread{'s' if env['threads'] > 1 else ''}), torch {env['torch']}")
    print(f"data: {env['data_source']} ({sizes['train']:,} train / {sizes['val']:,} val / "
          f"{sizes['test']:,} test)")
    if env["device"] == "cpu" and not env["cpu_has_bf16"] and "bf16" in env["precisions"]:
        print(f"this CPU has no bf16 instructions: bf16 is emulated (slow) and measured on at most "
              f"{EMULATED_BF16_STEPS} steps and 1 evaluation batch")
    width = 38
    for name, r in results.items():
        subject = SUBJECTS[name]
        print(f"\n{subject.title} ({subject.summary})")
        print(f"  {'pipeline':<{width}}{'steps':>6}{'img/s':>8}{'eval img/s':>11}{'train s':>9}"
              f"{'eval s':>8}{'epoch s':>9}  img/s / ceiling, epoch s / classic")
        classic = r["classic"]

        def row(label, m, ceiling=None):
            cells = f"  {label:<{width}}{m['steps']:>6}{m['img_s']:>8.1f}"
            if "epoch_s" in m:
                cells += (f"{m['eval_img_s']:>11.1f}{seconds(m['train_s']):>9}"
                          f"{seconds(m['eval_s']):>8}{seconds(m['epoch_s']):>9}")
            if ceiling:
                cells += f"  {m['img_s'] / ceiling['img_s']:.3f}"
                if "epoch_s" in m:
                    cells += f", {m['epoch_s'] / classic['epoch_s']:.3f}"
            print(cells)

        for precision, p in r["precisions"].items():
            row(f"ceiling {precision}: ready tensors", p["ceiling"])
            if "ceiling_contiguous" in p:
                row(f"ceiling {precision}: same, not channels_last", p["ceiling_contiguous"],
                    p["ceiling"])
            row(f"project {precision}: TensorLoader + Trainer", p["project"], p["ceiling"])
            if "compile" in p:
                c = p["compile"]
                row(f"project {precision}: + torch.compile", c, p["ceiling"])
                pays = ("pays within the first epoch" if c["pays_within_first_epoch"] else
                        f"pays after {c['break_even_epochs']:.1f} epochs"
                        if c["break_even_epochs"] else "never pays (not faster per epoch)")
                print(f"    (compile time {c['compile_s']:.1f} s, not in epoch s: {pays})")
        row("classic fp32: DataLoader + PIL", classic)
        print(f"    (classic worker start-up, in epoch s: {classic['startup_s']:.2f} s for "
              f"training, {classic['eval_startup_s']:.2f} s for each evaluation pass)")
        t = r["targets"]
        print(f"  target, {r['precision']} project img/s >= {TARGET_TRAIN_RATIO} x ceiling:  "
              f"{r['train_ratio']:.3f}  {'PASS' if t['train_ratio_pass'] else 'FAIL'}")
        print(f"  target, {r['precision']} project epoch s <= {TARGET_EPOCH_RATIO} x classic: "
              f"{r['epoch_ratio']:.3f}  {'PASS' if t['epoch_ratio_pass'] else 'FAIL'}")
    print(f"\nepoch s is extrapolated from the timed steps: train s = training images / img/s, "
          f"eval s = {CHECKS_PER_EPOCH} checks x images per check / eval img/s;\n"
          f"a project check evaluates val + test ({sizes['val'] + sizes['test']:,} images, "
          f"batch 500), a classic check train + val + test "
          f"({sizes['train'] + sizes['val'] + sizes['test']:,} images, batch 64)\n"
          f"and the classic epoch adds its DataLoader worker start-up (time to the first batch) "
          f"once for training and 3 times per check")


# ---------------------------------------------------------------- command line

def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", metavar="DIR", default=None,
                   help="CIFAR-10 folder, as for the task scripts (default: $CIFAR10_DIR, else "
                        "./data/cifar10)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="where to measure (default: auto)")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the results here")
    p.add_argument("--models", default="model1,cnn1g",
                   help="comma-separated, from: " + ", ".join(SUBJECTS) + " (default: both)")
    p.add_argument("--precisions", default="fp32,bf16",
                   help="comma-separated, from: fp32, bf16 (default: both); the classic "
                        "pipeline is always fp32")
    p.add_argument("--steps", type=int, default=None, metavar="N",
                   help="timed training steps per pipeline (default: "
                        + ", ".join(f"{k} {r.default_steps}" for k, r in SUBJECTS.items())
                        + f"; emulated bf16 at most {EMULATED_BF16_STEPS})")
    p.add_argument("--warmup", type=int, default=WARMUP_STEPS, metavar="N",
                   help=f"untimed training steps before them (default: {WARMUP_STEPS})")
    p.add_argument("--eval-batches", type=int, default=EVAL_BATCHES, metavar="N",
                   help=f"timed evaluation batches of 500 images (default: {EVAL_BATCHES})")
    p.add_argument("--compile", action="store_true",
                   help="also time the project pipeline with torch.compile, at each precision "
                        "(compile time reported separately; about a minute per model and "
                        "precision on a 2-core CPU)")
    return p


def parse_args(argv=None):
    args = get_args_parser().parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    unknown = [m for m in args.models if m not in SUBJECTS]
    if unknown or not args.models:
        raise UserError(f"--models: unknown {', '.join(unknown) or '(none given)'}; choose from "
                        + ", ".join(SUBJECTS))
    bad = [p for p in args.precisions if p not in ("fp32", "bf16")]
    if bad or not args.precisions:
        raise UserError(f"--precisions: unknown {', '.join(bad) or '(none given)'}; "
                        "choose from fp32, bf16")
    for name in ("steps", "eval_batches"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.warmup < 0:
        raise UserError(f"--warmup must be 0 or more, got {args.warmup}")
    return args


@exits_cleanly
def main(argv=None) -> dict:
    args = parse_args(argv)
    device = pick_device(args.device)
    auto = resolve_precision("auto", device)
    headline = auto if auto in args.precisions else args.precisions[0]
    root = resolve_data_dir(args.data_dir)
    if args.json:  # fail now rather than after minutes of measuring
        try:
            ensure_writable_dir(Path(args.json).resolve().parent)
        except UserError:
            raise UserError(f"--json {args.json}: cannot write to its folder") from None
    start = time.perf_counter()
    splits = cifar10_splits(root, seed=0, progress=sys.stderr.isatty())
    print(f"data loaded in {time.perf_counter() - start:.1f} s (not counted)", flush=True)
    results = {}
    for name in args.models:
        start = time.perf_counter()
        results[name] = benchmark_model(name, args, splits, root, device, headline)
        print(f"{SUBJECTS[name].title} measured in {time.perf_counter() - start:.0f} s", flush=True)
    env = environment(device, splits, root, args, headline)
    print_report(results, env)
    report = {"environment": env, "method": METHOD, "models": results}
    if args.json:
        try:
            save_json(report, args.json)
        except OSError as err:
            raise UserError(f"cannot write {args.json}: {err.strerror or err}") from None
        print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    main()
