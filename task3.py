"""Report task 3: Model 1 and Model 2 on CIFAR-10 (Figures 2-3, Table 3.b).

  python task3.py                      # both models, the report's recipes
  python task3.py --model 1 --quick    # a one-minute first try
"""
from __future__ import annotations

from common import cli, experiment, plotting, tables
from common.augment import AugmentConfig
from common.errors import exits_cleanly
from common.models import Model1, Model2
from common.recipe import Recipe, train_recipe

# report 3.a, Model 1: AdamW, lr 3e-4, weight decay 0.05, batch 32,
# horizontal flip (p = 0.5) and random rotation in [-3, 3] degrees; converged within 7 epochs
MODEL1 = Recipe(optimizer="adamw", lr=3e-4, weight_decay=0.05, batch_size=32,
                augment=AugmentConfig(hflip=True, rotate_degrees=3), epochs=10, early_stop_count=4)
# report 3.a, Model 2: AdamW, lr 1e-3, betas (0.9, 0.999), weight decay 0.01, batch 64,
# colour jitter (hue 0.05, saturation 0.05) and horizontal flip (p = 0.5); converged in 8 epochs
MODEL2 = Recipe(optimizer="adamw", lr=1e-3, betas=(0.9, 0.999), weight_decay=0.01, batch_size=64,
                augment=AugmentConfig(hflip=True, hue=0.05, saturation=0.05), epochs=10,
                early_stop_count=4)


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
    ctx = experiment.setup(args, "task3")
    results = {}
    if args.model in ("1", "both"):
        results["model1"] = train_recipe(ctx, "model1", Model1, MODEL1)
    if args.model in ("2", "both"):
        results["model2"] = train_recipe(ctx, "model2", Model2, MODEL2)
    if not ctx.is_main:
        return
    experiment.save_results(ctx, results)
    for name, r in results.items():
        print(tables.final_table(r, f"\nTable 3.b, {label(name)} ({r['epochs_completed']:.1f} "
                                    f"epochs, {ctx.splits.source}, {r['device']}, {r['precision']})"))
    for name, r in results.items():  # Figure 2 is Model 1's; Model 2 gets the same plot
        acc = 100 * r["final"]["test"]["accuracy"]
        path = plotting.plot_run(r["history"], ctx.figure_dir / f"task3_figure2_{name}.png",
                                 f"{'Figure 2: ' if name == 'model1' else ''}{label(name)}, "
                                 f"final test accuracy {acc:.2f}%")
        print(f"wrote {path}")
    if len(results) == 2:
        accs = ", ".join(f"{label(k)} {100 * v['final']['test']['accuracy']:.2f}%"
                         for k, v in results.items())
        path = plotting.plot_runs({label(k): v["history"] for k, v in results.items()},
                                  ctx.figure_dir / "task3_figure3_models.png",
                                  f"Figure 3: Model 1 vs Model 2 (test accuracy {accs})")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
