"""Preference pairs -> reward-model batches, and the training step's loss function.

A pair row (``PAIR_SCHEMA``) becomes two ``RewardItem``s (chosen, rejected) sharing the
question and images, each with its ground-truth critique picked by ``critique_source``:

* ``expanded``: ``chosen_critique`` / ``rejected_critique`` (the Table 7 expansion);
* ``human``: ``chosen_reason`` / ``rejected_reason`` (the annotators' short reasons);
* ``auto``: expanded when present, else human;
* ``none``: no critique at all (the "w/o Task 1" score-only ablation).

A row that lacks what the chosen source needs is quarantined with the field named.
The split into train / held-out is by query, so no query's pairs straddle the split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mmrlhf_ray.core.quarantine import quarantine_row
from mmrlhf_ray.data.media import MediaError, row_images
from mmrlhf_ray.reward.items import RewardItem, RewardMeta, encode_items
from mmrlhf_ray.reward.losses import RewardLossWeights, critique_nll, reward_loss
from mmrlhf_ray.reward.model import CritiqueRewardModel, new_reward_model


class PairError(ValueError):
    """A pair cannot be used; ``field`` names the offending column."""

    def __init__(self, pair_id: str, field: str, reason: str):
        super().__init__(f"pair {pair_id}: {field}: {reason}")
        self.pair_id, self.field, self.reason = pair_id, field, reason


@dataclass
class RewardPair:
    """Chosen and rejected items of one pair, with its query and tie flag."""

    pair_id: str
    query_id: str
    category: str
    chosen: RewardItem
    rejected: RewardItem
    is_tie: bool = False  # equal ranks: trained with the tie term, not Eq. 3


def pick_critique(row: dict[str, Any], side: str, source: str) -> str | None:
    """The ground-truth critique of ``side`` ("chosen"/"rejected") under ``source``."""
    pid = str(row.get("pair_id"))
    if source == "none":
        return None
    expanded, human = row.get(f"{side}_critique"), row.get(f"{side}_reason")
    if source == "expanded":
        if not expanded:
            raise PairError(pid, f"{side}_critique", "missing (critique_source=expanded)")
        return expanded
    if source == "human":
        if not human:
            raise PairError(pid, f"{side}_reason", "missing (critique_source=human)")
        return human
    if expanded or human:
        return expanded or human
    raise PairError(pid, f"{side}_critique", "no critique nor reason (critique_source=auto)")


def pair_from_row(
    row: dict[str, Any], source: str, max_frames: int = 4, max_side: int | None = None
) -> RewardPair:
    """A ``RewardPair`` from a pair row, images decoded; raises ``PairError``."""
    pid = str(row.get("pair_id"))
    for name in ("question", "chosen", "rejected"):
        if not isinstance(row.get(name), str) or not row[name]:
            raise PairError(pid, name, "missing or empty")
    try:
        images = row_images(row, max_frames=max_frames, max_side=max_side or None)
    except MediaError as exc:
        raise PairError(pid, exc.field, exc.reason) from exc
    question = row["question"]
    return RewardPair(
        pair_id=pid,
        query_id=str(row.get("query_id") or pid),
        category=str(row.get("category") or "unknown"),
        chosen=RewardItem(question, row["chosen"], images, pick_critique(row, "chosen", source)),
        rejected=RewardItem(
            question, row["rejected"], images, pick_critique(row, "rejected", source)
        ),
        is_tie=is_tie_pair(row),
    )


def is_tie_pair(row: dict[str, Any]) -> bool:
    """A tie, trained with the tie term instead of Eq. 3: the pair says so (``is_tie``:
    the pairs stage's carried equal-rank pairs, the release's own flag), or both sides
    carry the same rank. (Pairs with a constructed positive/negative are preferences.)"""
    if row.get("is_tie"):
        return True
    a, b = row.get("chosen_rank"), row.get("rejected_rank")
    return a is not None and b is not None and a == b


def pairs_from_rows(
    rows: Iterable[dict[str, Any]],
    source: str,
    max_frames: int = 4,
    max_side: int | None = None,
    stage: str = "pairs",
) -> tuple[list[RewardPair], list[dict[str, Any]]]:
    """(usable pairs, quarantine rows {source, locator, field, reason, raw})."""
    good, bad = [], []
    for row in rows:
        try:
            good.append(pair_from_row(row, source, max_frames, max_side))
        except PairError as exc:
            bad.append(quarantine_row(stage, exc.pair_id, exc.field, exc.reason, row))
    return good, bad


def is_heldout(query_id: str, fraction: float, seed: int = 0) -> bool:
    """Deterministic query-level split: a stable hash of (seed, query_id) below fraction."""
    digest = hashlib.sha256(f"{seed}:{query_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split_pairs(
    pairs: Sequence[RewardPair], fraction: float, seed: int = 0
) -> tuple[list[RewardPair], list[RewardPair]]:
    """(train, held-out) by query id."""
    train, held = [], []
    for p in pairs:
        (held if is_heldout(p.query_id, fraction, seed) else train).append(p)
    return train, held


def collate_pairs(
    model: CritiqueRewardModel, pairs: Sequence[RewardPair]
) -> dict[str, torch.Tensor]:
    """One batch of 2P sequences: the P chosen first, then the P rejected, with labels
    on critique tokens and an ``is_tie`` [P] flag."""
    return collate_reward_pairs(list(pairs), model.processor, model.meta, forward="grouped")


# ---- adapters for the Ray Train + DeepSpeed harness (harness/trainer.py) -----------------
# Module-level so ``functools.partial`` of them pickles to the workers.
def encode_pair_row(
    row: dict[str, Any],
    processor: Any,
    source: str = "auto",
    max_frames: int = 4,
    max_side: int = 0,
) -> RewardPair:
    """Harness ``encode``: a pair row (already validated by the driver) -> RewardPair."""
    return pair_from_row(row, source, max_frames, max_side or None)


def load_split_rows(run_dir: str, pairs_stage: str, split: str = "train") -> list[dict[str, Any]]:
    """Harness ``rows`` loader, run on every worker: the pair rows of ``split`` as
    recorded by train-reward's ``split`` part (so the driver ships no images)."""
    from mmrlhf_ray.core.stage import StageDir

    table = StageDir(run_dir, "train-reward").read(columns=["pair_id", "split"])
    ids = {
        p
        for p, s in zip(table["pair_id"].to_pylist(), table["split"].to_pylist(), strict=True)
        if s == split
    }
    rows = StageDir(run_dir, pairs_stage).read().to_pylist()
    return [r for r in rows if str(r.get("pair_id")) in ids]


def load_fold_rows(run_dir: str, pairs_stage: str, fold: int) -> list[dict[str, Any]]:
    """Harness ``rows`` loader of fold model ``fold``: the training pairs of every other
    fold, as recorded by train-reward's ``split`` part (``split`` and ``fold`` columns)."""
    from mmrlhf_ray.core.stage import StageDir

    table = StageDir(run_dir, "train-reward").read(columns=["pair_id", "split", "fold"])
    ids = {
        p
        for p, s, f in zip(
            table["pair_id"].to_pylist(),
            table["split"].to_pylist(),
            table["fold"].to_pylist(),
            strict=True,
        )
        if s == "train" and f != fold
    }
    rows = StageDir(run_dir, pairs_stage).read().to_pylist()
    return [r for r in rows if str(r.get("pair_id")) in ids]


def collate_reward_pairs(
    examples: list[RewardPair], processor: Any, meta: RewardMeta, forward: str = "packed"
) -> dict[str, Any]:
    """Harness ``collate``: P pairs -> 2P items (chosen first) + ``is_tie``.

    ``forward="packed"``: the unique items packed so that items sharing question and
    images (a pair's two sides, every pair of a query) compute that prefix once
    (``packed`` rows, ``item_index`` (2P,), ``item_weight``); ``"grouped"``: 2P padded
    sequences."""
    items = [p.chosen for p in examples] + [p.rejected for p in examples]
    if forward == "packed":
        from mmrlhf_ray.reward.packed import pack_items

        rows, index, weight = pack_items(processor, meta, items, with_labels=True)
        return {
            "packed": rows,
            "item_index": index,
            "item_weight": weight,
            "is_tie": torch.tensor([p.is_tie for p in examples], dtype=torch.bool),
        }
    batch = encode_items(processor, meta, items, with_labels=True)
    batch["is_tie"] = torch.tensor([p.is_tie for p in examples], dtype=torch.bool)
    return batch


def build_reward_model(path: str, meta: RewardMeta, seed: int = 0) -> CritiqueRewardModel:
    """Harness ``build_model``: the backbone at ``path`` + a fresh head (seeded the same
    on every rank; a resumed run then loads the checkpointed head)."""
    model = new_reward_model(
        path,
        seed=seed,
        head_dropout=meta.head_dropout,
        max_length=meta.max_length,
        max_frames=meta.max_frames,
        prompt_template=meta.prompt_template,
        critique_trained=meta.critique_trained,
    )
    model.meta.max_new_tokens = meta.max_new_tokens  # recorded for evaluate reward-bench
    return model.train()


def reward_loss_fn(model: Any, batch: dict[str, torch.Tensor], weights: RewardLossWeights):
    """Harness ``loss_fn(model, batch) -> (loss, metrics)``: the joint objective on a
    batch of 2P sequences (P chosen, then P rejected). ``model`` may be the DeepSpeed
    engine around a ``CritiqueRewardModel``. With ``weights.critique == 0`` (score-only)
    the LM head is not run at all."""
    batch = dict(batch)
    is_tie = batch.pop("is_tie")
    if "packed" in batch:
        return _packed_reward_loss(model, batch, is_tie, weights)
    if weights.critique == 0:
        batch.pop("labels", None)
    out = model(**batch)
    scores = out["scores"]
    n = scores.shape[0] // 2
    nll = critique_nll(out["logits"], out["targets"]) if "logits" in out else scores.sum() * 0.0
    return reward_loss(scores[:n], scores[n:], is_tie.to(scores.device), nll, weights)


def _packed_reward_loss(
    model: Any, batch: dict[str, Any], is_tie: torch.Tensor, weights: RewardLossWeights
):
    """``reward_loss_fn`` on a packed batch (same loss: duplicates weighted back in)."""
    from mmrlhf_ray.reward.packed import weighted_nll

    device = next(model.parameters()).device
    out = model(packed=batch["packed"].to(device))
    scores = out["scores"][batch["item_index"].to(device)]
    n = scores.shape[0] // 2
    nll = weighted_nll(out, batch["item_weight"]) if weights.critique else scores.sum() * 0.0
    return reward_loss(scores[:n], scores[n:], is_tie.to(scores.device), nll, weights)


def make_loss_fn(weights: RewardLossWeights):
    """``reward_loss_fn`` bound to ``weights`` (picklable)."""
    import functools

    return functools.partial(reward_loss_fn, weights=weights)
