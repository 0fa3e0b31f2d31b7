"""What a script sets up and how it ends: the shared command line, the typed settings it
becomes, the session (device, DDP, the locked output folder, the data, the checkpoint to resume),
one run of a recipe, a study of variants, and exits_cleanly, which words the library's errors
for a person (with the option names) and gives each its exit code."""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import shlex
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import results as figures
from . import system
from .data import CIFAR10Splits, TensorLoader, cifar10_splits
from .errors import DivergenceError, Interrupted, OutputError, UserError
from .files import FolderLock, RunDir, ensure_writable_dir, read_checkpoint, save_csv, save_json
from .models import Model1
from .recipes import Overrides, Recipe, make_optimizer, make_scheduler
from .trainer import PrecisionChoice, Trainer, TrainerConfig, choose_precision, review_precision

QUICK_SUBSET = 1000  # --quick: 1,000 images per split and one epoch (about a minute on CPU)
# what a run cannot change mid-run: a checkpoint resumes only under the same values
FIXED_ON_RESUME = ("batch_size", "image_size", "data_digest", "subset", "seed")


# ---------------------------------------------------------------- the command line

def whole_number(minimum: int):
    """An option type: a whole number >= minimum (argparse turns its error into one line)."""
    def whole_number(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return whole_number


def positive_number(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


NAME_MAX, PATH_MAX = 255, 4096  # POSIX's usual limits: longer names fail every file call


def path_text(text: str) -> str:
    """An option type: a path as a shell user means it (~ is the home folder); empty names
    nothing, and a name no file system takes is refused here rather than by the first call
    that touches it."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path names nothing")
    path = Path(text).expanduser()
    if len(str(path)) > PATH_MAX or any(len(part.encode()) > NAME_MAX for part in path.parts):
        raise argparse.ArgumentTypeError("file name too long")
    if "\0" in text:
        raise argparse.ArgumentTypeError("a path cannot hold a NUL character")
    return str(path)


class Parser(argparse.ArgumentParser):
    """argparse, with its errors (unknown option, bad value) as one UserError line."""

    def error(self, message):
        raise UserError(f"{message} (see {self.prog} --help)")


def make_parser(description: str, exclude: tuple = ()) -> argparse.ArgumentParser:
    """A parser with the options every task script shares (but those in `exclude`, e.g.
    "patience" for a recipe without early stopping); scripts add their own to it."""
    p = Parser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = p.add_argument_group("common options")

    def option(flag, **kwargs):
        if flag.lstrip("-").replace("-", "_") not in exclude:
            group.add_argument(flag, **kwargs)
    option("--data-dir", metavar="DIR", default=None, type=path_text,
           help="CIFAR-10 folder: either torchvision's official format "
                "(DIR/cifar-10-batches-py/, downloaded there when absent and online) or "
                "an image folder DIR/train/<class>/*.png|jpg and DIR/test/<class>/* "
                "(default: $CIFAR10_DIR, else ./data/cifar10)")
    option("--epochs", type=whole_number(1), default=None, metavar="N",
           help="maximum number of epochs (default: the recipe's); with --resume, "
                "the run's new length (a schedule is rebuilt to it)")
    option("--patience", type=whole_number(0), default=None, metavar="N",
           help="early stopping: stop after N validation checks (two per epoch) "
                "without a lower validation loss; 0 turns it off and trains all "
                "--epochs (default: the recipe's, 4: the starter code's)")
    option("--batch-size", type=whole_number(1), default=None, metavar="N",
           help="training batch size (default: the recipe's)")
    option("--lr", type=positive_number, default=None, metavar="LR",
           help="learning rate (default: the recipe's); with --resume, the rate from "
                "the step reached on (e.g. lower, after a divergence)")
    option("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
           help="where to train; auto picks CUDA, then MPS, then CPU (default: auto)")
    option("--precision", default="auto", choices=["auto", "fp32", "bf16"],
           help="bf16 runs the model under bf16 autocast; auto is bf16 on CUDA and, on a "
                "CPU, whichever a probe of the model measures faster in interleaved pairs "
                "(kept per machine when its spread decides) (default: auto)")
    option("--seed", type=int, default=0,
           help="seed for the train/validation split, initialisation, shuffling and "
                "augmentation; any whole number (default: 0)")
    option("--output-dir", metavar="DIR", default=None, type=path_text,
           help="where metrics.json, history.csv, steps.csv and checkpoints go, one "
                "subfolder per run; figures too when given (default: outputs/<task>; "
                "figures of full runs go to plots/)")
    option("--subset", type=whole_number(1), default=None, metavar="N",
           help="use at most N images per split, class-balanced (quick experiments)")
    option("--quick", action="store_true",
           help=f"a first try in about a minute on CPU: --subset {QUICK_SUBSET} and --epochs 1, "
                "each unless given")
    option("--resume", metavar="CHECKPOINT", default=None, type=path_text,
           help="continue the run a checkpoint.pt (or best.pt) belongs to, from any folder; "
                "its script, run, batch size, data, subset and seed must match, --lr, "
                "--epochs, --patience and --precision take effect from the step reached; in "
                "scripts with several runs, runs already finished in the output folder with "
                "the same settings are loaded instead of retrained")
    option("--no-progress", action="store_true",
           help="no progress bars (they are also off when output is not a terminal)")
    return p


WEIGHTS_HELP = ("imagenet: torchvision's ImageNet weights (IMAGENET1K_V1; from its cache, "
                "downloaded there when absent and online); none: random initialisation (no "
                "transfer; outputs say so); PATH: a resnet18 state_dict file, e.g. a copy of "
                "resnet18-f37072fd.pth (default: imagenet)")


def add_weights_option(parser: argparse.ArgumentParser):
    """--weights of the task 4 scripts: ResNet18's starting weights."""
    parser.add_argument("--weights", default="imagenet", metavar="imagenet|none|PATH",
                        type=path_or_word, help=WEIGHTS_HELP)


def path_or_word(text: str) -> str:
    return text if text in ("imagenet", "none") else path_text(text)


def parse_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse the shared options; problems become one-line UserErrors. --quick fills in only
    what was not given."""
    args = parser.parse_args(argv)
    if getattr(args, "quick", False):
        args.subset = args.subset or QUICK_SUBSET
        args.epochs = args.epochs or 1
    return args


def parse_ints(text: str, setting: str, count: int | None = None) -> list[int]:
    """"1,2,3" -> [1, 2, 3]: whole numbers >= 0, `count` of them when given."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError("takes comma-separated whole numbers", setting=setting,
                        value=repr(text)) from None
    if not values or (count and len(values) != count) or any(v < 0 for v in values):
        raise UserError(f"takes {count or 'one or more'} comma-separated whole numbers",
                        setting=setting, value=repr(text))
    return values


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
    command: str = ""                  # the command line as typed (records)


def run_settings(args: argparse.Namespace, task: str, argv=None) -> RunSettings:
    """The parsed command line as the library's typed settings."""
    argv = list(sys.argv[1:] if argv is None else argv)
    typed = [Path(sys.executable).name, sys.argv[0], *argv]
    return RunSettings(
        task=task, data_dir=args.data_dir, device=args.device, precision=args.precision,
        seed=getattr(args, "seed", 0), subset=args.subset, output_dir=args.output_dir,
        resume=getattr(args, "resume", None),
        progress=not args.no_progress and sys.stderr.isatty(),
        overrides=Overrides(lr=args.lr, batch_size=args.batch_size, epochs=args.epochs,
                            patience=getattr(args, "patience", None)),
        command=" ".join(shlex.quote(a) for a in typed))


# ---------------------------------------------------------------- the session

@dataclass(frozen=True)
class Session:
    """What a script set up once for all its runs."""
    settings: RunSettings
    device: torch.device
    dist: system.DistInfo
    output_root: Path
    figure_dir: Path
    splits: CIFAR10Splits
    resume_state: dict | None = None   # the checkpoint named by settings.resume

    @property
    def is_main(self) -> bool:
        return self.dist.is_main


def setup(settings: RunSettings, runs: list[str], figures_to_plots: bool = True) -> Session:
    """Device, DDP, the output folder (locked while this script writes it), the checkpoint to
    resume (checked against `runs`, the runs this script will train) and the data. Figures of
    full runs go to plots/ unless figures_to_plots is False."""
    resume_state = None
    if settings.resume:
        resume_state = read_checkpoint(settings.resume)
        _check_resume_target(resume_state, settings, list(runs))
    device, dist = _devices(settings)
    system.resolve_precision(settings.precision, device)  # an impossible one fails before data
    trial = settings.subset is not None
    output_root = Path(settings.output_dir or f"outputs/{settings.task}")
    figure_dir = (output_root if (settings.output_dir or trial or not figures_to_plots)
                  else Path("plots"))
    if dist.is_main:
        ensure_writable_dir(output_root)
        ensure_writable_dir(figure_dir)
        FolderLock(output_root).acquire()
    splits = cifar10_splits(settings.data_dir, seed=settings.seed, subset=settings.subset,
                            progress=settings.progress and dist.is_main)
    return Session(settings, device, dist, output_root, figure_dir, splits, resume_state)


def _devices(settings: RunSettings) -> tuple[torch.device, system.DistInfo]:
    device = system.pick_device(settings.device)
    dist, device = system.init_distributed(device)
    return device, dist


def _check_resume_target(state: dict, settings: RunSettings, runs: list[str]):
    record = state["args"]
    task, run = record.get("task"), record.get("run")
    if task != settings.task:
        raise UserError(f"a checkpoint of {task}'s run {run}, not of {settings.task}; resume "
                        f"it with {task}", setting="resume", value=settings.resume)
    if run not in runs:
        raise UserError(f"a checkpoint of run {run}, which this command does not train (it "
                        f"trains {', '.join(runs) or 'no such run'})", setting="resume",
                        value=settings.resume)


def run_record(session: Session, name: str, recipe: Recipe, notes: dict | None = None) -> dict:
    s = session.settings
    return {"task": s.task, "run": name, "batch_size": recipe.batch_size,
            "image_size": recipe.image_size, "data": session.splits.source,
            "data_digest": session.splits.digest, "subset": s.subset, "seed": s.seed,
            "recipe": recipe.describe() | (notes or {}), "command": s.command,
            "machine": system.machine_record(session.device)}


def _differences(saved: dict, record: dict, keys) -> list[str]:
    """What differs between a recorded run (`saved`) and this command's `record`, in `keys`;
    both compared as metrics.json holds them (tuples as lists)."""
    saved, record = json.loads(json.dumps(saved)), json.loads(json.dumps(record))
    if "data_digest" in keys and "data_digest" not in saved:  # recorded before digests
        keys = [k if k != "data_digest" else "data" for k in keys]
    out = []
    for k in keys:
        if saved.get(k) == record[k]:
            continue
        if k == "data_digest":
            out.append(f"data {saved.get('data')} (checkpoint) vs {record['data']} (now): "
                       "other images")
        elif k == "recipe":
            old, new = saved.get(k) or {}, record[k]
            out += [f"{kk} {old.get(kk)} vs {new[kk]}" for kk in new if old.get(kk) != new[kk]]
        else:
            out.append(f"{k} {saved.get(k)} (checkpoint) vs {record[k]} (now)")
    return out


def _reusable(session: Session, run_dir: RunDir, record: dict) -> dict | None:
    """The finished run in run_dir when it was trained with this command's settings (a resumed
    script reuses it); None otherwise, and the command trains it again (says so)."""
    if not run_dir.is_finished():
        return None
    finished = run_dir.load_finished()
    differ = _differences(finished["args"], record, list(FIXED_ON_RESUME) + ["recipe"])
    if differ and session.is_main:
        print(f"{record['run']}: the finished run in {run_dir.path} was trained with other "
              f"settings ({'; '.join(differ[:4])}); training it again", file=sys.stderr)
    return None if differ else finished


def make_loaders(splits: CIFAR10Splits, recipe: Recipe, *, device, seed: int,
                 dist: system.DistInfo = system.DistInfo()) -> dict:
    """train (shuffled, augmented), train_eval (no augmentation), val and test loaders."""
    if recipe.batch_size > len(splits.train):
        raise UserError(f"larger than the {len(splits.train)} training images",
                        setting="batch_size", value=recipe.batch_size)
    common = dict(device=device, normalization=recipe.normalization,
                  resize=recipe.image_size if recipe.image_size != 32 else None,
                  seed=seed, rank=dist.rank, world_size=dist.world_size)
    evaluation = dict(batch_size=recipe.eval_batch_size, train=False, **common)
    return {
        "train": TensorLoader(splits.train.images, splits.train.labels, recipe.batch_size,
                              train=True, augment=recipe.augment, **common),
        "train_eval": TensorLoader(splits.train.images, splits.train.labels, **evaluation),
        "val": TensorLoader(splits.val.images, splits.val.labels, **evaluation),
        "test": TensorLoader(splits.test.images, splits.test.labels, **evaluation),
    }


def choose_run_precision(session: Session, make_model, batch_size: int,
                         image_size: int = 32) -> PrecisionChoice:
    """--precision, or under auto the faster here; under torchrun every rank takes rank 0's."""
    choice = choose_precision(session.settings.precision, session.device, make_model,
                              batch_size, image_size)
    if session.dist.enabled:
        bf16, = system.all_reduce_sum(
            [float(choice.precision == "bf16") if session.is_main else 0.0], session.device)
        choice = dataclasses.replace(choice, precision="bf16" if bf16 else "fp32")
    return choice


def _precision(session: Session, resume: dict | None, make_model, recipe) -> PrecisionChoice:
    if resume is not None and session.settings.precision == "auto" \
            and "precision" in resume["args"]:
        return PrecisionChoice(resume["args"]["precision"],
                               "auto: the checkpoint's, as the run began")
    return choose_run_precision(session, make_model, recipe.batch_size, recipe.image_size)


def train_recipe(session: Session, name: str, make_model: Callable[[], torch.nn.Module],
                 recipe: Recipe, notes: dict | None = None) -> dict:
    """Train make_model() by `recipe` (with the command line's overrides) as run `name` under
    the output folder; returns metrics with the history attached.

    The model is built right after seeding, so its initial weights depend on the seed alone,
    not on the runs a script trained before it: every run is reproduced by running it alone.
    With --resume: the run the checkpoint belongs to continues from it; a run already finished
    in the output folder with the same settings is loaded, not trained again."""
    settings = session.settings
    recipe = settings.overrides.apply(recipe)
    run_dir = RunDir(session.output_root / name, writer=session.is_main)
    resume = session.resume_state
    record = run_record(session, name, recipe, notes)
    if resume is not None and resume["args"]["run"] != name:
        resume = None
        finished = _reusable(session, run_dir, record)
        if finished is not None:
            if session.is_main:
                print(f"{name}: finished earlier with these settings, loaded from {run_dir.path}")
            return finished
    if resume is not None:
        differ = _differences(resume["args"], record, FIXED_ON_RESUME)
        if differ:
            raise UserError(f"cannot continue with other settings: {'; '.join(differ)}; these "
                            "cannot change mid-run", setting="resume", value=settings.resume)
    system.seed_everything(settings.seed)
    model = make_model()
    loaders = make_loaders(session.splits, recipe, device=session.device, seed=settings.seed,
                           dist=session.dist)
    choice = _precision(session, resume, make_model, recipe)  # leaves the seeded stream alone
    record["precision"], record["precision_reason"] = choice.precision, choice.reason
    if session.is_main:
        print(f"{name}: {choice.precision} ({choice.reason})", file=sys.stderr)
    trainer = _trainer(session, name, model, recipe, loaders, record, run_dir)
    if resume is not None:
        try:
            trainer.resume(resume)
        except ValueError as err:
            raise UserError(f"does not fit this run ({err})", setting="resume",
                            value=settings.resume) from None
    result = trainer.fit()
    if session.is_main and review_precision(choice, trainer.images_per_second()):
        print(f"{name}: trained faster than its cached precision probe measured; the probe "
              "is forgotten and runs again next time", file=sys.stderr)
    if session.is_main and "test" in result["final"]:
        figures.confusion_figure(result, run_dir.confusion()).draw(run_dir.path)
    return result | {"history": trainer.history}


def _trainer(session: Session, name: str, model, recipe: Recipe, loaders: dict, record: dict,
             run_dir: RunDir) -> Trainer:
    optimizer = make_optimizer(recipe, [p for p in model.parameters() if p.requires_grad])
    scheduler = make_scheduler(recipe.schedule, optimizer, recipe.epochs * len(loaders["train"]))
    # every rank starts from the same weights (DDP broadcasts rank 0's anyway); augmentation
    # and dropout draw rank-specific random numbers
    system.seed_everything(session.settings.seed + session.dist.rank)
    config = TrainerConfig(epochs=recipe.epochs, checks_per_epoch=recipe.checks_per_epoch,
                           patience=recipe.patience, precision=record["precision"],
                           progress=session.settings.progress, run_name=name, record=record)
    return Trainer(model, optimizer, loaders, config, scheduler=scheduler,
                   device=session.device, run_dir=run_dir.create(), dist=session.dist)


def save_results(session: Session, results: dict[str, dict], name: str = "results"):
    """All runs' metrics (without the per-step history) as one JSON beside the runs."""
    if session.is_main:
        save_json({k: {kk: vv for kk, vv in v.items() if kk != "history"}
                   for k, v in results.items()}, session.output_root / f"{name}.json")


# ---------------------------------------------------------------- studies (tasks 3c-3e)

@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    model_kwargs: dict = field(default_factory=dict)     # changes to Model1(...)
    recipe_changes: dict = field(default_factory=dict)   # changes to the base Recipe

    def recipe(self, base: Recipe) -> Recipe:
        return dataclasses.replace(base, **self.recipe_changes)


def add_study_options(parser: argparse.ArgumentParser, variants: dict):
    """The options of a study script (task3cd, task3e): --variants and --reuse-baseline."""
    parser.add_argument("--variants", metavar="A,B,...", default=None,
                        help="comma-separated variants to run, in that order (default: all): "
                             + ", ".join(variants))
    parser.add_argument("--reuse-baseline", metavar="RUN_DIR", default=None, type=path_text,
                        help="take the baseline from a finished run folder (e.g. "
                             "outputs/task3/model1) instead of training it again; it should "
                             "have the same epoch budget")


def select_variants(variants: dict, spec: str | None) -> list:
    """--variants a,b,c -> those variants (all when not given); unknown names, or none, are an
    error."""
    if spec is None:
        return list(variants.values())
    names = list(dict.fromkeys(n.strip() for n in spec.split(",") if n.strip()))
    unknown = [n for n in names if n not in variants]
    if unknown or not names:
        raise UserError(f"{'unknown variant(s) ' + ', '.join(unknown) if unknown else 'no variant'}"
                        f"; choose from {', '.join(variants)}", setting="variants",
                        value=repr(spec))
    return [variants[n] for n in names]


def run_study(session: Session, variants: list[Variant], base: Recipe, *, study: str,
              baseline_dir=None, table_note: str = "") -> dict:
    """Train every variant (the baseline may be loaded from a finished run, read before
    anything trains), then write the comparison table (CSV + printed) and the study's figure
    (Figure 4 when the variants are exactly the baseline and TanH). A diverging variant is a
    result, not a crash."""
    results = {}
    if baseline_dir and any(v.name == "baseline" for v in variants):
        try:
            results["baseline"] = RunDir(baseline_dir).load_finished()
        except UserError as err:
            err.setting, err.value = "reuse_baseline", baseline_dir
            raise
        results["baseline"]["note"] = f"loaded from {baseline_dir}"
    for v in variants:
        if v.name in results:
            continue
        try:
            results[v.name] = train_recipe(session, v.name,
                                           functools.partial(Model1, **v.model_kwargs),
                                           v.recipe(base))
        except DivergenceError as err:
            if session.is_main:
                print(f"{v.name}: diverged: {err}")
            results[v.name] = {"diverged": str(err)}
    results = {v.name: results[v.name] for v in variants}
    if session.is_main:
        _study_outputs(session, variants, results, study, table_note)
    return results


def _study_outputs(session: Session, variants: list[Variant], results: dict, study: str,
                   table_note: str):
    finished = {k: r for k, r in results.items() if "final" in r}
    save_results(session, finished, "results")
    rows = figures.comparison_rows(results)
    descriptions = {v.name: v.description for v in variants}
    for row in rows:
        row["change"] = descriptions.get(row["run"], "")
    save_csv(rows, session.output_root / "results.csv")
    figure = None
    if set(finished) == {"baseline", "tanh"}:
        figure = figures.figure4(finished["baseline"], finished["tanh"])
    elif finished:
        figure = figures.study_figure(study, finished, descriptions)
    title = figure.args["title"] if figure else study
    print(f"\n{title}" + (f" ({table_note})" if table_note else ""))
    print(figures.format_rows(rows))
    if figure:
        print(f"wrote {figure.draw(session.figure_dir)}")


# ---------------------------------------------------------------- how a script ends

# what a person can do about an error with each setting, in the options' words
ADVICE = {"data_dir": "point --data-dir (or CIFAR10_DIR) at the CIFAR-10 folder",
          "output_dir": "choose another with --output-dir",
          "weights": "give --weights imagenet, none or the path of a resnet18 state_dict"}


def option_name(setting: str) -> str:
    return "--" + setting.replace("_", "-")


def word_user_error(err: UserError) -> str:
    """The library's UserError in the command line's words: "--lr 0: must be ...; advice"."""
    text = err.message
    if err.setting is not None and err.value is not None:
        text = f"{option_name(err.setting)} {err.value}: {text}"
    advice = ADVICE.get(err.setting)
    return f"{text}; {advice}" if advice and advice not in text else text


def command_line(argv: list[str], drop: tuple = ("--resume",), add: tuple = ()) -> str:
    """This script's command with the options in `drop` (and their values) taken out and `add`
    appended: what continues or restarts it (under torchrun, a torchrun command)."""
    out, it = [], iter(argv)
    for a in it:
        if a in drop:
            next(it, None)
        elif not any(a.startswith(d + "=") for d in drop):
            out.append(a)
    launcher = ["python"]
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        launcher = ["torchrun", f"--nproc_per_node={os.environ.get('LOCAL_WORLD_SIZE', '1')}"]
    return " ".join(shlex.quote(str(a)) for a in launcher + [sys.argv[0], *out, *add])


def word_divergence(err: DivergenceError, argv: list[str]) -> str:
    text = f"{err}; lower the learning rate (--lr)"
    if err.lr is None:
        return text
    lower = ["--lr", f"{err.lr / 10:g}"]
    if err.checkpoint is not None:
        return (f"{text}; resume from the best check ({err.checkpoint}) with: "
                f"{command_line(argv, ('--resume', '--lr'), ('--resume', err.checkpoint, *lower))}")
    return f"{text}; no checkpoint is sound to resume from; start again with: " \
           f"{command_line(argv, ('--resume', '--lr'), tuple(lower))}"


def word_interrupt(err: Interrupted, argv: list[str]) -> str:
    rank = os.environ.get("RANK", "0")
    prefix = f"rank {rank}: " if rank != "0" else ""
    if err.checkpoint is None:
        return f"{prefix}{err}: stopped; the runs already finished and their files are kept"
    return (f"{prefix}{err}. Checkpoint written to {err.checkpoint}.\nResume with: "
            f"{command_line(argv, add=('--resume', err.checkpoint))}")


def exits_cleanly(main):
    """Decorator for a script's main(argv=None): our exceptions -> one line on stderr and their
    exit code (errors.py lists them); the folder locks released whatever happens."""

    @functools.wraps(main)
    def wrapper(argv=None):
        argv = list(sys.argv[1:] if argv is None else argv)
        main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun every rank raises alike
        try:
            with system.signals_raise_interrupted():
                try:
                    return main(argv)
                finally:
                    FolderLock.release_all()
        except UserError as err:
            _say(word_user_error(err), main_rank)
            sys.exit(err.exit_code)
        except DivergenceError as err:
            _say(word_divergence(err, argv), main_rank)
            sys.exit(err.exit_code)
        except OutputError as err:
            _say(str(err), main_rank)
            sys.exit(err.exit_code)
        except (Interrupted, KeyboardInterrupt) as err:
            if isinstance(err, KeyboardInterrupt):  # a signal that arrived before our handler
                err = Interrupted(signal.SIGINT)
            _say(word_interrupt(err, argv), True, error=False)
            sys.exit(err.exit_code)
        except BrokenPipeError:
            # the reader went away (`| head`): say nothing more, on a stdout that cannot fail
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)

    return wrapper


def _say(line: str, show: bool, error: bool = True):
    if show:  # an error is one line, whatever a path in it holds
        print(f"error: {line}".replace("\n", "\\n") if error else line, file=sys.stderr)
