"""Deterministic, resumable data order for data-parallel training (pure Python).

Every rank derives the same permutation of the dataset from ``(seed, epoch)`` and takes
every ``world_size``-th index, so no data moves between workers and a resumed run can
skip exactly the micro-batches it already trained on: micro-batch ``k`` of a rank is a
pure function of ``(seed, world_size, rank, k)``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence


def rank_indices(n: int, seed: int, epoch: int, rank: int, world_size: int) -> list[int]:
    """This rank's dataset indices for ``epoch`` (a shuffled, strided shard).

    The permutation is truncated to a multiple of ``world_size`` so every rank gets the
    same number of examples (no rank waits at a collective the others skipped).
    """
    if n < world_size:
        raise ValueError(f"dataset has {n} examples, fewer than {world_size} workers")
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    usable = (n // world_size) * world_size
    return order[rank:usable:world_size]


def micro_batches(n: int, micro_batch_size: int, seed: int, rank: int, world_size: int,
                  start: int = 0) -> Iterator[list[int]]:
    """Endless micro-batches of indices for ``rank``, beginning at micro-batch ``start``.

    Epochs follow one another; a micro-batch never straddles two epochs (the tail of an
    epoch shorter than ``micro_batch_size`` is merged into nothing: it is skipped).
    """
    per_epoch = n // world_size // micro_batch_size
    if per_epoch < 1:
        raise ValueError(
            f"{n} examples over {world_size} workers cannot fill one micro-batch of "
            f"{micro_batch_size}")
    k = start
    while True:
        epoch, pos = divmod(k, per_epoch)
        shard = rank_indices(n, seed, epoch, rank, world_size)
        yield shard[pos * micro_batch_size:(pos + 1) * micro_batch_size]
        k += 1


def take(rows: Sequence, indices: list[int]) -> list:
    return [rows[i] for i in indices]
