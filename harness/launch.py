"""The one way a training stage launches its Ray Train run: ``train_stage(out, task, ...)``.

sft, train-reward and train-dpo (and so the self-improvement rounds) call it with their
stage directory; it fixes what the three used to spell out each (and had let drift):

* the run's name, ``<stage>-<attempt key>``: the same attempt resumes after a crash, a
  changed config or input never resumes an old run;
* its storage, ``<run_dir>/<stage>/ray``, through ``StageDir.local_path``. Not
  ``StageDir.path``: for a URI run dir that one is the path without its scheme
  (``s3://b/r`` -> ``b/r/<stage>/ray``), which ``run_training`` would take for a relative
  local directory. The model and ``metrics.csv`` need local paths anyway, so a training
  stage refuses a URI run dir with one line (``local_path``) instead of writing elsewhere;
* ``<stage>/<output>/`` (the Hugging Face checkpoint) and ``<stage>/metrics.csv``;
* the tracking run (``tracking.*``): resolved, the MLflow run opened on the driver, the
  rank-0 worker logs every step; ``finish_tracking`` logs the driver's results after.

    result, target = train_stage(out, task, cfg.train, cfg.tracking, output="policy",
                                 params=config_to_dict(cfg))
    summary = finish_tracking(target, result, {"heldout": heldout})  # -> manifest fields
"""

from __future__ import annotations

from typing import Any

from harness.trainer import TrainResult, TrainTask, run_training
from mmrlhf_ray.core.stage import StageDir
from mmrlhf_ray.training.config import TrainConfig
from mmrlhf_ray.training.tracking import (
    TrackingConfig,
    TrackingTarget,
    log_summary,
    resolve_tracking,
    start_tracking,
)


def train_stage(
    out: StageDir,
    task: TrainTask,
    train: TrainConfig,
    tracking: TrackingConfig,
    output: str = "policy",
    params: dict[str, Any] | None = None,
    sub: str = "",
) -> tuple[TrainResult, TrackingTarget]:
    """Run ``task`` for the stage ``out`` (begun with ``begin_stage``): Ray joined or
    started, the run named by the attempt, its storage and outputs under the stage dir.
    ``sub`` (e.g. ``folds/fold-0``): a second training of the same stage, its outputs and
    run name apart."""
    from harness.runtime import init_ray

    storage = out.local_path("ray")  # raises for a URI run dir (see the module docstring)
    key = out.attempt_key() + (f"-{sub.replace('/', '-')}" if sub else "")
    prefix = f"{sub}/" if sub else ""
    target = resolve_tracking(tracking, out.run_dir, out.stage, key, params)
    target = start_tracking(target)
    init_ray()
    result = run_training(
        task,
        train,
        name=f"{out.stage.replace('/', '-')}-{key}",
        storage_path=storage,
        output_dir=out.local_path(f"{prefix}{output}"),
        metrics_csv=out.local_path(f"{prefix}metrics.csv"),
        tracking=target,
    )
    return result, target


def finish_tracking(
    target: TrackingTarget, result: TrainResult, results: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Log the driver's ``results`` (held-out accuracy, benchmark: nested numbers) at the
    last step; returns the manifest's fields: ``loss_history`` (the logged losses, step
    by step) and ``tracking`` (where the curves went)."""
    log_summary(target, results or {}, result.steps)
    return {
        "loss_history": [m.get("loss") for m in result.metrics],
        "tracking": target.describe(),
    }
