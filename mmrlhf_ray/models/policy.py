"""The tiny offline Qwen2-VL policy: build from a config, save, load by path.

``build_tiny_policy`` writes a randomly initialised ``Qwen2VLForConditionalGeneration``
in the Hugging Face layout (config.json, model.safetensors, generation_config.json)
together with its ``Qwen2VLProcessor`` (tokenizer + image processor + video processor),
so it loads exactly like a real checkpoint: ``load_policy(path)``,
``AutoProcessor.from_pretrained(path)``, ``AutoModelForImageTextToText`` or vLLM.

Sizes are chosen for vLLM's CPU attention (head_dim 32: hidden 128 / 4 heads) and for
64x64 images: ``smart_resize`` maps 64x64 to 56x56 = 4x4 patches of 14 px, merged 2x2
into 4 image tokens per image. Video frames go two at a time through the temporal patch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import (
    AutoProcessor,
    AutoTokenizer,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
)

from mmrlhf_ray.models.tokenizer import (
    IM_END,
    IMAGE_PAD,
    PAD_TOKEN,
    VIDEO_PAD,
    VISION_END,
    VISION_START,
    build_tokenizer,
    default_texts,
)

# 64x64 inputs resize to 56x56 (the nearest multiple of patch*merge = 28).
MIN_PIXELS = 56 * 56
MAX_PIXELS = 84 * 84


@dataclass
class TinyPolicySpec:
    """Sizes of the tiny Qwen2-VL (defaults: ~1.6M parameters, vLLM-CPU compatible)."""

    hidden_size: int = 128  # text width; 4 heads => head_dim 32 (vLLM CPU attention)
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


def _vision_token_ids(tokenizer) -> dict[str, int]:
    ids = {
        name: tokenizer.convert_tokens_to_ids(tok)
        for name, tok in [
            ("image_token_id", IMAGE_PAD),
            ("video_token_id", VIDEO_PAD),
            ("vision_start_token_id", VISION_START),
            ("vision_end_token_id", VISION_END),
        ]
    }
    missing = [k for k, v in ids.items() if v is None or v == tokenizer.unk_token_id]
    if missing:
        raise ValueError(f"tokenizer lacks Qwen2-VL vision tokens: {missing}")
    return ids


def tiny_config(tokenizer, spec: TinyPolicySpec | None = None) -> Qwen2VLConfig:
    """A ``Qwen2VLConfig`` of ``spec``'s sizes wired to ``tokenizer``'s special ids."""
    spec = spec or TinyPolicySpec()
    head_dim = spec.hidden_size // spec.num_attention_heads
    # M-RoPE splits head_dim/2 rotary frequencies over (time, height, width).
    half = head_dim // 2
    mrope = [half // 4, (half - half // 4) // 2]
    mrope.append(half - sum(mrope))
    eos = tokenizer.convert_tokens_to_ids(IM_END)
    pad = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
        bos_token_id=pad,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    vision = dict(
        depth=spec.vision_depth,
        embed_dim=spec.vision_embed_dim,
        num_heads=spec.vision_heads,
        hidden_size=spec.hidden_size,
        mlp_ratio=2,
        patch_size=spec.patch_size,
        spatial_merge_size=spec.spatial_merge_size,
        temporal_patch_size=2,
    )
    return Qwen2VLConfig(
        text_config=text,
        vision_config=vision,
        tie_word_embeddings=spec.tie_word_embeddings,
        bos_token_id=pad,
        eos_token_id=eos,
        pad_token_id=pad,
        **_vision_token_ids(tokenizer),
    )


def build_processor(tokenizer) -> Qwen2VLProcessor:
    """Qwen2-VL processor sized for 64x64 images and short 64x64 videos."""
    size = {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}
    return Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(size=size, cap_pixels_per_frame=False),
        chat_template=tokenizer.chat_template,
    )


def build_tiny_policy(
    out_dir: str | Path,
    tokenizer_dir: str | Path,
    seed: int = 0,
    spec: TinyPolicySpec | None = None,
) -> str:
    """Write a random tiny Qwen2-VL policy + processor to ``out_dir``; returns the path."""
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = tiny_config(tokenizer, spec)
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config).float().eval()
    model.generation_config.eos_token_id = [config.text_config.eos_token_id]
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.generation_config.bos_token_id = config.text_config.bos_token_id
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    build_processor(tokenizer).save_pretrained(str(out))
    (out / "tiny_spec.json").write_text(json.dumps(asdict(spec or TinyPolicySpec()), indent=2))
    return str(out)


def load_policy(path: str | Path, dtype: torch.dtype | None = None, device: str = "cpu"):
    """Load ``(model, processor)`` from a Hugging Face directory (tiny or real)."""
    model = Qwen2VLForConditionalGeneration.from_pretrained(
        str(path), dtype=dtype or torch.float32, use_safetensors=True
    )
    processor = AutoProcessor.from_pretrained(str(path))
    return model.to(device).eval(), processor


def build_all(
    out_dir: str | Path, seed: int = 0, vocab_size: int = 2000, spec: TinyPolicySpec | None = None
) -> dict[str, str]:
    """Build the tokenizer and the tiny policy under ``out_dir``; returns their paths.

    Idempotent: an existing, complete build (``policy/model.safetensors``) is reused.
    """
    out = Path(out_dir)
    tok_dir, pol_dir = out / "tokenizer", out / "policy"
    if not (tok_dir / "tokenizer.json").exists():
        build_tokenizer(default_texts(seed=seed), tok_dir, vocab_size=vocab_size)
    if not (pol_dir / "model.safetensors").exists():
        build_tiny_policy(pol_dir, tok_dir, seed=seed, spec=spec)
    return {"tokenizer": str(tok_dir), "policy": str(pol_dir)}
