"""Critiques for the reward service from vLLM (paper Sec. 3.2: critique, then score).

The reward model's directory is a Hugging Face VLM (the backbone, whose LM head is the
critique head) plus the scoring head, so vLLM loads it as a plain generator. The
service then generates critiques with vLLM (continuous batching, paged KV cache,
tensor parallel on GPU) and keeps transformers only for the single scoring forward.
Greedy decoding and the model's own prompt template, as in ``CritiqueRewardModel.critique``.
vLLM loads every ``*.safetensors`` of a directory, so it is pointed at a view of the
reward model's directory without the scoring head's file.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from mmrlhf_ray.generation.config import ModelSpec
from mmrlhf_ray.generation.expansion import critique_request
from mmrlhf_ray.reward.model import HEAD_FILE, META_FILE
from mmrlhf_ray.service.server import ScoringInput


def backbone_view(model_path: str) -> str:
    """A temporary directory of symlinks to the reward model's files but its head."""
    view = Path(tempfile.mkdtemp(prefix="mmrlhf-critic-"))
    for f in Path(model_path).iterdir():
        if f.name != HEAD_FILE:
            (view / f.name).symlink_to(f.resolve())
    return str(view)


class VllmCritic:
    """``critic(inputs) -> [critique]`` for ``RewardScorer(critic=...)``."""

    def __init__(
        self,
        model_path: str,
        max_new_tokens: int,
        num_gpus: float = 0.0,
        tensor_parallel_size: int = 1,
        dtype: str = "float32",
        max_model_len: int = 2048,
        gpu_memory_utilization: float = 0.5,
    ):
        from actors.generator import Generator

        meta = json.loads((Path(model_path) / META_FILE).read_text())
        self.template, self.max_frames = meta["prompt_template"], int(meta["max_frames"])
        spec = ModelSpec(
            name="critic",
            kind="vllm",
            path=backbone_view(model_path),
            n=1,
            temperature=0.0,
            max_tokens=max_new_tokens,
            num_gpus=num_gpus,
            dtype=dtype,
            tensor_parallel_size=tensor_parallel_size,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
        )
        self.generator = Generator(spec)
        if self.generator.kind != "vllm":
            raise RuntimeError("critique_backend=vllm: vllm is not importable here")

    def __call__(self, inputs: list[ScoringInput]) -> list[str]:
        return self.critique(inputs)

    def critique(self, inputs: list[ScoringInput]) -> list[str]:
        """Greedy critiques, one per input, from the reward model's own prompt."""
        requests = [
            critique_request(
                i.question,
                i.response,
                list(i.images[: self.max_frames]),
                key=str(k),
                template=self.template,
            )
            for k, i in enumerate(inputs)
        ]
        return [
            samples[0].text.strip() for samples in self.generator.generate(requests, greedy=True)
        ]
