"""The figures: loss and accuracy curves (report Figures 1-5), a study's bar chart, test accuracy
against time and the confusion matrix, saved as PNG (the same inputs give the same bytes)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from .data import CLASSES  # noqa: E402
from .files import save_figure  # noqa: E402

STEP_CURVE = "training loss: per step, smoothed"
CHECK_CURVE = "training loss: mean over the steps between two checks"
LINE_STYLES = {"train": "-", "val": "--", "test": ":"}
CURVE_LABELS = {"train": "training", "val": "validation", "test": "test"}
# A change against the reference run: beyond the run-to-run spread above or below it, or within
# it (a tie, whichever its sign). common.results.study_figure decides which.
VERDICT_COLORS = {"beat": "tab:green", "tie": "goldenrod", "lost": "tab:red"}

# Each function draws one figure into path and closes it (common.results.Figure stamps the
# file with what it draws and shows).


def plot_run(history: dict, path, title: str):
    """Loss and accuracy of one run, a colour per split and a legend in each panel: validation
    and test per check; training per step (smoothed) when the history has step losses, else
    per check."""
    _curves({"": history}, path, title, ("train", "val", "test"), keyed=False)


def plot_runs(histories: dict[str, dict], path, title: str, splits=("train", "val", "test")):
    """Several runs in one figure, a colour per run and the key below the panels (report
    Figures 3-5)."""
    _curves(histories, path, title, splits, keyed=True)


def _curves(histories, path, title, splits, keyed):
    """plot_run's and plot_runs' figure. Training loss per step only when every run has step
    losses: a figure never mixes the two kinds of curve, and its title says which it shows."""
    per_step = all(h.get("step_loss") for h in histories.values())
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(13, 5) if keyed else (12, 4.5))
    # the default cycle has 10 colours: a study of 11 variants would draw two runs alike
    cycle = (plt.rcParams["axes.prop_cycle"].by_key()["color"] if len(histories) <= 10
             else [plt.get_cmap("tab20")(i) for i in range(20)])
    colors = {name: cycle[i % len(cycle)] for i, name in enumerate(histories)}
    for name, history in histories.items():
        checks = history["checks"]
        epochs = [c["epoch"] for c in checks]
        for split in splits:
            # one run: the default colours, one per split
            kw = {"linestyle": LINE_STYLES[split], "color": colors[name] if keyed else None}
            label = f"{name}: {CURVE_LABELS[split]}" if keyed else CURVE_LABELS[split]
            if split == "train" and per_step:
                last = checks[-1] if checks else None
                per_epoch = last["step"] / last["epoch"] if last and last["epoch"] else 1.0
                window = max(1, int(per_epoch // 20))
                losses = np.asarray(history["step_loss"], dtype=float)
                if len(losses) >= window:
                    losses = np.convolve(losses, np.ones(window) / window, mode="valid")
                ax_loss.plot((np.arange(len(losses)) + window) / per_epoch, losses,
                             label=f"{label} loss", alpha=0.8, **kw)
            else:
                ax_loss.plot(epochs, [c[f"{split}_loss"] for c in checks], marker=".",
                             label=f"{label} loss", **kw)
            ax_acc.plot(epochs, [100 * c[f"{split}_accuracy"] for c in checks], marker=".",
                        label=f"{label} accuracy", **kw)
    ax_loss.set_ylabel("cross-entropy loss")
    ax_acc.set_ylabel("accuracy (%)")
    if "train" in splits:
        ax_loss.set_title(STEP_CURVE if per_step else CHECK_CURVE, fontsize=9)
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if not keyed:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    if keyed:  # below the panels, off the curves: five runs would list ten curves in each
        runs = [Line2D([], [], color=c, marker=".", label=name) for name, c in colors.items()]
        fig.legend(handles=runs, loc="upper right", bbox_to_anchor=(0.58, 0.0), fontsize=8,
                   ncol=1 if len(runs) <= 6 else 2, title="run (colour)", title_fontsize=8)
        fig.legend(handles=[Line2D([], [], color="black", linestyle=LINE_STYLES[s],
                                   label=CURVE_LABELS[s]) for s in splits],
                   loc="upper left", bbox_to_anchor=(0.6, 0.0), fontsize=8,
                   title="curve (line style)", title_fontsize=8)
    save_figure(fig, path)
    plt.close(fig)


def _accuracy_bars(ax, labels, values, reference, reference_label, colors, notes, xlabel,
                   band=0.0):
    """Horizontal accuracy bars (%), top to bottom in the given order, a dashed line at the
    reference value (named above the plot where no bar is) and, with band, the reference ±
    band shaded. Each bar's note sits in one column right of every bar and of the line, so
    that no note crosses the line, however near the reference a bar ends."""
    y = np.arange(len(labels))[::-1]
    if band:
        ax.axvspan(reference - band, reference + band, color="0.85", zorder=0)
    ax.barh(y, values, color=colors, alpha=0.8)
    ax.axvline(reference, color="black", linestyle="--", linewidth=1)
    ax.annotate(f"dashed: {reference_label}", (reference, 1), xycoords=("data", "axes fraction"),
                xytext=(0, 3), textcoords="offset points", ha="center", va="bottom", fontsize=8)
    column = max(*values, reference + band) + 2
    for yi, note in zip(y, notes):
        ax.text(column, yi, note, va="center", fontsize=8)
    ax.set_yticks(y, labels)
    # room for the notes: about 1.1 % of the axis per character at this size
    ax.set_xlim(0, column + max(12.0, 1.1 * max(map(len, notes))))
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)


def _verdict_legend(fig, words, first, ncol):
    """The key of the verdict colours ({verdict: its words}) at the bottom of the figure,
    after `first` (other handles: the line styles, the shaded band)."""
    handles = [Patch(color=VERDICT_COLORS[v], alpha=0.8, label=w) for v, w in words.items()]
    fig.legend(handles=first + handles, fontsize=8, loc="lower center",
               bbox_to_anchor=(0.5, 0.0), ncol=ncol)


def plot_study_bars(accuracies: dict[str, float], reference: str, path, title: str, *,
                    verdicts: dict[str, str], verdict_words: dict[str, str], spread: float):
    """One bar per run (test accuracy, %) and a line at the reference run's (a key of
    accuracies), the reference ± spread shaded: each change coloured by its verdict against
    that spread (verdicts: {run: beat / tie / lost}), so a tie does not read as a loss."""
    ref = accuracies[reference]
    fig, ax = plt.subplots(figsize=(10, 0.42 * len(accuracies) + 2.2))
    _accuracy_bars(ax, list(accuracies), list(accuracies.values()), ref,
                   f"{reference}: {ref:.2f} %",
                   ["tab:gray" if n == reference else VERDICT_COLORS[verdicts[n]]
                    for n in accuracies],
                   [f"{v:.2f} %" + ("" if n == reference else f" ({v - ref:+.2f})")
                    for n, v in accuracies.items()], "test accuracy (%)", band=spread)
    _verdict_legend(fig, verdict_words, [Patch(color="0.85", label="the reference ± the "
                                               "spread")] if spread else [], ncol=1)
    ax.set_title(title, pad=16)  # above the reference line's name
    fig.tight_layout(rect=(0, 0.15, 1, 1))
    save_figure(fig, path)
    plt.close(fig)


def plot_study_panels(reference: str, histories: dict[str, dict], path, title: str, *,
                      panel_titles: dict[str, str], verdicts: dict[str, str],
                      verdict_words: dict[str, str], splits):
    """Small multiples: one column per change, its loss (top) and accuracy (bottom) per check
    against the reference run's in black, the change in its verdict's colour; the rows share
    their axes, so the columns compare at a glance and no curve hides the reference's."""
    changes = [n for n in histories if n != reference]
    fig, axes = plt.subplots(2, len(changes), figsize=(3.6 * len(changes) + 1, 7.4),
                             sharex=True, sharey="row", squeeze=False)
    for column, name in enumerate(changes):
        ax_loss, ax_acc = axes[:, column]
        for run, color in ((reference, "black"), (name, VERDICT_COLORS[verdicts[name]])):
            checks = histories[run]["checks"]
            epochs = [c["epoch"] for c in checks]
            for s in splits:
                kw = {"marker": ".", "linestyle": LINE_STYLES[s], "color": color}
                ax_loss.plot(epochs, [c[f"{s}_loss"] for c in checks], **kw)
                ax_acc.plot(epochs, [100 * c[f"{s}_accuracy"] for c in checks], **kw)
        ax_loss.set_title(panel_titles[name], fontsize=8.5)
        ax_acc.set_xlabel("epoch")
        ax_loss.grid(alpha=0.3)
        ax_acc.grid(alpha=0.3)
    axes[0, 0].set_ylabel(f"cross-entropy loss\n({CHECK_CURVE.split(': ')[1]})", fontsize=9)
    axes[1, 0].set_ylabel("accuracy (%)")
    styles = [Line2D([], [], color="black", label=f"{reference} (every panel)")] + [
        Line2D([], [], color="gray", linestyle=LINE_STYLES[s], label=CURVE_LABELS[s])
        for s in splits]
    _verdict_legend(fig, verdict_words, styles, ncol=2)  # a column of each
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    save_figure(fig, path)
    plt.close(fig)


def _seconds_axes(fig, ax, path, title, note, xlabel, ylabel, loc="best"):
    """The frame of a figure of accuracy against seconds, and under it the note, if any."""
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc=loc)
    if note:
        fig.text(0.01, 0.0, note, fontsize=7.5, va="top", wrap=True)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def plot_accuracy_vs_time(curves: dict[str, tuple[list, list]], path, title: str, *,
                          xlabel: str, note: str | None, stalls: list[dict]):
    """Test accuracy (%) against seconds, one line per run: {label: (s, acc)}. All curves
    must share one time basis; xlabel says which, note adds what a reader needs beside it.
    stalls: [{"curve", "start", "end", "label"}], a span of one curve's time that is not
    its training's (another program on the CPU), shaded in its colour and named on the plot."""
    fig, ax = plt.subplots(figsize=(8, 5.4 if note else 5))
    colors = {name: ax.plot(*curve, marker=".", label=name)[0].get_color()
              for name, curve in curves.items()}
    for stall in stalls:
        color = colors[stall["curve"]]
        ax.axvspan(stall["start"], stall["end"], color=color, alpha=0.12)
        ax.annotate(stall["label"], ((stall["start"] + stall["end"]) / 2, 0.03),
                    xycoords=("data", "axes fraction"), ha="center", va="bottom", fontsize=7.5,
                    color=color, wrap=True)
    _seconds_axes(fig, ax, path, title, note, xlabel, "test accuracy (%)")


def plot_frontier(series: dict[str, list[dict]], path, title: str, *, note: str | None):
    """Accuracy against seconds, one line per method through its budgets: {label: [{"seconds",
    "accuracy", "std" (error bar, optional), "label" (written beside the point)}]}. The first
    series' labels sit below and right of its points, the second's above and left (beside the
    vertical error bars, off the lines that rise to the right): list the series so that the
    second lies up and left of the first, as a faster method's does."""
    fig, ax = plt.subplots(figsize=(8, 5.4 if note else 5))
    for index, (name, points) in enumerate(series.items()):
        side = -1 if index % 2 else 1
        points = sorted(points, key=lambda p: p["seconds"])
        ax.errorbar([p["seconds"] for p in points], [p["accuracy"] for p in points],
                    yerr=[p.get("std", 0.0) for p in points], marker="o", capsize=3, label=name)
        for p in points:
            ax.annotate(p["label"], (p["seconds"], p["accuracy"]), textcoords="offset points",
                        xytext=(8 * side, -3 * side), ha="left" if side > 0 else "right",
                        va="top" if side > 0 else "bottom", fontsize=7.5)
    ax.margins(x=0.18)  # room for the outermost labels inside the frame
    _seconds_axes(fig, ax, path, title, note, "seconds: whitening fit, training and final "
                  "scoring", "test accuracy with TTA (%)", loc="lower right")


def confusion_matrix(rows_or_matrix) -> np.ndarray:
    """confusion.csv's rows (dicts: class, one count per predicted class, accuracy) or a
    classes x classes matrix [true, predicted] -> the integer matrix."""
    if len(rows_or_matrix) and isinstance(rows_or_matrix[0], dict):
        by_class = {r["class"]: r for r in rows_or_matrix}
        missing = [c for c in CLASSES if c not in by_class]
        if missing:
            raise ValueError(f"confusion rows lack the classes {', '.join(missing)}")
        rows_or_matrix = [[float(by_class[t][p]) for p in CLASSES] for t in CLASSES]
    matrix = np.asarray(rows_or_matrix)
    if matrix.shape != (len(CLASSES), len(CLASSES)):
        raise ValueError(f"a confusion matrix is {len(CLASSES)}x{len(CLASSES)}, "
                         f"got {matrix.shape}")
    return matrix.astype(int)


def plot_confusion(rows_or_matrix, path, title: str):
    """The test set's confusion matrix (rows: true class, share of its images in %, counts
    written in) and each class's accuracy beside it."""
    matrix = confusion_matrix(rows_or_matrix)
    share = 100 * matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    per_class = np.diag(share)
    overall = 100 * np.trace(matrix) / max(matrix.sum(), 1)
    fig, (ax_m, ax_a) = plt.subplots(1, 2, figsize=(13, 5.6),
                                     gridspec_kw={"width_ratios": [1.45, 1]})
    image = ax_m.imshow(share, cmap="Blues", vmin=0, vmax=100)
    for (t, p), count in np.ndenumerate(matrix):
        ax_m.text(p, t, str(count), ha="center", va="center", fontsize=7,
                  color="white" if share[t, p] > 55 else "black")
    ax_m.set_xticks(range(len(CLASSES)), CLASSES, rotation=45, ha="right")
    ax_m.set_yticks(range(len(CLASSES)), CLASSES)
    ax_m.set(xlabel="predicted class", ylabel="true class")
    ax_m.set_title("counts; colour: share of the true class's images", fontsize=9)
    fig.colorbar(image, ax=ax_m, fraction=0.046, pad=0.04, label="% of the true class")
    _accuracy_bars(ax_a, list(CLASSES), list(per_class), overall,
                   f"all classes: {overall:.2f} %", "tab:blue",
                   [f"{v:.1f} %" for v in per_class], "test accuracy of the class (%)")
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
