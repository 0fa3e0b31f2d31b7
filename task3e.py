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

from common.errors import while_starting

while_starting(__name__)  # before the heavy imports: a Ctrl-C while torch loads is one line

import sys

from common import cli
from common.errors import UserError
from common.recipes import FILTER_OPTIMIZERS, SPEEDRUN, TASK3E_VARIANTS, planned

# Model 1 (report 3.a) against each attempt of report 3.e: the variants, each with the
# report's words, are in common/recipes.py
VARIANTS = TASK3E_VARIANTS
SPEEDRUN_SEEDS = "0,1,2"
SPEEDRUN_RUN = "speedrun"  # its seeds' folders: speedrun/seed<N>
MODEL1_RUNS = ("outputs/task3/model1", "results/task3/model1")  # for the accuracy-vs-time figure
RECIPES = ("variants", "speedrun")


def get_args_parser(recipe: str = "variants"):
    if recipe == "speedrun":  # a fixed schedule on every training image, several seeds
        p = cli.make_parser(__doc__, exclude=("patience", "seed", "resume", "opt",
                                              "lr_scheduler", "tensorboard"))
        g = p.add_argument_group("speed-run recipe")
        g.add_argument("--seeds", metavar="A,B,...", default=SPEEDRUN_SEEDS,
                       help=f"one run per seed, reported as mean and spread (default: "
                            f"{SPEEDRUN_SEEDS}; --quick: the first only); seeds finished "
                            "earlier in the output folder are loaded. --batch-size without "
                            "--lr scales the rate and weight decay with it")
        g.add_argument("--widths", metavar="W1,W2,W3", default=None,
                       help="channels of the three conv groups (default: "
                            f"{','.join(map(str, SPEEDRUN.widths))})")
        g.add_argument("--filter-optimizer", choices=FILTER_OPTIMIZERS, default=None,
                       help="what trains the convolution filters: Muon (airbench94_muon) or "
                            "Nesterov SGD like every other weight (Jordan 2024) (default: "
                            f"{SPEEDRUN.filter_optimizer})")
        g.add_argument("--model1-run", metavar="RUN_DIR", default=None, type=cli.path_text,
                       help="a finished Model 1 run drawn beside it in the accuracy-vs-time "
                            f"figure (default: the first of {', '.join(MODEL1_RUNS)} that is "
                            "finished)")
    else:
        p = cli.make_parser(__doc__)
        cli.add_study_options(p, VARIANTS)
    p.add_argument("--recipe", choices=RECIPES, default="variants",
                   help="variants: Model 1 against the report's changes; speedrun: the "
                        "speed-run recipe, whose options `--recipe speedrun --help` lists "
                        "(default: variants)")
    return p


def chosen_recipe(argv=None) -> str:
    """--recipe, read first: it decides which options the command line has."""
    mode = cli.Parser(add_help=False)
    mode.add_argument("--recipe", choices=RECIPES, default="variants")
    return mode.parse_known_args(sys.argv[1:] if argv is None else argv)[0].recipe


cli.answer_help(__name__, lambda: get_args_parser(chosen_recipe()))  # before torch loads

from common import results, run  # noqa: E402
from common.config import load_finished  # noqa: E402
from common.files import RunDir  # noqa: E402
from common.speedrun import DATA_SEED  # noqa: E402


def speedrun_settings(args) -> dict:
    """The speed-run's own options, as run settings."""
    widths = None
    if args.widths:
        widths = tuple(cli.parse_ints(args.widths, "widths", 3))
        if 0 in widths:
            raise UserError("must be positive", setting="widths", value=args.widths)
    return {"widths": widths, "filter_optimizer": args.filter_optimizer}


def model1_run(args) -> dict | None:
    """The finished Model 1 run drawn beside the speed-run, read before anything trains."""
    if args.model1_run:
        return load_finished(RunDir(args.model1_run, setting="model1_run"))
    found = next((d for d in MODEL1_RUNS if RunDir(d).is_finished()), None)
    return load_finished(RunDir(found)) if found else None


def main_speedrun(args, argv):
    seeds = list(dict.fromkeys(cli.parse_ints(args.seeds, "seeds")))[: 1 if args.quick else None]
    model1 = model1_run(args)
    session = run.setup("task3e", planned("task3e", [SPEEDRUN_RUN]),
                        **cli.script_options(args, argv, speedrun_settings(args)),
                        data_seed=DATA_SEED)
    if session.dist.enabled:
        raise UserError("runs in one process; start it with python, not torchrun",
                        setting="recipe", value="speedrun")
    config = session.configs[SPEEDRUN_RUN]
    if args.config:  # a seed's config.json: that seed
        seeds = [config.seed]
    out = run.train_seeds(session, SPEEDRUN_RUN, seeds)
    cfg = config.recipe
    path = results.speedrun_vs_time(list(out["runs"].values()), model1).draw(session.figure_dir)
    print_speedrun(out, seeds, cfg, session)
    print(f"wrote {path}")


def print_speedrun(out: dict, seeds: list[int], cfg, session):
    s = out["summary"]
    acc, tta, t = s["test_accuracy"], s["test_accuracy_tta"], s["recipe_time_s"]
    print(f"\nSpeed-run recipe, {len(seeds)} seed(s) ({session.splits.source}, {session.device}, "
          f"{out['precision']}, {cfg.epochs} epochs, widths {cfg.widths}, batch {cfg.batch_size})")
    print(f"{'seed':<6}{'test acc':>10}{'with TTA':>10}{'time (s)':>10}")
    for seed, r in out["runs"].items():
        print(f"{seed:<6}{100 * r['final']['test']['accuracy']:>9.2f}%"
              f"{100 * r['final']['test_tta']['accuracy']:>9.2f}%{r['recipe_time_s']:>10.0f}")
    print(f"mean  {acc['mean']:>9.2f}%{tta['mean']:>9.2f}%{t['mean']:>10.0f}   "
          f"(with TTA: {results.seed_spread(tta, s['n'])})")


@cli.exits_cleanly
def main(argv=None):
    recipe = chosen_recipe(argv)
    args = cli.parse_args(get_args_parser(recipe), argv)
    if recipe == "speedrun":
        return main_speedrun(args, argv)
    variants = cli.select_variants(VARIANTS, args.variants)
    session = run.setup("task3e", planned("task3e", [v.name for v in variants]),
                        **cli.script_options(args, argv))
    run.run_study(session, variants, study="task3e", baseline_dir=args.reuse_baseline)


if __name__ == "__main__":
    main()
