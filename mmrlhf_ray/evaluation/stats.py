"""Uncertainty for every number the project reports: intervals, paired tests, Holm.

Pure numpy + the standard library (no scipy): every function here is deterministic
for a given ``seed``.

- ``estimate(values, cluster=...)``: the mean of per-item outcomes with a bootstrap
  interval (BCa or percentile). With ``cluster`` the bootstrap resamples whole clusters
  (a query's K responses, a RewardBench query's pairs, an image's prompts), so items
  that share a query are not counted as independent evidence.
- ``proportion_exact(k, n)``: the exact (Clopper-Pearson) interval of a proportion.
- ``paired(before, after, cluster=...)``: two systems on the same items: the mean of the
  per-item differences with a paired (clustered) bootstrap interval, and a p-value:
  exact McNemar for binary unclustered outcomes, else the bootstrap test of
  "mean difference = 0" (the bootstrap distribution shifted to the null).
- ``holm(pvalues)`` / ``with_holm(diffs)``: Holm's step-down correction across the
  comparisons of one report.
- ``over_seeds(values)`` / ``paired_over_seeds(before, after)``: seeds as a second source
  of variance (Student t over seeds; each seed is one observation).
- ``fmt(result)``: the one rendering, e.g. ``0.275 → 0.285, +0.010 [−0.050, +0.070],
  p = 0.75, n = 200``; ``describe(name, diff)``: words that never call a difference whose
  interval holds 0 a gain.

Every result says which variance its interval covers (``variance``): ``items`` (resampled
items), ``clusters`` (resampled clusters of items), ``seeds`` (repeat runs, items fixed).

References: Efron & Tibshirani, *An Introduction to the Bootstrap* (1993), ch. 14 (BCa)
and 16 (bootstrap tests); Field & Welsh (2007) on the cluster bootstrap; Holm (1979).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from statistics import NormalDist

import numpy as np

DEFAULT_RESAMPLES = 2000  # bootstrap resamples; ~0.005 Monte-Carlo error on a 95% bound
DEFAULT_SEED = 0
CONFIDENCE = 0.95
METHODS = ("bca", "percentile")
MIN_CLUSTERS = 5  # fewer independent units give too few distinct resamples for an interval
FEW = "too-few-clusters"  # the method of a result that has no interval for that reason
_CHUNK_CELLS = 4_000_000  # resample rows x clusters drawn at once (bounds memory)
_NORMAL = NormalDist()


@dataclass(frozen=True)
class Estimate:
    """One metric: its value, a ``confidence`` interval [low, high], and what it rests on."""

    value: float
    low: float
    high: float
    n: int  # items
    n_clusters: int  # independent units resampled (== n when unclustered)
    method: str  # "bca" | "percentile" | "clopper-pearson" | "t"
    confidence: float = CONFIDENCE
    variance: str = "items"  # which variance the interval covers: items | clusters | seeds

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> Estimate:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass(frozen=True)
class PairedDiff:
    """Two systems on the same items: ``diff = after - before`` with interval and p."""

    before: float
    after: float
    diff: float
    low: float
    high: float
    p: float
    n: int
    n_clusters: int = 0  # 0: not recorded; == n when unclustered
    test: str = "bootstrap"  # "mcnemar-exact" | "bootstrap" | "paired-t"
    method: str = "bca"  # how [low, high] was made
    confidence: float = CONFIDENCE
    variance: str = "items"
    p_holm: float | None = None  # Holm-adjusted across the comparisons of one report

    @property
    def holds_zero(self) -> bool:
        """True when the interval contains 0: no difference may be claimed."""
        return self.low <= 0.0 <= self.high

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> PairedDiff:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


# ----------------------------------------------------------------------------- inputs


def _as_values(values: Sequence[float] | np.ndarray, name: str = "values") -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError(f"{name}: no items (an interval needs at least one)")
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise ValueError(f"{name}[{int(bad[0])}]: not a finite number ({x[bad[0]]})")
    return x


def _cluster_totals(columns: list[np.ndarray], cluster: Sequence | np.ndarray | None) -> np.ndarray:
    """(G, m) per-cluster sums of each column (each item its own cluster when None)."""
    items = np.stack(columns, axis=1)
    if cluster is None:
        return items
    c = np.asarray(cluster).reshape(-1)
    if c.size != items.shape[0]:
        raise ValueError(f"cluster: {c.size} ids for {items.shape[0]} items (one id per item)")
    _, inv = np.unique(c, return_inverse=True)
    return np.stack([np.bincount(inv, weights=col) for col in items.T], axis=1)


def _weights(
    weights: Sequence[float] | np.ndarray | None, like: np.ndarray, name: str
) -> np.ndarray:
    if weights is None:
        return np.ones_like(like)
    w = _as_values(weights, name)
    if w.size != like.size or np.any(w < 0):
        raise ValueError(f"{name}: need {like.size} non-negative weights, got {w.size}")
    return w


def _check(method: str, resamples: int, confidence: float) -> None:
    if method not in METHODS:
        raise ValueError(f"method: {method!r} is not one of {METHODS}")
    if resamples < 100:
        raise ValueError(f"resamples: {resamples} is too few for an interval (at least 100)")
    if not 0.5 < confidence < 1.0:
        raise ValueError(f"confidence: {confidence} is not in (0.5, 1)")


# -------------------------------------------------------------------------- bootstrap


def _ratio(t: np.ndarray) -> np.ndarray:
    """sum(values) / sum(weights) per row of totals (NaN where the weights sum to 0)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return t[..., 0] / t[..., 1]


def _ratio_diff(t: np.ndarray) -> np.ndarray:
    """after ratio - before ratio, totals laid out [after, w_after, before, w_before]."""
    return _ratio(t[..., 0:2]) - _ratio(t[..., 2:4])


def _resample(s: np.ndarray, statistic, resamples: int, seed: int) -> np.ndarray:
    """``statistic`` of ``resamples`` cluster resamples (with replacement, G of G)."""
    g = s.shape[0]
    rng = np.random.default_rng(seed)
    out = np.empty(resamples)
    step = max(1, _CHUNK_CELLS // (g * s.shape[1]))
    for start in range(0, resamples, step):
        rows = min(step, resamples - start)
        idx = rng.integers(0, g, size=(rows, g))
        out[start : start + rows] = statistic(s[idx].sum(axis=1))
    return out[np.isfinite(out)]


def _jackknife_acceleration(s: np.ndarray, statistic) -> float:
    """BCa's acceleration ``a`` from leave-one-cluster-out statistics (0 when undefined)."""
    if s.shape[0] < 3:
        return 0.0
    loo = statistic(s.sum(axis=0) - s)
    loo = loo[np.isfinite(loo)]
    dev = loo.mean() - loo if loo.size else loo
    denom = 6.0 * float(np.sum(dev**2)) ** 1.5
    return float(np.sum(dev**3)) / denom if denom > 0 else 0.0


def _bootstrap_interval(
    s: np.ndarray, statistic, theta: float, method: str, resamples: int, seed: int, conf: float
) -> tuple[np.ndarray, float, float]:
    """(bootstrap distribution, low, high); the point estimate always lies inside."""
    boot = _resample(s, statistic, resamples, seed)
    if boot.size < resamples // 2:
        raise ValueError("bootstrap: most resamples have zero total weight (too few items)")
    accel = _jackknife_acceleration(s, statistic) if method == "bca" else 0.0
    low, high = _interval(boot, theta, accel, method, conf)
    return boot, min(low, theta), max(high, theta)


def _interval(
    boot: np.ndarray, theta: float, accel: float, method: str, confidence: float
) -> tuple[float, float]:
    """Percentile or BCa bounds from a bootstrap distribution ``boot`` of ``theta``."""
    if np.all(boot == boot[0]):
        return float(boot[0]), float(boot[0])  # degenerate (e.g. all items equal)
    alpha = (1.0 - confidence) / 2.0
    probs = np.array([alpha, 1.0 - alpha])
    if method == "bca":
        b = boot.size
        below = (np.sum(boot < theta) + 0.5 * np.sum(boot == theta)) / b
        z0 = _NORMAL.inv_cdf(min(max(below, 0.5 / b), 1.0 - 0.5 / b))
        z = np.array([_NORMAL.inv_cdf(p) for p in probs])
        adj = z0 + (z0 + z) / (1.0 - accel * (z0 + z))
        probs = np.array([_NORMAL.cdf(float(v)) for v in adj])
    low, high = np.quantile(boot, probs)
    return float(low), float(high)


def estimate(
    values: Sequence[float] | np.ndarray,
    cluster: Sequence | np.ndarray | None = None,
    *,
    weights: Sequence[float] | np.ndarray | None = None,
    method: str = "bca",
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence: float = CONFIDENCE,
) -> Estimate:
    """The mean of per-item ``values`` (0/1 outcomes or scores) with a bootstrap interval.

    With ``weights`` the statistic is the ratio sum(values) / sum(weights) (e.g. CHAIR_i:
    hallucinated / mentioned objects per answer); items of weight 0 carry no information
    and are not counted in ``n``. With ``cluster`` (one id per item) whole clusters are
    resampled, so correlated items of one cluster widen the interval as they should.
    """
    _check(method, resamples, confidence)
    x = _as_values(values)
    w = _weights(weights, x, "weights")
    keep = w > 0
    if not keep.any():
        raise ValueError("weights: all zero (the ratio has no denominator)")
    x, w = x[keep], w[keep]
    cluster = None if cluster is None else np.asarray(cluster).reshape(-1)[keep]
    s = _cluster_totals([x, w], cluster)
    theta = float(x.sum() / w.sum())
    variance = "items" if cluster is None else "clusters"
    g = int(s.shape[0])
    binary = _is_binary(x) and weights is None
    if binary and (np.all(x == x[0]) or (cluster is None and g < MIN_CLUSTERS)):
        # every item 0 (or 1), or a handful of independent 0/1 items: the bootstrap has
        # (almost) nothing to resample; the exact interval over the independent units
        # (clusters) still says how far the truth may lie.
        exact = proportion_exact(int(round(theta * g)), g, confidence)
        return replace(exact, value=theta, n=int(x.size), variance=variance)
    if g < MIN_CLUSTERS:
        return Estimate(theta, theta, theta, int(x.size), g, FEW, confidence, variance)
    _, low, high = _bootstrap_interval(s, _ratio, theta, method, resamples, seed, confidence)
    return Estimate(theta, low, high, int(x.size), g, method, confidence, variance)


# ---------------------------------------------------------------------- exact binomial


def _log_binom_pmf(k: np.ndarray, n: int, p: float) -> np.ndarray:
    lc = math.lgamma(n + 1) - np.array([math.lgamma(i + 1) + math.lgamma(n - i + 1) for i in k])
    with np.errstate(divide="ignore"):
        return lc + k * np.log(p) + (n - k) * np.log1p(-p)


def _binom_tail(n: int, p: float, k_from: int, k_to: int) -> float:
    """P(k_from <= X <= k_to) for X ~ Binomial(n, p), summed in log space."""
    if k_from > k_to:
        return 0.0
    if p <= 0.0:
        return 1.0 if k_from == 0 else 0.0
    if p >= 1.0:
        return 1.0 if k_to == n else 0.0
    logs = _log_binom_pmf(np.arange(k_from, k_to + 1), n, p)
    top = logs.max()
    return float(min(1.0, math.exp(top) * np.exp(logs - top).sum()))


def _bisect(f, lo: float, hi: float, iters: int = 80) -> float:
    """Root of an increasing ``f`` on [lo, hi] (f(lo) <= 0 <= f(hi))."""
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if f(mid) < 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def proportion_exact(successes: int, n: int, confidence: float = CONFIDENCE) -> Estimate:
    """The Clopper-Pearson interval of ``successes / n``: the ps no equal-tailed test rejects.

    low solves P(X >= k | p) = alpha/2 and high solves P(X <= k | p) = alpha/2.
    """
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"proportion_exact: successes={successes}, n={n} (need 0 <= k <= n > 0)")
    a = (1.0 - confidence) / 2.0
    k = int(successes)
    low = 0.0 if k == 0 else _bisect(lambda p: _binom_tail(n, p, k, n) - a, 0.0, 1.0)
    high = 1.0 if k == n else _bisect(lambda p: a - _binom_tail(n, p, 0, k), 0.0, 1.0)
    return Estimate(k / n, low, high, n, n, "clopper-pearson", confidence, "items")


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p: discordant pairs b (1->0) and c (0->1), Binomial(b+c, 1/2).

    p = min(1, 2 * P(X <= min(b, c))), and 1 when there is no discordant pair.
    """
    if b < 0 or c < 0:
        raise ValueError(f"mcnemar_exact: negative counts b={b}, c={c}")
    m = b + c
    if m == 0:
        return 1.0
    return min(1.0, 2.0 * _binom_tail(m, 0.5, 0, min(b, c)))


def mcnemar_interval(b: int, c: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Exact interval of the paired difference (c - b) / n given the b + c discordant pairs.

    With m = b + c and [pL, pU] the Clopper-Pearson interval of c / m, the difference is
    m / n * (2 p - 1): it holds 0 exactly when the equal-tailed exact McNemar test does not
    reject, so a difference reported with it never contradicts its p-value.
    """
    m = b + c
    if m == 0:
        return 0.0, 0.0
    share = proportion_exact(c, m, confidence)
    return m / n * (2 * share.low - 1), m / n * (2 * share.high - 1)


# ------------------------------------------------------------------------------ paired


def _is_binary(x: np.ndarray) -> bool:
    return bool(np.all((x == 0.0) | (x == 1.0)))


def bootstrap_p(boot: np.ndarray) -> float:
    """The p that inverts a bootstrap interval of a difference: twice the share of
    resampled differences on the far side of 0 (add-one, at most 1)."""
    side = min(np.sum(boot <= 0.0), np.sum(boot >= 0.0))
    return float(min(1.0, (2 * side + 1) / (boot.size + 1)))


def _paired_test(
    test: str,
    b: np.ndarray,
    a: np.ndarray,
    boot: np.ndarray,
    bounds: tuple[float, float],
    confidence: float,
) -> tuple[float, str, tuple[float, float]]:
    """(p, test name, bounds): exact McNemar (bounds widened to its exact interval) or the
    p that inverts the bootstrap interval (twice the share on the far side of 0)."""
    low, high = bounds
    if test == "mcnemar":
        worse, better = int(np.sum((b == 1) & (a == 0))), int(np.sum((b == 0) & (a == 1)))
        ex_low, ex_high = mcnemar_interval(worse, better, int(a.size), confidence)
        bounds = (min(low, ex_low), max(high, ex_high))
        return mcnemar_exact(worse, better), "mcnemar-exact", bounds
    if test == "bootstrap":
        return bootstrap_p(boot), "bootstrap", bounds
    raise ValueError(f"test: {test!r} is not one of ('auto', 'mcnemar', 'bootstrap')")


def paired(
    before: Sequence[float] | np.ndarray,
    after: Sequence[float] | np.ndarray,
    cluster: Sequence | np.ndarray | None = None,
    *,
    weights_before: Sequence[float] | np.ndarray | None = None,
    weights_after: Sequence[float] | np.ndarray | None = None,
    test: str = "auto",
    method: str = "bca",
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence: float = CONFIDENCE,
) -> PairedDiff:
    """Two systems scored on the same items (item i of ``before`` is item i of ``after``).

    The interval is a paired bootstrap of the difference of the two means (of the two
    ratios with weights), the same resampled items (clusters) for both. ``test``:
    "mcnemar" (0/1 outcomes, independent items: exact McNemar p, and the interval widened
    to hold ``mcnemar_interval``, so that few discordant pairs cannot look significant),
    "bootstrap" (p inverts the bootstrap interval: twice the share of resampled
    differences on the far side of 0), or "auto" (McNemar when binary, unweighted and
    unclustered, else the bootstrap).
    """
    _check(method, resamples, confidence)
    b, a = _as_values(before, "before"), _as_values(after, "after")
    if a.size != b.size:
        raise ValueError(f"paired: {b.size} items before, {a.size} after (the same items)")
    wb, wa = (
        _weights(weights_before, b, "weights_before"),
        _weights(weights_after, a, "weights_after"),
    )
    if wa.sum() == 0 or wb.sum() == 0:
        raise ValueError("paired: the weights of one side sum to 0 (no denominator)")
    s = _cluster_totals([a, wa, b, wb], cluster)
    before_v, after_v = float(b.sum() / wb.sum()), float(a.sum() / wa.sum())
    diff = after_v - before_v
    boot, low, high = _bootstrap_interval(s, _ratio_diff, diff, method, resamples, seed, confidence)
    binary = _is_binary(a) and _is_binary(b) and weights_before is None and weights_after is None
    if test == "auto":
        test = "mcnemar" if binary and cluster is None else "bootstrap"
    if test == "mcnemar" and not binary:
        raise ValueError("paired: test='mcnemar' needs unweighted 0/1 outcomes")
    if test != "mcnemar" and s.shape[0] < MIN_CLUSTERS:  # nothing may be claimed
        return PairedDiff(
            before_v, after_v, diff, min(diff, 0.0), max(diff, 0.0), 1.0, int(a.size),
            int(s.shape[0]), "none", FEW, confidence, "items" if cluster is None else "clusters",
        )  # fmt: skip
    p, test, (low, high) = _paired_test(test, b, a, boot, (low, high), confidence)
    return PairedDiff(
        before=before_v,
        after=after_v,
        diff=diff,
        low=low,
        high=high,
        p=p,
        n=int(a.size),
        n_clusters=int(s.shape[0]),
        test=test,
        method=method,
        confidence=confidence,
        variance="items" if cluster is None else "clusters",
    )


# -------------------------------------------------------------------------------- Holm


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order.

    Sorted ascending p_(1) <= ... <= p_(m): adj_(i) = max_{j<=i} min(1, (m - j + 1) p_(j)).
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if p.size and (np.any(~np.isfinite(p)) or np.any(p < 0) or np.any(p > 1)):
        raise ValueError(f"holm: p-values must lie in [0, 1], got {p.tolist()}")
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted.tolist()


def with_holm(diffs: Mapping[str, PairedDiff]) -> dict[str, PairedDiff]:
    """The same comparisons with ``p_holm`` set, Holm-adjusted across all of them."""
    names = list(diffs)
    adjusted = holm([diffs[k].p for k in names])
    return {k: replace(diffs[k], p_holm=q) for k, q in zip(names, adjusted, strict=True)}


# ------------------------------------------------------------------------------- seeds


def _t_abs_cdf(t: float, df: int) -> float:
    """P(|T| <= t) for Student's T with integer ``df`` (Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(abs(t) / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    if df % 2 == 1:
        term, total = c, c if df > 1 else 0.0
        for k in range(3, df - 1, 2):  # cos + (2/3)cos^3 + (2*4)/(3*5)cos^5 + ...
            term *= c * c * (k - 1) / k
            total += term
        return min(1.0, 2.0 / math.pi * (theta + s * total))
    term, total = 1.0, 1.0
    for k in range(2, df - 1, 2):  # 1 + (1/2)cos^2 + (1*3)/(2*4)cos^4 + ...
        term *= c * c * (k - 1) / k
        total += term
    return min(1.0, s * total)


def t_quantile(confidence: float, df: int) -> float:
    """The two-sided critical value t with P(|T| <= t) = ``confidence``, integer ``df``."""
    if df < 1:
        raise ValueError(f"t_quantile: df={df} (need at least 2 observations)")
    hi = 1.0
    while _t_abs_cdf(hi, df) < confidence:
        hi *= 2.0
    return _bisect(lambda t: _t_abs_cdf(t, df) - confidence, 0.0, hi)


def over_seeds(values: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """Mean over repeat runs (one value per seed) with a Student-t interval.

    Covers the variance between seeds only (training/sampling randomness); the items are
    the same in every run, so item sampling is not in it (see each run's own interval).
    """
    x = _as_values(values, "seeds")
    if x.size < 2:
        raise ValueError(f"over_seeds: {x.size} seed(s); an interval over seeds needs 2 or more")
    mean = float(x.mean())
    half = t_quantile(confidence, x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return Estimate(mean, mean - half, mean + half, x.size, x.size, "t", confidence, "seeds")


def paired_over_seeds(
    before: Sequence[float], after: Sequence[float], confidence: float = CONFIDENCE
) -> PairedDiff:
    """Two systems run with the same seeds: paired t over the per-seed differences."""
    b, a = _as_values(before, "before"), _as_values(after, "after")
    if a.size != b.size:
        raise ValueError(f"paired_over_seeds: {b.size} seeds before, {a.size} after")
    est = over_seeds(a - b, confidence)
    sd = float(np.std(a - b, ddof=1))
    if sd == 0.0:
        p = 1.0 if est.value == 0.0 else 0.0
    else:
        p = 1.0 - _t_abs_cdf(est.value / (sd / math.sqrt(a.size)), a.size - 1)
    return PairedDiff(
        before=float(b.mean()),
        after=float(a.mean()),
        diff=est.value,
        low=est.low,
        high=est.high,
        p=max(0.0, p),
        n=int(a.size),
        n_clusters=int(a.size),
        test="paired-t",
        method="t",
        confidence=confidence,
        variance="seeds",
    )


# -------------------------------------------------------------------------- rendering


def _signed(x: float, digits: int) -> str:
    s = f"{x:+.{digits}f}"
    if float(s) == 0.0:
        s = f"{0.0:+.{digits}f}"  # never "-0.000"
    return s.replace("-", "\u2212")


def _p(p: float) -> str:
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.2f}" if p >= 0.095 else f"p = {p:.3f}"


def fmt(result: Estimate | PairedDiff, digits: int = 3) -> str:
    """The one rendering of a result, used by every report.

    ``Estimate``: ``0.275 [0.215, 0.340], n = 200`` (``n = 60 in 30 clusters`` when
    clustered, ``over 3 seeds`` for seed intervals). ``PairedDiff``: ``0.275 → 0.285,
    +0.010 [−0.050, +0.070], p = 0.75, n = 200`` (``, Holm p = ...`` when adjusted).
    """
    if isinstance(result, Estimate):
        r = result
        iv = f"{r.value:.{digits}f} [{r.low:.{digits}f}, {r.high:.{digits}f}]"
        if r.method == FEW:
            iv = f"{r.value:.{digits}f} (no interval: {r.n_clusters} clusters)"
        return f"{iv}, {_n(r.n, r.n_clusters, r.variance)}".replace("-", "\u2212")
    d = result
    if d.method == FEW:
        return (
            f"{d.before:.{digits}f} \u2192 {d.after:.{digits}f}, {_signed(d.diff, digits)} "
            f"(no interval or test: {d.n_clusters} clusters), {_n(d.n, d.n_clusters, d.variance)}"
        )
    text = (
        f"{d.before:.{digits}f} \u2192 {d.after:.{digits}f}, {_signed(d.diff, digits)} "
        f"[{_signed(d.low, digits)}, {_signed(d.high, digits)}], {_p(d.p)}"
    )
    if d.p_holm is not None:
        text += f" (Holm {_p(d.p_holm)})"
    return f"{text}, {_n(d.n, d.n_clusters, d.variance)}"


def _n(n: int, n_clusters: int, variance: str) -> str:
    if variance == "seeds":
        return f"over {n} seeds"
    if variance == "clusters" and n_clusters and n_clusters != n:
        return f"n = {n} in {n_clusters} clusters"
    return f"n = {n}"


def verdict(d: PairedDiff, higher_is_better: bool | None = True) -> str:
    """The words for a comparison: never a gain when the interval holds 0.

    "no difference detected" when the interval holds 0; otherwise "improved" /
    "worsened", or "rose" / "fell" when ``higher_is_better`` is None (no better direction).
    """
    if d.holds_zero:
        return "no difference detected"
    if higher_is_better is None:
        return "rose" if d.diff > 0 else "fell"
    return "improved" if (d.diff > 0) == higher_is_better else "worsened"


def describe(name: str, d: PairedDiff, higher_is_better: bool | None = True) -> str:
    """One sentence: ``accuracy: no difference detected (0.275 → 0.285, ...)``."""
    return f"{name}: {verdict(d, higher_is_better)} ({fmt(d)})"
