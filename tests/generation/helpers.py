"""Helpers of the generation tests: a tiny text model and small hand-built query tables.

The tiny Qwen2-VL policy comes from ``mmrlhf_ray.models.build_all`` (the ``tiny_models``
fixture); ``build_text_model`` adds a text-only model (Qwen2ForCausalLM) built from a
config with the same tokenizer (and chat template). Sizes respect vLLM's CPU attention:
hidden 128, 4 heads -> head_dim 32.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from mmrlhf_ray.core.stage import StageDir
from mmrlhf_ray.data.media import encode_png
from mmrlhf_ray.data.schemas import POOL_SCHEMA


def build_text_model(out: str | Path, tokenizer_dir: str, seed: int = 0) -> str:
    """A tiny Qwen2ForCausalLM (2 layers, hidden 128, 4 heads) saved with the tokenizer."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    out = Path(out)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.save_pretrained(out)
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        eos_token_id=eos,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.pad_token_id,
    )
    Qwen2ForCausalLM(cfg).save_pretrained(out)
    return str(out)


def png(color: tuple[int, int, int], size: int = 64) -> bytes:
    return encode_png(Image.new("RGB", (size, size), color))


def query_rows(n: int, with_image: bool, bad: int = 0) -> list[dict]:
    """``n`` good queries (+ ``bad`` with undecodable images), POOL columns + category."""
    rows = []
    for i in range(n + bad):
        row = {name: None for name in POOL_SCHEMA.names}
        row.update(
            sample_id=f"q{i:03d}",
            source="test",
            question=f"what colour is shape {i}",
            category="short",
            reference_answer="red",
        )
        if with_image:
            row["image"] = png((40 * i % 255, 100, 200)) if i < n else b"not a png"
        rows.append(row)
    return rows


def toy_rows(n: int, bad: int = 0, videos: int = 0) -> list[dict]:
    """Shapes-world queries with ground truth: ``n`` image ("short") queries, ``videos``
    video queries (4 frames each), then ``bad`` image queries with undecodable bytes
    (sample ids sort in that order)."""
    from mmrlhf_ray.toyworld import make_row

    cats = ["short"] * n + ["video"] * videos + ["short"] * bad
    rows = [make_row("gentest", 0, i, category=c) for i, c in enumerate(cats)]
    for row, cat in zip(rows, cats, strict=True):
        row["category"] = cat
    for row in rows[n + videos :]:
        row["image"] = b"not a png"
    return rows


def write_curate(run_dir: str, rows: list[dict]) -> None:
    """A finished `curate` stage holding ``rows``."""
    import pyarrow as pa

    schema = POOL_SCHEMA.append(pa.field("category", pa.string()))
    stage = StageDir(run_dir, "curate")
    stage.begin({"test": True})
    stage.write_part("part-00000", pa.Table.from_pylist(rows, schema=schema))
    stage.finish(len(rows), len(rows), 0)
