"""Model families, tiny offline models (tokenizer, policy) and the shared encoding.

from mmrlhf_ray.models import build_all, load_policy, encode_prompt_response, family_of
paths = build_all("runs/demo/build-models", seed=0, family="llava-onevision")
model, processor = load_policy(paths["policy"])
family_of(model).vision_modules(model)   # what freezing freezes
"""

from mmrlhf_ray.models.decoding import generate_batch, generate_text
from mmrlhf_ray.models.encoding import (
    IGNORE_INDEX,
    collate,
    encode_prompt,
    encode_prompt_response,
    model_inputs,
    response_logps,
    sequence_logps,
    sft_loss,
)
from mmrlhf_ray.models.families import FAMILIES, Family, family_of, get_family, load_model
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
    "FAMILIES",
    "Family",
    "family_of",
    "get_family",
    "load_model",
    "IGNORE_INDEX",
    "SPECIAL_TOKENS",
    "TinyPolicySpec",
    "build_all",
    "build_processor",
    "build_tiny_policy",
    "build_tokenizer",
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
