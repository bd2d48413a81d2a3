"""Writing the curated state back into the run folder: ``assignments`` gain ``curated_cluster``,
``curated_name``, ``curated_status``, ``curated_tags``; ``curated.json`` holds the clusters (with
their top ImageNet classes) and the item tags, stamped with the edit number it reflects. Under
the run folder's lock (``run.writing("studio")``).

:class:`StateWriter` writes a snapshot the session hands it (:meth:`StateWriter.write`), and
runs the background thread that asks the session for one (``write_state``) once a burst of
edits has settled: no edit for ``write_delay`` seconds, or :data:`WRITE_MAX_WAIT` seconds after
the first unwritten edit while edits keep coming.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

import numpy as np

from ..errors import RunLockedError
from ..fileio import path_to_text
from ..rundir import RunDir

log = logging.getLogger(__name__)

#: the background writer writes the run's tables once no edit came for WRITE_DELAY seconds,
#: or WRITE_MAX_WAIT seconds after the first unwritten edit while edits keep coming
WRITE_DELAY = 1.0
WRITE_MAX_WAIT = 10.0


class StateWriter:
    """Writes the curated state of ``run`` (items ``ids``; ``imagenet`` probabilities or None,
    for the clusters' top classes) and keeps the edit number written last (``written_seq``,
    starting from what ``curated.json`` says). ``write_state()`` is the session's: it takes a
    snapshot and calls :meth:`write` (the background thread calls it); ``replaced()`` tells
    whether the folder now holds another run (then nothing is written)."""

    def __init__(self, run: RunDir, ids: list[str], imagenet, write_state: Callable[[], int],
                 replaced: Callable[[], bool], write_delay: float = WRITE_DELAY):
        self.run = run
        self.ids = ids
        self.imagenet = imagenet
        self.write_delay = write_delay
        self.written_seq = (run.read_curated() or {}).get("edits_seq", 0)
        self.lock = threading.Lock()  # one writer of the run folder at a time in this process
        self._write_state = write_state
        self._replaced = replaced
        self._last_edit = 0.0
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="studio-writer", daemon=True)

    def start(self, behind: bool) -> None:
        """Start the background thread; ``behind``: the log holds edits not written yet (the
        server was killed before writing them), so write them now."""
        self._thread.start()
        if behind:
            self._dirty.set()

    def edited(self) -> None:
        """An edit was made: write it once the burst settles."""
        self._last_edit = time.monotonic()
        self._dirty.set()

    def changed(self) -> None:
        """The state changed without an edit here (another process's edits): write it."""
        self._dirty.set()

    def stop(self) -> None:
        """Stop the background thread (what is not written yet is the session's to write)."""
        self._stop.set()
        self._dirty.set()
        self._thread.join(timeout=60)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._dirty.wait()
            if self._stop.is_set():
                return
            # write once a burst of edits has settled (no edit for write_delay seconds), but at
            # least every WRITE_MAX_WAIT seconds while edits keep coming
            first = time.monotonic()
            while not self._stop.is_set():
                quiet = time.monotonic() - self._last_edit
                if quiet >= self.write_delay or time.monotonic() - first >= WRITE_MAX_WAIT:
                    break
                self._stop.wait(max(0.05, self.write_delay - quiet))
            self._dirty.clear()
            try:
                self._write_state()
            except RunLockedError as e:
                log.info("studio: run folder busy (%s); writing the curated state later", e)
                self._dirty.set()
                self._stop.wait(2.0)
            except Exception:  # noqa: BLE001 - the edits are safe in the log; keep serving
                log.exception("studio: writing the curated state failed (the edits are kept in the log)")
                self._stop.wait(5.0)

    def current(self, seq: int, changed: int) -> bool:
        """Whether the state written (here or, by ``curated.json``, by another process) is that of
        edit ``seq``, whose last event that changed the state was ``changed`` (records of publishes
        and exports after it change nothing): then ``seq`` counts as written, and nothing is."""
        if changed <= self.written_seq <= seq:
            self.written_seq = seq
            return True
        return self._written_elsewhere(seq, changed)

    def write(self, seq: int, labels: np.ndarray, table: list[dict], status, item_tags: dict[int, list[str]],
              force: bool = False, level_names: dict[int, dict[int, str]] | None = None,
              changed: int | None = None) -> int:
        """Write the state of edit ``seq`` (the curated ``labels``, cluster ``table``, per-item
        ``status`` and ``item_tags``, the names a person gave the levels' groups, ``level_names``,
        ``curated.json``'s ``level_names``: ``naming.run_level_names``' studio layer); returns the
        edit number written.

        The edit log is shared and append-only, so the state of edit ``seq`` is the same in every
        process: when another process (a second studio on the run, the one that made the edit)
        has already written ``seq`` or a later edit, nothing is written (that would be the same
        work twice, or put an older state over a newer one). ``changed``: the last edit at or before
        ``seq`` that changed the state (see :meth:`current`; None: ``seq``)."""
        changed = seq if changed is None else changed
        if not force and self.current(seq, changed):
            return seq
        names = {e["id"]: e["name"] for e in table}
        masses = cluster_classes(self.imagenet, labels, [e["id"] for e in table])
        for e in table:
            e["top_classes"] = masses.get(e["id"], [])
        with self.lock, self.run.writing("studio"):
            if seq <= self.written_seq and not force:
                return self.written_seq  # another thread wrote it meanwhile
            if self._replaced():
                return self.written_seq
            if not force and self._written_elsewhere(seq, changed):
                return seq
            df = self.run.read_assignments()
            df = df.drop(columns=[c for c in df.columns if c.startswith("curated_")])
            df["curated_cluster"] = labels
            df["curated_name"] = [names.get(int(c)) for c in labels]
            df["curated_status"] = status
            df["curated_tags"] = [json.dumps(item_tags[i], ensure_ascii=False) if i in item_tags else None
                                  for i in range(len(labels))]
            self.run.write_assignments(df)
            self.run.write_curated({"edits_seq": seq, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                    "clusters": table,
                                    "level_names": {str(k): {str(c): v for c, v in sorted(named.items())}
                                                    for k, named in sorted((level_names or {}).items()) if named},
                                    "item_tags": {path_to_text(self.ids[i]): t for i, t in item_tags.items()}})
        self.written_seq = seq
        return seq

    def _written_elsewhere(self, seq: int, changed: int | None = None) -> bool:
        """Whether the run's ``curated.json`` already reflects edit ``seq`` or a later one
        (written by another process), or an edit from ``changed`` on (the same state, the log
        being shared and append-only); then this one counts ``seq`` as written."""
        doc = self.run.read_curated()
        on_disk = doc.get("edits_seq") if doc else None
        if isinstance(on_disk, int) and on_disk >= (seq if changed is None else changed):
            self.written_seq = max(self.written_seq, seq)
            return True
        return False


def cluster_classes(imagenet, labels: np.ndarray, ids: list[int], k: int = 5) -> dict[int, list[dict]]:
    """Top ImageNet classes of every cluster in ``ids`` (by ``labels``) in one chunked pass."""
    if imagenet is None or not ids:
        return {}
    from scipy import sparse

    from ..naming.wordnet import imagenet_names

    n = len(labels)
    pos = {c: j for j, c in enumerate(ids)}
    row = np.array([pos.get(int(c), -1) for c in labels])
    mass = np.zeros((len(ids), imagenet.shape[1]))
    for a in range(0, n, 16384):
        r = row[a:a + 16384]
        ok = r >= 0
        if not ok.any():
            continue
        m = sparse.csr_matrix((np.ones(ok.sum()), (r[ok], np.flatnonzero(ok))), shape=(len(ids), len(r)))
        mass += m @ np.asarray(imagenet[a:a + 16384], dtype=np.float32)
    sizes = np.bincount(row[row >= 0], minlength=len(ids))
    names = imagenet_names()
    out = {}
    for c, j in pos.items():
        if sizes[j]:
            top = np.argsort(-mass[j])[:k]
            out[c] = [{"class": names[t], "index": int(t), "share": float(mass[j, t] / sizes[j])} for t in top]
    return out
