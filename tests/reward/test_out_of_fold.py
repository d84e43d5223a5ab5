"""Out-of-fold reward margins (issue 23, item 5): folds, the comparison, and the stages.

* pure: a query's fold is a fixed hash; the in/out-of-fold summary on hand-computed
  vectors (β by the paper's formula);
* `mmrlhf score margins=out-of-fold` on real (untrained) tiny reward models, no Ray:
  every pair's δ is the fold model's δ for its query, the comparison keeps both;
* slow: `train-reward folds=2` (Ray Train + DeepSpeed) then `score margins=out-of-fold`,
  and from the two manifests alone: no pair was scored by a model trained on its query.
"""

from __future__ import annotations

import math

import pyarrow.parquet as pq
import pytest

from mmrlhf_ray.core.stage import StageDir
from mmrlhf_ray.data.schemas import to_table
from mmrlhf_ray.reward.folds import compare_summary, fold_of, model_for


def test_fold_of_is_a_fixed_hash_of_the_query():
    ids = [f"q{i}" for i in range(400)]
    folds = [fold_of(q, 2) for q in ids]
    assert folds == [fold_of(q, 2) for q in ids]  # deterministic
    assert fold_of("q7", 2) == fold_of("q7", 2, seed=0) and 150 < sum(folds) < 250
    assert {fold_of(q, 3) for q in ids} == {0, 1, 2}
    assert [fold_of(q, 2, seed=1) for q in ids] != folds  # the seed moves queries
    with pytest.raises(ValueError, match="k >= 2"):
        fold_of("q", 1)
    manifest = {"k": 2, "seed": 0, "models": [{"trained_on_folds": [1]}, {"trained_on_folds": [0]}]}
    assert model_for("q7", manifest) == fold_of("q7", 2)
    bad = {"k": 2, "seed": 0, "models": [{"trained_on_folds": [0]}, {"trained_on_folds": [1]}]}
    with pytest.raises(ValueError, match="not out-of-fold"):
        model_for("q7", bad)


def test_compare_summary_on_known_margins():
    s = compare_summary([2.0, -1.0, 0.5, 3.0], [1.0, -1.0, 0.5, -1.0], 0.1, 0.5, 0.5)
    assert s["n"] == 4
    assert s["mean_abs_delta_in"] == pytest.approx(6.5 / 4) and s["mean_abs_delta_oof"] == 0.875
    assert s["same_sign"] == 0.75
    # β = 0.1 (1 + 0.5 (1 - e^{-δ/2})), δ clamped at 0: pairs 1 and 4 move, 2 and 3 do not
    b = [0.1 * (1 + 0.5 * (1 - math.exp(-0.5 * d))) for d in (2.0, 0.0, 0.5, 3.0)]
    c = [0.1 * (1 + 0.5 * (1 - math.exp(-0.5 * d))) for d in (1.0, 0.0, 0.5, 0.0)]
    assert s["mean_beta_in"] == pytest.approx(sum(b) / 4, abs=1e-12)
    assert s["mean_beta_oof"] == pytest.approx(sum(c) / 4, abs=1e-12)
    assert s["beta_changed"] == 2
    # ranks [2, 0, 1, 3] and [3, 0.5, 2, 0.5] (ties averaged): cov 0.5 / sqrt(5 * 4.5)
    assert s["spearman"] == pytest.approx(0.5 / math.sqrt(22.5), abs=1e-12)
    assert compare_summary([1.0, 2.0], [1.0, 2.0])["pearson"] == pytest.approx(1.0)


def _pairs_stage(run, rows):
    stage = StageDir(str(run), "pairs")
    stage.begin({"test": len(rows)})
    stage.write_part("part-0", to_table(rows, "pair"))
    stage.finish(len(rows), len(rows), 0)


def _train_reward_stage(run, models: dict[str, str], k: int = 2) -> dict:
    """A finished train-reward stage whose model and fold models are the given dirs."""
    folds = {
        "k": k,
        "seed": 0,
        "models": [
            {"fold": j, "model_dir": models[f"fold{j}"], "trained_on_folds": [1 - j]}
            for j in range(k)
        ],
    }
    stage = StageDir(str(run), "train-reward")
    stage.begin({"test": "folds"})
    stage.finish(0, 0, 0, folds=folds, model_dir=models["main"])
    return folds


def test_score_takes_each_delta_from_the_fold_model_of_its_query(tiny_models, toy_rows, tmp_path):
    from jobs import score
    from mmrlhf_ray.data.groups import group_pairs
    from mmrlhf_ray.reward.folds import LocalRewardClient
    from mmrlhf_ray.reward.model import build_tiny_reward_model
    from mmrlhf_ray.service.client import compare_payload

    run = tmp_path / "run"
    rows = [dict(r) for r in toy_rows[:12]]  # 4 queries x 3 pairs
    _pairs_stage(run, rows)
    models = {
        name: build_tiny_reward_model(tiny_models["policy"], tmp_path / name, seed=s)
        for name, s in (("main", 0), ("fold0", 1), ("fold1", 2))
    }
    (run / "train-reward").mkdir(parents=True, exist_ok=True)
    (run / "train-reward" / "model").symlink_to(models["main"])
    folds = _train_reward_stage(run, models)
    argv = [f"run_dir={run}", "via=local", "margins=out-of-fold", "use_pair_critiques=true",
            "concurrency=1", "queries_per_part=2"]  # fmt: skip
    assert score.main(argv) == 0
    out = StageDir(str(run), "score")
    manifest = out.read_manifest()
    assert manifest["counts"] == {"in": 12, "out": 12, "quarantined": 0}
    scored = {r["pair_id"]: r for r in out.read().to_pylist()}
    groups, _ = group_pairs(rows, critiques=True, keep_rows=True)
    clients = {j: LocalRewardClient(models[f"fold{j}"]) for j in (0, 1)}
    main = LocalRewardClient(models["main"])
    both = pq.read_table(run / "score" / "oof").to_pylist()
    by_pair = {r["pair_id"]: r for r in both}
    for g in groups:
        j = fold_of(g.query_id, 2)
        want = clients[j].compare(compare_payload(g))["scores"]
        ins = main.compare(compare_payload(g))["scores"]
        for row, p in zip(g.rows, g.pairs, strict=True):
            got = scored[row["pair_id"]]
            assert got["margin_source"] == f"reward-oof/fold-{j}"
            assert j not in folds["models"][j]["trained_on_folds"]
            assert got["margin"] == pytest.approx(want[p.chosen] - want[p.rejected], abs=1e-5)
            assert by_pair[row["pair_id"]]["margin_in"] == pytest.approx(
                ins[p.chosen] - ins[p.rejected], abs=1e-5
            )
    summary = manifest["out_of_fold"]
    assert summary["n"] == 12 and sum(summary["pairs_per_fold"].values()) == 12
    assert (
        (run / "score" / "report" / "out_of_fold.md")
        .read_text()
        .startswith("In-sample vs out-of-fold margins, n = 12 pairs")
    )


@pytest.mark.slow
@pytest.mark.ray
def test_train_reward_folds_then_out_of_fold_score(ray_session, tiny_models, toy_rows, tmp_path):
    """The real run (3 trainings: the model and 2 fold models): about 2-4 min here."""
    from jobs import score, train_reward

    run = tmp_path / "run"
    rows = [dict(r) for r in toy_rows[:24]]  # 8 queries x 3 pairs
    _pairs_stage(run, rows)
    argv = [f"run_dir={run}", f"backbone={tiny_models['policy']}", "epochs=0",
            "train.max_steps=2", "train.checkpoint_every=2", "train.micro_batch_size=2",
            "heldout_fraction=0.25", "eval_mode=none", "folds=2"]  # fmt: skip
    assert train_reward.main(argv) == 0
    tr = StageDir(str(run), "train-reward")
    folds = tr.read_manifest()["folds"]
    assert folds["k"] == 2 and [m["trained_on_folds"] for m in folds["models"]] == [[1], [0]]
    split = tr.read().to_pylist()
    assert {r["fold"] for r in split} == {0, 1}
    # the queries each fold model trained on, from the split part and the manifest
    trained_on = {
        m["fold"]: {
            r["query_id"]
            for r in split
            if r["split"] == "train" and r["fold"] in m["trained_on_folds"]
        }
        for m in folds["models"]
    }
    assert trained_on[0] and trained_on[1] and not trained_on[0] & trained_on[1]
    for m in folds["models"]:
        assert m["train_pairs"] == sum(
            1 for r in split if r["split"] == "train" and r["fold"] != m["fold"]
        )
    assert score.main([f"run_dir={run}", "via=local", "margins=out-of-fold",
                       "use_pair_critiques=true", "concurrency=1"]) == 0  # fmt: skip
    sc = StageDir(str(run), "score")
    manifest = sc.read_manifest()
    assert manifest["counts"] == {"in": 24, "out": 24, "quarantined": 0}
    for r in sc.read().to_pylist():
        j = int(r["margin_source"].rsplit("-", 1)[1])
        assert r["query_id"] not in trained_on[j]  # never scored by a model that saw it
    assert manifest["out_of_fold"]["n"] == 24
