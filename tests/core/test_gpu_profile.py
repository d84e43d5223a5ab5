"""The `.gpu` profiles load as their stages' configs and fit together as
`configs/pipeline.gpu.yaml` runs them: no stage falls back to a stage the GPU pipeline
skips, the reference policy is the policy MM-DPO starts from, models sit on shared storage."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from mmrlhf_ray.core.config import load_config
from mmrlhf_ray.core.stages import get_stage

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = yaml.safe_load((ROOT / "configs/pipeline.gpu.yaml").read_text())
GPU_CONFIGS = sorted(ROOT.glob("configs/*.gpu.yaml"))


def stage_config(stage: str):
    """The stage's config as the GPU pipeline builds it (its .gpu file + overrides)."""
    path = ROOT / f"configs/{stage}.gpu.yaml"
    overrides = ["run_dir=/mnt/shared/runs/test", *PIPELINE["overrides"].get(stage, [])]
    return load_config(get_stage(stage).config_class, path if path.exists() else None, overrides)


@pytest.mark.parametrize("path", GPU_CONFIGS, ids=lambda p: p.name)
def test_every_gpu_profile_loads_and_reads_models_from_shared_storage(path):
    stage = path.name.removesuffix(".gpu.yaml")
    stage_config(stage)  # unknown keys or wrong types raise ConfigError
    paths = re.findall(r"(?<=[\s:=\"'\[])/[\w./-]+", path.read_text())
    for model in [p for p in paths if "models" in p.split("/")]:
        assert (model + "/").startswith("/mnt/shared/models/"), (
            f"{path.name}: {model} is not on shared storage"
        )


def test_the_gpu_pipeline_needs_no_skipped_stage():
    stages = PIPELINE["stages"]
    assert "build-models" not in stages and "sft" not in stages  # 7B checkpoints by path
    configs = {s: stage_config(s) for s in stages}
    assert configs["train-reward"].backbone, "train-reward would fall back to build-models"
    start = configs["train-dpo"].policy
    assert start and configs["ref-logps"].policy == start, "reference != MM-DPO's start policy"
    assert configs["evaluate"].policies["base"] == start
    assert configs["curate"].input_stage in stages
    assert (
        configs["score"].via == "handle"
        or configs["score"].token_env == configs["serve-reward"].token_env
    )
    assert configs["serve-reward"].token_env and configs["serve-reward"].host == "127.0.0.1"
    assert all(
        getattr(c, "run_dir", "/mnt/shared/runs/test") == "/mnt/shared/runs/test"
        for c in configs.values()
    )


ENCODING = ("max_response_tokens", "max_frames")


def test_one_encoding_across_ref_logps_train_dpo_and_self_improve():
    """Reference log-probs are taken over the inputs training sees, in the GPU pipeline
    and in every GPU self-improvement round (which must not fall back to CPU settings)."""
    from mmrlhf_ray.flows.self_improve import round_configs

    ref, dpo = stage_config("ref-logps"), stage_config("train-dpo")
    assert {k: getattr(ref, k) for k in ENCODING} == {k: getattr(dpo, k) for k in ENCODING}
    si = stage_config("self-improve")
    round_ref, round_dpo = round_configs(si, "/mnt/shared/runs/test/r1", "/p")
    assert {k: getattr(round_ref, k) for k in ENCODING} == {k: getattr(dpo, k) for k in ENCODING}
    assert {k: getattr(round_dpo, k) for k in ENCODING} == {k: getattr(dpo, k) for k in ENCODING}
    assert round_ref.use_gpu and round_ref.bf16 and round_ref.policy == "/p"
    assert round_ref.pairs_stage == "score" and round_dpo.train.use_gpu


def test_self_improve_hands_train_dpo_encoding_to_ref_logps():
    from mmrlhf_ray.flows.config import SelfImproveConfig
    from mmrlhf_ray.flows.self_improve import round_configs

    cfg = SelfImproveConfig(
        ref_logps_overrides=["max_frames=2", "max_response_tokens=7"],
        dpo_overrides=["max_frames=6", "max_response_tokens=64"],
    )
    ref, dpo = round_configs(cfg, "/r", "/p")
    assert (
        (ref.max_frames, ref.max_response_tokens)
        == (6, 64)
        == (dpo.max_frames, dpo.max_response_tokens)
    )
    assert (ref.run_dir, ref.policy, ref.pairs_stage) == ("/r", "/p", "score")
    assert (dpo.run_dir, dpo.policy) == ("/r", "/p")


# ---- the paper's setting (issue 12, Build 6) ------------------------------------------------
# LLaVA-OV-7B (llava-hf/llava-onevision-qwen2-7b-ov-hf) is the paper's main policy (Tables 3,
# 8, 9, Fig. 1) and the backbone of MM-RLHF-Reward-7B; App. G: 32 x H800; Table 1: 29,997
# queries; the abstract: 120k pairs.
PAPER_POLICY = "/mnt/shared/models/llava-onevision-qwen2-7b-ov-hf"
PAPER_QUERIES, PAPER_PAIRS = 29_997, 120_000


def test_every_gpu_role_holds_the_papers_model():
    from mmrlhf_ray.models.families import family_of_model_type

    roles = {
        "sft policy": stage_config("sft").policy_path,
        "ref-logps reference": stage_config("ref-logps").policy,
        "train-dpo policy": stage_config("train-dpo").policy,
        "evaluate base": stage_config("evaluate").policies["base"],
        "train-reward backbone": stage_config("train-reward").backbone,
    }
    assert roles == dict.fromkeys(roles, PAPER_POLICY)
    # the HF conversion's config.json says model_type llava_onevision: that family's layer
    assert family_of_model_type("llava_onevision").name == "llava-onevision"
    generators = {m.name: m.path.rsplit("/", 1)[1] for m in stage_config("generate").models}
    assert generators == {  # Sec. 2.2's open response models (GPT-4o, Claude are closed)
        "qwen2-vl-72b": "Qwen2-VL-72B-Instruct",
        "llava-ov-72b": "llava-onevision-qwen2-72b-ov-hf",
    }


def curated_queries() -> int:
    cur = stage_config("curate")
    return cur.image_size + cur.safety_count + cur.video_count


def test_curated_queries_and_pairs_are_the_papers():
    """~30k queries (Table 1) x ~4 pairs of differing rank per query (4 responses: at most
    C(4,2) = 6, fewer after ties) ~ the paper's 120k pairs."""
    cur = stage_config("curate")
    assert curated_queries() == PAPER_QUERIES
    assert (cur.safety_count, cur.video_count) == (1999, 4235)
    assert (cur.ratio.long, cur.ratio.short, cur.ratio.mcq) == (4, 5, 1)
    responses = sum(m.n for m in stage_config("generate").models)
    assert responses == 4
    pairs_per_query = PAPER_PAIRS / PAPER_QUERIES
    assert responses - 1 < pairs_per_query < responses * (responses - 1) / 2
    assert abs(curated_queries() * 4 - PAPER_PAIRS) / PAPER_PAIRS < 0.01


def queries_per_step(train) -> int:
    return train.num_workers * train.micro_batch_size * train.grad_accum


def test_step_counts_are_the_epochs_the_comments_claim():
    import math

    dpo = stage_config("train-dpo")
    train_queries = curated_queries() * (1 - dpo.heldout_fraction)
    assert "1 epoch" in (ROOT / "configs/train-dpo.gpu.yaml").read_text()
    assert dpo.train.max_steps == math.ceil(train_queries / queries_per_step(dpo.train)) == 230
    assert dpo.train.warmup_steps < dpo.train.max_steps / 10
    reward = stage_config("train-reward")  # epochs > 0 sets max_steps from the pairs it reads
    assert reward.epochs == 1
    si = stage_config("self-improve")
    _, round_dpo = round_configs_of(si)
    round_queries = si.queries_per_round * (1 - round_dpo.heldout_fraction)
    assert si.pair_mode == "best-vs-worst"  # <= 1 pair per query
    assert round_dpo.train.max_steps == math.ceil(round_queries / queries_per_step(round_dpo.train))
    assert round_dpo.train.warmup_steps < round_dpo.train.max_steps / 5


def round_configs_of(si):
    from mmrlhf_ray.flows.self_improve import round_configs

    return round_configs(si, "/mnt/shared/runs/test/r1", "/p")


def test_train_dpo_fills_the_papers_32_gpus():
    dpo = stage_config("train-dpo")
    assert dpo.train.num_workers == 32 and dpo.train.use_gpu and dpo.train.zero_stage == 3
    assert dpo.train.freeze_vision and not dpo.train.freeze_projector  # App. G.1


def test_gpu_self_improve_rounds_evaluate_with_the_gpu_evaluate_config():
    """A GPU round's evaluate is evaluate.gpu.yaml's (GPU actors, bf16, SafetyBench folder
    and judges), never the CPU defaults; its benchmarks are self-improve's."""
    from mmrlhf_ray.flows.self_improve import round_evaluate_config

    si = stage_config("self-improve")
    ev = round_evaluate_config(si, "/mnt/shared/runs/test/r1", "/p", 1, "/mnt/shared/runs/test")
    gpu = stage_config("evaluate")
    assert ev.policies == {"round-1": "/p"} and ev.benchmarks == si.benchmarks
    assert "safetybench" in ev.benchmarks and "shapes" not in ev.benchmarks
    assert (
        (ev.num_gpus, ev.dtype, ev.backend)
        == (gpu.num_gpus, "bfloat16", "vllm")
        == (1, "bfloat16", "vllm")
    )
    assert ev.safety.tasks == gpu.safety.tasks and ev.safety.classifier == gpu.safety.classifier
    cpu = round_evaluate_config(replace(si, profile=""), "/tmp/r1", "/p", 1, "/tmp")
    assert (cpu.num_gpus, cpu.dtype) == (0.0, "float32")
