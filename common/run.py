"""What a script sets up and how it ends: the shared command line, the typed settings it
becomes, the session (device, DDP, the locked output folder, the data, the checkpoint to resume),
one run of a recipe, a study of variants, and exits_cleanly, which words the library's errors
for a person (with the option names) and gives each its exit code."""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import functools
import inspect
import os
import shlex
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from . import models, system
from . import results as figures
from .config import (CUSTOM_MODEL, SPEEDRUN_MODEL, RunConfig, check_setting, load_config,
                     starting_point)
from .data import CIFAR10Splits, Split, TensorLoader, cifar10_splits
from .errors import (DivergenceError, Interrupted, OutputError, UserError, after_main,
                     forget_kept, keep_until_outputs, raise_kept, require_extra,
                     signals_raise_interrupted)
from .files import (FolderLock, RunDir, claim_folder, ensure_writable_dir,
                    read_checkpoint, save_csv, save_json)
from .models import CNN1g, Model1, Model2
from .speedrun import SpeedrunNet, check_batch_size, run_seeds
from .recipes import (OPTIMIZERS, SCHEDULES, Recipe, Variant, make_optimizer,
                      make_scheduler)
from .trainer import (PrecisionChoice, Trainer, choose_precision, review_precision,
                      tensorboard_writer)

QUICK_SUBSET = 1000  # --quick: 1,000 images per split and one epoch (about a minute on CPU)


# ---------------------------------------------------------------- the command line

def whole_number(minimum: int):
    """An option type: a whole number >= minimum (argparse turns its error into one line)."""
    def whole_number(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return whole_number


def setting_type(name: str):
    """An option type for a run setting: a number, checked against its field's limit in the
    record (common.config.check_setting: the same rule a config.json's value meets)."""
    def number(text: str) -> float:
        value = float(text)
        try:
            check_setting(name, value)
        except UserError as err:
            raise argparse.ArgumentTypeError(f"{err.message}, got {text}") from None
        return value
    number.__name__ = name.replace("_", " ")
    return number


NAME_MAX, PATH_MAX = 255, 4096  # POSIX's usual limits: longer names fail every file call


def path_text(text: str) -> str:
    """An option type: a path as a shell user means it (~ is the home folder); empty names
    nothing, and a name no file system takes is refused here rather than by the first call
    that touches it."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path names nothing")
    path = Path(text).expanduser()
    # measured in the bytes the file system sees: a name that is not valid UTF-8 arrives here
    # with its undecodable bytes as surrogates (PEP 383), which os.fsencode gives back
    if len(os.fsencode(path)) > PATH_MAX or any(len(os.fsencode(part)) > NAME_MAX
                                                 for part in path.parts):
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
    option("--lr", type=setting_type("lr"), default=None, metavar="LR",
           help="learning rate (default: the recipe's); with --resume, the rate from "
                "the step reached on (e.g. lower, after a divergence)")
    add_recipe_options(option)
    option("--config", metavar="CONFIG.JSON", default=None, type=path_text,
           help="a run's config.json (written in every run folder): trains that run again "
                "with its recipe, data, seed and precision; options typed beside it change "
                "those values")
    option("--device", default=None, choices=["auto", "cpu", "cuda", "mps"],
           help="where to train; auto picks CUDA, then MPS, then CPU (default: auto)")
    option("--precision", default=None, choices=["auto", "fp32", "bf16"],
           help="bf16 runs the model under bf16 autocast; auto is bf16 on CUDA and, on a "
                "CPU, whichever a probe of the model measures faster in interleaved pairs "
                "(kept per machine when its spread decides) (default: auto)")
    option("--seed", type=int, default=None,
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
           help="continue the run a checkpoint.pt belongs to, from any folder; "
                "its script, run, data, subset, seed, model and recipe must match, but --lr, "
                "--epochs, --patience, --momentum, --weight-decay, --label-smoothing and "
                "--precision, which take effect from the step reached; in "
                "scripts with several runs, runs already finished in the output folder with "
                "the same settings are loaded instead of retrained")
    add_watch_options(option)
    return p


def add_watch_options(option):
    """How a run shows itself while it trains."""
    option("--tensorboard", action="store_true",
           help="write the losses and accuracies as they happen (every step's training loss, "
                "every check's splits) to <run folder>/tensorboard/; watch with "
                "tensorboard --logdir <output folder>")
    option("--no-progress", action="store_true",
           help="no progress bars (they are also off when output is not a terminal)")


def add_recipe_options(option):
    """The recipe's settings beyond the rate, batch and length, with torchvision's names."""
    option("--opt", choices=OPTIMIZERS, default=None, type=str.lower,
           help="optimizer (default: the recipe's)")
    option("--momentum", type=setting_type("momentum"), default=None, metavar="M",
           help="SGD's momentum, in [0, 1) (default: the recipe's); with --resume, from the "
                "step reached")
    option("--weight-decay", type=setting_type("weight_decay"), default=None, metavar="W",
           help="weight decay, >= 0 (default: the recipe's); with --resume, from the step "
                "reached")
    option("--lr-scheduler", choices=SCHEDULES, default=None, type=str.lower,
           help="constant rate, or cosine decay to 0 over the run, stepped every step "
                "(default: the recipe's)")
    option("--label-smoothing", type=setting_type("label_smoothing"), default=None,
           metavar="S", help="label smoothing of the training loss, in [0, 1) (default: the "
                             "recipe's); with --resume, from the step reached")


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


# the options that define a run (RunConfig's settings, named as typed); the rest of the command
# line says where and how the script runs
RUN_OPTIONS = ("data_dir", "device", "precision", "seed", "subset", "lr", "batch_size", "epochs",
               "patience", "opt", "momentum", "weight_decay", "lr_scheduler", "label_smoothing")


def script_options(args: argparse.Namespace, argv=None, extra: dict | None = None) -> dict:
    """The parsed command line as setup()'s keyword values: the run settings typed (None: not
    typed; `extra` adds a script's own, e.g. the speed-run's widths), the config file, the
    output folder, the checkpoint to resume, progress bars and the command as typed."""
    argv = list(sys.argv[1:] if argv is None else argv)
    typed = [Path(sys.executable).name, sys.argv[0], *argv]
    settings = {k: getattr(args, k, None) for k in RUN_OPTIONS} | (extra or {})
    return dict(settings=settings, config_file=getattr(args, "config", None),
                output_dir=args.output_dir, resume=getattr(args, "resume", None),
                progress=not args.no_progress and sys.stderr.isatty(),
                tensorboard=getattr(args, "tensorboard", False),
                command=" ".join(shlex.quote(a) for a in typed))


# ---------------------------------------------------------------- the session

@dataclass(frozen=True)
class Session:
    """What a script set up once for all its runs: their configurations (by run name), the
    device, DDP, the locked output folder, the data and the checkpoint to resume."""
    task: str
    configs: dict
    device: torch.device
    dist: system.DistInfo
    output_root: Path
    figure_dir: Path
    splits: CIFAR10Splits
    progress: bool = False
    tensorboard: bool = False           # scalars in each run folder's tensorboard/
    command: str = ""
    resume: str | None = None
    resume_state: dict | None = None

    @property
    def is_main(self) -> bool:
        return self.dist.is_main


def setup(task: str, plans: list[tuple], *, settings: dict, config_file=None, output_dir=None,
          resume=None, progress: bool = False, tensorboard: bool = False, command: str = "",
          figures_to_plots: bool = True, data_seed: int | None = None) -> Session:
    """Each planned run's configuration (plans: (run, model, recipe, model_kwargs)), built by
    precedence: the recipe, the --config file (which then selects its own run), the settings
    typed; then the device, DDP, the output folder (locked while this script writes it), the
    checkpoint to resume (checked against the runs planned) and the data, split and subset by
    the runs' seed (or `data_seed`, for a script whose seeds leave its data alone). Figures of
    full runs go to plots/ unless figures_to_plots is False."""
    if tensorboard:  # refused before anything is read or written, not at the run's start
        require_extra("TensorBoard logging", "tensorboard", "tensorboard")
    file = load_config(config_file) if config_file else None
    if file is not None:
        _check_target(task, file.task, file.run, [p[0] for p in plans], "config", config_file)
        plans = [p for p in plans if p[0] == file.run]
    configs = {run: RunConfig.build(task, run, model, recipe, model_kwargs=kwargs, file=file,
                                    **settings) for run, model, recipe, kwargs in plans}
    for run, model, _, _ in plans:  # before anything is read: a record names a buildable model
        check_model(configs[run], model, config_file)
    resume_state = None
    if resume:
        resume_state = read_checkpoint(resume)
        saved = RunConfig.from_dict(resume_state["config"], resume)
        _check_target(task, saved.task, saved.run, configs, "resume", resume)
    first = next(iter(configs.values()))  # the runs share their data, device and precision
    device = system.pick_device(first.device)
    dist, device = system.init_distributed(device)
    system.resolve_precision(first.precision, device)  # an impossible one fails before data
    output_root = Path(output_dir or f"outputs/{task}")
    figure_dir = (output_root if (output_dir or first.subset is not None or not figures_to_plots)
                  else Path("plots"))
    if dist.is_main:
        ensure_writable_dir(output_root)
        ensure_writable_dir(figure_dir)
        FolderLock(output_root).acquire()
    data_seed = first.seed if data_seed is None else data_seed
    splits = cifar10_splits(first.data_dir, seed=data_seed, subset=first.subset,
                            progress=progress and dist.is_main)
    configs = {n: dataclasses.replace(c, data_digest=splits.digest) for n, c in configs.items()}
    return Session(task, configs, device, dist, output_root, figure_dir, splits, progress,
                   tensorboard, command, resume, resume_state)


def _check_target(task: str, their_task: str, run: str, runs, setting: str, value):
    """A --resume checkpoint or --config file must be of this script and of a run it trains."""
    what = "checkpoint" if setting == "resume" else "configuration"
    if their_task != task:
        raise UserError(f"a {what} of {their_task}'s run {run}, not of {task}; give it to "
                        f"{their_task}", setting=setting, value=value)
    if run not in runs:
        raise UserError(f"a {what} of run {run}, which this command does not train (it "
                        f"trains {', '.join(runs) or 'no such run'})", setting=setting,
                        value=value)


def facts(session: Session, **more) -> dict:
    """What metrics.json says about how a run went, beside its configuration."""
    return {"data_source": session.splits.source, "command": session.command,
            "machine": system.machine_record(session.device), **more}


# ---------------------------------------------------------------- one run

MODELS = {"cnn1g": CNN1g, "model1": Model1, "model2": Model2,
          "resnet18": models.resnet18_for_transfer}


def build_model(config: RunConfig) -> torch.nn.Module:
    """The run's network, with the initial weights its builder gives (seeded by the caller)."""
    if config.model == SPEEDRUN_MODEL:
        return SpeedrunNet.from_config(config.recipe)
    return MODELS[config.model](**config.model_kwargs)


def _say_main(session: Session):
    """print to stderr, on the main process only."""
    return lambda text: print(text, file=sys.stderr) if session.is_main else None


def check_model(config: RunConfig, planned: str, config_file=None):
    """The run's model is the one its script trains (a config.json of another run cannot
    swap it), and its switches are arguments its builder takes."""
    if config.model != planned:
        raise UserError(f"model {config.model!r}, but {config.task}'s run {config.run} trains "
                        f"{planned!r}", setting="config", value=config_file)
    if config.model == CUSTOM_MODEL:  # the caller's own module, passed to train_run
        return
    speedrun = config.model == SPEEDRUN_MODEL  # built from its recipe alone
    builder = SpeedrunNet.from_config if speedrun else MODELS[planned]
    try:
        inspect.signature(builder).bind(*[config.recipe] * speedrun, **config.model_kwargs)
    except TypeError as err:  # an argument the builder does not take, or one it lacks
        raise UserError(f"model_kwargs {dict(config.model_kwargs)}: {err}",
                        setting="config" if config_file else "model_kwargs",
                        value=config_file) from None


def make_loaders(splits: CIFAR10Splits, recipe: Recipe, *, device, seed: int,
                 dist: system.DistInfo = system.DistInfo()) -> dict:
    """train (shuffled, augmented), train_eval (no augmentation), val and test loaders."""
    if recipe.batch_size > len(splits.train):
        raise UserError(f"larger than the {len(splits.train)} training images",
                        setting="batch_size", value=recipe.batch_size)
    return {
        "train": TensorLoader(splits.train.images, splits.train.labels, recipe.batch_size,
                              train=True, augment=recipe.augment, device=device,
                              normalization=recipe.normalization, resize=_resize(recipe),
                              seed=seed, rank=dist.rank, world_size=dist.world_size),
        "train_eval": scoring_loader(splits.train, recipe, device=device, dist=dist),
        "val": scoring_loader(splits.val, recipe, device=device, dist=dist),
        "test": scoring_loader(splits.test, recipe, device=device, dist=dist),
    }


def scoring_loader(split: Split, recipe: Recipe, *, device,
                   dist: system.DistInfo = system.DistInfo()) -> TensorLoader:
    """A split as a run scores it (its checks, its final table, predict.py --evaluate): in
    order, no augmentation, the recipe's evaluation batch, image size and normalisation."""
    return TensorLoader(split.images, split.labels, recipe.eval_batch_size, device=device,
                        train=False, normalization=recipe.normalization,
                        resize=_resize(recipe), rank=dist.rank, world_size=dist.world_size)


def _resize(recipe: Recipe) -> int | None:
    return recipe.image_size if recipe.image_size != 32 else None  # 32: CIFAR-10's own


def choose_run_precision(session: Session, config: RunConfig, resumed: dict | None = None,
                         module: torch.nn.Module | None = None) -> PrecisionChoice:
    """The precision asked for; under auto the checkpoint's when resuming, else the faster
    here (measured on a copy of `module`, the caller's own, when given); under torchrun every
    rank takes rank 0's."""
    if resumed is not None and config.precision == "auto":
        return PrecisionChoice(resumed["precision"], "auto: the checkpoint's, as the run began")
    build = (lambda: copy.deepcopy(module)) if module is not None else lambda: build_model(config)
    choice = choose_precision(config.precision, session.device, build,
                              config.recipe.batch_size, getattr(config.recipe, "image_size", 32))
    if session.dist.enabled:
        bf16, = system.all_reduce_sum(
            [float(choice.precision == "bf16") if session.is_main else 0.0], session.device)
        choice = dataclasses.replace(choice, precision="bf16" if bf16 else "fp32")
    return choice


def train_run(session: Session, name: str, module: torch.nn.Module | None = None,
              **more_facts) -> dict:
    """Train run `name` of the session (torchvision's train.py, in order: seed, data, model,
    optimizer, resume, loop, save); returns its metrics with the history attached and the
    trained model under "model" (a finished run loaded instead has no "model"). `module`: the
    caller's own network (api.train(model=...)), trained in place of the one config.model
    names. `more_facts`: what the script adds to metrics.json about the run (task 4: the
    weights it started from).

    The model is built right after seeding, so its initial weights depend on the seed alone,
    not on the runs a script trained before it: every run is reproduced by running it alone."""
    raise_kept()  # a signal at the end of the previous run: no other begins
    config = session.configs[name]
    recipe = config.recipe
    run_dir = RunDir(session.output_root / name, writer=session.is_main)
    # a script resumed beside its finished runs loads those with this record
    resumed, finished = starting_point(config, run_dir, resume_state=session.resume_state,
                                       resume_path=session.resume,
                                       reuse=session.resume_state is not None, say=_say_main(session))
    if finished is not None:
        if session.is_main:
            print(f"{name}: finished earlier with these settings, loaded from {run_dir.path}")
        return finished
    system.seed_everything(config.seed)  # the initial weights: the same on every rank
    model = build_model(config) if module is None else module
    # augmentation and dropout: each rank its own stream (DDP broadcasts rank 0's weights)
    system.seed_everything(config.seed + session.dist.rank)
    loaders = make_loaders(session.splits, recipe, device=session.device, seed=config.seed,
                           dist=session.dist)
    if session.is_main:  # once nothing can refuse the run: a refused one leaves the folder be
        claim_folder(session.output_root, session.task)
    choice = choose_run_precision(session, config, resumed, module)  # leaves seeded streams be
    if session.is_main:
        print(f"{name}: {choice.precision} ({choice.reason})", file=sys.stderr)
    config = config.resolved(choice.precision, session.device.type)
    optimizer = make_optimizer(recipe, [p for p in model.parameters() if p.requires_grad])
    scheduler = make_scheduler(recipe.lr_scheduler, optimizer,
                               recipe.epochs * len(loaders["train"]))
    board = (tensorboard_writer(run_dir.create().path) if session.tensorboard and session.is_main
             else contextlib.nullcontext())
    with board as scalars:
        trainer = Trainer(model, optimizer, loaders, config, precision=choice.precision,
                          facts=facts(session, precision_reason=choice.reason, **more_facts),
                          scheduler=scheduler, device=session.device, run_dir=run_dir.create(),
                          dist=session.dist, progress=session.progress, scalars=scalars)
        if resumed is not None:
            trainer.resume(resumed, session.resume)
        if session.is_main:
            config.save(run_dir.path)
        try:
            result = trainer.fit()
        except Interrupted as stop:
            if stop.result is None:  # stopped mid-run: its checkpoint and resume command
                raise
            keep_until_outputs(stop)  # the run finished: the script's table first, then it
            result = stop.result
    if session.is_main and review_precision(choice, trainer.images_per_second()):
        print(f"{name}: trained faster than its cached precision probe measured; the probe "
              "is forgotten and runs again next time", file=sys.stderr)
    if session.is_main and "test" in result["final"]:
        figures.confusion_figure(result, run_dir.confusion()).draw(run_dir.path)
    return result | {"history": trainer.history, "model": trainer.raw_model}


def train_seeds(session: Session, name: str, seeds: list[int]) -> dict:
    """The speed-run recipe's run `name` once per seed, by its own loop (common.speedrun:
    run_seeds' folders name/seed<N>/, seeds finished earlier loaded), each new seed with its
    confusion figure; the precision chosen as for any run. Returns run_seeds' record."""
    raise_kept()  # a signal at the end of a run before it: the seeds do not begin
    config = session.configs[name]
    check_batch_size(session.splits, config.recipe)
    claim_folder(session.output_root, session.task)
    choice = choose_run_precision(session, config)
    print(f"{name}: {choice.precision} ({choice.reason})", file=sys.stderr)

    def confusion(run_dir, result):
        figures.confusion_figure(result, run_dir.confusion()).draw(run_dir.path)
    return run_seeds(session.splits, config, seeds, root=session.output_root / name,
                     device=session.device, precision=choice.precision,
                     progress=session.progress, on_finished=confusion,
                     facts=facts(session, precision_reason=choice.reason))


def save_results(session: Session, results: dict[str, dict], name: str = "results"):
    """All runs' metrics (without the per-step history or the model) as one JSON beside the
    runs."""
    if session.is_main:
        save_json({k: {kk: vv for kk, vv in v.items() if kk not in ("history", "model")}
                   for k, v in results.items()}, session.output_root / f"{name}.json")


# ---------------------------------------------------------------- studies (tasks 3c-3e)

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


def run_study(session: Session, variants: list[Variant], *, study: str, baseline_dir=None,
              table_note: str = "") -> dict:
    """Train every variant the session plans (the baseline may be loaded from a finished run,
    read before anything trains), then write the comparison table (CSV + printed) and the
    study's figure (Figure 4 when the variants are exactly the baseline and TanH). A diverging
    variant is a result, not a crash."""
    variants = [v for v in variants if v.name in session.configs]
    results = {}
    if baseline_dir and any(v.name == "baseline" for v in variants):
        finished = RunDir(baseline_dir, setting="reuse_baseline").load_finished()
        differ = RunConfig.from_dict(finished["config"], baseline_dir).differences(
            session.configs["baseline"], ignore=("task", "run"), names=("there", "here"))
        if differ:
            raise UserError(f"was trained with other settings than this study's baseline "
                            f"({'; '.join(differ[:4])})", setting="reuse_baseline",
                            value=baseline_dir)
        results["baseline"] = finished
        results["baseline"]["note"] = f"loaded from {baseline_dir}"
    for v in variants:
        if v.name in results:
            continue
        try:
            results[v.name] = train_run(session, v.name)
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
          "tensorboard": "move it aside, or leave out --tensorboard",
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
        for stream in (sys.stdout, sys.stderr):  # a path the locale cannot spell is still printed
            if hasattr(stream, "reconfigure"):
                stream.reconfigure(errors="backslashreplace")
        try:
            with signals_raise_interrupted():
                try:
                    result = main(argv)
                    raise_kept()  # a signal at the end of the last run, now that its table is out
                    return result
                finally:
                    FolderLock.release_all()
                    forget_kept()
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
        finally:
            after_main()

    return wrapper


def _say(line: str, show: bool, error: bool = True):
    if not show:
        return
    try:  # an error is one line, whatever a path in it holds
        print(f"error: {line}".replace("\n", "\\n") if error else line, file=sys.stderr)
    except OSError:  # the terminal is gone (SIGHUP): the exit code still says what happened
        pass
