"""Test-time augmentation, level by level: finished speed-run seeds (their best.pt) scored on
the test images with no views averaged (0), the mirror (1) and the recipe's six views (2),
each level timed. Whether the views pay for their scoring time, without training again:
levels are taken in turn within each seed, so a slow spell of the machine falls on all three.

  python -m bench.speedrun_tta --data-dir DIR --seed-dirs outputs/speedrun/seed0,outputs/speedrun/seed1
"""
from __future__ import annotations

from common.errors import while_starting

while_starting(__name__)  # before the heavy imports: a Ctrl-C while torch loads is one line

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from common import cli
from common.data import cifar10_splits, resolve_data_dir
from common.errors import UserError
from common.files import load_torch, save_json
from common.config import SPEEDRUN_MODEL, RunConfig
from common.speedrun import SpeedrunNet, predict, scoring_batches
from common.system import machine_record
from common.trainer import evaluate

LEVELS = (0, 1, 2)
CPU = torch.device("cpu")  # where the timings are taken


def load_seed(folder: Path) -> tuple[SpeedrunNet, dict]:
    """The seed's network with its final weights, and its metrics.json."""
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"not a finished speed-run seed ({type(err).__name__}: {err})",
                        setting="seed_dirs", value=folder) from None
    if not isinstance(metrics, dict) or not isinstance(metrics.get("config"), dict):
        raise UserError("not a finished speed-run seed (its metrics.json has no config)",
                        setting="seed_dirs", value=folder)
    config = RunConfig.from_dict(metrics["config"], folder / "metrics.json")
    if config.model != SPEEDRUN_MODEL:
        raise UserError(f"not a speed-run seed (a {config.model} run)", setting="seed_dirs",
                        value=folder)
    model = SpeedrunNet.from_config(config.recipe)
    state = load_torch(folder / "best.pt", weights_only=True, setting="seed_dirs")
    try:
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, RuntimeError) as err:
        raise UserError(f"best.pt does not hold the weights of its recipe "
                        f"({type(err).__name__})", setting="seed_dirs", value=folder) from None
    return model.to(memory_format=torch.channels_last).eval(), metrics


def score_levels(model, test, precision: str) -> dict:
    out = {}
    for level in LEVELS:
        t0 = time.perf_counter()
        _, accuracy = evaluate(model, test, CPU, precision,
                               forward=lambda x: predict(model, x, level))
        out[level] = {"accuracy": 100 * accuracy, "seconds": time.perf_counter() - t0}
    return out


@cli.exits_cleanly
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="CIFAR-10 (as every script takes it)")
    p.add_argument("--seed-dirs", required=True, metavar="A,B,...",
                   help="finished seed folders (metrics.json and best.pt)")
    p.add_argument("--out", type=Path, default=None, help="write the results here (JSON)")
    args = p.parse_args(argv)
    data_dir, splits, seeds = resolve_data_dir(args.data_dir), {}, {}
    for folder in args.seed_dirs.split(","):
        model, metrics = load_seed(Path(folder))
        subset = metrics["config"]["subset"]
        if subset not in splits:
            splits[subset] = cifar10_splits(data_dir, seed=0, subset=subset, download=False)
        if metrics["config"]["data_digest"] != splits[subset].digest:
            raise UserError("trained on other data than --data-dir holds", setting="seed_dirs",
                            value=folder)
        levels = score_levels(model, scoring_batches(splits[subset], CPU), metrics["precision"])
        recorded = 100 * metrics["final"]["test_tta"]["accuracy"]
        if abs(levels[2]["accuracy"] - recorded) > 0.011:  # the same weights, the same score
            raise ValueError(f"{folder}: six views scored {levels[2]['accuracy']:.2f} % here, "
                             f"{recorded:.2f} % when trained")
        seeds[folder] = {"precision": metrics["precision"], "levels": levels}
    summary = {level: {"test_acc_mean": round(statistics.fmean(
                           s["levels"][level]["accuracy"] for s in seeds.values()), 2),
                       "seconds_median": round(statistics.median(
                           s["levels"][level]["seconds"] for s in seeds.values()), 1)}
               for level in LEVELS}
    for level, s in summary.items():
        print(f"TTA level {level}: {s['test_acc_mean']:.2f} % in {s['seconds_median']:.1f} s")
    if args.out:
        save_json({"machine": machine_record(CPU), "seeds": seeds, "summary": summary}, args.out)


if __name__ == "__main__":
    main()
