"""The ids and paths of a model's searchable items: ``items.json`` in a model folder.

``Pipeline.similar`` answers the fitted items nearest to a new one; the search runs over the
predictor's reference items (``NeighbourPredictor.ref_index_``), so a model saved from a run
(``cluster --save-model``, the studio's publish, ``tune`` on a run) keeps the id and path of
each reference item, in reference order, to name them. A model fitted on bare vectors has no
such file and answers rows of its fitted items only.

The file is plain JSON (``{"format", "n", "ids", "paths", "escaped", "root", "root_from_store"}``;
names that are not valid UTF-8 in the escaped text form of ``fileio.path_to_text``, their rows
in ``escaped``), kept
beside model.json and arrays.npz rather than inside them: it is read only when ``similar`` is
first called (``assign`` without ``--similar`` and ``/v1/assign`` never pay for it), and its
size is bounded by the reference set (at most ``reference_size`` items; a run fitted on a
sample keeps the sample's). Paths follow the one rule of stored item paths
(``mediacluster.locations``): relative to the collection root, which is recorded as it was and
relative to the model folder, and found again on load (a given root, the recorded one, or the
one at the same place relative to the model). Measured sizes and load times are in
benchmarks/RESULTS.md, "More like this".
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ModelFormatError
from .fileio import json_text, needs_escape, path_from_text, path_to_text, write_text
from .locations import Root, check_given, common_folder, find, under

ITEMS_JSON = "items.json"
FORMAT = "mediacluster.model-items/1"


@dataclass(frozen=True)
class ModelItems:
    """Per reference item (position ``p`` in ``ref_index_``): ``ids[p]`` and ``paths[p]``
    (absolute, resolved against ``root``; None without paths)."""

    ids: list[str]
    paths: list[str | None] | None
    root: str | None = None

    def __len__(self) -> int:
        return len(self.ids)


def save_items(folder: str | os.PathLike, ids, paths=None, root: str | os.PathLike | None = None) -> Path:
    """Write ``items.json`` into the model ``folder``: ``ids`` / ``paths`` of the reference
    items in reference order; ``root``: the collection root the paths are stored relative to
    (default, or when a path lies outside it: their common folder)."""
    folder = Path(folder)
    ids = [str(i) for i in ids]
    stored, where = None, {}
    if paths is not None and any(p is not None for p in paths):
        full = [None if p is None else os.fspath(p) for p in paths]  # text that is no absolute path stays
        top = os.path.abspath(os.fspath(root)) if root is not None else None
        if top is None or not all(under(p, top) for p in full if p is not None and os.path.isabs(p)):
            top = common_folder(full)
        loc = Root(path=top, recorded=top)
        stored = loc.store_all(full)
        rec = loc.record(folder)
        if rec:
            where = {"root": rec["root"], "root_from_store": rec["root_from_store"]}
    if len(stored or ids) != len(ids):
        raise ValueError(f"{len(ids)} ids but {len(stored)} paths")
    # names that are not valid UTF-8 in escaped form, their rows listed: the others are kept as
    # they are (escaping a million names one character at a time cost 4 s)
    escaped = [i for i in range(len(ids)) if needs_escape(ids[i])
               or (stored is not None and stored[i] is not None and needs_escape(stored[i]))]
    for i in escaped:
        ids[i] = path_to_text(ids[i], force=True)
        if stored is not None and stored[i] is not None:
            stored[i] = path_to_text(stored[i], force=True)
    path = folder / ITEMS_JSON
    # one line: a million ids and paths indented would add megabytes of blanks
    write_text(path, json_text({"format": FORMAT, "n": len(ids), "ids": ids, "paths": stored, "escaped": escaped,
                                **where}, indent=None) + "\n")
    return path


def read_items(folder: str | os.PathLike, n: int, root: str | os.PathLike | None = None) -> ModelItems | None:
    """The model folder's ``items.json`` (checked: ``n`` entries, one per reference item), its
    paths made absolute against the collection root found now (``root``: the one given); None
    when the model has none (a model fitted on bare vectors, or saved before they were kept)."""
    check_given(root)
    path = Path(folder) / ITEMS_JSON
    if not path.exists():
        return None
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ModelFormatError(f"{path}: cannot read the model's item ids: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        fmt = doc.get("format") if isinstance(doc, dict) else None
        raise ModelFormatError(f"{path}: format {fmt!r}, expected {FORMAT!r}")
    ids, paths, escaped = doc.get("ids"), doc.get("paths"), doc.get("escaped", [])
    if not isinstance(ids, list) or len(ids) != n or doc.get("n") != n or not all(isinstance(x, str) for x in ids):
        raise ModelFormatError(f"{path}: ids must be {n} strings, one per reference item of the model "
                               f"(found {len(ids) if isinstance(ids, list) else type(ids).__name__})")
    if paths is not None and (not isinstance(paths, list) or len(paths) != n
                              or not all(p is None or isinstance(p, str) for p in paths)):
        raise ModelFormatError(f"{path}: paths must be null or one string (or null) per id ({n})")
    if not isinstance(escaped, list) or not all(isinstance(i, int) and 0 <= i < n for i in escaped):
        raise ModelFormatError(f"{path}: escaped must list rows 0..{n - 1}")
    for i in escaped:
        ids[i] = path_from_text(ids[i])
        if paths is not None and paths[i] is not None:
            paths[i] = path_from_text(paths[i])
    if paths is None or (doc.get("root") is None and doc.get("root_from_store") is None):
        return ModelItems(ids, paths, None)  # no paths, or no absolute path among them
    for key in ("root", "root_from_store"):
        if not isinstance(doc.get(key), str):
            raise ModelFormatError(f"{path}: {key!r} must be a string when paths are stored")
    loc = find(doc["root"], doc["root_from_store"], folder, given=root)
    return ModelItems(ids, loc.resolve_all(paths), loc.path)


def missing_note(folder: str | os.PathLike | None, info: dict | None) -> str | None:
    """Why a loaded model has no items when it was saved with them: its model.json records
    ``items_saved`` but ``items.json`` is not in ``folder`` (removed by hand, or lost in a copy);
    None for a model that never had one (fitted on bare vectors, saved before ids were kept)."""
    if folder is None or not (info or {}).get("items_saved") or (Path(folder) / ITEMS_JSON).exists():
        return None
    return (f"{Path(folder) / ITEMS_JSON} is missing: this model was saved with its items' ids, but "
            "the file that keeps them is gone (restore it, or save the model again from its run); "
            "meanwhile ask by vector")


def neighbour_records(sim: dict, names: dict[int, str] | None = None,
                      sure: dict[int, bool | None] | None = None) -> list[list[dict]]:
    """``Pipeline.similar``'s answer as, per new item, its neighbours nearest first, each
    ``{row, id, path, similarity, distance, cluster, name, name_sure}`` (plain JSON values: names
    as text, ``id`` / ``path`` None for a model without its items' ids, ``similarity`` None for a
    model that compares neither by cosine nor by correlation; ``names``: cluster id -> name at the answer's level; ``sure``:
    cluster id -> whether that name is sure, ``naming.support``; None where not measured). The
    one rendering of the service's ``neighbours`` and ``assign --similar``'s column."""
    names, sure = names or {}, sure or {}
    rows, cl = sim["rows"], sim["clusters"]
    dist, simi = sim["distances"], sim["similarities"]
    ids, paths = sim["ids"], sim["paths"]
    out = []
    for i in range(len(rows)):
        near = []
        for j in np.flatnonzero(rows[i] >= 0):
            c = int(cl[i, j])
            near.append({"row": int(rows[i, j]), "id": None if ids is None else path_to_text(ids[i][j]),
                         "path": None if paths is None or paths[i][j] is None else path_to_text(paths[i][j]),
                         "similarity": None if not np.isfinite(simi[i, j]) else round(float(simi[i, j]), 6),
                         "distance": round(float(dist[i, j]), 6), "cluster": c, "name": names.get(c),
                         "name_sure": sure.get(c)})
        out.append(near)
    return out
