"""The shared command line: conventional option names (torchvision references), validation."""
from __future__ import annotations

import argparse
import os
import shlex
import sys

from .errors import UserError

QUICK_SUBSET = 1000  # --quick: at most 1,000 images per split and one epoch (about a minute on CPU)


def make_parser(description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    """A parser with the options every task script shares; scripts add their own to it."""
    p = argparse.ArgumentParser(description=description, epilog=epilog,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("common options")
    g.add_argument("--data-dir", metavar="DIR", default=None,
                   help="CIFAR-10 folder: either torchvision's official format "
                        "(DIR/cifar-10-batches-py/, downloaded there when absent and online) or "
                        "an image folder DIR/train/<class>/*.png|jpg and DIR/test/<class>/* "
                        "(default: $CIFAR10_DIR, else ./data/cifar10)")
    g.add_argument("--epochs", type=int, default=None, metavar="N",
                   help="maximum number of epochs (default: the recipe's, see the table above)")
    g.add_argument("--patience", type=int, default=None, metavar="N",
                   help="early stopping: stop after N validation checks (two per epoch) "
                        "without a lower validation loss; 0 turns it off and trains all "
                        "--epochs (default: the recipe's, 4 in the report)")
    g.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="training batch size (default: the recipe's)")
    g.add_argument("--lr", type=float, default=None, metavar="LR",
                   help="learning rate (default: the recipe's)")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="where to train; auto picks CUDA, then MPS, then CPU (default: auto)")
    g.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="bf16 runs the model under bf16 autocast; auto is bf16 on CUDA and fp32 "
                        "elsewhere (default: auto)")
    g.add_argument("--seed", type=int, default=0,
                   help="seed for the train/validation split, initialisation, shuffling and "
                        "augmentation (default: 0)")
    g.add_argument("--output-dir", metavar="DIR", default=None,
                   help="where metrics.json, history.csv, steps.csv and checkpoints go, one "
                        "subfolder per run; figures too when given (default: outputs/<task>; "
                        "figures of full runs go to plots/)")
    g.add_argument("--subset", type=int, default=None, metavar="N",
                   help="use at most N images per split, class-balanced (quick experiments)")
    g.add_argument("--quick", action="store_true",
                   help=f"a first try in about a minute on CPU: --subset {QUICK_SUBSET}, one epoch")
    g.add_argument("--resume", metavar="CHECKPOINT", default=None,
                   help="continue an interrupted run from its checkpoint.pt; in scripts with "
                        "several runs, runs already finished in the same output folder are "
                        "loaded instead of retrained")
    g.add_argument("--no-progress", action="store_true",
                   help="no progress bars (they are also off when output is not a terminal)")
    return p


def parse_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse and check the shared options; problems become one-line UserErrors."""
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "subset"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be a positive whole number, "
                            f"got {value}")
    if args.patience is not None and args.patience < 0:
        raise UserError(f"--patience must be 0 (off) or a positive whole number, "
                        f"got {args.patience}")
    if args.lr is not None and not args.lr > 0:
        raise UserError(f"--lr must be a positive number, got {args.lr}")
    if args.quick:
        args.subset = min(args.subset or QUICK_SUBSET, QUICK_SUBSET)
        args.epochs = 1
    args.progress = not args.no_progress and sys.stderr.isatty()
    args.command = " ".join(shlex.quote(a) for a in [sys.executable.rsplit("/", 1)[-1]]
                            + sys.argv)
    return args


def resume_command(argv: list[str], checkpoint) -> str:
    """The command line that resumes: the same one, with --resume CHECKPOINT."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--resume":
            skip = True
            continue
        if a.startswith("--resume="):
            continue
        out.append(a)
    launcher = ["python"]
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # launched by torchrun: resume the same way
        launcher = ["torchrun", f"--nproc_per_node={os.environ.get('LOCAL_WORLD_SIZE', '1')}"]
    return " ".join(shlex.quote(a) for a in launcher + out + ["--resume", str(checkpoint)])
