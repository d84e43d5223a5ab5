"""Krippendorff's alpha (interval) and Kendall's tau-b against values computed by hand."""

import math

import pytest

from mmrlhf_ray.annotate_app.agreement import (
    kendall_tau_b,
    krippendorff_alpha_interval,
    mean_pairwise_tau,
)


def test_alpha_two_raters_three_units():
    # values 1,2 | 3,3 | 5,4: D_o = (2 + 0 + 2) / 6 = 2/3; mean 3, sum of squares 10,
    # ordered-pair sum 2 * 6 * 10 = 120, D_e = 120 / 30 = 4; alpha = 1 - (2/3) / 4 = 5/6
    assert krippendorff_alpha_interval([(1, 2), (3, 3), (5, 4)]) == pytest.approx(5 / 6)


def test_alpha_missing_values_and_three_raters():
    # unit (1,1,2): ordered sum 4, / (m-1) = 2; unit (4,4): 0; unit (2,): not pairable.
    # n = 5, D_o = 2/5; values 1,1,2,4,4: mean 2.4, squares 9.2, D_e = 2*5*9.2 / 20 = 4.6
    # alpha = 1 - 0.4 / 4.6 = 21/23
    assert krippendorff_alpha_interval([(1, 1, 2), (4, 4), (2,)]) == pytest.approx(21 / 23)


def test_alpha_perfect_systematic_and_undefined():
    assert krippendorff_alpha_interval([(1, 1), (4, 4), (2, 2)]) == 1.0
    # (1,5),(5,1): D_o = 64/4 = 16, D_e = 128/12: alpha = 1 - 16 * 12 / 128 = -0.5
    assert krippendorff_alpha_interval([(1, 5), (5, 1)]) == pytest.approx(-0.5)
    assert krippendorff_alpha_interval([(3, 3), (3, 3)]) is None  # no variation at all
    assert krippendorff_alpha_interval([(3,), (4,)]) is None  # nothing pairable


def test_tau_b_with_ties():
    # x = 1,2,2,3 / y = 1,1,2,3: concordant 4, discordant 0, one tie in each:
    # tau_b = 4 / sqrt((6-1)(6-1)) = 0.8
    assert kendall_tau_b([1, 2, 2, 3], [1, 1, 2, 3]) == pytest.approx(0.8)
    # 1,2,3 vs 1,2,2: n_c = 2, one tie in y: 2 / sqrt(3 * 2)
    assert kendall_tau_b([1, 2, 3], [1, 2, 2]) == pytest.approx(2 / math.sqrt(6))
    assert kendall_tau_b([1, 2, 3], [3, 2, 1]) == -1.0
    assert kendall_tau_b([1, 1, 1], [1, 2, 3]) is None


def test_tau_b_rejects_different_lengths_and_averages_pairs():
    with pytest.raises(ValueError, match="different length"):
        kendall_tau_b([1, 2], [1, 2, 3])
    # three raters: pairs (a,b) = 1, (a,c) = -1, (b,c) = -1 -> mean -1/3
    assert mean_pairwise_tau([[1, 2], [1, 2], [2, 1]]) == pytest.approx(-1 / 3)
    assert mean_pairwise_tau([[1, 1], [1, 2]]) is None
