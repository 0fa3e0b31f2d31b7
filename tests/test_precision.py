"""Tests of `--precision auto` (common.precision.choose_precision): the decision from each
precision's minimum step time over interleaved rounds, busy spells, identical calls that must
train alike, the per-machine cache and what invalidates it, CUDA. The probe's clock and training
step are stubbed: a simulated machine, no real timing."""
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from common import precision, run, system
from common.errors import UserError
from common.models import CNN1g, Model1
from conftest import trainer_config

CPU = torch.device("cpu")
PROBE_LIMITS = {name: getattr(precision, name)  # conftest shortens them for the other tests
                for name in ("PROBE_SECONDS", "PROBE_MIN_PAIRS", "PROBE_MAX_SECONDS")}
QUIET_REASON = ("auto: bf16 measured faster than fp32 (minimum step times fp32 100.0 ms, "
                "bf16 50.0 ms over 14 interleaved rounds: 2.00x, needs over 1.05x; "
                "Test CPU 9000, Model1 batch 32 at 32px; ")


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


class AlternatingLoad(FakeMachine):
    """Another process whose bursts alternate with the probe's rounds until `until` simulated
    seconds: in one round fp32's step takes `factor` times as long, in the next bf16's. Pair
    by pair the two precisions trade places; each still has its quiet steps."""

    def __init__(self, fp32_s: float, bf16_s: float, until: float, factor: float = 3.0):
        super().__init__(fp32_s, bf16_s)
        self.until, self.factor = until, factor

    def train_step(self, model, optimizer, x, y, device, precision):
        start = self.now
        super().train_step(model, optimizer, x, y, device, precision)
        loaded = "fp32" if (len(self.steps) - 1) // 2 % 2 else "bf16"
        if start < self.until and precision == loaded:
            self.now += (self.factor - 1) * self.seconds[precision]


class NoisyMachine(FakeMachine):
    """Every step slowed by its own factor (`factors`, taken in turn): contention that
    changes from one step to the next."""

    def __init__(self, fp32_s: float, bf16_s: float, factors):
        super().__init__(fp32_s, bf16_s)
        self.factors = list(factors)

    def train_step(self, model, optimizer, x, y, device, precision):
        factor = self.factors[len(self.steps) % len(self.factors)]
        super().train_step(model, optimizer, x, y, device, precision)
        self.now += (factor - 1) * self.seconds[precision]


def simulated(patch, fake, cache):
    """Installs `fake` and a cache folder of its own (for a hypothesis example)."""
    patch.setenv("XDG_CACHE_HOME", str(cache))
    patch.setattr(precision, "clock", fake.clock)
    patch.setattr(precision, "train_step", fake.train_step)
    patch.setattr(precision, "cpu_name", lambda: "Test CPU 9000")


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


def test_the_reason_states_the_minimum_times_their_ratio_the_workload_and_where_it_came_from(
        machine):
    machine(fp32_s=0.100, bf16_s=0.050)
    first = precision.choose_precision("auto", CPU, Model1, 32)
    again = precision.choose_precision("auto", CPU, Model1, 32)
    assert (first.precision, again.precision) == ("bf16", "bf16")
    assert first.reason == QUIET_REASON + "measured now, kept for this machine)"
    assert again.reason == QUIET_REASON + "cached: the first probe of this workload here)"


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
    assert choice.precision == "bf16" and "interleaved rounds: 1.75x" in choice.reason
    assert [e["verdict"] for e in cache_entries(tmp_path).values()] == ["bf16"]
    assert fake.now > 2.0


def test_a_fastest_step_no_other_step_meets_keeps_the_probe_going_until_the_load_lifts(
        machine):
    """A spell that begins between the first round's bf16 step and its fp32 step and outlasts
    the probe's 2 s: bf16's one quiet step against fp32's slowed ones would read 1.64x. Until
    three steps of each meet its minimum the probe goes on; past the spell both are quiet."""
    fake = machine(fp32_s=0.100, bf16_s=0.111, spells=[(0.25, 3.1, 1.82)])
    choice = precision.choose_precision("auto", CPU, Model1, 32)
    assert choice.precision == "fp32" and "interleaved rounds: 0.90x" in choice.reason
    assert 3.1 < fake.now < 4.0


@settings(max_examples=40, deadline=None)
@given(spells=st.lists(st.tuples(st.floats(0, 6), st.floats(0.05, 3), st.floats(1, 10)),
                       max_size=2),
       bf16_speedup=st.sampled_from([1.75, 0.5]))
def test_no_busy_spell_makes_the_probe_keep_a_wrong_verdict(tmp_path_factory, spells,
                                                            bf16_speedup):
    """Property: whatever two busy spells fall on the probe, it keeps (caches) a verdict, and
    that verdict is the quiet machine's."""
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
    assert kept == [quiet] and choice.precision == quiet


def test_pairs_that_disagree_are_decided_by_their_minima_and_kept(machine, monkeypatch, tmp_path):
    """Steps whose cost flips between the precisions from pair to pair (the old probe's
    "could not tell them apart, not kept"): each precision's fastest step is 0.1 s, a tie,
    so fp32, decided at once and kept like any verdict."""
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
    assert choice.precision == "fp32" and "over 7 interleaved rounds: 1.00x" in choice.reason
    assert fake.now < 3.0   # its minima stood once the 2 s were taken: not probed on to 8 s
    assert [e["verdict"] for e in cache_entries(tmp_path).values()] == ["fp32"]
    assert choice.key in cache_entries(tmp_path)


@settings(max_examples=60, deadline=None)
@given(rng=st.randoms(use_true_random=False), busy_steps=st.integers(10, 120),
       bf16_speedup=st.sampled_from([2.0, 1.71, 1.06, 1.04, 0.5]))
def test_three_identical_calls_under_random_busy_spells_train_the_same_precision(
        tmp_path_factory, rng, busy_steps, bf16_speedup):
    """The issue's case as a property: three identical calls in one process on a machine
    busy at first (each of the first 10 to 120 steps slowed by a random factor of its own up
    to 10, another process's load changing from step to step), quiet after, choose one
    precision; the first measures it, the two after say they reuse its verdict."""
    load = [rng.uniform(1, 10) for _ in range(busy_steps)]
    fake = NoisyMachine(0.100, 0.100 / bf16_speedup, load + [1.0] * 1000)
    with pytest.MonkeyPatch.context() as patch:
        simulated(patch, fake, tmp_path_factory.mktemp("cache"))
        choices = [precision.choose_precision("auto", CPU, CNN1g, 32) for _ in range(3)]
    assert len({c.precision for c in choices}) == 1, [c.reason for c in choices]
    assert choices[0].reason.endswith("; measured now, kept for this machine)")
    assert [c.reason.endswith("; cached: the first probe of this workload here)")
            for c in choices[1:]] == [True, True]


def test_three_api_train_calls_on_a_busy_machine_train_the_same_precision(tmp_path, capsys,
                                                                          monkeypatch):
    """The issue's report, through the run's own path (run.choose_run_precision, as
    api.train takes it): bf16 1.71x faster, the first call's probe under bursts that trade
    places pair by pair (the old probe: "could not tell them apart", fp32, not kept; the next
    call: bf16). Each precision's fastest step is a quiet one: bf16, three times."""
    fake = AlternatingLoad(0.100, 0.100 / 1.71, until=8.0)
    simulated(monkeypatch, fake, tmp_path / "xdg-cache")
    session = run.Session("test", {}, CPU, system.DistInfo(), tmp_path, tmp_path, splits=None)
    config = trainer_config(run="mine", model="model1", batch_size=32)
    choices = [run.choose_run_precision(session, config) for _ in range(3)]
    assert [c.precision for c in choices] == ["bf16", "bf16", "bf16"]
    assert "interleaved rounds: 1.71x, needs over 1.05x" in choices[0].reason
    logged = capsys.readouterr().err.splitlines()
    assert logged == [f"mine: bf16 ({c.reason})" for c in choices]
    assert logged[0].endswith("measured now, kept for this machine))")
    assert logged[2].endswith("cached: the first probe of this workload here))")


@settings(max_examples=40, deadline=None)
@given(factors=st.lists(st.floats(1, 20), min_size=1, max_size=40),
       bf16_speedup=st.floats(0.3, 3))
def test_every_probe_decides_and_keeps_its_verdict_whatever_the_timings(
        tmp_path_factory, factors, bf16_speedup):
    """No "undecided, not kept" any more: however erratic the steps, the probe's verdict is
    the run's precision and is in the cache for the next call."""
    cache = tmp_path_factory.mktemp("cache")
    fake = NoisyMachine(0.100, 0.100 / bf16_speedup, factors)
    with pytest.MonkeyPatch.context() as patch:
        simulated(patch, fake, cache)
        choice = precision.choose_precision("auto", CPU, CNN1g, 32)
    path = cache / "cifar10-tasks" / "precision.json"
    kept = json.loads(path.read_text())["probes"] if path.is_file() else {}
    assert [e["verdict"] for e in kept.values()] == [choice.precision]
    assert choice.key in kept and fake.now < 0.3 + 20 * precision.PROBE_MAX_SECONDS


def test_identical_calls_agree_in_a_process_whose_cache_cannot_be_written(machine, tmp_path):
    """A read-only cache folder: the process keeps its first verdict itself, so its later
    identical calls neither probe again nor flip (the next process measures anew)."""
    fake = machine(fp32_s=0.100, bf16_s=0.050)
    (tmp_path / "xdg-cache").write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="could not cache the precision probe"):
        first = precision.choose_precision("auto", CPU, Model1, 32)
    probed = len(fake.steps)
    fake.seconds = {"fp32": 0.050, "bf16": 0.100}   # a probe now would say fp32
    again = [precision.choose_precision("auto", CPU, Model1, 32) for _ in range(2)]
    assert [c.precision for c in [first, *again]] == ["bf16", "bf16", "bf16"]
    assert len(fake.steps) == probed
    assert first.reason.endswith("measured now, kept for this process (the cache file could "
                                 "not be written))")
    assert again[1].reason.endswith("this process's first probe of this workload (the cache "
                                    "file could not be written))")


def test_a_verdict_is_cached_per_cpu_torch_version_model_and_batch(machine, monkeypatch,
                                                                  tmp_path):
    fake = machine(fp32_s=0.100, bf16_s=0.050)
    first = precision.choose_precision("auto", CPU, Model1, 32)
    probed = len(fake.steps)
    # a cache hit: the same answer, said to be cached, no step run; even if the machine changed
    fake.seconds = {"fp32": 0.050, "bf16": 0.100}
    again = precision.choose_precision("auto", CPU, Model1, 32)
    assert again.precision == first.precision and again.reason == first.reason.replace(
        "measured now, kept for this machine", "cached: the first probe of this workload here")
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


def test_a_run_far_faster_than_its_probe_keeps_the_verdict_and_the_next_reason_says_so(
        machine, tmp_path):
    fake = machine(fp32_s=0.100, bf16_s=0.050)     # bf16's fastest step: 640 images/s
    choice = precision.choose_precision("auto", CPU, Model1, 32)
    assert choice.rate == pytest.approx(640)
    assert not precision.review_precision(choice, 600.0)   # the run's pace agrees
    assert "contradicted" not in cache_entries(tmp_path)[choice.key]
    assert precision.review_precision(choice, 1000.0)      # 1.56x the probe's: it ran under load
    assert cache_entries(tmp_path)[choice.key]["verdict"] == "bf16"
    probed = len(fake.steps)
    fake.seconds = {"fp32": 0.050, "bf16": 0.100}    # even were bf16 slower now: no probe, no flip
    again = precision.choose_precision("auto", CPU, Model1, 32)
    assert again.precision == "bf16" and len(fake.steps) == probed
    assert again.reason.endswith("cached: the first probe of this workload here; a run since "
                                 "trained 1.56x faster than its fastest bf16 step, so the probe "
                                 "ran under load: the ratio of minima stands)")
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


def test_the_real_probe_runs_a_model_both_ways_and_measures_each_pair(monkeypatch):
    monkeypatch.setattr(precision, "PROBE_SECONDS", 0.0)  # its rounds alone: no time floor
    monkeypatch.setattr(precision, "PROBE_MAX_SECONDS", 0.0)
    result = precision.probe(CNN1g(), CPU, batch_size=4, image_size=32)
    assert set(result.seconds) == {"fp32", "bf16"} and result.rounds == precision.PROBE_MIN_PAIRS
    assert all(len(t) == result.rounds and min(t) > 0 for t in result.seconds.values())
    assert result.verdict in ("fp32", "bf16") and result.ratio > 0
