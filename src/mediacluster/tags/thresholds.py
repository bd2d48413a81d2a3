"""Confidence thresholds that keep suggestions at a requested precision, with a margin.

For a set of validation predictions sorted by confidence, suggesting only those at or above a
threshold ``t`` gives ``n(t)`` suggestions of which ``k(t)`` are right. The observed precision
``k/n`` is noisy for small ``n``, so we require the *one-sided Clopper-Pearson lower bound* of the
precision (exact binomial, level ``1 - alpha``) to reach the target, and take the lowest such
threshold (the largest coverage). A threshold with too few validation suggestions can never pass:
with every suggestion right the bound is ``alpha ** (1 / n)``, so precision 0.9 at alpha 0.05
needs at least 29 right answers, 0.95 needs 59 (``min_support``).

The bound is checked at every cut point, so the guarantee is a little weaker than a single
test at level alpha; the nested sets are strongly correlated, and the tests measure the
precision on held-out data against the target.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import beta

from ..errors import ParameterError

__all__ = ["clopper_pearson", "min_support", "choose_threshold", "precision_coverage_curve"]


def clopper_pearson(k, n, alpha: float = 0.05, side: str = "lower"):
    """Exact binomial confidence bound(s) for ``k`` successes out of ``n``.

    ``side``: "lower" / "upper" (one-sided at level ``1 - alpha``) or "two" (returns
    ``(low, high)`` at level ``1 - alpha``). Works on scalars and arrays; ``n == 0`` gives 0 / 1.
    """
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        if side == "two":
            a = alpha / 2
            lo = np.where(k > 0, beta.ppf(a, k, n - k + 1), 0.0)
            hi = np.where(k < n, beta.ppf(1 - a, k + 1, n - k), 1.0)
            lo = np.where(n > 0, lo, 0.0)
            hi = np.where(n > 0, hi, 1.0)
            return (lo[()], hi[()])
        if side == "lower":
            lo = np.where(k > 0, beta.ppf(alpha, k, n - k + 1), 0.0)
            return np.where(n > 0, lo, 0.0)[()]
        if side == "upper":
            hi = np.where(k < n, beta.ppf(1 - alpha, k + 1, n - k), 1.0)
            return np.where(n > 0, hi, 1.0)[()]
    raise ParameterError(f"side must be 'lower', 'upper' or 'two', not {side!r}")


def min_support(target: float, alpha: float = 0.05) -> int:
    """Fewest validation suggestions (all right) whose lower bound can reach ``target``."""
    if not 0.0 < target < 1.0:
        raise ParameterError("target precision must be in (0, 1)")
    return int(math.ceil(math.log(alpha) / math.log(target)))


def _cuts(conf: np.ndarray, correct: np.ndarray):
    """Sorted cut points: threshold, n suggested, k right (one row per distinct confidence)."""
    order = np.argsort(-conf, kind="stable")
    c = conf[order]
    ok = correct[order].astype(np.int64)
    n = np.arange(1, len(c) + 1)
    k = np.cumsum(ok)
    last = np.ones(len(c), dtype=bool)  # keep the last item of each run of equal confidences
    last[:-1] = c[:-1] != c[1:]
    return c[last], n[last], k[last]


def choose_threshold(conf, correct, target: float, alpha: float = 0.05) -> dict:
    """Lowest threshold whose validation precision has a lower bound >= ``target``.

    Returns ``{"threshold", "n", "correct", "precision", "lower_bound", "coverage"}``; the
    threshold is ``None`` (never suggest) when no cut point passes. ``coverage`` is the share of
    the given predictions that would be suggested.
    """
    conf = np.asarray(conf, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    total = len(conf)
    out = {"threshold": None, "n": 0, "correct": 0, "precision": None, "lower_bound": None,
           "coverage": 0.0, "support": int(total)}
    if total == 0:
        return out
    t, n, k = _cuts(conf, correct)
    lb = clopper_pearson(k, n, alpha, side="lower")
    ok = np.flatnonzero(lb >= target)
    if len(ok) == 0:
        return out
    i = int(ok[-1])  # the lowest passing threshold = the largest coverage
    out.update(threshold=float(t[i]), n=int(n[i]), correct=int(k[i]), precision=float(k[i] / n[i]),
               lower_bound=float(lb[i]), coverage=float(n[i] / total))
    return out


def precision_coverage_curve(conf, correct, n_total: int | None = None, max_points: int = 400) -> dict:
    """Precision of the most confident suggestions against the share of items they cover.

    ``conf``/``correct`` are per-item confidence and whether the top suggestion is right (items
    that can never be suggested, e.g. predicted "other", are left out by the caller and still
    count in ``n_total``). Returns lists ``threshold``, ``coverage``, ``precision``,
    ``precision_low``/``precision_high`` (95% Clopper-Pearson), thinned to ``max_points``.
    """
    conf = np.asarray(conf, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    n_total = len(conf) if n_total is None else int(n_total)
    if len(conf) == 0:
        return {"threshold": [], "coverage": [], "precision": [], "precision_low": [],
                "precision_high": [], "n_total": n_total}
    t, n, k = _cuts(conf, correct)
    if len(t) > max_points:
        keep = np.unique(np.linspace(0, len(t) - 1, max_points).round().astype(int))
        t, n, k = t[keep], n[keep], k[keep]
    lo, hi = clopper_pearson(k, n, 0.05, side="two")
    return {
        "threshold": t.tolist(),
        "coverage": (n / max(n_total, 1)).tolist(),
        "precision": (k / n).tolist(),
        "precision_low": np.atleast_1d(lo).tolist(),
        "precision_high": np.atleast_1d(hi).tolist(),
        "n_total": n_total,
    }


def coverage_at_precision(curve: dict, target: float) -> dict:
    """Largest coverage on ``curve`` whose (observed) precision is >= ``target`` (an oracle
    operating point on the evaluated data itself, for comparison with validation thresholds)."""
    prec = np.asarray(curve["precision"])
    cov = np.asarray(curve["coverage"])
    ok = np.flatnonzero(prec >= target)
    if len(ok) == 0:
        return {"coverage": 0.0, "precision": None, "threshold": None}
    i = int(ok[np.argmax(cov[ok])])
    return {"coverage": float(cov[i]), "precision": float(prec[i]), "threshold": float(curve["threshold"][i])}
