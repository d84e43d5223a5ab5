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

import pyarrow as pa

from mmrlhf_ray.core.cli import parse_stage_args
from mmrlhf_ray.core.config import ConfigError
from mmrlhf_ray.core.stage import begin_stage, require_done
from mmrlhf_ray.generation.config import GenerateConfig


def load_queries(cfg: GenerateConfig) -> pa.Table:
    """The input queries, in a stable order (by sample_id), optionally the first N."""
    table = require_done(cfg.run_dir, cfg.input_stage).read()
    table = table.sort_by("sample_id")
    if cfg.max_queries:
        table = table.slice(0, cfg.max_queries)
    return table


def run(cfg: GenerateConfig) -> dict:
    """The stage: every model, then the count check and the manifest."""
    if not cfg.models:
        raise ConfigError("generate: no models configured (config key 'models')")
    specs = [spec.resolved(cfg.run_dir) for spec in cfg.models]
    for spec in specs:
        spec.validate()
    from harness.actor_pool import generate_model

    out, done = begin_stage(cfg, "generate", inputs=[cfg.input_stage])
    if done:
        return out.read_manifest()
    queries = load_queries(cfg)
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
