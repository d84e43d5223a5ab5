"""The stage registry: every stage of the recipe, once, in pipeline order.

One row per stage: its name (``mmrlhf <name>`` and its directory in a run), its config
dataclass (``"module:Class"``, imported only when used, so listing the stages imports
no torch), the module of its job (``jobs/<stage>.py``: the ``ray job submit`` script,
whose ``main(argv)`` parses and runs), a one-line summary and the upstream stages it
reads by default. The CLI (``mmrlhf --help``, dispatch), the pipeline's order, the
docs test and each stage's ``--help`` all read this table.

Default configs ship with the package (``mmrlhf_ray/configs/<stage>.yaml``; in the
checkout ``configs/`` is the same folder), so an installed package does not need the
git clone.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable


@dataclass(frozen=True)
class Stage:
    """One stage of the recipe."""

    name: str  # `mmrlhf <name>`; its output is <run_dir>/<name>/
    config_ref: str  # "module:Class" of its config dataclass (`config_class`)
    entry: str  # module of its job (jobs/<name>.py): `main(argv)`
    summary: str  # one line for `mmrlhf --help`
    inputs: tuple[str, ...] = ()  # upstream stages it reads by default
    pipeline: str = "always"  # in `mmrlhf pipeline`: always | opt-in | after | never

    @property
    def config_class(self) -> type:
        module, _, cls = self.config_ref.partition(":")
        return getattr(importlib.import_module(module), cls)

    @property
    def script(self) -> str:
        """The job script, relative to the repository (``ray job submit ... python <it>``)."""
        return self.entry.replace(".", "/") + ".py"

    def job(self) -> Any:
        """The job module (imports what the stage needs: torch, Ray ...)."""
        return importlib.import_module(self.entry)

    def config(self, overrides: list[str] = (), profile: str = "", **values: Any) -> Any:
        """The stage's config as a run uses it: its shipped YAML (``profile``: ``""`` or
        ``".gpu"``), then ``values`` (top-level keys set by a caller such as the
        pipeline), then the user's ``key=value`` overrides; local paths made absolute."""
        from mmrlhf_ray.core.config import absolute_local_paths, load_config

        path = self.config_path(profile) or self.config_path()  # no .gpu file: the default
        cfg = load_config(self.config_class, path, overrides, values)
        absolute_local_paths(cfg)
        return cfg

    def run(self, cfg: Any) -> dict:
        """Run the stage with ``cfg`` (in this process); returns its manifest."""
        return self.job().run(cfg)

    def config_path(self, profile: str = "") -> Traversable | None:
        """Its shipped config, ``<name><profile>.yaml`` (profile ``""`` or ``".gpu"``)."""
        path = config_dir() / f"{self.name}{profile}.yaml"
        return path if path.is_file() else None


def _stage(name, config, summary, inputs=(), pipeline="always", entry=None) -> Stage:
    entry = entry or "jobs." + name.replace("-", "_")
    return Stage(name, config, entry, summary, tuple(inputs), pipeline)


STAGES: tuple[Stage, ...] = (
    _stage(
        "toyworld",
        "mmrlhf_ray.toyworld.config:ToyWorldConfig",
        "generate the synthetic shapes world: pool, annotated records, held-out benchmark",
    ),
    _stage(
        "build-models",
        "mmrlhf_ray.models.config:BuildModelsConfig",
        "build the tiny offline models: BPE tokenizer and Qwen2-VL policy "
        "(CLIP: curate builds its own)",
    ),
    _stage(
        "sft",
        "mmrlhf_ray.training.config:SftConfig",
        "SFT warm-up of the policy with Ray Train + DeepSpeed",
        inputs=("toyworld", "build-models"),
    ),
    _stage(
        "import",
        "mmrlhf_ray.data.config:ImportConfig",
        "read the official MM-RLHF release files into Parquet (with quarantine)",
        pipeline="opt-in",
        entry="jobs.import_release",
    ),  # `import` is a keyword
    _stage(
        "curate",
        "mmrlhf_ray.curation.config:CurateConfig",
        "CLIP-embed, k-means cluster and ratio-sample the pool (Ray Data + faiss)",
        inputs=("toyworld",),
    ),
    _stage(
        "generate",
        "mmrlhf_ray.generation.config:GenerateConfig",
        "sample candidate responses with vLLM-backed Ray actors",
        inputs=("curate",),
    ),
    _stage(
        "annotate",
        "mmrlhf_ray.annotate.config:AnnotateConfig",
        "annotate responses (shapes-world oracle, or import human labels)",
        inputs=("generate",),
    ),
    _stage(
        "annotate-app",
        "mmrlhf_ray.annotate_app.config:AnnotateAppConfig",
        "browser app for rater teams: score, rank, explain; exports annotate records",
        inputs=("generate",),
        pipeline="never",
    ),
    _stage(
        "expand",
        "mmrlhf_ray.generation.config:ExpandConfig",
        "expand annotators' short reasons into critiques with an LLM (Table 7)",
        inputs=("annotate",),
    ),
    _stage(
        "pairs",
        "mmrlhf_ray.annotate.pairs:PairsConfig",
        "every pair of responses with differing rank (ties by the paper's rule)",
        inputs=("expand",),
    ),
    _stage(
        "train-reward",
        "mmrlhf_ray.reward.config:TrainRewardConfig",
        "train the critique reward model (Ray Train + DeepSpeed)",
        inputs=("pairs",),
    ),
    _stage(
        "serve-reward",
        "mmrlhf_ray.service.config:ServeRewardConfig",
        "serve the reward model over HTTP with Ray Serve",
        inputs=("train-reward",),
    ),
    _stage(
        "score",
        "mmrlhf_ray.service.config:ScoreConfig",
        "score every pair through the reward service: margin delta per pair",
        inputs=("pairs", "serve-reward"),
    ),
    _stage(
        "ref-logps",
        "mmrlhf_ray.dpo.config:RefLogpsConfig",
        "reference log-probs per response, once, by batch inference",
        inputs=("score", "sft"),
    ),
    _stage(
        "train-dpo",
        "mmrlhf_ray.dpo.config:DpoConfig",
        "MM-DPO with dynamic reward scaling (Ray Train + DeepSpeed)",
        inputs=("ref-logps", "sft"),
    ),
    _stage(
        "export",
        "mmrlhf_ray.data.config:ExportConfig",
        "pairs, margins and betas as a Hugging Face dataset, TRL's format, the official files",
        inputs=("score", "train-dpo"),
        pipeline="never",
    ),
    _stage(
        "evaluate",
        "mmrlhf_ray.evaluation.config:EvaluateConfig",
        "RewardBench ACC/ACC+, toy benchmark and safety metrics, with plots",
        inputs=("toyworld", "sft", "train-dpo", "train-reward"),
    ),
    _stage(
        "evaluate-reward-bench",
        "mmrlhf_ray.reward.config:EvaluateRewardBenchConfig",
        "ACC/ACC+ of a reward model on an official-format benchmark file "
        "(also `mmrlhf evaluate reward-bench`)",
        inputs=("train-reward",),
        pipeline="never",
    ),
    _stage(
        "self-improve",
        "mmrlhf_ray.flows.config:SelfImproveConfig",
        "rounds of sample -> score -> pairs -> MM-DPO -> evaluate",
        inputs=("curate", "train-dpo", "serve-reward"),
        pipeline="after",
    ),
    _stage(
        "pipeline",
        "mmrlhf_ray.flows.config:PipelineConfig",
        "run every stage in one run directory, resuming where it stopped",
        pipeline="never",
    ),
)
BY_NAME = {s.name: s for s in STAGES}
PIPELINE_STAGES = [s.name for s in STAGES if s.pipeline in ("always", "opt-in")]
OPTIONAL_STAGES = tuple(s.name for s in STAGES if s.pipeline == "opt-in")


def get_stage(name: str) -> Stage:
    """The stage called ``name`` (a sub-stage such as ``toyworld/pool``: its stage)."""
    stage = BY_NAME.get(name) or BY_NAME.get(name.split("/")[0])
    if stage is None:
        raise KeyError(f"unknown stage '{name}' (known: {', '.join(BY_NAME)})")
    return stage


def config_dir() -> Traversable:
    """The folder of the shipped stage configs (``mmrlhf_ray/configs``)."""
    return resources.files("mmrlhf_ray") / "configs"
