"""The Ray executor: embedding (Ray Data batch inference, the encoder in actors) and assignment
(the fitted model in actors) on a Ray cluster; the driver writes every result.

Embedding goes through the embedding cache (``embed.store``), as on the local path:

* The driver looks up each file's content hash in the cache's record of (size, mtime, ctime,
  inode) without reading the file (``EmbeddingStore.known_hashes``). Files without a matching
  record (new, changed, moved / renamed or copied ones) are hashed by Ray tasks that read them
  (``_hash_paths``; the driver records what they found), so the driver knows every file's
  content, as the local path does after hashing. A content with a vector for this encoder id is
  not sent out, nor one remembered as failing by its own content; of the rest one file per
  distinct content is sent out to be encoded (identical files are encoded once), and every file
  of that content takes its vector or its failure.
* A worker hashes each file before decoding it (the local path's order), so the driver keeps
  every vector under its content hash and records the hash for the stat it took before sending
  the file out (``record_hashes``: a file written since no longer matches its record) without
  reading any file itself. A file rewritten or replaced between the worker's hashing and its
  decoding (the stat before hashing differs after decoding: ``embed.store.changed_since``) is
  skipped for this run, nothing kept under the hash, as on the local path.
* Each block that comes back is committed to the cache in one transaction (its vectors and
  extras; the content's own failures), so a killed run keeps its finished blocks and its re-run
  sends out only the rest; the returned vectors are read back from the cache, so a Ray run and
  a local run over the same files give the same numbers bit for bit, whichever embedded them.
  (The cache is the one record of finished embedding work: the job-keyed Parquet shards this
  module wrote before held the same vectors a second time, keyed by the whole path list.)

How a job survives a lost worker, and a lost driver:

* Work goes out as Ray Data blocks of item rows (embedding) or row ranges (assignment), to a
  pool of actors that each build the encoder / load the model once. Ray re-runs the block of an
  actor that dies (Ray Data's actor pools restart actors and retry their tasks without limit),
  and a block's output reaches the driver only when the block finished, so nothing is
  half-counted.
* Embedding: finished blocks are in the embedding cache (above). Assignment: the driver writes
  each range's answers as a Parquet shard, atomically, into the run's work folder
  (``RunBuilder.shards``: ``.OUT.work/<job>/``, kept until the run is published) under a job
  name made from what determines the results (the model's arrays and the vectors). A re-run of
  the same command finds the shards, sends out only the ranges no shard holds, and merges. A row
  that comes back twice (it cannot, short of a bug) is counted in ``duplicates`` and taken once.

Workers need the package installed (the same version) and read the items themselves: image
files by path and the run's ``embeddings.npy`` by row range, so on a cluster of several machines
the input and the output folder must be on a file system all of them see. Results come back
through Ray's object store, so neither the driver's folders nor the cache need be shared.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..data import Embeddings, Skipped
from ..errors import ConfigError
from ..fileio import hash_bytes
from ..progress import progress_bar

#: items per Ray Data block when embedding (the unit of retry)
EMBED_BLOCK = 256


def _hash_paths(paths: list[str]) -> tuple[list[str | None], dict[int, str]]:
    """A Ray task: the content hashes of files without a hash record, read where the task runs
    (``fileio.hash_files``: None and a reason where a file cannot be read)."""
    from ..fileio import hash_files

    return hash_files(paths, workers=4)


def _ray():
    try:
        import ray  # optional extra: only the ray executor needs it
    except ImportError:
        raise ConfigError("--executor ray needs Ray, an optional extra: pip install 'mediacluster[ray]' "
                          "(or pip install 'ray[data]'); --executor local needs nothing more") from None
    return ray


# ------------------------------------------------------------------------------------- workers
class EmbedWorker:
    """A Ray Data actor: one encoder, built once, encoding batches of ``{row, path}``."""

    def __init__(self, spec: str, threads: int = 1):
        from ..encoders import get_encoder

        try:
            self.enc = get_encoder(spec, threads=threads)
        except TypeError:  # an encoder without a thread setting
            self.enc = get_encoder(spec)

    def __call__(self, batch: dict) -> dict:
        from ..data import nonfinite_rows
        from ..embed.engine import CHANGED, NONFINITE, _prepare  # the local path's reasons
        from ..embed.store import changed_since
        from ..fileio import hash_file

        rows = np.asarray(batch["row"], dtype=np.int64)
        inputs, ok, reasons, lasting, hashes = [], [], [], [], []
        for p in batch["path"]:
            p = os.fsdecode(p) if isinstance(p, bytes) else str(p)  # the driver sends the name's bytes
            # the content hash first, as the local path hashes before it decodes: the driver keeps
            # the vector (or the content's own failure) under it and records it for the file
            try:
                before = os.stat(str(p))
                h = hash_file(str(p))
            except OSError as e:  # the machine's failure, not the content's: never remembered
                reasons.append(f"cannot read file: {e.strerror or e}")
                lasting.append(False)
                hashes.append("")
                continue
            x, reason, last = _prepare(self.enc, str(p))
            if changed_since(str(p), before):  # rewritten or replaced since it was hashed: what was
                # decoded is not the hashed content, so nothing is kept under that hash (local path's rule)
                x, reason, last = None, CHANGED, False
            reasons.append(reason or "")
            lasting.append(bool(last))
            hashes.append(h)
            if reason is None:
                inputs.append(x)
                ok.append(len(reasons) - 1)
        out = {"row": rows, "skip": np.asarray(reasons, dtype=object),
               "lasting": np.asarray(lasting, dtype=bool), "hash": np.asarray(hashes, dtype=object),
               "encoder": np.asarray([self.enc.id] * len(rows), dtype=object)}  # the cache's key: checked
        enc = self.enc.encode(inputs) if inputs else {"embedding": np.zeros((0, self.enc.dim), np.float32)}
        for b in nonfinite_rows(enc["embedding"]):  # as the local path: skipped, never kept in the cache
            out["skip"][ok[b]] = NONFINITE
        for k, v in enc.items():
            full = np.zeros((len(rows), v.shape[1]), np.float32)
            full[ok] = v
            out[k] = full
        return out


class AssignWorker:
    """A Ray Data actor: one fitted model, assigning row ranges of a vectors file."""

    def __init__(self, model: dict, sample, ref_xy, vectors: str):
        from ..ingest.stream import NpyVectors
        from ..pipeline import Pipeline

        ray = _ray()
        files = ray.get(model) if isinstance(model, ray.ObjectRef) else model
        self.sample = ray.get(sample) if isinstance(sample, ray.ObjectRef) else sample
        self.ref_xy = ray.get(ref_xy) if isinstance(ref_xy, ray.ObjectRef) else ref_xy
        self.tmp = tempfile.mkdtemp(prefix="mediacluster-model-")
        for name, data in files.items():
            Path(self.tmp, name).write_bytes(data)
        self.pipe = Pipeline.load(self.tmp)
        self.src = NpyVectors(vectors)

    def __call__(self, batch: dict) -> dict:
        from ..scale import assign_batch

        parts = []
        for start, stop in zip(batch["start"].tolist(), batch["stop"].tolist()):
            out = assign_batch(self.pipe, self.sample, start, self.src.read(start, stop), self.ref_xy)
            part = {"row": np.arange(start, stop, dtype=np.int64), "labels": out["labels"],
                    "probabilities": out["probabilities"], "cluster": out["cluster"],
                    "confidence": out["confidence"]}
            if self.ref_xy is not None:
                part["x"], part["y"] = out["xy"][:, 0], out["xy"][:, 1]
            if "levels" in out:  # each row's path through a hierarchy, one column per level
                for lv in range(out["levels"].shape[1]):
                    part[f"level_{lv}"] = out["levels"][:, lv]
            parts.append(part)
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


# ------------------------------------------------------------------------------------- executor
class RayExecutor:
    """Embedding and assignment on Ray (see the module doc). ``address``: a running cluster
    (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``); None starts a local one for this run.
    ``workers``: actors per job (default: the cluster's CPUs)."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, embed_block: int = EMBED_BLOCK):
        self.ray = _ray()
        self.address = address
        self.workers = workers
        self.embed_block = int(embed_block)
        self._owns = False
        self.stats: dict[str, int] = {}

    def _init(self):
        ray = self.ray
        if not ray.is_initialized():
            kw = {"ignore_reinit_error": True, "log_to_driver": False, "configure_logging": False}
            if self.address:
                ray.init(address=self.address, **kw)
            else:
                # a local cluster of its own, as README says: a bare ray.init() would join any
                # cluster already running on the machine (another user's or session's)
                ray.init(address="local", include_dashboard=False, **kw)
                self._owns = True
        import logging

        import ray.data

        logging.getLogger("ray.data").setLevel(logging.ERROR)  # no per-dataset lines on our output
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # ours show rate and ETA
        ctx.verbose_stats_logs = False
        if hasattr(ctx, "enable_rich_progress_bars"):
            ctx.enable_rich_progress_bars = False
        return ray

    def _pool(self) -> int:
        if self.workers:
            return int(self.workers)
        cpus = int(self.ray.cluster_resources().get("CPU", 1))
        return max(1, cpus)

    def info(self) -> dict:
        out = {"name": self.name, "address": self.address or "local", "workers": self.workers}
        if self.stats:
            out["stats"] = dict(self.stats)
        return out

    def close(self) -> None:
        if self._owns and self.ray.is_initialized():
            self.ray.shutdown()
            self._owns = False

    # -- embedding -------------------------------------------------------------------------------
    def embed(self, collection, encoder, cache_dir=None, batch_size: int = 16, workers=None,
              progress: bool = True, encoder_spec: str | None = None, **_) -> Embeddings:
        """Embeddings of a collection's files, encoded by actors (precomputed vectors pass through),
        through the embedding cache at ``cache_dir`` as on the local path (see the module doc).

        Files whose vectors the cache holds for this encoder, found by its record of their
        stat without reading them, are not sent out, nor those whose own bytes failed before
        (``EmbeddingStore.failures``: listed as skipped with the same reason). What comes back
        is kept in the cache block by block: vectors and extras, and the content's own failures
        (never the machine's). A cache nobody may write is replaced by a temporary one, with a
        warning, as on the local path (``embed.store.open_store``)."""
        from ..embed.store import cache_error, open_store

        if collection.vectors is not None:
            from ..embed import embed_collection

            return embed_collection(collection)
        store = open_store(cache_dir)
        try:
            with store:
                return self._embed(collection, encoder, store, batch_size, progress, encoder_spec)
        except sqlite3.Error as e:  # full disk, read-only or damaged cache: the user's to fix
            raise cache_error(e, store.path) from e

    def _embed(self, collection, encoder, cache, batch_size, progress, encoder_spec) -> Embeddings:
        import pyarrow as pa

        from ..embed.engine import NONFINITE_CACHED, read_finite
        from ..embed.store import failure_kind

        spec = encoder_spec or encoder.name
        paths = [str(p) for p in collection.paths]
        n = len(paths)
        fkind = failure_kind(encoder.id, getattr(encoder, "media", "image"))
        # the hashes of files unchanged since they were recorded (by a run on either executor, or
        # any command on the cache): nothing is read here; Ray tasks hash the files without one
        stat_time = time.time()
        hashes, stats, errors = cache.known_hashes(paths)
        unknown = [i for i in range(n) if hashes[i] is None and i not in errors]
        self.stats["hashed_on_workers"] = len(unknown)
        if unknown:
            self._hash_on_workers(paths, unknown, hashes, stats, errors, cache, stat_time, progress)
        known = [h for h in hashes if h is not None]
        have = cache.contains(known, encoder.id)
        bad_hash = cache.failures([h for h in known if h not in have], fkind)
        skip: list[str | None] = [None] * n  # why each row is skipped
        lasting = [False] * n
        for i, reason in errors.items():  # cannot be stat'ed or read: as the local path's hashing says
            skip[i] = reason
        known_bad = 0
        for i, h in enumerate(hashes):
            if h in bad_hash:
                skip[i], lasting[i] = bad_hash[h], True
                known_bad += 1
        first: dict[str, int] = {}  # one file per content the cache lacks: identical files encoded once
        for i in range(n):
            if skip[i] is None and hashes[i] not in have:
                first.setdefault(hashes[i], i)
        todo = np.array(sorted(first.values()), dtype=np.int64)
        sent_hash = {int(r): hashes[r] for r in todo}
        cached = sum(h in have for h in hashes)
        self.stats.update(cached=cached, known_bad=known_bad, embed_sent=int(len(todo)))
        if progress:
            bad = (f", {known_bad} known from an earlier run not to decode (not sent; --retry-bad tries "
                   "them)") if known_bad else ""
            print(f"embedding cache {cache.path}: {cached} of {n} files already embedded, {len(todo)} "
                  f"to send to the Ray workers{bad}", file=sys.stderr)
        remembered = encoded = 0
        returned = np.zeros(n, dtype=bool)
        duplicates = 0
        if len(todo):
            ray = self._init()  # only when there is work: a re-run with nothing new starts no actors
            b = self.embed_block
            # paths as their bytes: a name that is not UTF-8 (a str with surrogate escapes) is no
            # Arrow string; the workers decode them back (os.fsdecode)
            blocks = [pa.table({"row": todo[s:s + b],
                                "path": pa.array([os.fsencode(paths[i]) for i in todo[s:s + b]], pa.binary())})
                      for s in range(0, len(todo), b)]
            ds = ray.data.from_arrow(blocks).map_batches(
                EmbedWorker, fn_constructor_kwargs={"spec": spec}, batch_size=max(1, batch_size),
                batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=self._pool()), num_cpus=1)
            clock = _Clock(self.stats, "embed")
            with progress_bar(len(todo), f"embed on ray ({spec})", "img", disable=not progress) as bar:
                for batch in clock.each(ds.iter_batches(batch_size=None, batch_format="pyarrow")):
                    rows = batch.column("row").to_numpy().astype(np.int64)
                    duplicates += int(returned[rows].sum())
                    returned[rows] = True
                    got = _keep_batch(cache, batch, encoder, paths, stats, stat_time, fkind)
                    for r, h, reason, last in zip(rows.tolist(), got["hash"], got["skip"], got["lasting"]):
                        if h:
                            hashes[r] = h
                        if reason:
                            skip[r], lasting[r] = reason, last
                    remembered += got["remembered"]
                    encoded += got["encoded"]
                    bar.update(batch.num_rows)
        self.stats["duplicates"] = duplicates
        missing = int(len(todo) - returned[todo].sum())
        if missing:
            raise RuntimeError(f"internal: {missing} items have no embedding after the Ray job")
        by_first = {h: r for r, h in sent_hash.items()}
        for i in range(n):  # the other files of a content sent out take what its file got
            r = by_first.get(hashes[i]) if skip[i] is None else None
            if r is not None and r != i and skip[r] is not None:
                skip[i], lasting[i] = skip[r], lasting[r]
        if len(todo):  # a content that changed between the hashing and the encoding has no vector
            stored = cache.contains([hashes[i] for i in range(n) if skip[i] is None], encoder.id)
            for i in range(n):
                if skip[i] is None and hashes[i] not in stored:
                    skip[i] = "the file changed while it was being embedded (run again)"
        if remembered:  # those of another decoder version, once unused for a while (as the local path)
            cache.prune_failures()
        kept = [i for i in range(n) if skip[i] is None]
        # read back from the cache, as the local path does: the same numbers whoever embedded them
        vectors, extras, bad = read_finite(cache, [hashes[i] for i in kept], encoder.id)
        for r in bad:
            skip[kept[r]] = NONFINITE_CACHED
        kept = [i for i in kept if skip[i] is None]
        if not kept:
            vectors = np.zeros((0, encoder.dim), np.float32)
        skipped = list(collection.skipped)
        skipped.extend(Skipped(collection.paths[i], skip[i], lasting=lasting[i]) for i in range(n) if skip[i] is not None)
        emb = Embeddings(
            ids=[collection.ids[i] for i in kept], vectors=vectors, encoder=encoder.name,
            encoder_version=encoder.id, paths=[collection.paths[i] for i in kept],
            labels=None if collection.labels is None else [collection.labels[i] for i in kept],
            extras=extras, skipped=skipped, root=collection.root)
        emb.content_hashes = [hashes[i] for i in kept]  # the cache's hash: exact duplicates for free
        emb.cache_stats = {"items": n, "distinct": len({h for h in hashes if h is not None}),
                           "cached": len({h for h in hashes if h in have}),
                           "encoded": encoded, "skipped": len(skipped) - len(collection.skipped),
                           "decoded": int(len(todo)), "known_bad": known_bad}
        return emb

    def _hash_on_workers(self, paths, rows, hashes, stats, errors, cache, stat_time, progress) -> None:
        """Fill ``hashes`` (or ``errors``) at ``rows`` by Ray tasks that read the files, blocks of
        ``embed_block`` files each (a task whose worker dies is retried by Ray), and record each
        block's hashes under the stats taken at ``stat_time``, so the next run reads nothing."""
        ray = self._init()
        task = ray.remote(num_cpus=1)(_hash_paths)
        b = self.embed_block
        pending = {task.remote([paths[i] for i in rows[s:s + b]]): rows[s:s + b] for s in range(0, len(rows), b)}
        with progress_bar(len(rows), "hash on ray (files without a record)", "file", disable=not progress) as bar:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    block = pending.pop(ref)
                    got, failed = ray.get(ref)
                    for k, i in enumerate(block):
                        if k in failed:
                            errors[i] = failed[k]
                        else:
                            hashes[i] = got[k]
                    cache.record_hashes([(paths[i], stats[i], hashes[i]) for i in block
                                         if hashes[i] is not None and stats[i] is not None], stat_time)
                    bar.update(len(block))

    # -- assignment ------------------------------------------------------------------------------
    def assign(self, vectors_path: str, n: int, pipe, sample: np.ndarray, ref_xy=None,
               batch_rows: int = 65_536, progress: bool = True, shards=None
               ) -> Iterator[tuple[int, dict]]:
        """``(first_row, answer)`` per range of ``batch_rows`` rows, in row order, computed by
        actors holding the model; each range is a shard of the job, so a re-run resumes."""
        import pyarrow as pa

        ray = self._init()
        files = _model_files(pipe)
        st = os.stat(vectors_path)
        key = hash_bytes(b"".join([
            _array_digest(pipe, sample, ref_xy).encode(), f"{n} {batch_rows} {st.st_size}".encode()]))
        store = shards(f"assign-{key}") if shards is not None else None
        ranges = [(s, min(n, s + batch_rows)) for s in range(0, n, batch_rows)]
        done = set(store.keys()) if store is not None else set()
        todo = [r for r in ranges if r[0] // batch_rows not in done]
        self.stats["assign_ranges_resumed"] = len(ranges) - len(todo)
        got: dict[int, pa.Table] = {}
        if todo:
            ds = ray.data.from_arrow([pa.table({"start": [a], "stop": [b]}) for a, b in todo]).map_batches(
                AssignWorker, fn_constructor_kwargs={"model": ray.put(files), "sample": ray.put(sample),
                                                     "ref_xy": ray.put(ref_xy), "vectors": str(vectors_path)},
                batch_size=1, batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=min(self._pool(), len(todo))), num_cpus=1)
            pending: dict[int, list] = {}
            clock = _Clock(self.stats, "assign")
            with progress_bar(sum(b - a for a, b in todo), "assign on ray", "item", disable=not progress) as bar:
                for batch in clock.each(ds.iter_batches(batch_size=None, batch_format="pyarrow")):
                    which = batch.column("row").to_numpy() // batch_rows
                    for k in np.unique(which).tolist():
                        part = batch.filter(pa.array(which == k))
                        pending.setdefault(k, []).append(part)
                        a, b = ranges[k]
                        if sum(p.num_rows for p in pending[k]) >= b - a:
                            t = pa.concat_tables(pending.pop(k)).sort_by("row")
                            if store is not None:
                                store.write(k, t)
                            else:
                                got[k] = t
                            bar.update(b - a)
        for k, (a, b) in enumerate(ranges):
            t = got.pop(k) if store is None else store.read(k)
            rows = t.column("row").to_numpy()
            if len(rows) != b - a or rows[0] != a or (len(rows) > 1 and (np.diff(rows) != 1).any()):
                raise RuntimeError(f"internal: shard {k} holds rows that are not {a}..{b - 1}")
            out = {c: t.column(c).to_numpy() for c in ("labels", "probabilities", "cluster", "confidence")}
            if "x" in t.column_names:
                out["xy"] = np.stack([t.column("x").to_numpy(), t.column("y").to_numpy()], axis=1)
            level_cols = sorted((c for c in t.column_names if c.startswith("level_")), key=lambda c: int(c[6:]))
            if level_cols:
                out["levels"] = np.stack([t.column(c).to_numpy() for c in level_cols], axis=1)
            from ..data import status_of

            out["status"] = status_of(out["labels"])
            yield a, out


def _keep_batch(cache, batch, encoder, paths: list[str], stats: list, stat_time: float, kind: str) -> dict:
    """Commit one block that came back to the cache: the vectors and extras of its files that
    were encoded, under the hashes the workers computed (one transaction), the content's own
    failures (``lasting``), and the hash of every file read, under the stat the driver took
    before sending it out, so the next run finds them without reading them. Returns the block's
    ``hash`` / ``skip`` / ``lasting`` columns as lists, and how many were ``encoded`` and
    ``remembered`` (failures)."""
    rows = batch.column("row").to_pylist()
    skip, hashes = batch.column("skip").to_pylist(), batch.column("hash").to_pylist()
    lasting = batch.column("lasting").to_pylist()
    other = set(batch.column("encoder").to_pylist()) - {encoder.id}
    if other:  # another version or model on the workers: its vectors must not be kept under this id
        raise ConfigError(f"the Ray workers' encoder is {sorted(other)[0]!r}, the driver's {encoder.id!r}: install "
                          "the same mediacluster version and model files on every node")
    ok = [k for k in range(len(rows)) if not skip[k] and hashes[k]]
    if ok:
        cols = _columns([batch], encoder.dim)
        cache.put([hashes[k] for k in ok], encoder.id, {c: v[ok] for c, v in cols.items()})
    pairs = [(hashes[k], skip[k]) for k in range(len(rows)) if skip[k] and lasting[k] and hashes[k]]
    if pairs:
        cache.remember_failures(pairs, kind)
    cache.record_hashes([(paths[rows[k]], stats[rows[k]], hashes[k]) for k in range(len(rows))
                         if hashes[k] and stats[rows[k]] is not None], stat_time)
    return {"hash": hashes, "skip": skip, "lasting": lasting, "encoded": len(ok), "remembered": len(pairs)}


class _Clock:
    """Into ``stats``: seconds until the first result came back (actors starting: processes,
    imports, the model) and the rate after it (``<job>_first_result_s``, ``<job>_steady_per_s``)."""

    def __init__(self, stats: dict, job: str):
        import time

        self.stats, self.job, self.time = stats, job, time
        self.t0 = time.perf_counter()

    def each(self, batches):
        first, rows = None, 0
        for b in batches:
            now = self.time.perf_counter()
            if first is None:
                first = now
                self.stats[f"{self.job}_first_result_s"] = round(now - self.t0, 2)
            else:
                rows += b.num_rows
            yield b
        if first is not None:
            span = self.time.perf_counter() - first
            self.stats[f"{self.job}_steady_per_s"] = round(rows / span, 1) if span > 0 and rows else None


def _columns(tables: list, dim: int) -> dict[str, np.ndarray]:
    """The output columns of the batches, each as one (rows, d) float32 array. A worker's batch
    whose every file failed carries the embedding only (zeros: the encoder was not run), not the
    extras; Ray Data fills such a batch's missing columns with nulls when it joins it to others
    of its block, and a table may lack them altogether: those rows are zeros (they are skipped
    rows, never read)."""
    import pyarrow as pa

    dims: dict[str, int] = {"embedding": dim}
    chunks: list[dict[str, list]] = []
    for t in tables:
        part: dict[str, list] = {}
        for c in t.column_names:
            if c in ("row", "skip", "lasting", "hash", "encoder"):
                continue
            col = t.column(c)
            part[c] = []
            for ch in (col.chunks if isinstance(col, pa.ChunkedArray) else [col]):
                m = None if ch.null_count == len(ch) else _matrix(ch)
                if m is not None:
                    dims.setdefault(c, m.shape[1])
                part[c].append((len(ch), m))
        chunks.append(part)
    out = {}
    for c, d in dims.items():
        pieces = [np.zeros((0, d), np.float32)]
        for part, t in zip(chunks, tables):
            if c not in part:
                pieces.append(np.zeros((t.num_rows, d), np.float32))
                continue
            pieces.extend(np.zeros((k, d), np.float32) if m is None else m for k, m in part[c])
        out[c] = np.concatenate(pieces)
    return out


def _matrix(col) -> np.ndarray:
    """A Ray Data tensor / list column as an (n, d) float32 array."""
    import pyarrow as pa

    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    try:
        return np.asarray(col.to_numpy_ndarray(), dtype=np.float32)  # Ray's tensor extension type
    except AttributeError:
        pass
    vals = col.flatten() if hasattr(col, "flatten") else col.storage.flatten()
    return np.asarray(vals.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(len(col), -1)


def _model_files(pipe) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory(prefix="mediacluster-model-") as d:
        pipe.save(Path(d) / "m")
        return {p.name: p.read_bytes() for p in (Path(d) / "m").iterdir() if p.is_file()}


def _array_digest(pipe, sample, ref_xy) -> str:
    """What decides the answers: the fitted arrays, the sample rows and the map skeleton."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for a in (pipe.labels_, pipe.cluster_, pipe.probabilities_, pipe.confidence_, pipe.embedding_,
              pipe.ref_vectors_, sample, ref_xy):
        if a is not None:
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()
