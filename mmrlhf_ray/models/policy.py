"""The tiny offline policy of any family: build from a config, save, load by path.

``build_tiny_policy`` writes a randomly initialised model of the family (Qwen2-VL by
default) in the Hugging Face layout (config.json, model.safetensors,
generation_config.json) together with its processor (tokenizer + image processor + video
processor), so it loads exactly like a real checkpoint: ``load_policy(path)``,
``AutoProcessor.from_pretrained(path)``, ``AutoModelForImageTextToText`` or vLLM.

Sizes are chosen for vLLM's CPU attention (head_dim 32: hidden 128 / 4 heads) and for
64x64 images (Qwen2-VL: 4 image tokens per image; LLaVA-OneVision: anyres tiles of 56 px).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, AutoTokenizer

from mmrlhf_ray.models.families import DEFAULT_FAMILY, get_family, load_model
from mmrlhf_ray.models.tiny import TinyBuilder, TinyPolicySpec
from mmrlhf_ray.models.tokenizer import build_tokenizer, chat_template, default_texts

__all__ = [
    "TinyPolicySpec",
    "build_all",
    "build_family_tokenizer",
    "build_processor",
    "build_tiny_policy",
    "load_policy",
    "tiny_config",
]


def tiny_builder(family: str) -> TinyBuilder:
    """The family entry's tiny builder (``UnsupportedFamily`` for an unknown name)."""
    builder = get_family(family).tiny
    if builder is None:
        raise ValueError(f"family: no tiny builder for {family!r}")
    return builder


def build_family_tokenizer(family: str, texts, out_dir: str | Path, vocab_size: int = 2000):
    """The tiny BPE with ``family``'s placeholders and chat template, saved to ``out_dir``."""
    layout = tiny_builder(family).layout
    return build_tokenizer(
        texts,
        out_dir,
        vocab_size,
        extra_specials=layout.specials,
        template=chat_template(layout.image_part, layout.video_part),
        attributes=dict(layout.attributes),
    )


def tiny_config(family: str, tokenizer, spec: TinyPolicySpec | None = None):
    """The family's transformers config at ``spec``'s sizes, wired to ``tokenizer``'s ids."""
    return tiny_builder(family).config(tokenizer, spec or TinyPolicySpec())


def build_processor(tokenizer, family: str = DEFAULT_FAMILY):
    """The family's processor sized for 64x64 images and short 64x64 videos."""
    return tiny_builder(family).processor(tokenizer)


def build_tiny_policy(
    out_dir: str | Path,
    tokenizer_dir: str | Path,
    seed: int = 0,
    spec: TinyPolicySpec | None = None,
    family: str = DEFAULT_FAMILY,
) -> str:
    """Write a random tiny policy of ``family`` + its processor to ``out_dir``; returns the path."""
    builder = tiny_builder(family)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = tiny_config(family, tokenizer, spec)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config).float().eval()
    text = config.get_text_config()
    model.generation_config.eos_token_id = [text.eos_token_id]
    model.generation_config.pad_token_id = text.pad_token_id
    model.generation_config.bos_token_id = text.bos_token_id
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    builder.after_save(out)
    builder.processor(tokenizer).save_pretrained(str(out))
    record = {"family": family, **asdict(spec or TinyPolicySpec())}
    (out / "tiny_spec.json").write_text(json.dumps(record, indent=2))
    return str(out)


def load_policy(path: str | Path, dtype: torch.dtype | None = None, device: str = "cpu"):
    """Load ``(model, processor)`` from a Hugging Face directory (tiny or real, any family)."""
    return load_model(path, dtype=dtype, device=device)


def build_all(
    out_dir: str | Path,
    seed: int = 0,
    vocab_size: int = 2000,
    spec: TinyPolicySpec | None = None,
    family: str = DEFAULT_FAMILY,
) -> dict[str, str]:
    """Build the family's tokenizer and tiny policy under ``out_dir``; returns their paths.

    Idempotent: an existing, complete build (``policy/model.safetensors``) is reused.
    """
    get_family(family)
    out = Path(out_dir)
    tok_dir, pol_dir = out / "tokenizer", out / "policy"
    if not (tok_dir / "tokenizer.json").exists():
        build_family_tokenizer(family, default_texts(seed=seed), tok_dir, vocab_size=vocab_size)
    if not (pol_dir / "model.safetensors").exists():
        build_tiny_policy(pol_dir, tok_dir, seed=seed, spec=spec, family=family)
    return {"tokenizer": str(tok_dir), "policy": str(pol_dir)}
