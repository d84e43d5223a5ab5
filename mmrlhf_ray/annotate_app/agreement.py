"""Inter-rater agreement: Krippendorff's alpha (interval) and Kendall's tau-b.

Both are computed from what raters submitted; neither needs every rater on every item
(alpha handles missing values, tau compares two rankings of the same responses).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from itertools import combinations


def krippendorff_alpha_interval(units: Iterable[Sequence[float]]) -> float | None:
    """Krippendorff's alpha with the **interval** metric, delta(c, k) = (c - k)^2.

    ``units``: for each unit (here one response on one dimension), the values the raters
    gave it; raters who did not rate it are simply absent. Units with fewer than two
    values are not pairable and are dropped. With n the number of pairable values,
    m_u the number of values in unit u::

        D_o = 1/n * sum_u 1/(m_u - 1) * sum_{i != j in u} (v_i - v_j)^2
        D_e = 1/(n (n - 1)) * sum_{i != j over all pairable values} (v_i - v_j)^2
        alpha = 1 - D_o / D_e

    (ordered pairs i != j). Returns None when nothing is pairable or D_e = 0 (every
    value identical: agreement is then undefined, not perfect). Interval, not ordinal:
    the 1-5 rubric levels are read as equally spaced.
    """
    pairable = [list(map(float, u)) for u in units if len(u) >= 2]
    values = [v for u in pairable for v in u]
    n = len(values)
    if n < 2:
        return None
    observed = sum(_ordered_sq_diffs(u) / (len(u) - 1) for u in pairable) / n
    expected = _ordered_sq_diffs(values) / (n * (n - 1))
    if expected == 0:
        return None
    return 1.0 - observed / expected


def _ordered_sq_diffs(values: Sequence[float]) -> float:
    """sum over ordered pairs i != j of (v_i - v_j)^2 = 2 * m * sum (v - mean)^2."""
    mean = sum(values) / len(values)
    return 2.0 * len(values) * sum((v - mean) ** 2 for v in values)


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b of two rankings of the same items (ties allowed)::

        tau_b = (n_c - n_d) / sqrt((n_0 - n_1) * (n_0 - n_2))

    n_0 = n(n-1)/2 item pairs; n_c / n_d concordant / discordant pairs; n_1 / n_2 pairs
    tied in x / in y. Returns None when one ranking ties everything (denominator 0).
    """
    if len(x) != len(y):
        raise ValueError(f"rankings of different length: {len(x)} and {len(y)}")
    n_c = n_d = tied_x = tied_y = 0
    for i, j in combinations(range(len(x)), 2):
        dx, dy = x[i] - x[j], y[i] - y[j]
        tied_x += dx == 0
        tied_y += dy == 0
        if dx * dy > 0:
            n_c += 1
        elif dx * dy < 0:
            n_d += 1
    n_0 = len(x) * (len(x) - 1) // 2
    denominator = math.sqrt((n_0 - tied_x) * (n_0 - tied_y))
    if denominator == 0:
        return None
    return (n_c - n_d) / denominator


def mean_pairwise_tau(rankings: Sequence[Sequence[float]]) -> float | None:
    """Mean Kendall tau-b over every pair of raters' rankings of one query (None if no
    pair is defined)."""
    taus = [kendall_tau_b(a, b) for a, b in combinations(rankings, 2)]
    taus = [t for t in taus if t is not None]
    return sum(taus) / len(taus) if taus else None
