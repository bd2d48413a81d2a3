"""Files: atomic writes (a temporary file in the same folder, fsync, rename) and the one
content hash of the package (BLAKE2b-128 of a file's bytes; the embedding cache keys vectors
by it, duplicate detection groups exact copies by it)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    The file gets the permissions a plain ``open(path, "w")`` would give (0666 minus the umask),
    not the 0600 of a temporary file, so a shared run folder stays readable by its group."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, set | frozenset):
        return sorted(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_json(path, obj, indent: int = 2) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=indent, default=_json_default, ensure_ascii=False, allow_nan=False)
            f.write("\n")


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_npy(path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, np.asarray(array), allow_pickle=False)


def write_table(path, df) -> None:
    """Write a pandas DataFrame as Parquet or CSV (by suffix), atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)


def hash_file(path: str | os.PathLike) -> str:
    """BLAKE2b-128 hex digest of a file's bytes (chunked reads): the package's content hash."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


def hash_bytes(data: bytes) -> str:
    """The same digest as :func:`hash_file`, of bytes in memory (an upload)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def cache_root() -> Path:
    """The user cache shared by every run on the machine: ``$MEDIACLUSTER_CACHE``, else
    ``$XDG_CACHE_HOME/mediacluster``, else ``~/.cache/mediacluster``."""
    env = os.environ.get("MEDIACLUSTER_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "mediacluster"


def setup_numba_cache() -> None:
    """Persist numba's compiled code (umap-learn / pynndescent use ``cache=True``) under the user
    cache, so a new process does not pay the JIT again. Takes effect for modules imported after
    it; an explicit ``NUMBA_CACHE_DIR`` wins."""
    if "NUMBA_CACHE_DIR" not in os.environ:
        d = cache_root() / "numba"
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError:
            return  # an unwritable cache only costs compile time
        os.environ["NUMBA_CACHE_DIR"] = str(d)
