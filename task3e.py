"""Report task 3e: trying to improve Model 1 further: LeakyReLU, SiLU, Gaussian-noise
augmentation and learning-rate scheduling, each against Model 1 (Figure 5 and a table);
and, beyond the report, a speed-run recipe (--recipe speedrun, see common/speedrun.py).

  python task3e.py
  python task3e.py --variants silu,cosine --quick
  python task3e.py --recipe speedrun                 # 3 seeds, mean and spread
  python task3e.py --recipe speedrun --seeds 0 --quick
  python task3e.py --recipe speedrun --help          # the speed-run's own options
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from common import cli, experiment, plotting, study
from common.augment import AugmentConfig
from common.errors import UserError, exits_cleanly
from common.recipes import MODEL1, SPEEDRUN
from common.rundir import RunDir
from common.speedrun import run_seeds

NOISE_STD = 0.03  # our choice: report 3.e names Gaussian noise without a level; 3 % of the range
V = study.Variant
VARIANTS = {v.name: v for v in [
    V("baseline", "Model 1 as in report 3.a (ReLU)"),
    V("leaky_relu", "LeakyReLU (slope 0.01) instead of ReLU", {"activation": "leaky_relu"}),
    V("silu", "SiLU instead of ReLU", {"activation": "silu"}),
    V("gaussian_noise", f"plus Gaussian-noise augmentation (std {NOISE_STD})",
      recipe_changes={"augment": AugmentConfig(hflip=True, rotate_degrees=3,
                                               noise_std=NOISE_STD)}),
    # a schedule needs a fixed length: cosine decay over the whole run, no early stop
    V("cosine", "cosine learning-rate decay over 10 epochs (no early stopping)",
      recipe_changes={"schedule": "cosine", "patience": None}),
]}
SPEEDRUN_SEEDS = "0,1,2"
MODEL1_RUNS = ("outputs/task3/model1", "results/task3/model1")  # for the accuracy-vs-time figure
RECIPES = ("variants", "speedrun")


def get_args_parser(recipe: str = "variants"):
    if recipe == "speedrun":  # a fixed schedule on every training image, several seeds
        p = cli.make_parser(__doc__, exclude=("patience", "seed", "resume"))
        g = p.add_argument_group("speed-run recipe")
        g.add_argument("--seeds", metavar="A,B,...", default=SPEEDRUN_SEEDS,
                       help=f"one run per seed, reported as mean and spread (default: "
                            f"{SPEEDRUN_SEEDS}; --quick: the first only); seeds finished "
                            "earlier in the output folder are loaded. --batch-size without "
                            "--lr scales the rate and weight decay with it")
        g.add_argument("--widths", metavar="W1,W2,W3", default=None,
                       help="channels of the three conv groups (default: "
                            f"{','.join(map(str, SPEEDRUN.widths))})")
        g.add_argument("--model1-run", metavar="RUN_DIR", default=None,
                       help="a finished Model 1 run drawn beside it in the accuracy-vs-time "
                            f"figure (default: the first of {', '.join(MODEL1_RUNS)} that exists)")
    else:
        p = cli.make_parser(__doc__)
        cli.add_study_options(p, VARIANTS)
    p.add_argument("--recipe", choices=RECIPES, default="variants",
                   help="variants: Model 1 against the report's changes; speedrun: the "
                        "speed-run recipe, whose options `--recipe speedrun --help` lists "
                        "(default: variants)")
    return p


def speedrun_recipe(args):
    cfg = SPEEDRUN
    if args.batch_size and not args.lr:  # the published rate and decay scale with the batch
        cfg = cfg.with_batch_size(args.batch_size)
    changes = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr}
    if args.widths:
        changes["widths"] = tuple(cli.parse_ints(args.widths, "--widths", 3))
        if 0 in changes["widths"]:
            raise UserError(f"--widths must be positive, got {args.widths!r}")
    return dataclasses.replace(cfg, **{k: v for k, v in changes.items() if v})


def main_speedrun(args, argv):
    seeds = list(dict.fromkeys(cli.parse_ints(args.seeds, "--seeds")))[: 1 if args.quick else None]
    cfg = speedrun_recipe(args)
    session = experiment.setup(cli.run_settings(args, "task3e", argv), runs=[])
    if session.dist.enabled:
        raise UserError("--recipe speedrun runs in one process; start it with python, "
                        "not torchrun")
    out = run_seeds(session, cfg, seeds)
    # one time basis for every curve: seconds since the run began, evaluations included
    histories = {f"speed-run, seed {seed}": r["history"] for seed, r in out["runs"].items()}
    model1 = args.model1_run or next((d for d in MODEL1_RUNS if Path(d, "history.csv").is_file()),
                                     None)
    if model1:
        histories["Model 1, report recipe"] = RunDir(model1).load_finished()["history"]
    curves = {label: ([c["wall_time_s"] for c in h["checks"]],
                      [100 * c["test_accuracy"] for c in h["checks"]])
              for label, h in histories.items()}
    path = plotting.plot_accuracy_vs_time(
        curves, session.figure_dir / "task3e_speedrun_accuracy_vs_time.png",
        f"Speed-run recipe vs Model 1: test accuracy against time ({session.device}, "
        f"{out['precision']})", xlabel="seconds since the run began (training + evaluations)")
    s = out["summary"]
    acc, tta, t = s["test_accuracy"], s["test_accuracy_tta"], s["recipe_time_s"]
    print(f"\nSpeed-run recipe, {len(seeds)} seed(s) ({session.splits.source}, {session.device}, "
          f"{out['precision']}, {cfg.epochs} epochs, widths {cfg.widths}, batch {cfg.batch_size})")
    print(f"{'seed':<6}{'test acc':>10}{'with TTA':>10}{'time (s)':>10}")
    for seed, r in out["runs"].items():
        print(f"{seed:<6}{100 * r['final']['test']['accuracy']:>9.2f}%"
              f"{100 * r['final']['test_tta']['accuracy']:>9.2f}%{r['recipe_time_s']:>10.0f}")
    print(f"mean  {acc['mean']:>9.2f}%{tta['mean']:>9.2f}%{t['mean']:>10.0f}   "
          f"(spread: std {tta['std']:.2f}, range {tta['min']:.2f}-{tta['max']:.2f} with TTA)")
    print(f"wrote {path}")


@exits_cleanly
def main(argv=None):
    mode = cli.Parser(add_help=False)
    mode.add_argument("--recipe", choices=RECIPES, default="variants")
    recipe = mode.parse_known_args(sys.argv[1:] if argv is None else argv)[0].recipe
    args = cli.parse_args(get_args_parser(recipe), argv)
    if recipe == "speedrun":
        return main_speedrun(args, argv)
    variants = cli.select_variants(VARIANTS, args.variants)
    session = experiment.setup(cli.run_settings(args, "task3e", argv),
                               runs=[v.name for v in variants])
    study.run_study(session, variants, MODEL1, baseline_dir=args.reuse_baseline,
                    figure_name="task3e_figure5_improvements.png",
                    figure_title="Figure 5: Model 1 and attempted improvements")


if __name__ == "__main__":
    main()
