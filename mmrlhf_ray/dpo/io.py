"""Where the DPO stages read from: the pair table, the policy checkpoint, and groups.

Pair sources, in order of preference for ``pairs_stage=auto``:
``ref-logps`` (pairs with reference log-probs, train-dpo only), ``score`` (pairs with
reward-service margins), ``pairs`` (margins from elsewhere, labelled by
``margin_source``).
"""

from __future__ import annotations

import os
from typing import Any

from mmrlhf_ray.core.stage import StageDir, StageInputError, require_done
from mmrlhf_ray.data.groups import QueryGroup, group_pairs, split_groups

# Policy checkpoints a run may hold, most trained first.
POLICY_CANDIDATES = (("sft", "policy"), ("build-models", "policy"))


def resolve_pairs_stage(run_dir: str, pairs_stage: str, allowed: tuple[str, ...]) -> StageDir:
    """The finished stage to read pairs from (``auto``: the first finished of ``allowed``)."""
    names = allowed if pairs_stage == "auto" else (pairs_stage,)
    for name in names:
        stage = StageDir(run_dir, name)
        if stage.is_done():
            return require_done(run_dir, name)  # its parts checked too
    raise StageInputError(
        f"no finished pair table in {run_dir} (looked for {', '.join(names)}): run "
        f"`mmrlhf pairs run_dir={run_dir}` (and `mmrlhf score` for reward margins) first"
    )


def resolve_policy(run_dir: str, policy: str) -> str:
    """``policy`` if given, else the run's SFT policy, else the built tiny policy."""
    if policy:
        if not os.path.isdir(policy):
            raise StageInputError(f"policy: {policy} is not a directory")
        return policy
    for stage, sub in POLICY_CANDIDATES:
        path = StageDir(run_dir, stage).path(sub)
        if os.path.isfile(os.path.join(path, "config.json")):
            return path
    raise StageInputError(
        f"no policy in {run_dir} (looked in sft/policy, build-models/policy): run "
        f"`mmrlhf sft run_dir={run_dir}` or pass policy=<HF dir>"
    )


def read_pair_rows(stage: StageDir) -> list[dict[str, Any]]:
    return stage.read().to_pylist()


def margin_sources(rows: list[dict[str, Any]]) -> dict[str, int]:
    """How many pairs carry each ``margin_source`` (so reports say where delta came from)."""
    counts: dict[str, int] = {}
    for r in rows:
        key = str(r.get("margin_source")) if r.get("margin") is not None else "none"
        counts[key] = counts.get(key, 0) + 1
    return counts


def load_split_groups(
    run_dir: str,
    stage: str,
    need_margin: bool,
    need_ref: bool,
    heldout_fraction: float,
    split: str = "train",
) -> list[QueryGroup]:
    """Rebuild the query groups from the stage's pairs and return one split.

    Run on every training worker (the harness calls it), so the pair table, media
    included, is read from storage rather than shipped through the object store.
    """
    rows = read_pair_rows(StageDir(run_dir, stage))
    groups, _ = group_pairs(rows, source=stage, need_margin=need_margin, need_ref=need_ref)
    train, held = split_groups(groups, heldout_fraction, seed=0)
    return train if split == "train" else held
