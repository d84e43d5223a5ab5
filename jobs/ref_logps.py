"""Reference log-probs per response, once, by Ray Data batch inference.

Reads the preference pairs (``score`` if finished, else ``pairs``), groups them by
query and de-duplicates responses, and runs the frozen reference policy (the SFT
policy by default) over every unique response on an actor pool: the vision tower and
the prompt once per query, its responses packed behind it (``forward=packed``; the
reference layout ``grouped`` forwards one row per response). Writes

* ``<run_dir>/ref-logps/data/part-*.parquet``: the pairs (``PAIR_SCHEMA``) with
  ``ref_chosen_logp`` / ``ref_rejected_logp`` filled, one part per ``queries_per_part``
  queries (a re-run after a crash computes only the missing parts);
* ``<run_dir>/ref-logps/responses/part-*.parquet``: one row per response
  (query_id, response_id, ref_logp, n_tokens);
* quarantine: pairs whose media cannot be decoded or whose row is invalid.

    ray job submit --working-dir . -- python jobs/ref_logps.py --config configs/ref-logps.yaml
    mmrlhf ref-logps run_dir=runs/demo
"""

import sys

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from mmrlhf_ray.core.cli import parse_stage_args
from mmrlhf_ray.core.stage import StageDir, begin_stage
from mmrlhf_ray.data.groups import group_pairs
from mmrlhf_ray.data.schemas import to_table
from mmrlhf_ray.dpo.config import RefLogpsConfig
from mmrlhf_ray.dpo.io import read_pair_rows, resolve_pairs_stage, resolve_policy
from mmrlhf_ray.dpo.reference import fill_pairs
from mmrlhf_ray.models.settings import EncodingSettings

RESPONSE_COLUMNS = ("query_id", "response_id", "ref_logp", "n_tokens")


def _part(i: int) -> str:
    return f"part-{i:05d}"


def _write_part(out: StageDir, i: int, pair_rows: list[dict], scored: list[dict]) -> int:
    """Pairs of part ``i`` with reference log-probs + the per-response table."""
    for s in scored:
        if s["error"] == "":
            s["error"] = s["error_field"] = None
    done, quarantine = fill_pairs(pair_rows, scored)
    ok = [s for s in scored if not s["error"]]
    table = pa.table({c: [s[c] for s in ok] for c in RESPONSE_COLUMNS})
    out.fs.create_dir(out.path("responses"), recursive=True)
    pq.write_table(table, out.path("responses", f"{_part(i)}.parquet"), filesystem=out.fs)
    out.write_quarantine(_part(i), quarantine)
    out.write_part(_part(i), to_table(done, "pair"))  # last: the part is complete
    return len(done)


def run_parts(
    cfg: RefLogpsConfig, out: StageDir, parts: list[list], rows_by_query: dict, policy: str
) -> None:
    """Score the queries of the missing parts on the actor pool; write parts as they finish."""
    import ray

    from actors.ref_logps import query_row, reference_logps_dataset
    from harness.runtime import init_ray

    todo = [i for i in range(len(parts)) if not out.has_part(_part(i))]
    if not todo:
        return
    init_ray()
    items = [query_row(g, i) for i in todo for g in parts[i]]
    expected = {i: sum(len(g.response_ids) for g in parts[i]) for i in todo}
    ds = reference_logps_dataset(
        ray.data.from_items(items),
        policy,
        cfg.num_actors,
        cfg.queries_per_batch,
        cfg.max_response_tokens,
        cfg.max_frames,
        cfg.use_gpu,
        cfg.bf16,
        cfg.forward,
        cfg.attn_implementation,
        cfg.packed_attention,
    )
    pending: dict[int, list[dict]] = {i: [] for i in todo}
    with tqdm(total=sum(expected.values()), desc="ref-logps: responses", unit="resp") as bar:
        for row in ds.iter_rows():
            i = int(row["part"])
            pending[i].append(dict(row))
            bar.update(1)
            if len(pending[i]) == expected[i]:
                pair_rows = [r for g in parts[i] for r in rows_by_query[g.query_id]]
                _write_part(out, i, pair_rows, pending.pop(i))


def run(cfg: RefLogpsConfig) -> dict:
    """The stage: reference log-prob of every distinct response, part by part."""
    src = resolve_pairs_stage(cfg.run_dir, cfg.pairs_stage, ("score", "pairs"))
    policy = resolve_policy(cfg.run_dir, cfg.policy)
    encoding = EncodingSettings.of(policy, cfg.max_response_tokens, cfg.max_frames)
    out, done = begin_stage(cfg, "ref-logps", inputs=[src], other_inputs={"policy": policy})
    if done:
        return out.read_manifest()
    rows = read_pair_rows(src)
    groups, bad = group_pairs(rows, source=src.stage)
    out.write_quarantine("input", bad)
    rows_by_query: dict[str, list[dict]] = {}
    bad_ids = {q["locator"] for q in bad}
    for r in rows:
        if f"pair_id={r.get('pair_id')}" not in bad_ids:
            rows_by_query.setdefault(r["query_id"], []).append(r)
    n = cfg.queries_per_part
    parts = [groups[i : i + n] for i in range(0, len(groups), n)]
    run_parts(cfg, out, parts, rows_by_query, policy)
    rows_out, rows_q = out.count_rows(), out.count_rows(quarantine=True)
    responses = sum(len(g.response_ids) for g in groups)
    manifest = out.finish(
        len(rows),
        rows_out,
        rows_q,
        policy=policy,
        pairs_from=src.stage,
        queries=len(groups),
        responses=responses,
        encoding=encoding.to_dict(),
    )
    print(
        f"ref-logps: {responses} responses of {len(groups)} queries scored once each "
        f"({len(rows)} pairs: {rows_out} out, {rows_q} quarantined) -> {out.data_dir}"
    )
    return manifest


def main(argv: list[str] | None = None) -> int:
    run(parse_stage_args("ref-logps", RefLogpsConfig, argv, __doc__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
