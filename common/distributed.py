"""torchrun / DistributedDataParallel set-up in one place (NCCL on GPUs, gloo on CPU)."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


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


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1), else single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


def all_reduce_sum(values: list[float], device) -> list[float]:
    """Sum numbers over ranks (identity when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def mean_and_any(value: float, flag: bool, device) -> tuple[float, bool]:
    """Mean of a number and OR of a flag over ranks in one collective (once per training step:
    the reduced loss, its NaN/inf and a stop request are then the same on every rank)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value, flag
    t = torch.tensor([value, 1.0 if flag else 0.0], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)  # a NaN or inf on any rank stays NaN or inf
    total, flags = t.tolist()
    return total / dist.get_world_size(), flags > 0


def barrier(device):
    """Wait for every rank (an all_reduce, which needs no device guess under NCCL)."""
    all_reduce_sum([0.0], device)


def all_reduce_tensor(t: torch.Tensor, device) -> torch.Tensor:
    """A tensor summed over ranks (itself when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return t
    reduced = t.to(device=device, dtype=torch.float64)
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced.to(t.dtype).cpu()
