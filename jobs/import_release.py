"""Import the official MM-RLHF release files into this project's Parquet tables.

Reads whichever of ``data.jsonl`` (human-labelled records), ``dpo_pairs.jsonl``
(training pairs) and ``mm_reward_bench.jsonl`` (RewardBench pairs) are configured and
writes each into its own sub-stage of the run, with a manifest of its own:

    <run_dir>/import/records   RECORD_SCHEMA rows from data.jsonl
    <run_dir>/import/pairs     PAIR_SCHEMA rows from dpo_pairs.jsonl
    <run_dir>/import/bench     PAIR_SCHEMA rows from mm_reward_bench.jsonl
    <run_dir>/import/pool      POOL_SCHEMA rows from a raw pool (``pool_jsonl``), for
                               ``mmrlhf curate input_stage=import/pool``
    <run_dir>/import           the stage's manifest (counts of all three)

Every malformed line is reported (file, line, field, reason) and quarantined; for each
file, lines read = rows written + rows quarantined. Parts cover fixed line ranges and
are written atomically, so a crashed import resumes where it stopped.

    ray job submit --working-dir . -- python jobs/import_release.py --config configs/import.yaml
    mmrlhf import data_jsonl=release/data.jsonl run_dir=runs/release
"""

import os
import sys

from tqdm import tqdm

from mmrlhf_ray.core.cli import parse_stage_args
from mmrlhf_ray.core.config import config_to_dict
from mmrlhf_ray.core.stage import StageDir, StageInputError
from mmrlhf_ray.data.config import ImportConfig
from mmrlhf_ray.data.release import read_release_file
from mmrlhf_ray.data.schemas import to_table

# (config attribute, release file kind, sub-stage, schema kind)
FILES = (
    ("data_jsonl", "data", "import/records", "record"),
    ("dpo_pairs_jsonl", "dpo_pairs", "import/pairs", "pair"),
    ("reward_bench_jsonl", "reward_bench", "import/bench", "pair"),
    ("pool_jsonl", "pool", "import/pool", "pool"),
)
MAX_REPORTED = 20  # malformed lines printed per file (all of them are quarantined)


def _fingerprint(path: str) -> str:
    st = os.stat(path)
    return f"{os.path.abspath(path)}:{st.st_size}:{int(st.st_mtime)}"


def _flush(out: StageDir, part: str, rows: list, bad: list, kind: str) -> None:
    """Quarantine first, then the data part: the data part marks the unit done."""
    if out.has_part(part):
        return
    out.write_quarantine(part, bad)
    out.write_part(part, to_table(rows, kind))


def import_file(
    cfg: ImportConfig, path: str, file_kind: str, sub_stage: str, schema_kind: str
) -> dict[str, int]:
    """Import one release file into ``sub_stage``; returns {in, out, quarantined}."""
    out = StageDir(cfg.run_dir, sub_stage)
    config = {**config_to_dict(cfg), "file": path, "fingerprint": _fingerprint(path)}
    if out.skip_if_done(config):
        counts = out.read_manifest()["counts"]
        print(f"import: {sub_stage} already done ({counts['out']} rows)")
        return counts
    out.begin(config, inputs={path: config["fingerprint"]})
    rows, bad, n_in, n_out, n_bad, part_no, reported = [], [], 0, 0, 0, 0, 0
    lines = read_release_file(path, file_kind, cfg.media_root, cfg.default_category)
    for result in tqdm(lines, desc=f"import {file_kind}", unit=" lines", mininterval=2):
        n_in += 1
        if result.problem:
            bad.append(result.problem)
            n_bad += 1
            if reported < MAX_REPORTED:
                p = result.problem
                print(f"  quarantined {p['source']} {p['locator']}: {p['field']}: {p['reason']}")
                reported += 1
        else:
            rows.append(result.row)
            n_out += 1
        if len(rows) + len(bad) >= cfg.rows_per_part:
            _flush(out, f"part-{part_no:05d}", rows, bad, schema_kind)
            rows, bad, part_no = [], [], part_no + 1
    if rows or bad or part_no == 0:
        _flush(out, f"part-{part_no:05d}", rows, bad, schema_kind)
    if n_bad > reported:
        print(f"  ... and {n_bad - reported} more, see {out.quarantine_dir}")
    out.finish(n_in, n_out, n_bad, file=path)
    print(f"import: {path}: {n_in} lines read = {n_out} rows written + {n_bad} quarantined")
    return {"in": n_in, "out": n_out, "quarantined": n_bad}


def run(cfg: ImportConfig) -> dict:
    """The stage: each given release file -> its sub-stage (records, pairs, bench, pool)."""
    stage = StageDir(cfg.run_dir, "import")
    todo = [(getattr(cfg, attr), *rest) for attr, *rest in FILES if getattr(cfg, attr)]
    if not todo:
        raise StageInputError(
            "import: no file given (set data_jsonl, dpo_pairs_jsonl, reward_bench_jsonl "
            "or pool_jsonl)"
        )
    for path, *_ in todo:
        if not os.path.isfile(path):
            raise StageInputError(f"import: {path}: no such file; check the path")
    inputs = {p: _fingerprint(p) for p, *_ in todo}
    config = {**config_to_dict(cfg), "inputs": inputs}
    if stage.skip_if_done(config):
        print(f"import: already done in {stage.root}")
        return stage.read_manifest()
    stage.begin(config, inputs=inputs)
    per_file = {sub: import_file(cfg, path, kind, sub, schema) for path, kind, sub, schema in todo}
    total = {k: sum(c[k] for c in per_file.values()) for k in ("in", "out", "quarantined")}
    manifest = stage.finish(total["in"], total["out"], total["quarantined"], files=per_file)
    print(
        f"import: {total['in']} lines read = {total['out']} rows written + "
        f"{total['quarantined']} quarantined, in {stage.root}"
    )
    return manifest


def main(argv: list[str] | None = None) -> int:
    run(parse_stage_args("import", ImportConfig, argv, __doc__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
