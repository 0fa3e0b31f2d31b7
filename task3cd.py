"""Report tasks 3c-3d: Model 1 against each single change the report lists as better or worse,
one run each (Figure 4: ReLU vs TanH; one table of every variant).

  python task3cd.py --variants baseline,tanh                # Figure 4
  python task3cd.py --epochs 3                              # every variant, 3-epoch budget
  python task3cd.py --reuse-baseline outputs/task3/model1   # baseline from a task3 run
"""
from __future__ import annotations

from common.errors import while_starting

while_starting(__name__)  # before the heavy imports: a Ctrl-C while torch loads is one line

from common import cli
from common.recipes import TASK3CD_VARIANTS, planned

# Model 1 (report 3.a) against each change of report 3.c-3.d: the variants, each with the
# report's words, are in common/recipes.py
VARIANTS = TASK3CD_VARIANTS


def get_args_parser():
    p = cli.make_parser(__doc__)
    cli.add_study_options(p, VARIANTS)
    return p


cli.answer_help(__name__, get_args_parser)  # before torch loads: --help at once

from common import run  # noqa: E402


@cli.exits_cleanly
def main(argv=None):
    args = cli.parse_args(get_args_parser(), argv)
    variants = cli.select_variants(VARIANTS, args.variants)
    session = run.setup("task3cd", planned("task3cd", [v.name for v in variants]),
                        **cli.script_options(args, argv))
    recipe = next(iter(session.configs.values())).recipe
    budget = (f"variants trained here: {recipe.epochs} epochs each, no early stopping"
              if recipe.patience is None else
              f"variants trained here: up to {recipe.epochs} epochs, early stopping")
    run.run_study(session, variants, study="task3c", baseline_dir=args.reuse_baseline,
                  table_note=budget)


if __name__ == "__main__":
    main()
