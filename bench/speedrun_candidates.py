"""The speed-run's candidate changes, each trained on its own against the recipe before them
(Nesterov SGD on every weight) and scored the recipe's way: test accuracy with TTA, and the
recipe's time (whitening fit, training, final scoring). One folder per candidate, one per seed inside
it, in the format task3e.py writes (a finished seed is loaded, not retrained: an interrupted
study loses at most the seed it was on). docs/speedrun.md tabulates them.

  python -m bench.speedrun_candidates --data-dir DIR                      # every candidate
  python -m bench.speedrun_candidates --data-dir DIR --candidates sgd,muon_lr0.06 --seeds 0,1
  python -m bench.speedrun_candidates --data-dir DIR --candidates recipe --budgets 8,10,12
"""
from __future__ import annotations

from common.errors import while_starting

while_starting(__name__)  # before the heavy imports: a Ctrl-C while torch loads is one line

from dataclasses import replace
from pathlib import Path

from common import cli
from common.errors import UserError
from common.recipes import SPEEDRUN, SpeedrunConfig

# The recipe before this study (Nesterov SGD on every weight), which every candidate changes;
# "recipe" is common.recipes.SPEEDRUN as it stands, the combination chosen from them.
BEFORE = SpeedrunConfig(widths=(64, 128, 256), batch_size=512, epochs=6, lr=0.75,
                        weight_decay=1e-3)
MUON = {"filter_optimizer": "muon"}
# name -> (what it changes, the changes to BEFORE)
CANDIDATES = {
    "sgd": ("none: Nesterov SGD on every weight (Jordan 2024), the recipe before", {}),
    "muon_lr0.24": ("Muon for the conv filters at the published rate 0.24",
                    MUON | {"muon_lr": 0.24}),
    # Muon's step has a fixed size: at batch 512 it takes ~4x the published steps per epoch
    "muon_lr0.06": ("Muon at 0.06, the published 0.24 x 512 / 2,000 (its batch)",
                    MUON | {"muon_lr": 0.06}),
    "muon_lr0.03": ("Muon at 0.03, half the scaled rate", MUON | {"muon_lr": 0.03}),
    "muon_lr0.12": ("Muon at 0.12, twice the scaled rate", MUON | {"muon_lr": 0.12}),
    "muon_batch2000": ("Muon at 0.24 and the published batch 2,000 (SGD's rate and decay "
                       "scaled)", MUON | {"muon_lr": 0.24, "batch_size": 2000}),
    "muon_linear_to_zero": ("Muon at 0.06, every rate from its peak linearly to 0, no warm-up "
                            "(airbench94_muon's schedule)",
                            MUON | {"muon_lr": 0.06, "warmup": 0.0, "lr_start": 1.0,
                                    "lr_end": 0.0}),
    "muon_reflect": ("Muon at 0.06, translations filled by mirroring (reflect padding)",
                     MUON | {"muon_lr": 0.06, "translate_reflect": True}),
    "recipe": ("the recipe as it stands: Muon at 0.06, linear to 0, reflect padding", None),
}
# The second round: changes to the recipe as it stands (SPEEDRUN, 11 epochs), which fell short
# of the published script by 0.6 points within 0.75x its time.
AFTER = {
    "recipe_muon_lr0.12": ("Muon at 0.12 instead of 0.06", {"muon_lr": 0.12}),
    # batch 256 was expected to cost about what 512 does per image (a step benchmark whose
    # output was not kept; the run says otherwise: docs/speedrun.md); at 0.06 the filters
    # move per epoch as at 0.12 and batch 512, in twice the steps
    "recipe_batch256": ("batch 256 (SGD's rate and decay scaled), Muon at 0.06",
                        {"batch_size": 256, "muon_lr": 0.06}),
    # airbench94_muon's SGD rates per image: its bias 0.053 and head 0.67 (x 1/256 output
    # scale, squared) on a summed loss are 1/1.77 of ours (0.75 x 64 and 0.75 x (1/9)^2 on
    # a batch-mean loss over 512)
    "recipe_sgd_lr0.42": ("SGD (head and biases) at 0.42 instead of 0.75: the published "
                          "script's rates per image", {"lr": 0.42}),
    # the published momentum 0.6 over steps of 2,000 images remembers ~5,000 images; at 512
    # a step, 0.9 does
    "recipe_muon_momentum0.9": ("Muon's momentum 0.9 instead of 0.6: the published memory "
                                "in images at batch 512", {"muon_momentum": 0.9}),
    "recipe_lookahead": ("Lookahead (Jordan 2024): every 5 steps back to a slow average",
                         {"lookahead": True}),
    # the rest at about the recipe's cost: an epoch on 24-pixel images costs ~0.55 of one on
    # 32 (the convolutions' area, (24/32)^2), the published widths more than ours (the runs'
    # times: docs/speedrun.md)
    "recipe_low_res": ("progressive resizing: the first 4 of 13 epochs on 24-pixel images",
                       {"epochs": 13, "low_res_epochs": 4, "low_res_px": 24}),
    "recipe_published_widths": ("the published widths 64/256/256, 7 epochs",
                                {"widths": (64, 256, 256), "epochs": 7}),
    # ReLU's step was expected to cost less than GELU's (a step benchmark whose output was
    # not kept; the run did not confirm it: docs/speedrun.md)
    "recipe_relu": ("ReLU instead of GELU, 12 epochs", {"activation": "relu", "epochs": 12}),
    # the third round (issue 33): accuracy at the same cost, which a step's profile cannot show
    "recipe_ema": ("scored on a moving average (decay 0.99 a step) of the last 2 epochs' "
                   "weights", {"ema_epochs": 2, "ema_decay": 0.99}),
}


def configure(name: str, epochs: int | None):
    description, changes = (CANDIDATES | AFTER)[name]
    if changes is None:
        return description, SPEEDRUN if epochs is None else replace(SPEEDRUN, epochs=epochs)
    cfg = SPEEDRUN if name in AFTER else BEFORE
    if "batch_size" in changes:
        cfg = cfg.with_batch_size(changes["batch_size"])
    cfg = replace(cfg, **{k: v for k, v in changes.items() if k != "batch_size"})
    if epochs is not None:
        cfg = replace(cfg, epochs=epochs)
    return description, cfg


def get_args_parser():
    p = cli.make_parser(__doc__, exclude=("epochs", "patience", "batch_size", "lr", "precision",
                                          "seed", "subset", "quick", "resume", "no_progress",
                                          "opt", "momentum", "weight_decay", "lr_scheduler",
                                          "label_smoothing", "config", "tensorboard"))
    p.add_argument("--candidates", metavar="A,B,...", default=",".join(CANDIDATES),
                   help=f"which of: {', '.join(CANDIDATES | AFTER)} (default: every one of "
                        "the first round)")
    p.add_argument("--seeds", metavar="A,B,...", default="0", help="default: 0")
    p.add_argument("--budgets", metavar="A,B,...", default=None,
                   help="epoch counts to train each candidate for (default: the recipe's)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="bf16",
                   help="what task3e.py's --precision auto chose for the speed-run on the "
                        "machine at hand (default: bf16)")
    return p


cli.answer_help(__name__, get_args_parser)  # before torch loads: --help at once

from common.config import SPEEDRUN_MODEL, RunConfig  # noqa: E402
from common.data import cifar10_splits, resolve_data_dir  # noqa: E402
from common.speedrun import run_seeds  # noqa: E402
from common.system import machine_record, pick_device  # noqa: E402


@cli.exits_cleanly
def main(argv=None):
    args = get_args_parser().parse_args(argv)
    names = [n for n in args.candidates.split(",") if n]
    unknown = [n for n in names if n not in CANDIDATES | AFTER]
    if unknown or not names:
        raise UserError(f"choose from {', '.join(CANDIDATES | AFTER)}", setting="candidates",
                        value=args.candidates)
    seeds = cli.parse_ints(args.seeds, "seeds")
    budgets = cli.parse_ints(args.budgets, "budgets") if args.budgets else [None]
    device = pick_device(args.device or "auto")
    splits = cifar10_splits(resolve_data_dir(args.data_dir), seed=0)
    root = Path(args.output_dir or "outputs") / "speedrun_candidates"
    for name in names:
        for epochs in budgets:
            description, cfg = configure(name, epochs)
            folder = root / (name if epochs is None else f"{name}_e{epochs}")
            # the configuration task3e.py's seeds have: its seeds load these and these theirs
            config = RunConfig("task3e", "speedrun", SPEEDRUN_MODEL, cfg,
                               data_digest=splits.digest)
            out = run_seeds(splits, config, seeds, root=folder, device=device,
                            precision=args.precision,
                            facts={"candidate": name, "description": description,
                                   "data_source": splits.source,
                                   "machine": machine_record(device)})
            s = out["summary"]
            print(f"{folder.name}: {s['test_accuracy_tta']['mean']:.2f} % with TTA, "
                  f"{s['recipe_time_s']['mean']:.0f} s ({cfg.epochs} epochs, {description})",
                  flush=True)


if __name__ == "__main__":
    main()
