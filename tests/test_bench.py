"""Tests of the training-speed benchmark (bench/train_speed.py): the rounds' order, the medians,
spreads and verdicts computed from scripted figures, the classic pipeline's data, the command
line, and one run end to end on the tiny fake CIFAR-10. No timing assertions: speed claims live
in the benchmark's output, not in unit tests."""
import json

import pytest
import torch

from bench import train_speed
from common.data import cifar10_splits
from common.precision import PrecisionChoice

MODEL1 = train_speed.SUBJECTS["model1"]   # targets: train >= 0.95, epoch <= 0.5
QUICK = ["--rounds", "2", "--steps", "1", "--warmup", "1", "--eval-batches", "1"]


@pytest.fixture
def auto_fp32(monkeypatch):
    """The precision probe stubbed: it picks fp32 (its own tests are test_precision.py)."""
    monkeypatch.setattr(train_speed, "choose_precision",
                        lambda requested, device, make_model, batch_size:
                        PrecisionChoice("fp32", "stub probe"))


def scripted(ceiling: dict, project: dict, project_epoch: dict, classic_epoch: list) -> dict:
    """Per-round figures as measure_rounds returns them: {precision: [img/s per round]}."""
    figures = {}
    for p, rates in ceiling.items():
        figures["ceiling", p] = [{"steps": 20, "img_s": v} for v in rates]
        figures["project", p] = [{"steps": 20, "img_s": v, "eval_img_s": 300.0, "epoch_s": e}
                                 for v, e in zip(project[p], project_epoch[p])]
    figures["classic", "fp32"] = [{"steps": 20, "img_s": 100.0, "eval_img_s": 300.0,
                                   "epoch_s": e} for e in classic_epoch]
    return figures


def test_a_round_measures_ceiling_project_classic_in_turn_each_round():
    order = []

    class Recorder:
        def __init__(self, name):
            self.name = name

        def measure(self, plan, clock):
            order.append((self.name, plan.eval_warmup))
            return {"img_s": 1.0}

    names = ["ceiling fp32", "project fp32", "ceiling bf16", "project bf16", "classic"]
    pipelines = {(n, i): Recorder(n) for i, n in enumerate(names)}
    plan = lambda precision, first_round: train_speed.Plan(1, 0, 1, first_round)
    figures = train_speed.measure_rounds(pipelines, 3, plan, clock=None)
    assert [name for name, _ in order] == names * 3
    assert [first for _, first in order] == [True] * 5 + [False] * 10  # eval warm-up: round 1
    assert all(len(rounds) == 3 for rounds in figures.values())


def test_ratios_are_medians_of_per_round_ratios_so_one_disturbed_round_does_not_decide():
    # round 2: the machine was busy while the project ran (it looks slow)
    figures = scripted(ceiling={"fp32": [100.0, 100.0, 100.0, 90.0, 100.0]},
                       project={"fp32": [97.0, 60.0, 98.0, 87.3, 97.0]},
                       project_epoch={"fp32": [40.0, 70.0, 42.0, 44.0, 41.0]},
                       classic_epoch=[100.0, 100.0, 100.0, 110.0, 100.0])
    result = train_speed.summarise(MODEL1, figures, "fp32", PrecisionChoice("fp32", "stub"))
    spread = result["train_ratio_spread"]  # per round 0.97, 0.60, 0.98, 0.97, 0.97
    assert spread["median"] == result["train_ratio"] == pytest.approx(0.97)
    assert (spread["min"], spread["max"]) == (pytest.approx(0.60), pytest.approx(0.98))
    assert (spread["q1"], spread["q3"]) == (pytest.approx(0.97), pytest.approx(0.97))
    assert result["targets"]["train_ratio_verdict"] == "PASS"
    assert result["targets"]["train_ratio_pass"] is True
    assert result["epoch_ratio"] == pytest.approx(0.41)  # 0.40, 0.70, 0.42, 0.40, 0.41
    assert result["targets"]["epoch_ratio_verdict"] == "PASS"
    assert result["ceiling_img_s"] == 100.0 and result["project_img_s"] == 97.0
    assert result["precisions"]["fp32"]["project"]["rounds"] == figures["project", "fp32"]


@pytest.mark.parametrize("project, verdict, passed", [
    ([96.0, 97.0, 95.5], "PASS", True),         # interquartile range 0.9575-0.965
    ([93.0, 94.0, 94.9], "FAIL", False),        # 0.935-0.9445
    ([93.0, 96.0, 97.0], "UNDECIDED", None),    # 0.945-0.965: the median passes, q1 does not
])
def test_a_target_is_decided_only_when_the_interquartile_range_is_on_one_side(
        project, verdict, passed):
    figures = scripted(ceiling={"fp32": [100.0] * 3}, project={"fp32": project},
                       project_epoch={"fp32": [40.0] * 3}, classic_epoch=[100.0] * 3)
    targets = train_speed.summarise(MODEL1, figures, "fp32",
                                    PrecisionChoice("fp32", "stub"))["targets"]
    assert (targets["train_ratio_verdict"], targets["train_ratio_pass"]) == (verdict, passed)


def test_targets_are_read_at_the_headline_precision_and_the_cnn_has_no_training_target():
    figures = scripted(ceiling={"fp32": [100.0] * 3, "bf16": [200.0] * 3},
                       project={"fp32": [90.0] * 3, "bf16": [196.0] * 3},
                       project_epoch={"fp32": [50.0] * 3, "bf16": [25.0, 33.0, 29.0]},
                       classic_epoch=[100.0] * 3)
    cnn = train_speed.summarise(train_speed.SUBJECTS["cnn1g"], figures, "bf16",
                                PrecisionChoice("bf16", "x"))
    assert cnn["precision"] == "bf16" and cnn["project_img_s"] == 196.0
    assert cnn["precisions"]["fp32"]["train_ratio"] == pytest.approx(0.90)
    assert cnn["targets"]["train_ratio_verdict"] is None
    assert cnn["targets"]["epoch_ratio_max"] == 0.3
    assert cnn["targets"]["epoch_ratio_verdict"] == "UNDECIDED"  # 0.27-0.31 straddles 0.3


@pytest.mark.parametrize("bf16_ceiling, speedup, bench_pick, probe_pick, agrees", [
    ([190.0, 230.0, 200.0], 2.00, "bf16", "bf16", True),
    ([104.0, 103.0, 160.0], 1.04, "fp32", "bf16", False),   # within 5 %: fp32
    ([104.0, 103.0, 160.0], 1.04, "fp32", "fp32", True),
])
def test_the_bench_says_whether_the_precision_probe_agrees_with_its_ceiling_rows(
        bf16_ceiling, speedup, bench_pick, probe_pick, agrees):
    figures = scripted(ceiling={"fp32": [100.0] * 3, "bf16": bf16_ceiling},
                       project={"fp32": [95.0] * 3, "bf16": [95.0] * 3},
                       project_epoch={"fp32": [40.0] * 3, "bf16": [40.0] * 3},
                       classic_epoch=[100.0] * 3)
    auto = train_speed.summarise(MODEL1, figures, "fp32", PrecisionChoice(probe_pick, "stub"))["auto"]
    assert auto["bench_bf16_speedup"]["median"] == pytest.approx(speedup)
    assert (auto["bench_pick"], auto["agrees"]) == (bench_pick, agrees)


def test_epoch_extrapolation_adds_training_checks_and_worker_start_ups():
    project = train_speed.epoch_seconds(45_000, 150.0, 15_000, 500.0)
    assert project == {"train_s": 300.0, "eval_s": 60.0, "epoch_s": 360.0}
    classic = train_speed.epoch_seconds(45_000, 100.0, 60_000, 400.0, train_startup_s=1.0,
                                        check_startup_s=1.5)
    assert classic == {"train_s": 451.0, "eval_s": 303.0, "epoch_s": 754.0}


def test_spread_gives_median_range_and_quartiles():
    s = train_speed.spread([5.0, 1.0, 4.0, 2.0, 3.0])
    assert (s["median"], s["min"], s["max"], s["q1"], s["q3"]) == (3.0, 1.0, 5.0, 2.0, 4.0)
    assert train_speed.spread([7.0])["q1"] == 7.0


def test_the_classic_pipeline_serves_the_packages_training_split_as_pil_images(fake_official):
    splits = cifar10_splits(fake_official, seed=0, download=False, progress=False)
    classic = train_speed.Classic(train_speed.SUBJECTS["cnn1g"], splits, torch.device("cpu"))
    assert len(classic.train_set) == len(splits.train) == 360
    for i in (0, len(splits.train) - 1):
        x, label = classic.train_set[i]  # ToTensor + Normalize(0.5, 0.25)
        assert label == splits.train.labels[i]
        assert torch.allclose((x * 0.25 + 0.5) * 255, splits.train.images[i].float(), atol=0.01)
    # Model 1's recipe: flip and rotation per image, then the same normalisation
    augmented = train_speed.classic_transforms(MODEL1.recipe)
    assert [type(t).__name__ for t in augmented.transforms] == [
        "RandomHorizontalFlip", "RandomRotation", "ToTensor", "Normalize"]


@pytest.mark.slow
def test_benchmark_runs_end_to_end_and_writes_medians_and_per_round_figures(
        tmp_path, fake_image_folder, auto_fp32, capsys):
    path = tmp_path / "speed.json"
    returned = train_speed.main(["--data-dir", str(fake_image_folder), "--device", "cpu",
                                 "--json", str(path), "--precisions", "fp32", *QUICK])
    report = json.loads(path.read_text())
    assert report["models"].keys() == returned["models"].keys() == {"model1", "cnn1g"}
    for name, model in report["models"].items():
        for key in ("ceiling_img_s", "classic_img_s", "project_img_s", "classic_epoch_s",
                    "project_epoch_s", "ceiling_contiguous_img_s"):
            assert isinstance(model[key], float) and model[key] > 0, (name, key)
        assert model["precision"] == "fp32" and model["auto"]["reason"] == "stub probe"
        assert len(model["train_ratio_spread"]["rounds"]) == 2
        assert len(model["classic"]["rounds"]) == 2 and model["classic"]["startup_s"] > 0
        assert model["targets"]["epoch_ratio_verdict"] in ("PASS", "FAIL", "UNDECIDED")
    assert report["models"]["model1"]["targets"]["train_ratio_min"] == 0.95
    assert report["environment"]["split_sizes"] == {"train": 360, "val": 40, "test": 100}
    out = capsys.readouterr().out
    assert out.count("target: fp32 project img/s >= 0.95 x ceiling") == 1  # Model 1 only
    assert out.count("target: fp32 project epoch s <= 0.5 x classic") == 1
    assert out.count("target: fp32 project epoch s <= 0.3 x classic") == 1


@pytest.mark.parametrize("argv, message", [
    (["--models", "model3"], "argument --models: invalid choice: 'model3'"),
    (["--precisions", "fp16"], "argument --precisions: invalid choice: 'fp16'"),
    (["--steps", "0"], "argument --steps: must be at least 1, got 0"),
    (["--rounds", "two"], "argument --rounds: invalid whole_number value: 'two'"),
    (["--compile"], "unrecognized arguments: --compile"),
])
def test_bad_options_end_in_one_line_and_exit_code_2(argv, message, fake_image_folder, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_speed.main(["--data-dir", str(fake_image_folder), *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and message in err


def test_a_folder_without_cifar10_ends_in_one_line_and_exit_code_2(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not CIFAR-10")
    with pytest.raises(SystemExit) as exit_info:
        train_speed.main(["--data-dir", str(tmp_path), "--steps", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.strip().count("\n") == 0


def test_an_unwritable_json_path_fails_before_measuring(tmp_path, fake_image_folder, capsys):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(SystemExit) as exit_info:
        train_speed.main(["--data-dir", str(fake_image_folder),
                          "--json", str(tmp_path / "a-file" / "speed.json")])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert "--json" in captured.err and "measured" not in captured.out
