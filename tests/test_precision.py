"""Tests of `--precision auto` (common/precision.py): the decision rule, the probe's order, the
per-machine cache and CUDA. The probe's clock and training step are stubbed: no real timing."""
import json

import pytest
import torch

from common import precision
from common.errors import UserError
from common.models import CNN1g, Model1

CPU = torch.device("cpu")


class FakeMachine:
    """A training step that costs `seconds[precision]` on a clock that only it advances."""

    def __init__(self, fp32_s: float, bf16_s: float):
        self.seconds = {"fp32": fp32_s, "bf16": bf16_s}
        self.now = 0.0
        self.steps = []

    def clock(self) -> float:
        return self.now

    def train_step(self, model, optimizer, x, y, device, precision_):
        self.steps.append(precision_)
        self.now += self.seconds[precision_]


@pytest.fixture
def machine(monkeypatch):
    """Returns a function installing a FakeMachine with the given step times; the probe runs
    its `steps` alone (no time floor) unless a test sets PROBE_SECONDS."""
    monkeypatch.setattr(precision, "PROBE_SECONDS", 0.0)

    def install(fp32_s=0.100, bf16_s=0.050):
        fake = FakeMachine(fp32_s, bf16_s)
        monkeypatch.setattr(precision, "clock", fake.clock)
        monkeypatch.setattr(precision, "train_step", fake.train_step)
        monkeypatch.setattr(precision, "cpu_name", lambda: "Test CPU 9000")
        return fake
    return install


def never_built():
    raise AssertionError("the model was built: a probe ran where none should")


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("asked", ["fp32", "bf16"])
def test_an_explicit_precision_is_returned_as_asked_without_a_probe(asked, device):
    assert precision.choose_precision(asked, torch.device(device), never_built, 32) == (
        asked, "asked for")


def test_an_unknown_precision_is_a_user_error():
    with pytest.raises(UserError, match="unknown precision 'fp16'"):
        precision.choose_precision("fp16", CPU, never_built, 32)


def test_auto_on_cuda_is_bf16_without_a_probe():
    assert precision.choose_precision("auto", torch.device("cuda"), never_built, 32) == (
        "bf16", "auto: bf16 on cuda")


@pytest.mark.parametrize("bf16_speedup, expected", [
    (2.00, "bf16"),
    (1.06, "bf16"),   # more than 5 % faster
    (1.04, "fp32"),   # faster, but within 5 %: fp32 keeps its exactness
    (0.08, "fp32"),   # emulated bf16 (a CPU without bf16 instructions)
])
def test_auto_on_a_cpu_picks_bf16_only_when_measured_more_than_5_percent_faster(
        machine, bf16_speedup, expected):
    machine(fp32_s=0.100, bf16_s=0.100 / bf16_speedup)
    chosen, _ = precision.choose_precision("auto", CPU, Model1, 32)
    assert chosen == expected


def test_the_reason_states_the_measured_rates_the_cpu_and_the_workload(machine):
    machine(fp32_s=0.100, bf16_s=0.050)  # batch 32: 320 and 640 images/s
    assert precision.choose_precision("auto", CPU, Model1, 32) == (
        "bf16", ("auto: bf16 measured 2.00x faster than fp32 on Test CPU 9000 (640 vs 320 img/s, "
                 "Model1 batch 32 at 32px)"))
    machine(fp32_s=0.100, bf16_s=0.098)
    chosen, reason = precision.choose_precision("auto", CPU, CNN1g, 64)
    assert chosen == "fp32"
    assert reason == ("auto: fp32, bf16 measured 1.02x fp32's speed (needs over 1.05x) on "
                      "Test CPU 9000 (653 vs 640 img/s, CNN1g batch 64 at 32px)")


def test_the_probe_interleaves_the_precisions_alternating_which_goes_first(machine):
    fake = machine()
    precision.choose_precision("auto", CPU, Model1, 32, steps=3)
    # one untimed step each, then 3 timed ones each
    assert fake.steps == ["bf16", "fp32", "fp32", "bf16", "bf16", "fp32", "fp32", "bf16"]


@pytest.mark.parametrize("fp32_s, bf16_s, timed_rounds", [
    (0.100, 0.050, 14),   # 0.15 s a round: 14 rounds reach 2 s
    (1.000, 2.000, 3),    # slow steps: the 3 asked for already take 9 s
])
def test_the_probe_runs_at_least_the_steps_asked_for_and_2_seconds_in_all(
        machine, monkeypatch, fp32_s, bf16_s, timed_rounds):
    fake = machine(fp32_s, bf16_s)
    monkeypatch.setattr(precision, "PROBE_SECONDS", 2.0)
    precision.choose_precision("auto", CPU, Model1, 32, steps=3)
    assert fake.steps.count("fp32") == fake.steps.count("bf16") == 1 + timed_rounds


def test_one_disturbed_step_does_not_decide(machine, monkeypatch):
    fake = machine(fp32_s=0.100, bf16_s=0.080)
    step = fake.train_step
    calls = []

    def slow_second_timed_bf16(*args):  # another process takes the core for one bf16 step
        step(*args)
        calls.append(args[-1])
        if calls == ["bf16", "fp32", "fp32", "bf16", "bf16"]:
            fake.now += 1.0
    monkeypatch.setattr(precision, "train_step", slow_second_timed_bf16)
    chosen, reason = precision.choose_precision("auto", CPU, Model1, 32)
    assert chosen == "bf16" and "(400 vs 320 img/s" in reason


def test_the_result_is_cached_per_cpu_torch_version_model_and_batch(machine, monkeypatch,
                                                                  tmp_path):
    fake = machine(fp32_s=0.100, bf16_s=0.050)
    first = precision.choose_precision("auto", CPU, Model1, 32)
    probed = len(fake.steps)
    assert probed == 8
    # a cache hit: the same answer, said to be cached, no step run; even if the machine changed
    fake.seconds = {"fp32": 0.050, "bf16": 0.100}
    again = precision.choose_precision("auto", CPU, Model1, 32)
    assert again == (first[0], first[1] + " (cached)") and len(fake.steps) == probed

    stored = json.loads((tmp_path / "xdg-cache" / "cifar10-tasks" / "precision.json").read_text())
    [key] = stored["probes"]
    assert key.startswith(f"Test CPU 9000 | torch {torch.__version__} | Model1 batch 32 at 32px")
    assert stored["probes"][key] == {"fp32": pytest.approx(320), "bf16": pytest.approx(640)}

    # each of these is another workload or machine: probed again (now fp32 is faster)
    assert precision.choose_precision("auto", CPU, Model1, 64)[0] == "fp32"
    assert precision.choose_precision("auto", CPU, lambda: Model1(activation="tanh"), 32)[0] == \
        "fp32"
    monkeypatch.setattr(torch, "__version__", "99.0")
    assert precision.choose_precision("auto", CPU, Model1, 32)[0] == "fp32"
    monkeypatch.setattr(precision, "cpu_name", lambda: "Another CPU")
    assert precision.choose_precision("auto", CPU, Model1, 32)[0] == "fp32"
    assert len(fake.steps) == probed + 4 * 8


def test_a_damaged_cache_file_is_measured_again_and_rewritten(machine, tmp_path):
    fake = machine(fp32_s=0.100, bf16_s=0.050)
    path = tmp_path / "xdg-cache" / "cifar10-tasks" / "precision.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert precision.choose_precision("auto", CPU, Model1, 32)[0] == "bf16"
    assert len(fake.steps) == 8
    assert len(json.loads(path.read_text())["probes"]) == 1


def test_an_unwritable_cache_warns_and_still_decides(machine, tmp_path):
    machine(fp32_s=0.100, bf16_s=0.050)
    (tmp_path / "xdg-cache").write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="could not cache the precision probe"):
        assert precision.choose_precision("auto", CPU, Model1, 32)[0] == "bf16"


def test_the_probe_leaves_the_callers_random_stream_as_it_was(machine):
    machine()
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    precision.choose_precision("auto", CPU, Model1, 32)
    assert torch.equal(torch.rand(3), expected)


def test_the_real_probe_runs_a_model_both_ways_and_returns_positive_rates(monkeypatch):
    monkeypatch.setattr(precision, "PROBE_SECONDS", 0.0)
    rates = precision.probe(CNN1g(), CPU, batch_size=4, image_size=32, steps=1)
    assert set(rates) == {"fp32", "bf16"} and all(r > 0 for r in rates.values())
