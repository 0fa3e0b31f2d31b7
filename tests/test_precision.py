"""Tests of `--precision auto` (common.precision.choose_precision): the decision from interleaved
pairs and their spread, busy spells, the per-machine cache and what invalidates it, CUDA. The
probe's clock and training step are stubbed: a simulated machine, no real timing."""
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from common import precision
from common.errors import UserError
from common.models import CNN1g, Model1

CPU = torch.device("cpu")
PROBE_LIMITS = {name: getattr(precision, name)  # conftest shortens them for the other tests
                for name in ("PROBE_SECONDS", "PROBE_MIN_PAIRS", "PROBE_MAX_SECONDS")}


class FakeMachine:
    """A training step that costs `seconds[precision]` on a clock only it advances; during a
    busy spell (start, end, factor) in simulated seconds every step that begins in it takes
    `factor` times as long: another process has the cores."""

    def __init__(self, fp32_s: float, bf16_s: float, spells=()):
        self.seconds = {"fp32": fp32_s, "bf16": bf16_s}
        self.spells = list(spells)
        self.now = 0.0
        self.steps = []

    def clock(self) -> float:
        return self.now

    def train_step(self, model, optimizer, x, y, device, precision):
        self.steps.append(precision)
        factor = next((f for start, end, f in self.spells if start <= self.now < end), 1.0)
        self.now += self.seconds[precision] * factor


@pytest.fixture(autouse=True)
def real_probe(tmp_path, monkeypatch):
    """The probe's own limits, a cache folder of each test's own, and a CPU with bf16
    instructions (the simulated machines decide what they are worth)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    for name, value in PROBE_LIMITS.items():
        monkeypatch.setattr(precision, name, value)


@pytest.fixture
def machine(monkeypatch):
    """Installs a FakeMachine with the given step times (and spells)."""
    def install(fp32_s=0.100, bf16_s=0.050, spells=()):
        fake = FakeMachine(fp32_s, bf16_s, spells)
        monkeypatch.setattr(precision, "clock", fake.clock)
        monkeypatch.setattr(precision, "train_step", fake.train_step)
        monkeypatch.setattr(precision, "cpu_name", lambda: "Test CPU 9000")
        return fake
    return install


def never_built():
    raise AssertionError("the model was built: a probe ran where none should")


def cache_entries(tmp_path) -> dict:
    path = tmp_path / "xdg-cache" / "cifar10-tasks" / "precision.json"
    return json.loads(path.read_text())["probes"] if path.is_file() else {}


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("asked", ["fp32", "bf16"])
def test_an_explicit_precision_is_returned_as_asked_without_a_probe(asked, device):
    choice = precision.choose_precision(asked, torch.device(device), never_built, 32)
    assert (choice.precision, choice.reason) == (asked, "asked for")


def test_an_unknown_precision_is_a_user_error_naming_the_setting():
    with pytest.raises(UserError) as err:
        precision.choose_precision("fp16", CPU, never_built, 32)
    assert (err.value.setting, err.value.value) == ("precision", "fp16")


def test_auto_on_a_cpu_without_bf16_instructions_is_fp32_without_a_probe(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    choice = precision.choose_precision("auto", CPU, never_built, 32)
    assert choice.precision == "fp32" and "has no bf16 instructions" in choice.reason


def test_auto_on_cuda_is_bf16_without_a_probe():
    choice = precision.choose_precision("auto", torch.device("cuda"), never_built, 32)
    assert (choice.precision, choice.reason) == ("bf16", "auto: bf16 on cuda")


@pytest.mark.parametrize("bf16_speedup, expected", [
    (2.00, "bf16"),
    (1.06, "bf16"),   # more than 5 % faster
    (1.04, "fp32"),   # faster, but within 5 %: fp32 keeps its exactness
    (0.08, "fp32"),   # emulated bf16 (a CPU without bf16 instructions)
])
def test_auto_on_a_quiet_cpu_picks_bf16_only_when_more_than_5_percent_faster(
        machine, bf16_speedup, expected):
    machine(fp32_s=0.100, bf16_s=0.100 / bf16_speedup)
    assert precision.choose_precision("auto", CPU, Model1, 32).precision == expected


def test_the_reason_states_the_median_ratio_its_spread_the_cpu_and_the_workload(machine):
    machine(fp32_s=0.100, bf16_s=0.050)
    choice = precision.choose_precision("auto", CPU, Model1, 32)
    assert choice.precision == "bf16"
    assert choice.reason.startswith("auto: bf16 measured faster than fp32 (median 2.00x, "
                                    "middle half 2.00-2.00x over ")
    assert "needs over 1.05x; Test CPU 9000, Model1 batch 32 at 32px)" in choice.reason


def test_the_probe_alternates_which_precision_of_a_pair_goes_first(machine):
    fake = machine()
    precision.choose_precision("auto", CPU, Model1, 32)
    warm_up, timed = fake.steps[:2], fake.steps[2:]
    assert sorted(warm_up) == ["bf16", "fp32"]
    pairs = [timed[i:i + 2] for i in range(0, len(timed), 2)]
    assert all(sorted(p) == ["bf16", "fp32"] for p in pairs)
    assert [p[0] for p in pairs[:4]] == ["bf16", "fp32", "bf16", "fp32"]


@pytest.mark.parametrize("fp32_s, bf16_s, minimum_pairs", [
    (0.100, 0.050, 14),   # 0.15 s a pair: 14 pairs reach 2 s
    (1.000, 2.000, 5),    # slow steps: the 5 pairs it always takes already last 15 s
])
def test_the_probe_takes_at_least_5_pairs_and_2_seconds(machine, fp32_s, bf16_s, minimum_pairs):
    fake = machine(fp32_s, bf16_s)
    precision.choose_precision("auto", CPU, Model1, 32)
    assert (len(fake.steps) - 2) // 2 == minimum_pairs


def test_a_busy_spell_that_slows_both_precisions_does_not_change_the_verdict(machine, tmp_path):
    """The case seen on a shared 2-core EPYC: another job ran during the probe."""
    fake = machine(fp32_s=0.100, bf16_s=0.057, spells=[(0.3, 1.6, 5.0)])
    choice = precision.choose_precision("auto", CPU, Model1, 32)
    assert choice.precision == "bf16" and "median 1.75x" in choice.reason
    assert [e["verdict"] for e in cache_entries(tmp_path).values()] == ["bf16"]
    assert fake.now > 2.0


@settings(max_examples=40, deadline=None)
@given(spells=st.lists(st.tuples(st.floats(0, 6), st.floats(0.05, 3), st.floats(1, 10)),
                       max_size=2),
       bf16_speedup=st.sampled_from([1.75, 0.5]))
def test_no_busy_spell_makes_the_probe_keep_a_wrong_verdict(tmp_path_factory, spells,
                                                            bf16_speedup):
    """Property: whatever two busy spells fall on the probe, the verdict it keeps (caches) is
    the quiet machine's; a probe the spells left undecided keeps nothing."""
    cache = tmp_path_factory.mktemp("cache")
    fake = FakeMachine(0.100, 0.100 / bf16_speedup,
                       [(start, start + length, f) for start, length, f in spells])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(cache))
        patch.setattr(precision, "clock", fake.clock)
        patch.setattr(precision, "train_step", fake.train_step)
        choice = precision.choose_precision("auto", CPU, CNN1g, 32)
    quiet = "bf16" if bf16_speedup > 1 else "fp32"
    path = cache / "cifar10-tasks" / "precision.json"
    kept = [e["verdict"] for e in json.loads(path.read_text())["probes"].values()] \
        if path.is_file() else []
    assert kept in ([quiet], [])
    assert choice.precision == quiet or (not kept and choice.precision == "fp32")


def test_pairs_that_disagree_are_probed_longer_then_not_kept(machine, monkeypatch, tmp_path):
    """Steps whose cost flips between the precisions from pair to pair: no verdict the spread
    can carry; the probe goes on to its limit, trains in fp32 and keeps nothing."""
    fake = machine(fp32_s=0.100, bf16_s=0.100)
    step = fake.train_step

    def erratic(*args):
        step(*args)
        if ((len(fake.steps) - 1) // 2) % 2:   # every other pair, bf16 is slow, else fp32
            fake.now += 0.1 if args[-1] == "bf16" else 0.0
        else:
            fake.now += 0.1 if args[-1] == "fp32" else 0.0
    monkeypatch.setattr(precision, "train_step", erratic)
    choice = precision.choose_precision("auto", CPU, Model1, 32)
    assert choice.precision == "fp32" and "could not tell them apart" in choice.reason
    assert fake.now >= precision.PROBE_MAX_SECONDS and cache_entries(tmp_path) == {}
    assert choice.key is None


def test_a_verdict_is_cached_per_cpu_torch_version_model_and_batch(machine, monkeypatch,
                                                                  tmp_path):
    fake = machine(fp32_s=0.100, bf16_s=0.050)
    first = precision.choose_precision("auto", CPU, Model1, 32)
    probed = len(fake.steps)
    # a cache hit: the same answer, said to be cached, no step run; even if the machine changed
    fake.seconds = {"fp32": 0.050, "bf16": 0.100}
    again = precision.choose_precision("auto", CPU, Model1, 32)
    assert (again.precision, again.reason) == (first.precision, first.reason + " (cached)")
    assert len(fake.steps) == probed
    [key] = cache_entries(tmp_path)
    assert key.startswith(f"Test CPU 9000 | torch {torch.__version__} | Model1 batch 32 at 32px")
    # each of these is another workload or machine: probed again (now fp32 is faster)
    assert precision.choose_precision("auto", CPU, Model1, 64).precision == "fp32"
    assert precision.choose_precision("auto", CPU, lambda: Model1(activation="tanh"),
                                    32).precision == "fp32"
    monkeypatch.setattr(torch, "__version__", "99.0")
    assert precision.choose_precision("auto", CPU, Model1, 32).precision == "fp32"
    assert len(cache_entries(tmp_path)) == 4


def test_a_run_far_faster_than_its_cached_probe_forgets_it(machine, tmp_path):
    machine(fp32_s=0.100, bf16_s=0.050)            # bf16 probed at 640 images/s
    choice = precision.choose_precision("auto", CPU, Model1, 32)
    assert choice.rate == pytest.approx(640)
    assert not precision.review_precision(choice, 600.0)   # the run's pace agrees: kept
    assert len(cache_entries(tmp_path)) == 1
    assert precision.review_precision(choice, 1000.0)      # 1.56x the probe's: it was disturbed
    assert cache_entries(tmp_path) == {}
    assert not precision.review_precision(precision.PrecisionChoice("fp32", "asked for"), 1e9)


def test_a_damaged_cache_file_is_measured_again_and_rewritten(machine, tmp_path):
    machine(fp32_s=0.100, bf16_s=0.050)
    path = tmp_path / "xdg-cache" / "cifar10-tasks" / "precision.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert precision.choose_precision("auto", CPU, Model1, 32).precision == "bf16"
    assert len(cache_entries(tmp_path)) == 1


def test_an_unwritable_cache_warns_and_still_decides(machine, tmp_path):
    machine(fp32_s=0.100, bf16_s=0.050)
    (tmp_path / "xdg-cache").write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="could not cache the precision probe"):
        assert precision.choose_precision("auto", CPU, Model1, 32).precision == "bf16"


def test_the_probe_leaves_the_callers_random_stream_as_it_was(machine):
    machine()
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    precision.choose_precision("auto", CPU, Model1, 32)
    assert torch.equal(torch.rand(3), expected)


def test_the_real_probe_runs_a_model_both_ways_and_measures_each_pair():
    result = precision.probe(CNN1g(), CPU, batch_size=4, image_size=32, seconds=0.0,
                           max_seconds=0.0)
    assert set(result.rates) == {"fp32", "bf16"} and all(r > 0 for r in result.rates.values())
    assert len(result.ratios) == precision.PROBE_MIN_PAIRS and all(r > 0 for r in result.ratios)
