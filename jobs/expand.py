"""Expand annotators' short score reasons into fuller critiques (paper Sec. 3.2, Table 7).

Reads the ``annotate`` stage (RECORD_SCHEMA) and writes the ``expand`` stage: the same
records, each response's ``critique`` filled with the expander's rewrite of its
``score_reason`` (Table 7 prompt, ``mmrlhf_ray.data.prompts.EXPANSION_PROMPT``, overridable
with ``prompt_template``). Every expansion is checked against the original verdict
(``check_expansion``): a flagged one (contradicts / junk / no verdict / empty) follows
``fallback`` (``original``: keep the annotator's reason; ``keep``: keep the expansion)
and is counted. A per-response audit table goes to ``expand/audit/``.

    ray job submit --working-dir . -- python jobs/expand.py --config configs/expand.yaml
    mmrlhf expand --config configs/expand.yaml run_dir=runs/demo
"""

from __future__ import annotations

import sys
import uuid
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq

from mmrlhf_ray.core.cli import parse_stage_args
from mmrlhf_ray.core.config import ConfigError
from mmrlhf_ray.core.quarantine import quarantine_row
from mmrlhf_ray.core.stage import StageDir, begin_stage
from mmrlhf_ray.data.schemas import to_table, validate_row
from mmrlhf_ray.generation.config import ExpandConfig
from mmrlhf_ray.generation.expansion import check_expansion, choose_critique, expansion_requests

AUDIT_SCHEMA = pa.schema(
    [
        pa.field("query_id", pa.string()),
        pa.field("response_index", pa.int32()),
        pa.field("status", pa.string()),  # ok | contradicts | junk | no_verdict | empty | failed
        pa.field("fell_back", pa.bool_()),
        pa.field("original", pa.string()),
        pa.field("expansion", pa.string()),
    ]
)


def prompt_rows(records: list[dict], chunk: int, cfg: ExpandConfig) -> list[dict]:
    """Pool-like rows (sample_id = unit key, question = the Table 7 prompt) for the pool."""
    rows = []
    for rec in records:
        image = rec.get("image") if cfg.with_image else None
        image_path = rec.get("image_path") if cfg.with_image else None
        for i, req in expansion_requests(rec, cfg.expander, cfg.prompt_template, cfg.overwrite, []):
            text = req.messages[-1]["content"][-1]["text"]
            rows.append(
                {
                    "sample_id": f"{rec['query_id']}#{i}",
                    "question": text,
                    "image": image,
                    "image_path": image_path,
                    "category": rec.get("category"),
                    "_chunk": chunk,
                }
            )
    return rows


def merge(records: list[dict], texts: dict[str, str | None], fallback: str) -> list[dict]:
    """Write expansions into the records' ``critique``; returns the audit rows."""
    audit = []
    for rec in records:
        for i, resp in enumerate(rec["responses"]):
            key = f"{rec['query_id']}#{i}"
            if key not in texts:
                continue
            original, expansion = resp["score_reason"].strip(), texts[key]
            status = "failed" if expansion is None else check_expansion(original, expansion)
            critique, fell_back = choose_critique(
                original, expansion or "", "failed" if expansion is None else status, fallback
            )
            resp["critique"] = critique
            audit.append(
                {
                    "query_id": rec["query_id"],
                    "response_index": i,
                    "status": status,
                    "fell_back": fell_back,
                    "original": original,
                    "expansion": expansion,
                }
            )
    return audit


def write_audit(out: StageDir, name: str, audit: list[dict]) -> None:
    directory = out.path("audit")
    out.fs.create_dir(directory, recursive=True)
    tmp = f"{directory}/{name}.parquet.tmp-{uuid.uuid4().hex[:8]}"
    pq.write_table(pa.Table.from_pylist(audit, schema=AUDIT_SCHEMA), tmp, filesystem=out.fs)
    out.fs.move(tmp, f"{directory}/{name}.parquet")


def audit_counts(out: StageDir) -> dict[str, int]:
    """Flag counts over every audit part (so a resumed run reports the whole stage)."""
    from pyarrow import fs as pafs

    counts: Counter = Counter()
    for info in out.fs.get_file_info(pafs.FileSelector(out.path("audit"), allow_not_found=True)):
        if info.base_name.endswith(".parquet"):
            table = pq.read_table(info.path, filesystem=out.fs)
            counts.update(table.column("status").to_pylist())
            counts["fell_back"] += sum(table.column("fell_back").to_pylist())
            counts["expanded"] += table.num_rows
    return dict(counts)


def split_chunk(records: list[dict], chunk: int) -> tuple[list[dict], list[dict]]:
    """(valid records, quarantine rows) of one chunk."""
    good, bad = [], []
    for k, rec in enumerate(records):
        problems = validate_row(rec, "record")
        if problems:
            bad.append(
                quarantine_row(
                    "annotate",
                    rec.get("query_id") or f"chunk{chunk}:{k}",
                    problems[0].split(":")[0].split("[")[0],
                    "; ".join(problems),
                    {k2: rec.get(k2) for k2 in ("query_id", "question")},
                )
            )
        else:
            good.append(rec)
    return good, bad


def run(cfg: ExpandConfig) -> dict:
    """The stage: chunks of records -> expansions on the pool -> checked, merged parts."""
    from harness.actor_pool import run_pool
    from harness.runtime import init_ray

    spec = cfg.expander.resolved(cfg.run_dir)
    spec.validate()
    if spec.kind == "simulated":
        raise ConfigError(
            "expand: expander.kind: the expander must be a model (vllm | transformers | auto), "
            f"got {spec.kind!r}"
        )
    out, done = begin_stage(cfg, "expand", inputs=[cfg.input_stage])
    if done:
        return out.read_manifest()
    records = sorted(
        StageDir(cfg.run_dir, cfg.input_stage).read().to_pylist(),
        key=lambda r: str(r.get("query_id")),
    )
    chunks = {
        c: records[c * cfg.chunk_size : (c + 1) * cfg.chunk_size]
        for c in range(-(-len(records) // cfg.chunk_size))
    }
    todo = {
        c: split_chunk(recs, c) for c, recs in chunks.items() if not out.has_part(f"part-{c:05d}")
    }
    prompts = [row for c, (good, _bad) in todo.items() for row in prompt_rows(good, c, cfg)]
    expected = Counter(row["_chunk"] for row in prompts)
    print(f"expand: {len(todo)} of {len(chunks)} parts to do, {len(prompts)} reasons to expand")

    def write(chunk: int, rows: list[dict], failed: list[dict]) -> None:
        good, bad = todo[chunk]
        texts = {r["sample_id"]: r["text"] for r in rows}
        texts.update({q["raw"]: None for q in failed})  # generator-side failure: fall back
        write_audit(out, f"part-{chunk:05d}", merge(good, texts, cfg.fallback))
        out.write_quarantine(f"part-{chunk:05d}", bad)
        out.write_part(f"part-{chunk:05d}", to_table(good, "record"))

    for chunk in [c for c in todo if c not in expected]:  # nothing to expand in it
        write(chunk, [], [])
    stats = None
    if prompts:
        init_ray()
        table = pa.Table.from_pylist(prompts)
        stats = run_pool(table, spec, dict(expected), write, kill_marker=cfg.kill_marker)
        print(f"expand: {stats.line()}")
    counts = audit_counts(out)
    rows_out, rows_q = out.count_rows(), out.count_rows(quarantine=True)
    manifest = out.finish(
        len(records), rows_out, rows_q, expansion=counts, throughput=[stats.line()] if stats else []
    )
    print(
        f"expand: {len(records)} records -> {rows_out} written, {rows_q} quarantined; "
        f"expansions {counts.get('expanded', 0)}, ok {counts.get('ok', 0)}, "
        f"contradicts {counts.get('contradicts', 0)}, fell back {counts.get('fell_back', 0)}"
    )
    return manifest


def main(argv: list[str] | None = None) -> int:
    cfg = parse_stage_args("expand", ExpandConfig, argv, __doc__)
    run(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
