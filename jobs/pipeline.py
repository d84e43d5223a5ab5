"""Run every stage of the MM-RLHF recipe in one run directory, resuming where it stopped.

    mmrlhf pipeline run_dir=runs/demo                    # the README's main command
    ray job submit --working-dir . -- python jobs/pipeline.py run_dir=runs/demo
    mmrlhf pipeline run_dir=runs/x stages='[toyworld, curate]'   # a prefix only

Order: toyworld -> build-models -> sft -> [import] -> curate -> generate -> annotate -> expand ->
pairs -> train-reward -> serve-reward -> score -> ref-logps -> train-dpo -> evaluate
(-> self-improve when ``self_improve_rounds`` > 0), then the report.

Each stage is called in this process with its own config (``configs/<stage>.yaml``, or
``configs/<stage><profile>.yaml`` with ``profile=.gpu``) plus ``run_dir`` and the
per-stage overrides below. A finished stage returns at once (its manifest says done),
so after Ctrl-C or a killed process the same command continues from the first
unfinished stage. Wall time per stage goes to ``<run_dir>/pipeline/timings.json``.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmrlhf_ray import signals  # noqa: E402
from mmrlhf_ray.cli import REPO_ROOT, job_module, parse_stage_args  # noqa: E402
from mmrlhf_ray.stage import StageDir  # noqa: E402

PIPELINE_STAGES = [
    "toyworld", "build-models", "sft", "import", "curate", "generate", "annotate", "expand", "pairs",
    "train-reward", "serve-reward", "score", "ref-logps", "train-dpo", "evaluate",
]
OPTIONAL_STAGES = ("import",)  # needs the user's files (overrides.import=[pool_jsonl=...])


@dataclass
class PipelineConfig:
    run_dir: str = field(default="runs/demo", metadata={"help": "run directory (path or URI)"})
    stages: list[str] = field(
        default_factory=lambda: [s for s in PIPELINE_STAGES if s not in OPTIONAL_STAGES],
        metadata={"help": "stages to run, in pipeline order (`import`: only when listed)"},
    )
    profile: str = field(default="", metadata={"help": "config suffix: '' (tiny CPU) or '.gpu'"})
    overrides: dict[str, list[str]] = field(
        default_factory=dict, metadata={"help": "per-stage key=value overrides"}
    )
    self_improve_rounds: int = field(default=0, metadata={"help": "self-improvement rounds after evaluate"})
    stop_service: bool = field(default=True, metadata={"help": "stop the reward service at the end"})
    report: bool = field(default=True, metadata={"help": "write <run_dir>/report.md and .html"})


def stage_argv(cfg: PipelineConfig, stage: str) -> list[str]:
    """The argv a stage is called with: its config file, the run dir, the overrides."""
    argv: list[str] = []
    config_path = REPO_ROOT / "configs" / f"{stage}{cfg.profile}.yaml"
    if config_path.exists():
        argv += ["--config", str(config_path)]
    return argv + [f"run_dir={cfg.run_dir}", *cfg.overrides.get(stage, [])]


class Interrupted(Exception):
    """Ctrl-C (SIGINT) or SIGTERM arrived while a stage ran."""


def run_stage(cfg: PipelineConfig, stage: str) -> float:
    """Run one stage in-process; returns its wall time. Raises with the resume hint."""
    module = importlib.import_module(job_module(stage))
    start = time.time()
    try:
        signals.interrupt_point(f"pipeline.before-{stage}")  # tests: between two stages
        code = module.main(stage_argv(cfg, stage))
    except BaseException as exc:
        signals.adopt(exc)
        if signals.received() or isinstance(exc, KeyboardInterrupt):
            print(f"pipeline: interrupted ({signals.signal_name() or 'SIGINT'}) during stage "
                  f"'{stage}' after {time.time() - start:.0f}s. Re-run the same command to "
                  f"resume: finished stages are skipped and '{stage}' keeps the parts it wrote.",
                  file=sys.stderr, flush=True)
            raise Interrupted(stage) from exc
        print(
            f"pipeline: stage '{stage}' failed ({type(exc).__name__}: {exc}). Fix the cause and "
            f"re-run the same command: finished stages are skipped.",
            file=sys.stderr,
        )
        raise
    if signals.received():  # a framework swallowed the interrupt and returned
        print(f"pipeline: interrupted ({signals.signal_name()}) during stage '{stage}'. Re-run "
              f"the same command to resume.", file=sys.stderr, flush=True)
        raise Interrupted(stage)
    if code:
        raise SystemExit(f"pipeline: stage '{stage}' exited with status {code}")
    return time.time() - start


def _record_timing(cfg: PipelineConfig, stage: str, seconds: float) -> None:
    out = StageDir(cfg.run_dir, "pipeline")
    path = Path(out.local_path("timings.json"))
    timings = json.loads(path.read_text()) if path.exists() else {}
    previous = StageDir(cfg.run_dir, stage).read_manifest() or {}
    # A skipped (already done) stage keeps the wall time of the run that did the work.
    timings[stage] = previous.get("wall_seconds", round(seconds, 2))
    path.write_text(json.dumps(timings, indent=2))


def main(argv: list[str] | None = None) -> int:
    cfg = parse_stage_args("pipeline", PipelineConfig, argv, __doc__)
    unknown = [s for s in cfg.stages if s not in PIPELINE_STAGES]
    if unknown:
        raise SystemExit(f"pipeline: unknown stage(s) {unknown}; known: {PIPELINE_STAGES}")
    from actors.runtime import init_ray

    init_ray()
    started = time.time()
    previous = signals.install()  # Ctrl-C -> 130, SIGTERM -> 143 (mmrlhf_ray/signals.py)
    try:
        for stage in [s for s in PIPELINE_STAGES if s in cfg.stages]:
            print(f"\n=== pipeline: {stage} ===", flush=True)
            _record_timing(cfg, stage, run_stage(cfg, stage))
        if cfg.self_improve_rounds > 0:
            print("\n=== pipeline: self-improve ===", flush=True)
            overrides = [f"rounds={cfg.self_improve_rounds}", *cfg.overrides.get("self-improve", [])]
            cfg.overrides["self-improve"] = overrides
            _record_timing(cfg, "self-improve", run_stage(cfg, "self-improve"))
    except (Interrupted, KeyboardInterrupt) as exc:
        if not isinstance(exc, Interrupted):  # landed between two stages
            print("pipeline: interrupted between stages. Re-run the same command to resume.",
                  file=sys.stderr, flush=True)
        return signals.exit_code() or 130  # the shell's codes for Ctrl-C / SIGTERM
    finally:
        signals.restore(previous)
        if cfg.stop_service and "serve-reward" in cfg.stages:
            from jobs.serve_reward import stop_service

            stop_service(cfg.run_dir)
    if cfg.report:
        from mmrlhf_ray.report import write_report

        paths = write_report(cfg.run_dir)
        print(f"pipeline: report at {paths['markdown']} and {paths['html']}")
    print(f"pipeline: done in {time.time() - started:.0f}s, run dir {cfg.run_dir}")
    return 0


if __name__ == "__main__":
    signals.run_main(main, "pipeline")  # under `ray job submit`: 130 / 143 as from `mmrlhf`
