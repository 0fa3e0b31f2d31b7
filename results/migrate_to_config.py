"""One-off: the committed runs' records rewritten to the run configuration (common.config,
schema_version 1): metrics.json (and each run in a study's results.json) gets "config" in place
of "args" (or, for speed-run seeds, of the settings kept at its top level), the facts about how
it ran (data_source, command, machine, precision_reason) at its top level, and each run folder a
config.json. No number changes: `python report.py --check` is up to date before and after.

  python results/migrate_to_config.py          # from the repository's root

Older records keep only part of their recipe (the earliest: lr, weight decay, batch size and
augmentation, some as text); the rest is the recipe the script trained then, which is the
recipe in common/recipes.py today. Typed options recorded beside the recipe (--epochs, --lr,
--batch-size, --patience) were in effect and override it."""
from __future__ import annotations

import dataclasses
import json
import re
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.config import SPEEDRUN_MODEL, RunConfig  # noqa: E402
from common.data import AugmentConfig  # noqa: E402
from common.files import save_json  # noqa: E402
from common.recipes import CNN1G, MODEL1, MODEL2, RESNET18_TRANSFER, SpeedrunConfig  # noqa: E402

FACTS = ("data_source", "command", "machine", "precision_reason")
RENAMED = {"optimizer": "opt", "schedule": "lr_scheduler", "early_stop_count": "patience"}


def variants(script: str) -> dict:
    return runpy.run_path(str(ROOT / script))["VARIANTS"]


STUDIES = {"task3cd": variants("task3cd.py"), "task3e": variants("task3e.py")}


def plan(task: str, run: str) -> tuple:
    """(model, recipe, model_kwargs) the script trained the run with."""
    if task == "task2":
        return "cnn1g", CNN1G, {}
    if task == "task3":
        return run, {"model1": MODEL1, "model2": MODEL2}[run], {}
    if task == "task4a":
        return "resnet18", RESNET18_TRANSFER, {}
    variant = STUDIES[task][run]
    return "model1", dataclasses.replace(MODEL1, **variant.recipe_changes), \
        dict(variant.model_kwargs)


def task_of(args: dict) -> str:
    """The script the recorded command ran (a study's baseline loaded from task3.py's run
    is task3's model1)."""
    return args.get("task") or re.search(r"(task\w+)\.py", args["command"]).group(1)


def parsed_augment(value) -> AugmentConfig:
    if isinstance(value, str):  # the earliest records: the dataclass's repr
        value = {k: v for k, v in re.findall(r"(\w+)=([\w.]+)", value)}
        value = {k: v == "True" if v in ("True", "False") else float(v) for k, v in value.items()}
        value = {k: int(v) if k == "translate_px" else v for k, v in value.items()}
    return AugmentConfig(**value)


def recipe_values(recorded: dict, fields) -> dict:
    out = {}
    for key, value in recorded.items():
        key = RENAMED.get(key, key)
        if key not in fields:
            continue  # task 4's notes (weights, parameter counts): facts, not settings
        if key == "augment":
            value = parsed_augment(value)
        elif key == "lr_scheduler":
            value = value or "constant"
        elif isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        elif isinstance(value, str) and key in ("lr", "weight_decay", "momentum"):
            value = float(value)
        out[key] = value
    return out


def trainer_config(folder: Path, metrics: dict, args: dict) -> tuple[RunConfig, dict]:
    task, run = task_of(args), metrics["run"]
    model, recipe, model_kwargs = plan(task, run)
    names = {f.name for f in dataclasses.fields(recipe)}
    recipe = dataclasses.replace(recipe, **recipe_values(args.get("recipe", {}), names))
    typed = {k: args.get(k) for k in ("epochs", "lr", "batch_size") if args.get(k) is not None}
    if args.get("patience") is not None:
        typed["patience"] = args["patience"] or None
    recipe = dataclasses.replace(recipe, **typed)
    if task == "task4a":
        model_kwargs = {"weights": args.get("weights", "imagenet")}
    source = args.get("data_source") or args.get("data")
    reason = args.get("precision_reason", "")
    asked = "auto" if reason.startswith("auto") or not reason else metrics["precision"]
    config = RunConfig(task, run, model, recipe, model_kwargs, seed=args.get("seed", 0),
                       subset=args.get("subset"), data_dir=source.split(":", 1)[1],
                       data_digest=args.get("data_digest"), precision=asked)
    facts = {k: args[k] for k in FACTS if k in args} | {"data_source": source}
    return config, facts


def speedrun_config(metrics: dict) -> tuple[RunConfig, dict]:
    names = {f.name for f in dataclasses.fields(SpeedrunConfig)}
    recipe = SpeedrunConfig(**recipe_values(metrics.pop("recipe"), names))
    reason = metrics.get("precision_reason", "")
    config = RunConfig("task3e", "speedrun", SPEEDRUN_MODEL, recipe, seed=metrics["seed"],
                       subset=metrics.pop("subset"), data_digest=metrics.pop("data_digest"),
                       data_dir=(metrics.get("data_source") or ":../shared/data/cifar10-jpeg"
                                 ).split(":", 1)[1],
                       precision="auto" if reason.startswith("auto") else metrics["precision"])
    return config, {}


def migrated(folder: Path, metrics: dict) -> tuple[dict, RunConfig]:
    if "config" in metrics:
        return metrics, RunConfig.from_dict(metrics["config"], folder)
    if "args" in metrics:
        args = metrics.pop("args")
        config, facts = trainer_config(folder, metrics, args)
    else:
        config, facts = speedrun_config(metrics)
    return metrics | facts | {"config": config.to_dict()}, config


def main():
    for path in sorted((ROOT / "results").rglob("metrics.json")):
        metrics, config = migrated(path.parent, json.loads(path.read_text()))
        save_json(metrics, path)
        config.save(path.parent)
    for path in sorted((ROOT / "results").glob("*/results.json")):
        runs = json.loads(path.read_text())
        save_json({run: migrated(path.parent / run, m)[0] for run, m in runs.items()}, path)
    print("migrated")


if __name__ == "__main__":
    main()
