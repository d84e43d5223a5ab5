"""The reward model as a scoring service, without Ray: request models, limits, media
resolution and the plain ``RewardScorer`` (critique, then score, in batches).

``serve/app.py`` wraps this module in a Ray Serve deployment; everything that decides
*what* a request means and *how* it is scored lives here so it is tested without Ray.

* Requests (pydantic, ``extra="forbid"``): ``ScoreRequest`` (items of question, media,
  response, optional critique) and ``CompareRequest`` (one question + media, K responses).
* ``resolve_score_request`` / ``resolve_compare_request`` turn a request into
  ``ScoringInput`` rows, enforcing ``ServeLimits`` (text length, item count, encoded
  bytes, decoded pixels) and resolving media: base64 (or a ``data:`` URL), or a path
  that must resolve (symlinks followed) inside one of ``allowed_roots``; plain URLs are
  refused. Every problem raises ``RequestError(field, reason, status)`` naming the
  field, e.g. ``items[3].image``, which the app turns into a 4xx JSON error.
* ``RewardScorer.score(inputs)`` runs the paper's inference (Sec. 3.2): the critique
  head writes a critique c for (x, y) unless one is given, then the scoring head gives
  r(x, y, c). It chunks inputs into batches of ``max_batch_size``.

The model behind the scorer is anything with ``critique(inputs) -> [str]`` and
``score(inputs, critiques) -> [float]`` (the ``RewardModel`` protocol):
``mmrlhf_ray.reward`` 's critique reward model through ``load_reward_model``, or the
small stand-in ``TinyCritiqueRewardModel`` below (a byte-level causal transformer with
an image-patch prefix, a critique LM head and a reward head) used where no trained
reward model exists yet and by the serving benchmarks.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from mmrlhf_ray.media import MediaError, decode_image

# ---------------------------------------------------------------------------------------
# limits and config


@dataclass
class ServeLimits:
    """What one request may carry. Anything beyond is a 4xx naming the field."""

    max_body_bytes: int = field(default=8 << 20, metadata={"help": "request body cap (413 above)"})
    max_items: int = field(default=64, metadata={"help": "items per /v1/score request"})
    max_responses: int = field(default=16, metadata={"help": "responses per /v1/compare request"})
    max_text_chars: int = field(default=8000, metadata={"help": "chars per question/response/critique"})
    max_image_bytes: int = field(default=4 << 20, metadata={"help": "encoded bytes per image"})
    max_pixels: int = field(default=2048 * 2048, metadata={"help": "decoded pixels per image (bombs)"})
    max_frames: int = field(default=8, metadata={"help": "video frames per item"})
    allowed_roots: list[str] = field(default_factory=list, metadata={"help": "dirs image_path may point into"})
    allow_urls: bool = field(default=False, metadata={"help": "accept http(s) image URLs (off: refused)"})


@dataclass
class ServeRewardConfig:
    """`mmrlhf serve-reward`: host the critique reward model over HTTP with Ray Serve."""

    run_dir: str = field(default="runs/demo", metadata={"help": "run directory"})
    model_path: str = field(default="", metadata={"help": "reward model dir (default <run_dir>/train-reward/model)"})
    model_kind: str = field(default="auto", metadata={"help": "auto | reward | tiny"})
    host: str = field(default="127.0.0.1", metadata={"help": "HTTP bind address"})
    port: int = field(default=8000, metadata={"help": "HTTP port"})
    app_name: str = field(default="reward", metadata={"help": "Serve application name"})
    route_prefix: str = field(default="/", metadata={"help": "HTTP route prefix of the app"})
    token_env: str = field(default="", metadata={"help": "env var holding a bearer token ('' = no auth)"})
    max_batch_size: int = field(default=32, metadata={"help": "@serve.batch max batch size"})
    batch_wait_timeout_s: float = field(default=0.01, metadata={"help": "@serve.batch wait"})
    max_ongoing_requests: int = field(default=256, metadata={"help": "per replica (> batch size)"})
    num_replicas: int = field(default=1, metadata={"help": "fixed replicas (ignored if autoscaling)"})
    autoscaling: bool = field(default=False, metadata={"help": "use min/max_replicas autoscaling"})
    min_replicas: int = field(default=1, metadata={"help": "autoscaling lower bound"})
    max_replicas: int = field(default=2, metadata={"help": "autoscaling upper bound"})
    target_ongoing_requests: float = field(default=32.0, metadata={"help": "autoscaling target"})
    num_cpus: float = field(default=1.0, metadata={"help": "CPUs per replica"})
    num_gpus: float = field(default=0.0, metadata={"help": "GPUs per replica"})
    torch_threads: int = field(default=1, metadata={"help": "torch threads per replica (CPU)"})
    critique_max_new_tokens: int = field(default=32, metadata={"help": "critique length cap"})
    trust_remote_code: bool = field(default=False, metadata={"help": "allow model repo code"})
    detach: bool = field(default=False, metadata={"help": "return leaving the app running"})
    limits: ServeLimits = field(default_factory=ServeLimits)


# ---------------------------------------------------------------------------------------
# request / response models


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class MediaFields(_Strict):
    image: str | None = Field(None, description="base64 image bytes (PNG/JPEG) or a data: URL")
    image_path: str | None = Field(None, description="path under one of the allowed roots")
    image_url: str | None = Field(None, description="http(s) URL; refused unless allow_urls")
    video_frames: list[str] | None = Field(None, description="base64 frames of a short video")


class ScoreItem(MediaFields):
    question: str = Field(..., description="the query x")
    response: str = Field(..., description="the response y to score")
    critique: str | None = Field(None, description="use this critique instead of generating one")


class ScoreRequest(_Strict):
    items: list[ScoreItem] = Field(..., description="items to score, each independently")


class CompareRequest(MediaFields):
    question: str = Field(..., description="the query x, shared by all responses")
    responses: list[str] = Field(..., description="K candidate responses")
    critiques: list[str | None] | None = Field(None, description="optional critique per response")


class ScoreResult(BaseModel):
    score: float = Field(..., description="reward r(x, y, c)")
    critique: str = Field(..., description="the critique c the score was conditioned on")


class ScoreResponse(BaseModel):
    results: list[ScoreResult]
    model: str


class PairMargin(BaseModel):
    i: int
    j: int
    margin: float = Field(..., description="scores[i] - scores[j]")


class CompareResponse(BaseModel):
    scores: list[float]
    critiques: list[str]
    margins: list[PairMargin] = Field(..., description="every pair i < j")
    model: str


class ErrorBody(BaseModel):
    field: str
    reason: str


class ErrorResponse(BaseModel):
    error: ErrorBody


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
        raise RequestError(name, f"{len(value)} chars exceeds the limit of {limits.max_text_chars}", 413)
    if "\x00" in value:
        raise RequestError(name, "contains a NUL character")
    return value


def decode_base64_image(data: str, name: str, limits: ServeLimits) -> Image.Image:
    """base64 (or ``data:<mime>;base64,...``) -> RGB image, within byte and pixel limits."""
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
    return _decode(raw, name, limits)


def _decode(raw: bytes | str, name: str, limits: ServeLimits) -> Image.Image:
    try:
        return decode_image(raw, name, max_pixels=limits.max_pixels)
    except MediaError as exc:
        raise RequestError(name, exc.reason) from exc
    except Image.DecompressionBombError as exc:  # PIL's own guard, belt and braces
        raise RequestError(name, f"decompression bomb refused ({exc})") from exc


def resolve_path(path: str, name: str, limits: ServeLimits) -> Path:
    """The real path of ``path`` if it lies inside an allowed root, else ``RequestError``.

    Relative paths are taken relative to the first root; symlinks and ``..`` are
    resolved before the check, so neither can escape a root.
    """
    if not limits.allowed_roots:
        raise RequestError(name, "image paths are disabled (no allowed_roots configured)", 403)
    roots = [os.path.realpath(r) for r in limits.allowed_roots]
    candidate = path if os.path.isabs(path) else os.path.join(roots[0], path)
    real = os.path.realpath(candidate)
    if not any(os.path.commonpath([real, root]) == root for root in roots):
        raise RequestError(name, "path is outside the allowed roots", 403)
    if not os.path.isfile(real):
        raise RequestError(name, "no such file under the allowed roots", 404)
    if os.path.getsize(real) > limits.max_image_bytes:
        raise RequestError(name, f"file exceeds {limits.max_image_bytes} bytes", 413)
    return Path(real)


def resolve_media(media: MediaFields, prefix: str, limits: ServeLimits) -> list[Image.Image]:
    """Decoded images of one item: [image] | frames | [] (text only). One source only."""
    given = [k for k in ("image", "image_path", "image_url", "video_frames")
             if getattr(media, k) is not None]
    if len(given) > 1:
        raise RequestError(f"{prefix}{given[1]}", f"give one of {', '.join(given)}, not several")
    if media.image is not None:
        return [decode_base64_image(media.image, f"{prefix}image", limits)]
    if media.image_path is not None:
        name = f"{prefix}image_path"
        return [_decode(str(resolve_path(media.image_path, name, limits)), name, limits)]
    if media.image_url is not None:
        raise RequestError(f"{prefix}image_url", "image URLs are disabled on this service "
                           "(send base64 or a path under an allowed root)"
                           if not limits.allow_urls else "URL fetching is not implemented", 400)
    if media.video_frames is not None:
        frames = media.video_frames
        if not frames:
            raise RequestError(f"{prefix}video_frames", "empty list")
        if len(frames) > limits.max_frames:
            raise RequestError(f"{prefix}video_frames", f"{len(frames)} frames exceeds {limits.max_frames}", 413)
        return [decode_base64_image(f, f"{prefix}video_frames[{i}]", limits) for i, f in enumerate(frames)]
    return []


def resolve_score_request(req: ScoreRequest, limits: ServeLimits) -> list[ScoringInput]:
    """Validate a ``/v1/score`` request into inputs, or raise ``RequestError``."""
    if not req.items:
        raise RequestError("items", "must not be empty")
    if len(req.items) > limits.max_items:
        raise RequestError("items", f"{len(req.items)} items exceeds the limit of {limits.max_items}", 413)
    out = []
    for i, item in enumerate(req.items):
        p = f"items[{i}]."
        out.append(ScoringInput(
            question=_check_text(item.question, p + "question", limits),
            response=_check_text(item.response, p + "response", limits, required=False),
            images=resolve_media(item, p, limits),
            critique=None if item.critique is None
            else _check_text(item.critique, p + "critique", limits, required=False),
        ))
    return out


def resolve_compare_request(req: CompareRequest, limits: ServeLimits) -> list[ScoringInput]:
    """Validate a ``/v1/compare`` request into K inputs sharing one decoded media list."""
    k = len(req.responses)
    if k < 1:
        raise RequestError("responses", "must not be empty")
    if k > limits.max_responses:
        raise RequestError("responses", f"{k} responses exceeds the limit of {limits.max_responses}", 413)
    if req.critiques is not None and len(req.critiques) != k:
        raise RequestError("critiques", f"has {len(req.critiques)} entries for {k} responses")
    question = _check_text(req.question, "question", limits)
    images = resolve_media(req, "", limits)  # decoded once, shared by the K responses
    critiques = req.critiques or [None] * k
    return [
        ScoringInput(
            question=question,
            response=_check_text(r, f"responses[{i}]", limits, required=False),
            images=images,
            critique=None if c is None else _check_text(c, f"critiques[{i}]", limits, required=False),
        )
        for i, (r, c) in enumerate(zip(req.responses, critiques))
    ]


def all_margins(scores: Sequence[float]) -> list[PairMargin]:
    """Every pair i < j with margin scores[i] - scores[j]."""
    return [PairMargin(i=i, j=j, margin=float(scores[i] - scores[j]))
            for i in range(len(scores)) for j in range(i + 1, len(scores))]


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

    def __init__(self, model: RewardModel, max_batch_size: int = 32, name: str = "reward"):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.model, self.max_batch_size, self.name = model, max_batch_size, name
        self.forward_calls = 0  # batches run, for tests and metrics

    def score(self, inputs: list[ScoringInput]) -> list[tuple[float, str]]:
        out: list[tuple[float, str]] = []
        for start in range(0, len(inputs), self.max_batch_size):
            out += self._score_batch(inputs[start:start + self.max_batch_size])
        return out

    def _score_batch(self, batch: list[ScoringInput]) -> list[tuple[float, str]]:
        self.forward_calls += 1
        critiques = [it.critique for it in batch]
        todo = [i for i, c in enumerate(critiques) if c is None]
        if todo:
            generated = self.model.critique([batch[i] for i in todo])
            if len(generated) != len(todo):
                raise RuntimeError(f"critique head returned {len(generated)} for {len(todo)} inputs")
            for i, text in zip(todo, generated):
                critiques[i] = text
        scores = self.model.score(batch, critiques)  # type: ignore[arg-type]
        if len(scores) != len(batch):
            raise RuntimeError(f"scoring head returned {len(scores)} scores for {len(batch)} inputs")
        return [(float(s), str(c)) for s, c in zip(scores, critiques)]


def _has_tiny_model(path: str) -> bool:
    config = Path(path) / TINY_CONFIG_NAME
    return config.is_file() and json.loads(config.read_text()).get("kind") == TINY_KIND


def load_scorer(model_path: str, kind: str = "auto", max_batch_size: int = 32,
                critique_max_new_tokens: int = 32, trust_remote_code: bool = False) -> RewardScorer:
    """A ``RewardScorer`` over the model saved at ``model_path`` (safetensors only).

    ``kind``: ``"reward"`` = ``mmrlhf_ray.reward.load_reward_model``; ``"tiny"`` = the
    stand-in of ``mmrlhf_ray.tiny_reward``; ``"auto"`` = tiny if its config is there,
    else the reward model.
    """
    if not Path(model_path).is_dir():
        raise FileNotFoundError(f"reward model directory not found: {model_path}")
    if kind == "auto":
        kind = "tiny" if _has_tiny_model(model_path) else "reward"
    if kind == "tiny":
        model = TinyCritiqueRewardModel.load(model_path, max_new_tokens=critique_max_new_tokens)
        return RewardScorer(model, max_batch_size, name=f"tiny:{Path(model_path).name}")
    if kind == "reward":
        model = load_reward_adapter(model_path, critique_max_new_tokens, trust_remote_code)
        return RewardScorer(model, max_batch_size, name=f"reward:{Path(model_path).name}")
    raise ValueError(f"model_kind must be auto, reward or tiny, got {kind!r}")


# ---------------------------------------------------------------------------------------
# adapter to mmrlhf_ray.reward (the trained critique reward model)


def load_reward_adapter(model_path: str, critique_max_new_tokens: int = 32,
                        trust_remote_code: bool = False) -> RewardModel:
    """``mmrlhf_ray.reward.load_reward_model(path)`` behind the ``RewardModel`` protocol."""
    try:
        from mmrlhf_ray import reward as reward_lib
    except ImportError as exc:
        raise RuntimeError(
            f"model_kind=reward needs mmrlhf_ray.reward ({exc}); use model_kind=tiny for the "
            "stand-in model") from exc
    return _RewardLibAdapter(reward_lib.load_reward_model(model_path), critique_max_new_tokens)


class _RewardLibAdapter:
    """Calls ``CritiqueRewardModel.critique/score`` with the scorer's inputs."""

    def __init__(self, model, max_new_tokens: int):
        self.model, self.max_new_tokens = model, max_new_tokens

    def critique(self, inputs: list[ScoringInput]) -> list[str]:
        return list(self.model.critique(
            [i.question for i in inputs], [i.images for i in inputs], [i.response for i in inputs],
            max_new_tokens=self.max_new_tokens))

    def score(self, inputs: list[ScoringInput], critiques: list[str]) -> list[float]:
        return [float(s) for s in self.model.score(
            [i.question for i in inputs], [i.images for i in inputs], [i.response for i in inputs],
            critiques)]


# ---------------------------------------------------------------------------------------
# the stand-in critique reward model (pure torch, safetensors)

TINY_CONFIG_NAME = "tiny_reward.json"
TINY_KIND = "tiny-critique-reward"
_BOS, _SEP, _EOS, _VOCAB = 256, 257, 258, 259
_PRINTABLE = [*range(32, 127)]


@dataclass
class TinyRewardSpec:
    """Size of the stand-in model (d_model, layers, ...) and its text budgets (bytes)."""

    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    image_side: int = 32  # images resized to side x side, cut in patch x patch patches
    patch: int = 8
    max_question: int = 64
    max_response: int = 128
    max_critique: int = 64


class TinyCritiqueRewardModel:
    """A byte-level causal transformer: [image patches][x SEP y SEP][c EOS] -> LM + reward.

    ``critique`` decodes greedily from the LM head after ``x SEP y SEP`` (printable bytes
    only, stops at EOS or ``max_new_tokens``); ``score`` reads the reward head at the
    last token of ``x SEP y SEP c EOS``. Weights are random unless trained: it stands
    in for ``mmrlhf_ray.reward`` with the same shape of computation (generate, then
    one forward with a scalar head), so serving and its benchmarks are honest.
    """

    def __init__(self, spec: TinyRewardSpec, state: dict | None = None, seed: int = 0,
                 max_new_tokens: int = 32):
        import torch
        from torch import nn

        self.spec, self.max_new_tokens, self.torch = spec, max_new_tokens, torch
        torch.manual_seed(seed)
        d, n_patch = spec.d_model, (spec.image_side // spec.patch) ** 2
        layer = nn.TransformerEncoderLayer(d, spec.n_heads, 4 * d, dropout=0.0,
                                           batch_first=True, norm_first=True)
        max_len = n_patch + spec.max_question + spec.max_response + spec.max_critique + 8
        self.net = nn.ModuleDict({
            "embed": nn.Embedding(_VOCAB + 1, d), "pos": nn.Embedding(max_len, d),
            "patch": nn.Linear(3 * spec.patch * spec.patch, d),
            "blocks": nn.TransformerEncoder(layer, spec.n_layers, enable_nested_tensor=False),
            "norm": nn.LayerNorm(d), "lm_head": nn.Linear(d, _VOCAB), "reward_head": nn.Linear(d, 1),
        })
        if state is not None:
            self.net.load_state_dict(state)
        self.net.eval()

    # ---- persistence ------------------------------------------------------------------
    def save(self, out_dir: str) -> str:
        from safetensors.torch import save_file

        Path(out_dir).mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in self.net.state_dict().items()}
        save_file(state, str(Path(out_dir) / "model.safetensors"))
        meta = {"kind": TINY_KIND, "spec": self.spec.__dict__}
        (Path(out_dir) / TINY_CONFIG_NAME).write_text(json.dumps(meta, indent=2))
        return out_dir

    @classmethod
    def load(cls, path: str, max_new_tokens: int = 32) -> TinyCritiqueRewardModel:
        from safetensors.torch import load_file

        meta = json.loads((Path(path) / TINY_CONFIG_NAME).read_text())
        state = load_file(str(Path(path) / "model.safetensors"))
        return cls(TinyRewardSpec(**meta["spec"]), state, max_new_tokens=max_new_tokens)

    # ---- encoding ---------------------------------------------------------------------
    def _patches(self, inputs: list[ScoringInput]):
        torch, s = self.torch, self.spec
        out = torch.zeros(len(inputs), (s.image_side // s.patch) ** 2, 3 * s.patch * s.patch)
        for b, item in enumerate(inputs):
            if not item.images:
                continue
            frames = [torch.frombuffer(bytearray(im.resize((s.image_side, s.image_side)).tobytes()),
                                       dtype=torch.uint8) for im in item.images]
            pix = torch.stack(frames).float().mean(0).view(s.image_side, s.image_side, 3) / 255.0
            grid = pix.unfold(0, s.patch, s.patch).unfold(1, s.patch, s.patch)
            out[b] = grid.reshape(-1, 3 * s.patch * s.patch)
        return out

    def _prefix(self, item: ScoringInput) -> list[int]:
        q = item.question.encode()[: self.spec.max_question]
        r = item.response.encode()[: self.spec.max_response]
        return [_BOS, *q, _SEP, *r, _SEP]

    def _hidden(self, seqs: list[list[int]], patches):
        """Final hidden states [B, P + T, d] of right-padded sequences (causal)."""
        torch, net = self.torch, self.net
        width = max(len(t) for t in seqs)
        tokens = torch.full((len(seqs), width), _VOCAB, dtype=torch.long)
        for b, t in enumerate(seqs):
            tokens[b, : len(t)] = torch.tensor(t)
        x = torch.cat([net["patch"](patches), net["embed"](tokens)], dim=1)
        x = x + net["pos"](torch.arange(x.shape[1]))
        mask = torch.nn.Transformer.generate_square_subsequent_mask(x.shape[1])
        return net["norm"](net["blocks"](x, mask=mask, is_causal=True))

    # ---- the RewardModel protocol ---------------------------------------------------------
    def critique(self, inputs: list[ScoringInput]) -> list[str]:
        torch = self.torch
        patches, n_patch = self._patches(inputs), self._patches_len()
        seqs = [self._prefix(it) for it in inputs]
        start = [len(t) for t in seqs]
        done = [False] * len(seqs)
        allowed = torch.full((_VOCAB,), float("-inf"))
        allowed[_PRINTABLE + [_EOS]] = 0.0
        limit = min(self.max_new_tokens, self.spec.max_critique)
        with torch.inference_mode():
            for _ in range(limit):
                h = self._hidden(seqs, patches)
                last = torch.tensor([n_patch + len(t) - 1 for t in seqs])
                logits = self.net["lm_head"](h[torch.arange(len(seqs)), last]) + allowed
                for b, tok in enumerate(logits.argmax(-1).tolist()):
                    if not done[b]:
                        done[b] = tok == _EOS
                        if not done[b]:
                            seqs[b].append(tok)
                if all(done):
                    break
        return [bytes(t[s:]).decode("ascii", "replace") for t, s in zip(seqs, start)]

    def score(self, inputs: list[ScoringInput], critiques: list[str]) -> list[float]:
        torch = self.torch
        seqs = [self._prefix(it) + [*c.encode()[: self.spec.max_critique], _EOS]
                for it, c in zip(inputs, critiques)]
        with torch.inference_mode():
            h = self._hidden(seqs, self._patches(inputs))
            last = torch.tensor([self._patches_len() + len(t) - 1 for t in seqs])
            return self.net["reward_head"](h[torch.arange(len(seqs)), last]).squeeze(-1).tolist()

    def _patches_len(self) -> int:
        return (self.spec.image_side // self.spec.patch) ** 2


def build_tiny_scorer_model(out_dir: str, seed: int = 0, **spec: int) -> str:
    """Write a freshly initialised stand-in reward model to ``out_dir``; returns the path."""
    return TinyCritiqueRewardModel(TinyRewardSpec(**spec), seed=seed).save(out_dir)
