"""mmrlhf_ray.stats against cases whose answer is known analytically.

The reference values are computed here from their definitions with exact integer
arithmetic (math.comb, Fraction), never by the module under test.
"""

import math
from fractions import Fraction

import numpy as np
import pytest

from mmrlhf_ray import stats


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k), X ~ Binomial(n, p), term by term."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))


def _outcomes(k: int, n: int) -> np.ndarray:
    return np.r_[np.ones(k), np.zeros(n - k)]


def test_clopper_pearson_solves_its_defining_equations():
    # 55 of 200: low solves P(X >= 55 | low) = 0.025, high solves P(X <= 55 | high) = 0.025.
    e = stats.proportion_exact(55, 200)
    assert e.value == 0.275 and e.n == 200 and e.method == "clopper-pearson"
    assert 1 - _binom_cdf(54, 200, e.low) == pytest.approx(0.025, abs=1e-9)
    assert _binom_cdf(55, 200, e.high) == pytest.approx(0.025, abs=1e-9)
    assert stats.proportion_exact(0, 200).low == 0.0
    assert stats.proportion_exact(200, 200).high == 1.0
    # k = 0: high = 1 - (alpha/2)^(1/n) in closed form.
    assert stats.proportion_exact(0, 200).high == pytest.approx(1 - 0.025 ** (1 / 200), abs=1e-9)


@pytest.mark.parametrize("method", ["bca", "percentile"])
def test_bootstrap_of_a_binomial_proportion_is_close_to_the_exact_interval(method):
    # n = 200 items, 55 correct. Bootstrap bounds sit on the 1/200 grid and Clopper-Pearson
    # is conservative by about half a step, so they agree to ~2 grid steps.
    exact = stats.proportion_exact(55, 200)
    boot = stats.estimate(_outcomes(55, 200), method=method)
    assert boot.value == 0.275 and boot.n == 200 and boot.n_clusters == 200
    assert boot.low == pytest.approx(exact.low, abs=0.011)
    assert boot.high == pytest.approx(exact.high, abs=0.011)
    # and about +-1.96 standard errors wide
    se = math.sqrt(0.275 * 0.725 / 200)
    assert boot.high - boot.low == pytest.approx(2 * 1.96 * se, rel=0.12)


def test_bca_interval_covers_the_true_proportion_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    hits = 0
    trials = 200
    for t in range(trials):
        x = (rng.random(200) < 0.3).astype(float)
        e = stats.estimate(x, resamples=1000, seed=t)
        hits += e.low <= 0.3 <= e.high
    # binomial(200, 0.95) has sd 0.015: 0.90..0.99 is more than 3 sd either side
    assert 0.90 <= hits / trials <= 0.99


def test_same_seed_same_interval_and_resamples_configurable():
    x = _outcomes(55, 200)
    assert stats.estimate(x, seed=3) == stats.estimate(x, seed=3)
    with pytest.raises(ValueError, match="resamples"):
        stats.estimate(x, resamples=10)
    with pytest.raises(ValueError, match=r"values\[2\]"):
        stats.estimate([1.0, 0.0, float("nan")])


def test_mcnemar_exact_hand_computed():
    # b = 3 (right -> wrong), c = 12 (wrong -> right): 15 discordant pairs,
    # P(X <= 3 | Binomial(15, 1/2)) = (1 + 15 + 105 + 455) / 2^15 = 576 / 32768; p = twice that.
    assert stats.mcnemar_exact(3, 12) == pytest.approx(1152 / 32768, rel=1e-12)
    assert stats.mcnemar_exact(12, 3) == pytest.approx(1152 / 32768, rel=1e-12)
    assert stats.mcnemar_exact(0, 0) == 1.0
    assert stats.mcnemar_exact(5, 5) == 1.0  # capped at 1


def test_paired_binary_case_uses_exact_mcnemar():
    # 200 items: 45 right both times, 10 right -> wrong, 12 wrong -> right, 133 wrong both:
    # 0.275 -> 0.285. McNemar p = 2 * P(X <= 10), X ~ Binomial(22, 1/2).
    before = np.r_[np.ones(45), np.ones(10), np.zeros(12), np.zeros(133)]
    after = np.r_[np.ones(45), np.zeros(10), np.ones(12), np.zeros(133)]
    exact_p = float(2 * Fraction(sum(math.comb(22, i) for i in range(11)), 2**22))
    d = stats.paired(before, after)
    assert (d.before, d.after, d.n, d.test) == (0.275, 0.285, 200, "mcnemar-exact")
    assert d.diff == pytest.approx(0.010, abs=1e-12)
    assert d.p == pytest.approx(exact_p, rel=1e-9)
    # the paired interval: sd of the differences is sqrt(22/200 - 0.01^2); +-1.96 se
    se = math.sqrt((22 / 200 - 0.01**2) / 200)
    assert d.holds_zero and d.high - d.low == pytest.approx(2 * 1.96 * se, rel=0.15)
    # the bootstrap test agrees with McNemar about "no evidence" on this case
    boot = stats.paired(before, after, test="bootstrap")
    assert boot.test == "bootstrap" and boot.p > 0.5
    with pytest.raises(ValueError, match="same items"):
        stats.paired(before, after[:-1])


def test_paired_detects_a_real_difference():
    # 30 wrong -> right, 2 right -> wrong, 168 unchanged: clearly better.
    before = np.r_[np.zeros(30), np.ones(2), np.zeros(168)]
    after = np.r_[np.ones(30), np.zeros(2), np.zeros(168)]
    d = stats.paired(before, after)
    assert d.diff == pytest.approx(0.14) and not d.holds_zero and d.low > 0
    assert d.p == pytest.approx(2 * _binom_cdf(2, 32, 0.5), rel=1e-9)
    assert "improved" in stats.describe("accuracy", d)
    assert "worsened" in stats.describe("unsafe rate", d, higher_is_better=False)


def _correlated(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """40 queries x 5 responses, each query's responses all right or all wrong."""
    per_query = rng.integers(0, 2, 40).astype(float)
    return np.repeat(per_query, 5), np.repeat(np.arange(40), 5)


def test_clustering_widens_the_interval_on_correlated_items():
    values, cluster = _correlated(np.random.default_rng(1))
    naive = stats.estimate(values)
    clustered = stats.estimate(values, cluster=cluster)
    assert clustered.value == naive.value
    assert (clustered.n, clustered.n_clusters, clustered.variance) == (200, 40, "clusters")
    # perfectly correlated clusters of 5: the effective n is 40, the width ~ sqrt(5) times
    ratio = (clustered.high - clustered.low) / (naive.high - naive.low)
    assert 1.8 < ratio < 2.8
    # independent items grouped into clusters: no widening to speak of
    iid = (np.random.default_rng(2).random(200) < 0.5).astype(float)
    a, b = stats.estimate(iid), stats.estimate(iid, cluster=cluster)
    assert 0.75 < (b.high - b.low) / (a.high - a.low) < 1.3


def test_clustered_paired_difference_is_wider_and_uses_the_bootstrap_test():
    rng = np.random.default_rng(3)
    before, cluster = _correlated(rng)
    after = before.copy()
    flip = np.isin(cluster, [0, 1, 2, 3, 4, 5])  # six queries change wholesale
    after[flip] = 1 - after[flip]
    naive = stats.paired(before, after)
    clustered = stats.paired(before, after, cluster=cluster)
    assert clustered.test == "bootstrap" and clustered.n_clusters == 40
    assert clustered.diff == naive.diff
    assert (clustered.high - clustered.low) > 1.8 * (naive.high - naive.low)


def test_holm_on_a_known_vector():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert stats.holm([]) == []
    d = stats.paired(np.zeros(10), np.r_[np.ones(2), np.zeros(8)])
    adjusted = stats.with_holm({"a": d, "b": d, "c": d})
    assert adjusted["a"].p_holm == pytest.approx(min(1.0, 3 * d.p))


def test_t_quantiles_match_the_tables():
    # two-sided 95% Student t critical values (any statistics table)
    for df, t in [(1, 12.7062), (2, 4.3027), (4, 2.7764), (10, 2.2281), (30, 2.0423)]:
        assert stats.t_quantile(0.95, df) == pytest.approx(t, abs=1e-4)


def test_over_seeds_is_a_t_interval():
    e = stats.over_seeds([0.26, 0.27, 0.28])
    assert e.value == pytest.approx(0.27) and e.variance == "seeds" and e.n == 3
    # sd 0.01, se 0.01 / sqrt(3), t(0.975, 2) = 4.3027
    assert e.high - e.value == pytest.approx(4.3027 * 0.01 / math.sqrt(3), rel=1e-4)
    d = stats.paired_over_seeds([0.27, 0.28, 0.26], [0.29, 0.30, 0.27])
    # differences 0.02, 0.02, 0.01: mean 1/60, sd 0.005774, t = 5.0 on 2 df
    # P(|T| > 5 | df 2) = 1 - 5 / sqrt(27) in closed form
    assert d.p == pytest.approx(1 - 5 / math.sqrt(27), rel=1e-6)
    assert d.variance == "seeds" and d.test == "paired-t"
    with pytest.raises(ValueError, match="2 or more"):
        stats.over_seeds([0.3])


def test_format_and_wording_never_call_a_zero_holding_difference_a_gain():
    d = stats.PairedDiff(0.275, 0.285, 0.010, -0.05, 0.07, 0.75, 200)
    assert stats.fmt(d) == "0.275 \u2192 0.285, +0.010 [\u22120.050, +0.070], p = 0.75, n = 200"
    words = stats.describe("overall accuracy", d)
    assert "no difference" in words
    for bad in ("gain", "improve", "better", "worse"):
        assert bad not in words.lower()
    e = stats.Estimate(0.744, 0.6, 0.87, 90, 30, "bca", variance="clusters")
    assert stats.fmt(e) == "0.744 [0.600, 0.870], n = 90 in 30 clusters"
    assert stats.PairedDiff.from_dict(d.to_dict()) == d
    assert stats.Estimate.from_dict(e.to_dict()) == e
    assert stats.fmt(stats.with_holm({"x": d})["x"]).endswith("(Holm p = 0.75), n = 200")


def test_ratio_statistic_with_weights():
    # CHAIR_i-shaped: hallucinated / mentioned objects summed over answers; an answer that
    # mentions nothing has weight 0 and is not counted.
    hallucinated = np.array([1, 0, 2, 0, 1, 0] * 10, dtype=float)
    mentioned = np.array([2, 1, 3, 0, 2, 2] * 10, dtype=float)
    e = stats.estimate(hallucinated, weights=mentioned)
    assert e.value == pytest.approx(40 / 100) and e.n == 50
    assert e.low < 0.4 < e.high
    # each answer resampled whole: the same as clustering by answer
    same = stats.estimate(hallucinated, cluster=np.arange(60), weights=mentioned)
    assert (same.low, same.high) == pytest.approx((e.low, e.high), abs=0.02)
    d = stats.paired(hallucinated, np.zeros(60), weights_before=mentioned, weights_after=mentioned)
    assert d.diff == pytest.approx(-0.4) and d.test == "bootstrap" and d.high < 0
    with pytest.raises(ValueError, match="all zero"):
        stats.estimate([1.0], weights=[0.0])


def test_all_equal_outcomes_get_the_exact_interval_not_a_zero_width_one():
    # 30 of 30 right: resampling cannot move, the exact interval is [0.025^(1/30), 1]
    e = stats.estimate(np.ones(30))
    assert e.method == "clopper-pearson" and e.high == 1.0
    assert e.low == pytest.approx(0.025 ** (1 / 30), abs=1e-9)
    # clustered: the independent units are the 10 clusters
    c = stats.estimate(np.zeros(30), cluster=np.repeat(np.arange(10), 3))
    assert (c.n, c.n_clusters, c.low) == (30, 10, 0.0)
    assert c.high == pytest.approx(1 - 0.025 ** (1 / 10), abs=1e-9)
    one = stats.estimate([0.0, 1.0, 1.0], cluster=["q", "q", "q"])
    assert one.method == "single-cluster" and "no interval" in stats.fmt(one)


def test_few_discordant_pairs_never_look_significant():
    # 3 items fixed, none broken, 200 items: exact McNemar p = 2 / 2^3 = 0.25. The
    # bootstrap alone would exclude 0 (0 of the 3 drawn has probability ~e^-3 < 0.025);
    # the reported interval must hold 0, as the exact test says.
    before = np.zeros(200)
    after = np.r_[np.ones(3), np.zeros(197)]
    d = stats.paired(before, after)
    assert d.p == pytest.approx(0.25) and d.holds_zero
    assert "no difference" in stats.describe("accuracy", d)
    # the exact interval: 3/200 * (2 * [0.025^(1/3), 1] - 1)
    low, high = stats.mcnemar_interval(0, 3, 200)
    assert low == pytest.approx(3 / 200 * (2 * 0.025 ** (1 / 3) - 1), abs=1e-9)
    assert high == pytest.approx(3 / 200)
