"""Tiny offline models (tokenizer, Qwen2-VL policy) and the shared prompt/response encoding.

from mmrlhf_ray.models import build_all, load_policy, encode_prompt_response
paths = build_all("runs/demo/build-models", seed=0)   # {"tokenizer", "policy"}
model, processor = load_policy(paths["policy"])
"""

from mmrlhf_ray.models.encoding import (
    IGNORE_INDEX,
    chat_messages,
    collate,
    encode_prompt,
    encode_prompt_response,
    model_inputs,
    response_logps,
    sequence_logps,
    sft_loss,
)
from mmrlhf_ray.models.generation import generate_batch, generate_text
from mmrlhf_ray.models.policy import (
    TinyPolicySpec,
    build_all,
    build_processor,
    build_tiny_policy,
    load_policy,
    tiny_config,
)
from mmrlhf_ray.models.tokenizer import (
    CHAT_TEMPLATE,
    SPECIAL_TOKENS,
    build_tokenizer,
    default_texts,
)

__all__ = [
    "CHAT_TEMPLATE",
    "IGNORE_INDEX",
    "SPECIAL_TOKENS",
    "TinyPolicySpec",
    "build_all",
    "build_processor",
    "build_tiny_policy",
    "build_tokenizer",
    "chat_messages",
    "collate",
    "default_texts",
    "encode_prompt",
    "encode_prompt_response",
    "generate_batch",
    "generate_text",
    "load_policy",
    "model_inputs",
    "response_logps",
    "sequence_logps",
    "sft_loss",
    "tiny_config",
]
