"""The shared command line: conventional option names (torchvision references), validation."""
from __future__ import annotations

import argparse
import sys

from .errors import UserError
from .experiment import RunSettings
from .recipes import Overrides

QUICK_SUBSET = 1000  # --quick: at most 1,000 images per split and one epoch (about a minute on CPU)


def whole_number(minimum: int):
    """An option type: a whole number >= minimum (argparse turns its error into one line)."""
    def whole_number(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return whole_number


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
    option("--data-dir", metavar="DIR", default=None,
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
    option("--lr", type=float, default=None, metavar="LR",
           help="learning rate (default: the recipe's); with --resume, the rate from "
                "the step reached on (e.g. lower, after a divergence)")
    option("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
           help="where to train; auto picks CUDA, then MPS, then CPU (default: auto)")
    option("--precision", default="auto", choices=["auto", "fp32", "bf16"],
           help="bf16 runs the model under bf16 autocast; auto is bf16 on CUDA and, on a "
                "CPU, whichever a short probe of the model measures faster (cached per "
                "machine) (default: auto)")
    option("--seed", type=int, default=0,
           help="seed for the train/validation split, initialisation, shuffling and "
                "augmentation (default: 0)")
    option("--output-dir", metavar="DIR", default=None,
           help="where metrics.json, history.csv, steps.csv and checkpoints go, one "
                "subfolder per run; figures too when given (default: outputs/<task>; "
                "figures of full runs go to plots/)")
    option("--subset", type=whole_number(1), default=None, metavar="N",
           help="use at most N images per split, class-balanced (quick experiments)")
    option("--quick", action="store_true",
           help=f"a first try in about a minute on CPU: --subset {QUICK_SUBSET}, one epoch")
    option("--resume", metavar="CHECKPOINT", default=None,
           help="continue the run a checkpoint.pt belongs to (from any folder; its "
                "script, run, batch size, data, subset and seed must match, --lr, "
                "--epochs and --patience take effect from the step reached); in "
                "scripts with several runs, runs already finished in the output folder "
                "are loaded instead of retrained")
    option("--no-progress", action="store_true",
           help="no progress bars (they are also off when output is not a terminal)")
    return p


def parse_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse and check the shared options; problems become one-line UserErrors."""
    args = parser.parse_args(argv)
    if args.lr is not None and not args.lr > 0:
        raise UserError(f"--lr must be a positive number, got {args.lr}")
    if args.quick:
        args.subset = min(args.subset or QUICK_SUBSET, QUICK_SUBSET)
        args.epochs = 1
    return args


def run_settings(args: argparse.Namespace, task: str, argv=None) -> RunSettings:
    """The parsed command line as the library's typed settings."""
    argv = list(sys.argv if argv is None else [sys.argv[0], *argv])
    return RunSettings(
        task=task, data_dir=args.data_dir, device=args.device, precision=args.precision,
        seed=getattr(args, "seed", 0), subset=args.subset, output_dir=args.output_dir,
        resume=getattr(args, "resume", None),
        progress=not args.no_progress and sys.stderr.isatty(),
        overrides=Overrides(lr=args.lr, batch_size=args.batch_size, epochs=args.epochs,
                            patience=getattr(args, "patience", None)),
        argv=tuple([sys.executable.rsplit("/", 1)[-1], *argv]))


def parse_ints(text: str, option: str, count: int | None = None) -> list[int]:
    """"1,2,3" -> [1, 2, 3]: whole numbers >= 0, `count` of them when given."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{option} takes comma-separated whole numbers, got {text!r}") from None
    if not values or (count and len(values) != count) or any(v < 0 for v in values):
        raise UserError(f"{option} takes {count or 'one or more'} comma-separated whole "
                        f"numbers, got {text!r}")
    return values


def add_study_options(parser: argparse.ArgumentParser, variants: dict):
    """The options of a study script (task3cd, task3e): --variants and --reuse-baseline."""
    parser.add_argument("--variants", metavar="A,B,...", default=None,
                        help="comma-separated variants to run, in that order (default: all): "
                             + ", ".join(variants))
    parser.add_argument("--reuse-baseline", metavar="RUN_DIR", default=None,
                        help="take the baseline from a finished run folder (e.g. "
                             "outputs/task3/model1) instead of training it again; it should "
                             "have the same epoch budget")


def select_variants(variants: dict, spec: str | None) -> list:
    """--variants a,b,c -> those variants (all when not given); unknown names are an error."""
    if not spec:
        return list(variants.values())
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in variants]
    if unknown:
        raise UserError(f"unknown variant(s) {', '.join(unknown)}; choose from "
                        f"{', '.join(variants)}")
    return [variants[n] for n in names]
