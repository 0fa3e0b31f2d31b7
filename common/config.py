"""What defines a run, in one frozen record: the script and run, the model, every recipe
setting, the data, the subset, the seed, the precision and device asked for. It is built in one
place (`RunConfig.build`, which common.run.setup calls for every run), by precedence: the recipe's values, then a config.json given with
--config, then the options typed; each run writes it once as config.json in its folder, and its
checkpoint and metrics.json hold the same record under "config". A config.json read back is
checked entry by entry before anything uses it."""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Strict, TypeAdapter, ValidationError

from .data import RECORD, Count
from .errors import UserError
from .files import METRICS_NAME, RunDir, claim_folder, save_json
from .recipes import Recipe, SpeedrunConfig

SCHEMA_VERSION = 1
CONFIG_NAME = "config.json"
SPEEDRUN_MODEL = "speedrun"  # the one model trained by a SpeedrunConfig (common.speedrun)
PRECISION_CHOICES = ("auto", "fp32", "bf16")
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
CUSTOM_MODEL = "custom"  # a module of the caller's own (api.train(model=...)), named by model_class
# what a resumed run may change from the step it reached; everything else must match
MAY_CHANGE_ON_RESUME = ("lr", "epochs", "patience", "momentum", "weight_decay",
                        "label_smoothing", "precision", "device", "data_dir")
# what says how a run was asked for, not what it is: two runs that differ only here are one
ASKED = ("data_dir", "schema_version", "precision_asked", "device_asked")


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
        finished = run_dir.load_finished()
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


# ---------------------------------------------------------------- the one validator

_RECORDS = {cls: TypeAdapter(cls) for cls in (RunConfig, Recipe, SpeedrunConfig)}
_RULES = {"greater_than": "must be greater than {gt}",
          "greater_than_equal": "must be at least {ge}",
          "less_than": "must be less than {lt}", "less_than_equal": "must be at most {le}",
          "literal_error": "must be {expected}", "finite_number": "must be a finite number",
          "int_type": "must be a whole number", "float_type": "must be a number",
          "bool_type": "must be true or false", "string_type": "must be a string",
          "unexpected_keyword_argument": "is not a setting of this record",
          "missing_argument": "is missing", "missing": "is missing"}


def _rule(error: dict) -> str:
    """pydantic's error in the package's words: "must be at least 1"."""
    rule = _RULES.get(error["type"])
    if rule is None:
        return error["msg"][:1].lower() + error["msg"][1:]
    return rule.format(**error.get("ctx", {}))


def _user_error(setting: str, value, rule: str, record=None) -> UserError:
    """A problem with a setting: typed or given to api.train, it names the setting; in a file
    (`record`: its path), the file, the setting and the value, in one message."""
    if record is None:
        return UserError(rule, setting=setting, value=value)
    return UserError(f"{record}: {setting} {value!r}: {rule}")


def validated(data: dict, record=None) -> RunConfig:
    """The one validator of a run's record: every entry's type and limit (the fields'
    annotations), the recipe's kind by its model, as a UserError naming the setting and its
    value (and `record`, the file it was read from)."""
    recipe_kind = SpeedrunConfig if data.get("model") == SPEEDRUN_MODEL else Recipe
    try:
        recipe = _RECORDS[recipe_kind].validate_python(data.get("recipe"))
        config = _RECORDS[RunConfig].validate_python({**data, "recipe": recipe})
    except ValidationError as err:
        error = err.errors()[0]  # its location in the record: named as the options are
        where = [str(p) for p in error["loc"] if p not in ("Recipe", "SpeedrunConfig")]
        raise _user_error(".".join(where) or "record", error.get("input"), _rule(error),
                          record) from None
    if isinstance(recipe, Recipe) and recipe.opt != "sgd" and recipe.momentum:
        # the record says what ran: Adam's moments come from its betas
        raise _user_error("momentum", recipe.momentum, f"is SGD's setting; {recipe.opt} has "
                          f"none (its betas are {recipe.betas})", record)
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
            try:
                TypeAdapter(kind).validate_python(value)
            except ValidationError as err:
                raise UserError(_rule(err.errors()[0]), setting=name, value=value) from None
            return
