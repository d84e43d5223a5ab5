"""A tiny byte-level BPE tokenizer with Qwen2-VL's special tokens and chat template.

No model hub is reachable, so the toy pipeline trains its own tokenizer on the shapes
world's text. It is wrapped as a ``PreTrainedTokenizerFast`` carrying the same special
tokens and the same chat layout as Qwen2-VL, so every downstream stage (processor,
vLLM, SFT, DPO, reward model) treats it exactly as a real Qwen2-VL tokenizer: swap in a
real checkpoint by path and no code path changes.

One deliberate difference from Qwen2-VL's template: no default system prompt is
inserted (it would add ~10 tokens to every toy sequence); a system message given by the
caller is rendered as usual.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

PAD_TOKEN = "<|endoftext|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
IMAGE_PAD, VIDEO_PAD = "<|image_pad|>", "<|video_pad|>"
# Order fixes the ids 0..6 (the first ids of the vocabulary).
SPECIAL_TOKENS = [PAD_TOKEN, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD]


def chat_template(image_part: str, video_part: str) -> str:
    """ChatML turns (``<|im_start|>role\n ... <|im_end|>\n``); each image part of a
    message becomes ``image_part``, each video part ``video_part`` (the processor expands
    the placeholder to one token per visual feature)."""
    return (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\n' }}"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for part in message['content'] %}"
        "{% if part['type'] == 'image' or 'image' in part or 'image_url' in part %}"
        f"{{{{ '{image_part}' }}}}"
        "{% elif part['type'] == 'video' or 'video' in part %}"
        f"{{{{ '{video_part}' }}}}"
        "{% elif 'text' in part %}{{ part['text'] }}{% endif %}"
        "{% endfor %}{% endif %}"
        "{{ '<|im_end|>\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )


# Qwen2-VL's layout: each image part becomes <|vision_start|><|image_pad|><|vision_end|>,
# each video part the same with <|video_pad|>.
CHAT_TEMPLATE = chat_template(
    f"{VISION_START}{IMAGE_PAD}{VISION_END}", f"{VISION_START}{VIDEO_PAD}{VISION_END}"
)

_FALLBACK_TEXTS = [
    "Describe the image in detail.",
    "There is a red circle at the top left and a blue square at the bottom right.",
    "What colour is the triangle? The triangle is green.",
    "How many shapes are in the image? There are three shapes.",
    "Where is the yellow star? It is in the center.",
    "Which shape is purple? A. circle B. square C. triangle D. star. Answer: B.",
    "In which direction does the orange circle move? It moves to the right.",
    "I cannot help with that request because it could cause harm.",
    "A small white hexagon sits at the bottom left next to a black diamond.",
    "left right up down top bottom center middle red green blue yellow orange purple",
]


def default_texts(n: int = 2000, seed: int = 0) -> list[str]:
    """Training text for the tokenizer: the toy world's corpus when it is available.

    ``mmrlhf_ray.toyworld.corpus_texts(n, seed)`` is the source of truth; until that
    module exists a small built-in list stands in (the switch is this one function).
    """
    try:
        from mmrlhf_ray.toyworld import corpus_texts
    except ImportError:
        return list(_FALLBACK_TEXTS)
    return list(corpus_texts(n, seed))


def build_tokenizer(
    texts: Iterable[str],
    out_dir: str | Path,
    vocab_size: int = 2000,
    extra_specials: Sequence[str] = (),
    template: str = CHAT_TEMPLATE,
    attributes: dict[str, str] | None = None,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts``, wrap it Qwen2-VL style, save it to ``out_dir``.

    The result reloads with ``AutoTokenizer.from_pretrained(out_dir)``. ``vocab_size``
    counts the 256 byte symbols and the special tokens. ``extra_specials`` (another
    family's vision tokens) follow the shared ones; ``attributes`` become named special
    tokens (``tokenizer.start_image_token`` ...) that some processors read.
    """
    specials = [*SPECIAL_TOKENS, *[t for t in extra_specials if t not in SPECIAL_TOKENS]]
    texts = list(texts)
    if not texts:
        raise ValueError("build_tokenizer: texts is empty")
    core = Tokenizer(models.BPE(unk_token=None))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    core.add_special_tokens(specials)  # never split, never merged with text
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD_TOKEN,
        eos_token=IM_END,
        unk_token=None,
        model_max_length=4096,
        padding_side="right",
        extra_special_tokens=dict(attributes or {}),
    )
    tok.chat_template = template
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(out))
    return AutoTokenizer.from_pretrained(str(out))
