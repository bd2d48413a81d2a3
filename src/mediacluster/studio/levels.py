"""The run's hierarchy levels as the studio shows them: flat labellings, coarse to fine (the
split along the hierarchy follows them too, see :mod:`.split`)."""

from __future__ import annotations

import logging
import re

import numpy as np

from ..errors import InputError
from ..rundir import RunDir

log = logging.getLogger(__name__)

#: levels: assignment columns named like this, coarse to fine (the engine's hierarchy)
LEVEL_COLUMN = re.compile(r"level_?(\d+)$")


def read_levels(run: RunDir, a, n: int) -> list[dict]:
    """The run's hierarchy levels as flat labellings, coarse to fine: assignment columns named
    ``level_<k>``, else from ``hierarchy.npz`` every per-item integer array (n,) and every
    (n_levels, n) integer array (the clusterer's ``levels_``, row 0 coarsest). [] without levels.
    Each: ``name``, ``labels``, ``groups`` and ``index``, the level's key in ``level_names.json``
    (None for an array that is not one of the tree's levels)."""
    out = []
    for c in a.columns:
        m = LEVEL_COLUMN.fullmatch(str(c))
        if m:
            vals = a[c].to_numpy()
            if vals.dtype.kind in "iu":
                out.append({"name": str(c), "labels": vals.astype(np.int64), "index": int(m.group(1))})
    if not out:
        try:
            h = run.read_hierarchy()
        except (OSError, ValueError) as e:
            log.warning("studio: hierarchy not readable: %s", e)
            h = None
        for k, v in sorted((h or {}).items()):
            v = np.asarray(v)
            if v.dtype.kind not in "iu":
                continue
            if v.ndim == 1 and len(v) == n:
                out.append({"name": str(k), "labels": v.astype(np.int64), "index": None})
            elif v.ndim == 2 and v.shape[1] == n and v.shape[0] <= 64:  # (levels, n), row 0 coarsest
                # "levels" is the tree of hierarchy.npz: its rows are the levels level_names.json keys
                out += [{"name": f"{k} {lv}", "labels": row.astype(np.int64), "index": lv if k == "levels" else None}
                        for lv, row in enumerate(v)]
    for lv in out:
        lv["groups"] = int(len(set(lv["labels"][lv["labels"] >= 0].tolist())))
    out.sort(key=lambda lv: lv["groups"])
    return out


def find_level(levels: list[dict], name: str) -> dict:
    """The level called ``name``, or an InputError."""
    for lv in levels:
        if lv["name"] == name:
            return lv
    raise InputError(f"the run has no level {name!r}")


def level_groups(levels: list[dict], labels: np.ndarray) -> dict[str, dict[str, int]]:
    """For each level: each cluster of ``labels`` (the curated ones) under the level group most
    of it is in, ``{level name: {str(cluster): group}}``."""
    groups = {}
    for lv in levels:
        lab = lv["labels"]
        keep = labels >= 0
        if keep.any():
            pairs, cnt = np.unique(np.stack([labels[keep], lab[keep]]), axis=1, return_counts=True)
            best: dict[int, tuple[int, int]] = {}
            for (c, g), k in zip(pairs.T.tolist(), cnt.tolist()):
                if k > best.get(c, (-1, -1))[1]:
                    best[c] = (g, k)
            groups[lv["name"]] = {str(c): g for c, (g, _) in best.items()}
    return groups
