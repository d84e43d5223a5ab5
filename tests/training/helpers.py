"""Helpers of the training tests: read back what the trackers logged."""

from __future__ import annotations

import os


def tensorboard_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
    """Every scalar under ``logdir`` as TensorBoard shows it (all event files in order,
    steps purged by a resumed writer dropped): tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(logdir, size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def mlflow_runs(uri: str, experiment: str = "mmrlhf") -> list:
    """The runs of ``experiment`` in the MLflow store at ``uri``."""
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


def mlflow_history(uri: str, run_id: str, key: str) -> list[tuple[int, float, int]]:
    """(step, value, timestamp) of every value logged for ``key``, in logging order."""
    from mlflow.tracking import MlflowClient

    history = MlflowClient(uri).get_metric_history(run_id, key)
    return sorted(((m.step, m.value, m.timestamp) for m in history), key=lambda t: (t[2], t[0]))


_WANDB_MAGIC = b":W&B"  # a .wandb file: this, 2 bytes of ident, 1 of version, then records
_BLOCK = 32768  # framed as LevelDB's log: 32 KiB blocks of (crc32c, length, type) chunks
_CHUNK_HEAD = 7


def _wandb_records(path: str):
    """The ``Record`` protobufs (wandb's own schema) of one W&B transaction log."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data = open(path, "rb").read()
    assert data[:4] == _WANDB_MAGIC, f"{path}: not a .wandb file"
    pos, parts = 7, b""
    while pos + _CHUNK_HEAD <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _CHUNK_HEAD:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _CHUNK_HEAD])
        if kind == 0:  # zero fill to the block's end
            pos += left
            continue
        chunk = data[pos + _CHUNK_HEAD : pos + _CHUNK_HEAD + length]
        pos += _CHUNK_HEAD + length
        parts = chunk if kind in (1, 2) else parts + chunk  # FULL / FIRST start a record
        if kind in (1, 4):  # FULL / LAST end it
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            yield record


def wandb_offline_runs(root: str, run_id: str) -> list[str]:
    """The offline run directories of ``run_id`` under ``root`` (its ``wandb/``), oldest
    first (their names start with the start time)."""
    import glob

    return sorted(glob.glob(os.path.join(root, "wandb", f"offline-run-*-{run_id}")))


def wandb_history(run_dir: str) -> dict[str, list[tuple[int, float]]]:
    """Every logged value of one offline W&B run, from its ``run-<id>.wandb`` file:
    key -> [(step, value)] in logging order (W&B's own ``_step``, ``_runtime``,
    ``_timestamp`` left out)."""
    import glob
    import json

    (path,) = glob.glob(os.path.join(run_dir, "run-*.wandb"))
    out: dict[str, list[tuple[int, float]]] = {}
    for record in _wandb_records(path):
        if record.WhichOneof("record_type") != "history":
            continue
        step = record.history.step.num
        for item in record.history.item:
            key = item.key or "/".join(item.nested_key)
            if not key.startswith("_"):
                out.setdefault(key, []).append((step, json.loads(item.value_json)))
    return out
