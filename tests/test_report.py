"""python report.py: every committed figure and results table matches results/, a changed
number or a figure drawn from elsewhere is caught, and regenerating is byte-stable."""
import csv
import json
import shutil
import statistics

import matplotlib.colors
import matplotlib.pyplot as plt
import numpy as np
import pytest

import report
from common import plotting, results
from common.data import CLASSES
from conftest import load_script


@pytest.fixture
def repo_copy(tmp_path):
    """What the command reads and writes, copied: README.md, docs/, results/, plots/."""
    for name in ("docs", "results", "plots"):
        shutil.copytree(report.ROOT / name, tmp_path / name)
    shutil.copy(report.ROOT / "README.md", tmp_path / "README.md")
    return tmp_path


def write_confusion(run_dir, matrix):
    with open(run_dir / "confusion.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", *CLASSES, "accuracy"])
        for name, row in zip(CLASSES, matrix):
            writer.writerow([name, *row, round(row[CLASSES.index(name)] / sum(row), 4)])


def synthetic_confusion() -> np.ndarray:
    """1,000 test images per class; class i right 500 + 40 i times, the rest on class i + 1."""
    matrix = np.zeros((10, 10), dtype=int)
    for i in range(10):
        matrix[i, i] = 500 + 40 * i
        matrix[i, (i + 1) % 10] = 1000 - matrix[i, i]
    return matrix


def test_committed_figures_and_tables_match_the_committed_results():
    assert report.regenerate(report.ROOT, check=True) == []


@pytest.mark.slow
def test_check_names_a_changed_number_and_a_missing_confusion_figure_then_regenerating_mends_both(
        repo_copy, capsys):
    readme = (repo_copy / "README.md").read_text()
    studies = (repo_copy / "docs" / "studies.md").read_text()
    assert "| **79.62 %** (0.590) |" in readme  # Model 1's test accuracy in Table 3.b's row
    (repo_copy / "README.md").write_text(readme.replace("**79.62 %** (0.590)",
                                                        "**79.63 %** (0.590)", 1))
    (repo_copy / "docs" / "studies.md").write_text(studies.replace("| 65.68 % |", "| 65.69 % |", 1))
    write_confusion(repo_copy / "results" / "task3" / "model1", synthetic_confusion())

    assert report.main(["--check", "--root", str(repo_copy)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith("README.md:") and line.endswith(
        ": generated table report-vs-ours differs from results/") for line in out)
    assert any(line.startswith("docs/studies.md:") and line.endswith(
        ": generated table task3c-one-epoch differs from results/") for line in out)
    assert "plots/task3_model1_confusion.png: missing" in out
    assert len(out) == 3
    assert (repo_copy / "README.md").read_text() != readme  # --check writes nothing

    assert report.main(["--root", str(repo_copy)]) == 0
    assert (repo_copy / "README.md").read_text() == readme
    assert (repo_copy / "docs" / "studies.md").read_text() == studies
    assert (repo_copy / "plots" / "task3_model1_confusion.png").is_file()
    capsys.readouterr()
    assert report.main(["--check", "--root", str(repo_copy)]) == 0
    assert capsys.readouterr().out == ""

    first = {p.name: p.read_bytes() for p in (repo_copy / "plots").glob("*.png")}
    assert report.main(["--root", str(repo_copy)]) == 0
    second = {p.name: p.read_bytes() for p in (repo_copy / "plots").glob("*.png")}
    assert first == second  # no date, no version: the same inputs give the same bytes


def test_a_figure_drawn_by_a_training_script_instead_is_stale(repo_copy):
    run = report.Results(repo_copy).run("task2/cnn1g")
    plotting.plot_run(run["history"], repo_copy / "plots" / "task2_figure1.png", "Figure 1")
    assert report.regenerate(repo_copy, check=True) == [
        "plots/task2_figure1.png: drawn from other inputs or code"]


def swap_pixels_keep_chunks(a, b):
    """a shows b's image and b shows a's, each keeping its own text chunks (Source, Pixels)."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo
    images = {}
    for path in (a, b):
        with Image.open(path) as image:
            images[path] = (image.copy(), dict(image.text))
    for path, other in ((a, b), (b, a)):
        chunks = PngInfo()
        for key, value in images[path][1].items():
            chunks.add_text(key, value)
        images[other][0].save(path, format="PNG", pnginfo=chunks)


def test_two_figures_swapped_with_their_chunks_kept_are_both_stale(repo_copy, capsys):
    plots = repo_copy / "plots"
    swap_pixels_keep_chunks(plots / "task3_figure2_model1.png", plots / "task3_figure2_model2.png")
    assert report.main(["--check", "--root", str(repo_copy)]) == 1
    assert sorted(capsys.readouterr().out.splitlines()) == [
        f"plots/task3_figure2_{m}.png: shows other pixels than were drawn (swapped or edited)"
        for m in ("model1", "model2")]


def test_a_deleted_generated_table_csv_is_missing(repo_copy):
    (repo_copy / "results" / "tables" / "speedrun-seeds.csv").unlink()
    assert report.regenerate(repo_copy, check=True) == [
        "results/tables/speedrun-seeds.csv: missing"]


def test_an_unknown_generated_table_name_is_reported(repo_copy):
    usage = repo_copy / "docs" / "usage.md"
    usage.write_text(usage.read_text() + "\n<!-- generated: no-such-table -->\n"
                                          "<!-- end generated -->\n")
    lines = report.regenerate(repo_copy, check=True)
    assert len(lines) == 1 and lines[0].startswith("docs/usage.md: unknown generated table "
                                                   "'no-such-table'")


def test_the_generated_tables_state_the_numbers_of_results(repo_copy):
    """Computed here from the files, independently of report.py's own arithmetic."""
    r = report.Results(repo_copy)
    results = repo_copy / "results"
    seeds = [json.loads(p.read_text())
             for p in sorted((results / report.SPEEDRUN).glob("seed*/metrics.json"))]
    plain, tta = ([100 * m["final"][k]["accuracy"] for m in seeds] for k in ("test", "test_tta"))
    rows = report.speedrun_table(r).rows
    assert len(seeds) == 3 and rows[3][:3] == [
        f"**{report.SD}**", f"**{statistics.mean(plain):.2f} ± {statistics.stdev(plain):.2f} %**",
        f"**{statistics.mean(tta):.2f} ± {statistics.stdev(tta):.2f} %**"]
    tanh = report.tanh_table(r).rows
    assert [row[1] for row in tanh] == ["up to 10 epochs, early stop after 4 checks"] * 2 + [
        "13 epochs, no early stopping"]
    model1 = json.loads((results / report.DEFAULT_PATH["model1", "bf16"] / "metrics.json")
                        .read_text())
    gap = statistics.mean(plain) - 100 * model1["final"]["test"]["accuracy"]
    assert f"{gap:+.2f} points without TTA" in report.speedrun_vs_model1(r).after
    tta_levels = json.loads((results / report.TTA).read_text())["seeds"]
    mean = {level: statistics.mean(s["levels"][level]["accuracy"] for s in tta_levels.values())
            for level in ("0", "1", "2")}
    assert [row[3] for row in report.tta_table(r).rows] == [
        f"{mean[level] - mean['2']:+.2f}" for level in ("0", "1", "2")]
    second = {row[0] for row in report.second_round_table(r).rows}
    assert second == {"`recipe`"} | {f"`{p.name}`" for p in (results / report.CANDIDATES).iterdir()
                                     if p.name.startswith("recipe_")}


def keep_figures(monkeypatch):
    closed = []
    monkeypatch.setattr(plt, "close", closed.append)
    return closed


def test_confusion_figure_reads_rows_and_matrix_alike_and_shows_per_class_accuracy(
        tmp_path, monkeypatch):
    matrix = synthetic_confusion()
    write_confusion(tmp_path, matrix)
    with open(tmp_path / "confusion.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert (plotting.confusion_matrix(rows) == matrix).all()
    assert (plotting.confusion_matrix(matrix.tolist()) == matrix).all()
    closed = keep_figures(monkeypatch)
    plotting.plot_confusion(rows, tmp_path / "c.png", "t")
    bars = closed[0].axes[1].patches
    assert [round(b.get_width(), 1) for b in bars] == [50.0 + 4 * i for i in range(10)]
    assert (tmp_path / "c.png").is_file()
    with pytest.raises(ValueError, match="lack the classes"):
        plotting.confusion_matrix(rows[:9])


def test_study_bars_colour_a_change_by_whether_it_beat_the_spread_so_a_tie_is_not_a_loss(
        tmp_path, monkeypatch):
    runs = {name: {"epochs_completed": 1.0, "final": {"test": {"accuracy": acc}},
                   "config": {"subset": None}}
            for name, acc in (("Model 1", 0.6568), ("filters", 0.6558), ("tanh", 0.4725),
                              ("wide", 0.70))}
    figure = results.study_figure("task3c", runs, {}, {"points": 1.02, "what": "two inits"})
    assert figure.args["verdicts"] == {"filters": "tie", "tanh": "lost", "wide": "beat"}
    closed = keep_figures(monkeypatch)
    figure.draw(tmp_path)
    ax = closed[0].axes[0]
    bars = [b for b in ax.patches if b.get_height() < 1]  # the bars, not the shaded band
    assert [round(b.get_width(), 2) for b in bars] == [65.68, 65.58, 47.25, 70.0]
    assert [matplotlib.colors.to_hex(b.get_facecolor(), keep_alpha=False) for b in bars] == [
        matplotlib.colors.to_hex(c) for c in ("tab:gray", "goldenrod", "tab:red", "tab:green")]
    assert ax.get_lines()[0].get_xdata()[0] == 65.68
    # without a spread a change is only above or below: no tie but an exact one
    assert results.study_figure("task3c", runs, {}).args["verdicts"] == {
        "filters": "lost", "tanh": "lost", "wide": "beat"}


def test_a_figure_never_mixes_per_step_and_per_check_training_curves(tmp_path, monkeypatch):
    metrics = {f"{s}_{m}": 0.5 for s in ("train", "val", "test") for m in ("loss", "accuracy")}
    checks = [{"epoch": e, "step": 10 * e, **metrics} for e in (0.5, 1.0)]
    with_steps = {"checks": checks, "step_loss": [1.0] * 10}
    without = {"checks": checks, "step_loss": []}
    closed = keep_figures(monkeypatch)
    plotting.plot_runs({"a": with_steps, "b": without}, tmp_path / "f.png", "t")
    plotting.plot_runs({"a": with_steps, "b": with_steps}, tmp_path / "g.png", "t")
    assert closed[0].axes[0].get_title() == plotting.CHECK_CURVE
    assert [len(line.get_xdata()) for line in closed[0].axes[0].get_lines()][::3] == [2, 2]
    assert closed[1].axes[0].get_title() == plotting.STEP_CURVE


def test_a_changed_seed_under_the_side_by_side_makes_its_summary_stale(repo_copy):
    """`ours` of the side-by-side is computed from the seeds: a seed's number changed on disk is
    caught, and regenerating writes the new mean into the JSON and the table."""
    path = repo_copy / "results" / report.SPEEDRUN / "seed1" / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["final"]["test_tta"]["accuracy"] += 0.03
    path.write_text(json.dumps(metrics))
    lines = report.regenerate(repo_copy, check=True)
    assert f"results/{report.SIDE_BY_SIDE}: differs from the logs and seeds" in lines
    assert any(line.startswith("docs/speedrun.md:") and line.endswith(
        ": generated table speedrun-vs-published differs from results/") for line in lines)
    assert "plots/task3e_speedrun_vs_published.png: drawn from other inputs or code" in lines
    report.regenerate(repo_copy)
    side = json.loads((repo_copy / "results" / report.SIDE_BY_SIDE).read_text())
    assert side["ours"]["per_seed"]["1"]["test_acc_tta"] == round(
        100 * metrics["final"]["test_tta"]["accuracy"], 2)
    assert report.regenerate(repo_copy, check=True) == []


def test_an_order_or_time_typed_into_the_side_by_side_is_stale_and_regenerating_drops_it(
        tmp_path):
    """No file records when a run began: the side-by-side keeps no order or times of day, and
    an entry typed beside what its files say is caught rather than kept."""
    shutil.copytree(report.ROOT / "results" / "task3e", tmp_path / "results" / "task3e")
    path = tmp_path / "results" / report.SIDE_BY_SIDE
    committed = json.loads(path.read_text())
    assert not {"order", "times"} & set(committed)
    path.write_text(json.dumps(committed | {"order": "the published script first",
                                            "times": {"ours_11": "2026-12-02T03:49:42Z"}}))
    r = report.Results(tmp_path)
    assert report.side_by_side_json(r, check=True) == [
        f"results/{report.SIDE_BY_SIDE}: differs from the logs and seeds"]
    report.side_by_side_json(r, check=False)
    assert json.loads(path.read_text()) == committed


def test_the_bracket_table_labels_a_candidate_as_run_after_the_bracket_not_inside_it():
    table = report.speedrun_bracket(report.Results(report.ROOT))
    labels = [row[0] for row in table.rows]
    assert labels[:4] == [labels[0], labels[1], labels[2],
                          "published airbench94_muon, mean of 1 and 3"]
    assert labels[4].startswith("4. after the bracket, outside it: candidate `recipe_ema_e11`")
    assert "rows 1 to 3 the bracket" in table.before


def test_the_published_side_is_read_from_its_committed_logs(repo_copy):
    """The published script's figures come from its printed log: a changed final row is
    caught; a log without one is an error, not a silent gap."""
    log = repo_copy / "results" / report.PUBLISHED_LOGS / f"epochs{report.PUBLISHED_EPOCHS}.log"
    published = report.published_run(log)
    assert published["epochs"] == report.PUBLISHED_EPOCHS
    assert len(published["history"]) == report.PUBLISHED_EPOCHS
    text = log.read_text()
    final = next(line for line in text.splitlines() if "eval" in line)  # the row with TTA
    tta = f"{published['test_acc_tta'] / 100:.4f}"
    assert tta in final
    log.write_text(text.replace(final, final.replace(tta, "0.1234")))
    lines = report.regenerate(repo_copy, check=True)
    assert f"results/{report.SIDE_BY_SIDE}: differs from the logs and seeds" in lines
    report.regenerate(repo_copy)
    side = json.loads((repo_copy / "results" / report.SIDE_BY_SIDE).read_text())
    assert side["published"]["test_acc_tta"] == 12.34
    log.write_text("\n".join(line for line in text.splitlines() if "eval" not in line))
    with pytest.raises(ValueError, match="no final row"):
        report.published_run(log)


@pytest.mark.slow
def test_a_script_draws_the_figure_the_report_draws_from_the_same_run(fake_image_folder,
                                                                      repo_copy, capsys):
    """One definition per figure: task2's Figure 1 after its run is current for the report
    once that run is the committed one."""
    out = repo_copy / "out"
    task2 = load_script("task2")
    try:
        task2.main(["--data-dir", str(fake_image_folder), "--output-dir", str(out), "--subset",
                    "60", "--epochs", "1", "--batch-size", "20", "--precision", "fp32",
                    "--no-progress"])
    except SystemExit as e:
        assert e.code == 0
    run_dir = repo_copy / "results" / "task2" / "cnn1g"
    shutil.rmtree(run_dir)
    shutil.copytree(out / "cnn1g", run_dir)
    shutil.copy(out / "task2_figure1.png", repo_copy / "plots" / "task2_figure1.png")
    stale = report.regenerate(repo_copy, check=True)
    assert not any("task2_figure1" in line for line in stale), stale
