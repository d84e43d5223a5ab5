"""The DPO pieces the Ray Train + DeepSpeed harness (``harness/trainer.py``) plugs in.

The harness asks for ``encode(row, processor)``, ``collate(examples, processor)``,
``loss_fn(model, batch) -> (loss, metrics)`` and ``group_key(row)``. Here a *row is a query group* (one query,
its K unique responses, its pairs), so a micro-batch of ``micro_batch_size`` rows is a
set of queries and every pair of those queries is trained from one forward per
response. All three are picklable (module-level functions, a small class).
"""

from __future__ import annotations

import sys
from typing import Any

import torch

from mmrlhf_ray.data.groups import QueryGroup
from mmrlhf_ray.data.media import is_video
from mmrlhf_ray.dpo.batching import EncodedQuery, encode_group
from mmrlhf_ray.dpo.config import LossConfig
from mmrlhf_ray.dpo.metrics import beta_statistics
from mmrlhf_ray.dpo.objective import LossState, preference_loss
from mmrlhf_ray.dpo.packed import collate_batch, forward_logps


def encode_query(
    group: QueryGroup, processor, max_response_tokens: int = 256, max_frames: int = 4
) -> EncodedQuery:
    """Harness ``encode``: the query's prompt once + its K responses' token ids."""
    return encode_group(processor, group, max_response_tokens, max_frames)


def query_modality(group: QueryGroup) -> str:
    """Harness ``group_key``: "video", "image" or "text". Each step's micro-batches hold one
    modality on every rank, so under ZeRO-3 all ranks run the vision tower equally often."""
    if is_video(group.media):
        return "video"
    return "image" if group.media else "text"


def collate_queries(
    examples: list[EncodedQuery], processor, forward: str = "packed"
) -> dict[str, Any]:
    """Harness ``collate``: one ``PackedBatch`` (or, with ``forward="grouped"``, a
    ``GroupedBatch``) under the key ``grouped``."""
    pad = getattr(processor, "tokenizer", processor).pad_token_id
    return {"grouped": collate_batch(examples, pad, forward)}


class DpoLoss:
    """Harness ``loss_fn``: the policy's forward (packed or grouped, as the batch was
    collated), then the preference loss.

    Reference log-probs come with the batch (precomputed by ``mmrlhf ref-logps``).
    With ``online_reference`` set to a checkpoint path, a frozen copy of the reference
    is loaded on the worker and run every step instead (two models in memory: a
    fallback for when the precomputed values are missing; it says so once).
    """

    def __init__(self, loss: LossConfig, frozen_vision: bool = True, online_reference: str = ""):
        self.loss = loss
        self.frozen_vision = frozen_vision
        self.online_reference = online_reference
        self.state = LossState()
        self._reference = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_reference": None}

    def reference_logps(self, batch, device, dtype) -> torch.Tensor:
        """Per-row reference log-probs: from the batch, or from the online reference model."""
        if not self.online_reference:
            return batch.ref_logps
        if self._reference is None:
            from mmrlhf_ray.models import load_policy

            print(
                f"train-dpo: ONLINE reference from {self.online_reference} (no precomputed "
                "ref-logps): the worker holds two models",
                file=sys.stderr,
            )
            self._reference, _ = load_policy(self.online_reference, dtype=dtype, device=str(device))
            self._reference.requires_grad_(False)
        with torch.no_grad():
            return forward_logps(self._reference, batch, frozen_vision=True)[0]

    def __call__(self, model, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        device = getattr(model, "device", None) or next(model.parameters()).device
        grouped = batch["grouped"].to(device)
        logps, n_tokens = forward_logps(model, grouped, frozen_vision=self.frozen_vision)
        ref = None
        if self.loss.needs_reference:
            ref = self.reference_logps(grouped, device, logps.dtype).to(logps.dtype)
        loss, beta, metrics = preference_loss(self.loss, logps, n_tokens, grouped, ref, self.state)
        metrics["online_reference"] = float(bool(self.online_reference))
        metrics["tokens"] = float(n_tokens.sum())  # response tokens forwarded (throughput)
        upper_w = self.loss.w if self.loss.kind == "mm_dpo" else 0.0  # fixed beta: no range
        metrics.update(beta_statistics(beta, grouped.margins, self.loss.beta_ori, upper_w))
        return loss, metrics
