"""Loss and accuracy curves (report Figures 1-6) for one run or several, saved as PNG."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .io import save_figure  # noqa: E402


def _smooth(values, window):
    values = np.asarray(values, dtype=float)
    if len(values) < window or window <= 1:
        return values
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="valid")


def _steps_per_epoch(history) -> float:
    checks = history["checks"]
    last = checks[-1] if checks else None
    return last["step"] / last["epoch"] if last and last["epoch"] else 1.0


def _plot_into(ax_loss, ax_acc, history, label_prefix="", color=None, splits=("train", "val", "test")):
    spe = _steps_per_epoch(history)
    checks = history["checks"]
    epochs = [c["epoch"] for c in checks]
    styles = {"train": "-", "val": "--", "test": ":"}
    names = {"train": "training", "val": "validation", "test": "test"}
    for split in splits:
        kw = dict(linestyle=styles[split], color=color)
        if split == "train" and history.get("step_loss"):
            window = max(1, int(spe // 20))
            smooth = _smooth(history["step_loss"], window)
            x = (np.arange(len(smooth)) + window) / spe
            ax_loss.plot(x, smooth, label=f"{label_prefix}{names[split]} loss", alpha=0.8, **kw)
        else:
            ax_loss.plot(epochs, [c[f"{split}_loss"] for c in checks], marker=".",
                         label=f"{label_prefix}{names[split]} loss", **kw)
        ax_acc.plot(epochs, [100 * c[f"{split}_accuracy"] for c in checks], marker=".",
                    label=f"{label_prefix}{names[split]} accuracy", **kw)


def _finish(fig, ax_loss, ax_acc, title):
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy loss")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    if len(ax_acc.get_lines()) > 12:  # a study: one legend beside the plots, not over them
        ax_acc.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    else:
        for ax in (ax_loss, ax_acc):
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()


def plot_run(history: dict, path, title: str):
    """Loss (training per step, smoothed; validation and test per check) and accuracy."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.5))
    _plot_into(ax_loss, ax_acc, history)
    _finish(fig, ax_loss, ax_acc, title)
    save_figure(fig, path)
    plt.close(fig)
    return path


def plot_runs(histories: dict[str, dict], path, title: str, splits=("train", "val", "test")):
    """Several runs in one figure, one colour per run (report Figures 3 and 4)."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(13, 5))
    # the default cycle has 10 colours: a study of 11 variants would draw two runs alike
    colors = (plt.rcParams["axes.prop_cycle"].by_key()["color"] if len(histories) <= 10
              else [plt.get_cmap("tab20")(i) for i in range(20)])
    for i, (name, history) in enumerate(histories.items()):
        _plot_into(ax_loss, ax_acc, history, label_prefix=f"{name}: ",
                   color=colors[i % len(colors)], splits=splits)
    _finish(fig, ax_loss, ax_acc, title)
    save_figure(fig, path)
    plt.close(fig)
    return path


def plot_accuracy_vs_time(curves: dict[str, tuple[list, list]], path, title: str):
    """Test accuracy (%) against wall-clock seconds, one line per run: {label: (s, acc)}."""
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, (seconds, accuracy) in curves.items():
        ax.plot(seconds, accuracy, marker=".", label=name)
    ax.set_xlabel("wall-clock time (s)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path
