"""transformers generation: the project's one ``model.generate`` path (no vLLM).

* ``encode_batch``: rendered prompts (+ their images / videos) as one left-padded batch;
* ``generate_encoded``: ``model.generate`` on such a batch, ``n`` sequences per prompt, each
  cut after its first stop token, with per-token log-probs from the raw logits (the
  quantity vLLM reports by default);
* ``generate_batch`` / ``generate_text``: replies to ``(question, media)`` prompts, used
  by the SFT stage's toy benchmark and by tests.

The generator actor's transformers backend (``actors/generator.py`` ``HFBackend``) loads
the model and calls ``encode_batch`` + ``generate_encoded``; the generate stage uses vLLM
at scale, behind the same chat template. A batch holds one modality (each prompt has its
own images, or is one video given as frames): Qwen2-VL's M-RoPE generate needs that, and
left-padded batches are ~batch-size times faster on CPU than one prompt at a time.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mmrlhf_ray.data.prompts import chat_messages
from mmrlhf_ray.models.encoding import end_of_turn
from mmrlhf_ray.models.families import Family, family_of_processor


@dataclass
class Generated:
    """One generated sequence: new tokens up to and including the first stop token."""

    token_ids: list[int]
    stopped: bool  # ended on a stop token (else it hit max_new_tokens)
    token_logprobs: list[float] | None = None  # log pi(token) per token, when asked for

    def text(self, tokenizer: Any) -> str:
        """The decoded reply, stop token and special tokens left out."""
        ids = self.token_ids[:-1] if self.stopped else self.token_ids
        return tokenizer.decode(ids, skip_special_tokens=True)


def encode_batch(
    templater: Any,
    texts: Sequence[str],
    family: Family | None = None,
    images: Sequence[Sequence[Any]] = (),
    videos: Sequence[Sequence[Any]] = (),
) -> Any:
    """Left-padded model inputs for rendered prompts (the tokenizer's padding side is
    restored afterwards). ``family`` None means a text-only model: ``templater`` is then
    the tokenizer (or a processor whose tokenizer is used); ``images`` is one image list
    per image prompt, ``videos`` one frame list per video prompt."""
    tok = getattr(templater, "tokenizer", templater)
    side, tok.padding_side = tok.padding_side, "left"
    try:
        if family is None:
            return tok(list(texts), padding=True, return_tensors="pt")
        media = family.processor_media(prompt_images=list(images), videos=list(videos))
        return templater(text=list(texts), padding=True, return_tensors="pt", **media)
    finally:
        tok.padding_side = side


@torch.no_grad()
def generate_encoded(
    model: Any,
    enc: Any,
    stop_ids: Collection[int],
    pad_id: int | None,
    max_new_tokens: int,
    n: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    logprobs: bool = False,
) -> list[list[Generated]]:
    """``n`` sequences per prompt of the left-padded batch ``enc`` (``[prompt][sample]``).

    ``temperature`` 0 is greedy (then ``n`` must be 1, as transformers requires); above 0,
    plain temperature / nucleus sampling (``top_k`` off). ``seed`` seeds torch before the
    call, so a batch of one prompt is reproducible on its own.
    """
    sample = temperature > 0
    if seed is not None:
        torch.manual_seed(seed)
    kwargs: dict[str, Any] = dict(
        do_sample=sample,
        max_new_tokens=max_new_tokens,
        num_return_sequences=n,
        return_dict_in_generate=True,
        output_logits=logprobs,
        eos_token_id=sorted(stop_ids),
        pad_token_id=pad_id,
    )
    if sample:
        kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
    out = model.generate(**enc.to(model.device), **kwargs)
    new = out.sequences[:, enc["input_ids"].shape[1] :]
    rows = [
        _cut(new[j].tolist(), stop_ids, out.logits if logprobs else None, j)
        for j in range(len(new))
    ]
    return [rows[i * n : (i + 1) * n] for i in range(len(rows) // n)]


def _cut(ids: list[int], stop_ids: Collection[int], logits: Any, j: int) -> Generated:
    """Sequence ``j``'s tokens up to its first stop token, with their log-probs."""
    stop = next((k for k, t in enumerate(ids) if t in stop_ids), None)
    ids = ids if stop is None else ids[: stop + 1]
    lps = None
    if logits is not None:
        steps = torch.stack([lg[j] for lg in logits[: len(ids)]]).float()
        logp = torch.log_softmax(steps, dim=-1)
        lps = logp.gather(1, torch.tensor(ids).unsqueeze(1)).squeeze(1).tolist()
    return Generated(ids, stop is not None, lps)


def generate_batch(
    model,
    processor,
    prompts: Sequence[tuple[str, Sequence[Any]]],
    video: bool = False,
    max_new_tokens: int = 48,
    temperature: float = 0.0,
) -> list[str]:
    """Replies to ``(question, images_or_frames)`` prompts, generated as one left-padded
    batch that stops at the end-of-turn token (``temperature`` 0 = greedy).

    All prompts share a modality: each has its own images (``video=False``) or is one
    video given as frames (``video=True``).
    """
    if not prompts:
        return []
    texts, images, videos = [], [], []
    for question, media in prompts:
        media = list(media or [])
        messages = chat_messages(
            question, n_images=0 if video else len(media), video=video and bool(media)
        )
        texts.append(
            processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        )
        if video and media:
            videos.append(media)
        else:
            images.append(media)
    enc = encode_batch(processor, texts, family_of_processor(processor), images, videos)
    tok = processor.tokenizer
    stop = tok.convert_tokens_to_ids(end_of_turn(processor))
    out = generate_encoded(
        model, enc, [stop], tok.pad_token_id, max_new_tokens, temperature=temperature
    )
    return [samples[0].text(tok).strip() for samples in out]


def generate_text(
    model,
    processor,
    question: str,
    images_or_frames: Sequence | None = None,
    video: bool = False,
    max_new_tokens: int = 48,
    temperature: float = 0.0,
) -> str:
    """The model's reply to ``question`` about the images (or the video's frames)."""
    prompt = [(question, images_or_frames or [])]
    return generate_batch(model, processor, prompt, video, max_new_tokens, temperature)[0]
