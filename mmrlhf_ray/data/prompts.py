"""Prompt texts and chat formatting for generation, expansion and critiques.

Three prompts live here so every stage words them the same way:

* the policy prompt: the query as a user turn with its image / video parts, rendered
  through the model's own chat template (``chat_messages``);
* ``EXPANSION_PROMPT``: the paper's Table 7 prompt that asks an LLM to expand a
  human annotator's short score reason into a fuller critique, without new claims;
* ``CRITIQUE_PROMPT``: the critique reward model's prompt in the official release's
  style (an evaluator instruction, then ``[Question]: ...``, ``[LMM Response]: ...``,
  ``[Evaluation]:``); the critique is the assistant turn that follows.

Pure Python: no torch, no ray, no vllm.
"""

from __future__ import annotations

from typing import Any

# Paper Table 7, verbatim apart from line breaks; {question} {answer} {reason} are filled.
EXPANSION_PROMPT = (
    "You will receive an image-related question, an answer, and a comment provided by a "
    "human expert for the answer.\n"
    "Your task is to expand the human comment comprehensively while retaining its strengths "
    "and weaknesses, making it more professional, and logically rigorous. Focus only on "
    "expanding the comment and do not answer the question.\n"
    "Ensure the expanded comment is strictly based on the provided human comment and avoids "
    "any speculation or uncertain content.\n"
    "[Question:] {question} [Answer:] {answer} [Human Comment for the answer:] {reason}\n"
    "Expanded Comment:"
)

# The critique reward model's prompt (official style, see paper/RELEASE_FORMATS.md).
CRITIQUE_PROMPT = (
    "You are a careful evaluator of answers given by a large multimodal model. Judge the "
    "response to the question about the image for helpfulness, faithfulness to the image "
    "and ethics. Point out every error, hallucinated object or unsafe content, and say "
    "whether the response is correct.\n"
    "[Question]: {question}\n"
    "[LMM Response]: {response}\n"
    "[Evaluation]:"
)


def fill(template: str, **values: str) -> str:
    """``template.format(**values)`` with a clear error naming a missing placeholder."""
    try:
        return template.format(**values)
    except KeyError as exc:
        raise ValueError(
            f"prompt template needs placeholder {exc} (given: {sorted(values)})"
        ) from exc


def expansion_prompt(
    question: str, answer: str, reason: str, template: str = EXPANSION_PROMPT
) -> str:
    """The Table 7 prompt for one (question, answer, human reason)."""
    return fill(template, question=question, answer=answer, reason=reason)


def critique_prompt(question: str, response: str, template: str = CRITIQUE_PROMPT) -> str:
    """The reward model's critique prompt for one (question, response)."""
    return fill(template, question=question, response=response)


def chat_messages(
    text: str,
    n_images: int = 0,
    video: bool = False,
    system: str | None = None,
    response: str | None = None,
) -> list[dict[str, Any]]:
    """One user turn in the HF/OpenAI multimodal message format (the one definition).

    ``n_images`` image parts, then one ``{"type": "video"}`` part when ``video`` (its
    frames go to the processor as one video), then the text: the Qwen2-VL / LLaVA-OV
    order. The model's chat template turns these into its own special tokens (e.g.
    ``<|vision_start|><|image_pad|>...``). ``system`` adds a system turn before it,
    ``response`` an assistant turn after it.
    """
    parts: list[dict[str, Any]] = [{"type": "image"} for _ in range(n_images)]
    if video:
        parts.append({"type": "video"})
    parts.append({"type": "text", "text": text})
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
    messages.append({"role": "user", "content": parts})
    if response is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": response}]})
    return messages


def render_chat(tokenizer: Any, messages: list[dict[str, Any]]) -> str:
    """The prompt string from the tokenizer's (or processor's) chat template.

    Raises ``ValueError`` when the model ships no chat template: silently sending raw
    text to a chat model would quietly degrade every sample.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"{getattr(tokenizer, 'name_or_path', tokenizer)!s}: no chat_template")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
