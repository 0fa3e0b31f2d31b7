"""`--precision auto`: bf16 on CUDA; on a CPU, whichever of fp32 and bf16 autocast a short
probe measures faster for this model and batch (cached per machine)."""
from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
import warnings
from pathlib import Path

import torch

from .device import cpu_name, resolve_precision
from .errors import OutputError
from .io import save_json
from .trainer import train_step

PRECISIONS = ("fp32", "bf16")
BF16_MIN_SPEEDUP = 1.05  # bf16 only when it is more than 5 % faster: a tie keeps fp32's exactness
PROBE_SECONDS = 2.0      # at least this much timed probing in all: a busy spell of another
#                          process then falls on many steps of both precisions, not on a few
PROBE_MAX_ROUNDS = 100
CACHE_VERSION = 1
clock = time.perf_counter  # the probe's timer (tests replace it)


def choose_precision(requested: str, device, make_model, batch_size: int, image_size: int = 32,
                     steps: int = 3) -> tuple[str, str]:
    """(precision, reason): the precision to train `make_model()` at `batch_size` with."""
    device = torch.device(device)
    if requested != "auto":
        return resolve_precision(requested, device), "asked for"
    if device.type != "cpu":
        precision = resolve_precision("auto", device)
        return precision, f"auto: {precision} on {device.type}"
    cache = _read_cache()
    with torch.random.fork_rng(devices=[]):  # the caller's seeded stream stays as it was
        model = make_model()
        workload = f"{type(model).__name__} batch {batch_size} at {image_size}px"
        key = " | ".join([cpu_name(), f"torch {torch.__version__}", workload,
                          hashlib.sha1(repr(model).encode()).hexdigest()[:8]])  # architecture
        cached = key in cache
        if not cached:
            cache[key] = probe(model, device, batch_size, image_size, steps)
            _write_cache(cache)
    rates = cache[key]
    precision = faster_precision(rates)
    speedup = rates["bf16"] / rates["fp32"]
    verdict = (f"bf16 measured {speedup:.2f}x faster than fp32" if precision == "bf16" else
               f"fp32, bf16 measured {speedup:.2f}x fp32's speed (needs over {BF16_MIN_SPEEDUP}x)")
    return precision, (f"auto: {verdict} on {cpu_name()} ({rates['bf16']:.0f} vs "
                       f"{rates['fp32']:.0f} img/s, {workload})" + (" (cached)" if cached else ""))


def faster_precision(rates: dict) -> str:
    """The decision rule, on images/s per precision."""
    return "bf16" if rates["bf16"] > BF16_MIN_SPEEDUP * rates["fp32"] else "fp32"


def probe(model, device, batch_size: int, image_size: int, steps: int) -> dict:
    """Images/s per precision: training steps on random data, one each way in turn (the order
    alternating, so neither always runs first), after one untimed step each; at least `steps`
    each and PROBE_SECONDS in all. The median step counts, so a disturbed step does not decide."""
    model = model.to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)  # the step itself is the same fp32
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, image_size, image_size, generator=generator).to(
        device, memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch_size,), generator=generator).to(device)
    seconds = {p: [] for p in PRECISIONS}
    for round_ in range(PROBE_MAX_ROUNDS + 1):
        if round_ > steps and sum(map(sum, seconds.values())) >= PROBE_SECONDS:
            break
        for precision in PRECISIONS if round_ % 2 else PRECISIONS[::-1]:
            start = clock()
            train_step(model, optimizer, x, y, device, precision)
            if round_:  # round 0 warms both up
                seconds[precision].append(clock() - start)
    return {p: batch_size / statistics.median(s) for p, s in seconds.items()}


def cache_file() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "cifar10-tasks" / "precision.json"


def _read_cache() -> dict:
    try:
        data = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        return {}
    return {k: v for k, v in data.get("probes", {}).items()
            if isinstance(v, dict) and all(isinstance(v.get(p), (int, float)) and v[p] > 0
                                           for p in PRECISIONS)}


def _write_cache(probes: dict):
    try:
        save_json({"version": CACHE_VERSION, "probes": probes}, cache_file())
    except OutputError as err:  # a cache is an optimisation: the next run probes again
        warnings.warn(f"could not cache the precision probe: {err}")
