"""Report task 3: Model 1 and Model 2 on CIFAR-10 (Figures 2-3, Table 3.b).

  python task3.py                      # both models, the report's recipes
  python task3.py --model 1 --quick    # a one-minute first try
"""
from __future__ import annotations

import torch

from common import cli, experiment, plotting, tables
from common.augment import AugmentConfig
from common.errors import exits_cleanly
from common.models import Model1, Model2

MAX_EPOCHS = 10          # report 3.b: converged within 7-8 epochs; early stopping decides
EARLY_STOP_COUNT = 4     # checks without a better validation loss (two checks per epoch)

# report 3.a, Model 1: AdamW, lr 3e-4, weight decay 0.05, batch 32,
# horizontal flip (p = 0.5) and random rotation in [-3, 3] degrees
MODEL1 = dict(lr=3e-4, weight_decay=0.05, batch_size=32,
              augment=AugmentConfig(hflip=True, rotate_degrees=3))
# report 3.a, Model 2: AdamW, lr 1e-3, betas (0.9, 0.999), weight decay 0.01, batch 64,
# colour jitter (hue 0.05, saturation 0.05) and horizontal flip (p = 0.5)
MODEL2 = dict(lr=1e-3, betas=(0.9, 0.999), weight_decay=0.01, batch_size=64,
              augment=AugmentConfig(hflip=True, hue=0.05, saturation=0.05))


def train_model(ctx, name: str, model: torch.nn.Module, recipe: dict) -> dict:
    """Train `model` with an AdamW recipe like MODEL1/MODEL2, --lr/--batch-size/--epochs winning."""
    args = ctx.args
    lr = args.lr or recipe["lr"]
    batch_size = args.batch_size or recipe["batch_size"]
    loaders = experiment.make_loaders(ctx, batch_size, recipe.get("augment"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=recipe.get("betas", (0.9, 0.999)),
                                  weight_decay=recipe["weight_decay"])
    scheduler = recipe["scheduler"](optimizer) if recipe.get("scheduler") else None
    return experiment.train_run(
        ctx, name, model, optimizer, loaders, epochs=args.epochs or recipe.get("epochs", MAX_EPOCHS),
        scheduler=scheduler, scheduler_interval=recipe.get("scheduler_interval", "epoch"),
        early_stop_count=EARLY_STOP_COUNT,
        recipe={k: str(v) for k, v in recipe.items()} | {"lr": lr, "batch_size": batch_size})


def get_args_parser():
    p = cli.make_parser(__doc__)
    p.add_argument("--model", choices=["1", "2", "both"], default="both",
                   help="which of the report's models to train (default: both)")
    return p


@exits_cleanly
def main(argv=None):
    args = cli.parse_args(get_args_parser(), argv)
    ctx = experiment.setup(args, "task3")
    results = {}
    if args.model in ("1", "both"):
        results["model1"] = train_model(ctx, "model1", Model1(), MODEL1)
    if args.model in ("2", "both"):
        results["model2"] = train_model(ctx, "model2", Model2(), MODEL2)
    if not ctx.is_main:
        return
    experiment.save_results(ctx, results)
    for name, r in results.items():
        print(tables.final_table(r, f"\nTable 3.b, {name.replace('model', 'Model ')} "
                                    f"({r['epochs_completed']:.1f} epochs, {ctx.splits.source}, "
                                    f"{r['device']}, {r['precision']})"))
    if "model1" in results:
        acc = 100 * results["model1"]["final"]["test"]["accuracy"]
        path = plotting.plot_run(results["model1"]["history"], ctx.figure_dir / "task3_figure2_model1.png",
                                 f"Figure 2: Model 1, final test accuracy {acc:.2f}%")
        print(f"wrote {path}")
    if len(results) == 2:
        accs = ", ".join(f"{k.replace('model', 'Model ')} {100 * v['final']['test']['accuracy']:.2f}%"
                         for k, v in results.items())
        path = plotting.plot_runs({k.replace("model", "Model "): v["history"] for k, v in results.items()},
                                  ctx.figure_dir / "task3_figure3_models.png",
                                  f"Figure 3: Model 1 vs Model 2 (test accuracy {accs})")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
