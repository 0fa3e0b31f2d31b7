"""Training-speed benchmark: the compute ceiling, the classic DataLoader pipeline and this
package's pipeline for Model 1 and the 1.g CNN, interleaved in rounds, ratios as medians over
the rounds with their spread. What is measured and how: docs/speed.md.

  python -m bench.train_speed --data-dir DIR                         # the full benchmark
  python -m bench.train_speed --data-dir DIR --rounds 1 --steps 2    # a quick check that it runs
  python -m bench.train_speed --data-dir DIR --models model1 --precisions fp32 --json speed.json
"""
from __future__ import annotations

from common.errors import while_starting

while_starting(__name__)  # before the heavy imports: a Ctrl-C while torch loads is one line

import dataclasses
import itertools
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from common import cli, run
from common.data import CIFAR_NORMALIZATION, CIFAR10Splits, Split, cifar10_splits, resolve_data_dir
from common.errors import UserError
from common.files import ensure_writable_dir, save_json
from common.models import CNN1g, Model1
from common.recipes import CNN1G, MODEL1, Recipe
from common.system import cpu_has_bf16, cpu_name, pick_device
from common.precision import BF16_MIN_SPEEDUP, choose_precision
from common.trainer import evaluate, make_optimizer, train_step

CHECKS_PER_EPOCH = 2           # report: validation twice per epoch
CLASSIC_WORKERS = 2            # the classic DataLoader: two worker processes
CLASSIC_EVAL_BATCH_SIZE = 64   # the starter code's evaluation batch
EMULATED_BF16_STEPS = 3        # bf16 emulated (a CPU without bf16 instructions): very slow


@dataclass(frozen=True)
class Subject:
    """A model, the recipe its task script trains it with, and its targets."""
    title: str
    make_model: Callable
    recipe: Recipe
    default_steps: int                 # timed steps per pipeline and round
    train_ratio_min: float | None      # project img/s >= this x the ceiling's
    epoch_ratio_max: float             # project s/epoch <= this x the classic pipeline's

    @property
    def batch_size(self) -> int:
        return self.recipe.batch_size

    @property
    def summary(self) -> str:
        r = self.recipe
        augment = ", ".join(k if v is True else f"{k} {v:g}"
                            for k, v in dataclasses.asdict(r.augment).items() if v
                            ) or "no augmentation"
        return (f"{r.opt} lr {r.lr:g}" + (f" wd {r.weight_decay:g}" if r.weight_decay else "")
                + f", batch {r.batch_size}, {augment}")


SUBJECTS = {
    "model1": Subject("Model 1", Model1, MODEL1, 20, 0.95, 0.5),  # report 3.a (task3.py)
    "cnn1g": Subject("CNN 1.g", CNN1g, CNN1G, 60, None, 0.3),     # report 1.g / task 2 (task2.py)
}


@dataclass(frozen=True)
class Plan:
    steps: int          # timed training steps
    warmup: int         # untimed training steps before them
    eval_batches: int   # timed evaluation batches of 500 (the classic: as many images)
    eval_warmup: bool   # one untimed evaluation batch first (the first round)


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


def timed_img_s(step, plan: Plan, clock: Clock, batch_size: int) -> float:
    for _ in range(plan.warmup):
        step()
    start = clock()
    for _ in range(plan.steps):
        step()
    return plan.steps * batch_size / (clock() - start)


def epoch_seconds(train_images: int, train_img_s: float, eval_images_per_check: int,
                  eval_img_s: float, train_startup_s: float = 0.0,
                  check_startup_s: float = 0.0) -> dict:
    """One epoch extrapolated from measured rates: training, then CHECKS_PER_EPOCH checks;
    the start-ups are the classic DataLoader's (workers to first batch)."""
    train_s = train_images / train_img_s + train_startup_s
    eval_s = CHECKS_PER_EPOCH * (eval_images_per_check / eval_img_s + check_startup_s)
    return {"train_s": train_s, "eval_s": eval_s, "epoch_s": train_s + eval_s}


# ---------------------------------------------------------------- the three pipelines

class Ceiling:
    """Forward + backward + optimizer step on a few ready batches, cycled: compute only."""

    def __init__(self, subject: Subject, batches: list, device, precision: str,
                 memory_format=torch.channels_last):
        torch.manual_seed(0)
        self.model = subject.make_model().to(device, memory_format=memory_format).train()
        self.optimizer = make_optimizer(subject.recipe, self.model.parameters())
        self.batches = itertools.cycle([(x.contiguous(memory_format=memory_format), y)
                                        for x, y in batches])
        self.device, self.precision, self.batch_size = device, precision, subject.batch_size

    def step(self):
        train_step(self.model, self.optimizer, *next(self.batches), self.device, self.precision)

    def measure(self, plan: Plan, clock: Clock) -> dict:
        return {"steps": plan.steps, "img_s": timed_img_s(self.step, plan, clock, self.batch_size)}


def endless(loader):
    """Training batches across epoch boundaries (tiny data sets run out within a round)."""
    for epoch in itertools.count():
        loader.set_epoch(epoch)
        yield from loader.batches()


class Project:
    """The task scripts' code path: common.run.make_loaders' TensorLoaders feeding
    common.trainer.train_step; a check evaluates validation and test (common.trainer)."""

    def __init__(self, subject: Subject, splits: CIFAR10Splits, device, precision: str):
        self.loaders = run.make_loaders(splits, subject.recipe, device=device, seed=0)
        torch.manual_seed(0)
        self.model = subject.make_model().to(device, memory_format=torch.channels_last).train()
        self.optimizer = make_optimizer(subject.recipe, self.model.parameters())
        self.batches = endless(self.loaders["train"])
        self.device, self.precision = device, precision
        train = self.loaders["train"]
        self.train_images = len(train) * train.batch_size  # the last partial batch is dropped
        self.eval_images = len(splits.val) + len(splits.test)

    def step(self):
        train_step(self.model, self.optimizer, *next(self.batches), self.device, self.precision)

    def measure(self, plan: Plan, clock: Clock) -> dict:
        img_s = timed_img_s(self.step, plan, clock, self.loaders["train"].batch_size)
        test = self.loaders["test"]
        if plan.eval_warmup:
            evaluate(self.model, itertools.islice(test.batches(), 1), self.device, self.precision)
        batches = min(plan.eval_batches, len(test))
        start = clock()
        evaluate(self.model, itertools.islice(test.batches(), batches), self.device,
                 self.precision)
        eval_img_s = min(batches * test.batch_size, len(test.labels)) / (clock() - start)
        return {"steps": plan.steps, "img_s": img_s, "eval_img_s": eval_img_s,
                **epoch_seconds(self.train_images, img_s, self.eval_images, eval_img_s)}


class PILImages(torch.utils.data.Dataset):
    """A split served as torchvision's CIFAR10 serves it: each item a PIL image from the
    in-memory uint8 array, through per-image transforms."""

    def __init__(self, split: Split, transform):
        self.images = np.ascontiguousarray(split.images.permute(0, 2, 3, 1).numpy())
        self.labels = split.labels.tolist()
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image
        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def classic_transforms(recipe: Recipe | None):
    """The recipe's augmentation as torchvision's per-image transforms, then ToTensor and
    Normalize; None: evaluation (no augmentation)."""
    from torchvision import transforms
    per_image = []
    if recipe is not None:
        augment = recipe.augment
        extra = {k for k, v in vars(augment).items() if v} - {"hflip", "rotate_degrees"}
        if extra:
            raise ValueError(f"no classic transform for {sorted(extra)}")
        if augment.hflip:
            per_image.append(transforms.RandomHorizontalFlip())
        if augment.rotate_degrees:
            per_image.append(transforms.RandomRotation(augment.rotate_degrees))
    return transforms.Compose(per_image + [transforms.ToTensor(),
                                           transforms.Normalize(*CIFAR_NORMALIZATION)])


class Classic:
    """The starter code's way: per-image PIL transforms in a DataLoader with 2 workers, the
    model in the default memory format, fp32; a check evaluates training, validation and test
    in batches of 64. Every round starts its DataLoaders afresh, as every epoch and check does."""

    def __init__(self, subject: Subject, splits: CIFAR10Splits, device):
        self.train_set = PILImages(splits.train, classic_transforms(subject.recipe))
        self.test_set = PILImages(splits.test, classic_transforms(None))
        torch.manual_seed(0)
        self.model = subject.make_model().to(device).train()
        self.optimizer = make_optimizer(subject.recipe, self.model.parameters())
        self.device, self.batch_size = device, subject.batch_size
        self.train_images = len(splits.train)
        self.eval_images = len(splits.train) + len(splits.val) + len(splits.test)

    def started(self, dataset, batch_size: int, shuffle: bool, clock: Clock):
        """(batches on the device, seconds from starting the workers to the first batch)."""
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle,
                                             num_workers=CLASSIC_WORKERS)
        start = clock()
        batches = ((x.to(self.device), y.to(self.device)) for x, y in loader)
        first = next(batches)
        return itertools.chain([first], batches), clock() - start

    def stepper(self, batches):
        return lambda: train_step(self.model, self.optimizer, *next(batches), self.device, "fp32")

    def measure(self, plan: Plan, clock: Clock) -> dict:
        full_batches = len(self.train_set) // self.batch_size
        warmup = max(1, min(plan.warmup, full_batches - 1))  # the first batch always warms up
        steps = min(plan.steps, full_batches - warmup)
        # as many images as the project evaluates, after the first batch (the start-up)
        eval_batches = min(math.ceil(plan.eval_batches * 500 / CLASSIC_EVAL_BATCH_SIZE),
                           math.ceil(len(self.test_set) / CLASSIC_EVAL_BATCH_SIZE) - 1)
        if steps < 1 or eval_batches < 1:
            raise UserError(f"{len(self.train_set)} training and {len(self.test_set)} test "
                            f"images are too few to time the classic pipeline")
        batches, startup_s = self.started(self.train_set, self.batch_size, True, clock)
        img_s = timed_img_s(self.stepper(batches), Plan(steps, warmup, 0, False), clock,
                            self.batch_size)
        del batches  # stops the workers before the next pipeline is timed
        batches, eval_startup_s = self.started(self.test_set, CLASSIC_EVAL_BATCH_SIZE, False,
                                               clock)
        evaluate(self.model, itertools.islice(batches, 1), self.device, "fp32")  # untimed
        start = clock()
        evaluate(self.model, itertools.islice(batches, eval_batches), self.device, "fp32")
        eval_images = min(eval_batches * CLASSIC_EVAL_BATCH_SIZE,
                          len(self.test_set) - CLASSIC_EVAL_BATCH_SIZE)
        eval_img_s = eval_images / (clock() - start)
        del batches
        return {"steps": steps, "img_s": img_s, "eval_img_s": eval_img_s, "startup_s": startup_s,
                "eval_startup_s": eval_startup_s,
                # a check starts workers for each of its three splits
                **epoch_seconds(self.train_images, img_s, self.eval_images, eval_img_s,
                                train_startup_s=startup_s, check_startup_s=3 * eval_startup_s)}


# ---------------------------------------------------------------- rounds and their spread

def spread(values: list[float]) -> dict:
    """Median, min-max and interquartile range of per-round figures."""
    q1, median, q3 = (statistics.quantiles(values, n=4, method="inclusive")
                      if len(values) > 1 else values * 3)
    return {"median": median, "min": min(values), "max": max(values), "q1": q1, "q3": q3,
            "rounds": values}


def verdict(s: dict, minimum: float | None = None, maximum: float | None = None) -> str:
    """PASS or FAIL when the middle half of the rounds (the interquartile range) lies on one
    side of the target; UNDECIDED when it straddles it: the noise is wider than the margin."""
    if minimum is not None:
        return "PASS" if s["q1"] >= minimum else "FAIL" if s["q3"] < minimum else "UNDECIDED"
    return "PASS" if s["q3"] <= maximum else "FAIL" if s["q1"] > maximum else "UNDECIDED"


def medians(rounds: list[dict]) -> dict:
    """A pipeline's per-round figures, with the median of each as the headline."""
    return {k: statistics.median(r[k] for r in rounds) for k in rounds[0]} | {"rounds": rounds}


def build_pipelines(subject: Subject, splits: CIFAR10Splits, device, precisions: list,
                    headline: str) -> dict:
    """{(kind, precision): pipeline}, in the order a round measures them."""
    projects = {p: Project(subject, splits, device, p) for p in precisions}
    ready = list(itertools.islice(projects[headline].loaders["train"].batches(), 4))
    pipelines = {}
    for p in precisions:
        pipelines["ceiling", p] = Ceiling(subject, ready, device, p)
        if p == headline:  # is channels_last, the package's choice, the faster here?
            pipelines["ceiling_contiguous", p] = Ceiling(subject, ready, device, p,
                                                         torch.contiguous_format)
        pipelines["project", p] = projects[p]
    pipelines["classic", "fp32"] = Classic(subject, splits, device)
    return pipelines


def measure_rounds(pipelines: dict, rounds: int, plan: Callable[[str, bool], Plan],
                   clock: Clock) -> dict:
    """{(kind, precision): [one figure dict per round]}: every pipeline once per round, in
    turn, so a slow spell of the machine falls on all of them alike."""
    figures = {key: [] for key in pipelines}
    for r in range(rounds):
        for (kind, precision), pipeline in pipelines.items():
            figures[kind, precision].append(pipeline.measure(plan(precision, r == 0), clock))
    return figures


def summarise(subject: Subject, figures: dict, headline: str, auto: tuple[str, str]) -> dict:
    """Medians and spreads of the rounds' figures and ratios, the targets' verdicts, and
    whether the precision probe agrees with the ceiling's fp32 and bf16 rows."""
    def ratios(numerator, denominator, key) -> dict:
        return spread([a[key] / b[key] for a, b in zip(figures[numerator], figures[denominator])])

    by_precision = {}
    for (kind, p), rounds in figures.items():
        if kind != "classic":
            by_precision.setdefault(p, {})[kind] = medians(rounds)
    for p, entry in by_precision.items():
        entry["train_ratio_spread"] = ratios(("project", p), ("ceiling", p), "img_s")
        entry["epoch_ratio_spread"] = ratios(("project", p), ("classic", "fp32"), "epoch_s")
        entry["train_ratio"] = entry["train_ratio_spread"]["median"]
        entry["epoch_ratio"] = entry["epoch_ratio_spread"]["median"]
    classic = medians(figures["classic", "fp32"])
    head = by_precision[headline]
    train_verdict = (verdict(head["train_ratio_spread"], minimum=subject.train_ratio_min)
                     if subject.train_ratio_min else None)
    epoch_verdict = verdict(head["epoch_ratio_spread"], maximum=subject.epoch_ratio_max)
    auto_entry = {"precision": auto.precision, "reason": auto.reason}
    if {"fp32", "bf16"} <= by_precision.keys():
        speedup = ratios(("ceiling", "bf16"), ("ceiling", "fp32"), "img_s")
        pick = "bf16" if speedup["median"] > BF16_MIN_SPEEDUP else "fp32"
        auto_entry |= {"bench_bf16_speedup": speedup, "bench_pick": pick,
                       "agrees": pick == auto.precision}
    return {
        "ceiling_img_s": head["ceiling"]["img_s"],
        "classic_img_s": classic["img_s"],
        "project_img_s": head["project"]["img_s"],
        "classic_epoch_s": classic["epoch_s"],
        "project_epoch_s": head["project"]["epoch_s"],
        "precision": headline,
        "train_ratio": head["train_ratio"],
        "epoch_ratio": head["epoch_ratio"],
        "train_ratio_spread": head["train_ratio_spread"],
        "epoch_ratio_spread": head["epoch_ratio_spread"],
        "targets": {"train_ratio_min": subject.train_ratio_min,
                    "epoch_ratio_max": subject.epoch_ratio_max,
                    "train_ratio_verdict": train_verdict, "epoch_ratio_verdict": epoch_verdict,
                    "train_ratio_pass": {"PASS": True, "FAIL": False}.get(train_verdict),
                    "epoch_ratio_pass": {"PASS": True, "FAIL": False}.get(epoch_verdict)},
        "ceiling_contiguous_img_s": head.get("ceiling_contiguous", {}).get("img_s"),
        "batch_size": subject.batch_size,
        "recipe": subject.summary,
        "auto": auto_entry,
        "classic": classic | {"precision": "fp32", "workers": CLASSIC_WORKERS,
                              "eval_batch_size": CLASSIC_EVAL_BATCH_SIZE},
        "precisions": by_precision,
    }


def benchmark_model(subject: Subject, splits: CIFAR10Splits, device, args) -> dict:
    auto = choose_precision("auto", device, subject.make_model, subject.batch_size)
    headline = auto.precision if auto.precision in args.precisions else args.precisions[0]

    def plan(precision: str, first_round: bool) -> Plan:
        steps = args.steps or subject.default_steps
        if precision == "bf16" and device.type == "cpu" and not cpu_has_bf16():
            return Plan(min(steps, EMULATED_BF16_STEPS), min(args.warmup, 1), 1, first_round)
        return Plan(steps, args.warmup, args.eval_batches, first_round)

    pipelines = build_pipelines(subject, splits, device, args.precisions, headline)
    figures = measure_rounds(pipelines, args.rounds, plan, Clock(device))
    return summarise(subject, figures, headline, auto)


# ---------------------------------------------------------------- report

def environment(device, splits: CIFAR10Splits, root: Path, args) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {"device": str(device), "device_name": name, "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_has_bf16": cpu_has_bf16(), "threads": torch.get_num_threads(),
            "data_dir": str(root), "data_source": splits.source,
            "split_sizes": {"train": len(splits.train), "val": len(splits.val),
                            "test": len(splits.test)},
            "precisions": args.precisions, "rounds": args.rounds,
            "steps": {m: args.steps or SUBJECTS[m].default_steps for m in args.models},
            "warmup": args.warmup, "eval_batches": args.eval_batches}


PIPELINE_LABELS = {"ceiling": "ceiling", "ceiling_contiguous": "ceiling, not channels_last",
                   "project": "project"}


def range_text(s: dict, digits: int = 1) -> str:
    return f"{s['median']:.{digits}f} [{s['min']:.{digits}f}-{s['max']:.{digits}f}]"


def ratio_text(s: dict) -> str:
    return (f"{s['median']:.3f}  IQR {s['q1']:.3f}-{s['q3']:.3f}  "
            f"range {s['min']:.3f}-{s['max']:.3f}")


def print_report(results: dict, env: dict):
    print(f"\nTraining speed on {env['device']} ({env['device_name']}, "
          f"{env['cpu_capability'] if env['device'] == 'cpu' else 'CUDA'}, {env['threads']} "
          f"threads), torch {env['torch']}; data: {env['data_source']}; "
          f"{env['rounds']} interleaved rounds")
    for name, r in results.items():
        print(f"\n{SUBJECTS[name].title} ({r['recipe']})")
        auto = r["auto"]
        print(f"  precision {auto['reason']}")
        print(f"  {'median [min-max] over rounds':<32}{'steps':>6}  {'img/s':<24}"
              f"{'eval img/s':<24}epoch s")
        rows = [(f"{p} {label}", entry[kind]) for p, entry in r["precisions"].items()
                for kind, label in PIPELINE_LABELS.items() if kind in entry]
        for label, m in rows + [("fp32 classic", r["classic"])]:
            cells = [range_text(spread([x[k] for x in m["rounds"]])) if k in m else ""
                     for k in ("img_s", "eval_img_s", "epoch_s")]
            print(f"  {label:<32}{m['steps']:>6}  {cells[0]:<24}{cells[1]:<24}{cells[2]}")
        print(f"  {'ratio':<48}median  interquartile     range")
        for p, entry in r["precisions"].items():
            print(f"  {p + ' project / ceiling, img/s':<48}"
                  f"{ratio_text(entry['train_ratio_spread'])}")
            print(f"  {p + ' project / classic, epoch s':<48}"
                  f"{ratio_text(entry['epoch_ratio_spread'])}")
        if "agrees" in auto:
            print(f"  {'bf16 / fp32 ceiling, img/s':<48}{ratio_text(auto['bench_bf16_speedup'])}"
                  f"\n    {auto['bench_pick']} by the probe's rule (bf16 if over "
                  f"{BF16_MIN_SPEEDUP}x); the probe picked {auto['precision']}: "
                  f"{'agrees' if auto['agrees'] else 'DISAGREES'}")
        if auto["precision"] != r["precision"]:
            print(f"  ({auto['precision']} was not measured: the targets are read at "
                  f"{r['precision']})")
        t, p = r["targets"], r["precision"]
        if t["train_ratio_min"]:
            label = f"target: {p} project img/s >= {t['train_ratio_min']} x ceiling"
            print(f"  {label:<48}{ratio_text(r['train_ratio_spread'])}  "
                  f"{t['train_ratio_verdict']}")
        label = f"target: {p} project epoch s <= {t['epoch_ratio_max']} x classic"
        print(f"  {label:<48}{ratio_text(r['epoch_ratio_spread'])}  {t['epoch_ratio_verdict']}")
    print("\nPASS/FAIL: the interquartile range of the rounds is on one side of the target; "
          "UNDECIDED: it straddles the target (noise wider than the margin). epoch s is "
          "extrapolated from the measured rates (docs/speed.md).")


# ---------------------------------------------------------------- command line

def get_args_parser():
    p = cli.make_parser(__doc__, exclude=("epochs", "patience", "batch_size", "lr", "precision",
                                          "seed", "output_dir", "subset", "quick", "resume",
                                          "no_progress", "opt", "momentum", "weight_decay",
                                          "lr_scheduler", "label_smoothing", "config",
                                          "tensorboard"))
    p.add_argument("--json", metavar="PATH", default=None, type=cli.path_text,
                   help="also write the results here")
    p.add_argument("--models", nargs="+", choices=list(SUBJECTS), default=list(SUBJECTS),
                   help="the models to measure (default: all)")
    p.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"],
                   help="the precisions of the ceiling and project pipelines (default: both; "
                        "the classic pipeline is fp32)")
    p.add_argument("--rounds", type=cli.whole_number(1), default=5, metavar="N",
                   help="interleaved rounds, each timing every pipeline once (default: 5)")
    p.add_argument("--steps", type=cli.whole_number(1), default=None, metavar="N",
                   help="timed training steps per pipeline and round (default: "
                        + ", ".join(f"{k} {s.default_steps}" for k, s in SUBJECTS.items())
                        + f"; emulated bf16 at most {EMULATED_BF16_STEPS})")
    p.add_argument("--warmup", type=cli.whole_number(0), default=2, metavar="N",
                   help="untimed training steps before them (default: 2)")
    p.add_argument("--eval-batches", type=cli.whole_number(1), default=2, metavar="N",
                   help="timed evaluation batches of 500 images per round (default: 2)")
    return p


@cli.exits_cleanly
def main(argv=None) -> dict:
    args = get_args_parser().parse_args(argv)
    args.models = list(dict.fromkeys(args.models))
    args.precisions = list(dict.fromkeys(args.precisions))
    device = pick_device(args.device or "auto")
    root = resolve_data_dir(args.data_dir)
    if args.json:  # fail now rather than after minutes of measuring
        ensure_writable_dir(Path(args.json).resolve().parent, setting="json", value=args.json)
    start = time.perf_counter()
    splits = cifar10_splits(root, seed=0, progress=sys.stderr.isatty())
    print(f"data loaded in {time.perf_counter() - start:.1f} s (not counted)", flush=True)
    results = {}
    for name in args.models:
        start = time.perf_counter()
        results[name] = benchmark_model(SUBJECTS[name], splits, device, args)
        print(f"{SUBJECTS[name].title} measured in {time.perf_counter() - start:.0f} s",
              flush=True)
    env = environment(device, splits, root, args)
    print_report(results, env)
    report = {"environment": env, "method": "docs/speed.md", "models": results}
    if args.json:
        save_json(report, args.json)
        print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    main()
