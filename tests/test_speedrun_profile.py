"""bench.speedrun_profile: the profiled step trains as the recipe's does, the profile's self time
is split without loss, Muon's Newton-Schulz is found where it runs, and the candidates' plumbing
(every-other-step reuse, the drop rule's inputs, the frontier) reads what it should."""
from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from bench import speedrun_profile as bench
from common.recipes import SPEEDRUN

TINY = replace(SPEEDRUN, widths=(8, 16, 16), batch_size=16, whiten_images=64)


def tiny_data(n: int = 64):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
    return images, torch.arange(n) % 10


def muon_matrices(side) -> int:
    return len(list(side.model.filter_matrices()))


def test_the_profiled_step_trains_exactly_as_the_recipes_step():
    images, labels = tiny_data()
    recipe, profiled = (bench.Side(TINY, images, labels, "fp32") for _ in range(2))
    torch.manual_seed(0)  # the translations draw from the global generator
    for _ in range(2):
        recipe.step()
    torch.manual_seed(0)
    for _ in range(2):
        profiled.profiled_step()
    for (name, a), b in zip(recipe.model.state_dict().items(),
                            profiled.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_shares_split_all_the_self_time_and_find_each_part_of_the_step():
    images, labels = tiny_data()
    with bench.labelled_newton_schulz():
        side = bench.Side(TINY, images, labels, "fp32")
        prof, seconds = bench.profile_training(side, steps=1)
    split = bench.shares(prof.events())
    assert sum(split["share"].values()) == pytest.approx(1, abs=1e-3)
    assert sum(split["self_seconds"].values()) == pytest.approx(split["total_self_seconds"],
                                                                abs=2e-3)
    for part in ("convolution", "batch_norm", "gelu", "max_pool", "muon_newton_schulz",
                 "optimizer_steps", "augmentation"):
        assert split["self_seconds"][part] > 0, part
    # Newton-Schulz is matmuls, and runs inside the optimizer's step
    assert 0 < split["newton_schulz_matmul_seconds"] <= split["self_seconds"]["muon_newton_schulz"]
    assert split["region_seconds"]["newton_schulz"] <= split["region_seconds"]["optimizer_step"]
    assert sum(split["groups"].values()) == pytest.approx(1, abs=1e-3)
    assert 0 < seconds


def event(name, parent=None):
    return SimpleNamespace(name=name, cpu_parent=parent)


@pytest.mark.parametrize("chain, expected", [
    (["forward_backward", "aten::convolution_backward"], "convolution"),
    (["forward_backward", "aten::max_pool2d_with_indices_backward", "aten::fill_"], "max_pool"),
    (["forward_backward", "aten::mkldnn_convolution", "aten::copy_"], "convolution"),
    (["forward_backward", "aten::native_batch_norm"], "batch_norm"),
    (["forward_backward", "aten::mm"], "matmul"),
    (["forward_backward", "aten::fill_"], "everything_else"),
    (["forward_backward"], "python_between_ops"),
    (["optimizer_step", "newton_schulz", "aten::addmm"], "muon_newton_schulz"),
    (["optimizer_step", "aten::lerp_"], "optimizer_steps"),
    (["augment", "aten::mkldnn_convolution"], "augmentation"),
])
def test_an_event_is_counted_by_its_region_then_by_the_layer_it_belongs_to(chain, expected):
    e = None
    for name in chain:
        e = event(name, e)
    name = e.name if e.name in bench.REGIONS else bench._layer_of(e)
    assert bench.category(name, bench._regions_of(e)) == expected


def test_newton_schulz_every_other_step_orthogonalises_on_half_the_steps_only(monkeypatch):
    monkeypatch.setattr(bench, "OURS", TINY)
    images, labels = tiny_data()
    with bench.labelled_newton_schulz() as ns:
        plain = bench.Side(TINY, images, labels, "fp32")
        for _ in range(4):
            plain.step()
        assert ns.calls == 4 * muon_matrices(plain)
        ns.calls = 0
        reusing = bench.build_candidate("ns_every_other_step", images, labels, "fp32", ns)
        before = [p.detach().clone() for p in reusing.model.filter_matrices()]
        for _ in range(4):
            reusing.step()
        assert ns.calls == 2 * muon_matrices(reusing)
        # the skipped steps still move the filters (with the previous update)
        assert all(not torch.equal(a, b) for a, b in zip(before, reusing.model.filter_matrices()))
    assert not isinstance(torch.optim._muon._zeropower_via_newtonschulz, bench.NewtonSchulz)


def test_each_candidate_config_changes_only_its_own_setting():
    assert bench.candidate_config("ns_steps_2").muon_ns_steps == 2
    assert replace(bench.candidate_config("ns_steps_2"), muon_ns_steps=3) == SPEEDRUN
    assert bench.candidate_config("widths_64_192_256").widths == (64, 192, 256)
    wide = bench.candidate_config("batch_1024")
    assert (wide.batch_size, wide.lr, wide.muon_lr) == (1024, 2 * SPEEDRUN.lr, 2 * SPEEDRUN.muon_lr)
    assert bench.PUBLISHED_SHAPE.widths == (64, 256, 256) and bench.PUBLISHED_SHAPE.batch_size == 2000


def test_the_frontier_is_read_from_the_committed_side_by_side():
    frontier = bench.frontier_slope()
    data = json.loads(bench.FRONTIER.read_text())
    assert frontier["gap_points"] == pytest.approx(0.58, abs=1e-9)  # 90.59 - 90.01
    # the 8 -> 11 epoch segment: 0.40 points in 115.5 s
    assert frontier["points_per_second"] == pytest.approx(0.40 / 115.5, rel=1e-6)
    assert 300 < frontier["train_time_11_epochs_s"] < data["ours"]["seconds_mean"]
    # the step ratio that fits the missing seconds into the recipe's training time: steps at
    # 0.711 of their time train 411.3 + 167.5 s worth in 411.3 s (issue 41: not 1 - 167.5/411.3)
    assert round(frontier["step_ratio_to_close_gap"], 3) == 0.711
    assert frontier["step_ratio_to_close_gap"] * (
        frontier["train_time_11_epochs_s"] + frontier["seconds_to_close_gap"]) == pytest.approx(
        frontier["train_time_11_epochs_s"])


def test_quartiles_are_the_middle_half_around_the_median():
    assert bench.quartiles([1.0, 2.0, 3.0, 4.0, 5.0]) == (2.0, 3.0, 4.0)
    assert bench.quartiles([0.9]) == (0.9, 0.9, 0.9)


@pytest.mark.parametrize("argv, message", [
    (["--candidates", "nope"], "--candidates nope: choose from compile"),
    (["--rounds", "0"], "--rounds"),
])
def test_bad_options_end_in_one_line_and_exit_code_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_the_bench_runs_end_to_end_and_writes_tables_and_shares(fake_image_folder, tmp_path,
                                                                   monkeypatch, capsys):
    monkeypatch.setattr(bench, "OURS", replace(TINY, batch_size=20))
    monkeypatch.setattr(bench, "PUBLISHED_SHAPE", replace(TINY, widths=(8, 32, 32),
                                                          batch_size=40))
    monkeypatch.setattr(bench, "GEMM_SIZE", 128)  # a 2048 one in bf16 emulated: minutes
    bench.main(["--data-dir", str(fake_image_folder), "--out-dir", str(tmp_path),
                "--precision", "fp32", "--steps", "2", "--published-steps", "1",
                "--tta-images", "30", "--rounds", "3", "--steps-per-turn", "1",
                "--candidates", "ns_steps_2,widths_64_192_256"])
    for name in ("profile_ours.txt", "profile_published_shape.txt", "profile_tta_ours.txt",
                 "report.txt"):
        assert "Self CPU" in (tmp_path / name).read_text() or name == "report.txt"
    shares = json.loads((tmp_path / "shares.json").read_text())
    assert set(shares["sides"]) == {"ours", "published_shape"}
    candidates = json.loads((tmp_path / "step_candidates.json").read_text())["candidates"]
    measured = candidates["widths_64_192_256"]["ratio_per_step"]
    assert measured["pairs"] == 3 and measured["q1"] <= measured["median"] <= measured["q3"]
    assert "ema" in json.loads((tmp_path / "step_candidates.json").read_text())["untried"]
    assert "round 3/3" in capsys.readouterr().out
    bench.main(["--data-dir", str(fake_image_folder), "--out-dir", str(tmp_path),
                "--candidates-only", "--rounds", "1", "--steps-per-turn", "1",
                "--candidates", "other_precision"])
    extra = json.loads((tmp_path / "step_candidates_other_precision.json").read_text())
    assert extra["precision"] == "fp32"  # the full run's, not this run's own choice
    assert extra["candidates"]["other_precision"]["ratio_per_step"]["pairs"] == 1
    assert "from the full run" in (tmp_path / "report_other_precision.txt").read_text()
