"""The reward model as a scoring service, without Ray: request models, limits, media
resolution and the plain ``RewardScorer`` (critique, then score, in batches).

``serve/app.py`` wraps this module in a Ray Serve deployment; everything that decides
*what* a request means and *how* it is scored lives here so it is tested without Ray.

* Requests (pydantic, ``extra="forbid"``): ``ScoreRequest`` (items of question, media,
  response, optional critique) and ``CompareRequest`` (one question + media, K responses).
* ``resolve_score_request`` / ``resolve_compare_request`` turn a request into
  ``ScoringInput`` rows, enforcing ``ServeLimits`` (text length, item count, encoded
  bytes, decoded pixels per image and per request: every image's headers are read and
  the request's budget checked before anything is decoded; PNG and JPEG only, downsized
  to ``max_side`` on decode) and resolving media: base64 (or a ``data:`` URL), or a path
  that must resolve (symlinks followed) inside one of ``allowed_roots``, or an http(s)
  URL when ``allow_urls`` (public hosts or ``allowed_url_hosts`` only, see
  ``url_fetch``). Every problem raises ``RequestError(field, reason, status)`` naming the
  field, e.g. ``items[3].image``, which the app turns into a 4xx JSON error.
* ``RewardScorer.score(inputs)`` runs the paper's inference (Sec. 3.2): the critique
  head writes a critique c for (x, y) unless one is given, then the scoring head gives
  r(x, y, c). It chunks inputs into batches of ``max_batch_size``.

The model behind the scorer is anything with ``critique(inputs) -> [str]`` and
``score(inputs, critiques) -> [float]`` (the ``RewardModel`` protocol); ``load_scorer``
puts ``mmrlhf_ray.reward.model.CritiqueRewardModel`` behind it.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from PIL import Image

from mmrlhf_ray.data.media import MediaError, decode_image, image_size
from mmrlhf_ray.service.config import ServeLimits
from mmrlhf_ray.service.url_fetch import FetchError, fetch_bytes
from mmrlhf_ray.service.wire import CompareRequest, MediaFields, PairMargin, ScoreRequest

# ---------------------------------------------------------------------------------------
# limits and config


# ---------------------------------------------------------------------------------------
# request / response models


class RequestError(ValueError):
    """A client mistake: ``field`` (e.g. ``items[2].image``) and why; HTTP ``status``."""

    def __init__(self, field: str, reason: str, status: int = 422):
        super().__init__(f"{field}: {reason}")
        self.field, self.reason, self.status = field, reason, status

    def body(self) -> dict:
        return {"error": {"field": self.field, "reason": self.reason}}


# ---------------------------------------------------------------------------------------
# resolved inputs and media


@dataclass
class ScoringInput:
    """One (x, media, y[, c]) to score, media decoded."""

    question: str
    response: str
    images: list[Image.Image] = field(default_factory=list)
    critique: str | None = None


def _check_text(value: str, name: str, limits: ServeLimits, required: bool = True) -> str:
    if required and not value.strip():
        raise RequestError(name, "must not be empty")
    if len(value) > limits.max_text_chars:
        raise RequestError(
            name, f"{len(value)} chars exceeds the limit of {limits.max_text_chars}", 413
        )
    if "\x00" in value:
        raise RequestError(name, "contains a NUL character")
    return value


@dataclass
class PendingImage:
    """One image of a request, its size read from its headers; decoded only once the
    whole request is known to fit ``max_request_pixels``."""

    name: str
    source: bytes | Path
    pixels: int


def _pending(source: bytes | Path, name: str, limits: ServeLimits) -> PendingImage:
    try:
        width, height = image_size(source, name, limits.max_pixels)
    except MediaError as exc:
        raise RequestError(name, exc.reason) from exc
    return PendingImage(name, source, width * height)


def check_pixel_budget(pending: Sequence[PendingImage], limits: ServeLimits) -> None:
    """Refuse (413, naming the image that crosses it) a request whose images would
    decode to more than ``max_request_pixels`` in all, before any of them is decoded."""
    total = 0
    for image in pending:
        total += image.pixels
        if total > limits.max_request_pixels:
            raise RequestError(
                image.name,
                f"the request's images decode to {total}+ pixels, over the request budget "
                f"of {limits.max_request_pixels} (items x frames x pixels)",
                413,
            )


def decode_pending(image: PendingImage, limits: ServeLimits) -> Image.Image:
    """Decode one checked image, downsized to ``max_side``; a file that grew since its
    headers were read is refused like any image over its pixel count."""
    try:
        return decode_image(
            image.source, image.name, min(limits.max_pixels, image.pixels), limits.max_side or None
        )
    except MediaError as exc:
        raise RequestError(image.name, exc.reason) from exc


def base64_image(data: str, name: str, limits: ServeLimits) -> PendingImage:
    """base64 (or ``data:<mime>;base64,...``) -> a pending PNG/JPEG within byte and pixel
    limits."""
    if data.startswith("data:"):
        head, sep, data = data.partition(",")
        if not sep or not head.endswith(";base64"):
            raise RequestError(name, "data URL must be of the form data:<mime>;base64,<payload>")
    if len(data) > (limits.max_image_bytes * 4) // 3 + 4:
        raise RequestError(name, f"encoded image exceeds {limits.max_image_bytes} bytes", 413)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(name, f"not valid base64 ({exc})") from exc
    if not raw:
        raise RequestError(name, "empty image")
    return _pending(raw, name, limits)


def resolve_path(path: str, name: str, limits: ServeLimits) -> Path:
    """The real path of ``path`` if it lies inside an allowed root, else ``RequestError``.

    Relative paths are taken relative to the first root; symlinks and ``..`` are
    resolved before the check, so neither can escape a root.
    """
    if not limits.allowed_roots:
        raise RequestError(name, "image paths are disabled (no allowed_roots configured)", 403)
    if "\x00" in path:
        raise RequestError(name, "contains a NUL character")
    roots = [os.path.realpath(r) for r in limits.allowed_roots]
    candidate = path if os.path.isabs(path) else os.path.join(roots[0], path)
    try:
        real = os.path.realpath(candidate)
        inside = any(os.path.commonpath([real, root]) == root for root in roots)
    except ValueError as exc:  # e.g. a path too odd to compare
        raise RequestError(name, f"not a usable path ({exc})") from exc
    if not inside:
        raise RequestError(name, "path is outside the allowed roots", 403)
    if not os.path.isfile(real):
        raise RequestError(name, "no such file under the allowed roots", 404)
    if os.path.getsize(real) > limits.max_image_bytes:
        raise RequestError(name, f"file exceeds {limits.max_image_bytes} bytes", 413)
    return Path(real)


def fetch_image(url: str, name: str, limits: ServeLimits) -> PendingImage:
    """An image by URL (``allow_urls`` only; see ``mmrlhf_ray.service.url_fetch``)."""
    if not limits.allow_urls:
        raise RequestError(
            name,
            "image URLs are disabled on this service (send base64 or a path under an allowed root)",
            400,
        )
    try:
        raw = fetch_bytes(
            url, limits.allowed_url_hosts, limits.max_image_bytes, limits.url_timeout_s
        )
    except FetchError as exc:
        raise RequestError(name, exc.reason, exc.status) from exc
    return _pending(raw, name, limits)


def resolve_media(media: MediaFields, prefix: str, limits: ServeLimits) -> list[PendingImage]:
    """The images of one item, headers read: [image] | frames | [] (text only). One source."""
    given = [
        k
        for k in ("image", "image_path", "image_url", "video_frames")
        if getattr(media, k) is not None
    ]
    if len(given) > 1:
        raise RequestError(f"{prefix}{given[1]}", f"give one of {', '.join(given)}, not several")
    if media.image is not None:
        return [base64_image(media.image, f"{prefix}image", limits)]
    if media.image_path is not None:
        name = f"{prefix}image_path"
        return [_pending(resolve_path(media.image_path, name, limits), name, limits)]
    if media.image_url is not None:
        return [fetch_image(media.image_url, f"{prefix}image_url", limits)]
    if media.video_frames is not None:
        frames = media.video_frames
        if not frames:
            raise RequestError(f"{prefix}video_frames", "empty list")
        if len(frames) > limits.max_frames:
            raise RequestError(
                f"{prefix}video_frames", f"{len(frames)} frames exceeds {limits.max_frames}", 413
            )
        return [base64_image(f, f"{prefix}video_frames[{i}]", limits) for i, f in enumerate(frames)]
    return []


def resolve_score_request(req: ScoreRequest, limits: ServeLimits) -> list[ScoringInput]:
    """Validate a ``/v1/score`` request into inputs, or raise ``RequestError``.

    Every image's headers are read (and the request's pixel budget checked) before any
    image is decoded."""
    if not req.items:
        raise RequestError("items", "must not be empty")
    if len(req.items) > limits.max_items:
        raise RequestError(
            "items", f"{len(req.items)} items exceeds the limit of {limits.max_items}", 413
        )
    out, pending = [], []
    for i, item in enumerate(req.items):
        p = f"items[{i}]."
        out.append(
            ScoringInput(
                question=_check_text(item.question, p + "question", limits),
                response=_check_text(item.response, p + "response", limits, required=False),
                critique=None
                if item.critique is None
                else _check_text(item.critique, p + "critique", limits, required=False),
            )
        )
        pending.append(resolve_media(item, p, limits))
    check_pixel_budget([im for images in pending for im in images], limits)
    for inp, images in zip(out, pending, strict=True):
        inp.images = [decode_pending(im, limits) for im in images]
    return out


def resolve_compare_request(req: CompareRequest, limits: ServeLimits) -> list[ScoringInput]:
    """Validate a ``/v1/compare`` request into K inputs sharing one decoded media list."""
    k = len(req.responses)
    if k < 1:
        raise RequestError("responses", "must not be empty")
    if k > limits.max_responses:
        raise RequestError(
            "responses", f"{k} responses exceeds the limit of {limits.max_responses}", 413
        )
    if req.critiques is not None and len(req.critiques) != k:
        raise RequestError("critiques", f"has {len(req.critiques)} entries for {k} responses")
    question = _check_text(req.question, "question", limits)
    pending = resolve_media(req, "", limits)
    critiques = req.critiques or [None] * k
    inputs = [
        ScoringInput(
            question=question,
            response=_check_text(r, f"responses[{i}]", limits, required=False),
            critique=None
            if c is None
            else _check_text(c, f"critiques[{i}]", limits, required=False),
        )
        for i, (r, c) in enumerate(zip(req.responses, critiques, strict=True))
    ]
    check_pixel_budget(pending, limits)
    images = [decode_pending(im, limits) for im in pending]  # once, shared by the K responses
    for inp in inputs:
        inp.images = images
    return inputs


def all_margins(scores: Sequence[float]) -> list[PairMargin]:
    """Every pair i < j with margin scores[i] - scores[j]."""
    return [
        PairMargin(i=i, j=j, margin=float(scores[i] - scores[j]))
        for i in range(len(scores))
        for j in range(i + 1, len(scores))
    ]


# ---------------------------------------------------------------------------------------
# the scorer


class RewardModel(Protocol):
    """What the scorer needs from a critique reward model."""

    def critique(self, inputs: list[ScoringInput]) -> list[str]: ...

    def score(self, inputs: list[ScoringInput], critiques: list[str]) -> list[float]: ...


class Scorer(Protocol):
    """What the service and the ``score`` stage need: items -> [(score, critique)]."""

    def score(self, inputs: list[ScoringInput]) -> list[tuple[float, str]]: ...


class RewardScorer:
    """Critique, then score (paper Sec. 3.2, Inference), in batches of ``max_batch_size``.

    Items that bring a critique skip generation (the paper's "human annotations as
    critics" evaluation); the others get one generated by the model's critique head.
    """

    def __init__(
        self,
        model: RewardModel,
        max_batch_size: int = 32,
        name: str = "reward",
        critic: Callable[[list[ScoringInput]], list[str]] | None = None,
    ):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.model, self.max_batch_size, self.name = model, max_batch_size, name
        self.critic = critic or model.critique  # e.g. actors.critic.VllmCritic
        self.forward_calls = 0  # batches run, for tests and metrics

    def score(self, inputs: list[ScoringInput]) -> list[tuple[float, str]]:
        out: list[tuple[float, str]] = []
        for start in range(0, len(inputs), self.max_batch_size):
            out += self._score_batch(inputs[start : start + self.max_batch_size])
        return out

    def _score_batch(self, batch: list[ScoringInput]) -> list[tuple[float, str]]:
        self.forward_calls += 1
        critiques = [it.critique for it in batch]
        todo = [i for i, c in enumerate(critiques) if c is None]
        if todo:
            generated = self.critic([batch[i] for i in todo])
            if len(generated) != len(todo):
                raise RuntimeError(
                    f"critique head returned {len(generated)} for {len(todo)} inputs"
                )
            for i, text in zip(todo, generated, strict=True):
                critiques[i] = text
        scores = self.model.score(batch, critiques)  # type: ignore[arg-type]
        if len(scores) != len(batch):
            raise RuntimeError(
                f"scoring head returned {len(scores)} scores for {len(batch)} inputs"
            )
        return [(float(s), str(c)) for s, c in zip(scores, critiques, strict=True)]


def load_scorer(
    model_path: str,
    max_batch_size: int = 32,
    critique_max_new_tokens: int = 32,
    trust_remote_code: bool = False,
    critic: Callable[[list[ScoringInput]], list[str]] | None = None,
    forward: str = "packed",
    attention: tuple[str, str, str] = ("float32", "sdpa", "auto"),
) -> RewardScorer:
    """A ``RewardScorer`` over the critique reward model saved at ``model_path``.

    The model is ``mmrlhf_ray.reward.model.CritiqueRewardModel`` (safetensors only).
    ``attention``: (dtype, attn_implementation, packed_attention) of the scoring model.
    """
    if not Path(model_path).is_dir():
        raise FileNotFoundError(f"reward model directory not found: {model_path}")
    model = load_reward_adapter(
        model_path, critique_max_new_tokens, trust_remote_code, forward, attention
    )
    return RewardScorer(
        model, max_batch_size, name=f"reward:{Path(model_path).name}", critic=critic
    )


# ---------------------------------------------------------------------------------------
# adapter to mmrlhf_ray.reward (the trained critique reward model)


def load_reward_adapter(
    model_path: str,
    critique_max_new_tokens: int = 32,
    trust_remote_code: bool = False,
    forward: str = "packed",
    attention: tuple[str, str, str] = ("float32", "sdpa", "auto"),
) -> RewardModel:
    """``mmrlhf_ray.reward.model.load_reward_model(path)`` behind the ``RewardModel`` protocol.

    That loader reads safetensors only and never trusts remote code; asking for
    ``trust_remote_code`` is refused here rather than silently ignored.
    """
    if trust_remote_code:
        raise ValueError(
            "trust_remote_code: the critique reward model loader does not run "
            "repository code; leave it false"
        )
    import torch

    from mmrlhf_ray.models.attention import configure_attention
    from mmrlhf_ray.reward.model import load_reward_model

    dtype, attn_implementation, packed_attention = attention
    model = load_reward_model(model_path, dtype=getattr(torch, dtype))
    configure_attention(model, attn_implementation, packed_attention)
    model.forward_kind = forward  # packed: a /v1/compare's K responses share one prefix
    return _RewardLibAdapter(model, critique_max_new_tokens)


class _RewardLibAdapter:
    """``CritiqueRewardModel.critique`` / ``.score`` over the scorer's batches (one chunk each)."""

    def __init__(self, model, max_new_tokens: int):
        from mmrlhf_ray.reward.items import RewardItem

        self.model, self.max_new_tokens, self.item = model, max_new_tokens, RewardItem

    def critique(self, inputs: list[ScoringInput]) -> list[str]:
        items = [self.item(i.question, i.response, i.images) for i in inputs]
        return self.model.critique(items, max_new_tokens=self.max_new_tokens, batch_size=len(items))

    def score(self, inputs: list[ScoringInput], critiques: list[str]) -> list[float]:
        items = [
            self.item(i.question, i.response, i.images, c)
            for i, c in zip(inputs, critiques, strict=True)
        ]
        return [float(s) for s in self.model.score(items, batch_size=len(items))]
