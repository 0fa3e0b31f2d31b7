"""Report task 2: the 1.g CNN trained with the starter recipe (Figure 1, Table 2.b).

  python task2.py
  python task2.py --quick
"""
from __future__ import annotations

from common.errors import while_starting

while_starting(__name__)  # before the heavy imports: a Ctrl-C while torch loads is one line

from common import cli
from common.recipes import planned

RUN = "cnn1g"  # report 2: the 1.g CNN, the starter code's recipe (common.recipes.CNN1G)


def get_args_parser():
    return cli.make_parser(__doc__)


cli.answer_help(__name__, get_args_parser)  # before torch loads: --help at once

from common import results, run  # noqa: E402


@cli.exits_cleanly
def main(argv=None):
    args = cli.parse_args(get_args_parser(), argv)
    session = run.setup("task2", planned("task2", [RUN]), **cli.script_options(args, argv))
    result = run.train_run(session, RUN)
    if not session.is_main:
        return
    run.save_results(session, {RUN: result})
    path = results.figure1(result).draw(session.figure_dir)
    print(results.final_table(result, f"\nTable 2.b ({result['epochs_completed']:.1f} epochs, "
                                      f"{session.splits.source}, {result['device']}, "
                                      f"{result['precision']})"))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
