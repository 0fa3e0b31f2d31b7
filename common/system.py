"""What a run gets from the machine: the device and numeric precision, the machine's record,
torchrun's process group and the random seeds (the signals that stop it: common.errors)."""
from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from typing_extensions import NotRequired, TypedDict

from .errors import UserError
from .recipes import Flag, Text, Whole

PRECISIONS = ("fp32", "bf16")


# ---------------------------------------------------------------- device and precision

def device_available(kind: str) -> bool:
    return kind == "cpu" or (kind == "cuda" and torch.cuda.is_available()) or \
        (kind == "mps" and torch.backends.mps.is_available())


def pick_device(name: str = "auto") -> torch.device:
    """auto: CUDA if present, else Apple MPS, else CPU. Under torchrun the CUDA device is the
    process's local rank (init_distributed sets it)."""
    if name == "auto":
        name = next(n for n in ("cuda", "mps", "cpu") if device_available(n))
    if name not in ("cuda", "mps", "cpu"):
        raise UserError("unknown device; choose auto, cpu, cuda or mps", setting="device",
                        value=name)
    if not device_available(name):
        raise UserError(f"no {name.upper()} device is available here; use auto or cpu",
                        setting="device", value=name)
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto without a model to measure: bf16 on CUDA (tensor cores), fp32 elsewhere.
    common.precision.choose_precision measures on a CPU instead."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise UserError("unknown precision; choose auto, fp32 or bf16", setting="precision",
                        value=precision)
    return precision


def autocast(device: torch.device, precision: str):
    if precision == "bf16" and device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


CPUINFO = "/proc/cpuinfo"


def _cpuinfo() -> dict:
    """The first processor's entries in /proc/cpuinfo ("vendor_id", "cpu family", "model",
    "model name", "stepping", "flags", ...); empty where there is no such file."""
    try:
        with open(CPUINFO) as f:
            text = f.read()
    except OSError:
        return {}
    info = {}
    # the first processor's block: every core of one CPU says the same
    for line in text.strip().split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    return info


def cpu_name() -> str:
    """The CPU's model name ("AMD EPYC 9B14"), else what the platform says."""
    return (_cpuinfo().get("model name") or platform.processor() or platform.machine()
            or "unknown CPU")


def cpu_has_bf16() -> bool:
    flags = set(_cpuinfo().get("flags", "").split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


# the instruction sets that decide a CPU's speed here: AVX2 and AVX-512 for fp32, avx512_bf16
# and AMX (amx_bf16 or amx_tile in /proc/cpuinfo) for bf16
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx")
Flags = TypedDict("Flags", {f: Flag | None for f in CPU_FLAGS})


class Machine(TypedDict):
    """machine_record's one shape, None where the machine did not tell (not recorded)."""
    cpu: Text
    vendor: Text | None
    family: Whole | None
    model: Whole | None
    stepping: Whole | None
    flags: Flags
    threads: Whole
    torch: Text
    device: Text
    gpu: NotRequired[Text]


def machine_record(device: torch.device) -> dict:
    """What a run records about where it ran: the numbers of a run mean little without it.
    The model name alone ("Intel(R) Xeon(R) Processor" on a cloud VM) does not tell two CPUs
    apart, so the record adds /proc/cpuinfo's vendor and its family, model and stepping as
    whole numbers, and `flags`: which of CPU_FLAGS the CPU has. A field the
    machine does not tell is None (not recorded), never a guess: every record has this one
    shape (Machine), so two records of one CPU compare equal field by field."""
    info = _cpuinfo()
    listed = set(info["flags"].split()) if "flags" in info else None
    present = {"amx": {"amx_bf16", "amx_tile"}}
    whole = {k: int(v) if v.isdigit() else None for k, v in info.items()}
    record = {"cpu": cpu_name(), "vendor": info.get("vendor_id") or None,
              "family": whole.get("cpu family"), "model": whole.get("model"),
              "stepping": whole.get("stepping"),
              "flags": {f: None if listed is None else bool(listed & present.get(f, {f}))
                        for f in CPU_FLAGS},
              "threads": torch.get_num_threads(), "torch": torch.__version__,
              "device": str(device)}
    if device.type == "cuda":
        record["gpu"] = torch.cuda.get_device_name(device)
    return record


# ---------------------------------------------------------------- torchrun

@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1), else single process;
    (info, the device this process trains on: its local rank's GPU under CUDA)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistInfo(), device
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    return info, device


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def all_reduce_sum(values: list[float], device) -> list[float]:
    """Sum numbers over ranks (identity when not distributed)."""
    if not _distributed():
        return list(values)
    return all_reduce_tensor(torch.tensor(values, dtype=torch.float64), device).tolist()


def mean_and_any(value: float, flag: bool, device) -> tuple[float, bool]:
    """Mean of a number and OR of a flag over ranks in one collective (once per training step:
    the reduced loss, its NaN/inf and a stop request are then the same on every rank)."""
    if not _distributed():
        return value, flag
    total, flags = all_reduce_sum([value, float(flag)], device)
    return total / dist.get_world_size(), flags > 0


def barrier(device):
    """Wait for every rank (an all_reduce, which needs no device guess under NCCL)."""
    all_reduce_sum([0.0], device)


def all_reduce_tensor(t: torch.Tensor, device) -> torch.Tensor:
    """A tensor summed over ranks (itself when not distributed)."""
    if not _distributed():
        return t
    reduced = t.to(device=device, dtype=torch.float64)
    dist.all_reduce(reduced)  # a sum
    return reduced.to(t.dtype).cpu()


# ---------------------------------------------------------------- seeds

# Every random stream of a run derives from its one seed: the global generators, and the private
# generators of the split, the subset and each epoch's shuffle (seed * 100_003 + epoch). Seeds in
# [0, SEED_LIMIT) are used as they are; any other whole number is hashed into that range, so
# 2**70 and 0 are different runs and no epoch seed leaves torch's signed 64-bit range.
SEED_LIMIT = 2**63 // 100_003


def canonical_seed(seed: int) -> int:
    if 0 <= seed < SEED_LIMIT:
        return seed
    digest = hashlib.sha256(str(seed).encode()).digest()
    return int.from_bytes(digest[:8], "big") % SEED_LIMIT


def seed_everything(seed: int):
    """Python's, NumPy's and torch's global generators (initial weights, augmentation, dropout)."""
    seed = canonical_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """The global generators' states in plain types (torch.load's weights_only reads them back):
    a checkpoint's, for a resumed run to draw what the run never stopped would have drawn."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [kind, keys.tolist(), pos, has_gauss, cached]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict):
    # .cpu(): the checkpoint may be mapped onto a GPU; the generators take CPU byte tensors
    torch.set_rng_state(state["torch"].cpu())
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def generator(seed: int, offset: int = 0) -> torch.Generator:
    """A private CPU generator for one purpose (the split, the subset, the whitening sample),
    independent of the global ones; `offset` gives another purpose its own stream."""
    return torch.Generator().manual_seed(canonical_seed(seed) + offset)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of one epoch's shuffle: a function of (seed, epoch) alone, so a resumed
    run draws the same order."""
    return torch.Generator().manual_seed(canonical_seed(seed) * 100_003 + epoch)
