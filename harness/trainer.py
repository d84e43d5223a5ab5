"""The Ray Train + DeepSpeed training harness shared by SFT, reward-model and DPO training.

Stable API (other stages build on it)::

    from harness.trainer import TrainTask, run_training
    from mmrlhf_ray.training import TrainConfig

    task = TrainTask(
        model_path="runs/demo/build-models/policy",  # HF dir: model + processor
        rows=load_rows,        # Sequence[row], or () -> Sequence[row] run on every worker
        encode=encode_row,     # (row, processor) -> example (tensors, batch of 1)
        collate=collate_rows,  # (list[example], processor) -> batch (dict of tensors)
        loss_fn=my_loss,       # (model, batch) -> (loss tensor, {"name": float})
    )
    result = run_training(task, TrainConfig(zero_stage=2, max_steps=100),
                          name="sft", storage_path="/abs/runs/demo/sft/ray",
                          output_dir="runs/demo/sft/policy")
    result.hf_dir, result.steps, result.metrics  # final HF checkpoint, steps, per-step rows

Every callable must be picklable (module-level functions or ``functools.partial``).
Optional hooks: ``build_model(path) -> nn.Module`` (default: the Qwen2-VL policy in
fp32; under ZeRO-3 it runs while ``HfDeepSpeedConfig`` is alive, so ``from_pretrained``
partitions the weights as it loads) and ``save_model(module, state_dict, out_dir)``
(default: ``module.save_pretrained(out_dir, state_dict=state_dict)``) and
``group_key(row) -> str``: keeps each step's micro-batches within one group on every
rank. Give it whenever rows mix modalities (image / video / text-only) and ZeRO-3 is
possible: the vision tower must run the same number of times on every rank, or the
ZeRO-3 parameter all-gathers of the ranks disagree and the run hangs.

What each worker does (``_train_loop``):
1. builds the model, freezes the family's vision tower when asked, the projector
   trains unless ``freeze_projector`` (``mmrlhf_ray.training.freeze``);
2. ``deepspeed.initialize`` with a torch ``AdamW`` (``zero_allow_untested_optimizer``),
   ZeRO-2 or ZeRO-3, fp32 on CPU / bf16 on GPU, gradient accumulation by DeepSpeed;
3. resumes from ``ray.train.get_checkpoint()`` (step, model, optimizer, metrics CSV);
4. per optimizer step: ``grad_accum`` micro-batches in a deterministic order
   (``mmrlhf_ray.training.data``), metrics averaged over ranks; rank 0 appends them to
   the metrics CSV every step; ``ray.train.report`` every ``report_every`` steps and
   at every checkpoint (a report is a round trip to the Train controller);
5. every ``checkpoint_every`` steps a Ray Train checkpoint (DeepSpeed shards of every
   rank in one directory + state.json + metrics.csv); the last one also holds ``hf/``,
   the consolidated Hugging Face model (ZeRO-3: gathered 16-bit weights) + processor.

Fault tolerance: ``FailureConfig(max_failures)`` restarts the worker group after a
worker dies, and the loop resumes from the last checkpoint. Re-running with the same
``name`` and ``storage_path`` after the driver died resumes the same way (Ray Train V2).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ray.train
import torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from mmrlhf_ray.core import signals
from mmrlhf_ray.core.signals import interrupt_point
from mmrlhf_ray.models.attention import configure_attention
from mmrlhf_ray.training.checkpoint import (
    DS_DIR,
    HF_DIR,
    append_metrics,
    read_metrics,
    read_state,
    truncate_metrics,
    write_state,
)
from mmrlhf_ray.training.config import TrainConfig, deepspeed_config, lr_factor
from mmrlhf_ray.training.data import micro_batches
from mmrlhf_ray.training.freeze import freeze_vision
from mmrlhf_ray.training.tracking import TrackingTarget, open_tracker

METRICS_FILE = "metrics.csv"
DS_TAG = "state"


def default_build_model(path: str) -> torch.nn.Module:
    """The policy (any supported family) in fp32 (DeepSpeed casts to bf16 on GPU)."""
    from mmrlhf_ray.models.families import load_model

    return load_model(path, dtype=torch.float32)[0].train()


def default_save_model(module: torch.nn.Module, state_dict: dict, out_dir: str) -> None:
    module.save_pretrained(out_dir, state_dict=state_dict, safe_serialization=True)


def default_load_processor(path: str):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(path)


@dataclass
class TrainTask:
    """What to train: model path, data, encoding, loss (all picklable callables)."""

    model_path: str
    rows: Sequence[Any] | Callable[[], Sequence[Any]]  # the data, or a loader run per worker
    encode: Callable[[Any, Any], dict]
    collate: Callable[[list[dict], Any], dict]
    loss_fn: Callable[[Any, dict], tuple[torch.Tensor, dict[str, float]]]
    build_model: Callable[[str], torch.nn.Module] = default_build_model
    save_model: Callable[[torch.nn.Module, dict, str], None] = default_save_model
    load_processor: Callable[[str], Any] = default_load_processor
    group_key: Callable[[Any], str] | None = None  # e.g. row -> "image" | "video" (ZeRO-3)


@dataclass
class TrainResult:
    """Where the final model went and what the run measured."""

    hf_dir: str
    steps: int
    metrics: list[dict[str, float]] = field(default_factory=list)
    checkpoint_path: str = ""


# ---------------------------------------------------------------- worker side ---------
def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _build_engine(task: TrainTask, cfg: TrainConfig, ds_cfg: dict):
    """Model (ZeRO-3-aware), frozen parts, AdamW, DeepSpeed engine."""
    import deepspeed
    from transformers.integrations import HfDeepSpeedConfig

    # Adopt Ray Train's process group (gloo on CPU, nccl on GPU) before zero.Init needs it.
    deepspeed.init_distributed(dist_backend="nccl" if cfg.use_gpu else "gloo")
    keep_alive = HfDeepSpeedConfig(ds_cfg) if cfg.zero_stage == 3 else None
    model = configure_attention(
        task.build_model(task.model_path), cfg.attn_implementation, cfg.packed_attention
    )
    counts = freeze_vision(model, cfg.freeze_projector) if cfg.freeze_vision else {}
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_cfg)
    engine._hf_ds_config_keep_alive = keep_alive  # transformers reads it while saving
    return engine, counts


def _reduce_mean(metrics: dict[str, float]) -> dict[str, float]:
    """Average each metric over the data-parallel ranks (same keys on every rank)."""
    import torch.distributed as dist

    keys = sorted(metrics)
    if not dist.is_initialized() or not keys:
        return metrics
    values = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(values)
    values /= dist.get_world_size()
    return dict(zip(keys, values.tolist(), strict=True))


def _train_step(
    engine,
    task: TrainTask,
    processor,
    rows: Sequence,
    batches: Iterator,
    cfg: TrainConfig,
    step: int,
) -> dict[str, float]:
    """One optimizer step = ``grad_accum`` micro-batches; returns rank-averaged metrics,
    with the step's wall time and, where the loss counts them, pairs/s and tokens/s over
    all ranks."""
    began = time.perf_counter()
    lr = cfg.lr * lr_factor(step, cfg)
    for group in engine.optimizer.param_groups:
        group["lr"] = lr
    sums: dict[str, float] = {"examples": 0.0}
    for _ in range(cfg.grad_accum):
        examples = [task.encode(rows[i], processor) for i in next(batches)]
        sums["examples"] += len(examples)  # rows: SFT examples, reward pairs, DPO queries
        batch = _to_device(task.collate(examples, processor), engine.device)
        loss, metrics = task.loss_fn(engine, batch)
        engine.backward(loss)
        engine.step()
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + float(v) / cfg.grad_accum
    grad_norm = engine.get_global_grad_norm()
    sums["grad_norm"] = float(grad_norm) if grad_norm is not None else float("nan")
    out = _reduce_mean(sums)
    seconds = time.perf_counter() - began
    out.update(step=step + 1, lr=lr, step_seconds=seconds)
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    # per rank: examples is the step's sum, a loss's counts are means per micro-batch
    for count, per_rank in (("examples", 1), ("pairs", cfg.grad_accum), ("tokens", cfg.grad_accum)):
        if count in out:  # x ranks = the step's total
            out[f"{count}_per_s"] = out[count] * per_rank * world / max(seconds, 1e-9)
    return out


def _save_hf(engine, task: TrainTask, processor, out_dir: str, rank: int, zero3: bool) -> None:
    """Consolidated HF checkpoint + processor (a collective under ZeRO-3)."""
    if zero3:
        state = engine._zero3_consolidated_16bit_state_dict()  # every rank must call
    else:
        state = engine.module.state_dict() if rank == 0 else None
    if rank == 0:
        task.save_model(engine.module, state, out_dir)
        processor.save_pretrained(out_dir)


def _checkpoint(
    engine, task, processor, cfg, state: dict, csv_path: str, final: bool
) -> Checkpoint:
    """Write this rank's part of a checkpoint into a fresh local directory."""
    rank = ray.train.get_context().get_world_rank()
    tmp = tempfile.mkdtemp(prefix=f"ckpt-r{rank}-")
    os.makedirs(os.path.join(tmp, DS_DIR), exist_ok=True)  # DeepSpeed makes it on rank 0 only
    engine.save_checkpoint(os.path.join(tmp, DS_DIR), tag=DS_TAG)
    if final:
        _save_hf(engine, task, processor, os.path.join(tmp, HF_DIR), rank, cfg.zero_stage == 3)
    if rank == 0:
        write_state(tmp, state)
        if os.path.exists(csv_path):
            shutil.copy(csv_path, os.path.join(tmp, METRICS_FILE))
    return Checkpoint.from_directory(tmp)


def _latest_on_disk(run_root: str | None, world: int) -> tuple[int, str | None]:
    """(step, dir) of the newest complete checkpoint under a local run directory.

    Ray Train registers a reported checkpoint when its controller next polls the
    workers; a worker that dies within that window (seconds) leaves a checkpoint that
    is fully uploaded but unregistered. Scanning the run directory recovers it. A
    checkpoint is complete when rank 0's ``state.json`` and every rank's DeepSpeed
    optimizer shard are present.
    """
    if not run_root or "://" in run_root or not os.path.isdir(run_root):
        return 0, None
    best: tuple[int, str | None] = (0, None)
    for entry in os.scandir(run_root):
        shard_dir = os.path.join(entry.path, DS_DIR, DS_TAG)
        if not entry.is_dir() or not os.path.isdir(shard_dir):
            continue
        shards = [f for f in os.listdir(shard_dir) if f.endswith("optim_states.pt")]
        try:
            step = int(read_state(entry.path)["step"])
        except (FileNotFoundError, ValueError, KeyError):
            continue
        if len(shards) == world and step > best[0]:
            best = (step, entry.path)
    return best


def _resume(engine, csv_path: str, rank: int, run_root: str | None, world: int) -> int:
    """Load the latest checkpoint (Ray Train's, or a newer complete one on disk).

    Returns the step to start from; 0 (and a fresh metrics CSV) when there is none.
    """
    ckpt = ray.train.get_checkpoint()
    disk_step, disk_dir = _latest_on_disk(run_root, world)
    with ckpt.as_directory() if ckpt is not None else _null_dir() as d:
        ray_step = int(read_state(d)["step"]) if d else 0
        if disk_step > ray_step:
            d = disk_dir
        if d is None:
            if rank == 0 and os.path.exists(csv_path):
                os.remove(csv_path)  # a fresh run starts a fresh log
            return 0
        state = read_state(d)
        engine.load_checkpoint(
            os.path.join(d, DS_DIR),
            tag=DS_TAG,
            load_optimizer_states=True,
            load_lr_scheduler_states=False,
        )
        if rank == 0:
            saved = os.path.join(d, METRICS_FILE)
            if os.path.exists(saved) and os.path.abspath(saved) != os.path.abspath(csv_path):
                shutil.copy(saved, csv_path)
            truncate_metrics(csv_path, state["step"])
    return int(state["step"])


@contextlib.contextmanager
def _null_dir():
    yield None


def _train_loop(loop_config: dict) -> None:
    """The per-worker loop run by ``TorchTrainer`` (see the module docstring)."""
    os.environ.setdefault(
        "DS_ACCELERATOR", "cpu" if not loop_config["train"]["use_gpu"] else "cuda"
    )
    task: TrainTask = loop_config["task"]
    cfg = TrainConfig(**loop_config["train"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    _quiet_report_log()
    torch.set_num_threads(cfg.threads_per_worker)
    torch.manual_seed(cfg.seed)
    csv_path = loop_config["metrics_csv"] if rank == 0 else os.devnull
    engine, counts = _build_engine(task, cfg, deepspeed_config(cfg, world))
    engine.train()
    processor = task.load_processor(task.model_path)
    start = _resume(engine, csv_path, rank, loop_config.get("run_root"), world)
    rows = task.rows() if callable(task.rows) else task.rows
    groups = [task.group_key(r) for r in rows] if task.group_key else None
    batches = micro_batches(
        len(rows),
        cfg.micro_batch_size,
        cfg.seed,
        rank,
        world,
        start=start * cfg.grad_accum,
        groups=groups,
    )
    bar = _progress(rank, start, cfg.max_steps)
    # Ray Train's convention: the tracking library is called natively, on rank 0 only
    tracker = open_tracker(loop_config.get("tracking"), start) if rank == 0 else None
    for step in range(start, cfg.max_steps):
        metrics = _train_step(engine, task, processor, rows, batches, cfg, step)
        metrics.update(resumed_from=start, **{f"params_{k}": v for k, v in counts.items()})
        if rank == 0:
            interrupt_point("train.step")  # tests: a signal inside a Ray Train run
            append_metrics(csv_path, metrics)
            if tracker is not None:  # the row metrics.csv got: one source
                tracker.log(metrics, step + 1, final=step + 1 == cfg.max_steps)
            # refresh=False: mininterval holds (a refresh per step is a terminal line
            # per step once Ray forwards the worker's output)
            bar.set_postfix(loss=f"{metrics.get('loss', float('nan')):.4f}", refresh=False)
            bar.update(1)
        done = step + 1
        final = done == cfg.max_steps
        if final or done % cfg.checkpoint_every == 0:
            ckpt = _checkpoint(engine, task, processor, cfg, {"step": done}, csv_path, final)
            ray.train.report(metrics, checkpoint=ckpt)
            shutil.rmtree(ckpt.path, ignore_errors=True)
        elif done % cfg.report_every == 0:
            ray.train.report(metrics)
    bar.close()
    if tracker is not None:
        tracker.close()


def _quiet_report_log() -> None:
    """Ray Train V2 logs every ``report`` at INFO ("Reporting training result N: ...") to
    a logger named by its file's path, outside the "ray" loggers the console quiets; on
    a terminal each record lands on the progress bar's line. WARNING and up still show."""
    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:  # another Ray layout: its INFO lines just stay
        return
    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)


def _progress(rank: int, start: int, total: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=start, desc="train", disable=rank != 0, mininterval=5)


# ---------------------------------------------------------------- driver side ---------
TRACKING_ENV = (
    "WANDB_API_KEY",
    "WANDB_BASE_URL",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
)


def _tracking_env() -> dict[str, str]:
    """The tracking credentials of the driver's environment, for the rank-0 worker
    (which may run on another node)."""
    return {k: os.environ[k] for k in TRACKING_ENV if os.environ.get(k)}


def _run_config(cfg: TrainConfig, name: str, storage_path: str) -> RunConfig:
    return RunConfig(
        name=name,
        storage_path=storage_path,
        failure_config=FailureConfig(max_failures=cfg.max_failures),
        checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
        worker_runtime_env={
            "env_vars": {
                "DS_ACCELERATOR": "cuda" if cfg.use_gpu else "cpu",
                "TOKENIZERS_PARALLELISM": "false",
                **_tracking_env(),
            }
        },
    )


def run_training(
    task: TrainTask,
    cfg: TrainConfig,
    name: str,
    storage_path: str,
    output_dir: str,
    metrics_csv: str | None = None,
    tracking: TrackingTarget | None = None,
) -> TrainResult:
    """Train ``task`` with ``cfg`` on ``cfg.num_workers`` Ray Train workers.

    ``name`` + ``storage_path`` identify the run: re-running with the same pair resumes
    from its latest checkpoint. The final Hugging Face checkpoint is copied to
    ``output_dir`` and the metrics CSV to ``metrics_csv`` (default
    ``<output_dir>/../metrics.csv``). ``tracking``: where rank 0 logs each step's row
    (``mmrlhf_ray.training.tracking``). Requires a running Ray (``harness.runtime.init_ray``).
    """
    storage_path = os.path.abspath(storage_path) if "://" not in storage_path else storage_path
    metrics_csv = os.path.abspath(metrics_csv or os.path.join(output_dir, "..", METRICS_FILE))
    Path(metrics_csv).parent.mkdir(parents=True, exist_ok=True)
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config={
            "task": task,
            "train": asdict(cfg),
            "metrics_csv": metrics_csv,
            "run_root": os.path.join(storage_path, name),
            "tracking": tracking,
        },
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers,
            use_gpu=cfg.use_gpu,
            resources_per_worker={"CPU": cfg.cpus_per_worker},
        ),
        run_config=_run_config(cfg, name, storage_path),
    )
    # Ray Train's fit would replace the SIGINT handler for good: see mmrlhf_ray/core/signals.py
    result = signals.while_framework_runs(trainer.fit)
    if result.error is not None:
        raise result.error
    if result.checkpoint is None:
        raise RuntimeError(f"training run {name}: finished without a checkpoint")
    with result.checkpoint.as_directory() as d:
        state = read_state(d)
        if not os.path.isdir(os.path.join(d, HF_DIR)):
            raise RuntimeError(f"training run {name}: last checkpoint {d} has no {HF_DIR}/")
        shutil.rmtree(output_dir, ignore_errors=True)
        shutil.copytree(os.path.join(d, HF_DIR), output_dir)
        saved_csv = os.path.join(d, METRICS_FILE)
        if os.path.exists(saved_csv):
            shutil.copy(saved_csv, metrics_csv)
    return TrainResult(
        hf_dir=output_dir,
        steps=int(state["step"]),
        metrics=read_metrics(metrics_csv) if os.path.exists(metrics_csv) else [],
        checkpoint_path=result.checkpoint.path,
    )
