"""The report's figures and tables, one definition each, from finished runs (metrics.json with
its history): a script draws them after its runs, the report generator (report.py) from
results/, through the same function, so the same runs give the same figure.

A figure carries, in its PNG text chunk "Source", the SHA-256 of what it draws (the data, the
titles, the drawing function and the source of common/plotting.py): whether a committed figure
is current is then a comparison of digests, independent of the matplotlib build."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image

from . import plotting
from .data import CLASSES

# The report's studies: figure file and title (tasks 3c, 3d and 3e).
STUDY_FIGURES = {
    "task3c": ("task3c_variants.png", "Task 3c: Model 1 and each single change"),
    "task3e": ("task3e_figure5_improvements.png", "Figure 5: Model 1 and attempted improvements"),
}


@dataclass
class Figure:
    name: str            # the file name, in whichever folder it is drawn into
    plot: Callable       # the common.plotting function that draws it
    args: dict = field(default_factory=dict)

    def digest(self) -> str:
        code = Path(plotting.__file__).read_bytes()
        spec = json.dumps([self.plot.__name__, self.args, hashlib.sha256(code).hexdigest()])
        return "sha256:" + hashlib.sha256(spec.encode()).hexdigest()

    def draw(self, folder) -> Path:
        path = Path(folder) / self.name
        self.plot(path=path, **self.args, metadata={"Source": self.digest()})
        return path

    def is_current(self, folder) -> bool:
        try:
            with Image.open(Path(folder) / self.name) as image:
                return image.text.get("Source") == self.digest()
        except (OSError, ValueError):
            return False


# ---------------------------------------------------------------- what the figures say

def checks_only(run: dict) -> dict:
    """The history as results/ keeps it: one row per check, every value a float as history.csv
    reads back (no steps.csv is committed, so every figure draws the training loss through the
    per-check means): a run just trained and the same run read from disk draw alike."""
    return {"checks": [{k: float(v) for k, v in c.items()} for c in run["history"]["checks"]]}


def test_acc(run: dict) -> float:
    return 100 * run["final"]["test"]["accuracy"]


def budget(run: dict) -> str:
    """The epochs and early stopping a run was allowed (not what it used)."""
    recipe = run["config"]["recipe"]
    epochs, early = recipe["epochs"], recipe["patience"]
    return (f"up to {epochs} epochs, early stop after {early} checks" if early
            else f"{epochs} epochs, no early stopping")


def _curve(history: dict, seconds_key: str) -> tuple[list, list]:
    checks = history["checks"]
    return [c[seconds_key] for c in checks], [100 * c["test_accuracy"] for c in checks]


# ---------------------------------------------------------------- the figures

def figure1(cnn: dict) -> Figure:
    return Figure("task2_figure1.png", plotting.plot_run, {
        "history": checks_only(cnn),
        "title": f"Figure 1: the 1.g CNN, final test accuracy {test_acc(cnn):.2f}%"})


def figure2(run: dict, name: str) -> Figure:
    """Figure 2 is Model 1's; Model 2 gets the same plot."""
    prefix = "Figure 2: " if name == "model1" else ""
    return Figure(f"task3_figure2_{name}.png", plotting.plot_run, {
        "history": checks_only(run),
        "title": f"{prefix}{name.replace('model', 'Model ')}, final test accuracy "
                 f"{test_acc(run):.2f}%"})


def figure3(model1: dict, model2: dict) -> Figure:
    return Figure("task3_figure3_models.png", plotting.plot_runs, {
        "histories": {"Model 1": checks_only(model1), "Model 2": checks_only(model2)},
        "title": f"Figure 3: Model 1 vs Model 2 (test accuracy Model 1 {test_acc(model1):.2f}%, "
                 f"Model 2 {test_acc(model2):.2f}%)"})


def figure4(relu: dict, tanh: dict) -> Figure:
    return Figure("task3d_figure4_relu_vs_tanh.png", plotting.plot_runs, {
        "histories": {"ReLU (Model 1)": checks_only(relu), "TanH": checks_only(tanh)},
        "title": f"Figure 4: Model 1 with ReLU vs TanH, {budget(relu)} (test accuracy ReLU "
                 f"{test_acc(relu):.2f}%, TanH {test_acc(tanh):.2f}%)",
        "splits": ["train", "val"]})


def figure4_continued(relu: dict, tanh: dict) -> Figure:
    return Figure("task3d_figure4_tanh_13_epochs.png", plotting.plot_runs, {
        "histories": {"ReLU (Model 1)": checks_only(relu), "TanH": checks_only(tanh)},
        "title": f"TanH continued: {budget(tanh)} ({test_acc(tanh):.2f}%) vs ReLU "
                 f"(Model 1): {budget(relu)}, stopped after {relu['epochs_completed']:g} "
                 f"({test_acc(relu):.2f}%)",
        "splits": ["train", "val"]})


def study_figure(study: str, runs: dict[str, dict], descriptions: dict[str, str]) -> Figure:
    """A study's runs ({variant name: run}, the reference first: the baseline when there is
    one): test accuracy bars labelled with each change when every run is at most an epoch long
    (a bundle of two-point curves reads worse), else training and validation curves."""
    name, title = STUDY_FIGURES[study]
    reference = next(iter(runs))
    longest = max(r["epochs_completed"] for r in runs.values())
    if longest <= 1:
        accuracies = {descriptions.get(k, k): test_acc(r) for k, r in runs.items()}
        return Figure(name, plotting.plot_study_bars, {
            "accuracies": accuracies, "reference": descriptions.get(reference, reference),
            "title": f"{title}: test accuracy after {longest:g} epoch"})
    return Figure(name, plotting.plot_runs, {
        "histories": {k: checks_only(r) for k, r in runs.items()},
        "title": title, "splits": ["train", "val"]})


def speedrun_vs_time(seeds: list[dict], model1: dict | None) -> Figure:
    """The speed-run's seeds (and a finished Model 1 run) on one time basis: seconds since the
    run began, training plus the evaluations made so far."""
    curves = {f"speed-run, seed {s['seed']}": _curve(s["history"], "wall_time_s") for s in seeds}
    note = ("Seconds since the run began, training plus the evaluations made so far (speed-run: "
            "the test set after each epoch, accuracy without test-time augmentation")
    if model1 is not None:
        curves["Model 1, report recipe"] = _curve(model1["history"], "wall_time_s")
        note += "; Model 1: validation and test sets at each of its checks"
    runs = seeds + ([model1] if model1 else [])
    where = sorted({f"{r['device']}, {r['precision']}" for r in runs})
    return Figure("task3e_speedrun_accuracy_vs_time.png", plotting.plot_accuracy_vs_time, {
        "curves": curves, "title": "Speed-run recipe vs Model 1: test accuracy against time",
        "xlabel": "seconds since the run began (training + evaluations so far)",
        "note": f"{note}). {'; '.join(where)}."})


def speedrun_vs_published(side: dict) -> Figure:
    """The frontier: the published script and our recipe, each at several epoch budgets, test
    accuracy with TTA against the time both count (the side-by-side's `frontier`)."""
    def points(runs, who):
        return [{"seconds": r["seconds"], "accuracy": r["test_acc_tta"], "std": r.get("std", 0),
                 "label": f"{r['epochs']:g} ep" + (f", {r['n']} seeds" if who else "")}
                for r in runs]
    machine = side["machine"]
    return Figure("task3e_speedrun_vs_published.png", plotting.plot_frontier, {
        "series": {"published airbench94_muon, CPU port (1 run each)":
                   points(side["frontier"]["published"], False),
                   "ours, the speed-run recipe (mean +- std over seeds)":
                   points(side["frontier"]["ours"], True)},
        "title": "Speed-run recipe vs the published airbench94_muon, one machine, in turn",
        "note": f"{machine['cpu']}, {machine['threads']} threads, {side['precision']}; JPEG copy "
                "of CIFAR-10; per-epoch evaluations not counted."})


def confusion_figure(run: dict, rows: list[dict], name: str = "confusion.png") -> Figure:
    """The test set's confusion matrix of a finished run (its confusion.csv rows)."""
    total = sum(int(float(row[row["class"]])) for row in rows)
    count = sum(int(float(row[c])) for row in rows for c in CLASSES)
    scored = "with TTA" if "test_tta" in run["final"] else "best weights"
    return Figure(name, plotting.plot_confusion, {
        "rows_or_matrix": rows,
        "title": f"{run['run']}: test set, {scored} ({100 * total / max(count, 1):.2f} % "
                 "correct)"})


def figure6(run: dict, name: str, weights: str, image_size: int) -> Figure:
    return Figure(f"task4a_figure6_{name}.png", plotting.plot_run, {
        "history": checks_only(run),
        "title": f"Figure 6: ResNet18 with {weights}, layer4 + fc trained, {image_size} px, "
                 f"final test accuracy {test_acc(run):.2f}%"})


# ---------------------------------------------------------------- printed tables

SPLIT_NAMES = (("train", "Training"), ("validation", "Validation"), ("test", "Test"))


def final_table(result: dict, title: str | None = None) -> str:
    """The report's Table 2.b / 3.b layout for one run."""
    lines = [title] if title else []
    lines.append(f"{'-':<12}{'Loss':>8}{'Accuracy':>11}")
    for key, name in SPLIT_NAMES:
        if key in result["final"]:
            row = result["final"][key]
            lines.append(f"{name:<12}{row['loss']:>8.4f}{100 * row['accuracy']:>10.2f}%")
    return "\n".join(lines)


COMPARISON_COLUMNS = ("run", "train_accuracy", "val_accuracy", "test_accuracy", "test_loss",
                      "epochs", "stopped_early", "wall_time_s", "note")


def comparison_rows(results: dict[str, dict]) -> list[dict]:
    """One row per run: final accuracies, epochs until the stop, wall time; a run that
    diverged ({"diverged": message}) gets a row that says so."""
    rows = []
    for name, r in results.items():
        if "diverged" in r:
            rows.append(dict.fromkeys(COMPARISON_COLUMNS, "") | {"run": name, "note": "diverged"})
            continue
        f = r["final"]
        rows.append({
            "run": name,
            "train_accuracy": round(100 * f["train"]["accuracy"], 2),
            "val_accuracy": round(100 * f["validation"]["accuracy"], 2),
            "test_accuracy": round(100 * f["test"]["accuracy"], 2),
            "test_loss": round(f["test"]["loss"], 4),
            "epochs": r["epochs_completed"],
            "stopped_early": r["stopped_early"],
            "wall_time_s": round(r["train_wall_time_s"], 1),
            "note": r.get("note", ""),
        })
    return rows


def format_rows(rows: list[dict]) -> str:
    if not rows:
        return ""
    keys = list(rows[0].keys())
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    out = ["  ".join(k.ljust(widths[k]) for k in keys)]
    out += ["  ".join(str(r[k]).ljust(widths[k]) for k in keys) for r in rows]
    return "\n".join(out)
