"""The precision a run trains in: as asked, or under auto bf16 on CUDA, fp32 on a CPU without
bf16 instructions, and on a CPU with them whichever a probe of the run's own model measures
faster in interleaved pairs of steps, kept per machine when the pairs' spread carries the
verdict (docs/speed.md)."""
from __future__ import annotations

import hashlib
import json
import statistics
import time
from dataclasses import dataclass

import torch

from . import system
from .data import user_cache_dir
from .files import save_json
from .system import cpu_has_bf16, cpu_name, resolve_precision
from .trainer import train_step

BF16_MIN_SPEEDUP = 1.05  # bf16 only when it is more than 5 % faster: a tie keeps fp32's exactness
PROBE_SECONDS = 2.0      # a first probe: at least this much timed stepping, both precisions
PROBE_MAX_SECONDS = 8.0  # a probe whose pairs disagree goes on up to this before it gives up
PROBE_MIN_PAIRS = 5
PROBE_CONTRADICTED = 1.5  # a run this much faster than its probe said: the probe was disturbed
CACHE_VERSION = 2
clock = time.perf_counter  # the probe's timer (tests replace it, and train_step, to simulate)


@dataclass(frozen=True)
class ProbeResult:
    """Interleaved pairs of steps, one in each precision: each pair's ratio is bf16's speed
    relative to fp32's over a moment both shared, so a busy spell that slows both leaves the
    ratio alone. decided: the middle half of the ratios lies on one side of the threshold."""
    rates: dict           # images/s per precision (median step)
    ratios: list          # per pair: fp32 seconds / bf16 seconds

    @property
    def quartiles(self) -> tuple[float, float, float]:
        q = statistics.quantiles(self.ratios, n=4, method="inclusive")
        return q[0], q[1], q[2]

    @property
    def verdict(self) -> str | None:
        low, _, high = self.quartiles
        if low > BF16_MIN_SPEEDUP:
            return "bf16"
        if high <= BF16_MIN_SPEEDUP:
            return "fp32"
        return None  # the spread straddles the threshold: no verdict to keep


def probe(model, device, batch_size: int, image_size: int,
          seconds: float = PROBE_SECONDS, max_seconds: float = PROBE_MAX_SECONDS) -> ProbeResult:
    """Training steps on random data, fp32 and bf16 in pairs (the order alternating), after one
    untimed step each; `seconds` of timed steps, extended up to `max_seconds` while the pairs'
    spread cannot decide."""
    model = model.to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)  # the step itself is the same fp32
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, image_size, image_size, generator=generator).to(
        device, memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch_size,), generator=generator).to(device)
    for precision in system.PRECISIONS:  # warm-up
        train_step(model, optimizer, x, y, device, precision)
    pairs, spent = [], 0.0
    while True:
        timed = {}
        order = system.PRECISIONS if len(pairs) % 2 else system.PRECISIONS[::-1]
        for precision in order:
            start = clock()
            train_step(model, optimizer, x, y, device, precision)
            timed[precision] = clock() - start
        pairs.append(timed)
        spent += sum(timed.values())
        if len(pairs) < PROBE_MIN_PAIRS or spent < seconds:
            continue
        result = ProbeResult({p: batch_size / statistics.median(t[p] for t in pairs)
                              for p in system.PRECISIONS},
                             [t["fp32"] / t["bf16"] for t in pairs])
        if result.verdict is not None or spent >= max_seconds:
            return result


def _cache_file():
    return user_cache_dir() / "precision.json"


def _read_cache() -> dict:
    try:
        data = json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        return {}
    return {k: v for k, v in data.get("probes", {}).items()
            if isinstance(v, dict) and v.get("verdict") in system.PRECISIONS
            and all(isinstance(v.get(p), (int, float)) and v[p] > 0 for p in system.PRECISIONS)}


def _write_cache(probes: dict):
    # an optimisation: when it cannot be written, the next run probes again
    save_json({"version": CACHE_VERSION, "probes": probes}, _cache_file(),
              if_unwritable="could not cache the precision probe")


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str
    reason: str
    key: str | None = None   # the probe's cache entry, when a probe decided
    rate: float = 0.0        # the images/s the probe measured for `precision`


def choose_precision(requested: str, device, make_model, batch_size: int,
                     image_size: int = 32) -> PrecisionChoice:
    """The precision to train `make_model()` at `batch_size` with: the one asked for; under
    auto bf16 on CUDA, fp32 on a CPU without bf16 instructions, and on a CPU with them the one
    a probe measured faster (kept per machine when the probe's spread carried its verdict)."""
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
        entry, cached = cache.get(key), key in cache
        if entry is None:
            result = probe(model, device, batch_size, image_size)
            low, mid, high = result.quartiles
            entry = {**result.rates, "verdict": result.verdict, "median": mid,
                     "quartiles": [low, high], "pairs": len(result.ratios)}
            if result.verdict is not None:
                cache[key] = entry
                _write_cache(cache)
    precision = entry["verdict"] or "fp32"
    spread = f"median {entry['median']:.2f}x, middle half {entry['quartiles'][0]:.2f}-" \
             f"{entry['quartiles'][1]:.2f}x over {entry['pairs']} pairs"
    verdict = ({"bf16": "bf16 measured faster than fp32", "fp32": "fp32, bf16 not faster"}
               [entry["verdict"]] if entry["verdict"] else
               "fp32, the probe could not tell them apart (not kept; probes again next time)")
    reason = (f"auto: {verdict} ({spread}, needs over {BF16_MIN_SPEEDUP}x; {cpu_name()}, "
              f"{workload})" + (" (cached)" if cached else ""))
    return PrecisionChoice(precision, reason, key if entry["verdict"] else None,
                           entry[precision])


def review_precision(choice: PrecisionChoice, images_per_second: float) -> bool:
    """After a run: when it trained far faster than its cached probe measured the same
    precision, the probe was taken in a busy spell; forget it (True), so the next run probes."""
    if choice.key is None or not choice.rate or \
            images_per_second <= PROBE_CONTRADICTED * choice.rate:
        return False
    cache = _read_cache()
    if cache.pop(choice.key, None) is not None:
        _write_cache(cache)
    return True
