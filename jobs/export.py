"""Export the run's preference pairs, margins and betas for other tools (issue 26).

Reads the pairs (``ref-logps``, ``score`` or ``pairs``: the first finished), the beta each
pair got (``train-dpo``'s ``data/pairs.parquet``, when it has run) and the records
(``expand``, ``annotate`` or ``import/records``, for data.jsonl), and writes under
``<run_dir>/export/``:

    hf/          a Hugging Face dataset (``datasets.load_from_disk``): images, chosen,
                 rejected, margin (delta), beta
    trl/         TRL's conversational preference format with images (DPOTrainer-ready)
    official/    dpo_pairs.jsonl (ls_factor = margin) and data.jsonl (+ margins), media
    data/pairs.parquet   the exported pairs (pair_id, query_id, margin, beta)

A pair whose image or frames cannot be read is quarantined (``quarantine/pairs``).

    mmrlhf export run_dir=runs/demo
    mmrlhf export run_dir=runs/demo formats=[trl] pairs_stage=score
    ray job submit --working-dir . -- python jobs/export.py run_dir=/mnt/shared/runs/paper
"""

from __future__ import annotations

import os
import sys

import pyarrow as pa

from mmrlhf_ray.core.cli import parse_stage_args
from mmrlhf_ray.core.stage import StageDir, begin_stage
from mmrlhf_ray.data import export as ex
from mmrlhf_ray.data.config import ExportConfig
from mmrlhf_ray.dpo.io import resolve_pairs_stage

PAIR_STAGES = ("ref-logps", "score", "pairs", "import/pairs")
RECORD_STAGES = ("expand", "annotate", "import/records")


def _optional(run_dir: str, wanted: str, candidates: tuple[str, ...]) -> StageDir | None:
    """The finished stage ``wanted`` (``auto``: the first finished candidate; '' none)."""
    if not wanted:
        return None
    if wanted != "auto":
        return resolve_pairs_stage(run_dir, wanted, (wanted,))
    done = [StageDir(run_dir, c) for c in candidates if StageDir(run_dir, c).is_done()]
    return done[0] if done else None


def read_betas(stage: StageDir | None) -> dict[str, float]:
    if stage is None:
        return {}
    table = stage.read(columns=["pair_id", "beta"]).to_pylist()
    return {r["pair_id"]: r["beta"] for r in table}


def run(cfg: ExportConfig) -> dict:
    """The stage: read the pairs (+ betas, records), write the chosen formats."""
    src = resolve_pairs_stage(cfg.run_dir, cfg.pairs_stage, PAIR_STAGES)
    betas_src = _optional(cfg.run_dir, cfg.betas_stage, ("train-dpo",))
    records_src = _optional(cfg.run_dir, cfg.records_stage, RECORD_STAGES)
    if "official" not in cfg.formats:
        records_src = None
    upstream = [s for s in (src, betas_src, records_src) if s is not None]
    out, done = begin_stage(cfg, "export", inputs=upstream)
    if done:
        return out.read_manifest()
    rows = src.read().to_pylist()
    bad = [q for q in (ex.check_media(r, src.stage) for r in rows) if q is not None]
    bad_ids = {q["locator"] for q in bad}
    pairs = [r for r in rows if r["pair_id"] not in bad_ids]
    betas = read_betas(betas_src)
    written = write_formats(cfg, out, pairs, betas, records_src)
    out.write_quarantine("pairs", bad)
    out.write_part(
        "pairs",
        pa.table(
            {
                "pair_id": [p["pair_id"] for p in pairs],
                "query_id": [p["query_id"] for p in pairs],
                "margin": pa.array([p.get("margin") for p in pairs], pa.float32()),
                "beta": pa.array([betas.get(p["pair_id"]) for p in pairs], pa.float32()),
            }
        ),
    )
    with_beta = sum(p["pair_id"] in betas for p in pairs)
    with_margin = sum(p.get("margin") is not None for p in pairs)
    manifest = out.finish(
        len(rows), len(pairs), len(bad), outputs=written, pairs_from=src.stage,
        with_margin=with_margin, with_beta=with_beta,
    )  # fmt: skip
    print(
        f"export: {len(pairs)} of {len(rows)} pairs from {src.stage} ({len(bad)} quarantined; "
        f"{with_margin} with a margin, {with_beta} with a beta) -> "
        + ", ".join(f"{k} {v}" for k, v in written.items())
    )
    return manifest


def write_formats(
    cfg: ExportConfig, out: StageDir, pairs: list, betas: dict, records_src
) -> dict[str, str]:
    written = {}
    if "hf" in cfg.formats:
        written["hf"] = out.local_path("hf")
        ex.save_dataset(ex.hf_rows(pairs, betas), ex.hf_features(), written["hf"])
    if "trl" in cfg.formats:
        written["trl"] = out.local_path("trl")
        ex.save_dataset(ex.trl_rows(pairs, cfg.max_frames), ex.trl_features(), written["trl"])
    if "official" in cfg.formats:
        root = out.local_path("official")
        written["dpo_pairs"] = ex.write_dpo_pairs(pairs, betas, root)
        if records_src is not None:
            records = records_src.read().to_pylist()
            written["data"] = ex.write_data_jsonl(records, pairs, betas, root)
        written["media_root"] = os.path.abspath(root)
    return written


def main(argv: list[str] | None = None) -> int:
    run(parse_stage_args("export", ExportConfig, argv, __doc__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
