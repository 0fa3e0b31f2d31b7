"""Batches from uint8 image tensors kept on the training device: shuffle, shard across DDP
ranks, augment the whole batch, normalise (airbench's loader, not a per-image DataLoader)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .augment import AugmentConfig, BatchAugment

CIFAR_NORMALIZATION = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))  # report tasks 2-3
IMAGENET_NORMALIZATION = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # task 4 (ResNet18)


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
        self.flip_phase = None  # per image: flipped in even (True) or odd (False) epochs
        if train and augment is not None and augment.alternating_flip:
            # a stream of its own (seed * 100_003 + epoch is the shuffle's)
            g = torch.Generator().manual_seed(seed * 100_003 + 99_991)
            self.flip_phase = (torch.rand(len(labels), generator=g) < 0.5).to(device)
        mean, std = normalization
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)
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
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(n, generator=g)
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
            images = self.images[idx]
            if self.flip_phase is not None:
                flip = self.flip_phase[idx] ^ bool(self.epoch % 2)
                images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
            yield self.prepare(images), self.labels[idx]

    __iter__ = batches

    def prepare(self, images_uint8: torch.Tensor) -> torch.Tensor:
        x = images_uint8.float().div_(255)
        if self.train and self.augment is not None:
            x = self.augment(x)
        if self.resize:
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear",
                              align_corners=False)
        x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x
