"""Tiny random instances of each family, from the family's own config and processor classes.

Part of the family layer (``families.py`` says how a family is used; this module how a
tiny one is built for tests and the shapes world). Each instance has the modeling code of
the family's 7B checkpoint at toy sizes (text: hidden 128, 4 heads, vision: hidden 64),
is saved with ``save_pretrained`` (safetensors) and loads with the Auto classes and vLLM.

    tiny = get_family("llava-onevision").tiny     # this module's LLAVA_ONEVISION
    config = tiny.config(tokenizer, TinyPolicySpec())
    processor = tiny.processor(tokenizer)

Each family's builder (its tokenizer layout, config, processor and what to fix after
saving) is one ``TinyBuilder`` that its entry in ``families.FAMILIES`` holds; the
helpers that take a family name are in ``policy.py``.

All families share the ChatML turn layout of the tiny tokenizer (``<|im_start|>``, end of
turn ``<|im_end|>``); each family's image and video placeholders are its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmrlhf_ray.models.tokenizer import (
    IM_END,
    IMAGE_PAD,
    PAD_TOKEN,
    VIDEO_PAD,
    VISION_END,
    VISION_START,
)

# Inputs are 64x64 (images and video frames of the shapes world).
QWEN_MIN_PIXELS, QWEN_MAX_PIXELS = 56 * 56, 84 * 84
TILE = 56  # LLaVA-OV / InternVL / SmolVLM tile: 4x4 patches of 14 px


@dataclass
class TinyPolicySpec:
    """Sizes of a tiny policy (defaults: the ~1.6M-parameter Qwen2-VL of the shapes world).

    ``hidden_size / num_attention_heads`` = 32 (a head size vLLM's CPU attention takes).
    """

    hidden_size: int = 128
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    num_hidden_layers: int = 4
    intermediate_size: int = 512
    vision_depth: int = 2
    vision_embed_dim: int = 64
    vision_heads: int = 2
    patch_size: int = 14
    spatial_merge_size: int = 2
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False


@dataclass(frozen=True)
class TokenLayout:
    """A family's vision placeholder tokens in the tiny tokenizer."""

    image_part: str  # what the chat template writes for one image
    video_part: str  # ... for one video
    specials: tuple[str, ...]  # special tokens beyond the shared ChatML ones
    attributes: tuple[tuple[str, str], ...] = ()  # tokenizer.<name> the processor reads


_SMOL_TILES = tuple(f"<row_{r}_col_{c}>" for r in range(1, 5) for c in range(1, 5))
QWEN_LAYOUT = TokenLayout(
    f"{VISION_START}{IMAGE_PAD}{VISION_END}", f"{VISION_START}{VIDEO_PAD}{VISION_END}", ()
)
LLAVA_LAYOUT = TokenLayout("<image>", "<video>", ("<image>", "<video>"))
INTERNVL_LAYOUT = TokenLayout(
    "<IMG_CONTEXT>",
    "<video>",
    ("<img>", "</img>", "<IMG_CONTEXT>", "<video>"),
    (
        ("start_image_token", "<img>"),
        ("end_image_token", "</img>"),
        ("context_image_token", "<IMG_CONTEXT>"),
        ("video_token", "<video>"),
    ),
)
SMOLVLM_LAYOUT = TokenLayout(
    "<image>",
    "<video>",
    (
        "<image>",
        "<video>",
        "<fake_token_around_image>",
        "<global-img>",
        "<end_of_utterance>",
        *_SMOL_TILES,
    ),
    (
        ("image_token", "<image>"),
        ("video_token", "<video>"),
        ("fake_image_token", "<fake_token_around_image>"),
        ("global_image_token", "<global-img>"),
        ("end_of_utterance_token", "<end_of_utterance>"),
    ),
)


def _text_config(
    tokenizer, spec: TinyPolicySpec, model_type: str | None = None, rope: dict | None = None
) -> dict[str, Any]:
    eos, pad = tokenizer.convert_tokens_to_ids(IM_END), tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        rope_parameters=rope or {"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=pad,
        eos_token_id=eos,
        pad_token_id=pad,
        tie_word_embeddings=spec.tie_word_embeddings,
    )
    if model_type:
        text["model_type"] = model_type
    return text


def _ids(tokenizer, **tokens: str) -> dict[str, int]:
    ids = {k: tokenizer.convert_tokens_to_ids(v) for k, v in tokens.items()}
    missing = [k for k, v in ids.items() if v is None or v == tokenizer.unk_token_id]
    if missing:
        raise ValueError(f"tokenizer lacks the family's vision tokens: {missing}")
    return ids


def _mrope(spec: TinyPolicySpec) -> dict:
    """M-RoPE splits head_dim/2 rotary frequencies over (time, height, width)."""
    half = spec.hidden_size // spec.num_attention_heads // 2
    section = [half // 4, (half - half // 4) // 2]
    section.append(half - sum(section))
    return {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": section}


def _common(tokenizer, spec: TinyPolicySpec) -> dict[str, Any]:
    eos, pad = tokenizer.convert_tokens_to_ids(IM_END), tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    return dict(
        tie_word_embeddings=spec.tie_word_embeddings,
        bos_token_id=pad,
        eos_token_id=eos,
        pad_token_id=pad,
    )


def _vit(spec: TinyPolicySpec, **extra) -> dict[str, Any]:
    return dict(
        hidden_size=spec.vision_embed_dim,
        intermediate_size=2 * spec.vision_embed_dim,
        num_hidden_layers=spec.vision_depth,
        num_attention_heads=spec.vision_heads,
        **extra,
    )


def _qwen_config(cls_name: str, vision_sizes: Callable[[TinyPolicySpec], dict]):
    """A Qwen2-VL / Qwen2.5-VL config builder (they differ in the vision tower's keys)."""

    def build(tokenizer, spec: TinyPolicySpec):
        import transformers as tf

        vision = dict(
            depth=spec.vision_depth,
            num_heads=spec.vision_heads,
            patch_size=spec.patch_size,
            spatial_merge_size=spec.spatial_merge_size,
            temporal_patch_size=2,
            **vision_sizes(spec),
        )
        ids = _ids(
            tokenizer,
            image_token_id=IMAGE_PAD,
            video_token_id=VIDEO_PAD,
            vision_start_token_id=VISION_START,
            vision_end_token_id=VISION_END,
        )
        return getattr(tf, cls_name)(
            text_config=_text_config(tokenizer, spec, rope=_mrope(spec)),
            vision_config=vision,
            **_common(tokenizer, spec),
            **ids,
        )

    return build


def _qwen2_vl_vision(spec: TinyPolicySpec) -> dict:
    return dict(embed_dim=spec.vision_embed_dim, hidden_size=spec.hidden_size, mlp_ratio=2)


def _qwen2_5_vl_vision(spec: TinyPolicySpec) -> dict:
    return dict(
        hidden_size=spec.vision_embed_dim,
        out_hidden_size=spec.hidden_size,
        intermediate_size=2 * spec.vision_embed_dim,
        window_size=112,
        fullatt_block_indexes=[spec.vision_depth - 1],
    )


def _qwen_processor(cls_name: str):
    def build(tokenizer):
        import transformers as tf

        size = {"shortest_edge": QWEN_MIN_PIXELS, "longest_edge": QWEN_MAX_PIXELS}
        return getattr(tf, cls_name)(
            image_processor=tf.Qwen2VLImageProcessor(size=size),
            tokenizer=tokenizer,
            video_processor=tf.Qwen2VLVideoProcessor(size=size, cap_pixels_per_frame=False),
            chat_template=tokenizer.chat_template,
        )

    return build


PINPOINTS = [[TILE * a, TILE * b] for a in (1, 2) for b in (1, 2)]  # LLaVA-OV anyres tiles
TILE_SIZE = {"height": TILE, "width": TILE}


def _llava_config(tokenizer, spec: TinyPolicySpec):
    from transformers import LlavaOnevisionConfig

    return LlavaOnevisionConfig(
        text_config=_text_config(tokenizer, spec, "qwen2"),
        vision_config=_vit(
            spec,
            model_type="siglip_vision_model",
            image_size=TILE,
            patch_size=spec.patch_size,
            vision_use_head=False,
        ),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=PINPOINTS,
        **_common(tokenizer, spec),
        **_ids(tokenizer, image_token_id="<image>", video_token_id="<video>"),
    )


def _llava_processor(tokenizer):
    import transformers as tf

    return tf.LlavaOnevisionProcessor(
        image_processor=tf.LlavaOnevisionImageProcessor(
            size=TILE_SIZE, crop_size=TILE_SIZE, image_grid_pinpoints=PINPOINTS
        ),
        tokenizer=tokenizer,
        video_processor=tf.LlavaOnevisionVideoProcessor(size=TILE_SIZE),
        num_image_tokens=(TILE // 14) ** 2,
        vision_feature_select_strategy="full",
        chat_template=tokenizer.chat_template,
    )


def _llava_vllm_key_names(out: Path) -> None:
    """LLaVA-OneVision's SigLIP tower: transformers saves ``vision_tower.embeddings...``,
    vLLM loads ``vision_tower.vision_model.embeddings...``; both read the latter."""
    from safetensors.torch import load_file, save_file

    path = out / "model.safetensors"
    renamed = {}
    for key, value in load_file(str(path)).items():
        head, sep, rest = key.partition("vision_tower.")
        if sep and not rest.startswith("vision_model."):
            key = f"{head}vision_tower.vision_model.{rest}"
        renamed[key] = value
    save_file(renamed, str(path), metadata={"format": "pt"})


def _internvl_config(tokenizer, spec: TinyPolicySpec):
    from transformers import InternVLConfig

    return InternVLConfig(
        text_config=_text_config(tokenizer, spec, "qwen2"),
        vision_config=_vit(
            spec, image_size=[TILE, TILE], patch_size=[spec.patch_size, spec.patch_size]
        ),
        downsample_ratio=0.5,
        vision_feature_layer=-1,
        **_common(tokenizer, spec),
        **_ids(tokenizer, image_token_id="<IMG_CONTEXT>"),
    )


def _internvl_processor(tokenizer):
    import transformers as tf

    return tf.InternVLProcessor(
        image_processor=tf.GotOcr2ImageProcessor(
            size=TILE_SIZE, crop_to_patches=True, max_patches=4
        ),
        tokenizer=tokenizer,
        video_processor=tf.InternVLVideoProcessor(size=TILE_SIZE),
        image_seq_length=(TILE // 14) ** 2 // 4,
        chat_template=tokenizer.chat_template,
    )


def _smolvlm_config(tokenizer, spec: TinyPolicySpec):
    from transformers import SmolVLMConfig

    return SmolVLMConfig(
        text_config=_text_config(tokenizer, spec, "llama"),
        vision_config=_vit(spec, image_size=TILE, patch_size=spec.patch_size),
        scale_factor=2,
        **_common(tokenizer, spec),
        **_ids(tokenizer, image_token_id="<image>"),
    )


def _smolvlm_processor(tokenizer):
    import transformers as tf

    edge = {"longest_edge": TILE}
    return tf.SmolVLMProcessor(
        image_processor=tf.SmolVLMImageProcessor(
            size=edge, max_image_size=edge, do_image_splitting=False
        ),
        tokenizer=tokenizer,
        video_processor=tf.SmolVLMVideoProcessor(size=edge, max_image_size=edge),
        image_seq_len=(TILE // 14) ** 2 // 4,
        chat_template=tokenizer.chat_template,
    )


def _nothing_to_fix(out: Path) -> None:
    return None


@dataclass(frozen=True)
class TinyBuilder:
    """How a tiny random instance of one family is built (held by its ``Family`` entry)."""

    layout: TokenLayout  # the tiny tokenizer's placeholders and chat template
    config: Callable[[Any, TinyPolicySpec], Any]  # (tokenizer, spec) -> transformers config
    processor: Callable[[Any], Any]  # tokenizer -> the family's processor for 64x64 media
    after_save: Callable[[Path], None] = _nothing_to_fix  # fix the saved files for vLLM


QWEN2_VL = TinyBuilder(
    QWEN_LAYOUT,
    _qwen_config("Qwen2VLConfig", _qwen2_vl_vision),
    _qwen_processor("Qwen2VLProcessor"),
)
QWEN2_5_VL = TinyBuilder(
    QWEN_LAYOUT,
    _qwen_config("Qwen2_5_VLConfig", _qwen2_5_vl_vision),
    _qwen_processor("Qwen2_5_VLProcessor"),
)
LLAVA_ONEVISION = TinyBuilder(
    LLAVA_LAYOUT, _llava_config, _llava_processor, after_save=_llava_vllm_key_names
)
INTERNVL = TinyBuilder(INTERNVL_LAYOUT, _internvl_config, _internvl_processor)
SMOLVLM = TinyBuilder(SMOLVLM_LAYOUT, _smolvlm_config, _smolvlm_processor)
