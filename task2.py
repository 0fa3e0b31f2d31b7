"""Report task 2: the 1.g CNN trained with the starter recipe (Figure 1, Table 2.b).

  python task2.py
  python task2.py --quick
"""
from __future__ import annotations

from common import cli, experiment, plotting, tables
from common.errors import exits_cleanly
from common.models import CNN1g
from common.recipes import CNN1G

RUN = "cnn1g"


def get_args_parser():
    return cli.make_parser(__doc__)


@exits_cleanly
def main(argv=None):
    args = cli.parse_args(get_args_parser(), argv)
    session = experiment.setup(cli.run_settings(args, "task2", argv), runs=[RUN])
    result = experiment.train_recipe(session, RUN, CNN1g, CNN1G)
    if not session.is_main:
        return
    experiment.save_results(session, {RUN: result})
    acc = 100 * result["final"]["test"]["accuracy"]
    path = plotting.plot_run(result["history"], session.figure_dir / "task2_figure1.png",
                             f"Figure 1: the 1.g CNN, final test accuracy {acc:.2f}%")
    print(tables.final_table(result, f"\nTable 2.b ({result['epochs_completed']:.1f} epochs, "
                                     f"{session.splits.source}, {result['device']}, "
                                     f"{result['precision']})"))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
