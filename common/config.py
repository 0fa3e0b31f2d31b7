"""A run's records and the one validator that reads them back.

What defines a run, in one frozen record (RunConfig): the script and run, the model, every
recipe setting, the data, the subset, the seed, the precision and device that ran and those
asked for. It is built in one place (`RunConfig.build`, which common.run.setup calls for every
run), by precedence: the recipe's values, then a config.json given with --config, then the
options typed; each run writes it once as config.json in its folder, and its checkpoint and
metrics.json hold the same record under "config".

What a run's files hold is declared here as types (metrics.json, checkpoint.pt, the machine
record) and every value read back, or given, is validated against its type by one function,
`checked` (pydantic), before anything uses it; `starting_point` is the one rule for how a run
starts."""
from __future__ import annotations

import csv
import dataclasses
import functools
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import AfterValidator, Field, InstanceOf, Strict, TypeAdapter, ValidationError
from typing_extensions import NotRequired, TypedDict

from .errors import UserError
from .files import (BEST_NAME, CHECKPOINT_NAME, CONFUSION_NAME, HISTORY_NAME,
                    METRICS_NAME, STEPS_NAME, RunDir, claim_folder, load_torch, save_json)
from .recipes import (DEVICE_CHOICES, PRECISION_CHOICES, RECORD, Count, Finite, Flag, Recipe,
                      SpeedrunConfig, Text, Whole)
from .system import Machine

SCHEMA_VERSION = 1
CONFIG_NAME = "config.json"
SPEEDRUN_MODEL = "speedrun"  # the one model trained by a SpeedrunConfig (common.speedrun)
CUSTOM_MODEL = "custom"  # a module of the caller's own (api.train(model=...)), named by model_class
# what a resumed run may change from the step it reached; everything else must match
MAY_CHANGE_ON_RESUME = ("lr", "epochs", "patience", "momentum", "weight_decay",
                        "label_smoothing", "precision", "device", "data_dir")
# what says how a run was asked for, not what it is: two runs that differ only here are one
ASKED = ("data_dir", "schema_version", "precision_asked", "device_asked")


# ---------------------------------------------------------------- the one validator

_RULES = {"greater_than": "must be greater than {gt}",
          "greater_than_equal": "must be at least {ge}",
          "less_than": "must be less than {lt}", "less_than_equal": "must be at most {le}",
          "literal_error": "must be {expected}", "finite_number": "must be a finite number",
          "int_type": "must be a whole number", "float_type": "must be a number",
          "int_parsing": "must be a whole number", "float_parsing": "must be a number",
          "bool_type": "must be true or false", "string_type": "must be a string",
          "dict_type": "must be an object", "list_type": "must be a list",
          "tuple_type": "must be a tuple", "too_short": "must hold at least {min_length}",
          "too_long": "must hold at most {max_length}", "is_instance_of": "must be a {class}",
          "unexpected_keyword_argument": "is not a setting of this record",
          "missing_argument": "is missing", "missing": "is missing"}


def shown(value) -> str:
    """A value in an error line: short, an object or a list by its kind."""
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else "a list"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def unreadable(path, err: Exception, setting=None) -> UserError:
    reason = (err.strerror if isinstance(err, OSError) and err.strerror
              else f"{type(err).__name__}: {' '.join(str(err).split())[:200]}")
    return UserError(f"cannot read {path} ({reason})", setting=setting, value=path)


@functools.cache
def _adapter(kind) -> TypeAdapter:
    return TypeAdapter(kind)


def checked(data, kind, where=None, *, prefix: str | None = None, hint: str = "", **named):
    """`data` validated against `kind` (a type: its annotations are its limits) by pydantic,
    the package's one validator: the value validated, or one UserError line. Read from a file
    (`where`: the file, or what the value should have been), "{where}: {place} {value}: {rule}"
    (`named`: the UserError's setting and value, the option that named the file); a value
    given (where None) names the setting (`prefix`, then the place in it) and the value:
    "epochs '1': must be a whole number". `hint` follows the rule."""
    try:
        return _adapter(kind).validate_python(data)
    except ValidationError as err:
        error = err.errors()[0]
        place = ".".join([prefix] * bool(prefix) + [str(p) for p in error["loc"]])
        rule = _RULES.get(error["type"])
        rule = (rule.format(**error.get("ctx", {})) if rule
                else error["msg"].removeprefix("Value error, "))
        if where is None:
            raise UserError(rule + hint, setting=place or "record",
                            value=error.get("input")) from None
        if "missing" not in error["type"]:
            place = f"{place} {shown(error.get('input'))}".strip()
        raise UserError(f"{where}: {place}: {rule}{hint}", **named) from None


# ---------------------------------------------------------------- what a run's files hold

# As types: `checked` validates a file read back against them (each annotation is a limit;
# strict: a number is an int or a float, never a bool or a string, as the writer wrote it).
SplitScore = TypedDict("SplitScore", {"loss": Finite, "accuracy": Finite})


class _Finished(TypedDict):
    """metrics.json of every finished run; its "config" is the run's record (a RunConfig:
    load_finished validates it)."""
    run: Text
    epochs_completed: Finite
    precision: Text
    device: Text
    config: dict[str, Any]
    data_source: NotRequired[Text]
    command: NotRequired[Text]
    machine: NotRequired[Machine]
    precision_reason: NotRequired[Text]


TrainerFinal = TypedDict("TrainerFinal", dict.fromkeys(("train", "validation", "test"), SplitScore))


class TrainerMetrics(_Finished):
    final: TrainerFinal
    stopped_early: Flag
    data_source: Text
    best_check: Whole
    best_epoch: Finite
    train_wall_time_s: Finite


SpeedrunFinal = TypedDict("SpeedrunFinal", {"test": SplitScore, "test_tta": SplitScore})


class SpeedrunMetrics(_Finished):
    final: SpeedrunFinal
    whiten_time_s: Finite
    train_time_s: Finite
    tta_time_s: Finite
    recipe_time_s: Finite
    wall_time_s: Finite
    seed: Whole
    description: NotRequired[Text]


@dataclass(frozen=True)
class RunConfig:
    """What a run is. Each field's annotation is its limit: `validated` checks a whole record
    against them, wherever one enters (a config.json, a checkpoint, the options typed,
    api.train's keywords)."""
    __pydantic_config__ = RECORD
    task: str                           # the script; its runs' checkpoints name it
    run: str                            # the run's name: its folder in the output folder
    model: str                          # a name of common.run.MODELS, or CUSTOM_MODEL
    recipe: Recipe | SpeedrunConfig
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # the model's switches
    seed: Annotated[int, Strict()] = 0
    subset: Count | None = None         # at most this many images per split
    data_dir: str | None = None         # None: $CIFAR10_DIR, else ./data/cifar10
    data_digest: str | None = None      # the data by content, filled in once it is read
    # what the run trained with once it started (auto resolved: the record says what ran, so
    # --config replays the same steps on the same machine), and what was asked for
    precision: Literal[PRECISION_CHOICES] = "auto"
    device: Literal[DEVICE_CHOICES] = "auto"
    precision_asked: Literal[PRECISION_CHOICES] | None = None
    device_asked: Literal[DEVICE_CHOICES] | None = None
    model_class: str | None = None      # CUSTOM_MODEL's class, "module.QualName": a record only
    schema_version: Literal[SCHEMA_VERSION] = SCHEMA_VERSION

    # ------------------------------------------------------------ building one
    def with_settings(self, **settings) -> "RunConfig":
        """Settings named as the command line's options (lr=, epochs=, opt=, seed=, subset=,
        precision=, ...); None keeps the value, patience 0 turns early stopping off. A
        speed-run recipe given another batch size without a rate scales its rate and weight
        decay with the batch (SpeedrunConfig.with_batch_size). The result is validated whole."""
        settings = {k: v for k, v in settings.items() if v is not None}
        if settings.get("patience") == 0:
            settings["patience"] = None
        for name in ("precision", "device"):  # asked now: what a replayed record asked is past
            if name in settings:
                settings[f"{name}_asked"] = None
        recipe = self.recipe
        if isinstance(recipe, SpeedrunConfig) and "batch_size" in settings \
                and "lr" not in settings:
            check_setting("batch_size", settings["batch_size"])
            recipe = recipe.with_batch_size(settings.pop("batch_size"))
        own = {f.name for f in dataclasses.fields(self)} - {"recipe", "schema_version"}
        recipe_fields = {f.name for f in dataclasses.fields(recipe)}
        unknown = set(settings) - own - recipe_fields
        if unknown:
            name = sorted(unknown)[0]
            raise UserError(f"is not a setting of this run's recipe ({type(recipe).__name__})",
                            setting=name, value=settings[name])
        data = dataclasses.replace(self, recipe=recipe).to_dict()
        for name, value in settings.items():  # validated below, with the rest, as given
            (data["recipe"] if name in recipe_fields else data)[name] = value
        return validated(data)

    @classmethod
    def build(cls, task: str, run: str, model: str, recipe, *, model_kwargs=None,
              file: "RunConfig | None" = None, **typed) -> "RunConfig":
        """The one place a run's configuration is made: the recipe, then `file` (a config.json
        read with --config: it holds every value), then the settings typed."""
        config = file or cls(task, run, model, recipe, dict(model_kwargs or {}))
        return config.with_settings(**typed)

    def resolved(self, precision: str, device: str) -> "RunConfig":
        """The record of what ran: auto replaced by the precision and device chosen, what was
        asked kept beside them."""
        return dataclasses.replace(self, precision=precision, device=device,
                                   precision_asked=self.precision_asked or self.precision,
                                   device_asked=self.device_asked or self.device)

    # ------------------------------------------------------------ on disk
    def to_dict(self) -> dict:
        """Plain JSON values (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data, where) -> "RunConfig":
        """A record read back (config.json, a checkpoint's or metrics.json's "config"),
        validated whole; a UserError naming `where` says what is wrong."""
        if not isinstance(data, dict):
            raise UserError(f"{where}: a run configuration is a JSON object, not "
                            f"{type(data).__name__}")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise UserError(f"{where}: schema_version {data.get('schema_version')!r}, this "
                            f"package reads {SCHEMA_VERSION}")
        return validated(data, where)

    def save(self, folder) -> Path:
        return save_json(self.to_dict(), Path(folder) / CONFIG_NAME)

    # ------------------------------------------------------------ comparing two
    def differences(self, other: "RunConfig", ignore=(),
                    names=("checkpoint", "now")) -> list[str]:
        """"setting mine (names[0]) vs theirs (names[1])" for every setting (recipe ones
        included) that differs, but those in `ignore`; the data is compared by content
        (data_digest), not by the path it was read from."""
        ignore = set(ignore) | set(ASKED)
        mine, theirs = _flat(self), _flat(other)
        # a precision or device asked as auto is met by whichever one the run resolved it to
        ignore |= {k for k in ("precision", "device") if "auto" in (mine[k], theirs[k])}
        out = [f"{k} {mine.get(k)} ({names[0]}) vs {theirs.get(k)} ({names[1]})"
               for k in dict.fromkeys([*mine, *theirs])
               if k not in ignore and mine.get(k) != theirs.get(k)]
        return [d + (": other images" if d.startswith("data_digest") else "") for d in out]


def load_config(path) -> RunConfig:
    """A config.json file (--config, predict.py), or one UserError line."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as err:  # RecursionError: nested too deep
        raise UserError(f"cannot read a run configuration from {path} ({err})",
                        setting="config", value=path) from None
    return RunConfig.from_dict(data, path)


def read_json(path, kind=dict, setting: str | None = None):
    """A JSON file the package wrote, checked against `kind` before anything uses it; a
    missing, unreadable or damaged one is one UserError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError, RecursionError) as err:  # ValueError: not JSON, not UTF-8
        raise unreadable(path, err, setting) from None
    checked(value, kind, path, setting=setting, value=path)
    return value


def load_finished(run_dir: RunDir) -> dict:
    """metrics.json with the history attached (["history"]: checks and step losses), each
    file checked against what its writer writes before anything uses it: a damaged one is
    one UserError naming it. Its record ("config") as validated: an entry it lacks holds its
    default."""
    path, named = run_dir / METRICS_NAME, dict(setting=run_dir.setting, value=run_dir.path)
    result = read_json(path, _Finished, setting=run_dir.setting)
    config = RunConfig.from_dict(result["config"], path)
    trainer = config.model != SPEEDRUN_MODEL
    checked(result, TrainerMetrics if trainer else SpeedrunMetrics, path, **named)
    result["config"] = config.to_dict()
    result["history"] = load_history(run_dir.path, TRAINER_HISTORY if trainer
                                     else SPEEDRUN_HISTORY, setting=run_dir.setting)
    checks = len(result["history"]["checks"])
    if trainer and not 0 <= result["best_check"] < checks:
        raise UserError(f"{path}: best_check {result['best_check']} is not one of the "
                        f"{checks} rows of {HISTORY_NAME}", **named)
    return result


# what a resumable checkpoint holds (common.trainer.Trainer.state_dict), every entry checked
# before anything uses it: the generators' states too, as each generator takes them (a damaged
# one makes random.setstate or numpy raise mid-resume)
Word = Annotated[int, Strict(), Field(ge=0, lt=2**32)]
Index = Annotated[int, Strict(), Field(ge=0, le=624)]  # the Mersenne Twister's position


def _not_nan(value: float) -> float:
    if value != value:
        raise ValueError("must be a number, not NaN")
    return value


def _bytes(value: torch.Tensor) -> torch.Tensor:
    if value.dtype != torch.uint8:
        raise ValueError(f"must be a tensor of bytes, not of {value.dtype}")
    return value


# inf too (a best score before any check), not NaN
Number = Annotated[float, Strict(), AfterValidator(_not_nan)]


class Rng(TypedDict):
    torch: Annotated[InstanceOf[torch.Tensor], AfterValidator(_bytes)]
    python: tuple[Literal[3], tuple[(Word,) * 624 + (Index,)], Annotated[float, Strict()] | None]
    numpy: tuple[Literal["MT19937"], Annotated[list[Word], Field(min_length=624, max_length=624)],
                 Index, Whole, Annotated[float, Strict()]]


class LRScheduler(TypedDict):
    last_epoch: Whole
    base_lrs: Annotated[list[Finite], Field(min_length=1)]
    lr_lambdas: NotRequired[Annotated[list[dict[str, Finite] | None], Field(min_length=1)]]


class EarlyStoppingState(TypedDict):
    best_score: Number
    best_check: Whole
    wait_count: Whole
    patience: NotRequired[Count | None]  # the run's as it was (a resumed run takes the one given)


RunningState = TypedDict("RunningState", dict.fromkeys(("loss_sum", "correct", "count"), Number))


History = TypedDict("History", {"checks": list[dict[str, Any]], "step_loss": list})


class Checkpoint(TypedDict):
    model: dict[str, Any]
    optimizer: dict[str, Any]
    lr_scheduler: LRScheduler | None
    epoch: Whole
    step_in_epoch: Whole
    global_step: Whole
    best_model: dict[str, Any] | None
    early_stopping: EarlyStoppingState
    running: RunningState
    history: History
    wall_time_s: Number
    rng: Rng
    config: dict[str, Any]
    precision: Text


def read_checkpoint(path) -> dict:
    """A resumable checkpoint, or one UserError line saying why the file is not one."""
    path = Path(path)
    if not path.is_file():
        raise UserError("no such checkpoint file", setting="resume", value=path)
    state = load_torch(path, weights_only=True, setting="resume")
    checked(state, Checkpoint, "not a resumable checkpoint",
            hint=f"; use the {CHECKPOINT_NAME} of a run's output folder ({BEST_NAME} holds the "
                 "best weights alone)", setting="resume", value=path)
    return state


# ---------------------------------------------------------------- a run's CSV files

# history.csv's columns: every run's, then the Trainer's and the speed-run's
HISTORY = ("epoch", "step", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
           "wall_time_s")
TRAINER_HISTORY = HISTORY + ("val_loss", "val_accuracy")
SPEEDRUN_HISTORY = HISTORY + ("train_time_s",)


CountCell = Annotated[int, Field(ge=0)]  # lax: a CSV cell is text, read as the number it holds
StepRow = TypedDict("StepRow", {"loss": float})


def read_csv(path, kind=None, columns=(), min_rows: int = 0,
             setting: str | None = None) -> list[dict]:
    """A CSV file's rows (dicts of its cells as written), checked: the header has `columns`,
    at least `min_rows` rows follow it, each with a cell for each header column and no more,
    and each row is a `kind` when one is given (its cells, text, read as the numbers the type
    says). A missing, unreadable or damaged file is one UserError naming it (and the line)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            lines = [(n, row) for n, row in enumerate(csv.reader(f), 1) if row]
    except (OSError, ValueError, csv.Error) as err:  # ValueError: not UTF-8
        raise unreadable(path, err, setting) from None
    if not lines:  # what save_csv writes for no rows
        lines = [(0, list(columns))]
    header, lines = lines[0][1], lines[1:]
    missing = [c for c in columns if c not in header]
    if missing:
        raise UserError(f"{path}: it lacks the column{'s' * (len(missing) > 1)} "
                        f"{', '.join(repr(c) for c in missing)}", setting=setting, value=path)
    if len(lines) < min_rows:
        raise UserError(f"{path}: {f'only {len(lines)} rows' if lines else 'no rows'} below "
                        f"its header, at least {min_rows} expected", setting=setting, value=path)
    rows = []
    for n, row in lines:
        if len(row) != len(header):
            raise UserError(f"{path}: line {n} has {len(row)} cells, its header "
                            f"{len(header)}", setting=setting, value=path)
        rows.append(dict(zip(header, row)))
        if kind is not None:
            checked(rows[-1], kind, f"{path}: line {n}", setting=setting, value=path)
    return rows


def load_history(run_dir: Path, columns=HISTORY, setting: str | None = None) -> dict:
    """history.csv (at least one row, `columns` among its columns, every cell a number) and
    steps.csv when there is one (a number in each row's loss)."""
    checks = read_csv(run_dir / HISTORY_NAME, dict[str, float], columns, 1, setting)
    steps = (read_csv(run_dir / STEPS_NAME, StepRow, ("loss",), setting=setting)
             if (run_dir / STEPS_NAME).is_file() else [])
    return {"checks": [{k: float(v) for k, v in r.items()} for r in checks],
            "step_loss": [float(r["loss"]) for r in steps]}


@functools.cache
def _confusion_row(classes: tuple[str, ...]):
    return TypedDict("ConfusionRow", {"class": Literal[classes],
                                      **dict.fromkeys(classes, CountCell)})


def load_confusion(run_dir: RunDir, classes: tuple[str, ...] | None = None) -> list[dict]:
    """confusion.csv's rows (its cells as written), checked: one row per class, a
    whole-number count (at least 0) in each class's column. `classes`: the names it must hold
    (e.g. common.data.CLASSES), else those its header gives."""
    path = run_dir / CONFUSION_NAME
    if classes is None:  # the header's (a file of a few lines, read once more below)
        rows = read_csv(path, columns=("class",))
        classes = tuple(c for c in (rows[0] if rows else {}) if c not in ("class", "accuracy"))
    if not classes:
        raise UserError(f"{path}: it names no class")
    rows = read_csv(path, _confusion_row(classes), ("class", *classes))
    named = [row["class"] for row in rows]
    wrong = [c for c in classes if named.count(c) != 1]
    if wrong:
        raise UserError(f"{path}: it has {named.count(wrong[0])} rows of class {wrong[0]}, "
                        "not one")
    return rows


# ---------------------------------------------------------------- how a run starts

def starting_point(config: RunConfig, run_dir: RunDir, *, resume_state: dict | None = None,
                   resume_path=None, reuse: bool = False, say=print) -> tuple:
    """How every run begins, by one rule: (checkpoint state to continue, finished run to load),
    at most one of them; both None: from the start. The whole record is compared.

    A checkpoint of this run (resume_state) continues it; what cannot change mid-run must be as
    it was. Otherwise the run's folder decides, so that it always holds one run, whole: a
    finished run with this record is loaded when `reuse` allows (a script resumed beside its
    finished runs, the speed-run's seeds), any other finished run is cleared before this one
    starts, and an unfinished run (its checkpoint.pt) with another record is never replaced:
    a trial run cannot take its place."""
    if resume_state is not None and resume_state["config"].get("run") == config.run:
        saved = RunConfig.from_dict(resume_state["config"], resume_path)
        differ = saved.differences(config, ignore=MAY_CHANGE_ON_RESUME)
        if differ:
            raise UserError(f"cannot continue with other settings: {'; '.join(differ)}; "
                            "these cannot change mid-run", setting="resume", value=resume_path)
        return resume_state, None
    if not (run_dir / CONFIG_NAME).is_file():
        return None, None
    claim_folder(run_dir.path.parent, config.task, mark=False)  # never another script's run
    if run_dir.is_finished():
        finished = load_finished(run_dir)
        where = run_dir.path / METRICS_NAME
        differ = RunConfig.from_dict(finished["config"], where).differences(
            config, names=("finished", "now"))
        if reuse and not differ:
            return None, finished
        if differ:
            say(f"{config.run}: the finished run in {run_dir.path} was trained with other "
                f"settings ({'; '.join(differ[:4])}); training it again")
    elif run_dir.checkpoint.is_file():
        differ = load_config(run_dir / CONFIG_NAME).differences(config,
                                                                names=("unfinished", "now"))
        if differ:
            raise UserError(f"holds the unfinished run {config.run} with other settings "
                            f"({'; '.join(differ[:4])}); resume it from {run_dir.checkpoint}",
                            setting="output_dir", value=run_dir.path.parent)
    run_dir.clear()
    return None, None


# ---------------------------------------------------------------- reading a record back

def _flat(config: RunConfig) -> dict:
    d = config.to_dict()
    return {**{k: v for k, v in d.items() if k != "recipe"}, **d["recipe"]}


# ---------------------------------------------------------------- the record's validation

def validated(data: dict, record=None) -> RunConfig:
    """A run's record checked whole by the one validator (common.files.checked: every entry's
    type and limit, the fields' annotations), the recipe's kind by its model: a UserError names
    the setting and its value (and `record`, the file it was read from)."""
    recipe_kind = SpeedrunConfig if data.get("model") == SPEEDRUN_MODEL else Recipe
    recipe = checked(data.get("recipe"), recipe_kind, record)
    config = checked({**data, "recipe": recipe}, RunConfig, record)
    if isinstance(recipe, Recipe) and recipe.opt != "sgd" and recipe.momentum:
        # the record says what ran: Adam's moments come from its betas
        rule = f"is SGD's setting; {recipe.opt} has none (its betas are {recipe.betas})"
        raise (UserError(rule, setting="momentum", value=recipe.momentum) if record is None
               else UserError(f"{record}: momentum {recipe.momentum!r}: {rule}"))
    # JSON's lists as the tuples the model's switches hold: a record read back equals its writer's
    return dataclasses.replace(config, recipe=recipe, model_kwargs=_tuples(config.model_kwargs))


def _tuples(value):
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def check_setting(name: str, value):
    """A UserError about `name` when `value` is not one it may take: an option typed meets
    the limit of its field, in the first record that has one (the recipe's, else the run's)."""
    for cls in (Recipe, SpeedrunConfig, RunConfig):
        kind = typing.get_type_hints(cls, include_extras=True).get(name)
        if kind is not None:
            checked(value, kind, prefix=name)
            return
