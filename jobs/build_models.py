"""Build the tiny offline models: a byte-level BPE tokenizer and a random policy of a family.

No model hub is reachable, so the toy pipeline trains a BPE tokenizer on the shapes
world's text (``mmrlhf_ray.toyworld.corpus_texts``) and writes a randomly initialised
tiny policy of ``family`` (qwen2-vl by default; qwen2.5-vl, llava-onevision, internvl,
smolvlm) + its processor in the Hugging Face layout under
``<run_dir>/build-models/{tokenizer,policy}``. Real runs skip this stage and point the
later stages at real checkpoints by path (``policy_path=...``).

    mmrlhf build-models run_dir=runs/demo
    mmrlhf build-models run_dir=runs/llava family=llava-onevision
    ray job submit --working-dir . -- python jobs/build_models.py run_dir=runs/demo
"""

from __future__ import annotations

import sys
import time

from mmrlhf_ray.core.cli import parse_stage_args
from mmrlhf_ray.core.stage import begin_stage
from mmrlhf_ray.models.config import BuildModelsConfig


def run(cfg: BuildModelsConfig) -> dict:
    """The stage: tokenizer and tiny policy under <run_dir>/build-models."""
    out, done = begin_stage(cfg, "build-models")
    if done:
        return out.read_manifest()
    from mmrlhf_ray.models.policy import build_family_tokenizer, build_tiny_policy
    from mmrlhf_ray.models.tokenizer import default_texts

    start = time.time()
    texts = default_texts(cfg.corpus_size, cfg.seed)
    tok_dir, pol_dir = out.local_path("tokenizer"), out.local_path("policy")
    tokenizer = build_family_tokenizer(cfg.family, texts, tok_dir, vocab_size=cfg.vocab_size)
    build_tiny_policy(pol_dir, tok_dir, seed=cfg.seed, spec=cfg.policy, family=cfg.family)
    n_params = _count_params(pol_dir)
    manifest = out.finish(
        len(texts),
        len(texts),
        0,
        tokenizer=tok_dir,
        policy=pol_dir,
        family=cfg.family,
        vocab_size=len(tokenizer),
        policy_parameters=n_params,
    )
    print(
        f"build-models: tokenizer ({len(tokenizer)} tokens, {len(texts)} texts) -> {tok_dir}; "
        f"{cfg.family} policy ({n_params / 1e6:.2f}M parameters) -> {pol_dir} "
        f"in {time.time() - start:.1f}s (manifest {out.manifest_path}, "
        f"wall {manifest.get('wall_seconds')}s)"
    )
    return manifest


def main(argv: list[str] | None = None) -> int:
    run(parse_stage_args("build-models", BuildModelsConfig, argv, __doc__))
    return 0


def _count_params(path: str) -> int:
    from safetensors import safe_open

    with safe_open(f"{path}/model.safetensors", framework="pt") as f:
        return sum(_prod(f.get_slice(k).get_shape()) for k in f.keys())


def _prod(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


if __name__ == "__main__":
    sys.exit(main())
