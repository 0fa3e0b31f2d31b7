"""Report task 2: the 1.g CNN trained with the starter recipe (Figure 1, Table 2.b).

  python task2.py
  python task2.py --quick
"""
from __future__ import annotations

from common import cli, experiment, plotting, tables
from common.errors import exits_cleanly
from common.models import CNN1g
from common.recipe import Recipe, train_recipe

# report task 2 (the assignment's starter recipe): SGD, lr 5e-2, batch 64, no augmentation,
# early stopping after 4 checks without a better validation loss, at most 10 epochs
RECIPE = Recipe(optimizer="sgd", lr=5e-2, batch_size=64, epochs=10, early_stop_count=4)


def get_args_parser():
    return cli.make_parser(__doc__)


@exits_cleanly
def main(argv=None):
    args = cli.parse_args(get_args_parser(), argv)
    ctx = experiment.setup(args, "task2")
    result = train_recipe(ctx, "cnn1g", CNN1g, RECIPE)
    if not ctx.is_main:
        return
    experiment.save_results(ctx, {"cnn1g": result})
    print(tables.final_table(result, f"\nTable 2.b ({result['epochs_completed']:.1f} epochs, "
                                     f"{ctx.splits.source}, {result['device']}, "
                                     f"{result['precision']})"))
    acc = 100 * result["final"]["test"]["accuracy"]
    path = plotting.plot_run(result["history"], ctx.figure_dir / "task2_figure1.png",
                             f"Figure 1: the 1.g CNN, final test accuracy {acc:.2f}%")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
