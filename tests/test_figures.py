"""What the figures say: a trial run (--quick, --subset) says so in its title and is never drawn
beside a full run, one seed shows no spread, every ± says what it is, a key or a label covers
no bar's value and no other line, and epochs read as the checks say them."""
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.transforms import Bbox

import report
from common import plotting, results
from common.data import CLASSES
from conftest import load_script

QUICK_LINE = "\ntrial run: 1,000 images per split, 1 epoch (not a full run)"


def a_run(subset=None, epochs=10, accuracy=0.7168, name="model1", precision="fp32",
          completed=7.5007, seed=0) -> dict:
    """A finished run as metrics.json and history.csv give it: a check every half epoch."""
    checks = [{"epoch": e, "step": round(703 * e), "wall_time_s": 50.0 * e,
               **{f"{s}_{m}": 0.5 for s in ("train", "val", "test") for m in ("loss", "accuracy")}}
              for e in (0.5007, 1.0, 1.5007, 2.0)]
    return {"run": name, "seed": seed, "device": "cpu", "precision": precision,
            "epochs_completed": completed, "final": {"test": {"loss": 0.9, "accuracy": accuracy}},
            "history": {"checks": checks, "step_loss": []},
            "config": {"task": "task3", "run": name, "subset": subset,
                       "recipe": {"epochs": epochs, "patience": 4}}}


def quick(**kw) -> dict:
    return a_run(subset=1000, epochs=1, **kw)


def confusion_rows() -> list[dict]:
    return [{"class": c, **{p: 100 if p == c else 0 for p in CLASSES}} for c in CLASSES]


# one builder per kind of figure a script draws after a run, from runs given in order
BUILDERS = {
    "figure1": lambda r: results.figure1(r[0]),
    "figure2": lambda r: results.figure2(r[0], "model1"),
    "figure3": lambda r: results.figure3(r[0], r[1]),
    "figure4": lambda r: results.figure4(r[0], r[1]),
    "figure4_continued": lambda r: results.figure4_continued(r[0], r[1]),
    "study curves": lambda r: results.study_figure("task3e", {"baseline": r[0], "silu": r[1]}, {}),
    "study bars": lambda r: results.study_figure("task3c", {"baseline": r[0] | {
        "epochs_completed": 1}, "tanh": r[1] | {"epochs_completed": 1}}, {}),
    "figure6": lambda r: results.figure6(r[0], "resnet18_imagenet", "ImageNet weights", 224),
    "speed-run vs time": lambda r: results.speedrun_vs_time([r[0]], None),
}


@pytest.mark.parametrize("figure", BUILDERS)
def test_a_quick_runs_figure_says_so_in_a_second_title_line_and_a_full_runs_title_is_unchanged(
        figure):
    full = BUILDERS[figure]([a_run(epochs=1), a_run(epochs=1, name="model2")]).args["title"]
    trial = BUILDERS[figure]([quick(), quick(name="model2")]).args["title"]
    assert "trial" not in full and "\n" not in full
    assert trial == full + QUICK_LINE


def test_full_run_titles_read_as_before_the_trial_line_existed():
    assert results.figure1(a_run()).args["title"] == \
        "Figure 1: the 1.g CNN, final test accuracy 71.68%"
    assert results.figure2(a_run(accuracy=0.7962), "model1").args["title"] == \
        "Figure 2: Model 1, final test accuracy 79.62%"


def test_a_subset_run_names_its_own_images_and_epochs_and_a_study_beside_a_full_baseline_says_it():
    title = results.figure1(a_run(subset=300, epochs=2)).args["title"]
    assert title.endswith("\ntrial run: 300 images per split, 2 epochs (not a full run)")
    mixed = results.figure3(a_run(), quick(name="model2")).args["title"]
    assert mixed.endswith("\ntrial run: 1,000 images per split, 1 epoch; other runs on every "
                          "image (not a full run)")


def test_the_speed_run_figure_leaves_out_a_model1_trained_on_other_images():
    m1 = a_run(name="model1")
    drawn = results.speedrun_vs_time([quick(name="speedrun seed 0")], None).args
    beside_full = results.speedrun_vs_time([quick(name="speedrun seed 0")], m1).args
    assert beside_full["curves"].keys() == drawn["curves"].keys() == {"speed-run, seed 0"}
    assert beside_full["title"] == drawn["title"] == \
        "Speed-run recipe: test accuracy against time" + QUICK_LINE
    assert beside_full["note"].endswith(" Model 1 (model1) left out: it trained on every image, "
                                        "the speed-run on 1,000 images per split, 1 epoch.")
    # the other way round: a --quick Model 1 is not drawn beside full seeds either
    full_seeds = results.speedrun_vs_time([a_run(name="s")], quick()).args
    assert list(full_seeds["curves"]) == ["speed-run, seed 0"]
    # on the same images, it is drawn, and the title says so
    same = results.speedrun_vs_time([a_run(name="s")], m1).args
    assert list(same["curves"]) == ["speed-run, seed 0", "Model 1, report recipe"]
    assert same["title"] == "Speed-run recipe vs Model 1: test accuracy against time"
    assert "left out" not in same["note"]


def test_confusion_titles_name_the_script_run_precision_and_images():
    rows = confusion_rows()
    fp32 = results.confusion_figure(a_run(), rows).args["title"]
    bf16 = results.confusion_figure(a_run(precision="bf16"), rows).args["title"]
    trial = results.confusion_figure(quick(precision="bf16"), rows).args["title"]
    assert fp32 == "task3 model1, fp32, full run: test set, best weights (100.00 % correct)"
    assert bf16 == fp32.replace("fp32", "bf16")
    assert trial == ("task3 model1, bf16, trial run: 1,000 images per split, 1 epoch: test set, "
                     "best weights (100.00 % correct)")


def keep_figures(monkeypatch) -> list:
    closed = []
    monkeypatch.setattr(plt, "close", closed.append)
    return closed


def boxes(fig, artists) -> list[Bbox]:
    renderer = fig.canvas.get_renderer()
    return [a.get_window_extent(renderer) for a in artists]


def test_the_confusion_figures_all_classes_line_is_named_where_no_bar_or_value_is(
        tmp_path, monkeypatch):
    """Every class right as often as the mean, the last one too: a key in the lower right, as
    before, sat on the last bar's value."""
    matrix = np.full((10, 10), 10) + np.diag(np.full(10, 800))
    closed = keep_figures(monkeypatch)
    plotting.plot_confusion(matrix, tmp_path / "c.png", "t")
    fig = closed[0]
    ax = fig.axes[1]
    name = [t for t in ax.texts if t.get_text().startswith("dashed: all classes")]
    values = [t for t in ax.texts if t not in name]
    assert len(name) == 1 and len(values) == 10 and ax.get_legend() is None
    label = boxes(fig, name)[0]
    assert not any(label.overlaps(b) for b in boxes(fig, values + list(ax.patches)))


def test_the_per_class_values_stand_in_one_column_clear_of_the_bars_and_the_dashed_line(
        tmp_path, monkeypatch):
    """A class just below or just above the mean: its value sat at the line's edge."""
    matrix = np.full((10, 10), 10) + np.diag(np.arange(700, 800, 10))
    closed = keep_figures(monkeypatch)
    plotting.plot_confusion(matrix, tmp_path / "c.png", "t")
    fig = closed[0]
    ax = fig.axes[1]
    values = [t for t in ax.texts if not t.get_text().startswith("dashed")]
    left = {round(b.x0) for b in boxes(fig, values)}
    assert len(left) == 1  # one column
    line = boxes(fig, ax.get_lines())[0]
    rightmost = max(b.x1 for b in boxes(fig, list(ax.patches)) + [line])
    assert left.pop() > rightmost + 4  # pixels: clear of every bar and of the line


def test_figure5_draws_each_change_in_its_own_panel_over_the_baseline_with_its_verdict(
        tmp_path, monkeypatch):
    """Ten curves in one panel hid the baseline: a column per change, the baseline in black in
    each, the change coloured by its verdict against the spread, the key off the panels."""
    runs = {name: a_run(name=name, accuracy=acc) for name, acc in (
        ("baseline", 0.79), ("leaky_relu", 0.7927), ("silu", 0.8055), ("worse", 0.77))}
    figure = results.study_figure("task3e", runs, {}, {"points": 1.02, "what": "two inits"})
    closed = keep_figures(monkeypatch)
    figure.draw(tmp_path)
    fig = closed[0]
    loss_row, acc_row = fig.axes[:3], fig.axes[3:]
    assert len(fig.axes) == 6 and all(ax.get_legend() is None for ax in fig.axes)
    assert [ax.get_title().split("\n") for ax in loss_row] == [
        ["leaky_relu: test 79.27 % (+0.27)", "within the spread: a tie"],
        ["silu: test 80.55 % (+1.55)", "above, beyond the spread"],
        ["worse: test 77.00 % (-2.00)", "below, beyond the spread"]]
    for ax, verdict in zip(acc_row, ("tie", "beat", "lost")):
        colours = [line.get_color() for line in ax.get_lines()]
        assert colours == ["black"] * 2 + [plotting.VERDICT_COLORS[verdict]] * 2
    panels = boxes(fig, fig.axes)
    assert not any(k.overlaps(p) for k in boxes(fig, fig.legends) for p in panels)


def test_the_accuracy_against_time_figure_marks_a_span_far_slower_than_the_runs_median(
        monkeypatch):
    model1 = a_run(name="model1")
    seconds = [50.0, 100.0, 150.0, 400.0, 450.0, 500.0]  # 250 s between the 3rd and 4th checks
    model1["history"]["checks"] = [dict(model1["history"]["checks"][0], wall_time_s=t,
                                        epoch=0.5 * (i + 1)) for i, t in enumerate(seconds)]
    seed = a_run(name="s") | {"config": model1["config"]}
    stalls = results.speedrun_vs_time([seed], model1).args["stalls"]
    assert [(s["curve"], s["start"], s["end"]) for s in stalls] == [
        ("Model 1, report recipe", 150.0, 400.0)]
    assert stalls[0]["label"].startswith("Model 1: 250 s between two checks\n(median 50 s)")


def test_the_frontier_says_one_machine_only_where_the_published_runs_have_its_record(
        side_by_side):
    title = results.speedrun_vs_published(side_by_side).args["title"]
    assert "one machine" not in title and "hold no machine record" in title
    recorded = {**side_by_side, "frontier": {**side_by_side["frontier"], "published": [
        p | {"machine_recorded": True} for p in side_by_side["frontier"]["published"]]}}
    assert results.speedrun_vs_published(recorded).args["title"].endswith("(one machine)")


@pytest.fixture(scope="module")
def side_by_side():
    """The committed side-by-side (published logs and our seeds at each budget)."""
    return report.side_by_side(report.Results(report.ROOT))


def test_the_frontiers_labels_sit_beside_their_own_points_off_the_other_line(
        side_by_side, tmp_path, monkeypatch):
    closed = keep_figures(monkeypatch)
    results.speedrun_vs_published(side_by_side).draw(tmp_path)
    fig = closed[0]
    ax = fig.axes[0]
    lines = [c.lines[0] for c in ax.containers]  # each series' line, without its error bars
    assert len(lines) == 2 and len(ax.texts) == sum(len(line.get_xdata()) for line in lines)
    renderer = fig.canvas.get_renderer()
    for label in ax.texts:
        box = label.get_window_extent(renderer)
        own = [line for line in lines if tuple(label.xy) in zip(line.get_xdata(),
                                                                line.get_ydata())]
        assert len(own) == 1, label.get_text()
        for line in lines:
            path = line.get_transform().transform_path(line.get_path())
            assert not path.intersects_bbox(box, filled=False), \
                f"{label.get_text()!r} crosses {line.get_label()!r}"
        assert ax.get_window_extent(renderer).contains(box.x0, box.y0) and \
            ax.get_window_extent(renderer).contains(box.x1, box.y1), label.get_text()


def test_every_plus_minus_in_the_frontiers_legend_says_it_is_a_sample_sd_over_n_seeds(
        side_by_side):
    series = results.speedrun_vs_published(side_by_side).args["series"]
    n = {x["n"] for x in side_by_side["frontier"]["ours"]}
    assert n == {3}
    assert list(series)[1] == "ours, the speed-run recipe (mean ± sample sd over 3 seeds)"


def test_one_seed_shows_no_spread_in_the_frontier_or_the_printed_summary(side_by_side, capsys):
    one = {**side_by_side, "frontier": {**side_by_side["frontier"], "ours": [
        x | {"n": 1, "std": 0.0} for x in side_by_side["frontier"]["ours"]]}}
    series = results.speedrun_vs_published(one).args["series"]
    name, points = list(series.items())[1]
    assert name == "ours, the speed-run recipe (one seed each: no spread)" and "±" not in name
    assert all(p["label"].endswith(", 1 seed") for p in points)
    assert results.seed_spread({"mean": 90.1, "std": 0.0, "min": 90.1, "max": 90.1}, 1) == \
        "one seed: no spread"
    assert results.seed_spread({"mean": 90.1, "std": 0.123, "min": 89.9, "max": 90.3}, 3) == \
        "sample sd 0.12 over 3 seeds, range 89.90-90.30"

    task3e = load_script("task3e")
    stats = {"mean": 90.1, "std": 0.0, "min": 90.1, "max": 90.1}
    seed = {"final": {"test": {"accuracy": 0.9}, "test_tta": {"accuracy": 0.901}},
            "recipe_time_s": 400.0}
    task3e.print_speedrun({"summary": {"n": 1, "test_accuracy": stats, "test_accuracy_tta":
                                       stats, "recipe_time_s": stats},
                           "runs": {0: seed}, "precision": "bf16"}, [0],
                          SimpleNamespace(epochs=1, widths=(64, 256, 256), batch_size=1024),
                          SimpleNamespace(splits=SimpleNamespace(source="x"), device="cpu"))
    out = capsys.readouterr().out
    assert "(with TTA: one seed: no spread)" in out and "std" not in out


@pytest.mark.parametrize("stored, printed", [(7.5007, "7.5"), (5.5007, "5.5"), (10.0, "10"),
                                             (11, "11"), (0.3329, "0.33"), (1.0, "1")])
def test_epochs_print_as_the_checks_say_them(stored, printed):
    assert report.num(stored) == printed


def test_the_continued_tanh_figure_says_model1s_stop_as_a_check_epoch():
    title = results.figure4_continued(a_run(completed=7.5007), a_run()).args["title"]
    assert "stopped after 7.5 (" in title
