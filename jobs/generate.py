"""Sample candidate responses for the curated queries with each configured policy model.

Reads the ``curate`` stage (POOL_SCHEMA columns + ``category``) and writes the
``generate`` stage: one row per (query, model, sample index), exactly once, with the
generation settings, empty/truncated flags and (when asked) per-token log-probs.
Each model runs on its own Ray Data actor pool (vLLM where it imports, else
transformers; or the toy world's simulated responders). Output parts are
``<model>-<chunk>``: a re-run skips the parts already written.

    ray job submit --working-dir . -- python jobs/generate.py --config configs/generate.yaml
    mmrlhf generate --config configs/generate.yaml run_dir=runs/demo
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for `ray job submit`

import pyarrow as pa  # noqa: E402

from mmrlhf_ray.cli import parse_stage_args  # noqa: E402
from mmrlhf_ray.config import config_to_dict  # noqa: E402
from mmrlhf_ray.generation import GENERATE_SCHEMA, GenerateConfig, ModelSpec, safe_name  # noqa: E402
from mmrlhf_ray.stage import StageDir, require_done  # noqa: E402


def load_queries(cfg: GenerateConfig) -> pa.Table:
    """The input queries, in a stable order (by sample_id), optionally the first N."""
    table = require_done(cfg.run_dir, cfg.input_stage).read()
    table = table.sort_by("sample_id")
    if cfg.max_queries:
        table = table.slice(0, cfg.max_queries)
    return table


def part_name(spec: ModelSpec, chunk: int) -> str:
    return f"{safe_name(spec.name)}-{chunk:05d}"


def generate_model(
    out: StageDir, queries: pa.Table, spec: ModelSpec, chunk_size: int, kill_marker: str = ""
):
    """Run one model over the queries whose parts are missing; returns PoolStats."""
    from actors.generation_pool import run_pool
    from actors.runtime import init_ray

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


def run(cfg: GenerateConfig) -> dict:
    """The stage: every model, then the count check and the manifest."""
    if not cfg.models:
        raise ValueError("generate: no models configured (config key 'models')")
    specs = [spec.resolved(cfg.run_dir) for spec in cfg.models]
    for spec in specs:
        spec.validate()
    out = StageDir(cfg.run_dir, "generate")
    config = config_to_dict(cfg)
    if out.is_done(config):
        print(f"generate: already done in {out.root}")
        return out.read_manifest() or {}
    queries = load_queries(cfg)
    out.begin(
        config, inputs={cfg.input_stage: StageDir(cfg.run_dir, cfg.input_stage).fingerprint()}
    )
    lines = []
    for spec in specs:
        stats = generate_model(out, queries, spec, cfg.chunk_size, cfg.kill_marker)
        lines.append(stats.line())
        print(f"generate: {stats.line()}")
    rows_in = sum(queries.num_rows * spec.n for spec in specs)
    rows_out, rows_q = out.count_rows(), out.count_rows(quarantine=True)
    manifest = out.finish(rows_in, rows_out, rows_q, throughput=lines)
    print(
        f"generate: {queries.num_rows} queries x {len(cfg.models)} models -> {rows_out} rows, "
        f"{rows_q} quarantined, in {out.data_dir}"
    )
    return manifest


def main(argv: list[str] | None = None) -> int:
    cfg = parse_stage_args("generate", GenerateConfig, argv, __doc__)
    run(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
