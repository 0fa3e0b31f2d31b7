"""Tasks 2-3 scripts end to end on tiny fake data, and the models' shapes and sizes."""
import csv
import json

import pytest
import torch

from common.models import CNN1g, Model1, Model2, count_parameters
from conftest import load_script

task2 = load_script("task2")
task3cd = load_script("task3cd")
task3e = load_script("task3e")


@pytest.mark.parametrize("model, parameters", [
    (CNN1g(), 390_410),     # report 1.g
    (Model1(), 588_426),    # report 3.a, convolutions without bias (BatchNorm follows each)
    (Model2(), 185_674),    # report 3.a, 3x3 convolutions with padding 1 (2x2 final maps)
])
def test_models_give_ten_logits_and_their_parameter_counts(model, parameters):
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert count_parameters(model) == parameters


def test_model2_ends_in_2x2_maps_as_the_report_says():
    features = torch.nn.Sequential(*list(Model2())[:-4])(torch.zeros(1, 3, 32, 32))  # to flatten
    assert features.shape == (1, 64, 2, 2)


def tiny_args(data_dir, out):
    return ["--data-dir", str(data_dir), "--output-dir", str(out), "--subset", "100",
            "--epochs", "1", "--batch-size", "20", "--no-progress"]


def test_task2_writes_figure1_metrics_and_table_2b(fake_image_folder, tmp_path, capsys):
    task2.main(tiny_args(fake_image_folder, tmp_path))
    out, err = capsys.readouterr()
    assert "Table 2.b" in out and "Training" in out and "Validation" in out and "Test" in out
    assert (tmp_path / "task2_figure1.png").stat().st_size > 10_000
    metrics = json.loads((tmp_path / "cnn1g" / "metrics.json").read_text())
    assert set(metrics["final"]) == {"train", "validation", "test"}
    assert metrics["config"]["recipe"]["opt"] == "sgd"
    # --precision auto: the choice and its reason in metrics.json and the first log line
    reason = metrics["precision_reason"]
    assert reason.startswith("auto: ") and metrics["precision"] in reason
    assert err.splitlines()[0] == f"cnn1g: {metrics['precision']} ({reason})"


@pytest.mark.slow
def test_patience_0_continues_a_run_that_early_stopping_ended(fake_image_folder, tmp_path):
    # a run stopped by early stopping, resumed with a larger --epochs: it stays stopped under
    # the recipe's patience and trains on with --patience 0 (no early stopping)
    task2.main(tiny_args(fake_image_folder, tmp_path))
    ckpt = tmp_path / "cnn1g" / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=False)
    state["early_stopping"]["wait_count"] = 4  # as if the stop had fired
    torch.save(state, ckpt)

    def resume(*extra):
        task2.main(tiny_args(fake_image_folder, tmp_path) + ["--epochs", "3", "--resume", str(ckpt),
                                                             *extra])  # the last --epochs counts
        with open(tmp_path / "cnn1g" / "history.csv") as f:
            checks = list(csv.DictReader(f))
        return json.loads((tmp_path / "cnn1g" / "metrics.json").read_text()), checks

    stopped, checks = resume()
    assert stopped["stopped_early"] is True and stopped["epochs_completed"] == 1
    assert len(checks) == 2  # two validation checks per epoch
    torch.save(state, ckpt)
    resumed, checks = resume("--patience", "0")
    assert resumed["stopped_early"] is False and resumed["epochs_completed"] == 3
    assert len(checks) == 6
    assert resumed["config"]["recipe"]["patience"] is None
    assert resumed["changes_on_resume"] == [{"step": 5, "epoch": 1.0,
                                            "epochs": {"from": 1, "to": 3},
                                            "patience": {"from": 4, "to": None}}]


@pytest.mark.parametrize("script, variants, figure", [
    (task3cd, "baseline,tanh", "task3d_figure4_relu_vs_tanh.png"),
    (task3e, "baseline,silu", "task3e_figure5_improvements.png"),
])
@pytest.mark.slow
def test_study_scripts_write_their_figure_and_one_table_row_per_variant(
        script, variants, figure, fake_image_folder, tmp_path, capsys):
    script.main(tiny_args(fake_image_folder, tmp_path) + ["--variants", variants])
    assert (tmp_path / figure).stat().st_size > 10_000
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == variants.split(",")
    for row in rows:  # each row is its run's own final table
        metrics = json.loads((tmp_path / row["run"] / "metrics.json").read_text())
        assert float(row["test_accuracy"]) == round(100 * metrics["final"]["test"]["accuracy"], 2)
        assert float(row["epochs"]) == metrics["epochs_completed"] == 1
    assert variants.split(",")[1] in capsys.readouterr().out


def test_unknown_variant_is_a_one_line_error(fake_image_folder, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        task3e.main(tiny_args(fake_image_folder, tmp_path) + ["--variants", "baseline,gelu"])
    assert exit_info.value.code == 2
    assert "unknown variant(s) gelu" in capsys.readouterr().err


@pytest.mark.slow
def test_a_variant_trained_alone_repeats_the_same_variant_trained_after_another(
        fake_image_folder, tmp_path):
    # the initial weights come from --seed alone, not from the runs before (a study's order)
    task3cd.main(tiny_args(fake_image_folder, tmp_path / "both") + ["--variants", "baseline,tanh"])
    task3cd.main(tiny_args(fake_image_folder, tmp_path / "alone") + ["--variants", "tanh"])
    histories = [(tmp_path / d / "tanh" / "history.csv").read_text() for d in ("both", "alone")]
    strip = [[row.split(",")[:-2] for row in h.splitlines()] for h in histories]  # minus wall time, lr
    assert strip[0] == strip[1]


def test_study_figure_gives_every_one_of_eleven_runs_its_own_colour(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba
    from common import plotting
    metrics = {f"{s}_{m}": 0.5 for s in ("train", "val", "test") for m in ("loss", "accuracy")}
    history = {"checks": [{"epoch": e, "step": 10 * e, **metrics} for e in (0.5, 1.0)],
               "step_loss": []}
    closed = []
    monkeypatch.setattr(plt, "close", closed.append)  # keep the figure to look at its lines
    plotting.plot_runs({f"run{i}": history for i in range(11)}, tmp_path / "f.png", "t",
                       splits=("val",))
    lines = closed[0].axes[1].get_lines()
    assert len(lines) == 11
    assert len({to_rgba(line.get_color()) for line in lines}) == 11
    assert (tmp_path / "f.png").is_file()
