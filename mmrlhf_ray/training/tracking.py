"""Experiment tracking of the training stages: TensorBoard, MLflow, W&B, or none.

Every training stage (sft, train-reward, train-dpo, the self-improvement rounds) embeds
``TrackingConfig`` as ``tracking:``, as it embeds ``TrainConfig`` as ``train:``::

    tracking.report_to=[tensorboard]            # the default: <run_dir>/<stage>/tensorboard
    tracking.report_to=[mlflow] tracking.mlflow_uri=http://<head>:5000
    tracking.report_to=[wandb]                  # offline unless WANDB_API_KEY is set
    tracking.report_to=[tensorboard,mlflow]     # several at once, as TRL's report_to
    tracking.report_to=[none]

Ray Train's convention for experiment tracking is followed: the train function calls the
tracking library natively, on the rank-0 worker only (other ranks log nothing). The
harness (``harness/trainer.py``) hands each optimizer step's row, the one it appends to
``metrics.csv`` (rank-averaged), to ``Tracker.log``: the CSV that the run report plots and
the tracker's curves are one source. The driver logs what it measures after training
(held-out accuracy, benchmark) into the same run with ``log_summary``.

The libraries are imported only when their backend is chosen: ``tensorboard`` (through
``torch.utils.tensorboard``), ``mlflow`` (``mlflow-skinny`` suffices to log), ``wandb``.
No ray here.
"""

from __future__ import annotations

import importlib.util
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from mmrlhf_ray.core.config import Choices, ConfigError

BACKENDS = ("tensorboard", "mlflow", "wandb", "none")
MODULES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow-skinny", "wandb": "wandb"}
TRAIN_PREFIX = "train/"
RUN_KEY_TAG = "mmrlhf.run_key"  # MLflow tag: the stage attempt a run belongs to


@dataclass
class TrackingConfig(Choices):
    """Where a training stage's curves go (``tracking.*``)."""

    report_to: list[str] = field(
        default_factory=lambda: ["tensorboard"],
        metadata={"help": "tensorboard | mlflow | wandb | none; a list logs to several"},
    )
    tensorboard_dir: str = field(
        default="", metadata={"help": "TensorBoard log dir ('' = <run_dir>/<stage>/tensorboard)"}
    )
    mlflow_uri: str = field(
        default="",
        metadata={
            "help": "MLflow tracking URI ('' = file store <run_dir>/mlruns; http://head:5000)"
        },
    )
    experiment: str = field(default="mmrlhf", metadata={"help": "MLflow experiment / W&B project"})
    run_name: str = field(default="", metadata={"help": "run name ('' = <run_dir name>/<stage>)"})
    wandb_mode: Literal["auto", "offline", "online"] = field(
        default="auto", metadata={"help": "auto: online when WANDB_API_KEY is set, else offline"}
    )
    wandb_dir: str = field(
        default="", metadata={"help": "W&B run files go under <dir>/wandb ('' = <run_dir>/<stage>)"}
    )
    log_every: int = field(default=1, metadata={"help": "log every N optimizer steps"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.report_to, str):
            self.report_to = [self.report_to]
        unknown = [b for b in self.report_to if b not in BACKENDS]
        if unknown:
            raise ValueError(
                f"tracking.report_to: {unknown[0]!r} is not one of {', '.join(BACKENDS)}"
            )
        if "none" in self.report_to and len(self.report_to) > 1:
            raise ValueError("tracking.report_to: 'none' cannot be combined with a backend")
        if self.log_every < 1:
            raise ValueError(f"tracking.log_every: must be >= 1, got {self.log_every}")


@dataclass
class TrackingTarget:
    """A resolved, picklable destination: what the rank-0 worker and the driver open."""

    backends: tuple[str, ...]
    stage: str
    run_name: str
    run_key: str  # the stage attempt (config + inputs): W&B run id, MLflow tag
    tensorboard_dir: str = ""
    mlflow_uri: str = ""
    mlflow_run_id: str = ""
    experiment: str = "mmrlhf"
    wandb_dir: str = ""
    wandb_mode: str = "offline"
    log_every: int = 1
    params: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """What the manifest records: backends and where each went."""
        where: dict[str, Any] = {"backends": list(self.backends), "run_name": self.run_name}
        if "tensorboard" in self.backends:
            where["tensorboard_dir"] = self.tensorboard_dir
        if "mlflow" in self.backends:
            where.update(mlflow_uri=self.mlflow_uri, mlflow_run_id=self.mlflow_run_id)
        if "wandb" in self.backends:
            where.update(
                wandb_dir=self.wandb_dir, wandb_mode=self.wandb_mode, wandb_id=self.run_key
            )
        return where


def resolve_tracking(
    cfg: TrackingConfig,
    run_dir: str,
    stage: str,
    run_key: str,
    params: dict | None = None,
) -> TrackingTarget:
    """Fill the defaults of ``cfg`` for ``stage`` of the (local) run ``run_dir``."""
    backends = tuple(b for b in cfg.report_to if b != "none")
    run_dir = os.path.abspath(run_dir)
    stage_root = os.path.join(run_dir, stage)
    if cfg.wandb_mode == "auto":
        mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
    else:
        mode = cfg.wandb_mode
    return TrackingTarget(
        backends=backends,
        stage=stage,
        run_name=cfg.run_name or f"{os.path.basename(run_dir)}/{stage}",
        run_key=f"{stage.replace('/', '-')}-{run_key}",
        tensorboard_dir=cfg.tensorboard_dir or os.path.join(stage_root, "tensorboard"),
        mlflow_uri=cfg.mlflow_uri or Path(run_dir, "mlruns").as_uri(),
        experiment=cfg.experiment,
        wandb_dir=cfg.wandb_dir or stage_root,
        wandb_mode=mode,
        log_every=cfg.log_every,
        params=flatten(params or {}),
    )


def metric_name(key: str) -> str:
    """A key every tracker takes (MLflow: alphanumerics, ``_ - . : /`` and spaces):
    ``before → after`` becomes ``before to after``, anything else odd an underscore."""
    key = key.replace("\u2192", "to")
    return "".join(c if c.isascii() and (c.isalnum() or c in "_-.: /") else "_" for c in key)


def flatten(tree: dict[str, Any], prefix: str = "", numeric: bool = False) -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a/b": 1}``; with ``numeric`` only finite-or-NaN numbers
    (booleans as 0/1), else scalars as they are and lists as their string."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{metric_name(str(key))}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}/", numeric))
        elif isinstance(value, bool):
            out[name] = float(value) if numeric else value
        elif isinstance(value, (int, float)):
            out[name] = float(value) if numeric else value
        elif not numeric and value is not None:
            out[name] = value if isinstance(value, str) else str(value)
    return out


def step_scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """One step's row -> ``train/<key>`` scalars (the step number is the x axis)."""
    return {
        f"{TRAIN_PREFIX}{k}": v for k, v in flatten(metrics, numeric=True).items() if k != "step"
    }


# ---------------------------------------------------------------- backends -------------
class _TensorBoard:
    def __init__(self, target: TrackingTarget, start_step: int):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: after a resume, the steps the crashed attempt logged past the
        # checkpoint are hidden (they are logged again)
        self.writer = SummaryWriter(
            target.tensorboard_dir,
            purge_step=start_step + 1 if start_step > 0 else None,
            flush_secs=10,
        )

    def log(self, scalars: dict[str, float], step: int) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        self.writer.close()


def _mlflow_client(uri: str):
    if uri.startswith("file:") or "://" not in uri:
        # MLflow 3 keeps its file store in maintenance mode behind this switch; it is the
        # store that needs no server and no database (a shared filesystem suffices)
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


class _MLflow:
    def __init__(self, target: TrackingTarget, start_step: int):
        if not target.mlflow_run_id:
            raise ValueError("mlflow: no run id (start_tracking runs on the driver first)")
        self.client = _mlflow_client(target.mlflow_uri)
        self.run_id = target.mlflow_run_id

    def log(self, scalars: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(name, value, now, step) for name, value in scalars.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def close(self) -> None:
        pass


class _Wandb:
    """A W&B run. Offline (no key): its records go to
    ``<wandb_dir>/wandb/offline-run-<time>-<run_key>/run-<run_key>.wandb`` and nothing
    leaves the machine (``wandb sync <dir>`` uploads them later); online: to
    ``WANDB_BASE_URL`` (default wandb.ai) with ``WANDB_API_KEY``."""

    def __init__(self, target: TrackingTarget, start_step: int):
        if target.wandb_mode == "offline":
            # offline mode still sends wandb's own error telemetry (OTLP over HTTPS) unless
            # told not to; read when wandb starts its service
            os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
        import wandb

        os.makedirs(target.wandb_dir, exist_ok=True)
        settings = wandb.Settings(
            mode=target.wandb_mode,
            silent=True,
            console="off",  # the worker's stdout is Ray's to forward (and the progress bar's)
            save_code=False,
            disable_job_creation=True,
        )
        self.run = wandb.init(
            project=target.experiment,
            name=target.run_name,
            id=target.run_key,
            dir=target.wandb_dir,
            resume="allow",
            config=target.params,
            reinit="create_new",
            settings=settings,
        )

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
        import wandb

        try:
            self.run.finish()
        finally:  # finish leaves the service process (wandb-core) running; this ends it
            wandb.teardown()


_SINKS = {"tensorboard": _TensorBoard, "mlflow": _MLflow, "wandb": _Wandb}


class Tracker:
    """The open backends of one process (the rank-0 worker, or the driver)."""

    def __init__(self, target: TrackingTarget, start_step: int = 0):
        self.target = target
        self.sinks = [_SINKS[b](target, start_step) for b in target.backends]

    def log(self, metrics: dict[str, Any], step: int, final: bool = False) -> None:
        """Log one step's row (every ``log_every`` steps, and the last step)."""
        if self.sinks and (final or step % self.target.log_every == 0):
            scalars = step_scalars(metrics)
            for sink in self.sinks:
                sink.log(scalars, step)

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        for sink in self.sinks:
            sink.log(scalars, step)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def open_tracker(target: TrackingTarget | None, start_step: int = 0) -> Tracker | None:
    """The tracker of the rank-0 worker (None when nothing is tracked)."""
    return Tracker(target, start_step) if target is not None and target.backends else None


def start_tracking(target: TrackingTarget) -> TrackingTarget:
    """On the driver, before the workers start: the MLflow experiment and run (the run of
    this stage attempt is found again by its tag, so a resumed stage logs into it).
    A backend whose library is missing is refused here, in one line, before any worker."""
    for backend in target.backends:
        if importlib.util.find_spec(MODULES[backend]) is None:
            raise ConfigError(
                f"tracking.report_to: {backend} is not installed (pip install "
                f"{PACKAGES[backend]}, on every node), or leave it out of report_to"
            )
    if "mlflow" not in target.backends or target.mlflow_run_id:
        return target
    client = _mlflow_client(target.mlflow_uri)
    experiment = client.get_experiment_by_name(target.experiment)
    exp_id = experiment.experiment_id if experiment else client.create_experiment(target.experiment)
    found = client.search_runs(
        [exp_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{target.run_key}'", max_results=1
    )
    if found:
        run_id = found[0].info.run_id
    else:
        run = client.create_run(
            exp_id, run_name=target.run_name, tags={RUN_KEY_TAG: target.run_key}
        )
        run_id = run.info.run_id
        for name, value in list(target.params.items())[:500]:
            client.log_param(run_id, name, str(value)[:6000])
    return replace(target, mlflow_run_id=run_id)


def log_summary(target: TrackingTarget, metrics: dict[str, Any], step: int) -> dict[str, float]:
    """On the driver, after training: nested numeric results (held-out accuracy, the
    benchmark) into the same run at ``step``; the MLflow run is marked finished."""
    scalars = {k: v for k, v in flatten(metrics, numeric=True).items() if not math.isinf(v)}
    tracker = open_tracker(target) if scalars else None
    if tracker is not None:
        tracker.log_scalars(scalars, step)
        tracker.close()
    if "mlflow" in target.backends:
        _mlflow_client(target.mlflow_uri).set_terminated(target.mlflow_run_id, "FINISHED")
    return scalars
