"""The training sample stream: which image, augmented how, at every position, as a pure function of the seed.

Position p of the stream is (dataset index, p): epoch-wise permutations drawn from the seed, and every
sample augmented with a generator seeded by its position. Augmentation is therefore identical whatever the
number of loader workers or processes, and a resumed run sees the same samples as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch


class SampleStream:
    """Position p of the training stream -> (dataset index, p): epoch-wise permutations from the seed.

    Global iteration ``it`` uses positions ``it*B .. it*B+B-1`` (B = global batch); accumulation step
    k of process r takes the m = B / (iter_size * world) positions starting at it*B + (k*world + r)*m.
    """

    def __init__(self, n: int, seed: int):
        if n < 1:
            raise ValueError("the training data set is empty")
        self.n, self.seed = n, seed
        self._perm: tuple[int, np.ndarray] | None = None

    def index(self, position: int) -> int:
        epoch, offset = divmod(position, self.n)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, 104729, epoch]).permutation(self.n))
        return int(self._perm[1][offset])


class MicroBatches(torch.utils.data.Sampler):
    """Batch sampler: the micro-batches of one process for iterations [start, stop)."""

    def __init__(self, stream: SampleStream, *, batch_size: int, iter_size: int, world: int, rank: int,
                 start: int, stop: int):
        self.stream, self.batch_size, self.iter_size = stream, batch_size, iter_size
        self.world, self.rank, self.start, self.stop = world, rank, start, stop
        self.micro = batch_size // (iter_size * world)

    def __len__(self) -> int:
        return (self.stop - self.start) * self.iter_size

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for it in range(self.start, self.stop):
            for k in range(self.iter_size):
                first = it * self.batch_size + (k * self.world + self.rank) * self.micro
                yield [(self.stream.index(p), p) for p in range(first, first + self.micro)]


class AugmentedView(torch.utils.data.Dataset):
    """``view[(index, position)]`` = the transformed sample, augmented with a generator seeded by position."""

    def __init__(self, dataset: Any, transform: Callable, seed: int):
        self.dataset, self.transform, self.seed = dataset, transform, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, position = key
        image, label = self.dataset[index]
        rng = np.random.default_rng([self.seed, 7919, position])
        return self.transform(image, label, rng)
