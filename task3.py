"""Report task 3: Model 1 and Model 2 on CIFAR-10 (Figures 2-3, Table 3.b).

  python task3.py                      # both models, the report's recipes
  python task3.py --model 1 --quick    # a first try: 1,000 images per split, one epoch
"""
from __future__ import annotations

from common.errors import while_starting

while_starting(__name__)  # before the heavy imports: a Ctrl-C while torch loads is one line

from common import cli
from common.recipes import PLANS, planned

RUNS = PLANS["task3"]  # report 3.a: each model with its recipe (MODEL1, MODEL2)


def get_args_parser():
    p = cli.make_parser(__doc__)
    p.add_argument("--model", choices=["1", "2", "both"], default="both",
                   help="which of the report's models to train (default: both)")
    return p


cli.answer_help(__name__, get_args_parser)  # before torch loads: --help at once

from common import results, run  # noqa: E402


def label(name: str) -> str:
    return name.replace("model", "Model ")


@cli.exits_cleanly
def main(argv=None):
    args = cli.parse_args(get_args_parser(), argv)
    names = [n for n in RUNS if args.model in (n[-1], "both")]
    session = run.setup("task3", planned("task3", names), **cli.script_options(args, argv))
    finished = {n: run.train_run(session, n) for n in session.configs}
    if not session.is_main:
        return
    run.save_results(session, finished)
    drawn = [results.figure2(r, name) for name, r in finished.items()]
    if len(finished) == 2:
        drawn.append(results.figure3(finished["model1"], finished["model2"]))
    paths = [figure.draw(session.figure_dir) for figure in drawn]
    for name, r in finished.items():
        print(results.final_table(r, f"\nTable 3.b, {label(name)} ({r['epochs_completed']:.1f} "
                                     f"epochs, {session.splits.source}, {r['device']}, "
                                     f"{r['precision']})"))
    for path in paths:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
