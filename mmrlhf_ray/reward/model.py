"""The critique reward model: a VLM backbone, its LM head (critique head h_l) and a
scalar scoring head h_r (paper Sec. 3.2, Fig. 4).

The sequence is the chat prompt "evaluator instruction + [Question] + [LMM Response]"
(with the images) followed by the assistant turn = the critique and the end token. The
score is read from the final hidden state at the last non-pad token, i.e. the end token
after the critique. The three inference modes of Table 2:

* ``generate``: greedy-decode a critique with the LM head, then score prompt + critique;
* ``given``: score with a critique supplied by the caller (e.g. ground truth);
* ``none``: score with an empty critique (what a score-only model sees in training).

On disk (Hugging Face layout): the backbone's ``config.json`` + ``model.safetensors``,
its processor files, ``reward_head.safetensors`` and ``reward_config.json`` beside them.
Weights load from safetensors only; ``trust_remote_code`` stays off.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mmrlhf_ray.data.prompts import CRITIQUE_PROMPT
from mmrlhf_ray.models.encoding import IGNORE_INDEX
from mmrlhf_ray.reward.items import (
    RewardItem,
    RewardMeta,
    encode_items,
    pad_token_id,
)
from mmrlhf_ray.reward.packed import pack_items, packed_outputs

HEAD_FILE = "reward_head.safetensors"
META_FILE = "reward_config.json"


class RewardHead(nn.Module):
    """Official-style scoring head: dropout, Linear(h, h), tanh, dropout, Linear(h, 1)."""

    def __init__(self, hidden_size: int, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``[B, H]`` final hidden states -> ``[B]`` scalar rewards."""
        x = torch.tanh(self.dense(self.dropout(h)))
        return self.out_proj(self.dropout(x)).squeeze(-1)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last non-pad token of each row (works for left or right padding)."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (attention_mask.long() * (positions + 1)).argmax(dim=1)


class CritiqueRewardModel(nn.Module):
    """Backbone VLM + LM head (critique) + scalar head, with encode/score/critique."""

    def __init__(self, backbone: nn.Module, processor: Any, meta: RewardMeta):
        super().__init__()
        self.backbone = backbone
        self.processor = processor
        self.meta = meta
        self.head = RewardHead(meta.hidden_size, meta.head_dropout)
        self.pad_id = pad_token_id(self.tokenizer)
        self.forward_kind = "packed"  # scoring forward: packed (mmrlhf_ray.reward.packed) | grouped

    @property
    def tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)

    # ---- encoding ---------------------------------------------------------------------
    def encode(
        self,
        items: Sequence[RewardItem | Mapping],
        with_labels: bool = False,
        left_pad: bool = False,
        add_critique: bool = True,
    ) -> dict[str, torch.Tensor]:
        """``encode_items`` with this model's processor and settings."""
        return encode_items(self.processor, self.meta, items, with_labels, left_pad, add_critique)

    # ---- forward ----------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        packed: Any = None,
        **vision: Any,
    ) -> dict[str, torch.Tensor]:
        """Scores ``[B]`` at the last non-pad token; with ``labels``, also ``logits``
        ``[N, V]`` at the N positions that predict a labelled token and ``targets`` [N]
        (the LM head runs only there: cheap even with a 150k vocabulary). With
        ``packed`` rows (``reward.packed.pack_items``): ``reward.packed.packed_outputs``."""
        if packed is not None:
            return packed_outputs(self, packed)
        hidden = self._last_hidden(input_ids, attention_mask, vision)
        idx = last_token_index(attention_mask)
        last = hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]
        out = {"scores": self.head(last.to(self.head.dense.weight.dtype))}
        if labels is not None:
            shifted = labels[:, 1:]
            keep = shifted != IGNORE_INDEX
            lm_head = self.backbone.get_output_embeddings()
            out["logits"] = lm_head(hidden[:, :-1][keep])
            out["targets"] = shifted[keep]
        return out

    def _last_hidden(self, input_ids, attention_mask, vision) -> torch.Tensor:
        inner = getattr(self.backbone, "model", None)
        if inner is not None:
            res = inner(input_ids=input_ids, attention_mask=attention_mask, **vision)
            return res.last_hidden_state
        res = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, **vision
        )
        return res.hidden_states[-1]

    # ---- inference (Table 2's modes) -------------------------------------------------
    @torch.no_grad()
    def critique(
        self, items: Sequence[RewardItem | Mapping], max_new_tokens: int = 64, batch_size: int = 8
    ) -> list[str]:
        """Greedy critiques from the LM head (the critique head h_l).

        A score-only model (``meta.critique_trained`` false, the "w/o Task 1" ablation)
        never learnt to critique: it returns empty critiques, which is what it was
        trained to score with."""
        if not self.meta.critique_trained:
            return ["" for _ in items]
        was_training = self.training
        self.eval()
        texts: list[str] = []
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            batch = self.encode(chunk, left_pad=True, add_critique=False)
            out = self.backbone.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self.pad_id,
                eos_token_id=self.tokenizer.eos_token_id,
            )
            new = out[:, batch["input_ids"].shape[1] :]
            texts += [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
        self.train(was_training)
        return texts

    @torch.no_grad()
    def score(self, items: Sequence[RewardItem | Mapping], batch_size: int = 8) -> list[float]:
        """Rewards of prompt + the items' own critiques (empty when ``critique`` is None)."""
        was_training = self.training
        self.eval()
        scores: list[float] = []
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            if self.forward_kind == "packed":
                rows, index, _ = pack_items(self.processor, self.meta, chunk)
                device = next(self.parameters()).device
                scores += self(packed=rows.to(device))["scores"][index.to(device)].float().tolist()
                continue
            batch = self.encode(chunk)
            scores += self(**batch)["scores"].float().tolist()
        self.train(was_training)
        return scores

    def score_with_critique(
        self,
        items: Sequence[RewardItem | Mapping],
        mode: str = "generate",
        max_new_tokens: int = 64,
        batch_size: int = 8,
    ) -> list[tuple[float, str]]:
        """(score, critique used) per item. ``generate``: generate then score; ``given``:
        the item's critique; ``none``: no critique."""
        parsed = [RewardItem.of(i) for i in items]
        if mode == "generate":
            crits = self.critique(parsed, max_new_tokens, batch_size)
        elif mode == "given":
            missing = [n for n, i in enumerate(parsed) if i.critique is None]
            if missing:
                raise ValueError(f"items[{missing[0]}].critique: required in mode 'given'")
            crits = [i.critique or "" for i in parsed]
        elif mode == "none":
            crits = ["" for _ in parsed]
        else:
            raise ValueError(f"mode: {mode!r} is not one of generate, given, none")
        scored = [
            RewardItem(i.question, i.response, i.images, c)
            for i, c in zip(parsed, crits, strict=True)
        ]
        return list(zip(self.score(scored, batch_size), crits, strict=True))

    # ---- save / load ------------------------------------------------------------------
    def save_pretrained(self, out_dir: str | Path) -> str:
        """Backbone + processor in HF format, head in safetensors, meta in JSON."""
        save_reward_model(self, None, str(out_dir))
        self.processor.save_pretrained(str(out_dir))
        return str(out_dir)


def save_reward_model(module: CritiqueRewardModel, state_dict: dict | None, out_dir: str) -> None:
    """Write backbone (HF, safetensors), ``reward_head.safetensors`` and the meta JSON.

    ``state_dict`` is the wrapper's full state (``backbone.*`` + ``head.*``), e.g. the
    consolidated ZeRO-3 weights the training harness gathers; None = the module's own.
    The processor is saved by the caller. Signature of the harness's ``save_model``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = module.state_dict() if state_dict is None else state_dict
    backbone = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    head = {
        k[len("head.") :]: v.detach().contiguous().cpu()
        for k, v in state.items()
        if k.startswith("head.")
    }
    module.backbone.save_pretrained(out, state_dict=backbone, safe_serialization=True)
    save_file(head, str(out / HEAD_FILE))
    (out / META_FILE).write_text(json.dumps(asdict(module.meta), indent=2))


def _load_backbone(path: str | Path, dtype: torch.dtype | None = None) -> tuple[nn.Module, Any]:
    from mmrlhf_ray.models.families import load_model

    return load_model(path, dtype=dtype)


def text_hidden_size(backbone: nn.Module) -> int:
    cfg = backbone.config
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    return int(text.hidden_size)


def load_reward_model(path: str | Path, dtype: torch.dtype | None = None) -> CritiqueRewardModel:
    """A saved reward model (backbone + processor + head) in eval mode."""
    path = Path(path)
    if not (path / HEAD_FILE).exists():
        raise FileNotFoundError(f"{path}: no {HEAD_FILE}; not a reward model directory")
    backbone, processor = _load_backbone(path, dtype)
    meta = RewardMeta(**json.loads((path / META_FILE).read_text()))
    model = CritiqueRewardModel(backbone, processor, meta)
    model.head.load_state_dict(load_file(str(path / HEAD_FILE)))
    model.head.to(next(backbone.parameters()).dtype)
    return model.eval()


def new_reward_model(
    backbone_dir: str | Path,
    seed: int = 0,
    head_dropout: float = 0.1,
    max_length: int = 512,
    max_frames: int = 4,
    prompt_template: str = "",
    critique_trained: bool = True,
    dtype: torch.dtype | None = None,
) -> CritiqueRewardModel:
    """A fresh reward model: pretrained backbone + a newly initialised scoring head.

    ``prompt_template`` ('' = ``CRITIQUE_PROMPT``) must hold ``{question}`` and
    ``{response}``; it is saved with the model so scoring later uses the same words.
    """
    template = prompt_template or CRITIQUE_PROMPT
    for name in ("{question}", "{response}"):
        if name not in template:
            raise ValueError(f"prompt_template: missing placeholder {name}")
    backbone, processor = _load_backbone(backbone_dir, dtype)
    meta = RewardMeta(
        hidden_size=text_hidden_size(backbone),
        head_dropout=head_dropout,
        max_length=max_length,
        max_frames=max_frames,
        prompt_template=template,
        critique_trained=critique_trained,
    )
    torch.manual_seed(seed)
    model = CritiqueRewardModel(backbone, processor, meta)
    model.head.to(next(backbone.parameters()).dtype)
    return model


def build_tiny_reward_model(policy_dir: str | Path, out_dir: str | Path, seed: int = 0) -> str:
    """Save an untrained reward model (fresh head over the tiny policy) to ``out_dir``."""
    return new_reward_model(policy_dir, seed=seed).save_pretrained(out_dir)
