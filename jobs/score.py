"""Score every preference pair through the reward service: margin δ per pair.

Reads the ``pairs`` stage, groups pairs per query so each distinct response is scored
once (one ``/v1/compare`` per query), and writes the pairs with
``margin = r(chosen) - r(rejected)`` and ``margin_source = "reward-service"`` into
``<run_dir>/score/data/part-*.parquet``, one part per ``queries_per_part`` queries.
Service failures are retried with backoff; if they persist the stage stops with an
error (finished parts are kept, a re-run does only the rest); never a silent 0.
Rows the service refuses (4xx) or that fail validation are quarantined.

The service is reached over HTTP (``url``, default: the URL in serve-reward's
manifest) or, inside the cluster, through a Serve handle (``via=handle``).

    ray job submit --working-dir . -- python jobs/score.py --config configs/score.yaml via=handle
    mmrlhf score run_dir=runs/demo
"""

import os
import sys

from tqdm import tqdm

from mmrlhf_ray.core.cli import parse_stage_args
from mmrlhf_ray.core.stage import StageDir, StageInputError, begin_stage
from mmrlhf_ray.data.groups import group_pairs
from mmrlhf_ray.data.schemas import to_table
from mmrlhf_ray.service.client import ScoreConfig, chunk, score_groups


def make_client(cfg: ScoreConfig):
    """An HTTP or handle client of the reward service, as configured."""
    if cfg.via == "handle":
        from harness.runtime import init_ray
        from serve.client import HandleRewardClient

        init_ray()
        return HandleRewardClient.for_app(cfg.app_name, cfg.timeout_s)
    from serve.client import HttpRewardClient

    url = cfg.url or (StageDir(cfg.run_dir, "serve-reward").read_manifest() or {}).get("url")
    if not url:
        raise StageInputError(
            "score: no url= given and no serve-reward manifest with a URL: run "
            f"`mmrlhf serve-reward run_dir={cfg.run_dir} detach=true` first"
        )
    token = os.environ.get(cfg.token_env) if cfg.token_env else None
    return HttpRewardClient(url, token, cfg.timeout_s)


def run(cfg: ScoreConfig) -> dict:
    """The stage: margins of every pair from the reward service, part by part."""
    # Margins of other pairs (or another config) would be mixed in: begin() drops them.
    out, done = begin_stage(cfg, "score", inputs=["pairs"])
    if done:
        return out.read_manifest()
    pairs = StageDir(cfg.run_dir, "pairs")
    rows = pairs.read().to_pylist()
    groups, bad = group_pairs(rows, critiques=cfg.use_pair_critiques, keep_rows=True)
    out.write_quarantine("input", bad)
    client = make_client(cfg)
    parts = chunk(groups, cfg.queries_per_part)
    todo = [i for i in range(len(parts)) if not out.has_part(f"part-{i:05d}")]
    with tqdm(total=sum(len(parts[i]) for i in todo), desc="score: queries", unit="q") as bar:
        for i in todo:
            scored, rejected = score_groups(
                parts[i],
                client.compare,
                cfg.retry,
                cfg.concurrency,
                cfg.max_frames,
                progress=bar.update,
            )
            out.write_quarantine(f"part-{i:05d}", rejected)
            out.write_part(f"part-{i:05d}", to_table(scored, "pair"))
    client.close()
    n_out, n_bad = out.count_rows(), out.count_rows(quarantine=True)
    manifest = out.finish(len(rows), n_out, n_bad, queries=len(groups), parts=len(parts))
    print(
        f"score: {n_out} pairs of {len(groups)} queries scored ({len(todo)} of {len(parts)} "
        f"parts this run), {n_bad} quarantined -> {out.data_dir}"
    )
    return manifest


def main(argv: list[str] | None = None) -> int:
    run(parse_stage_args("score", ScoreConfig, argv, __doc__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
