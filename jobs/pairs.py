"""Expand annotated records into preference pairs: every pair of differing rank.

Reads MM-RLHF records (``RECORD_SCHEMA``) from the ``expand`` stage when it has
finished (responses then carry critiques), else from ``annotate`` (or any records
stage named by ``input_stage``, e.g. ``import/records`` for the official release), and
writes ``PAIR_SCHEMA`` rows to ``<run_dir>/pairs``. Ties follow the paper's rule
(constructed positive/negative responses already in the record) or are skipped and
counted. ``margin`` stays null for the ``score`` stage to fill, unless
``margin=oracle`` asks for the annotator's score difference (``margin_source="oracle"``).

Counts: records in = records expanded + records quarantined; the manifest also holds
the pairs written, records that gave no pair, and equal-rank pairs skipped.

    ray job submit --working-dir . -- python jobs/pairs.py --config configs/pairs.yaml
    mmrlhf pairs run_dir=runs/demo
"""

import sys

import pyarrow.parquet as pq
from tqdm import tqdm

from mmrlhf_ray.annotate.mia_dpo import mia_pairs
from mmrlhf_ray.annotate.pairs import PairsConfig, PairStats, expand_record
from mmrlhf_ray.core.cli import parse_stage_args
from mmrlhf_ray.core.quarantine import quarantine_row
from mmrlhf_ray.core.stage import StageDir, begin_stage, require_done
from mmrlhf_ray.data.schemas import to_table, validate_row


def input_stage(cfg: PairsConfig) -> StageDir:
    """The records to expand: ``input_stage`` if set, else expand if done, else annotate."""
    if cfg.input_stage:
        return require_done(cfg.run_dir, cfg.input_stage)
    if StageDir(cfg.run_dir, "expand").is_done():
        return require_done(cfg.run_dir, "expand")
    return require_done(cfg.run_dir, "annotate")


def iter_record_batches(src: StageDir, batch_size: int):
    """Record batches (lists of dicts) of ``batch_size`` across the source's parts."""
    batch = []
    for path in src.part_paths():
        for arrow_batch in pq.ParquetFile(path, filesystem=src.fs).iter_batches(batch_size=256):
            for row in arrow_batch.to_pylist():
                batch.append(row)
                if len(batch) == batch_size:
                    yield batch
                    batch = []
    if batch:
        yield batch


def expand_part(records: list[dict], cfg: PairsConfig, source: str) -> tuple[list, list, PairStats]:
    """Pairs, quarantined rows and stats for one part's records."""
    pairs, bad, stats = [], [], PairStats()
    for record in records:
        problems = validate_row(record, "record")
        if problems:
            field, _, reason = problems[0].partition(": ")
            locator = f"query_id={record.get('query_id')!r}"
            bad.append(quarantine_row(source, locator, field, reason, record.get("question")))
            continue
        rows, one = expand_record(record, cfg.mode, cfg.tie_rule, cfg.margin, cfg.ties)
        pairs.extend(rows)
        stats.add(one)
    if cfg.mia_distractors:
        good = [r for r in records if not validate_row(r, "record")]
        extra, stats.mia_records_without_pair = mia_pairs(good, cfg.mia_distractors)
        pairs.extend(extra)
        stats.mia_pairs, stats.pairs = len(extra), stats.pairs + len(extra)
    return pairs, bad, stats


def run(cfg: PairsConfig) -> dict:
    """The stage: annotated records -> preference pairs, part by part."""
    src = input_stage(cfg)
    out, done = begin_stage(cfg, "pairs", inputs=[src])
    if done:
        return out.read_manifest()
    n_in = n_bad = n_pairs = 0
    total = PairStats()
    n_records = src.count_rows()
    batches = iter_record_batches(src, cfg.records_per_part)
    bar = tqdm(total=n_records, desc="pairs", unit=" records", mininterval=2)
    for part_no, records in enumerate(batches):
        part = f"part-{part_no:05d}"
        pairs, bad, stats = expand_part(records, cfg, src.stage)
        if not out.has_part(part):  # resume: parts already written are kept as they are
            out.write_quarantine(part, bad)
            out.write_part(part, to_table(pairs, "pair"))
        n_in += len(records)
        n_bad += len(bad)
        n_pairs += len(pairs)
        total.add(stats)
        bar.update(len(records))
    bar.close()
    src.check_rows_read(n_in)  # rows in = rows out of the input stage
    manifest = out.finish(n_in, n_in - n_bad, n_bad, pairs=n_pairs, stats=vars(total))
    print(
        f"pairs: {n_in} records ({n_bad} quarantined) -> {n_pairs} pairs "
        f"({total.tie_pairs} with a constructed response), {total.records_without_pairs} "
        f"records gave no pair, {total.tied_pairs_skipped} equal-rank pairs skipped, "
        f"{total.tied_pairs_carried} carried as ties, {total.mia_pairs} MIA-DPO pairs; "
        f"in {out.data_dir}"
    )
    return manifest


def main(argv: list[str] | None = None) -> int:
    run(parse_stage_args("pairs", PairsConfig, argv, __doc__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
