"""The Ray executor: embedding (Ray Data batch inference, the encoder in actors) and assignment
(the fitted model in actors) on a Ray cluster; the driver writes every result.

How a job survives a lost worker, and a lost driver:

* Work goes out as Ray Data blocks of item rows (embedding) or row ranges (assignment), to a
  pool of actors that each build the encoder / load the model once. Ray re-runs the block of an
  actor that dies (Ray Data's actor pools restart actors and retry their tasks without limit),
  and a block's output reaches the driver only when the block finished, so nothing is
  half-counted.
* The driver writes each result as a Parquet shard, atomically, into the run's work folder
  (``RunBuilder.shards``: ``.OUT.work/<job>/``, kept until the run is published) under a job
  name made from what determines the results (the files and the encoder; the model's arrays and
  the vectors). A re-run of the same command finds the shards, sends out only the rows no shard
  holds, and merges. Every row is merged once: a row found twice (it cannot be, short of a bug)
  is counted in ``duplicates`` and taken once.

Workers need the package installed (the same version) and read the items themselves: image
files by path and the run's ``embeddings.npy`` by row range, so on a cluster of several machines
the input and the output folder must be on a file system all of them see. Results come back
through Ray's object store, so the driver's folder need not be shared for writing.
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
        from ..embed.engine import _prepare  # the local path's decoding, with its skip reasons
        from ..fileio import hash_file

        rows = np.asarray(batch["row"], dtype=np.int64)
        inputs, ok, reasons, lasting, hashes = [], [], [], [], []
        for p in batch["path"]:
            x, reason, last = _prepare(self.enc, str(p))
            reasons.append(reason or "")
            h = ""
            if last:  # the content's own failure: its hash, for the driver to remember
                try:
                    h = hash_file(str(p))
                except OSError:
                    last = False
            lasting.append(bool(last))
            hashes.append(h)
            if reason is None:
                inputs.append(x)
                ok.append(len(reasons) - 1)
        out = {"row": rows, "skip": np.asarray(reasons, dtype=object),
               "lasting": np.asarray(lasting, dtype=bool), "hash": np.asarray(hashes, dtype=object)}
        enc = self.enc.encode(inputs) if inputs else {"embedding": np.zeros((0, self.enc.dim), np.float32)}
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
              progress: bool = True, shards=None, encoder_spec: str | None = None, **_) -> Embeddings:
        """Embeddings of a collection's files, encoded by actors (precomputed vectors pass through).

        Files whose own bytes failed before (remembered by the embedding cache at ``cache_dir``,
        as the local path remembers them: ``EmbeddingStore.failures``) are listed as skipped
        with the same reason and not sent out; those that fail now are remembered as each
        batch comes back. Only the content's own failures, never the machine's."""
        from ..embed.store import EmbeddingStore, cache_error

        if collection.vectors is not None:
            from ..embed import embed_collection

            return embed_collection(collection)
        store = EmbeddingStore(cache_dir)
        try:
            with store:
                return self._embed(collection, encoder, store, batch_size, progress, shards, encoder_spec)
        except sqlite3.Error as e:  # full disk, read-only or damaged cache: the user's to fix
            raise cache_error(e, store.path) from e

    def _embed(self, collection, encoder, cache, batch_size, progress, shards, encoder_spec) -> Embeddings:
        import pyarrow as pa

        from ..embed.store import failure_kind

        ray = self._init()
        spec = encoder_spec or encoder.name
        paths = [str(p) for p in collection.paths]
        n = len(paths)
        job = "embed-" + hash_bytes("\n".join([encoder.id, spec, *paths]).encode("utf-8", "surrogateescape"))
        store = shards(job) if shards is not None else None
        done = self._done_rows(store)
        # the remembered failures of files unchanged since their hash was recorded (by a run on
        # either executor); nothing is read here: the workers hash the files that fail
        fkind = failure_kind(encoder.id, getattr(encoder, "media", "image"))
        stat_time = time.time()
        hashes, stats, _ = cache.known_hashes(paths)
        bad_hash = cache.failures([h for h in hashes if h is not None], fkind)
        known_bad = {i: bad_hash[h] for i, h in enumerate(hashes) if h in bad_hash}
        todo = np.array([i for i in range(n) if i not in done and i not in known_bad], dtype=np.int64)
        self.stats["known_bad"] = len(known_bad)
        self.stats["embed_sent"] = int(len(todo))
        if progress and known_bad:
            print(f"{len(known_bad)} of {n} files known from an earlier run not to decode (not sent to the "
                  "workers; --retry-bad tries them)", file=sys.stderr)
        next_key = (max(store.keys()) + 1) if store is not None and store.keys() else 0
        results: list = [] if store is None else None
        remembered = 0
        if len(todo):
            b = self.embed_block
            blocks = [pa.table({"row": todo[s:s + b], "path": [paths[i] for i in todo[s:s + b]]})
                      for s in range(0, len(todo), b)]
            ds = ray.data.from_arrow(blocks).map_batches(
                EmbedWorker, fn_constructor_kwargs={"spec": spec}, batch_size=max(1, batch_size),
                batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=self._pool()), num_cpus=1)
            clock = _Clock(self.stats, "embed")
            with progress_bar(len(todo), f"embed on ray ({spec})", "img", disable=not progress) as bar:
                for batch in clock.each(ds.iter_batches(batch_size=None, batch_format="pyarrow")):
                    if store is not None:
                        store.write(next_key, batch)
                        next_key += 1
                    else:
                        results.append(batch)
                    remembered += _remember(cache, batch, paths, stats, stat_time, fkind)
                    bar.update(batch.num_rows)
        if remembered:  # those of another decoder version, once unused for a while (as the local path)
            cache.prune_failures()
        tables = results if store is None else [store.read(k) for k in store.keys()]
        return self._merge_embeddings(collection, encoder, tables, n, known_bad)

    @staticmethod
    def _done_rows(store) -> set[int]:
        if store is None:
            return set()
        done: set[int] = set()
        for k in store.keys():
            done.update(store.read(k, columns=["row"]).column(0).to_pylist())
        return done

    def _merge_embeddings(self, collection, encoder, tables: list, n: int, known_bad: dict[int, str]) -> Embeddings:
        rows = np.concatenate([np.zeros(0, np.int64)] + [t.column("row").to_numpy() for t in tables]).astype(np.int64)
        first = np.full(n, -1, dtype=np.int64)
        order = np.arange(len(rows))
        # the first occurrence of every row (there is one; a second would be counted)
        uniq, at = np.unique(rows, return_index=True)
        first[uniq] = order[at]
        self.stats["duplicates"] = int(len(rows) - len(uniq))
        missing = [i for i in np.flatnonzero(first < 0).tolist() if i not in known_bad]
        if missing:
            raise RuntimeError(f"internal: {len(missing)} items have no embedding after the Ray job")
        skip = [r for t in tables for r in t.column("skip").to_pylist()]
        # (shards written before failures were remembered have no such column)
        lasting = [r for t in tables for r in (t.column("lasting").to_pylist() if "lasting" in t.column_names
                                               else [False] * t.num_rows)]
        cols = _columns(tables, encoder.dim)
        kept = [i for i in range(n) if i not in known_bad and not skip[first[i]]]
        take = first[kept]
        skipped = list(collection.skipped)
        for i in range(n):
            if i in known_bad:
                skipped.append(Skipped(collection.paths[i], known_bad[i], lasting=True))
            elif skip[first[i]]:
                skipped.append(Skipped(collection.paths[i], skip[first[i]], lasting=bool(lasting[first[i]])))
        vectors = cols.pop("embedding")[take]
        extras = {}
        for k, v in cols.items():  # stored like the embedding cache stores them
            v = v[take]
            extras[k] = v.astype(np.float16).astype(np.float32) if k.endswith("probs") else v
        return Embeddings(
            ids=[collection.ids[i] for i in kept], vectors=vectors, encoder=encoder.name,
            encoder_version=encoder.id, paths=[collection.paths[i] for i in kept],
            labels=None if collection.labels is None else [collection.labels[i] for i in kept],
            extras=extras, skipped=skipped, root=collection.root)

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


def _remember(cache, batch, paths: list[str], stats: list, stat_time: float, kind: str) -> int:
    """Remember the content's own failures of one batch that came back (``lasting``, hashed by
    the worker), with their files' hashes under the stats the driver took before sending them
    out, so the next run finds them without reading them. How many were remembered."""
    if "lasting" not in batch.column_names:
        return 0
    lasting = batch.column("lasting").to_pylist()
    if not any(lasting):
        return 0
    rows = batch.column("row").to_pylist()
    skip, hashes = batch.column("skip").to_pylist(), batch.column("hash").to_pylist()
    pairs = [(hashes[k], skip[k]) for k in range(len(rows)) if lasting[k] and hashes[k]]
    cache.remember_failures(pairs, kind)
    cache.record_hashes([(paths[rows[k]], stats[rows[k]], hashes[k]) for k in range(len(rows))
                         if lasting[k] and hashes[k] and stats[rows[k]] is not None], stat_time)
    return len(pairs)


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
            if c in ("row", "skip", "lasting", "hash"):
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
