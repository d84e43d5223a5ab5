"""A tiny *text* model for the generation tests: Qwen2ForCausalLM with the project's tokenizer.

The tiny Qwen2-VL policy comes from ``mmrlhf_ray.models.build_all`` (the ``tiny_models``
fixture); this adds the text-only model the issue asks for, built from a config with
the same tokenizer (and chat template). Sizes respect vLLM's CPU attention: hidden 128,
4 heads -> head_dim 32.
"""

from __future__ import annotations

from pathlib import Path


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
