"""Vectors read from disk a batch at a time: ``.npy`` files and Parquet files or folders of shards.

``open_vectors(path)`` returns a :class:`VectorSource` that knows the number of rows and the
dimension without reading the vectors, and hands them out as float32 batches (``batches``),
row ranges (``read``) or sorted row sets (``take``), so a collection of a million vectors is
never one array in memory.

* ``.npy``: the header is read with ``np.load(mmap_mode="r")`` (which validates it and gives
  the data offset); the rows are then read window by window with ``os.preadv`` into a fresh
  buffer. A whole-file memory map would do the same reads, but every page it touches stays
  mapped into the process and counts in its resident memory until the map is dropped: streaming
  a 5 GB file through one map shows a 5 GB peak RSS although the pages are only file cache.
* Parquet: one file or a folder of ``*.parquet`` shards (sorted by name), with a list /
  fixed-size-list vector column (``vector``, ``embedding``, ...) and optional ``id``, ``label``
  and ``path`` columns; read one row group at a time.
* Anything else (``.npz``, CSV, an array already in memory): :class:`ArrayVectors` over the
  array (``.npz`` members are compressed or zipped, so they cannot be read by row range).

Every batch is checked: non-finite values are refused with the row numbers. Ids must be unique.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..data import check_finite
from ..errors import InputError

#: rows per batch when streaming (65,536 x 1,280 float32 = 320 MB)
BATCH_ROWS = 65_536
PARQUET_SUFFIXES = (".parquet", ".pq")
VECTOR_COLUMNS = ("vector", "vectors", "embedding", "embeddings", "features", "feature")


class VectorSource:
    """Rows of an (n, dim) matrix on disk, with optional ids, labels and paths."""

    n: int
    dim: int
    path: str
    shown: str | None = None  # the file messages name, when ``path`` is a copy of it

    def __len__(self) -> int:
        return self.n

    # -- subclasses ----------------------------------------------------------------------------
    def _read(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    def _column(self, name: str) -> list | None:
        return None

    # -- the interface -------------------------------------------------------------------------
    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as C-contiguous float32 (finite, checked)."""
        start, stop = max(0, int(start)), min(self.n, int(stop))
        X = self._read(start, stop) if stop > start else np.zeros((0, self.dim), np.float32)
        return _checked(X, start, self.shown or self.path)

    def batches(self, rows: int = BATCH_ROWS, start: int = 0, stop: int | None = None
                ) -> Iterator[tuple[int, np.ndarray]]:
        """``(first_row, float32 array)`` per batch of ``rows`` rows, in order."""
        stop = self.n if stop is None else min(stop, self.n)
        for s in range(start, stop, rows):
            yield s, self.read(s, min(stop, s + rows))

    def take(self, index) -> np.ndarray:
        """The rows ``index`` (sorted, unique) as one float32 array, reading window by window."""
        index = np.asarray(index, dtype=np.int64)
        if len(index) and (np.any(np.diff(index) <= 0) or index[0] < 0 or index[-1] >= self.n):
            raise ValueError("take() needs sorted unique row numbers inside the source")
        out = np.empty((len(index), self.dim), np.float32)
        at = 0
        for s in range(0, self.n, BATCH_ROWS):
            lo, hi = np.searchsorted(index, [s, s + BATCH_ROWS])
            if hi == lo:
                continue
            out[at:at + hi - lo] = self._take_window(s, min(self.n, s + BATCH_ROWS), index[lo:hi])
            at += hi - lo
        return out

    def _take_window(self, start: int, stop: int, rows: np.ndarray) -> np.ndarray:
        return self.read(start, stop)[rows - start]

    def ids(self) -> list[str]:
        col = self._column("id")
        if col is None:
            return [str(i) for i in range(self.n)]
        ids = [_text(v) for v in col]
        empty = next((i for i, v in enumerate(ids) if not v), None)
        if empty is not None:
            raise InputError(f"{self.path}: row {empty} has an empty id")
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            dup = [i for i in ids if i in seen or seen.add(i)]
            raise InputError(f"{self.path}: ids are not unique (e.g. {dup[:3]})")
        return ids

    def labels(self) -> list[str | None] | None:
        col = self._column("label")
        return None if col is None else [_text(v) or None for v in col]

    def paths(self) -> list[str | None] | None:
        """Each row's path; None for a row whose path is empty (an item without a path: the
        others keep theirs), and None for the whole column when no row has one."""
        col = self._column("path")
        if col is None:
            return None
        out = [_text(v) or None for v in col]
        return None if all(v is None for v in out) else out

    # -- the file itself, when it can be copied as is -----------------------------------------------
    @property
    def npy_float32_file(self) -> str | None:
        """The path of a C-order float32 ``.npy`` holding exactly these rows (copyable as is)."""
        return None


def _text(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    if isinstance(v, float):
        if v != v:
            return ""
        if v.is_integer():
            v = int(v)
    return str(v).strip()


_F32_MAX = float(np.finfo(np.float32).max)


def check_float32_range(raw: np.ndarray, start, path) -> None:
    """Refuse values of ``raw`` (rows of vectors) that float32 cannot hold: they would become
    infinity, the type vectors are computed in. ``start``: the first row's number, or each row's
    number. The one rule for in-memory and streamed vectors."""
    if raw.dtype.itemsize <= 4 and raw.dtype.kind not in "iu":
        return
    with np.errstate(invalid="ignore"):
        over = np.abs(raw.astype(np.float64, copy=False)) > _F32_MAX
    if not over.any():
        return
    rows = np.flatnonzero(over.any(axis=1))
    r, c = int(rows[0]), int(np.flatnonzero(over[rows[0]])[0])
    number = (lambda i: int(np.asarray(start)[i])) if np.ndim(start) else (lambda i: int(i) + int(start))
    shown = [number(i) for i in rows[:5]]
    raise InputError(
        f"{path}: {len(rows)} of {len(raw)} vectors hold values beyond the float32 range "
        f"(+-{_F32_MAX:.3g}), which vectors are computed in (row {number(r)}, column {c}: "
        f"{raw[r, c]!r}; rows {shown}{' ...' if len(rows) > 5 else ''}); rescale them")


def _as_f32(raw: np.ndarray, start, path: str) -> np.ndarray:
    """``raw`` rows as float32, after :func:`check_float32_range`."""
    if raw.dtype == np.float32:
        return raw
    check_float32_range(raw, start, path)
    return np.ascontiguousarray(raw, dtype=np.float32)


def _checked(X: np.ndarray, start, path: str) -> np.ndarray:
    """``X`` if every value is finite; ``start``: the first row number, or each row's number."""
    numbers = np.asarray(start) if np.ndim(start) else np.arange(start, start + len(X))
    return check_finite(X, path, row="row {}", numbers=numbers)


class NpyVectors(VectorSource):
    """A 2-D numeric ``.npy`` file, read by row windows (see the module doc)."""

    def __init__(self, path: str | os.PathLike, shown: str | None = None):
        self.path = str(path)
        self.shown = shown
        try:
            mm = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except ValueError as e:
            if "allow_pickle" in str(e) or "Object arrays" in str(e) or "Python objects" in str(e):
                raise InputError(f"{path}: the array holds Python objects, which are never unpickled; "
                                 "save a numeric (n_items, dim) array") from None
            raise InputError(f"{path}: cannot read .npy: {e}") from None
        except (OSError, EOFError) as e:  # EOFError: an empty file ("No data left in file")
            raise InputError(f"{path}: cannot read .npy: {e}") from None
        if mm.dtype.kind not in "fiub" or mm.dtype.hasobject:
            raise InputError(f"{path}: vectors must be numbers, got dtype {mm.dtype}")
        if mm.ndim != 2:
            hint = " (a single vector? reshape it to (1, dim))" if mm.ndim == 1 else ""
            raise InputError(f"{path}: expected a 2-D array (n_items, dim), got shape {mm.shape}{hint}")
        if mm.shape[0] == 0 or mm.shape[1] == 0:
            raise InputError(f"{path}: no vectors (shape {mm.shape})")
        self.n, self.dim = (int(x) for x in mm.shape)
        self.dtype = mm.dtype
        self.fortran = bool(mm.flags.f_contiguous and not mm.flags.c_contiguous)
        self.offset = int(mm.offset)
        self.row_bytes = self.dim * self.dtype.itemsize
        del mm  # nothing stays mapped

    @property
    def npy_float32_file(self) -> str | None:
        ok = self.dtype == np.dtype("<f4") and not self.fortran
        return self.path if ok else None

    def _read(self, start: int, stop: int) -> np.ndarray:
        if self.fortran:  # column-major: a row window is scattered over the file
            mm = np.load(self.path, mmap_mode="r")
            try:
                return _as_f32(np.asarray(mm[start:stop]), start, self.shown or self.path)
            finally:
                del mm
        with open(self.path, "rb", buffering=0) as f:
            return self._pread(f.fileno(), start, stop)

    def _pread(self, fd: int, start: int, stop: int) -> np.ndarray:
        buf = np.empty((stop - start, self.dim), dtype=self.dtype)
        view = memoryview(buf.reshape(-1).view(np.uint8))
        pos, got = self.offset + start * self.row_bytes, 0
        while got < len(view):
            k = os.preadv(fd, [view[got:]], pos + got)
            if k <= 0:
                raise InputError(f"{self.shown or self.path}: file ends before row {start + got // self.row_bytes} "
                                 "(truncated .npy?)")
            got += k
        return _as_f32(buf, start, self.shown or self.path)

    def _take_window(self, start: int, stop: int, rows: np.ndarray) -> np.ndarray:
        if self.fortran or len(rows) * 8 > stop - start:  # dense: one read of the window
            return self.read(start, stop)[rows - start]
        out = np.empty((len(rows), self.dim), np.float32)  # sparse: one read per row
        with open(self.path, "rb", buffering=0) as f:
            for j, r in enumerate(rows.tolist()):
                out[j] = self._pread(f.fileno(), r, r + 1)[0]
        return _checked(out, rows, self.shown or self.path)


class ParquetVectors(VectorSource):
    """A Parquet file or a folder of Parquet shards with a vector column, read by row group."""

    def __init__(self, path: str | os.PathLike):
        import pyarrow.parquet as pq  # pyarrow: a core dependency, imported where tables are read

        p = Path(path)
        self.path = str(path)
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in PARQUET_SUFFIXES) if p.is_dir() else [p]
        if not files:
            raise InputError(f"{path}: no .parquet files in the folder")
        self.files = [str(f) for f in files]
        self._groups: list[tuple[int, int, int]] = []  # (file, row group, first row)
        names = None
        total = 0
        for k, f in enumerate(self.files):
            try:
                meta = pq.ParquetFile(f).metadata
            except Exception as e:  # pyarrow raises several types for a bad file
                raise InputError(f"{f}: cannot read Parquet: {e}") from None
            cols = [meta.schema.column(i).path.split(".")[0].lower() for i in range(meta.num_columns)]
            cols = list(dict.fromkeys(cols))
            if names is None:
                names = cols
            elif cols != names:
                raise InputError(f"{f}: columns {cols} differ from the first shard's {names}")
            for g in range(meta.num_row_groups):
                self._groups.append((k, g, total))
                total += meta.row_group(g).num_rows
        self.n = total
        self._names = pq.read_schema(self.files[0]).names
        lower = {c.lower(): c for c in self._names}
        vcol = next((lower[c] for c in VECTOR_COLUMNS if c in lower), None)
        if vcol is None:
            raise InputError(f"{path}: need a vector column named one of {VECTOR_COLUMNS} (list of "
                             f"numbers per row); columns are {self._names}")
        self.vcol = vcol
        self._lower = lower
        if self.n == 0:
            raise InputError(f"{path}: no vectors")
        self._starts = np.array([g[2] for g in self._groups] + [self.n], dtype=np.int64)
        # the first group that holds rows (an empty shard or row group says nothing of the width)
        self.dim = int(self._group(int(np.flatnonzero(np.diff(self._starts))[0])).shape[1])

    def _group(self, i: int) -> np.ndarray:
        import pyarrow.parquet as pq

        k, g, first = self._groups[i]
        col = pq.ParquetFile(self.files[k]).read_row_group(g, columns=[self.vcol]).column(0)
        return _list_column_to_array(col, self.files[k], first, getattr(self, "dim", None))

    def _read(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, self.dim), np.float32)
        g = int(np.searchsorted(self._starts, start, side="right") - 1)
        at = start
        while at < stop:
            lo, hi = int(self._starts[g]), int(self._starts[g + 1])
            if hi > lo:
                block = self._group(g)
                a, b = at - lo, min(stop, hi) - lo
                out[at - start:at - start + b - a] = block[a:b]
                at = lo + b
            g += 1
        return out

    def _column(self, name: str) -> list | None:
        import pyarrow.parquet as pq

        real = self._lower.get(name)
        if real is None:
            return None
        out: list = []
        for f in self.files:
            # the file reader, not pq.read_table's dataset scan (torn down on a pyarrow thread
            # after returning, possibly at exit: fileio._read_parquet)
            out.extend(pq.ParquetFile(f).read(columns=[real]).column(0).to_pylist())
        return out


def _list_column_to_array(col, path: str, first_row: int, dim: int | None) -> np.ndarray:
    import pyarrow as pa

    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_fixed_size_list(col.type):
        d = col.type.list_size
    elif pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        lens = np.diff(np.asarray(col.offsets))
        if len(lens) == 0:
            return np.zeros((0, dim or 0), np.float32)
        if col.null_count:
            r = int(np.flatnonzero(np.asarray(col.is_null()))[0])
            raise InputError(f"{path}: row {first_row + r}: vector is missing")
        d = int(lens[0])
        if (lens != d).any():
            r = int(np.flatnonzero(lens != d)[0])
            raise InputError(f"{path}: vectors have different lengths: row {first_row} has {d} values, "
                             f"row {first_row + r} has {int(lens[r])}")
    else:
        raise InputError(f"{path}: the vector column must hold lists of numbers, not {col.type}")
    if dim is not None and d != dim:
        raise InputError(f"{path}: row {first_row} has {d} values, earlier rows {dim}")
    vals = col.flatten()
    if vals.null_count:
        raise InputError(f"{path}: rows from {first_row} hold missing values inside vectors")
    if not (pa.types.is_floating(vals.type) or pa.types.is_integer(vals.type)):
        raise InputError(f"{path}: vector values must be numbers, not {vals.type}")
    return np.asarray(vals.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, d)


class ArrayVectors(VectorSource):
    """An array already in memory (an ``.npz``, a CSV, freshly computed embeddings)."""

    def __init__(self, vectors: np.ndarray, ids=None, labels=None, paths=None, path: str = "vectors"):
        self.vectors = vectors
        self.n, self.dim = (int(x) for x in vectors.shape)
        self.path = path
        self._cols = {"id": ids, "label": labels, "path": paths}

    def _read(self, start: int, stop: int) -> np.ndarray:
        return _as_f32(np.asarray(self.vectors[start:stop]), start, self.path)

    def _take_window(self, start: int, stop: int, rows: np.ndarray) -> np.ndarray:
        return _checked(_as_f32(np.asarray(self.vectors[rows]), rows, self.path), rows, self.path)

    def _column(self, name: str):
        return self._cols.get(name)

    def labels(self):
        col = self._cols["label"]
        return None if col is None else list(col)

    def paths(self):
        col = self._cols["path"]
        return None if col is None else list(col)


def streamable(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a vector file :func:`open_vectors` reads without loading it whole."""
    p = Path(path)
    if p.suffix.lower() == ".npy" and p.is_file():
        return True
    if p.is_dir():  # a folder of shards: Parquet files and nothing else (hidden files aside)
        entries = [f for f in p.iterdir() if not f.name.startswith(".")]
        return bool(entries) and all(f.is_file() and f.suffix.lower() in PARQUET_SUFFIXES for f in entries)
    if p.suffix.lower() in PARQUET_SUFFIXES and p.is_file():
        import pyarrow.parquet as pq

        try:
            names = {n.lower() for n in pq.read_schema(p).names}
        except Exception:  # not readable as Parquet: the ordinary reader explains why
            return False
        return bool(names & set(VECTOR_COLUMNS))
    return False


def open_vectors(path: str | os.PathLike) -> VectorSource:
    """A :class:`VectorSource` for a ``.npy`` file, a Parquet file or a folder of Parquet shards."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"input not found: {p}")
    if p.suffix.lower() == ".npy":
        return NpyVectors(p)
    if p.is_dir() or p.suffix.lower() in PARQUET_SUFFIXES:
        return ParquetVectors(p)
    raise InputError(f"{p}: vectors are streamed from a .npy file or Parquet (a file or a folder of "
                     "shards); other formats are read whole")
