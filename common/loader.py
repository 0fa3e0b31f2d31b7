"""Batches from uint8 image tensors kept on the training device: shuffle, shard across DDP
ranks, augment the whole batch, normalise (airbench's loader, not a per-image DataLoader)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .augment import AugmentConfig, BatchAugment
from .seeding import epoch_generator

CIFAR_NORMALIZATION = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))  # starter code (tasks 2-3)
IMAGENET_NORMALIZATION = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # report 4.a: ImageNet's


class TensorLoader:
    """Iterates (images, labels) batches.

    train=True: reshuffled each epoch from (seed, epoch) alone, so a resumed run sees the same
    order; the last incomplete batch is dropped. Under DDP every rank takes a disjoint,
    equally long shard of each epoch (as DistributedSampler does).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *,
                 device, train: bool, augment: AugmentConfig | None = None,
                 normalization=CIFAR_NORMALIZATION, resize: int | None = None, seed: int = 0,
                 rank: int = 0, world_size: int = 1, channels_last: bool = True):
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.train = train
        self.augment = BatchAugment(augment) if augment is not None and augment.active else None
        self.normalization = normalization
        self.resize = resize
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.channels_last = channels_last
        self.epoch = 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        n = len(self.labels)
        if self.train:
            order = torch.randperm(n, generator=epoch_generator(self.seed, self.epoch))
        else:
            order = torch.arange(n)
        if self.world_size > 1:
            if self.train:  # equal shard lengths keep the ranks' steps in lockstep
                per_rank = -(-n // self.world_size)
                order = torch.cat([order, order[: per_rank * self.world_size - n]])
            order = order[self.rank::self.world_size]
        return order

    def _shard_size(self) -> int:
        """len(self._indices()) without drawing the permutation."""
        n = len(self.labels)
        if self.world_size == 1:
            return n
        if self.train:
            return -(-n // self.world_size)
        return len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        n = self._shard_size()
        if self.train and n >= self.batch_size:
            return n // self.batch_size
        return -(-n // self.batch_size)

    def batches(self, start: int = 0):
        """Yield batches from batch number `start` on (resuming mid-epoch skips the rest)."""
        order = self._indices().to(self.device)
        for b in range(start, len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield self.prepare(self.images[idx]), self.labels[idx]

    __iter__ = batches

    def prepare(self, images_uint8: torch.Tensor) -> torch.Tensor:
        x = images_uint8.float().div_(255)
        if self.train and self.augment is not None:
            x = self.augment(x)
        if self.resize:
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear",
                              align_corners=False)
        return normalize(x, self.normalization, self.channels_last)


def normalize(x: torch.Tensor, normalization, channels_last: bool = True) -> torch.Tensor:
    """Images in [0, 1] (or uint8) -> (x - mean) / std per channel, channels_last for the
    convolutions (faster on CPU and GPU alike)."""
    if x.dtype == torch.uint8:
        x = x.float().div_(255)
    mean, std = (torch.tensor(v, device=x.device).view(1, 3, 1, 1) for v in normalization)
    x = (x - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
