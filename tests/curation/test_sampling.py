"""Ratio targets, per-cluster uniform allocation and seeded selection (hand-checked)."""

import numpy as np
import pytest

from mmrlhf_ray.curation.categorize import CATEGORY_CODES
from mmrlhf_ray.curation.sampling import allocate_per_cluster, category_targets, select_rows

RATIO = {"long": 4, "short": 5, "mcq": 1}


def test_targets_follow_4_5_1_within_one_row():
    plenty = {"long": 10**6, "short": 10**6, "mcq": 10**6}
    assert category_targets(1000, RATIO, plenty) == {"long": 400, "short": 500, "mcq": 100}
    # 7 rows: exact shares 2.8, 3.5, 0.7 -> floors 2, 3, 0 and the 2 leftover rows go to
    # the largest fractions (long .8, mcq .7): 3, 3, 1.
    assert category_targets(7, RATIO, plenty) == {"long": 3, "short": 3, "mcq": 1}
    for size in range(1, 300):
        got = category_targets(size, RATIO, plenty)
        assert sum(got.values()) == size
        assert all(abs(got[c] - size * w / 10) < 1 for c, w in RATIO.items())


def test_targets_redistribute_a_short_category():
    # Only 5 MCQ rows: the other 95 of the MCQ's 100 are split 4:5 among long and short.
    got = category_targets(1000, RATIO, {"long": 10**6, "short": 10**6, "mcq": 5})
    assert got == {"long": 442, "short": 553, "mcq": 5}


def test_allocation_is_uniform_and_redistributes_small_clusters():
    rng = np.random.default_rng(0)
    # 10 rows over clusters of 1, 2, 50, 50: small ones give all; level L=3, 1 extra row.
    take = allocate_per_cluster(np.array([1, 2, 50, 50]), 10, rng)
    assert take[:2].tolist() == [1, 2] and sorted(take[2:].tolist()) == [3, 4]
    assert allocate_per_cluster(np.array([3, 0, 2]), 100, rng).tolist() == [3, 0, 2]
    counts = rng.integers(0, 40, size=100)
    take = allocate_per_cluster(counts, 1000, rng)
    assert take.sum() == 1000 and (take <= counts).all()
    open_ = take < counts  # clusters not exhausted differ by at most one row
    assert take[open_].max() - take[open_].min() <= 1
    assert (take[~open_] <= take[open_].max()).all()


def _arrays(n=20000, k=30, seed=1):
    rng = np.random.default_rng(seed)
    cats = rng.choice(5, n, p=[0.12, 0.78, 0.04, 0.03, 0.03]).astype(np.int8)
    clusters = (rng.zipf(1.5, n) % k).astype(np.int16)  # very unequal cluster sizes
    return cats, clusters, k


def test_select_rows_ratio_uniformity_and_seed():
    cats, clusters, k = _arrays()
    fixed = {"safety": 50, "video": 40}
    a = select_rows(cats, clusters, k, 1000, RATIO, fixed, seed=7)
    b = select_rows(cats, clusters, k, 1000, RATIO, fixed, seed=7)
    c = select_rows(cats, clusters, k, 1000, RATIO, fixed, seed=8)
    assert np.array_equal(a.indices, b.indices)  # deterministic by seed
    assert not np.array_equal(a.indices, c.indices)
    assert len(np.unique(a.indices)) == len(a.indices) == 1090
    got = np.bincount(cats[a.indices], minlength=5)
    want = {"long": 400, "short": 500, "mcq": 100, "safety": 50, "video": 40}
    assert {c: int(got[code]) for c, code in CATEGORY_CODES.items()} == want
    for name, code in CATEGORY_CODES.items():
        avail = np.bincount(clusters[cats == code], minlength=k)
        taken = np.bincount(clusters[a.indices][cats[a.indices] == code], minlength=k)
        assert np.array_equal(taken, a.per_cluster[name])
        open_ = taken < avail
        if open_.any():
            assert taken[open_].max() - taken[open_].min() <= 1, name
            assert (taken[~open_] <= taken[open_].max()).all()


def test_ineligible_rows_are_never_selected():
    cats, clusters, k = _arrays(n=2000)
    cats = cats.copy()
    cats[::2] = len(CATEGORY_CODES)  # e.g. duplicates of an earlier image
    sel = select_rows(cats, clusters, k, 10**6, RATIO, {"safety": 10**6, "video": 10**6}, 0)
    assert np.array_equal(sel.indices, np.arange(1, 2000, 2))


def test_gpu_profile_reproduces_table_1_counts():
    """configs/curate.gpu.yaml: the explicit counts give Table 1 (the 4:5:1 ratio alone
    would give 9,505 / 11,882 / 2,376); without counts the ratio is the rule."""
    from pathlib import Path

    from mmrlhf_ray.core.config import load_config
    from mmrlhf_ray.curation.config import CurateConfig
    from mmrlhf_ray.curation.sampling import planned_targets

    root = Path(__file__).resolve().parents[2]
    cfg = load_config(CurateConfig, root / "configs" / "curate.gpu.yaml")
    plenty = {c: 10**7 for c in ("long", "short", "mcq", "safety", "video")}
    fixed = {"safety": cfg.safety_count, "video": cfg.video_count}
    got = planned_targets(cfg.image_size, cfg.ratio.as_dict(), fixed, plenty, cfg.image_counts)
    assert got == {"long": 9575, "short": 12063, "mcq": 2125, "safety": 1999, "video": 4235}
    assert sum(got.values()) == 29997
    ratio_only = planned_targets(cfg.image_size, cfg.ratio.as_dict(), fixed, plenty)
    assert [ratio_only[c] for c in ("long", "short", "mcq")] == [9505, 11882, 2376]
    # counts on a pool that lacks rows: capped at what is there, like the ratio path
    few = {**plenty, "mcq": 100}
    assert planned_targets(0, {}, {}, few, {"long": 5, "short": 5, "mcq": 2125})["mcq"] == 100
    with pytest.raises(ValueError, match="image_counts: sum 3 differs from image_size 4"):
        CurateConfig(image_size=4, image_counts={"long": 1, "short": 1, "mcq": 1})
