"""The report's figures and tables, one definition each, from finished runs (metrics.json with
its history): a script draws them after its runs, the report generator (report.py) from
results/, through the same function, so the same runs give the same figure.

A figure carries, in its PNG text chunks, the SHA-256 of what it draws ("Source": the data, the
titles, the drawing function and the source of common/plotting.py) and of what it shows
("Pixels": its decoded RGBA pixels and size, taken from the file just written). A committed
figure is current when its Source is what it would draw now and its own pixels, decoded again,
still digest to its Pixels: a figure swapped for another, chunks kept, reads stale."""
from __future__ import annotations

import hashlib
import io
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from . import plotting
from .files import save_bytes

# The report's studies: figure file and title (tasks 3c, 3d and 3e).
STUDY_FIGURES = {
    "task3c": ("task3c_variants.png", "Task 3c: Model 1 and each single change"),
    "task3e": ("task3e_figure5_improvements.png", "Figure 5: Model 1 and attempted improvements"),
}


@dataclass
class Figure:
    name: str            # the file name, in whichever folder it is drawn into
    plot: Callable       # the common.plotting function that draws it
    args: dict

    def digest(self) -> str:
        code = hashlib.sha256(Path(plotting.__file__).read_bytes()).hexdigest()
        spec = json.dumps([self.plot.__name__, self.args, code])
        return "sha256:" + hashlib.sha256(spec.encode()).hexdigest()

    def draw(self, folder) -> Path:
        path = Path(folder) / self.name
        self.plot(path=path, **self.args)
        # what the figure shows, read back from the file itself, and what it draws, in its text
        # chunks: the same pixels re-encoded
        with Image.open(path) as image:
            chunks = PngInfo()
            chunks.add_text("Source", self.digest())
            chunks.add_text("Pixels", pixel_digest(image))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", pnginfo=chunks)
        save_bytes(buffer.getvalue(), path)
        return path

    def problem(self, folder) -> str | None:
        """Why the figure in folder is not current (None when it is): missing, drawn from other
        inputs or code, or showing other pixels than were drawn (swapped, edited)."""
        path = Path(folder) / self.name
        if not path.is_file():
            return "missing"
        try:
            with Image.open(path) as image:
                if image.text.get("Source") != self.digest():
                    return "drawn from other inputs or code"
                if image.text.get("Pixels") != pixel_digest(image):
                    return "shows other pixels than were drawn (swapped or edited)"
        except (OSError, ValueError):  # not a PNG, truncated: stale, redrawn
            return "not a readable PNG"
        return None


def pixel_digest(image: Image.Image) -> str:
    """What a figure shows: SHA-256 of its size and decoded RGBA pixels (not its bytes: the
    PNG encoder and the text chunks do not count)."""
    rgba = image.convert("RGBA")
    size = f"{rgba.width}x{rgba.height}".encode()
    return "sha256:" + hashlib.sha256(size + rgba.tobytes()).hexdigest()


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
    epochs = f"{recipe['epochs']} epoch{'' if recipe['epochs'] == 1 else 's'}"
    return (f"up to {epochs}, early stop after {recipe['patience']} checks"
            if recipe["patience"] else f"{epochs}, no early stopping")


def format_epochs(epochs: float) -> str:
    """An epoch count as the checks say it: a run stopped at step 5,273 of 703 per epoch is at
    epoch 7.5, not 7.5007 (metrics.json keeps step / steps per epoch to 4 places)."""
    return f"{round(epochs, 2):g}"


def trial(run: dict) -> str | None:
    """What a trial run (--quick, --subset) trained on, "1,000 images per split, 1 epoch"; None
    for a run on every image."""
    config = run["config"]
    if config["subset"] is None:
        return None
    epochs = config["recipe"]["epochs"]
    return f"{config['subset']:,} images per split, {epochs:g} epoch{'' if epochs == 1 else 's'}"


def trial_title(title: str, runs: list[dict]) -> str:
    """A figure's title, and a second line when its runs are trial runs: a figure of 1,000
    images is never mistaken for the report's. A full run's title is left as it is."""
    trials = {trial(r) for r in runs}
    if trials <= {None}:  # none, or only full runs
        return title
    beside = "; other runs on every image" if None in trials else ""
    return f"{title}\ntrial run: {'; '.join(sorted(trials - {None}))}{beside} (not a full run)"


def seed_spread(stats: dict, n: int) -> str:
    """The spread over n seeds of one statistic (speedrun.summarize's mean, std, min, max), in
    words: a sample standard deviation needs two seeds."""
    if n < 2:
        return "one seed: no spread"
    return (f"sample sd {stats['std']:.2f} over {n} seeds, range {stats['min']:.2f}-"
            f"{stats['max']:.2f}")


# ---------------------------------------------------------------- the figures

def figure1(cnn: dict) -> Figure:
    return Figure("task2_figure1.png", plotting.plot_run, {
        "history": checks_only(cnn),
        "title": trial_title(f"Figure 1: the 1.g CNN, final test accuracy {test_acc(cnn):.2f}%",
                             [cnn])})


def figure2(run: dict, name: str) -> Figure:
    """Figure 2 is Model 1's; Model 2 gets the same plot."""
    prefix = "Figure 2: " if name == "model1" else ""
    return Figure(f"task3_figure2_{name}.png", plotting.plot_run, {
        "history": checks_only(run),
        "title": trial_title(f"{prefix}{name.replace('model', 'Model ')}, final test accuracy "
                             f"{test_acc(run):.2f}%", [run])})


def figure3(model1: dict, model2: dict) -> Figure:
    return Figure("task3_figure3_models.png", plotting.plot_runs, {
        "histories": {"Model 1": checks_only(model1), "Model 2": checks_only(model2)},
        "title": trial_title(f"Figure 3: Model 1 vs Model 2 (test accuracy Model 1 "
                             f"{test_acc(model1):.2f}%, Model 2 {test_acc(model2):.2f}%)",
                             [model1, model2])})


def figure4(relu: dict, tanh: dict) -> Figure:
    return Figure("task3d_figure4_relu_vs_tanh.png", plotting.plot_runs, {
        "histories": {"ReLU (Model 1)": checks_only(relu), "TanH": checks_only(tanh)},
        "title": trial_title(f"Figure 4: Model 1 with ReLU vs TanH, {budget(relu)} (test "
                             f"accuracy ReLU {test_acc(relu):.2f}%, TanH {test_acc(tanh):.2f}%)",
                             [relu, tanh]),
        "splits": ["train", "val"]})


def figure4_continued(relu: dict, tanh: dict) -> Figure:
    return Figure("task3d_figure4_tanh_13_epochs.png", plotting.plot_runs, {
        "histories": {"ReLU (Model 1)": checks_only(relu), "TanH": checks_only(tanh)},
        "title": trial_title(f"TanH continued: {budget(tanh)} ({test_acc(tanh):.2f}%) vs ReLU "
                             f"(Model 1): {budget(relu)}, stopped after "
                             f"{format_epochs(relu['epochs_completed'])} ({test_acc(relu):.2f}%)",
                             [relu, tanh]),
        "splits": ["train", "val"]})


def figure6(run: dict, name: str, weights: str, image_size: int) -> Figure:
    return Figure(f"task4a_figure6_{name}.png", plotting.plot_run, {
        "history": checks_only(run),
        "title": trial_title(f"Figure 6: ResNet18 with {weights}, layer4 + fc trained, "
                             f"{image_size} px, final test accuracy {test_acc(run):.2f}%",
                             [run])})


def study_figure(study: str, runs: dict[str, dict], descriptions: dict[str, str],
                 spread: dict | None = None) -> Figure:
    """A study's runs ({variant name: run}, the reference first: the baseline when there is
    one), each change coloured by its verdict (plotting.VERDICT_COLORS): its test accuracy
    beyond the run-to-run spread above the reference's (beat) or below it (lost), else a tie,
    whichever its sign (spread: {"points", "what"}, the spread and where it was measured;
    without one, a change is only above or below). Bars labelled with each change when every
    run is at most an epoch long (a bundle of two-point curves reads worse), else one panel
    per change, its training and validation curves over the reference's (the test set is not
    what a study chooses by: it is in the panel's title)."""
    name, title = STUDY_FIGURES[study]
    reference = next(iter(runs))
    base = test_acc(runs[reference])
    points = spread["points"] if spread else 0.0
    changes = {k: test_acc(r) - base for k, r in runs.items() if k != reference}
    verdicts = {k: "tie" if abs(d) <= points else "beat" if d > 0 else "lost"
                for k, d in changes.items()}
    label = {k: descriptions.get(k, k) for k in runs}
    ref = label[reference]
    words = ({"beat": f"above {ref} (no run-to-run spread given)", "tie": f"level with {ref}",
              "lost": f"below {ref}"} if spread is None else
             {"beat": f"above {ref} by more than the run-to-run spread ({points:.2f} points, "
                      f"{spread['what']})",
              "tie": "within the spread: a tie", "lost": "below it by more than the spread"})
    every = list(runs.values())
    longest = max(r["epochs_completed"] for r in every)
    if longest <= 1:
        return Figure(name, plotting.plot_study_bars, {
            "accuracies": {label[k]: test_acc(r) for k, r in runs.items()}, "reference": ref,
            "verdicts": {label[k]: v for k, v in verdicts.items()},
            "verdict_words": words, "spread": points,
            "title": trial_title(f"{title}: test accuracy after {longest:g} epoch", every)})
    # a panel's verdict in a few words (the legend gives the spread)
    short = {"beat": "above, beyond the spread", "tie": "within the spread: a tie",
             "lost": "below, beyond the spread"} if spread else words
    return Figure(name, plotting.plot_study_panels, {
        "reference": reference, "histories": {k: checks_only(r) for k, r in runs.items()},
        "panel_titles": {k: f"{k}: test {test_acc(runs[k]):.2f} % ({d:+.2f})\n{short[verdicts[k]]}"
                         for k, d in changes.items()},
        "verdicts": verdicts, "verdict_words": words, "splits": ["train", "val"],
        "title": trial_title(f"{title} (black in every panel: {reference}, test {base:.2f} %)",
                             every)})


# A span between two checks this many times the run's median span is not its training's pace
# (another program on the CPU): the figure marks it
STALL_FACTOR = 3


def stalls(name: str, seconds: list[float]) -> list[dict]:
    """The spans of one curve's checks that took STALL_FACTOR times their median or more."""
    spans = list(zip([0.0, *seconds[:-1]], seconds))
    if len(spans) < 3:
        return []
    median = statistics.median(b - a for a, b in spans)
    return [{"curve": name, "start": a, "end": b,
             "label": f"{name.split(',')[0]}: {b - a:.0f} s between two checks\n"
                      f"(median {median:.0f} s): not its training's pace"}
            for a, b in spans if b - a >= STALL_FACTOR * median]


def speedrun_vs_time(seeds: list[dict], model1: dict | None) -> Figure:
    """The speed-run's seeds (and a finished Model 1 run) on one time basis: seconds since the
    run began, training plus the evaluations made so far; a span between two checks far
    slower than the run's median (stalls) is marked. A Model 1 run on other images than the
    seeds (a full run beside a --quick try) is left out, and the note says so."""
    def curve(run):
        checks = run["history"]["checks"]
        return [c["wall_time_s"] for c in checks], [100 * c["test_accuracy"] for c in checks]
    curves = {f"speed-run, seed {s['seed']}": curve(s) for s in seeds}
    note = ("Seconds since the run began, training plus the evaluations made so far (speed-run: "
            "the test set after each epoch, accuracy without test-time augmentation")
    left_out = ""
    if model1 is not None and {model1["config"]["subset"]} != {s["config"]["subset"] for s in seeds}:
        left_out = (f" Model 1 ({model1['run']}) left out: it trained on "
                    f"{trial(model1) or 'every image'}, the speed-run on "
                    f"{trial(seeds[0]) or 'every image'}.")
        model1 = None
    runs, title = seeds, "Speed-run recipe"
    if model1 is not None:
        curves["Model 1, report recipe"] = curve(model1)
        note += "; Model 1: validation and test sets at each of its checks"
        runs, title = seeds + [model1], "Speed-run recipe vs Model 1"
    where = "; ".join(sorted({f"{r['device']}, {r['precision']}" for r in runs}))
    return Figure("task3e_speedrun_accuracy_vs_time.png", plotting.plot_accuracy_vs_time, {
        "curves": curves, "title": trial_title(f"{title}: test accuracy against time", runs),
        "xlabel": "seconds since the run began (training + evaluations so far)",
        "stalls": [s for name, (seconds, _) in curves.items() for s in stalls(name, seconds)],
        "note": f"{note}). {where}.{left_out}"})


def speedrun_vs_published(side: dict) -> Figure:
    """The frontier: the published script and our recipe, each at several epoch budgets, test
    accuracy with TTA against the time both count (the side-by-side's `frontier`). The title
    says one machine only where every published run's machine record is our seeds' CPU
    (report.py refuses one that is not); else the note says which side has no record."""
    def points(runs, seeds):
        return [{"seconds": r["seconds"], "accuracy": r["test_acc_tta"], "std": r.get("std", 0),
                 "label": f"{r['epochs']:g} ep"
                          + (f", {r['n']} seed{'s' if r['n'] > 1 else ''}" if seeds else "")}
                for r in runs]
    machine, published, ours = side["machine"], side["frontier"]["published"], side["frontier"]["ours"]
    seeds = sorted({r["n"] for r in ours})
    spread = ("one seed each: no spread" if seeds == [1] else
              f"mean ± sample sd over {seeds[0]} seeds" if len(seeds) == 1 else
              "mean ± sample sd over the seeds beside each point")
    recorded = all(p["machine_recorded"] for p in published)
    where = ("one machine" if recorded else
             "ours on the machine below; the published runs' logs hold no machine record")
    return Figure("task3e_speedrun_vs_published.png", plotting.plot_frontier, {
        "series": {"published airbench94_muon, CPU port (1 run each)": points(published, False),
                   f"ours, the speed-run recipe ({spread})": points(ours, True)},
        "title": f"Speed-run recipe vs the published airbench94_muon, run in turn\n({where})",
        "note": f"Ours: {machine['cpu']}, {machine['threads']} threads, {side['precision']}"
                + ("" if recorded else "; the published side: machine not recorded")
                + "; JPEG copy of CIFAR-10; per-epoch evaluations not counted."})


def confusion_figure(run: dict, rows: list[dict], name: str = "confusion.png") -> Figure:
    """The test set's confusion matrix of a finished run (its confusion.csv rows), titled with
    the script and run, the precision and the images it trained on: the fp32 and bf16 runs
    of one model differ by more than a number."""
    matrix = plotting.confusion_matrix(rows)
    scored = "with TTA" if "test_tta" in run["final"] else "best weights"
    trained = f"trial run: {trial(run)}" if trial(run) else "full run"
    return Figure(name, plotting.plot_confusion, {
        "rows_or_matrix": rows,
        "title": f"{run['config']['task']} {run['run']}, {run['precision']}, {trained}: test "
                 f"set, {scored} ({100 * matrix.trace() / max(matrix.sum(), 1):.2f} % correct)"})


# ---------------------------------------------------------------- printed tables

def final_table(result: dict, title: str | None = None) -> str:
    """The report's Table 2.b / 3.b layout for one run."""
    final = result["final"]
    lines = [title] if title else []
    lines.append(f"{'-':<12}{'Loss':>8}{'Accuracy':>11}")
    lines += [f"{name:<12}{final[key]['loss']:>8.4f}{100 * final[key]['accuracy']:>10.2f}%"
              for key, name in (("train", "Training"), ("validation", "Validation"),
                                ("test", "Test")) if key in final]
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
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in rows[0]}
    header = dict(zip(widths, widths))  # each column's name over it
    return "\n".join("  ".join(str(r[k]).ljust(w) for k, w in widths.items())
                     for r in [header, *rows])
