"""The precision a run trains in: as asked, or under auto bf16 on CUDA, fp32 on a CPU without
bf16 instructions, and on a CPU with them whichever a probe of the run's own model measures
faster by its minimum step time over interleaved rounds, decided once per machine and kept
(docs/speed.md)."""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

import torch

from . import system
from .data import user_cache_dir
from .files import save_json
from .system import cpu_has_bf16, cpu_name, resolve_precision
from .trainer import train_step

BF16_MIN_SPEEDUP = 1.05  # bf16 only when it is more than 5 % faster: a tie keeps fp32's exactness
PROBE_SECONDS = 2.0      # a probe: at least this much timed stepping, both precisions
PROBE_MIN_PAIRS = 5      # and at least this many rounds (a pair of steps, one per precision)
PROBE_REPEATS = 3        # each precision's minimum met by this many of its steps (itself included)
PROBE_NEAR = 1.05        # ... within 5 %: a minimum no other step meets came from other loads
PROBE_MAX_SECONDS = 8.0  # minima not yet met again are awaited up to this, then decide as they are
PROBE_CONTRADICTED = 1.5  # a run this much faster than its probe's fastest step: probed under load
PROBE_CACHE_VERSION = 3        # 3: minimum-time verdicts (2 held interquartile ones, some from load)
clock = time.perf_counter  # the probe's timer (tests replace it, and train_step, to simulate)


@dataclass(frozen=True)
class ProbeResult:
    """Each precision's step times, taken in interleaved rounds. Contention from another
    process only ever adds time to a step, so each precision's fastest step is the one least
    disturbed, and the ratio of the minima is always a verdict: no spread to straddle."""
    seconds: dict         # precision -> its timed steps' seconds, in the order taken

    @property
    def rounds(self) -> int:
        return len(self.seconds["fp32"])

    @property
    def fastest(self) -> dict:
        return {p: min(self.seconds[p]) for p in system.PRECISIONS}

    @property
    def ratio(self) -> float:
        """fp32's fastest step over bf16's: bf16's speed-up."""
        return self.fastest["fp32"] / self.fastest["bf16"]

    @property
    def verdict(self) -> str:
        return "bf16" if self.ratio > BF16_MIN_SPEEDUP else "fp32"


def probe(model, device, batch_size: int, image_size: int) -> ProbeResult:
    """Training steps on random data, fp32 and bf16 in rounds (which goes first alternating),
    after one untimed step each: at least PROBE_MIN_PAIRS rounds and PROBE_SECONDS of timed
    steps, then on until PROBE_REPEATS steps of each precision meet its minimum, or
    PROBE_MAX_SECONDS: a
    quiet moment that gave one precision its fastest step and ended before the other's came
    would otherwise decide against the other."""
    model = model.to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)  # the step itself is the same fp32
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, image_size, image_size, generator=generator).to(
        device, memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch_size,), generator=generator).to(device)
    for precision in system.PRECISIONS:  # warm-up
        train_step(model, optimizer, x, y, device, precision)
    taken = {p: [] for p in system.PRECISIONS}
    spent = 0.0
    while True:
        order = system.PRECISIONS if len(taken["fp32"]) % 2 else system.PRECISIONS[::-1]
        for precision in order:
            start = clock()
            train_step(model, optimizer, x, y, device, precision)
            taken[precision].append(clock() - start)
            spent += taken[precision][-1]
        minima_met = all(sum(t <= PROBE_NEAR * min(steps) for t in steps) >= PROBE_REPEATS
                         for steps in taken.values())
        # the limits read as the probe runs (not fixed when the module loads): tests shorten them
        if len(taken["fp32"]) >= PROBE_MIN_PAIRS and spent >= PROBE_SECONDS and \
                (minima_met or spent >= PROBE_MAX_SECONDS):
            return ProbeResult(taken)


def _cache_file():
    return user_cache_dir() / "precision.json"


def _read_cache() -> dict:
    """The entries this version wrote: each its verdict, each precision's fastest step
    (images/s), the ratio and the rounds it came from (and the rate of a run that contradicted
    it); anything else is not read."""
    try:
        data = json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != PROBE_CACHE_VERSION \
            or not isinstance(data.get("probes"), dict):
        return {}

    def positive(x):  # a JSON number (not a bool) above 0
        return type(x) in (int, float) and x > 0
    return {k: v for k, v in data["probes"].items() if isinstance(v, dict)
            and v.get("verdict") in system.PRECISIONS and type(v.get("rounds")) is int
            and all(positive(v.get(n)) for n in (*system.PRECISIONS, "ratio", "rounds"))
            and (v.get("contradicted") is None or positive(v["contradicted"]))}


# verdicts the cache file could not keep (a read-only home): kept for the process instead, so
# its identical calls still train alike; keyed by the file too (each test has its own)
_unsaved: dict[tuple[str, str], dict] = {}


def _write_cache(probes: dict) -> bool:
    # an optimisation across processes: when it cannot be written, the next process probes again
    return save_json({"version": PROBE_CACHE_VERSION, "probes": probes}, _cache_file(),
                     if_unwritable="could not cache the precision probe") is not None


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str
    reason: str
    key: str | None = None   # the probe's cache entry, when a probe decided
    rate: float = 0.0        # images/s of the probe's fastest step in `precision`


VERDICTS = {"bf16": "bf16 measured faster than fp32", "fp32": "fp32, bf16 not measured faster"}


def choose_precision(requested: str, device, make_model, batch_size: int,
                     image_size: int = 32) -> PrecisionChoice:
    """The precision to train `make_model()` at `batch_size` with: the one asked for; under
    auto bf16 on CUDA, fp32 on a CPU without bf16 instructions, and on a CPU with them the one
    whose fastest step a probe measured faster: the first probe for this CPU, torch, workload
    and architecture decides, and every later call reuses its verdict."""
    device = torch.device(device)
    if requested != "auto":
        return PrecisionChoice(resolve_precision(requested, device), "asked for")
    if device.type != "cpu":
        precision = resolve_precision("auto", device)
        return PrecisionChoice(precision, f"auto: {precision} on {device.type}")
    if not cpu_has_bf16():  # emulated in fp32 arithmetic, bf16 cannot be the faster
        return PrecisionChoice("fp32", f"auto: fp32, {cpu_name()} has no bf16 instructions "
                                       "(avx512_bf16, amx_bf16)")
    cache = _read_cache()
    with torch.random.fork_rng(devices=[]):  # the caller's seeded stream stays as it was
        model = make_model()
        workload = f"{type(model).__name__} batch {batch_size} at {image_size}px"
        key = " | ".join([cpu_name(), f"torch {torch.__version__}", workload,
                          hashlib.sha1(repr(model).encode()).hexdigest()[:8]])  # architecture
        unsaved = (str(_cache_file()), key)
        if key in cache:
            entry, source = cache[key], "cached: the first probe of this workload here"
        elif unsaved in _unsaved:
            entry, source = _unsaved[unsaved], "this process's first probe of this workload " \
                                               "(the cache file could not be written)"
        else:
            result = probe(model, device, batch_size, image_size)
            entry = {**{p: batch_size / s for p, s in result.fastest.items()},
                     "verdict": result.verdict, "ratio": result.ratio, "rounds": result.rounds}
            source = "measured now, kept for this machine"
            if not _write_cache(cache | {key: entry}):
                _unsaved[unsaved] = entry
                source = "measured now, kept for this process (the cache file could not be " \
                         "written)"
    precision = entry["verdict"]
    fastest = ", ".join(f"{p} {batch_size / entry[p] * 1000:.1f} ms" for p in system.PRECISIONS)
    if entry.get("contradicted"):
        source += (f"; a run since trained {entry['contradicted'] / entry[precision]:.2f}x "
                   f"faster than its fastest {precision} step, so the probe ran under load: "
                   "the ratio of minima stands")
    reason = (f"auto: {VERDICTS[precision]} (minimum step times {fastest} over "
              f"{entry['rounds']} interleaved rounds: {entry['ratio']:.2f}x, needs over "
              f"{BF16_MIN_SPEEDUP}x; {cpu_name()}, {workload}; {source})")
    return PrecisionChoice(precision, reason, key, entry[precision])


def review_precision(choice: PrecisionChoice, images_per_second: float) -> bool:
    """After a run: when it trained far faster than its probe's fastest step in the same
    precision, every probe step was slowed (another process had the cores). The verdict is
    kept, so identical calls keep training alike, and the contradiction is recorded beside it
    (later calls' reasons state it); True when this run contradicted it."""
    if choice.key is None or not choice.rate or \
            images_per_second <= PROBE_CONTRADICTED * choice.rate:
        return False
    cache = _read_cache()
    entry = cache.get(choice.key)
    if entry is not None and images_per_second > (entry.get("contradicted") or 0):
        _write_cache(cache | {choice.key: entry | {"contradicted": images_per_second}})
    return True
