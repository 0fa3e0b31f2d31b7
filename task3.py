"""Report task 3: Model 1 and Model 2 on CIFAR-10 (Figures 2-3, Table 3.b).

  python task3.py                      # both models, the report's recipes
  python task3.py --model 1 --quick    # a one-minute first try
"""
from __future__ import annotations

from common import cli, experiment, plotting, tables
from common.errors import exits_cleanly
from common.models import Model1, Model2
from common.recipes import MODEL1, MODEL2

RUNS = {"model1": (Model1, MODEL1), "model2": (Model2, MODEL2)}  # report 3.a


def get_args_parser():
    p = cli.make_parser(__doc__)
    p.add_argument("--model", choices=["1", "2", "both"], default="both",
                   help="which of the report's models to train (default: both)")
    return p


def label(name: str) -> str:
    return name.replace("model", "Model ")


@exits_cleanly
def main(argv=None):
    args = cli.parse_args(get_args_parser(), argv)
    names = [n for n in RUNS if args.model in (n[-1], "both")]
    session = experiment.setup(cli.run_settings(args, "task3", argv), runs=names)
    results = {n: experiment.train_recipe(session, n, *RUNS[n]) for n in names}
    if not session.is_main:
        return
    experiment.save_results(session, results)
    paths = []
    for name, r in results.items():  # Figure 2 is Model 1's; Model 2 gets the same plot
        acc = 100 * r["final"]["test"]["accuracy"]
        paths.append(plotting.plot_run(
            r["history"], session.figure_dir / f"task3_figure2_{name}.png",
            f"{'Figure 2: ' if name == 'model1' else ''}{label(name)}, "
            f"final test accuracy {acc:.2f}%"))
    if len(results) == 2:
        accs = ", ".join(f"{label(k)} {100 * v['final']['test']['accuracy']:.2f}%"
                         for k, v in results.items())
        paths.append(plotting.plot_runs({label(k): v["history"] for k, v in results.items()},
                                        session.figure_dir / "task3_figure3_models.png",
                                        f"Figure 3: Model 1 vs Model 2 (test accuracy {accs})"))
    for name, r in results.items():
        print(tables.final_table(r, f"\nTable 3.b, {label(name)} ({r['epochs_completed']:.1f} "
                                    f"epochs, {session.splits.source}, {r['device']}, "
                                    f"{r['precision']})"))
    for path in paths:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
