"""The run folder: the one owner of its file names, its schema and how it is published.

A run folder (``mediacluster cluster ... --out DIR``) holds, at schema version 1::

    run.json             schema, run_id, command, parameters, versions, timings, summary, skipped
    items.parquet        id, path, label (+ escaped) - row i belongs to row i of embeddings.npy
    embeddings.npy       (n, d) float32 vectors
    extra_<name>.npy     per-item encoder outputs (imagenet_probs as float16)
    assignments.parquet  id, path, cluster, status, probability, assigned_cluster, confidence,
    assignments.csv        level columns, curated_cluster, duplicate_group, ..., escaped (same rows)
    clusters.json        per cluster: size, share, examples, top classes, names
    hierarchy.npz        the cluster tree when the clusterer has levels
    duplicates.parquet   duplicate groups (with --dedup)
    metadata.parquet     a manifest's own columns per item id (time, author, ...), when it has any
    names.json           automatic names          (derived: stamped with the run_id)
    level_names.json     automatic names of every level of hierarchy.npz (derived: stamped)
    names.yaml           hand-given names         (written by a person)
    map2d.npy, map2d.json  2-D map of the items   (derived: stamped with the run_id)
    models/              model versions v0001/, v0002/, ... and LATEST (see persist.ModelStore)
    report/              the HTML report          (derived)
    edits.sqlite         the studio's edit log    (written by a person, through the studio)
    curated.json         the curated clusters      (derived from edits.sqlite: stamped with the
                                                    run_id and the last edit's number)
    exports/             the studio's exports      (folders per cluster, tables, Label Studio)

**Publishing.** A new run is built in a hidden temporary sibling folder and swapped in when
complete (:meth:`RunDir.create` -> :class:`RunBuilder`): Linux's ``renameat2(RENAME_EXCHANGE)``
swaps the two folders in one step; elsewhere two renames through ``.DIR.old-<time>-<run_id>``,
which the next open or write finishes under the lock (:func:`_recover`: the newest previous run
put back, a leftover retired as a publish retires it). So a
folder is always one whole run: a kill at any instant leaves the old run or the new one, and
nothing derived from an old run (names, map, model, report) can be paired with new
assignments. A previous run that holds a person's work (``names.yaml``, ``edits.sqlite``) is
kept beside it as ``DIR.replaced-<run_id>`` instead of being deleted.

**Large runs.** Tables and vectors of a large run are written batch by batch
(:meth:`RunBuilder.assignments_writer`, :meth:`RunBuilder.items_writer`,
:meth:`RunBuilder.embeddings_writer`, :meth:`RunBuilder.copy_embeddings`), never as one array.
Work that must survive a failed build (the shards of a distributed job, see
``mediacluster.executors``) goes to ``.DIR.work/`` beside the folder (:meth:`RunBuilder.shards`),
which is removed once the run is published.

**Locking.** Writers hold an exclusive ``fcntl`` lock on the sibling file ``.DIR.lock`` (it
outlives the swaps); a second writer fails at once with a message naming the holder.

**Derived files** written after publishing (names, map) record the run_id they were derived
from; a reader ignores one whose run_id differs.

**Item paths** are stored relative to the run's collection root (``run.json``
``collection_root``, also relative to the run folder: ``collection_root_from_run``) where they lie
under it, absolute otherwise; the readers give them absolute, resolved against
:attr:`RunDir.collection_root` (``RunDir.open(path, collection_root=)`` when the files moved),
and the writers store them back relative: the rule is ``mediacluster.locations``. An item's
``id`` is never rewritten (for files: the absolute path when the run was made).

**Paths.** File names are kept as Python strings (undecodable bytes as surrogate escapes,
as ``os.listdir`` gives them). Tables and JSON need valid UTF-8, so such a name is written with
each undecodable byte as ``\\xNN`` and each backslash doubled, and the row gets
``escaped = true`` with every text cell of that row in escaped form; the readers reverse it
exactly (``fileio.escape_table`` / ``unescape_table``, the rule is in ``fileio``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
import zipfile
import zlib
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import Embeddings, nonfinite_message, nonfinite_rows
from .errors import OutputError, RunDirError, RunLockedError
from .fileio import (
    ESCAPED,
    LockBusy,
    atomic_path,
    escape_table,
    flocked,
    needs_escape,
    output_error,
    path_from_text,  # noqa: F401 - kept for callers of rundir's text helpers (the rule is fileio's)
    path_to_text,
    pid_alive,
    read_json,
    read_table,
    text_series,
    unescape_table,
    write_json,
    write_npy,
    write_table,
)
from .locations import Root, common_folder
from .locations import find as find_root
from .locations import legacy as legacy_root

log = logging.getLogger(__name__)

SCHEMA = "mediacluster-run"
SCHEMA_VERSION = 1

RUN_JSON = "run.json"
ITEMS = "items.parquet"
EMBEDDINGS = "embeddings.npy"
ASSIGNMENTS = "assignments.parquet"
ASSIGNMENTS_CSV = "assignments.csv"
CLUSTERS = "clusters.json"
HIERARCHY = "hierarchy.npz"
DUPLICATES = "duplicates.parquet"
METADATA = "metadata.parquet"  # a manifest's other columns per item (Collection.metadata)
NAMES = "names.json"
LEVEL_NAMES = "level_names.json"
NAMES_YAML = "names.yaml"
MAP = "map2d.npy"
MAP_META = "map2d.json"
MODELS = "models"
REPORT = "report"
EDITS = "edits.sqlite"
CURATED = "curated.json"
CARRY = "carry.json"  # what carrying a previous run's curation did (studio.carry)
EVALUATION = "evaluation.json"  # `mediacluster evaluate`: scores of the run
LABEL_ISSUES = "label_issues.csv"  # `mediacluster evaluate` with labels: items whose label disagrees with their cluster
EXPORTS = "exports"
EXTRA_PREFIX = "extra_"
SHARD_PATTERN = "shard-{:09d}.parquet"  # inside .DIR.work/<job>/
# run.json keys: the collection root as it was, and relative to the run folder (see locations)
ROOT_KEY = "collection_root"
ROOT_FROM_RUN_KEY = "collection_root_from_run"
# files a person made: a run holding them is kept aside, not deleted, when replaced
PERSONAL = (NAMES_YAML, "names.yml", EDITS)


# ------------------------------------------------------------------------------------------
# lossless text form of file names (the rule lives in fileio; these names are kept for callers)
# ------------------------------------------------------------------------------------------
def texts(values) -> tuple[list, list[bool]]:
    """Column values as text plus a per-row ``escaped`` flag (None stays None)."""
    col, flags = [], []
    for v in values:
        if v is None:
            col.append(None)
            flags.append(False)
        else:
            esc = needs_escape(str(v))
            col.append(path_to_text(str(v)) if esc else str(v))
            flags.append(esc)
    return col, flags


# ------------------------------------------------------------------------------------------
# the lock
# ------------------------------------------------------------------------------------------
def lock_path(path: Path) -> Path:
    path = Path(os.path.realpath(path))  # through a link to the folder or not: one lock
    return path.parent / f".{path.name}.lock"


_HELD: dict[tuple, int] = {}  # (lock file, thread) -> depth: re-entrant within one thread


@contextmanager
def run_lock(path: str | os.PathLike, what: str = "write"):
    """Exclusive lock for writing the run folder ``path`` (held by this process while inside).

    Fails at once with :class:`RunLockedError` naming the holder when another process has it;
    re-entering it in the process that holds it is allowed."""
    lp = lock_path(Path(path))
    key = (lp, threading.get_ident())
    if _HELD.get(key):
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    with ExitStack() as held:
        try:
            held.enter_context(flocked(
                lp, wait=False, note=f"pid {os.getpid()}, {what} since {time.strftime('%H:%M:%S')}",
                opened=lambda e: OutputError(f"cannot create the lock file {lp}: {e.strerror or e}")))
        except LockBusy as e:
            raise RunLockedError(
                f"{path} is being written by another mediacluster process "
                f"({e.holder or 'another process'}); wait for it to finish or choose another "
                f"--out") from None
        _HELD[key] = 1
        try:
            yield
        finally:
            _HELD.pop(key, None)


# ------------------------------------------------------------------------------------------
# swapping folders
# ------------------------------------------------------------------------------------------
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where the call is unavailable."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


#: the most bytes a run folder's siblings add to its name (``.NAME.old-<time_ns>-<run_id>``; the
#: others are shorter: ``.NAME.lock``, ``.NAME.tmp-<pid>-<id>``, ``NAME.replaced-<run_id>-<n>``)
SIBLING_EXTRA = len(".") + len(".old-") + 19 + len("-") + 16


def _name_max(folder: Path) -> int:
    """The longest file name (bytes) the file system of ``folder`` (or of its nearest existing
    ancestor) allows; 255 where it does not say."""
    for p in (folder, *folder.parents):
        try:
            return int(os.pathconf(p, "PC_NAME_MAX"))
        except (OSError, ValueError):
            continue
    return 255


def _old_name(target: Path, run_id: str) -> Path:
    """Where a publish without renameat2 moves the previous run for the moment between its two
    renames: named by the time, so the newest is known (:func:`_olds`)."""
    return target.parent / f".{target.name}.old-{time.time_ns()}-{run_id}"


def _olds(path: Path) -> list[Path]:
    """The previous runs a publish without renameat2 left at ``.DIR.old-*``, oldest first."""
    def when(p: Path) -> tuple[int, str]:
        t = p.name.rsplit(".old-", 1)[-1].split("-", 1)[0]
        return (int(t) if t.isdigit() else -1, p.name)  # -1: named before the time was in it

    return sorted(path.parent.glob(f".{path.name}.old-*"), key=when)


def _recover(path: Path) -> None:
    """Finish a two-rename swap that a kill interrupted (only on systems without renameat2):
    with ``path`` missing (killed between the renames) the newest previous run goes back; every
    other ``.DIR.old-*`` (killed after both) is retired as a publish retires it (deleted, or kept
    as ``DIR.replaced-<run_id>`` when it holds a person's work). Under the folder's lock, so
    never in the middle of a writer's swap; where the lock cannot be had (a writer at work, a
    read-only place) it is left for later."""
    if not _olds(path):
        return
    try:
        with run_lock(path, "recover"):
            olds = _olds(path)
            if olds and not path.exists():
                os.rename(olds.pop(), path)
            for old in olds:
                kept = _retire(old, path)
                if kept is not None:
                    log.warning("a previous run of %s left by an interrupted publish holds a person's work: "
                                "kept as %s", path, kept)
    except (RunLockedError, OutputError):
        return


def _retire(old: Path, target: Path) -> Path | None:
    """A previous run moved aside by a publish: deleted, or kept beside ``target`` as
    ``DIR.replaced-<run_id>`` when it holds a person's work (:data:`PERSONAL`), which is
    returned."""
    if not any((old / f).exists() for f in PERSONAL):
        shutil.rmtree(old, ignore_errors=True)
        return None
    try:
        rid = read_json(old / RUN_JSON).get("run_id") or "previous"
    except (OSError, ValueError):
        rid = "previous"
    keep = target.parent / f"{target.name}.replaced-{rid}"
    n = 1
    while True:  # a copy of a kept run put back and replaced again: its name is taken
        try:
            os.rename(old, keep)
            return keep
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR) or n > 1000:
                raise output_error(e, keep) from e
            n += 1
            keep = target.parent / f"{target.name}.replaced-{rid}-{n}"


def _remove_stale_builds(path: Path) -> None:
    """Temporary build folders of killed runs (their pid is gone)."""
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        try:
            pid = int(tmp.name.rsplit("-", 2)[-2])
        except (ValueError, IndexError):
            continue
        if pid != os.getpid() and not pid_alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------
# reading and writing
# ------------------------------------------------------------------------------------------
#: assignment columns holding the hierarchy's levels, coarse to fine: level_0, level_1, ...
LEVEL_COLUMN = re.compile(r"level_?(\d+)")


@dataclass(frozen=True)
class RunLevels:
    """A run's hierarchy levels as flat labellings, coarse to fine (:meth:`RunDir.read_levels`,
    the one reader of them for the report and the studio).

    ``labels`` (each (n,) int64), ``names`` (the assignment column, ``level_<k>``, or
    ``levels <row>`` of ``hierarchy.npz``), ``index`` (each level's key in ``level_names.json``),
    ``level``: the position of the level the run's ``cluster`` column holds (``hierarchy.npz``
    ``level``; None when not recorded), ``probabilities`` (L, n) each item's membership per level
    when the run kept them (else None)."""

    labels: tuple
    names: tuple
    index: tuple
    level: int | None = None
    probabilities: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def groups(self, k: int) -> int:
        """Number of clusters of level ``k``."""
        lab = self.labels[k]
        return int(len(np.unique(lab[lab >= 0])))

    def above(self) -> np.ndarray | None:
        """``(L', n)`` the levels coarser than the one the run's ``cluster`` column holds (every
        level when the run did not record which), row 0 coarsest; None when there is none: what
        a curated tree keeps above the curated clusters (``curated.curated_tree``)."""
        at = len(self.labels) if self.level is None else self.level
        return np.stack(self.labels[:at]) if at > 0 else None


class _Files:
    """Typed readers and writers shared by a published run and one being built."""

    path: Path

    def file(self, name: str) -> Path:
        return self.path / name

    # -- item paths: stored relative to the collection root, read back absolute ----------------
    @property
    def collection_root(self) -> Root:
        """The collection root item paths resolve against (``locations.Root``)."""
        raise NotImplementedError

    def _storing_root(self, paths=None) -> Root:
        """The root item paths are stored relative to when written (``Root(None)``: as given)."""
        raise NotImplementedError

    def _resolve_paths(self, df):
        """``df`` with its ``path`` column made absolute against the collection root."""
        if df is None or "path" not in df:
            return df
        loc = self.collection_root
        if loc.path is None:
            return df
        return df.assign(path=text_series(loc.resolve_all(df["path"].tolist()), index=df.index))

    def _store_paths(self, df):
        """``df`` with its ``path`` column in stored form (relative to the collection root)."""
        if "path" not in df:
            return df
        loc = self._storing_root(df["path"].tolist())
        if loc.path is None:
            return df
        return df.assign(path=text_series(loc.store_all(df["path"].tolist()), index=df.index))

    def _resolve_examples(self, clusters: list[dict]) -> list[dict]:
        loc = self.collection_root
        if loc.path is None:
            return clusters
        return [{**e, "examples": loc.resolve_all(e["examples"])} if isinstance(e.get("examples"), list) else e
                for e in clusters]

    def _store_examples(self, clusters: list[dict]) -> list[dict]:
        loc = self._storing_root()
        if loc.path is None:
            return clusters
        return [{**e, "examples": loc.store_all(e["examples"])} if isinstance(e.get("examples"), list) else e
                for e in clusters]

    # -- items and vectors -------------------------------------------------------------------
    def write_embeddings(self, emb: Embeddings) -> None:
        import pandas as pd

        write_npy(self.file(EMBEDDINGS), np.asarray(emb.vectors, dtype=np.float32))
        for k, v in emb.extras.items():
            write_npy(self.file(f"{EXTRA_PREFIX}{k}.npy"), v.astype(np.float16) if k.endswith("probs") else v)
        n = len(emb.ids)
        paths = emb.paths if emb.paths is not None else [None] * n
        labels = emb.labels if emb.labels is not None else [None] * n
        df = pd.DataFrame({"id": text_series(map(str, emb.ids)), "path": text_series(paths),
                           "label": text_series(None if v is None else str(v) for v in labels)})
        df = self._store_paths(df)
        if ESCAPED not in df:
            df[ESCAPED] = False
        write_table(self.file(ITEMS), df)

    def read_items(self):
        """``id``, ``path`` (absolute: resolved against the collection root), ``label``; a
        missing path or label is None. (A run streamed from a bare ``.npy``, ``--fit-sample``,
        stores them as an all-null string column, read back as NaN: ``read_embeddings`` took
        every NaN for a label, and ``evaluate`` scored "0 classes" with a table of n/a.)"""
        df = self._read_table(self._need(ITEMS))
        for c in ("path", "label"):
            if c in df and df[c].isna().any():
                df[c] = df[c].astype(object).where(df[c].notna(), None)
        return self._resolve_paths(df)

    @property
    def embeddings_path(self) -> Path:
        """Where the (n, d) float32 vectors are (for readers that stream them by rows)."""
        return self.file(EMBEDDINGS)

    def _finite(self, vectors: np.ndarray) -> np.ndarray:
        """The stored vectors when every row is finite, else a :class:`RunDirError` naming the
        file and its first bad rows (a cluster run stores none: the file was damaged or written
        by hand), before any step computes with them."""
        bad = nonfinite_rows(vectors)
        if len(bad):
            raise RunDirError(nonfinite_message(bad, len(vectors), self.file(EMBEDDINGS), row="row {}")
                              + "; the folder is damaged, re-run cluster")
        return vectors

    def read_embeddings(self, mmap: bool = False, check: bool = True) -> Embeddings:
        """The run's vectors with ids, paths, labels and extras (no re-embedding); ``check``:
        refuse a file holding NaN or infinity (:meth:`_finite`; off only for a run's own
        vectors just written)."""
        vectors = self._load_npy(self._need(EMBEDDINGS), mmap)
        if check:
            self._finite(vectors)
        items = self.read_items()
        if len(items) != len(vectors):
            raise RunDirError(f"{self.path}: {ITEMS} has {len(items)} rows but {EMBEDDINGS} "
                              f"{len(vectors)}; the folder is damaged, re-run cluster")
        extras = {p.name[len(EXTRA_PREFIX):-len(".npy")]: self._load_npy(p).astype(np.float32)
                  for p in sorted(self.path.glob(f"{EXTRA_PREFIX}*.npy"))}
        enc = self.info.get("encoder", {}) if self.file(RUN_JSON).exists() else {}
        labels = items["label"].tolist()
        paths = items["path"].tolist()
        return Embeddings(
            ids=items["id"].tolist(), vectors=vectors, encoder=enc.get("name") or "",
            encoder_version=enc.get("id") or "",
            paths=paths if any(p is not None for p in paths) else None,
            labels=labels if any(v is not None for v in labels) else None, extras=extras,
            root=self.collection_root.path)

    def read_vectors(self, mmap: bool = True) -> np.ndarray:
        """The (n, d) float32 vectors alone (memory-mapped by default), without the items table
        and the extras :meth:`read_embeddings` also loads; NaN or infinity refused as there."""
        return self._finite(self._load_npy(self._need(EMBEDDINGS), mmap))

    def read_extra(self, name: str, mmap: bool = False) -> np.ndarray | None:
        """One per-item encoder extra (e.g. ``imagenet_probs``) as float32, None if absent;
        ``mmap=True``: memory-mapped in its stored dtype (float16 for probabilities), for
        reading a few rows or chunks of a large run."""
        p = self.file(f"{EXTRA_PREFIX}{name}.npy")
        if not p.exists():
            return None
        if mmap:
            return self._load_npy(p, mmap=True)
        return self._load_npy(p).astype(np.float32)

    # -- assignments -------------------------------------------------------------------------
    def write_assignments(self, df) -> None:
        """Write the per-item table (Parquet + CSV); ``id``/``path`` are escaped like items."""
        missing = {"id", "cluster", "status"} - set(df.columns)
        if missing:
            raise RunDirError(f"assignments need columns {sorted(missing)}")
        df = self._store_paths(df)
        if ESCAPED not in df:  # always: one schema with the batch writer (TableWriter)
            df = df.assign(**{ESCAPED: False})
        write_table(self.file(ASSIGNMENTS), df)
        write_table(self.file(ASSIGNMENTS_CSV), df)

    def read_assignments(self, columns: list[str] | None = None):
        """The per-item table; ``path`` absolute (resolved against the collection root)."""
        df = self._read_table(self._need(ASSIGNMENTS), columns=columns)
        if columns is not None and ESCAPED not in columns and ESCAPED in df:
            df = df.drop(columns=ESCAPED)
        return self._resolve_paths(df)

    # -- json documents ------------------------------------------------------------------------
    def write_clusters(self, clusters: list[dict], **extra) -> None:
        """Per cluster summaries; example paths stored like the items' (relative to the root)."""
        write_json(self.file(CLUSTERS), {"run_id": self.run_id, "clusters": self._store_examples(clusters),
                                         **extra})

    def read_clusters(self) -> list[dict]:
        p = self.file(CLUSTERS)
        if not p.exists():
            return []
        try:
            doc = read_json(p)
        except (OSError, ValueError) as e:  # cut short: a JSONDecodeError out of report and assign
            raise RunDirError(f"{p} cannot be read ({e}); the run folder is damaged, re-run cluster") from None
        clusters = doc.get("clusters", []) if isinstance(doc, dict) else None
        if not isinstance(clusters, list) or not all(isinstance(c, dict) for c in clusters):
            raise RunDirError(f"{p}: expected {{'clusters': [{{...}}, ...]}}; the run folder is damaged, re-run cluster")
        return self._resolve_examples(clusters)

    def read_evaluation(self) -> dict | None:
        """The scores ``mediacluster evaluate`` wrote into the run (``evaluation.json``), None
        before it ran."""
        p = self.file(EVALUATION)
        return read_json(p) if p.exists() else None

    def write_evaluation(self, scores: dict) -> Path:
        """Write the run's scores (``evaluation.json``, atomically); the path written. A
        published run: inside ``run.writing(...)``."""
        p = self.file(EVALUATION)
        write_json(p, scores)
        return p

    def write_label_issues(self, table) -> Path:
        """Write the items whose label disagrees with their cluster (``label_issues.csv``,
        atomically; ``evaluation.label_issues``); the path written. Inside ``run.writing(...)``."""
        p = self.file(LABEL_ISSUES)
        write_table(p, table)
        return p

    def write_hierarchy(self, arrays: dict[str, np.ndarray]) -> None:
        """The cluster tree of a clusterer with levels (``Pipeline.hierarchy_arrays``):
        ``levels`` (n_levels, n) int, row 0 coarsest, row ``level`` = the ``cluster`` column;
        ``parents`` + ``parents_offsets`` (level ``l + 1``'s parent ids are
        ``parents[offsets[l]:offsets[l + 1]]``); ``n_clusters`` per level; ``auto_level``;
        ``level``; optionally ``level_probabilities`` (n_levels, n)."""
        with atomic_path(self.file(HIERARCHY)) as tmp:
            np.savez_compressed(tmp, **{k: np.asarray(v) for k, v in arrays.items()})

    def read_hierarchy(self) -> dict[str, np.ndarray] | None:
        p = self.file(HIERARCHY)
        if not p.exists():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except NPY_ERRORS as e:
            # cut short or overwritten: zipfile's BadZipFile was an internal error of evaluate and report
            raise RunDirError(f"{p} cannot be read ({str(e).strip() or type(e).__name__})") from None

    def read_levels(self, assignments=None) -> RunLevels:
        """The run's hierarchy levels (:class:`RunLevels`, empty for a flat run): the
        assignment columns ``level_<k>`` (integers; ordered by ``k``) of ``assignments`` (the
        table the caller read, else read here), else the ``levels`` rows of ``hierarchy.npz``.
        A ``hierarchy.npz`` that cannot be read is a warning and no levels."""
        a = self.read_assignments() if assignments is None else assignments
        n = len(a)
        cols = sorted((int(m.group(1)), c) for c in a.columns
                      if isinstance(c, str) and (m := LEVEL_COLUMN.fullmatch(c)) and a[c].dtype.kind in "iu")
        try:
            h = self.read_hierarchy() or {}
        except RunDirError as e:
            log.warning("%s: the hierarchy is not readable: %s", self.path, e)
            h = {}
        tree = np.asarray(h.get("levels", np.zeros((0, 0), np.int64)))
        if tree.ndim != 2 or tree.shape[1] != n or tree.dtype.kind not in "iu" or tree.shape[0] > 64:
            tree = np.zeros((0, n), np.int64)
        if cols:
            labels = tuple(a[c].to_numpy().astype(np.int64) for _, c in cols)
            names, index = tuple(c for _, c in cols), tuple(k for k, _ in cols)
        else:
            labels = tuple(row.astype(np.int64) for row in tree)
            names, index = tuple(f"levels {k}" for k in range(len(tree))), tuple(range(len(tree)))
        at = h.get("level")
        at = int(at) if at is not None and np.ndim(at) == 0 and len(tree) == len(labels) else None
        probs = h.get("level_probabilities")
        probs = None if probs is None or np.shape(probs) != (len(labels), n) else np.asarray(probs)
        return RunLevels(labels, names, index, at if at is not None and 0 <= at < len(labels) else None, probs)

    def write_duplicates(self, df) -> None:
        """The duplicate groups (``cluster --dedup``): one row per item, ``id``, ``path``,
        ``duplicate_group`` (-1: none), ``duplicate_of`` (the representative's id), how each
        member is linked, group size and diameter (see ``duplicates.collection.groups_table``)."""
        missing = {"id", "duplicate_group"} - set(df.columns)
        if missing:
            raise RunDirError(f"duplicates need columns {sorted(missing)}")
        write_table(self.file(DUPLICATES), self._store_paths(df))

    def read_duplicates(self, columns: list[str] | None = None):
        """The duplicate groups table (``path`` absolute), None when the run was made without
        ``--dedup``."""
        p = self.file(DUPLICATES)
        return self._resolve_paths(self._read_table(p, columns=columns)) if p.exists() else None

    def write_metadata(self, df) -> None:
        """A manifest's own columns per item (``Collection.metadata``: ``id`` first), kept with
        the run so its tables carry them as they were when it was clustered."""
        if "id" not in df.columns:
            raise RunDirError("metadata needs an 'id' column")
        write_table(self.file(METADATA), df)

    def read_metadata(self):
        """The manifest's own columns per item id, None when the run was not made from a
        manifest with any."""
        p = self.file(METADATA)
        return unescape_table(self._read_table(p, unescape=False), drop=True) if p.exists() else None

    def with_metadata(self, df, ids=None):
        """``df`` (one row per item) with the run's metadata columns after its own, joined on
        the items' ids (``ids``, else ``df``'s ``id`` column); a metadata column named like one
        of ``df``'s gets the suffix ``_manifest``. ``df`` as it is when the run has none."""
        meta = self.read_metadata()
        if meta is None or (ids is None and "id" not in df.columns):
            return df
        meta = meta.drop_duplicates("id").rename(
            columns={c: f"{c}_manifest" for c in meta.columns if c != "id" and c in df.columns})
        extra = meta.set_index("id").reindex(list(df["id"] if ids is None else ids))
        return df.assign(**{c: extra[c].to_numpy() for c in extra.columns})

    def write_info(self, info: dict) -> None:
        write_json(self.file(RUN_JSON), info)

    @property
    def info(self) -> dict:
        return read_json(self._need(RUN_JSON))

    @property
    def run_id(self) -> str:
        return self.info["run_id"]

    # -- derived, stamped with the run_id --------------------------------------------------------
    def write_names(self, named: list[dict], method: str | None = None) -> None:
        write_json(self.file(NAMES), {"run_id": self.run_id, "method": method, "clusters": named})

    def read_automatic_names(self) -> list[dict]:
        """Automatic names of this run (``names.json``), [] if absent or from another run."""
        doc = self._read_own(NAMES)  # unreadable (cut short): as absent, as every derived file
        named = doc.get("clusters", []) if doc is not None else []
        return [e for e in named if isinstance(e, dict)] if isinstance(named, list) else []

    def write_level_names(self, by_level: dict[int, list[dict]], method: str | None = None) -> None:
        """Every level's automatic names (``naming.names.name_levels``), keyed by the level's
        index in ``hierarchy.npz`` / the ``level_<k>`` columns: per level a list of
        ``{"cluster", "name", "alternatives"}`` and, where measured, how sure the name is
        (``name_support``, ``name_sure``, ``name_why``; the level in use holds the names of
        ``names.json``)."""
        keep = ("cluster", "name", "alternatives", "name_support", "name_sure", "name_why")
        write_json(self.file(LEVEL_NAMES), {
            "run_id": self.run_id, "method": method,
            "levels": {str(int(k)): [{f: e.get(f) for f in keep if f in e or f in keep[:3]} for e in named]
                       for k, named in sorted(by_level.items())}})

    def read_level_names(self) -> dict[int, list[dict]]:
        """Level -> its automatic names (``level_names.json``); {} if absent, of another run or
        not readable as such (a run made before levels were named when clustering)."""
        doc = self._read_own(LEVEL_NAMES)  # unreadable (cut short): as absent
        if doc is None or not isinstance(doc.get("levels"), dict):
            return {}
        out = {}
        for k, named in doc["levels"].items():
            try:
                out[int(k)] = [e for e in named if isinstance(e, dict) and isinstance(e.get("cluster"), int)]
            except (TypeError, ValueError):
                continue
        return dict(sorted(out.items()))

    def write_map(self, xy: np.ndarray, meta: dict) -> None:
        write_npy(self.file(MAP), np.asarray(xy, dtype=np.float32))
        write_json(self.file(MAP_META), {**meta, "run_id": self.run_id, "n": int(len(xy))})

    def read_map(self, n: int | None = None) -> tuple[np.ndarray, dict] | None:
        """The cached 2-D map and its metadata, or None if absent, of another run or size."""
        p, mp = self.file(MAP), self.file(MAP_META)
        if not (p.exists() and mp.exists()):
            return None
        meta = self._read_own(MAP_META)  # unreadable: made again, as a map of another run
        if meta is None:
            return None
        try:
            xy = np.load(p, allow_pickle=False)
        except NPY_ERRORS:  # cut short: a cache, made again (a ValueError out of the report before)
            return None
        if n is not None and len(xy) != n:
            return None
        return xy, meta

    # -- the studio's work: the edit log and the curated state derived from it ------------------
    def edits(self, create: bool = True):
        """The studio's edit log (``edits.sqlite``, append-only) of this run; ``create=False``
        gives None when the run has none."""
        from .studio.editlog import EditLog

        p = self.file(EDITS)
        if not create and not p.exists():
            return None
        return EditLog(p, self.run_id)

    def write_curated(self, doc: dict) -> None:
        """The curated clusters (names, tags, junk flags, sizes) derived from the edit log;
        ``doc["edits_seq"]`` says which edit it reflects."""
        write_json(self.file(CURATED), {**doc, "run_id": self.run_id})

    def _read_own(self, name: str) -> dict | None:
        """A JSON file derived for this run (it records the ``run_id``): None if absent,
        unreadable or written for another run (a run folder replaced in place)."""
        p = self.file(name)
        if not p.exists():
            return None
        try:
            doc = read_json(p)
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) and doc.get("run_id") == self.run_id else None

    def read_curated(self) -> dict | None:
        """``curated.json`` of this run, None if absent or derived from another run."""
        return self._read_own(CURATED)

    def write_carry(self, doc: dict) -> None:
        """What carrying a previous run's curation into this run did (``studio.carry``)."""
        write_json(self.file(CARRY), {**doc, "run_id": self.run_id})

    def read_carry(self) -> dict | None:
        """``carry.json`` of this run, None if absent, unreadable or written for another run."""
        return self._read_own(CARRY)

    def exports_dir(self) -> Path:
        """Where the studio writes exports (``exports/``)."""
        return self.file(EXPORTS)

    @property
    def models(self):
        from .persist import ModelStore

        return ModelStore(self.file(MODELS))

    def _read_table(self, p: Path, **kw):
        """``fileio.read_table`` of one of the run's tables; one cut short or overwritten is a
        :class:`RunDirError` naming it (pyarrow's ArrowInvalid was an internal error of evaluate,
        report and the studio)."""
        try:
            return read_table(p, **kw)
        except (ValueError, OSError) as e:  # ArrowInvalid is a ValueError, ArrowIOError an OSError
            raise RunDirError(f"{p} cannot be read ({str(e).strip() or type(e).__name__}); the run "
                              "folder is damaged, re-run cluster") from None

    def _load_npy(self, p: Path, mmap: bool = False) -> np.ndarray:
        """A ``.npy`` of the run, read (or memory-mapped); one cut short (a copy or a disk that
        filled up), emptied or overwritten by another file is a :class:`RunDirError` naming it
        (numpy's ValueError / EOFError was an internal error of tune, report and evaluate)."""
        try:
            return np.load(p, allow_pickle=False, mmap_mode="r" if mmap else None)
        except NPY_ERRORS as e:
            why = str(e).strip() or type(e).__name__
            if "pickled" in why:  # numpy's word for any file without the .npy header
                why = "not a numpy array file"
            raise RunDirError(f"{p} cannot be read ({why}); the run folder is damaged, re-run cluster") from None

    def _need(self, name: str) -> Path:
        p = self.file(name)
        if not p.exists():
            raise RunDirError(f"{self.path} has no {name}; is it a run folder written by "
                              "`mediacluster cluster`?")
        return p


# what numpy's np.load raises for a .npy / .npz cut short, emptied or overwritten by other bytes
NPY_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


class TableWriter:
    """A Parquet table (and optionally the same rows as CSV) written batch by batch.

    The first batch fixes the schema (columns that are all empty in it become text); ``id`` and
    ``path`` are written in their text form (:func:`texts`) and every row gets ``escaped``.
    Files appear under their final names only when :meth:`close` succeeds."""

    def __init__(self, path: Path, csv_path: Path | None = None, required=("id",), prepare=None):
        self.path, self.csv_path, self.required = Path(path), csv_path, tuple(required)
        self.prepare = prepare  # applied to every batch first (the run's stored form of paths)
        self.schema = None
        self.rows = 0
        self._writer = None
        self._ctx: list = []
        self._tmp: dict[str, str] = {}

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(ok=exc_type is None)
        return False

    def _open(self, key: str, path: Path) -> str:
        ctx = atomic_path(path)
        self._tmp[key] = ctx.__enter__()
        self._ctx.append(ctx)
        return self._tmp[key]

    def write(self, df) -> None:
        """Append the rows of a pandas DataFrame (the same columns every time)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.schema is None:
            missing = set(self.required) - set(df.columns)
            if missing:
                raise RunDirError(f"{self.path.name} needs columns {sorted(missing)}")
        if self.prepare is not None:
            df = self.prepare(df)
        df = escape_table(df)  # the one rule of fileio: rows with non-UTF-8 text, escaped
        if ESCAPED not in df:
            df = df.assign(**{ESCAPED: False})
        else:
            df = df.assign(**{ESCAPED: df[ESCAPED].fillna(False).astype(bool)})
        if self.schema is None:
            table = pa.Table.from_pandas(df, preserve_index=False)
            fields = [pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f for f in table.schema]
            self.schema = pa.schema(fields)
            table = table.cast(self.schema)
            self._writer = pq.ParquetWriter(self._open("parquet", self.path), self.schema)
            if self.csv_path is not None:
                self._open("csv", self.csv_path)
        else:
            if list(df.columns) != self.schema.names:
                raise RunDirError(f"{self.path.name}: batch columns {list(df.columns)} differ from "
                                  f"the first batch's {self.schema.names}")
            table = pa.Table.from_pandas(df, schema=self.schema, preserve_index=False)
        self._writer.write_table(table)
        if self.csv_path is not None:  # pandas' CSV format, as the one-shot writer gives it
            df.to_csv(self._tmp["csv"], index=False, header=self.rows == 0, mode="a")
        self.rows += len(df)

    def close(self, ok: bool = True) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        err = None if ok else RuntimeError("aborted")
        while self._ctx:
            ctx = self._ctx.pop()
            if ok:
                ctx.__exit__(None, None, None)
            else:
                try:
                    ctx.__exit__(RuntimeError, err, None)
                except RuntimeError:
                    pass


class EmbeddingsWriter:
    """``embeddings.npy`` of a known shape, filled by row ranges with plain writes (no memory
    map: written pages of a map would count in the writer's resident memory)."""

    def __init__(self, path: Path, n: int, dim: int):
        self.path, self.n, self.dim = Path(path), int(n), int(dim)
        self.written = 0
        mm = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.float32, shape=(self.n, self.dim))
        self.offset = int(mm.offset)
        del mm
        self._fd = os.open(self.path, os.O_WRONLY)

    def __enter__(self) -> EmbeddingsWriter:
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def write(self, start: int, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.dim or start < 0 or start + len(rows) > self.n:
            raise RunDirError(f"embeddings rows {start}:{start + len(rows)} of shape {rows.shape} do "
                              f"not fit ({self.n}, {self.dim})")
        data = memoryview(rows.reshape(-1).view(np.uint8))
        pos, done = self.offset + start * self.dim * 4, 0
        while done < len(data):
            done += os.pwrite(self._fd, data[done:], pos + done)
        self.written += len(rows)

    def close(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None


class ShardSet:
    """Parquet shards of one job, each written atomically under its number (``shard-N``):
    a shard is there whole or not at all, so a re-run reads what is done and redoes the rest."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, key: int) -> Path:
        return self.folder / SHARD_PATTERN.format(int(key))

    def keys(self) -> list[int]:
        out = []
        for p in self.folder.glob("shard-*.parquet"):
            try:
                out.append(int(p.stem.split("-", 1)[1]))
            except ValueError:
                continue
        return sorted(out)

    def write(self, key: int, table) -> None:
        import pyarrow.parquet as pq

        with atomic_path(self.path(key)) as tmp:
            pq.write_table(table, tmp)

    def read(self, key: int, columns: list[str] | None = None):
        import pyarrow.parquet as pq

        # the file reader, not pq.read_table's dataset scan: that one finishes tearing down on a
        # pyarrow worker thread after returning, which can still be running at exit (see
        # fileio._read_parquet)
        return pq.ParquetFile(self.path(key)).read(columns=columns)


def work_path(path: str | os.PathLike) -> Path:
    """``.DIR.work``: work of a run being built that outlives a failed build (shards)."""
    path = Path(os.path.abspath(path))
    return path.parent / f".{path.name}.work"


class RunDir(_Files):
    """A published run folder. ``RunDir.open(path)`` checks it; ``RunDir.create(path)`` builds
    a new one (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, collection_root: str | os.PathLike | None = None):
        self.path = Path(path)
        self._given_root = collection_root
        self._root: Root | None = None

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def collection_root(self) -> Root:
        """Where the collection's files are now (``locations.find``): the root given to
        :meth:`open` (``--collection-root``), else the recorded one, else the one at the same
        place relative to the run folder. A run made before roots were recorded (absolute
        paths) has its items' common folder as root, moved to the given one."""
        if self._root is None:
            info = self.info if self.file(RUN_JSON).exists() else {}
            if isinstance(info.get(ROOT_KEY), str):
                self._root = find_root(info[ROOT_KEY], info.get(ROOT_FROM_RUN_KEY), self.path, given=self._given_root)
            elif self._given_root is None:
                self._root = Root(path=None)
            else:
                items = self._read_table(self._need(ITEMS), columns=["path"])
                self._root = legacy_root(items["path"].tolist(), given=self._given_root)
        return self._root

    def _storing_root(self, paths=None) -> Root:
        # a run from before roots were recorded keeps absolute paths: its run.json names no root
        recorded = self.file(RUN_JSON).exists() and isinstance(self.info.get(ROOT_KEY), str)
        return self.collection_root if recorded else Root(path=None)

    @staticmethod
    def is_run(path: str | os.PathLike) -> bool:
        p = Path(path) / RUN_JSON
        if not os.path.isfile(p):  # False on any OSError (a path over PATH_MAX: Path.is_file raised)
            return False
        try:
            doc = read_json(p)
        except (OSError, ValueError):
            return False
        return isinstance(doc, dict) and doc.get("schema") == SCHEMA  # another tool's run.json: not a run

    @staticmethod
    def table_root(table: str | os.PathLike) -> str | None:
        """The folder the paths of a run's table (``items.parquet``, ``assignments.*``,
        ``duplicates.parquet``) are relative to, when ``table`` is one read as a manifest: the
        run's collection root (:attr:`collection_root`); None for any other table, or a run
        that records no root (its paths are absolute)."""
        table = Path(os.path.abspath(table))
        if table.name not in (ITEMS, ASSIGNMENTS, ASSIGNMENTS_CSV, DUPLICATES) or not RunDir.is_run(table.parent):
            return None
        info = read_json(table.parent / RUN_JSON)
        if not isinstance(info.get(ROOT_KEY), str):
            return None
        near = info.get(ROOT_FROM_RUN_KEY)
        return find_root(info[ROOT_KEY], near if isinstance(near, str) else None, table.parent).path

    @classmethod
    def open(cls, path: str | os.PathLike, collection_root: str | os.PathLike | None = None) -> RunDir:
        """A run folder for reading; refuses anything else with a message that says what it is.
        ``collection_root``: where the collection's files are now, when they moved (see
        :attr:`collection_root`)."""
        from .locations import check_given

        check_given(collection_root)
        path = Path(path)
        _recover(path)
        if not path.exists():
            raise RunDirError(f"{path} does not exist")
        if not path.is_dir():
            raise RunDirError(f"{path} is a file, not a run folder")
        p = path / RUN_JSON
        if not p.exists():
            raise RunDirError(f"{path} is not a run folder (no {RUN_JSON}); write one with "
                              "`mediacluster cluster INPUT --out DIR`")
        try:
            info = read_json(p)
        except (ValueError, UnicodeDecodeError) as e:
            raise RunDirError(f"{p} is not valid JSON ({e}); the folder is damaged, re-run cluster") from e
        if not isinstance(info, dict) or info.get("schema") != SCHEMA:
            raise RunDirError(f"{p} was not written by mediacluster's run folder code "
                              "(written by an older version?); re-run `mediacluster cluster`")
        ver = info.get("schema_version")
        if ver != SCHEMA_VERSION:
            raise RunDirError(f"{path} has run-folder schema version {ver!r}; this mediacluster reads "
                              f"version {SCHEMA_VERSION}; re-run `mediacluster cluster`")
        return cls(path, collection_root=collection_root)

    @classmethod
    def create(cls, path: str | os.PathLike, command: str = "cluster") -> RunBuilder:
        """Start building a new run for ``path`` (use as a context manager; see RunBuilder)."""
        return RunBuilder(Path(path), command)

    @contextmanager
    def writing(self, what: str = "update"):
        """Hold the folder's lock while adding derived files to a published run."""
        with run_lock(self.path, what):
            yield self


class RunBuilder(_Files):
    """A run under construction in a temporary sibling folder; published on success.

    >>> with RunDir.create("runs/demo") as run:           # doctest: +SKIP
    ...     run.write_embeddings(emb); run.write_assignments(df); run.write_info({...})
    >>> # leaving the block without an error swaps the new folder in; an error discards it
    """

    def __init__(self, target: Path, command: str):
        self.shown = Path(os.path.abspath(target))  # as given: the published run is opened so
        # --out a link to a folder (on another disk): the run is built beside the folder and swapped
        # with it, not with the link (which the swap replaced by the new run, the old one left there)
        self.target = Path(os.path.realpath(target))
        self.command = command
        self._run_id = uuid.uuid4().hex[:16]
        self.path = None
        self._lock = None
        self._root: Root | None = None
        self.published: RunDir | None = None
        self.kept_previous: Path | None = None  # the replaced run, kept for a person's files in it

    @property
    def run_id(self) -> str:
        return self._run_id

    def set_collection_root(self, root: str | os.PathLike | None) -> None:
        """The collection root (``Collection.root``: the folder given, a manifest's folder) that
        item paths are stored relative to; set before writing any table. Without one, the
        common folder of the first paths written."""
        if root is not None:
            root = os.path.abspath(os.fspath(root))
            self._root = Root(path=root, recorded=root)

    @property
    def collection_root(self) -> Root:
        return self._root or Root(path=None)

    def _storing_root(self, paths=None) -> Root:
        if self._root is None and paths is not None:
            self.set_collection_root(common_folder(p for p in paths if isinstance(p, str)))
        return self.collection_root

    def check_target(self) -> None:
        t = self.target
        most = _name_max(t.parent) - SIBLING_EXTRA
        if len(os.fsencode(t.name)) > most:  # refused before any work, not once it is published
            raise RunDirError(
                f"--out {t}: the folder's name is {len(os.fsencode(t.name))} bytes; a run keeps "
                f"work beside it under names up to {SIBLING_EXTRA} bytes longer (.NAME.tmp-*, "
                f"NAME.replaced-<run_id>) and this file system allows {most + SIBLING_EXTRA}: "
                f"give a name of at most {most} bytes")
        if t.exists() and not t.is_dir():
            raise RunDirError(f"--out {t} is an existing file; give a folder")
        if t.is_dir() and any(t.iterdir()) and not RunDir.is_run(t) and not _is_legacy_run(t):
            raise RunDirError(f"--out {t} is a folder that is not a mediacluster run; refusing to "
                              "replace it (give a new or empty folder)")

    def __enter__(self) -> RunBuilder:
        self.check_target()
        self._lock = run_lock(self.target, self.command)
        self._lock.__enter__()
        try:
            _recover(self.target)
            _remove_stale_builds(self.target)
            tmp = self.target.parent / f".{self.target.name}.tmp-{os.getpid()}-{self._run_id[:6]}"
            tmp.mkdir(parents=True)
            self.path = tmp
            self._carry_models()
        except OSError as e:
            self._lock.__exit__(None, None, None)
            raise output_error(e, self.target.parent) from e
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        return self

    def _carry_models(self) -> None:
        """The previous run's model versions (and ``LATEST``) into this build's ``models/``
        (``ModelStore.carry_to``: hard links), so a service watching the folder keeps a store
        whose versions outlive a re-run: numbering goes on and ``mediacluster models --use``
        reaches last week's model. A new version published into the previous run while this one
        builds stays in it (kept aside when it held a person's edits). A run that publishes no
        version of its own leaves them out (:meth:`_drop_foreign_models`)."""
        from .persist import ModelStore

        if RunDir.is_run(self.target) and (self.target / MODELS).is_dir():
            try:
                ModelStore(self.target / MODELS).carry_to(self.file(MODELS))
            except BaseException:
                shutil.rmtree(self.path, ignore_errors=True)
                raise

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self.published = self._publish()
            else:
                shutil.rmtree(self.path, ignore_errors=True)
                if isinstance(exc, OutputError):  # full disk, read-only folder: say what is left
                    msg = str(exc).replace(str(self.path), str(self.target))
                    raise OutputError(f"{msg}; nothing was changed in {self.target}") from exc
        finally:
            self._lock.__exit__(None, None, None)
        return False

    # -- large runs: written batch by batch ---------------------------------------------------
    def assignments_writer(self, csv: bool = True) -> TableWriter:
        """Write ``assignments.parquet`` (and ``.csv`` unless ``csv=False``) batch by batch."""
        return TableWriter(self.file(ASSIGNMENTS), self.file(ASSIGNMENTS_CSV) if csv else None,
                           required=("id", "cluster", "status"), prepare=self._store_paths)

    def items_writer(self) -> TableWriter:
        """Write ``items.parquet`` batch by batch (DataFrames with ``id``, ``path``, ``label``)."""
        return TableWriter(self.file(ITEMS), None, required=("id", "path", "label"), prepare=self._store_paths)

    def embeddings_writer(self, n: int, dim: int) -> EmbeddingsWriter:
        return EmbeddingsWriter(self.file(EMBEDDINGS), n, dim)

    def copy_embeddings(self, npy_path: str | os.PathLike) -> None:
        """``embeddings.npy`` as a copy of a float32 ``.npy`` file (the kernel copies the bytes;
        nothing passes through this process's memory)."""
        with atomic_path(self.file(EMBEDDINGS)) as tmp:
            shutil.copyfile(npy_path, tmp)

    def write_extra(self, name: str, values: np.ndarray) -> None:
        write_npy(self.file(f"{EXTRA_PREFIX}{name}.npy"),
                  values.astype(np.float16) if name.endswith("probs") else values)

    def shards(self, job: str) -> ShardSet:
        """Shards of a job (``job``: a name that changes whenever the shards' content would),
        kept in ``.DIR.work/`` until this run is published."""
        return ShardSet(work_path(self.target) / job)

    def base_info(self) -> dict:
        from ._version import versions

        where = self.collection_root.record(self.shown)
        return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "run_id": self._run_id,
                "command": self.command, "versions": versions(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                **({ROOT_KEY: where["root"], ROOT_FROM_RUN_KEY: where["root_from_store"]} if where else {})}

    def write_info(self, info: dict) -> None:
        write_json(self.file(RUN_JSON), {**self.base_info(), **info})

    @property
    def info(self) -> dict:
        p = self.file(RUN_JSON)
        return read_json(p) if p.exists() else self.base_info()

    def _drop_foreign_models(self) -> None:
        """The carried versions go when this run published none of its own (no ``--save-model``):
        ``LATEST`` of a run folder names a model of that run (``assign RUN`` answers with its
        clusters), so the earlier runs' models go with their run, as they always did."""
        from .persist import ModelStore, model_id

        store = ModelStore(self.file(MODELS))
        if store.root.is_dir() and not any(model_id(store.root / v).startswith(f"{self._run_id}/")
                                           for v in store.versions()):
            shutil.rmtree(store.root)

    def _publish(self) -> RunDir:
        if not self.file(RUN_JSON).exists():
            raise RunDirError(f"internal: run {self.target} finished without {RUN_JSON}")
        self._drop_foreign_models()
        _fsync_dir(self.path)
        t = self.target
        try:
            if not t.exists():
                os.rename(self.path, t)
            elif not _exchange(self.path, t):
                old = _old_name(t, self._run_id)
                os.rename(t, old)
                os.rename(self.path, t)
                self.path = old
            _fsync_dir(t.parent)
        except OSError as e:
            raise output_error(e, t) from e
        if self.path.exists():  # the previous run, now at the temporary name
            self._retire(self.path)
        shutil.rmtree(work_path(t), ignore_errors=True)
        return RunDir(self.shown)

    def _retire(self, old: Path) -> None:
        kept = _retire(old, self.target)
        if kept is not None:
            self.kept_previous = kept


def _is_legacy_run(path: Path) -> bool:
    """A run folder written before the schema was recorded (replaceable, not readable)."""
    p = path / RUN_JSON
    try:
        doc = json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and "command" in doc  # not a list or text that holds the word


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def find_run(path: str | os.PathLike) -> RunDir | None:
    """The run folder at ``path`` or one of its parents (e.g. given ``RUN/models/v0001``)."""
    p = Path(path).resolve()
    for cand in (p, *p.parents):
        if RunDir.is_run(cand):
            return RunDir(cand)
    return None
