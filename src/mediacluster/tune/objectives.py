"""Objectives: one number (or two, for the Pareto mode) from a trial's recorded scores.

Every trial records all scores (``workspace.score_labels``); an objective only chooses among
them, so a finished study can be re-read under another objective without refitting anything.

Spaces and noise policies, stated explicitly:

* ``silhouette``: the source study's objective. Silhouette in the reduced (UMAP) space,
  euclidean, **clustered items only** (noise -1 and outliers -2 excluded). Rewards throwing
  items away, and rewards merging classes (CIFAR-10's 2-cluster answer scores highest).
* ``silhouette-all``: reduced space, every item scored, unclustered items as one extra group.
* ``silhouette-coverage``: ``silhouette * coverage`` (reduced space, clustered items).
* ``silhouette-input``: silhouette in the **input** embedding space (cosine), clustered
  items only, times coverage. The reduced space inflates separation (UMAP pulls neighbours
  together), the input space does not.
* ``dbcv``: density-based validity (Moulavi et al.) in the reduced space; noise counts in the
  denominator per its definition.
* ``dbcv-coverage``: ``dbcv * coverage``.
* ``silhouette-input-k``: ``silhouette_input * coverage * (1 - 1/k)`` with ``k`` clusters.
  ``1 - 1/k`` is the Gini-Simpson diversity of ``k`` equal clusters (the chance that two
  random clustered items are in different clusters): it leaves 5+ cluster answers almost
  untouched (>= 0.8) and halves the 2-cluster answer that silhouette favours on CIFAR-10
  (animals vs vehicles).
* ``default`` = ``silhouette-input-k``, chosen by experiment on labelled sets (trials over
  UMAP x HDBSCAN settings on CIFAR-10 test and Imagenette val, pick vs NMI oracle; the table
  is in ``benchmarks/RESULTS.md``, section tuning). Labels were used only to choose this
  formula, never inside a study.

A trial whose score is undefined (fewer than 2 clusters) gets ``WORST`` (-1).
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ParameterError

WORST = -1.0


def _v(m: dict, key: str) -> float | None:
    v = m.get(key)
    return None if v is None else float(v)


def _times_coverage(key: str) -> Callable[[dict], float]:
    def f(m: dict) -> float:
        v = _v(m, key)
        return WORST if v is None else v * float(m.get("coverage", 0.0))
    return f


def _plain(key: str) -> Callable[[dict], float]:
    def f(m: dict) -> float:
        v = _v(m, key)
        return WORST if v is None else v
    return f


def _silhouette_input_k(m: dict) -> float:
    v = _v(m, "silhouette_input")
    k = int(m.get("n_clusters") or 0)
    if v is None or k < 2:
        return WORST
    f = float(m.get("coverage", 0.0)) * (1.0 - 1.0 / k)
    return v * f if v > 0 else v  # never reward a negative score by shrinking it


OBJECTIVES: dict[str, Callable[[dict], float]] = {
    "silhouette": _plain("silhouette"),
    "silhouette-all": _plain("silhouette_all"),
    "silhouette-coverage": _times_coverage("silhouette"),
    "silhouette-input": _times_coverage("silhouette_input"),
    "dbcv": _plain("dbcv"),
    "dbcv-coverage": _times_coverage("dbcv"),
    "silhouette-input-k": _silhouette_input_k,
}
DEFAULT_OBJECTIVE = "silhouette-input-k"
OBJECTIVES["default"] = OBJECTIVES[DEFAULT_OBJECTIVE]

DESCRIPTIONS = {
    "silhouette": "silhouette, reduced space, clustered items only (the source study)",
    "silhouette-all": "silhouette, reduced space, all items, unclustered as one group",
    "silhouette-coverage": "silhouette (reduced space, clustered items) x coverage",
    "silhouette-input": "silhouette in the input space (cosine, clustered items) x coverage",
    "dbcv": "DBCV, reduced space (noise in the denominator)",
    "dbcv-coverage": "DBCV (reduced space) x coverage",
    "silhouette-input-k": "silhouette in the input space (cosine, clustered items) x coverage x (1 - 1/clusters)",
}
DESCRIPTIONS["default"] = f"default = {DEFAULT_OBJECTIVE}: {DESCRIPTIONS[DEFAULT_OBJECTIVE]}"


def get_objective(name: str | Callable[[dict], float]) -> tuple[str, Callable[[dict], float]]:
    if callable(name):
        return getattr(name, "__name__", "custom"), name
    if name not in OBJECTIVES:
        raise ParameterError(f"unknown objective {name!r}; choose from {', '.join(OBJECTIVES)}")
    return name, OBJECTIVES[name]


# sampled scores with a recorded standard error (``workspace.score_labels``): key -> its SE's key
SAMPLED = {"silhouette": "silhouette_se", "silhouette_input": "silhouette_input_se"}


def objective_se(fn: Callable[[dict], float], m: dict) -> float | None:
    """The objective's standard error from the sampling error of the scores it reads.

    Each sampled score with a recorded SE is moved by one SE, and the objective's changes are
    added in quadrature (a first-order propagation that needs nothing but ``fn``, so it covers
    custom objectives too). None when no sampled score with an SE changes the objective (DBCV
    objectives, or no SE recorded)."""
    base = fn(m)
    if base is None or base == WORST:
        return None
    total, used = 0.0, False
    for key, se_key in SAMPLED.items():
        v, se = m.get(key), m.get(se_key)
        if v is None or se is None or not se > 0:
            continue
        d = fn(m | {key: float(v) + float(se)}) - base
        if d != 0:
            total, used = total + d * d, True
    return total ** 0.5 if used else None


def quality_for_pareto(name: str) -> Callable[[dict], float]:
    """The quality axis of the Pareto mode: the objective without its coverage factor (coverage
    is the other axis)."""
    base = {"silhouette-coverage": "silhouette", "silhouette-input": "silhouette_input",
            "dbcv-coverage": "dbcv", "silhouette-input-k": None}
    resolved = DEFAULT_OBJECTIVE if name == "default" else name
    if resolved == "silhouette-input-k":  # quality without the coverage factor
        return lambda m: _silhouette_input_k(m | {"coverage": 1.0})
    if resolved in base:
        return _plain(base[resolved])
    return OBJECTIVES[resolved]
