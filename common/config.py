"""What defines a run, in one frozen record: the script and run, the model, every recipe
setting, the data, the subset, the seed, the precision and device asked for. It is built in one
place (`RunConfig.build`, which common.run.setup calls for every run), by precedence: the recipe's values, then a config.json given with
--config, then the options typed; each run writes it once as config.json in its folder, and its
checkpoint and metrics.json hold the same record under "config". A config.json read back is
checked entry by entry before anything uses it."""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .data import AugmentConfig
from .errors import UserError
from .files import save_json
from .recipes import OPTIMIZERS, SCHEDULES, Recipe, SpeedrunConfig

SCHEMA_VERSION = 1
CONFIG_NAME = "config.json"
SPEEDRUN_MODEL = "speedrun"  # the one model trained by a SpeedrunConfig (common.speedrun)
CUSTOM_MODEL = "custom"  # a module of the caller's own (api.train(model=...)), named by model_class

# What each setting may be, for a value typed, read from a config.json or given to api.train:
# one place says it, the command line and the file reader both ask here.
LIMITS = {
    "lr": (lambda v: 0 < v < math.inf, "must be a positive number"),
    "batch_size": (lambda v: v >= 1, "must be at least 1"),
    "epochs": (lambda v: v >= 1, "must be at least 1"),
    "patience": (lambda v: v is None or v >= 1, "must be at least 1 (0 on the command line: off)"),
    "momentum": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "weight_decay": (lambda v: 0 <= v < math.inf, "must be a number >= 0"),
    "label_smoothing": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "subset": (lambda v: v is None or v >= 1, "must be at least 1"),
    "opt": (lambda v: v in OPTIMIZERS, f"must be one of {', '.join(OPTIMIZERS)}"),
    "lr_scheduler": (lambda v: v in SCHEDULES, f"must be one of {', '.join(SCHEDULES)}"),
    "precision": (lambda v: v in ("auto", "fp32", "bf16"), "must be auto, fp32 or bf16"),
    "device": (lambda v: v in ("auto", "cpu", "cuda", "mps"), "must be auto, cpu, cuda or mps"),
    "image_size": (lambda v: v >= 32, "must be at least 32 (CIFAR-10's own size)"),
    "ema_epochs": (lambda v: v >= 0, "must be a number >= 0"),
    "ema_decay": (lambda v: 0 < v < 1, "must be in (0, 1)"),
}
# what a resumed run may change from the step it reached; everything else must match
MAY_CHANGE_ON_RESUME = ("lr", "epochs", "patience", "momentum", "weight_decay",
                        "label_smoothing", "precision", "device", "data_dir")


def check_setting(name: str, value):
    """A UserError about `name` when `value` is not one it may take."""
    check, rule = LIMITS.get(name, (lambda v: True, ""))
    if isinstance(value, float) and math.isnan(value) or not check(value):
        raise UserError(rule, setting=name, value=value)


@dataclass(frozen=True)
class RunConfig:
    task: str                           # the script; its runs' checkpoints name it
    run: str                            # the run's name: its folder in the output folder
    model: str                          # a name of common.run.MODELS, or CUSTOM_MODEL
    recipe: Recipe | SpeedrunConfig
    model_kwargs: dict = field(default_factory=dict)  # the model's switches (a study's variant)
    seed: int = 0
    subset: int | None = None           # at most this many images per split
    data_dir: str | None = None         # None: $CIFAR10_DIR, else ./data/cifar10
    data_digest: str | None = None      # the data by content, filled in once it is read
    precision: str = "auto"             # as asked; metrics.json says what auto chose
    device: str = "auto"
    model_class: str | None = None      # CUSTOM_MODEL's class, "module.QualName": a record only
    schema_version: int = SCHEMA_VERSION

    # ------------------------------------------------------------ building one
    def with_settings(self, **settings) -> "RunConfig":
        """Settings named as the command line's options (lr=, epochs=, opt=, seed=, subset=,
        precision=, ...); None keeps the value, patience 0 turns early stopping off. A
        speed-run recipe given another batch size without a rate scales its rate and weight
        decay with the batch (SpeedrunConfig.with_batch_size)."""
        settings = {k: v for k, v in settings.items() if v is not None}
        if settings.get("patience") == 0:
            settings["patience"] = None
        recipe = self.recipe
        if isinstance(recipe, SpeedrunConfig) and "batch_size" in settings \
                and "lr" not in settings:
            recipe = recipe.with_batch_size(settings.pop("batch_size"))
        own = {f.name for f in dataclasses.fields(self)} - {"recipe", "schema_version"}
        recipe_fields = {f.name for f in dataclasses.fields(recipe)}
        unknown = set(settings) - own - recipe_fields
        if unknown:
            name = sorted(unknown)[0]
            raise UserError(f"is not a setting of this run's recipe ({type(recipe).__name__})",
                            setting=name, value=settings[name])
        for name, value in settings.items():
            check_setting(name, value)
        recipe = dataclasses.replace(recipe, **{k: v for k, v in settings.items()
                                                if k in recipe_fields})
        return dataclasses.replace(self, recipe=recipe,
                                   **{k: v for k, v in settings.items() if k in own})

    @classmethod
    def build(cls, task: str, run: str, model: str, recipe, *, model_kwargs=None,
              file: "RunConfig | None" = None, **typed) -> "RunConfig":
        """The one place a run's configuration is made: the recipe, then `file` (a config.json
        read with --config: it holds every value), then the settings typed."""
        config = file or cls(task, run, model, recipe, dict(model_kwargs or {}))
        return config.with_settings(**typed)

    # ------------------------------------------------------------ on disk
    def to_dict(self) -> dict:
        """Plain JSON values (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data, where) -> "RunConfig":
        """A record read back (config.json, a checkpoint's or metrics.json's "config"), every
        entry checked; a UserError naming `where` says what is wrong."""
        if not isinstance(data, dict):
            raise UserError(f"{where}: a run configuration is a JSON object, not "
                            f"{type(data).__name__}")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise UserError(f"{where}: schema_version {data.get('schema_version')!r}, this "
                            f"package reads {SCHEMA_VERSION}")
        speedrun = data.get("model") == SPEEDRUN_MODEL
        try:
            recipe = _build(SpeedrunConfig if speedrun else Recipe, data.get("recipe"), "recipe")
            config = _build(cls, {**data, "recipe": {}}, "", recipe=recipe)
            for name in LIMITS:
                source = recipe if name in {f.name for f in dataclasses.fields(recipe)} else config
                if hasattr(source, name):
                    check_setting(name, getattr(source, name))
        except UserError as err:
            what = f"{err.setting} {err.value!r}: " if err.setting else ""
            raise UserError(f"{where}: {what}{err.message}") from None
        return dataclasses.replace(config, model_kwargs=_tuples(config.model_kwargs))

    def save(self, folder) -> Path:
        return save_json(self.to_dict(), Path(folder) / CONFIG_NAME)

    # ------------------------------------------------------------ comparing two
    def differences(self, other: "RunConfig", ignore=(),
                    names=("checkpoint", "now")) -> list[str]:
        """"setting mine (names[0]) vs theirs (names[1])" for every setting (recipe ones
        included) that differs, but those in `ignore`; the data is compared by content
        (data_digest), not by the path it was read from."""
        ignore = set(ignore) | {"data_dir", "schema_version"}
        mine, theirs = _flat(self), _flat(other)
        out = [f"{k} {mine.get(k)} ({names[0]}) vs {theirs.get(k)} ({names[1]})"
               for k in dict.fromkeys([*mine, *theirs])
               if k not in ignore and mine.get(k) != theirs.get(k)]
        return [d + (": other images" if d.startswith("data_digest") else "") for d in out]


def load_config(path) -> RunConfig:
    """A config.json file (--config, predict.py), or one UserError line."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read a run configuration from {path} ({err})",
                        setting="config", value=path) from None
    return RunConfig.from_dict(data, path)


# ---------------------------------------------------------------- reading a record back

def _flat(config: RunConfig) -> dict:
    d = config.to_dict()
    return {**{k: v for k, v in d.items() if k != "recipe"}, **d["recipe"]}


def _tuples(value):
    """JSON's lists as the tuples the dataclasses hold (so that a record read back compares
    equal to the one written)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def _is(value, kind) -> bool:
    """isinstance for the annotations the configurations use (bool is no number here)."""
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return any(_is(value, k) for k in typing.get_args(kind))
    if origin is not None:
        return isinstance(value, origin)
    if kind is type(None):
        return value is None
    return isinstance(value, kind)


def _build(cls, data, prefix: str, **given):
    """A dataclass from a JSON object: unknown or mistyped entries are UserErrors; a missing
    one takes its default."""
    if not isinstance(data, dict):
        raise UserError(f"{prefix or 'the record'} is not a JSON object")
    hints = typing.get_type_hints(cls)
    unknown = set(data) - set(hints)
    if unknown:
        raise UserError(f"unknown entry {prefix + '.' if prefix else ''}{sorted(unknown)[0]}")
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in given:
            values[f.name] = given[f.name]
            continue
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise UserError(f"no entry {prefix + '.' if prefix else ''}{f.name}")
            continue
        value, kind = data[f.name], hints[f.name]
        if kind is AugmentConfig:
            value = _build(AugmentConfig, value, f"{prefix}.{f.name}")
        else:
            value = _tuples(value)
            if not _is(value, kind):
                raise UserError(f"{prefix + '.' if prefix else ''}{f.name} is {value!r}, not "
                                f"{getattr(kind, '__name__', kind)}")
        values[f.name] = value
    return cls(**values)
