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
