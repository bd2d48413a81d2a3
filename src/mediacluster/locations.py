"""Where a collection's files are now: the one rule for every stored item path.

Two stores keep item paths: a run folder (``items.parquet``, ``assignments.*``,
``duplicates.parquet``, the examples of ``clusters.json``; see ``rundir``) and a duplicate index
(a model version's ``duplicates/``; see ``duplicates.index``). Both keep a path relative to the
**collection root** where it lies under it (absolute otherwise) and record the root twice: as it
was, and relative to the store's own folder. Reading, paths are made absolute against the root
found by :func:`find`:

1. the one given (``--collection-root DIR`` of ``report``, ``studio``, ``assign``, ``serve``);
2. else the recorded one while it is a folder (nothing moved);
3. else the one at the same place relative to the store (a project folder holding the photos
   and the run, moved or copied whole);
4. else the recorded one: the paths then say where the files were.

A store written before roots were recorded holds absolute paths only; its root is their deepest
common folder (:func:`common_folder`), and a given root moves the paths under it there.

The collection root of a folder input is that folder, of a manifest the manifest's folder, of
one file its folder; without one (e.g. vectors with a ``path`` column) the paths' common folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import InputError
from .fileio import path_from_text, path_to_text


def common_folder(paths) -> str | None:
    """The deepest folder holding every absolute path (others, e.g. ids, play no part); None
    without any."""
    full = [os.path.normpath(p) for p in map(os.fspath, (q for q in paths or () if q is not None)) if os.path.isabs(p)]
    if not full:
        return None
    return os.path.commonpath([os.path.dirname(p) for p in full])


def _prefix(root: str) -> str:
    return root if root.endswith(os.sep) else root + os.sep


def _normal(p: str) -> bool:
    """Whether an absolute name has no ``.``/``..`` parts or doubled separators (normpath would
    leave it as it is): checked by substrings, far cheaper than normpath on a million names."""
    sep = os.sep
    return (sep + sep) not in p and (sep + ".") not in p and not p.endswith(sep)


def under(path: str, root: str) -> bool:
    """Whether the absolute ``path`` lies inside the folder ``root`` (by name, no file access)."""
    return path.startswith(_prefix(root))


def split_root(paths, root: str | os.PathLike | None = None) -> tuple[str | None, list | None]:
    """``(root, stored paths)``: ``root`` (made absolute; default: the paths' common folder) and
    each path relative to it where it lies under it, absolute otherwise (None stays None);
    ``(None, paths)`` without paths."""
    if not paths or all(p is None for p in paths):
        return None, None if paths is None else list(paths)
    root = os.path.abspath(os.fspath(root)) if root is not None else common_folder(paths)
    loc = Root(path=root, recorded=root)
    return root, loc.store_all(paths)


@dataclass(frozen=True)
class Root:
    """The collection root stored paths are resolved against now (``path``), the one recorded
    when they were stored (``recorded``), and whether absolute stored paths under ``recorded``
    move to ``path`` (``rebase``: a store from before roots were recorded)."""

    path: str | None
    recorded: str | None = None
    rebase: bool = False
    given: bool = False

    @property
    def found(self) -> bool:
        """Whether the root is a folder now (False: files are looked for where they were)."""
        return self.path is not None and os.path.isdir(self.path)

    def resolve(self, stored: str | None) -> str | None:
        """A stored path as an absolute path now."""
        if stored is None or self.path is None:
            return stored
        if not os.path.isabs(stored):
            return os.path.join(self.path, stored)
        if self.rebase and self.recorded is not None and self.recorded != self.path and under(stored, self.recorded):
            return os.path.join(self.path, stored[len(_prefix(self.recorded)):])
        return stored

    def resolve_all(self, stored) -> list:
        """:meth:`resolve` of every entry (0.15 CPU-s per million paths; storing them 0.4)."""
        if self.path is None:
            return list(stored)
        if self.rebase:
            return [self.resolve(p) if isinstance(p, str) else p for p in stored]
        pre, sep = _prefix(self.path), os.sep
        return [pre + p if isinstance(p, str) and not p.startswith(sep) else p for p in stored]

    def store(self, path: str | None) -> str | None:
        """An item path in stored form: relative to the root where it lies under it (an
        absolute path elsewhere, or text that is not an absolute path, stays as it is)."""
        if path is None or self.path is None or not os.path.isabs(path):
            return path
        full = os.path.normpath(path)
        return full[len(_prefix(self.path)):] if under(full, self.path) else full

    def store_all(self, paths) -> list:
        """:meth:`store` of every entry (names that are already normal need no normpath)."""
        if self.path is None:
            return list(paths)
        pre = _prefix(self.path)
        n = len(pre)
        return [p[n:] if isinstance(p, str) and p.startswith(pre) and _normal(p) else
                (self.store(p) if isinstance(p, str) else p) for p in paths]

    def record(self, store_folder: str | os.PathLike) -> dict:
        """The root as a store keeps it: ``{"root", "root_from_store"}`` (text form of file
        names, see ``fileio.path_to_text``); {} without a root."""
        if self.path is None:
            return {}
        return {"root": path_to_text(self.path, force=True),
                "root_from_store": path_to_text(os.path.relpath(self.path, os.path.abspath(store_folder)),
                                                force=True)}


def find(recorded: str | None, from_store: str | None, store_folder: str | os.PathLike,
         given: str | os.PathLike | None = None) -> Root:
    """The root stored paths resolve against (the order is in the module doc). ``recorded`` /
    ``from_store``: the text form kept by :meth:`Root.record` (None: not recorded)."""
    check_given(given)
    recorded = None if recorded is None else path_from_text(recorded)
    near = None if from_store is None else os.path.normpath(
        os.path.join(os.path.abspath(store_folder), path_from_text(from_store)))
    if given is not None:
        return Root(path=os.path.abspath(os.fspath(given)), recorded=recorded, given=True)
    found = next((r for r in (recorded, near) if r is not None and os.path.isdir(r)), recorded)
    return Root(path=None if found is None else os.path.abspath(found), recorded=recorded)


def legacy(paths, given: str | os.PathLike | None = None) -> Root:
    """The root of a store that kept absolute paths only: their common folder, moved to
    ``given`` when one is given."""
    check_given(given)
    old = common_folder(paths)
    if given is None or old is None:
        return Root(path=None, recorded=old)
    return Root(path=os.path.abspath(os.fspath(given)), recorded=old, rebase=True, given=True)


#: Tables that keep their paths relative to a collection root recorded in a JSON file beside
#: them (``mediacluster dups``'s ``dups.parquet`` / ``dups.csv`` and ``dups.json``): table name ->
#: ``(that file, the recorded root's key, the key of the root relative to the table's folder)``.
#: Read back as a manifest, their paths resolve against that root (:func:`table_root`), not the
#: table's own folder.
ROOT_RECORDED_BESIDE = {name: ("dups.json", "collection_root", "collection_root_from_out")
                        for name in ("dups.parquet", "dups.csv")}


def table_root(table: str | os.PathLike) -> str | None:
    """The folder a table's relative paths are relative to when its writer recorded it beside
    it (:data:`ROOT_RECORDED_BESIDE`; found by :func:`find`: the recorded root while it is a
    folder, else the one at the same place relative to the table); None for any other table
    (a manifest's paths are relative to its own folder)."""
    import json

    rule = ROOT_RECORDED_BESIDE.get(os.path.basename(os.fspath(table)).lower())
    if rule is None:
        return None
    folder = os.path.dirname(os.path.abspath(os.fspath(table)))
    try:
        with open(os.path.join(folder, rule[0]), encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None  # none beside it (or unreadable): an ordinary manifest
    if not isinstance(doc, dict) or not isinstance(doc.get(rule[1]), str):
        return None  # written before roots were recorded: its paths are absolute
    near = doc.get(rule[2])
    return find(doc[rule[1]], near if isinstance(near, str) else None, folder).path


def check_given(given) -> None:
    if given is not None and not os.path.isdir(given):
        raise InputError(f"collection root {path_to_text(os.fspath(given))}: not a folder "
                         "(--collection-root: where the collection's files are now)")


__all__ = ["ROOT_RECORDED_BESIDE", "Root", "common_folder", "find", "legacy", "split_root", "table_root", "under"]
