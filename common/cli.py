"""The command line of every script: the shared options and their types (which ask the run
record's limits, common.config), what they become (setup()'s keyword values), and
exits_cleanly, the one boundary that words the library's errors for a person (with the option
names) and gives each its exit code (docs/resilience.md)."""
from __future__ import annotations

import argparse
import contextlib
import functools
import os
import shlex
import signal
import sys
from pathlib import Path

# nothing here loads torch (errors and recipes do not): a script builds its parser and
# answers --help (answer_help) before it imports the rest of the package
from .errors import (DivergenceError, Interrupted, OutputError, UserError, after_main,
                     handle_signals, raise_kept)
from .recipes import DEVICE_CHOICES, OPTIMIZERS, PRECISION_CHOICES, QUICK_SUBSET, SCHEDULES


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
        # imported when a value is checked, not when the parser is built: common.config reads
        # run folders through common.files, which loads torch, and --help answers without it
        # (answer_help); tests/test_layout.py names this one deferred import
        from .config import check_setting
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


# the options every task script shares, with torchvision's names where it has them (make_parser)
COMMON_OPTIONS = (
    ("--data-dir", dict(
        metavar="DIR", type=path_text,
        help="CIFAR-10 folder: either torchvision's official format (DIR/cifar-10-batches-py/, "
             "downloaded there when absent and online) or an image folder "
             "DIR/train/<class>/*.png|jpg and DIR/test/<class>/* (default: $CIFAR10_DIR, else "
             "./data/cifar10)")),
    ("--epochs", dict(
        type=whole_number(1), metavar="N",
        help="maximum number of epochs (default: the recipe's); with --resume, the run's new "
             "length (a schedule is rebuilt to it)")),
    ("--patience", dict(
        type=whole_number(0), metavar="N",
        help="early stopping: stop after N validation checks (two per epoch) without a lower "
             "validation loss; 0 turns it off and trains all --epochs (default: the recipe's, 4: "
             "the starter code's)")),
    ("--batch-size", dict(
        type=whole_number(1), metavar="N",
        help="training batch size (default: the recipe's)")),
    ("--lr", dict(
        type=setting_type("lr"), metavar="LR",
        help="learning rate (default: the recipe's); with --resume, the rate from the step "
             "reached on (e.g. lower, after a divergence)")),
    # the recipe's settings beyond the rate, batch and length
    ("--opt", dict(
        choices=OPTIMIZERS, type=str.lower,
        help="optimizer (default: the recipe's)")),
    ("--momentum", dict(
        type=setting_type("momentum"), metavar="M",
        help="SGD's momentum, in [0, 1) (default: the recipe's); with --resume, from the step "
             "reached")),
    ("--weight-decay", dict(
        type=setting_type("weight_decay"), metavar="W",
        help="weight decay, >= 0 (default: the recipe's); with --resume, from the step reached")),
    ("--lr-scheduler", dict(
        choices=SCHEDULES, type=str.lower,
        help="constant rate, or cosine decay to 0 over the run, stepped every step (default: the "
             "recipe's)")),
    ("--label-smoothing", dict(
        type=setting_type("label_smoothing"), metavar="S",
        help="label smoothing of the training loss, in [0, 1) (default: the recipe's); with "
             "--resume, from the step reached")),
    ("--config", dict(
        metavar="CONFIG.JSON", type=path_text,
        help="a run's config.json (written in every run folder): trains that run again with its "
             "recipe, data, seed and precision; options typed beside it change those values")),
    ("--device", dict(
        choices=DEVICE_CHOICES,
        help="where to train; auto picks CUDA, then MPS, then CPU (default: auto)")),
    ("--precision", dict(
        choices=PRECISION_CHOICES,
        help="bf16 runs the model under bf16 autocast; auto is bf16 on CUDA and, on a CPU, "
             "whichever a probe of the model measures faster in interleaved pairs (kept per "
             "machine when its spread decides) (default: auto)")),
    ("--seed", dict(
        type=int,
        help="seed for the train/validation split, initialisation, shuffling and augmentation; "
             "any whole number (default: 0)")),
    ("--output-dir", dict(
        metavar="DIR", type=path_text,
        help="where metrics.json, history.csv, steps.csv and checkpoints go, one subfolder per "
             "run; figures too when given (default: outputs/<task>; figures of full runs go to "
             "plots/)")),
    ("--subset", dict(
        type=whole_number(1), metavar="N",
        help="use at most N images per split, class-balanced (quick experiments)")),
    ("--quick", dict(
        action="store_true",
        help=f"a first try: --subset {QUICK_SUBSET} (images per split) and --epochs 1, "
             "each unless given; the run says its expected time after its first steps")),
    ("--resume", dict(
        metavar="CHECKPOINT", type=path_text,
        help="continue the run a checkpoint.pt belongs to, from any folder; its script, run, "
             "data, subset, seed, model and recipe must match, but --lr, --epochs, --patience, "
             "--momentum, --weight-decay, --label-smoothing and --precision, which take effect "
             "from the step reached; in scripts with several runs, runs already finished in the "
             "output folder with the same settings are loaded instead of retrained")),
    # how a run shows itself while it trains
    ("--tensorboard", dict(
        action="store_true",
        help="write the losses and accuracies as they happen (every step's training loss, every "
             "check's splits) to <run folder>/tensorboard/; watch with tensorboard --logdir "
             "<output folder>")),
    ("--no-progress", dict(
        action="store_true",
        help="no progress bars (they are also off when output is not a terminal)")),
)


def make_parser(description: str, exclude: tuple = ()) -> argparse.ArgumentParser:
    """A parser with the options every task script shares (COMMON_OPTIONS, but those in
    `exclude`, e.g. "patience" for a recipe without early stopping); scripts add their own to
    it."""
    p = Parser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = p.add_argument_group("common options")
    for flag, settings in COMMON_OPTIONS:
        if flag.lstrip("-").replace("-", "_") not in exclude:
            group.add_argument(flag, **settings)
    return p



def add_weights_option(parser: argparse.ArgumentParser):
    """--weights of the task 4 scripts: ResNet18's starting weights."""
    parser.add_argument(
        "--weights", default="imagenet", metavar="imagenet|none|PATH",
        type=lambda text: text if text in ("imagenet", "none") else path_text(text),
        help="imagenet: torchvision's ImageNet weights (IMAGENET1K_V1; from its cache, "
             "downloaded there when absent and online); none: random initialisation (no "
             "transfer; outputs say so); PATH: a resnet18 state_dict file, e.g. a copy of "
             "resnet18-f37072fd.pth (default: imagenet)")


def answer_help(module_name: str, make_parser, argv=None):
    """--help or -h, answered by the script's own parser before the script imports torch and
    the rest of the package (seconds): called between its get_args_parser and those imports.
    Does nothing when the file is imported, or without those options (then main() parses as
    always; argparse would print the same help there)."""
    if module_name != "__main__":
        return
    argv = list(sys.argv[1:] if argv is None else argv)
    options = argv[:argv.index("--")] if "--" in argv else argv
    if "-h" in options or "--help" in options:
        try:
            parser = make_parser()
        except UserError:  # an option the parser depends on is wrong: main() says so
            return
        parser.print_help()
        sys.exit(0)


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
    settings = {k: getattr(args, k, None) for k in RUN_OPTIONS} | (extra or {})
    return dict(settings=settings, config_file=getattr(args, "config", None),
                output_dir=args.output_dir, resume=getattr(args, "resume", None),
                progress=not args.no_progress and sys.stderr.isatty(),
                tensorboard=getattr(args, "tensorboard", False),
                command=shlex.join([Path(sys.executable).name, sys.argv[0], *argv]))



# ---------------------------------------------------------------- studies

def add_study_options(parser: argparse.ArgumentParser, variants: dict):
    """The options of a study script (task3cd, task3e): --variants and --reuse-baseline."""
    parser.add_argument("--variants", metavar="A,B,...",
                        help="comma-separated variants to run, in that order (default: all): "
                             + ", ".join(variants))
    parser.add_argument("--reuse-baseline", metavar="RUN_DIR", type=path_text,
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
        elif a.partition("=")[0] not in drop:  # --resume=PATH
            out.append(a)
    launcher = ["python"]
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        launcher = ["torchrun", f"--nproc_per_node={os.environ.get('LOCAL_WORLD_SIZE', '1')}"]
    return shlex.join(map(str, [*launcher, sys.argv[0], *out, *add]))


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
        for stream in (sys.stdout, sys.stderr):  # a path the locale cannot spell is still printed
            if hasattr(stream, "reconfigure"):
                stream.reconfigure(errors="backslashreplace")
        try:
            with handle_signals():
                try:
                    result = main(argv)
                    raise_kept()  # a signal at the end of the last run, now that its table is out
                    return result
                finally:
                    # a lock is taken only through common.files: not loaded, none is held
                    # (importing it here would load torch; this module loads without it)
                    files = sys.modules.get(f"{__package__}.files")
                    if files is not None:
                        files.FolderLock.release_all()
        except (UserError, DivergenceError, OutputError, Interrupted, KeyboardInterrupt) as err:
            if isinstance(err, KeyboardInterrupt):  # a signal that arrived before our handler
                err = Interrupted(signal.SIGINT)
            if isinstance(err, Interrupted):  # every rank says where it stopped
                line = word_interrupt(err, argv)
            elif os.environ.get("RANK", "0") != "0":  # under torchrun every rank raises alike
                sys.exit(err.exit_code)
            else:  # an error is one line, whatever a path in it holds
                line = "error: " + (word_user_error(err) if isinstance(err, UserError) else
                                    word_divergence(err, argv)
                                    if isinstance(err, DivergenceError) else str(err))
                line = line.replace("\n", "\\n")
            # the terminal may be gone (SIGHUP): the exit code still says what happened
            with contextlib.suppress(OSError):
                print(line, file=sys.stderr)
            sys.exit(err.exit_code)
        except BrokenPipeError:
            # the reader went away (`| head`): say nothing more, on a stdout that cannot fail
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)
        finally:
            after_main()  # and a signal kept for the outputs is dropped

    return wrapper

