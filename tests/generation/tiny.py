"""Tiny offline models for the generation tests: a byte-level BPE tokenizer with the
Qwen2-VL chat template, a tiny Qwen2ForCausalLM (text) and a tiny Qwen2-VL.

The project's `mmrlhf_ray.models.build_all` builds the shared tiny Qwen2-VL policy;
this module builds the tiny *text* model the issue asks for (same tokenizer
conventions) and stands in for `build_all` when that is not importable.
Sizes respect vLLM's CPU attention: hidden 128, 4 heads -> head_dim 32.
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or part['type'] == 'image_url' %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
            "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
CORPUS = [
    "a red circle is above a blue square", "the green triangle moves left",
    "how many shapes are in the image", "what colour is the circle",
    "answer with the option letter A B C or D", "the response is correct and faithful",
    "the answer is wrong because the square is yellow", "describe the image in detail",
]


def build_tokenizer(out: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token=None)
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return fast


def build_text_model(out: str | Path, seed: int = 0) -> str:
    """A tiny Qwen2ForCausalLM (2 layers, hidden 128, 4 heads) with the BPE tokenizer."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out = Path(out)
    tok = build_tokenizer(out)
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=128, intermediate_size=256,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=2048, tie_word_embeddings=True,
                      eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.pad_token_id)
    Qwen2ForCausalLM(cfg).save_pretrained(out)
    return str(out)


def build_vl_model(out: str | Path, seed: int = 0) -> str:
    """A tiny Qwen2-VL (vision 1 block 64 wide; text 2 layers, hidden 128, 4 heads)."""
    import torch
    from transformers import (Qwen2VLConfig, Qwen2VLForConditionalGeneration,
                              Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor)

    out = Path(out)
    tok = build_tokenizer(out)
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIALS}
    text = dict(vocab_size=len(tok), hidden_size=128, intermediate_size=256,
                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                max_position_embeddings=2048,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                 "mrope_section": [4, 6, 6]},
                eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                bos_token_id=ids["<|endoftext|>"])
    vision = dict(depth=1, embed_dim=64, hidden_size=128, num_heads=2, mlp_ratio=2,
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    cfg = Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True,
                        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                        vision_start_token_id=ids["<|vision_start|>"],
                        vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(seed)
    Qwen2VLForConditionalGeneration(cfg).save_pretrained(out)
    px = dict(min_pixels=56 * 56, max_pixels=112 * 112)
    proc = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(**px), tokenizer=tok,
                            video_processor=Qwen2VLVideoProcessor(**px),
                            chat_template=CHAT_TEMPLATE)
    proc.save_pretrained(out)
    return str(out)
