"""Report tasks 3c-3d: Model 1 against each single change the report lists as better or worse,
one run each (Figure 4: ReLU vs TanH; one table of every variant).

  python task3cd.py --variants baseline,tanh                # Figure 4
  python task3cd.py --epochs 3                              # every variant, 3-epoch budget
  python task3cd.py --reuse-baseline outputs/task3/model1   # baseline from a task3 run
"""
from __future__ import annotations

from common.errors import while_starting

while_starting(__name__)  # before the heavy imports: a Ctrl-C while torch loads is one line

from common import run
from common.data import AugmentConfig
from common.recipes import MODEL1

V = run.Variant
VARIANTS = {v.name: v for v in [
    V("baseline", "Model 1 as in report 3.a (ReLU)"),
    # report 3.d: "TanH activation with Xavier weight initialization instead of ReLU"
    V("tanh", "TanH with Xavier initialisation", {"activation": "tanh", "init": "xavier"}),
    # report 3.c "better" list, reverted one at a time
    V("batch64", "batch 64 instead of 32", recipe_changes={"batch_size": 64}),
    V("filters_32_64_128", "filters [32, 64, 128] instead of [64, 64, 64]",
      {"filters": (32, 64, 128)}),
    V("no_augment", "no data augmentation", recipe_changes={"augment": AugmentConfig()}),
    V("no_batchnorm", "no BatchNorm2d after the convolutions", {"batchnorm": False}),
    V("sgd", "SGD (lr 5e-2, the starter's) instead of AdamW",
      recipe_changes={"opt": "sgd", "lr": 5e-2, "weight_decay": 0.0}),
    # report 3.c "worse" list
    V("rotate90", "rotation in [-90, 90] degrees (excessive augmentation)",
      recipe_changes={"augment": AugmentConfig(hflip=True, rotate_degrees=90)}),
    V("adam_lr5e-2", "Adam with a high learning rate (5e-2)",
      recipe_changes={"opt": "adam", "lr": 5e-2, "weight_decay": 0.0}),
    V("dropout", "dropout 0.5 in the classifier", {"dropout": 0.5}),
    V("batchnorm1d", "BatchNorm1d in the classifier", {"batchnorm1d": True}),
]}


def get_args_parser():
    p = run.make_parser(__doc__)
    run.add_study_options(p, VARIANTS)
    return p


@run.exits_cleanly
def main(argv=None):
    args = run.parse_args(get_args_parser(), argv)
    variants = run.select_variants(VARIANTS, args.variants)
    session = run.setup("task3cd", [v.plan(MODEL1) for v in variants],
                        **run.script_options(args, argv))
    recipe = next(iter(session.configs.values())).recipe
    budget = (f"variants trained here: {recipe.epochs} epochs each, no early stopping"
              if recipe.patience is None else
              f"variants trained here: up to {recipe.epochs} epochs, early stopping")
    run.run_study(session, variants, study="task3c", baseline_dir=args.reuse_baseline,
                  table_note=budget)


if __name__ == "__main__":
    main()
