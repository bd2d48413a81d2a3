"""Turn what the user points at into a ``Collection``.

Accepted inputs:

* a folder, scanned recursively for media files (hidden files and folders skipped);
* a manifest, CSV or Parquet, with a ``path`` column and optional ``label`` (and ``id``) columns;
  relative paths are resolved against the manifest's folder;
* precomputed embeddings: ``.npy`` (n x d; ids are row numbers), ``.npz`` (``vectors`` and
  optional ``ids`` / ``labels``) or Parquet with an id column and a list/array vector column.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..collection import Collection, Skipped

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".mp3", ".oga", ".opus", ".aiff", ".aif"})
MEDIA_EXTENSIONS = {"image": IMAGE_EXTENSIONS, "audio": AUDIO_EXTENSIONS}

_VECTOR_COLUMNS = ("vector", "embedding", "embeddings", "vectors", "features")
_ID_COLUMNS = ("id", "ids", "path", "name", "key")


def collect(
    source: str | os.PathLike,
    media: str = "image",
    labels_from_folders: bool = False,
) -> Collection:
    """Find the items of ``source`` (folder, manifest or embeddings file)."""
    p = Path(source)
    if not p.exists():
        raise FileNotFoundError(f"input not found: {p}")
    if p.is_dir():
        return scan_folder(p, media=media, labels_from_folders=labels_from_folders)
    suffix = p.suffix.lower()
    if suffix in (".npy", ".npz"):
        return read_vectors(p)
    if suffix in (".csv", ".tsv", ".parquet", ".pq"):
        df = _read_table(p)
        if "path" in df.columns:
            return read_manifest(p, df, media=media)
        return read_vectors(p, df)
    if suffix in MEDIA_EXTENSIONS.get(media, ()):  # a single file
        return Collection(ids=[str(p)], paths=[str(p)], media=media, source=str(p))
    raise ValueError(
        f"don't know how to read {p}: expected a folder, a CSV/Parquet manifest with a 'path' "
        f"column, or embeddings (.npy, .npz, Parquet with a vector column)"
    )


def scan_folder(root: Path, media: str = "image", labels_from_folders: bool = False) -> Collection:
    exts = MEDIA_EXTENSIONS[media]
    paths: list[str] = []
    labels: list[str | None] = []
    skipped: list[Skipped] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in sorted(filenames):
            if fn.startswith("."):
                continue
            ext = os.path.splitext(fn)[1].lower()
            if ext not in exts:
                continue
            full = os.path.join(dirpath, fn)
            paths.append(full)
            if labels_from_folders:
                rel = os.path.relpath(dirpath, root)
                labels.append(None if rel == "." else rel.replace(os.sep, "/"))
    return Collection(
        ids=list(paths),
        paths=paths,
        labels=labels if labels_from_folders else None,
        media=media,
        skipped=skipped,
        source=str(root),
    )


def _read_table(p: Path):
    import pandas as pd

    suffix = p.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(p)
    return pd.read_csv(p, sep="\t" if suffix == ".tsv" else ",")


def read_manifest(p: Path, df=None, media: str = "image") -> Collection:
    df = _read_table(p) if df is None else df
    base = p.parent
    paths = [str(x) if os.path.isabs(str(x)) else str(base / str(x)) for x in df["path"]]
    ids = [str(x) for x in df["id"]] if "id" in df.columns else list(paths)
    if len(set(ids)) != len(ids):
        raise ValueError(f"{p}: ids are not unique")
    labels = None
    if "label" in df.columns:
        labels = [None if _isna(x) else str(x) for x in df["label"]]
    return Collection(ids=ids, paths=paths, labels=labels, media=media, source=str(p))


def read_vectors(p: Path, df=None) -> Collection:
    suffix = p.suffix.lower()
    labels = None
    if suffix == ".npy":
        vectors = np.load(p, allow_pickle=False)
        ids = [str(i) for i in range(len(vectors))]
    elif suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            key = next((k for k in _VECTOR_COLUMNS if k in z.files), None)
            if key is None:
                raise ValueError(f"{p}: no array named one of {_VECTOR_COLUMNS}")
            vectors = z[key]
            ids = [str(x) for x in z["ids"]] if "ids" in z.files else [str(i) for i in range(len(vectors))]
            if "labels" in z.files:
                labels = [str(x) for x in z["labels"]]
    else:
        df = _read_table(p) if df is None else df
        vcol = next((c for c in _VECTOR_COLUMNS if c in df.columns), None)
        if vcol is None:
            raise ValueError(
                f"{p}: need a 'path' column (manifest) or a vector column named one of {_VECTOR_COLUMNS}"
            )
        vectors = np.stack([np.asarray(v, dtype=np.float32) for v in df[vcol]])
        icol = next((c for c in _ID_COLUMNS if c in df.columns), None)
        ids = [str(x) for x in df[icol]] if icol else [str(i) for i in range(len(df))]
        if "label" in df.columns:
            labels = [None if _isna(x) else str(x) for x in df["label"]]
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"{p}: expected a 2-D array of vectors, got shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        bad = int((~np.isfinite(vectors).all(axis=1)).sum())
        raise ValueError(f"{p}: {bad} vectors contain NaN or infinity")
    return Collection(ids=ids, labels=labels, vectors=vectors, media="vector", source=str(p))


def _isna(x) -> bool:
    return x is None or (isinstance(x, float) and np.isnan(x))
