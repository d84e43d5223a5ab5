"""Deterministic, resumable data order for data-parallel training (pure Python).

Every rank derives the same schedule from ``(seed, epoch)`` and takes its own slice,
so no data moves between workers and a resumed run skips exactly the micro-batches it
already trained on: micro-batch ``k`` of a rank is a pure function of
``(seed, world_size, rank, k)``.

Modality grouping: with ``groups`` (one key per example, e.g. "image" / "video"), every
rank's micro-batch ``k`` comes from the same group. Under ZeRO-3 this is required, not
just tidy: the vision tower runs once per modality present in a batch, and each run
gathers its partitioned weights with collectives, so ranks holding different
modalities would issue different collectives and hang.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence


def _global_batches(
    groups: Sequence[str], seed: int, epoch: int, size: int, world_size: int
) -> list[list[int]]:
    """One epoch as a shuffled list of global batches (``<= size`` indices, one group each).

    A group's tail shorter than ``size`` still forms a batch when it has at least
    ``world_size`` examples (it is trimmed to a multiple of ``world_size``); a smaller
    tail sits this epoch out (the next epoch's shuffle gives it other neighbours).
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    by_group: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    batches: list[list[int]] = []
    for key in sorted(by_group):
        members = by_group[key]
        rng.shuffle(members)
        for start in range(0, len(members), size):
            chunk = members[start : start + size]
            chunk = chunk[: len(chunk) // world_size * world_size]
            if chunk:
                batches.append(chunk)
    rng.shuffle(batches)
    return batches


def micro_batches(
    n: int,
    micro_batch_size: int,
    seed: int,
    rank: int,
    world_size: int,
    start: int = 0,
    groups: Sequence[str] | None = None,
) -> Iterator[list[int]]:
    """Endless micro-batches of dataset indices for ``rank``, from micro-batch ``start``.

    Each global batch of ``micro_batch_size * world_size`` indices is dealt round-robin
    to the ranks, so all ranks get equally many examples at every step. ``groups``
    (length ``n``) keeps each global batch within one group (see the module docstring).
    """
    groups = list(groups) if groups is not None else ["all"] * n
    if len(groups) != n:
        raise ValueError(f"groups: {len(groups)} keys for {n} examples")
    size = micro_batch_size * world_size
    if not _global_batches(groups, seed, 0, size, world_size):
        raise ValueError(f"{n} examples cannot fill one batch over {world_size} workers")
    k = start
    epoch, offset = 0, k
    while True:
        batches = _global_batches(groups, seed, epoch, size, world_size)
        if offset >= len(batches):
            offset -= len(batches)
            epoch += 1
            continue
        yield batches[offset][rank::world_size]
        offset += 1


def rank_indices(
    n: int,
    seed: int,
    epoch: int,
    rank: int,
    world_size: int,
    micro_batch_size: int = 1,
    groups: Sequence[str] | None = None,
) -> list[int]:
    """All of ``rank``'s indices in ``epoch`` (for inspection and tests)."""
    groups = list(groups) if groups is not None else ["all"] * n
    size = micro_batch_size * world_size
    return [
        i
        for b in _global_batches(groups, seed, epoch, size, world_size)
        for i in b[rank::world_size]
    ]
