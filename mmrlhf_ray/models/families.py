"""One place that knows a vision-language model family (pure torch + transformers).

Every other module asks a ``Family`` instead of naming a model's internals:

    family = family_of(model)                     # from config.model_type
    family.vision_modules(model)                  # the tower: frozen in training (App. G.1)
    family.projector_modules(model)               # the vision-language projector: trained
    family.language_model(model)                  # the LLM
    feats = family.encode_vision(model, prompt)   # vision tower + projector, once per query
    rows = family.repeat_for_rows(feats, row_query)          # -> forward(mm_encoder_outputs=...)
    pos = family.prompt_position_ids(model, prompt)          # (3, 1, P) M-RoPE, else (1, P)
    kwargs = family.processor_media(images=..., frames=...)  # processor(text=..., **kwargs)

Families (the paper's and one laptop-sized): ``qwen2-vl``, ``qwen2.5-vl``,
``llava-onevision``, ``internvl`` (the transformers-native classes), ``smolvlm``
(SmolVLM / Idefics3). Models load with transformers' Auto classes from safetensors, never
with remote code; an unsupported architecture fails at load naming the supported ones.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from mmrlhf_ray.models.tiny import (
    INTERNVL,
    LLAVA_ONEVISION,
    QWEN2_5_VL,
    QWEN2_VL,
    SMOLVLM,
    TinyBuilder,
)

# Processor outputs that are text, not media (per token, one row per sequence).
TEXT_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")


class UnsupportedFamily(ValueError):
    """A model or name that no family in ``FAMILIES`` covers."""


def unwrap(model: nn.Module) -> nn.Module:
    """The Hugging Face ``*ForConditionalGeneration`` inside DeepSpeed / reward wrappers."""
    node = model
    for _ in range(4):
        for attr in ("module", "backbone", "policy"):
            inner = getattr(node, attr, None)
            if isinstance(inner, nn.Module):
                node = inner
                break
        else:
            return node
    return node


def _base(model: nn.Module) -> nn.Module:
    """The family's ``*Model`` (vision + projector + LLM) under the LM-head wrapper."""
    hf = unwrap(model)
    return getattr(hf, "model", hf)


def _get(model: nn.Module, path: str) -> nn.Module:
    node: Any = _base(model)
    for attr in path.split("."):
        node = getattr(node, attr, None)
        if node is None:
            raise UnsupportedFamily(
                f"{type(unwrap(model)).__name__}: no '{path}' (is it a "
                f"{'/'.join(f.name for f in FAMILIES.values())} model?)"
            )
    return node


@dataclass(frozen=True)
class Family:
    """How one model family is loaded, fed and taken apart.

    Paths are attributes of the family's ``*Model`` (``model.model`` in transformers 5).
    """

    name: str  # the command-line name: family=<name>
    model_types: tuple[str, ...]  # config.json model_type values of the family
    tower: str  # vision encoder (frozen)
    projector: str  # vision -> LLM projector (trainable); may sit inside the tower
    llm: str  # the language model
    image_keys: tuple[str, ...]  # processor outputs get_image_features takes
    video_keys: tuple[str, ...] = ()  # ... get_video_features takes ('' : video -> images)
    row_keys: tuple[str, ...] = ()  # per-media tensors the LLM forward needs per row
    mrope: bool = False  # 3-D (t, h, w) rotary positions (Qwen families)
    video_as_images: bool = False  # the processor turns a video's frames into pixel_values
    nested_videos: bool = False  # processor wants videos=[[frames]] (SmolVLM)
    nested_images: bool = False  # a batch's images one list per text (SmolVLM)
    extra_params: tuple[str, ...] = ()  # projector-side parameters outside both modules
    processors: tuple[str, ...] = ()  # processor class names of the family
    vllm_video: bool = True  # vLLM (0.32) takes this family's videos
    vllm_video_metadata: bool = False  # ... only as (frames, metadata) (Qwen2.5-VL)
    tiny: TinyBuilder | None = None  # how a tiny random instance is built (models/tiny.py)

    # ---- where things live -------------------------------------------------------------
    def vision_modules(self, model: nn.Module) -> list[nn.Module]:
        """The vision tower (what ``freeze_vision`` freezes)."""
        return [_get(model, self.tower)]

    def projector_modules(self, model: nn.Module) -> list[nn.Module]:
        """The projector between tower and LLM (trainable unless ``freeze_projector``)."""
        return [_get(model, self.projector)]

    def projector_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        params = [p for m in self.projector_modules(model) for p in m.parameters()]
        return params + [getattr(_base(model), n) for n in self.extra_params]

    def language_model(self, model: nn.Module) -> nn.Module:
        return _get(model, self.llm)

    # ---- inputs --------------------------------------------------------------------------
    def processor_media(
        self,
        images: Sequence | None = None,
        frames: Sequence | None = None,
        videos: Sequence[Sequence] | None = None,
        prompt_images: Sequence[Sequence] | None = None,
    ) -> dict[str, Any]:
        """Keyword arguments of ``processor(text=..., **kw)``: one prompt's ``images``, a
        batch's ``prompt_images`` (one image list per text), one video's ``frames``, or
        ``videos`` (a list of frame lists, one per text)."""
        videos = [list(frames)] if frames else [list(v) for v in videos or []]
        if videos:
            return {"videos": [[v] for v in videos] if self.nested_videos else videos}
        if prompt_images is not None:
            if not any(prompt_images):
                return {}
            if self.nested_images:  # SmolVLM counts a flat list as one text's images
                return {"images": [list(i) for i in prompt_images]}
            images = [img for per_text in prompt_images for img in per_text]
        return {"images": list(images)} if images else {}

    def vllm_video_input(self, frames: Sequence) -> Any:
        """One video for vLLM's ``multi_modal_data["video"]``: a ``(T, H, W, 3)`` array, or
        with its metadata where the family's vLLM processor requires it."""
        import numpy as np

        array = np.stack([np.asarray(f) for f in frames])
        if not self.vllm_video_metadata:
            return array
        t, h, w = array.shape[:3]
        meta = {
            "total_num_frames": t,
            "fps": 1.0,
            "duration": float(t),
            "width": w,
            "height": h,
            "frames_indices": list(range(t)),
            "video_backend": "pil",
            "do_sample_frames": False,
        }
        return array, meta

    def media_inputs(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The processor outputs that are media (pixels, grids, sizes), not text."""
        return {
            k: v for k, v in inputs.items() if k not in TEXT_KEYS and isinstance(v, torch.Tensor)
        }

    # ---- vision once per query -------------------------------------------------------
    def encode_vision(
        self, model: nn.Module, inputs: dict[str, Any]
    ) -> dict[str, BaseModelOutputWithPooling]:
        """Tower + projector over one query's media: ``{"image"|"video": outputs}``.

        With the tower's parameters frozen (``requires_grad=False``) autograd keeps no
        activations of the tower, only of the projector, so this is the frozen-tower
        pass of training as well as the reference pass (under ``no_grad``).
        """
        base = _base(model)
        out = {}
        image = {k: inputs[k] for k in self.image_keys if inputs.get(k) is not None}
        if image.get(self.image_keys[0]) is not None:
            out["image"] = base.get_image_features(**image, return_dict=True)
        video = {k: inputs[k] for k in self.video_keys if inputs.get(k) is not None}
        if self.video_keys and video.get(self.video_keys[0]) is not None:
            out["video"] = base.get_video_features(**video, return_dict=True)
        return out

    def repeat_for_rows(
        self, per_query: Sequence[dict[str, BaseModelOutputWithPooling]], row_query: Sequence[int]
    ) -> dict[str, BaseModelOutputWithPooling]:
        """``mm_encoder_outputs`` for R rows, row r holding its query's features."""
        out = {}
        for name in ("image", "video"):
            feats = [per_query[q][name].pooler_output for q in row_query if name in per_query[q]]
            if not feats:
                continue
            if isinstance(feats[0], (tuple, list)):
                pooled: Any = tuple(t for f in feats for t in f)
            else:
                pooled = torch.cat(feats, dim=0)
            out[name] = BaseModelOutputWithPooling(pooler_output=pooled)
        return out

    def row_inputs(
        self, per_query: Sequence[dict[str, torch.Tensor]], row_query: Sequence[int]
    ) -> dict[str, torch.Tensor]:
        """Per-media tensors the LLM forward needs, repeated for each row (grids)."""
        out = {}
        for key in self.row_keys:
            parts = [per_query[q][key] for q in row_query if per_query[q].get(key) is not None]
            if parts:
                out[key] = torch.cat(parts, dim=0)
        return out

    def grouped_inputs(
        self,
        model: nn.Module,
        query_media: Sequence[dict[str, torch.Tensor]],
        row_query: Sequence[int],
        mm_token_type_ids: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """Forward keyword arguments (besides ids and mask) for R rows of Q queries: the
        vision features once per query (``encode_vision``) repeated for every row of the
        query, the per-row grids, and the token types M-RoPE needs."""
        feats = [self.encode_vision(model, m) if m else {} for m in query_media]
        out: dict[str, Any] = dict(self.row_inputs(query_media, row_query))
        encoder_outputs = self.repeat_for_rows(feats, row_query)
        if encoder_outputs:
            out["mm_encoder_outputs"] = encoder_outputs
        if self.mrope and mm_token_type_ids is not None:
            out["mm_token_type_ids"] = mm_token_type_ids
        return out

    # ---- positions -------------------------------------------------------------------
    def prompt_position_ids(self, model: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        """Position ids of a prompt (batch of 1): ``(3, 1, P)`` with M-RoPE, else ``(1, P)``.

        A response appended behind the prompt continues at ``positions.max() + 1`` (the
        same value on the three M-RoPE rows), which is not P for a prompt with images.
        """
        ids = inputs["input_ids"]
        if not self.mrope:
            return torch.arange(ids.shape[1], device=ids.device)[None]
        types = inputs.get("mm_token_type_ids")
        if types is None:
            types = torch.zeros_like(ids)
        extra = {k: inputs[k] for k in ("second_per_grid_ts",) if inputs.get(k) is not None}
        positions, _ = _base(model).get_rope_index(
            ids,
            mm_token_type_ids=types,
            image_grid_thw=inputs.get("image_grid_thw"),
            video_grid_thw=inputs.get("video_grid_thw"),
            attention_mask=inputs.get("attention_mask"),
            **extra,
        )
        return positions


QWEN_COMMON = dict(
    tower="visual",
    projector="visual.merger",
    llm="language_model",
    image_keys=("pixel_values", "image_grid_thw"),
    video_keys=("pixel_values_videos", "video_grid_thw"),
    row_keys=("image_grid_thw", "video_grid_thw", "second_per_grid_ts"),
    mrope=True,
)
FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "qwen2-vl",
            ("qwen2_vl",),
            processors=("Qwen2VLProcessor",),
            tiny=QWEN2_VL,
            **QWEN_COMMON,
        ),
        Family(
            "qwen2.5-vl",
            ("qwen2_5_vl",),
            processors=("Qwen2_5_VLProcessor",),
            vllm_video_metadata=True,
            tiny=QWEN2_5_VL,
            **QWEN_COMMON,
        ),
        Family(
            "llava-onevision",
            ("llava_onevision",),
            tower="vision_tower",
            projector="multi_modal_projector",
            llm="language_model",
            image_keys=("pixel_values", "image_sizes", "batch_num_images"),
            video_keys=("pixel_values_videos",),
            extra_params=("image_newline",),
            processors=("LlavaOnevisionProcessor",),
            tiny=LLAVA_ONEVISION,
        ),
        Family(
            "internvl",
            ("internvl",),
            tower="vision_tower",
            projector="multi_modal_projector",
            llm="language_model",
            image_keys=("pixel_values",),
            video_as_images=True,
            processors=("InternVLProcessor",),
            tiny=INTERNVL,
        ),
        Family(
            "smolvlm",
            ("smolvlm", "idefics3"),
            tower="vision_model",
            projector="connector",
            llm="text_model",
            image_keys=("pixel_values", "pixel_attention_mask"),
            video_as_images=True,
            nested_videos=True,
            nested_images=True,
            processors=("SmolVLMProcessor", "Idefics3Processor"),
            vllm_video=False,
            tiny=SMOLVLM,
        ),
    )
}
DEFAULT_FAMILY = "qwen2-vl"


def supported() -> str:
    return ", ".join(FAMILIES)


def get_family(name: str) -> Family:
    """The family called ``name`` on the command line (``family=llava-onevision``)."""
    if name not in FAMILIES:
        raise UnsupportedFamily(f"family: {name!r} is not one of {supported()}")
    return FAMILIES[name]


def family_of_model_type(model_type: str, where: str = "model") -> Family:
    for fam in FAMILIES.values():
        if model_type in fam.model_types:
            return fam
    raise UnsupportedFamily(
        f"{where}: architecture {model_type!r} is not supported; supported families: {supported()}"
    )


def family_of(model: nn.Module) -> Family:
    """The family of a loaded model (through DeepSpeed / reward-model wrappers)."""
    return family_of_model_type(unwrap(model).config.model_type, type(unwrap(model)).__name__)


def family_of_processor(processor: Any) -> Family:
    """The family whose processor class ``processor`` is (default family otherwise)."""
    name = type(processor).__name__
    for fam in FAMILIES.values():
        if name in fam.processors:
            return fam
    return FAMILIES[DEFAULT_FAMILY]


def family_of_dir(path: str | Path) -> Family:
    """The family of a saved checkpoint, from its ``config.json`` (nothing loaded)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{path}: no config.json (not a Hugging Face model directory)")
    return family_of_model_type(json.loads(config.read_text()).get("model_type", "?"), str(path))


def load_model(
    path: str | Path,
    dtype: torch.dtype | None = None,
    device: str = "cpu",
    attn_implementation: str | None = None,
):
    """``(model, processor)`` of a checkpoint of a supported family, in eval mode.

    Safetensors only, ``trust_remote_code`` off; any other architecture raises
    ``UnsupportedFamily`` naming the supported families before any weight is read.
    ``attn_implementation``: transformers' (sdpa | eager | flash_attention_2; None = its
    default, sdpa); the packed forward's block-sparse attention is set on top of it by
    ``models.attention.configure_attention``.
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    family_of_dir(path)
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = AutoModelForImageTextToText.from_pretrained(
        str(path),
        dtype=dtype or torch.float32,
        use_safetensors=True,
        trust_remote_code=False,
        **extra,
    )
    processor = AutoProcessor.from_pretrained(str(path), trust_remote_code=False)
    return model.to(device).eval(), processor
