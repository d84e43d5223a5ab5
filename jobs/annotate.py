"""Annotate generated responses into MM-RLHF records (RECORD_SCHEMA).

Reads the ``generate`` stage (one row per sampled response), joins the responses of
each query, takes the query's image / video frames from the stage generate read
(``curate`` by default), and labels each query:

* ``source=oracle``: the shapes world's annotator (``toyworld.oracle_annotate``):
  1-5 helpfulness / faithfulness / ethics from the ground truth, ranks, reasons and
  the paper's tie rule (constructed positive / negative responses);
* ``source=human``: labels people wrote in the official ``data.jsonl`` format
  (``labels_jsonl``, e.g. the ``tasks.jsonl`` that ``export_tasks=true`` wrote,
  filled in); media come from the generated queries with the same id when present.

Counts (oracle): generated rows in = rows placed in records + rows quarantined (empty
generations, queries the oracle could not label). Counts (human): label lines in =
records written + lines quarantined. Parts hold fixed sets of queries, so a crashed
run redoes only missing parts; a finished one does nothing.

    ray job submit --working-dir . -- python jobs/annotate.py --config configs/annotate.yaml
    mmrlhf annotate run_dir=runs/demo
"""

import json
import sys
from pathlib import Path

import pyarrow.dataset as pads
import pyarrow.parquet as pq
from tqdm import tqdm

from mmrlhf_ray.annotate.config import AnnotateConfig
from mmrlhf_ray.annotate.records import (
    GeneratedQuery,
    annotate_group,
    export_tasks,
    group_generated,
    merge_media,
)
from mmrlhf_ray.core.cli import parse_stage_args
from mmrlhf_ray.core.quarantine import quarantine_row
from mmrlhf_ray.core.stage import StageDir, StageInputError, begin_stage
from mmrlhf_ray.data.release import read_release_file
from mmrlhf_ray.data.schemas import MEDIA_KEYS, to_table

GEN_COLUMNS = (
    "response_id",
    "sample_id",
    "model",
    "sample_index",
    "source",
    "category",
    "question",
    "reference_answer",
    "ground_truth",
    "text",
    "response",
    "is_empty",
)


def load_oracle():
    """The shapes world's annotator (imported late: only ``source=oracle`` needs it)."""
    try:
        from mmrlhf_ray.toyworld import oracle_annotate
    except ImportError:
        from mmrlhf_ray.toyworld.oracle import oracle_annotate
    return oracle_annotate


def read_generated(gen: StageDir) -> list[dict]:
    """The generate stage's rows, without the heavy columns the annotator never reads."""
    names = pq.ParquetFile(gen.part_paths()[0], filesystem=gen.fs).schema_arrow.names
    return gen.read(columns=[c for c in GEN_COLUMNS if c in names]).to_pylist()


def load_media(run_dir: str, gen: StageDir, ids: list[str]) -> dict[str, dict]:
    """Media columns by sample_id from the stage generate read its queries from."""
    stage = ((gen.read_manifest() or {}).get("config") or {}).get("input_stage") or "curate"
    src = StageDir(run_dir, stage)
    if not ids or not src.is_done() or not src.part_paths():
        return {}
    src.check_parts()  # hashed once per process (mmrlhf_ray/core/parts.py)
    dataset = pads.dataset(src.part_paths(), filesystem=src.fs, format="parquet")
    columns = ["sample_id", *[c for c in MEDIA_KEYS if c in dataset.schema.names]]
    table = dataset.to_table(columns=columns, filter=pads.field("sample_id").isin(ids))
    return {row["sample_id"]: row for row in table.to_pylist()}


def _group_quarantine(group: GeneratedQuery, exc: Exception) -> list[dict]:
    """One quarantine row per generated response of a query the oracle could not label."""
    message = str(exc).removeprefix(
        f"{group.pool_row['sample_id']}: "
    )  # oracle: "<id>: <field>: ..."
    field, _, reason = message.partition(": ")
    if not reason or " " in field:
        field, reason = "ground_truth", str(exc)
    reason = f"{type(exc).__name__}: {reason}"
    return [
        quarantine_row("generate", r["response_id"], field, reason, r["text"])
        for r in group.responses
    ]


def annotate_part(groups: list[GeneratedQuery], cfg: AnnotateConfig, oracle) -> tuple[list, list]:
    """Records and quarantined rows for one part's queries."""
    records, bad = [], []
    for group in groups:
        try:
            records.append(annotate_group(group, oracle, cfg.seed, cfg.tie_rule))
        except (ValueError, KeyError, TypeError) as exc:
            bad.extend(_group_quarantine(group, exc))
    return records, bad


def write_tasks(out: StageDir, groups) -> str:
    path = out.path("tasks.jsonl")
    out.fs.create_dir(out.root, recursive=True)
    with out.fs.open_output_stream(path) as f:
        for task in export_tasks(groups):
            f.write((json.dumps(task) + "\n").encode())
    return path


def run_oracle(cfg: AnnotateConfig, out: StageDir, gen: StageDir) -> tuple[int, int, int]:
    """Label every generated query with the oracle; returns (rows in, out, quarantined)."""
    rows = read_generated(gen)
    groups, problems = group_generated(rows)
    out.write_quarantine("generated-rows", problems)
    ids = sorted(groups)
    if cfg.export_tasks:
        print(f"annotate: wrote annotation tasks to {write_tasks(out, (groups[i] for i in ids))}")
    oracle = load_oracle()
    n_bad, step = len(problems), cfg.queries_per_part
    for start in tqdm(range(0, len(ids), step), desc="annotate", unit=" parts"):
        part, chunk = f"part-{start // step:05d}", ids[start : start + step]
        if out.has_part(part):  # resume: count what the earlier attempt quarantined
            n_bad += _quarantined(out, part)
            continue
        media = load_media(cfg.run_dir, gen, chunk)
        part_groups = [groups[i] for i in chunk]
        for group in part_groups:
            group.pool_row.update(
                {
                    k: v
                    for k, v in media.get(group.pool_row["sample_id"], {}).items()
                    if k != "sample_id"
                }
            )
        records, bad = annotate_part(part_groups, cfg, oracle)
        out.write_quarantine(part, bad)
        out.write_part(part, to_table(records, "record"))
        n_bad += len(bad)
    return len(rows), len(rows) - n_bad, n_bad


def _quarantined(out: StageDir, part: str) -> int:
    path = f"{out.quarantine_dir}/{part}.parquet"
    if out.fs.get_file_info(path).type.name != "File":
        return 0
    return pq.ParquetFile(path, filesystem=out.fs).metadata.num_rows


def run_human(cfg: AnnotateConfig, out: StageDir) -> tuple[int, int, int]:
    """Records from human labels in the official format; returns (lines, out, quarantined)."""
    gen = StageDir(cfg.run_dir, "generate")
    groups = group_generated(read_generated(gen))[0] if gen.is_done() else {}
    n_in = n_out = n_bad = part_no = 0
    records, bad = [], []
    known = {sid: g.pool_row for sid, g in groups.items()}  # media are joined per part
    results = read_release_file(cfg.labels_jsonl, "data", cfg.media_root, known=known)
    for result in tqdm(results, desc="annotate (human labels)", unit=" lines", mininterval=2):
        n_in += 1
        if result.problem:
            bad.append(result.problem)
        else:
            records.append(merge_media(result.row, groups.get(result.row["query_id"])))
        if len(records) + len(bad) == cfg.queries_per_part:
            n_out, n_bad = n_out + len(records), n_bad + len(bad)
            _write_human_part(out, part_no, records, bad, cfg, gen)
            records, bad, part_no = [], [], part_no + 1
    if records or bad or part_no == 0:
        n_out, n_bad = n_out + len(records), n_bad + len(bad)
        _write_human_part(out, part_no, records, bad, cfg, gen)
    return n_in, n_out, n_bad


def _write_human_part(out, part_no, records, bad, cfg, gen) -> None:
    part = f"part-{part_no:05d}"
    if out.has_part(part):
        return
    if gen.is_done():
        media = load_media(cfg.run_dir, gen, [r["query_id"] for r in records])
        for record in records:
            for key, value in media.get(record["query_id"], {}).items():
                if key != "sample_id" and record.get(key) is None:
                    record[key] = value
    out.write_quarantine(part, bad)
    out.write_part(part, to_table(records, "record"))


def run(cfg: AnnotateConfig) -> dict:
    """The stage: generated responses (oracle) or human labels -> annotated records."""
    if cfg.source == "human" and not Path(cfg.labels_jsonl).is_file():
        raise StageInputError(f"annotate: labels_jsonl {cfg.labels_jsonl}: no such file")
    labels = Path(cfg.labels_jsonl).stat() if cfg.source == "human" else None
    out, done = begin_stage(
        cfg,
        "annotate",
        inputs=["generate"] if cfg.source == "oracle" else [],
        other_inputs={"labels": f"{labels.st_size}:{labels.st_mtime_ns}"} if labels else {},
    )
    if done:
        return out.read_manifest()
    gen = StageDir(cfg.run_dir, "generate") if cfg.source == "oracle" else None
    if cfg.source == "oracle":
        n_in, n_out, n_bad = run_oracle(cfg, out, gen)
    else:
        n_in, n_out, n_bad = run_human(cfg, out)
    records = out.count_rows()
    manifest = out.finish(n_in, n_out, n_bad, records=records)
    unit = "generated rows" if cfg.source == "oracle" else "label lines"
    print(
        f"annotate ({cfg.source}): {n_in} {unit} = {n_out} annotated + {n_bad} quarantined; "
        f"{records} records in {out.data_dir}"
    )
    return manifest


def main(argv: list[str] | None = None) -> int:
    run(parse_stage_args("annotate", AnnotateConfig, argv, __doc__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
