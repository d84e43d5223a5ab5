"""The train-dpo stage's per-pair report: every used pair, its split, margin and beta.

The beta is the one the loss table gives the pair (``LossSpec.pair_beta``, the same
function the loss uses). For the kinds whose beta is made step by step from the policy's
own margins (beta-DPO, the implicit-reward beta) it is NaN, and ``beta_rule`` says why:
a report never shows beta_ori for a pair that did not train with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import torch

from mmrlhf_ray.data.groups import QueryGroup
from mmrlhf_ray.dpo.config import LossConfig
from mmrlhf_ray.dpo.loss_specs import loss_spec

PAIR_REPORT_SCHEMA = pa.schema(
    [
        ("pair_id", pa.string()),
        ("query_id", pa.string()),
        ("split", pa.string()),
        ("margin", pa.float32()),
        ("beta", pa.float32()),
        ("beta_rule", pa.string()),
    ]
)


def pair_betas(cfg: LossConfig, margins: list[float | None]) -> list[float]:
    """The per-pair beta of ``cfg.kind`` for these margins (NaN where the kind's beta
    is made during training). Margins are read only by kinds that need them."""
    spec = loss_spec(cfg.kind)
    delta = torch.tensor([float("nan") if m is None else float(m) for m in margins])
    if spec.pair_beta is None:
        return [float("nan")] * len(margins)
    if not spec.needs_margin(cfg):
        delta = torch.zeros_like(delta)
    return spec.pair_beta(cfg, delta).tolist()


def pair_table(
    train: Sequence[QueryGroup], held: Sequence[QueryGroup], cfg: LossConfig
) -> pa.Table:
    """Every used pair (train and held-out) with its split, margin and beta."""
    rows = [
        {"pair_id": p.pair_id, "query_id": g.query_id, "split": split, "margin": p.margin}
        for split, groups in (("train", train), ("heldout", held))
        for g in groups
        for p in g.pairs
    ]
    rule = loss_spec(cfg.kind).beta_rule
    for r, b in zip(rows, pair_betas(cfg, [r["margin"] for r in rows]), strict=True):
        r["beta"], r["beta_rule"] = b, rule
    return pa.Table.from_pylist(rows, schema=PAIR_REPORT_SCHEMA)
