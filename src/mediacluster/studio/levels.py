"""The run's hierarchy levels as the studio shows them: flat labellings, coarse to fine, read
by ``RunDir.read_levels`` (the split along the hierarchy follows them too, see :mod:`.split`).
How the curated clusters group under the coarse levels is the curated tree's
(:mod:`mediacluster.curated_tree`), the one the published model serves."""

from __future__ import annotations

from ..errors import InputError
from ..rundir import RunLevels


def level_views(levels: RunLevels) -> list[dict]:
    """The run's levels as dicts, coarse to fine: ``name`` (the assignment column or
    ``levels <row>``), ``labels``, ``groups`` (cluster count) and ``index``, the level's key in
    ``level_names.json``; [] without levels."""
    return [{"name": name, "labels": lab, "index": k, "groups": levels.groups(j)}
            for j, (name, lab, k) in enumerate(zip(levels.names, levels.labels, levels.index))]


def find_level(levels: list[dict], name: str) -> dict:
    """The level called ``name``, or an InputError."""
    for lv in levels:
        if lv["name"] == name:
            return lv
    raise InputError(f"the run has no level {name!r}")
