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
* ``default``: chosen by experiment on labelled sets (``benchmarks/tuning.py``; the
  table and the reasoning are in ``benchmarks/RESULTS.md``, section tuning).

A trial whose score is undefined (fewer than 2 clusters) gets ``WORST`` (-1).
"""

from __future__ import annotations

from collections.abc import Callable

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


OBJECTIVES: dict[str, Callable[[dict], float]] = {
    "silhouette": _plain("silhouette"),
    "silhouette-all": _plain("silhouette_all"),
    "silhouette-coverage": _times_coverage("silhouette"),
    "silhouette-input": _times_coverage("silhouette_input"),
    "dbcv": _plain("dbcv"),
    "dbcv-coverage": _times_coverage("dbcv"),
}
DEFAULT_OBJECTIVE = "silhouette-input"
OBJECTIVES["default"] = OBJECTIVES[DEFAULT_OBJECTIVE]

DESCRIPTIONS = {
    "silhouette": "silhouette, reduced space, clustered items only (the source study)",
    "silhouette-all": "silhouette, reduced space, all items, unclustered as one group",
    "silhouette-coverage": "silhouette (reduced space, clustered items) x coverage",
    "silhouette-input": "silhouette in the input space (cosine, clustered items) x coverage",
    "dbcv": "DBCV, reduced space (noise in the denominator)",
    "dbcv-coverage": "DBCV (reduced space) x coverage",
}
DESCRIPTIONS["default"] = f"default = {DEFAULT_OBJECTIVE}: {DESCRIPTIONS[DEFAULT_OBJECTIVE]}"


def get_objective(name: str | Callable[[dict], float]) -> tuple[str, Callable[[dict], float]]:
    if callable(name):
        return getattr(name, "__name__", "custom"), name
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose from {', '.join(OBJECTIVES)}")
    return name, OBJECTIVES[name]


def quality_for_pareto(name: str) -> Callable[[dict], float]:
    """The quality axis of the Pareto mode: the objective without its coverage factor (coverage
    is the other axis)."""
    base = {"silhouette-coverage": "silhouette", "silhouette-input": "silhouette_input",
            "dbcv-coverage": "dbcv"}
    resolved = DEFAULT_OBJECTIVE if name == "default" else name
    if resolved in base:
        return _plain(base[resolved])
    return OBJECTIVES[resolved]
