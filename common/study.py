"""Ablation studies (tasks 3c-3e): Model 1 against single changes, one run each, one table
and one comparison figure."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from . import experiment, plotting, tables
from .errors import DivergenceError, UserError
from .io import save_csv
from .models import Model1
from .recipe import Recipe, train_recipe


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    model_kwargs: dict = field(default_factory=dict)     # changes to Model1(...)
    recipe_changes: dict = field(default_factory=dict)   # changes to the base Recipe


def make_parser(description: str, variants: dict[str, Variant]):
    """The common options plus the study's: --variants and --reuse-baseline."""
    from .cli import make_parser as common_parser
    p = common_parser(description)
    p.add_argument("--variants", metavar="A,B,...", default=None,
                   help="comma-separated variants to run, in that order (default: all): "
                        + ", ".join(variants))
    p.add_argument("--reuse-baseline", metavar="RUN_DIR", default=None,
                   help="take the baseline from a finished run folder (e.g. outputs/task3/model1) "
                        "instead of training it again; it should have the same epoch budget")
    return p


def select(variants: dict[str, Variant], spec: str | None) -> list[Variant]:
    """--variants a,b,c -> those variants (all when not given); unknown names are an error."""
    if not spec:
        return list(variants.values())
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in variants]
    if unknown:
        raise UserError(f"unknown variant(s) {', '.join(unknown)}; choose from "
                        f"{', '.join(variants)}")
    return [variants[n] for n in names]


def run_study(ctx, variants: list[Variant], base: Recipe, *, baseline_dir=None,
              figure_name: str, figure_title: str, table_note: str = "") -> dict:
    """Train every variant (the baseline may be loaded from a finished run), then write the
    comparison table (CSV + printed) and figure. A diverging variant is a result, not a crash."""
    results = {}
    for v in variants:
        if v.name == "baseline" and baseline_dir:
            results[v.name] = experiment.load_finished_run(baseline_dir) | {"note": f"loaded from {baseline_dir}"}
            continue
        recipe = dataclasses.replace(base, **v.recipe_changes)
        try:
            results[v.name] = train_recipe(ctx, v.name, lambda: Model1(**v.model_kwargs), recipe)
        except DivergenceError as err:
            if ctx.is_main:
                print(f"{v.name}: diverged: {err}")
            results[v.name] = {"diverged": str(err)}
    if not ctx.is_main:
        return results
    finished = {k: r for k, r in results.items() if "final" in r}
    experiment.save_results(ctx, finished, "results")
    rows = tables.comparison_rows(results)
    descriptions = {v.name: v.description for v in variants}
    for row in rows:
        row["change"] = descriptions.get(row["run"], "")
    save_csv(rows, ctx.output_root / "results.csv")
    print(f"\n{figure_title}" + (f" ({table_note})" if table_note else ""))
    print(tables.format_rows(rows))
    if finished:
        path = plotting.plot_runs({k: r["history"] for k, r in finished.items()},
                                  ctx.figure_dir / figure_name, figure_title,
                                  splits=("train", "val"))
        print(f"wrote {path}")
    return results
