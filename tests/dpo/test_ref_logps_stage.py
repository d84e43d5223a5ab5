"""`mmrlhf ref-logps` end to end on Ray Data with an actor pool (real Ray, tiny policy)."""

import math
import os

import pyarrow.parquet as pq
import pytest
import torch

from jobs import ref_logps as job
from mmrlhf_ray.core.stage import StageDir
from mmrlhf_ray.data.groups import group_pairs
from mmrlhf_ray.data.schemas import to_table
from mmrlhf_ray.dpo.forward import per_pair_logps
from mmrlhf_ray.models import load_policy
from mmrlhf_ray.models.settings import EncodingSettings
from tests.dpo.helpers import make_pairs


def write_pairs_stage(run_dir, rows, stage="pairs"):
    out = StageDir(str(run_dir), stage)
    out.begin({"test": True})
    out.write_part("part-00000", to_table(rows, "pair"))
    out.finish(len(rows), len(rows), 0)
    return out


@pytest.mark.ray
def test_ref_logps_stage_scores_each_response_once(tmp_path, ray_session, policy_dir):
    rows = make_pairs(n_queries=5, k=4, video_every=5)  # 30 pairs, 20 unique responses
    rows[7]["image"] = b"not a png"  # q1's media is broken: all 6 of its pairs quarantined
    for r in rows[6:12]:
        r["image"] = b"not a png"
    write_pairs_stage(tmp_path, rows)
    argv = [
        f"run_dir={tmp_path}",
        f"policy={policy_dir}",
        "queries_per_part=2",
        "queries_per_batch=2",
        "num_actors=2",
    ]
    assert job.main(argv) == 0
    out = StageDir(str(tmp_path), "ref-logps")
    manifest = out.read_manifest()
    assert {k: manifest["counts"][k] for k in ("in", "out", "quarantined")} == {
        "in": 30,
        "out": 24,
        "quarantined": 6,
    }
    assert manifest["encoding"] == EncodingSettings.of(policy_dir, 256, 4).to_dict()
    assert manifest["responses"] == 20 and out.part_names() == [
        "part-00000",
        "part-00001",
        "part-00002",
    ]
    q = out.read(quarantine=True).to_pylist()
    assert {r["locator"] for r in q} == {
        f"pair_id=q1-{a}-{b}" for a in range(4) for b in range(a + 1, 4)
    }
    assert all(r["field"] == "image" for r in q)
    responses = pq.read_table(out.path("responses")).to_pylist()
    assert len(responses) == 16 and len({r["response_id"] for r in responses}) == 16
    # the stored values are the reference policy's log-probs of each pair, as computed pair by pair
    model, processor = load_policy(policy_dir)
    scored = {r["pair_id"]: r for r in out.read().to_pylist()}
    groups, _ = group_pairs([r for r in rows if r["query_id"] in ("q0", "q4")])
    with torch.no_grad():
        for g in groups:
            chosen, rejected = per_pair_logps(model, processor, g)
            for p, c, rj in zip(g.pairs, chosen.tolist(), rejected.tolist(), strict=True):
                assert scored[p.pair_id]["ref_chosen_logp"] == pytest.approx(c, abs=2e-3)
                assert scored[p.pair_id]["ref_rejected_logp"] == pytest.approx(rj, abs=2e-3)
    assert all(math.isfinite(r["ref_chosen_logp"]) for r in scored.values())
    # finished: a re-run does nothing
    assert job.main(argv) == 0 and out.read_manifest()["attempts"] == 1
    # a crash that lost part 1 (manifest still "running"): the re-run computes only that part
    kept = {
        n: os.path.getmtime(out.path("data", f"{n}.parquet")) for n in ("part-00000", "part-00002")
    }
    os.remove(out.path("data", "part-00001.parquet"))
    out.write_manifest({**out.read_manifest(), "status": "running"})
    assert job.main(argv) == 0
    manifest = out.read_manifest()
    assert manifest["attempts"] == 2 and manifest["counts"]["out"] == 24
    assert all(os.path.getmtime(out.path("data", f"{n}.parquet")) == t for n, t in kept.items())
    assert sorted(r["pair_id"] for r in out.read().to_pylist()) == sorted(scored)
