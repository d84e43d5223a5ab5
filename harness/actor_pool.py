"""Run a model's actor pool over a table of queries with Ray Data, exactly once per unit.

``run_pool(table, spec, on_chunk)`` streams ``table`` (pool rows plus a ``_chunk``
column) through ``GenerateWorker`` actors (``map_batches`` with
``ActorPoolStrategy(size=spec.pool_size)``). Ray Data restarts a dead actor
(``max_restarts=-1``) and retries its unfinished batch (``max_task_retries=-1``).
The driver gathers rows per chunk, de-duplicated by ``response_id`` (a retried batch
can never add a row twice), and hands a chunk to ``on_chunk`` once every (query,
sample index) unit of it is back; the caller writes it as one atomic part, which is
the unit of resume.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from tqdm import tqdm

from actors.generator import VLLM_CPU_ENV, GenerateWorker
from mmrlhf_ray.core.quarantine import quarantine_row
from mmrlhf_ray.core.stage import StageDir
from mmrlhf_ray.generation.config import ModelSpec, spec_dict
from mmrlhf_ray.generation.requests import GENERATE_SCHEMA, safe_name


@dataclass
class PoolStats:
    """What one pool run did (for the throughput line and the manifest)."""

    model: str
    kind: str = ""
    prompts: int = 0  # queries sent to the model
    samples: int = 0  # rows generated
    quarantined: int = 0  # units quarantined
    tokens: int = 0  # generated tokens
    seconds: float = 0.0

    def line(self) -> str:
        rate = self.prompts / self.seconds if self.seconds else 0.0
        tok = self.tokens / self.seconds if self.seconds else 0.0
        return (
            f"{self.model} [{self.kind}]: {self.prompts} prompts, {self.samples} samples, "
            f"{self.quarantined} quarantined in {self.seconds:.1f}s = {rate:.2f} prompts/s, "
            f"{tok:.1f} tokens/s"
        )


def _remote_args(spec: ModelSpec) -> dict[str, Any]:
    """Resources per actor; TP > 1 reserves the GPUs in a placement group for vLLM's workers."""
    args: dict[str, Any] = {
        "num_cpus": spec.num_cpus,
        "runtime_env": {"env_vars": dict(VLLM_CPU_ENV) if spec.num_gpus == 0 else {}},
    }
    if spec.tensor_parallel_size > 1:
        args["num_gpus"] = 0  # the vLLM engine's own Ray workers hold the GPUs
    else:
        args["num_gpus"] = spec.num_gpus
    return args


def _tp_scheduler(spec: ModelSpec) -> Callable[[], dict[str, Any]] | None:
    if spec.tensor_parallel_size <= 1:
        return None

    def fn() -> dict[str, Any]:
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        # bundle 0 holds the actor (its CPUs) and one vLLM worker; one GPU bundle per other rank
        bundles = [{"GPU": 1, "CPU": spec.num_cpus}] + [{"GPU": 1}] * (
            spec.tensor_parallel_size - 1
        )
        pg = ray.util.placement_group(bundles, strategy="STRICT_PACK")
        return {
            "scheduling_strategy": PlacementGroupSchedulingStrategy(
                pg, placement_group_capture_child_tasks=True
            )
        }

    return fn


def _batches(table: pa.Table, spec: ModelSpec, kill_marker: str) -> Iterator[pa.Table]:
    """Output batches: a Ray Data actor pool for models; in-process for simulated responders
    (pure and instant: an actor would only add its start-up time)."""
    import ray

    if spec.kind == "simulated":
        worker = GenerateWorker(spec_dict(spec))
        for start in range(0, table.num_rows, spec.batch_size):
            yield worker(table.slice(start, spec.batch_size))
        return
    ds = ray.data.from_arrow(table).repartition(max(1, -(-table.num_rows // spec.batch_size)))
    out = ds.map_batches(
        GenerateWorker,
        fn_constructor_kwargs={"spec": spec_dict(spec), "kill_marker": kill_marker},
        batch_size=spec.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=spec.pool_size),
        ray_remote_args_fn=_tp_scheduler(spec),
        **_remote_args(spec),
    )
    yield from out.iter_batches(batch_format="pyarrow", batch_size=None)


def run_pool(
    table: pa.Table,
    spec: ModelSpec,
    expected: dict[int, int],
    on_chunk: Callable[[int, list[dict], list[dict]], None],
    kill_marker: str = "",
) -> PoolStats:
    """Generate for every row of ``table``; ``on_chunk(chunk, rows, quarantined)`` per chunk.

    ``expected[chunk]`` is the number of units (queries x n) the chunk must return;
    a chunk that never completes raises instead of being written partially.
    """
    stats = PoolStats(model=spec.name)
    if table.num_rows == 0:
        return stats
    start = time.perf_counter()
    pending: dict[int, dict[str, dict]] = defaultdict(dict)
    done: set[int] = set()
    bar = tqdm(total=sum(expected.values()), desc=f"generate {spec.name}", unit="sample")
    for batch in _batches(table, spec, kill_marker):
        for row in batch.to_pylist():
            chunk = row["_chunk"]
            if chunk in done or row["response_id"] in pending[chunk]:
                continue  # a retried batch: the unit is already here
            pending[chunk][row["response_id"]] = row
            bar.update(1)
            if len(pending[chunk]) == expected[chunk]:
                _flush(chunk, pending.pop(chunk), on_chunk, stats)
                done.add(chunk)
    bar.close()
    missing = {c: expected[c] - len(pending.get(c, {})) for c in expected if c not in done}
    if missing:
        raise RuntimeError(f"{spec.name}: chunks never completed (missing units): {missing}")
    stats.seconds = time.perf_counter() - start
    return stats


def _flush(chunk: int, units: dict[str, dict], on_chunk: Callable, stats: PoolStats) -> None:
    good, bad = [], []
    for row in sorted(units.values(), key=lambda r: (r["sample_id"], r["sample_index"])):
        if row.get("_qreason"):
            bad.append(
                quarantine_row(
                    "curate", row["response_id"], row["_qfield"], row["_qreason"], row["sample_id"]
                )
            )
        else:
            good.append({k: v for k, v in row.items() if not k.startswith("_")})
            stats.kind = row.get("model_kind") or stats.kind
            stats.tokens += int(row.get("num_tokens") or 0)
    stats.samples += len(good)
    stats.quarantined += len(bad)
    stats.prompts += len({r["sample_id"] for r in units.values()})
    on_chunk(chunk, good, bad)


def part_name(spec: ModelSpec, chunk: int) -> str:
    return f"{safe_name(spec.name)}-{chunk:05d}"


def generate_model(
    out: StageDir, queries: pa.Table, spec: ModelSpec, chunk_size: int, kill_marker: str = ""
):
    """Run one model over the queries whose parts are missing; returns PoolStats."""
    from harness.runtime import init_ray

    chunks = [i // chunk_size for i in range(queries.num_rows)]
    todo = sorted({c for c in chunks if not out.has_part(part_name(spec, c))})
    mask = pa.array([c in set(todo) for c in chunks])
    pending = queries.append_column("_chunk", pa.array(chunks, pa.int64())).filter(mask)
    expected = {c: chunks.count(c) * spec.n for c in todo}
    print(f"generate: {spec.name}: {len(todo)} of {len(set(chunks))} parts to do")

    def write(chunk: int, rows: list[dict], quarantined: list[dict]) -> None:
        out.write_quarantine(part_name(spec, chunk), quarantined)
        out.write_part(part_name(spec, chunk), pa.Table.from_pylist(rows, schema=GENERATE_SCHEMA))

    if todo and spec.kind != "simulated":  # simulated responders run in-process
        init_ray()
    return run_pool(pending, spec, expected, write, kill_marker=kill_marker)
