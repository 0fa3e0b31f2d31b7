"""Ablation studies (tasks 3c-3e): Model 1 against single changes, one run each, one table
and one comparison figure."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from . import experiment, plotting, tables
from .errors import DivergenceError
from .io import save_csv
from .models import Model1
from .recipes import Recipe
from .rundir import RunDir


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    model_kwargs: dict = field(default_factory=dict)     # changes to Model1(...)
    recipe_changes: dict = field(default_factory=dict)   # changes to the base Recipe


def run_study(session: experiment.Session, variants: list[Variant], base: Recipe, *,
              baseline_dir=None, figure_name: str, figure_title: str, table_note: str = "") -> dict:
    """Train every variant (the baseline may be loaded from a finished run), then write the
    comparison table (CSV + printed) and figure: test accuracy bars against the first variant's
    when every run is at most an epoch long, else the curves. A diverging variant is a result,
    not a crash."""
    results = {}
    for v in variants:
        if v.name == "baseline" and baseline_dir:
            results[v.name] = (RunDir(baseline_dir).load_finished()
                               | {"note": f"loaded from {baseline_dir}"})
            continue
        recipe = dataclasses.replace(base, **v.recipe_changes)
        try:
            results[v.name] = experiment.train_recipe(session, v.name,
                                                      lambda: Model1(**v.model_kwargs), recipe)
        except DivergenceError as err:
            if session.is_main:
                print(f"{v.name}: diverged: {err}")
            results[v.name] = {"diverged": str(err)}
    if not session.is_main:
        return results
    finished = {k: r for k, r in results.items() if "final" in r}
    experiment.save_results(session, finished, "results")
    rows = tables.comparison_rows(results)
    descriptions = {v.name: v.description for v in variants}
    for row in rows:
        row["change"] = descriptions.get(row["run"], "")
    save_csv(rows, session.output_root / "results.csv")
    path = None
    if finished and max(r["epochs_completed"] for r in finished.values()) <= 1:
        # a study of short runs: one bar per variant beats a bundle of two-point curves
        accuracies = {k: 100 * r["final"]["test"]["accuracy"] for k, r in finished.items()}
        path = plotting.plot_study_bars(accuracies, next(iter(accuracies)),
                                        session.figure_dir / figure_name, figure_title)
    elif finished:
        path = plotting.plot_runs({k: r["history"] for k, r in finished.items()},
                                  session.figure_dir / figure_name, figure_title,
                                  splits=("train", "val"))
    print(f"\n{figure_title}" + (f" ({table_note})" if table_note else ""))
    print(tables.format_rows(rows))
    if path:
        print(f"wrote {path}")
    return results
