"""The build-models stage: writes a loadable tokenizer + policy, is idempotent, and its YAML is its defaults."""

from __future__ import annotations

from pathlib import Path

from mmrlhf_ray.core.config import load_config
from mmrlhf_ray.core.stage import StageDir
from mmrlhf_ray.models.config import BuildModelsConfig

ROOT = Path(__file__).resolve().parents[2]


def test_build_models_stage_writes_loadable_models_and_is_idempotent(tmp_path, capsys):
    from jobs.build_models import main

    run_dir = str(tmp_path / "run")
    argv = [f"run_dir={run_dir}", "corpus_size=300", "policy.num_hidden_layers=2"]
    assert main(argv) == 0
    stage = StageDir(run_dir, "build-models")
    manifest = stage.read_manifest()
    counts = manifest["counts"]
    assert manifest["status"] == "done"
    assert (counts["in"], counts["out"], counts["quarantined"]) == (300, 300, 0)
    from mmrlhf_ray.models import load_policy

    model, processor = load_policy(manifest["policy"])
    assert model.config.text_config.num_hidden_layers == 2
    assert model.config.text_config.vocab_size == len(processor.tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    assert manifest["policy_parameters"] == n_params
    assert main(argv) == 0
    assert "already done" in capsys.readouterr().out


def test_build_models_config_defaults_match_yaml():
    assert (
        load_config(BuildModelsConfig, ROOT / "configs" / "build-models.yaml")
        == BuildModelsConfig()
    )
