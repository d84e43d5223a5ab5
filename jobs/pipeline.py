"""Run every stage of the MM-RLHF recipe in one run directory, resuming where it stopped.

    mmrlhf pipeline run_dir=runs/demo                    # the README's main command
    mmrlhf pipeline run_dir=runs/llava family=llava-onevision   # another model family
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

import json
import sys
import time
from pathlib import Path

from harness.service import stop_service
from mmrlhf_ray.core import signals
from mmrlhf_ray.core.cli import parse_stage_args
from mmrlhf_ray.core.stage import StageDir
from mmrlhf_ray.core.stages import PIPELINE_STAGES, get_stage
from mmrlhf_ray.flows.config import PipelineConfig


def stage_config(cfg: PipelineConfig, stage: str, **values) -> object:
    """The config a stage runs with: its shipped YAML for the profile, the run dir (and
    ``values``; build-models gets the pipeline's ``family``), then the pipeline's
    overrides for it."""
    if cfg.family and stage == "build-models":
        values["family"] = cfg.family
    overrides = cfg.overrides.get(stage, [])
    return get_stage(stage).config(overrides, cfg.profile, run_dir=cfg.run_dir, **values)


class Interrupted(Exception):
    """Ctrl-C (SIGINT) or SIGTERM arrived while a stage ran."""


def run_stage(cfg: PipelineConfig, stage: str, **values) -> float:
    """Run one stage in-process; returns its wall time. Raises with the resume hint."""
    start = time.time()
    try:
        signals.interrupt_point(f"pipeline.before-{stage}")  # tests: between two stages
        get_stage(stage).run(stage_config(cfg, stage, **values))
    except BaseException as exc:
        signals.adopt(exc)
        if signals.received() or isinstance(exc, KeyboardInterrupt):
            print(
                f"pipeline: interrupted ({signals.signal_name() or 'SIGINT'}) during stage "
                f"'{stage}' after {time.time() - start:.0f}s. Re-run the same command to "
                f"resume: finished stages are skipped and '{stage}' keeps the parts it wrote.",
                file=sys.stderr,
                flush=True,
            )
            raise Interrupted(stage) from exc
        print(
            f"pipeline: stage '{stage}' failed ({type(exc).__name__}: {exc}). Fix the cause and "
            f"re-run the same command: finished stages are skipped.",
            file=sys.stderr,
        )
        raise
    if signals.received():  # a framework swallowed the interrupt and returned
        print(
            f"pipeline: interrupted ({signals.signal_name()}) during stage '{stage}'. Re-run "
            f"the same command to resume.",
            file=sys.stderr,
            flush=True,
        )
        raise Interrupted(stage)
    return time.time() - start


def _record_timing(cfg: PipelineConfig, stage: str, seconds: float) -> None:
    out = StageDir(cfg.run_dir, "pipeline")
    path = Path(out.local_path("timings.json"))
    timings = json.loads(path.read_text()) if path.exists() else {}
    previous = StageDir(cfg.run_dir, stage).read_manifest() or {}
    # A skipped (already done) stage keeps the wall time of the run that did the work.
    timings[stage] = previous.get("wall_seconds", round(seconds, 2))
    path.write_text(json.dumps(timings, indent=2))


def run(cfg: PipelineConfig) -> dict:
    """Every stage in order, then the report; returns ``{"run_dir", "timings", "report"}``.
    Raises ``Interrupted`` (Ctrl-C / SIGTERM during a stage) or ``KeyboardInterrupt``
    (between stages) when ``signals`` are installed, as ``main`` does."""
    from harness.runtime import init_ray

    init_ray()
    started = time.time()
    try:
        for stage in [s for s in PIPELINE_STAGES if s in cfg.stages]:
            print(f"\n=== pipeline: {stage} ===", flush=True)
            _record_timing(cfg, stage, run_stage(cfg, stage))
        if cfg.self_improve_rounds > 0:
            print("\n=== pipeline: self-improve ===", flush=True)
            seconds = run_stage(cfg, "self-improve", rounds=cfg.self_improve_rounds)
            _record_timing(cfg, "self-improve", seconds)
    finally:
        if cfg.stop_service and "serve-reward" in cfg.stages:
            stop_service(cfg.run_dir)
    paths = {}
    if cfg.report:
        from mmrlhf_ray.evaluation.report import write_report

        paths = write_report(cfg.run_dir)
        print(f"pipeline: report at {paths['markdown']} and {paths['html']}")
    print(f"pipeline: done in {time.time() - started:.0f}s, run dir {cfg.run_dir}")
    timings = Path(StageDir(cfg.run_dir, "pipeline").local_path("timings.json"))
    return {
        "run_dir": cfg.run_dir,
        "report": paths,
        "timings": json.loads(timings.read_text()) if timings.exists() else {},
    }


def main(argv: list[str] | None = None) -> int:
    cfg = parse_stage_args("pipeline", PipelineConfig, argv, __doc__)
    from harness.runtime import init_ray

    init_ray()  # before the handlers: ray.init sets its own SIGTERM handler
    previous = signals.install()  # Ctrl-C -> 130, SIGTERM -> 143 (mmrlhf_ray/core/signals.py)
    try:
        run(cfg)
    except (Interrupted, KeyboardInterrupt) as exc:
        if not isinstance(exc, Interrupted):  # landed between two stages
            print(
                "pipeline: interrupted between stages. Re-run the same command to resume.",
                file=sys.stderr,
                flush=True,
            )
        return signals.exit_code() or 130  # the shell's codes for Ctrl-C / SIGTERM
    finally:
        signals.restore(previous)
    return 0


if __name__ == "__main__":
    signals.run_main(main, "pipeline")  # under `ray job submit`: 130 / 143 as from `mmrlhf`
