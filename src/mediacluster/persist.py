"""Save / load a fitted :class:`~mediacluster.pipeline.Pipeline` as a safe, versioned directory.

Layout of ``DIR`` (all written atomically)::

    model.json    format version, package versions, stage classes + parameters, sizes, timings
    arrays.npz    plain numeric arrays only (read back with ``np.load(allow_pickle=False)``)

Nothing is ever unpickled: ``load`` refuses a directory that contains a pickle-like file
(``*.pkl``, ``*.pickle``, ``*.joblib``), reads arrays with ``allow_pickle=False`` (object arrays
raise) and rebuilds stages only from the fixed registries in ``reduce`` / ``outliers`` /
``cluster`` (a class name outside them is refused), so opening someone else's model cannot run
their code. The UMAP object and the HDBSCAN tree are not stored at all: prediction works from
the reference vectors, their reduced coordinates and labels (see ``mediacluster.pipeline``); an
outlier stage is deterministic given its training data, so it is refitted on the stored reduced
coordinates at load time.

A model written with another ``MODEL_FORMAT_VERSION`` is refused with a message that says which
version wrote it and which this package reads.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np

from ._version import MODEL_FORMAT_VERSION, __version__
from .io import atomic_path, read_json, write_json

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".pck", ".pcl", ".dill")
FORMAT_NAME = "mediacluster-model"

ARRAYS = ["labels_", "probabilities_", "cluster_", "confidence_", "embedding_", "ref_index_",
          "ref_vectors_", "ref_mean_", "ref_components_", "novelty_threshold_"]


class ModelFormatError(ValueError):
    """The directory is not a model this version of mediacluster can (safely) load."""


def _stage_json(stage):
    if stage is None:
        return None
    from sklearn.base import BaseEstimator

    if not isinstance(stage, BaseEstimator):
        raise TypeError(f"cannot save stage of type {type(stage).__name__}")
    params = stage.get_params(deep=False)
    for k, v in params.items():
        try:
            json.dumps(v)
        except TypeError as e:
            raise TypeError(f"{type(stage).__name__}.{k}={v!r} is not JSON-serialisable; cannot save") from e
    return {"class": type(stage).__name__, "params": params}


def _stage_from_json(kind: str, spec):
    if spec is None:
        return None
    from .cluster import CLUSTERERS
    from .outliers import OUTLIERS
    from .reduce import REDUCERS

    registry = {"reducer": REDUCERS, "outliers": OUTLIERS, "clusterer": CLUSTERERS}[kind]
    by_class = {cls.__name__: cls for cls in registry.values()}
    cls = by_class.get(spec.get("class"))
    if cls is None:
        raise ModelFormatError(f"unknown {kind} class {spec.get('class')!r} in model; known: {sorted(by_class)}")
    return cls(**spec.get("params", {}))


def save(pipe, path, overwrite: bool = False, metadata: dict | None = None) -> dict:
    """Write ``pipe`` (fitted) to directory ``path``; returns ``{"path", "bytes", "files"}``."""
    if not hasattr(pipe, "labels_"):
        raise ValueError("fit the pipeline before saving it")
    path = Path(path)
    if path.exists() and any(path.iterdir()) and not overwrite:
        if not (path / "model.json").exists():
            raise FileExistsError(f"{path} exists and is not a mediacluster model; refusing to write into it")
    path.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for name in ARRAYS:
        v = getattr(pipe, name, None)
        if v is not None:
            arrays[name.rstrip("_")] = np.asarray(v) if np.ndim(v) == 0 else np.ascontiguousarray(v)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    with atomic_path(path / "arrays.npz") as tmp:
        with open(tmp, "wb") as f:
            f.write(buf.getvalue())
    params = {k: v for k, v in pipe.get_params(deep=False).items()
              if k not in ("reducer", "outliers", "clusterer")}
    from .run import versions

    info = {
        "format": FORMAT_NAME,
        "format_version": MODEL_FORMAT_VERSION,
        "mediacluster_version": __version__,
        "versions": versions(),
        "pipeline": params,
        "stages": {
            "reducer": _stage_json(pipe.reducer_),
            "outliers": _stage_json(pipe.outliers_),
            "clusterer": _stage_json(pipe.clusterer_),
        },
        "n_items": int(len(pipe.labels_)),
        "n_features_in": int(pipe.n_features_in_),
        "n_clusters": int(pipe.n_clusters_),
        "n_reference": int(len(pipe.ref_index_)),
        "ref_normalize": bool(pipe.ref_normalize_),
        "timings_s": {k: float(v) for k, v in getattr(pipe, "timings_", {}).items()},
        "metadata": dict(metadata or {}),
        "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()},
    }
    write_json(path / "model.json", info)
    files = {p.name: p.stat().st_size for p in sorted(path.iterdir()) if p.is_file()}
    return {"path": str(path), "bytes": int(sum(files.values())), "files": files}


def check_dir(path: Path) -> dict:
    """Refuse unsafe / foreign / incompatible model directories; return model.json."""
    path = Path(path)
    if not path.is_dir():
        raise ModelFormatError(f"{path} is not a directory (a mediacluster model is a folder with model.json)")
    for root, _dirs, files in os.walk(path):
        for f in files:
            if f.lower().endswith(PICKLE_SUFFIXES):
                raise ModelFormatError(
                    f"refusing to load {path}: it contains {Path(root, f)}, a pickle-type file. "
                    "mediacluster models are JSON + npz only and are never unpickled "
                    "(a pickle can run arbitrary code when opened).")
    if not (path / "model.json").exists():
        raise ModelFormatError(f"{path} has no model.json; not a mediacluster model")
    info = read_json(path / "model.json")
    if info.get("format") != FORMAT_NAME:
        raise ModelFormatError(f"{path}/model.json is not a mediacluster model (format={info.get('format')!r})")
    ver = info.get("format_version")
    if ver != MODEL_FORMAT_VERSION:
        raise ModelFormatError(
            f"model {path} has format version {ver} (written by mediacluster "
            f"{info.get('mediacluster_version', '?')}); this mediacluster {__version__} reads format "
            f"version {MODEL_FORMAT_VERSION} only. Refit the model with this version "
            f"(mediacluster cluster ... --save-model) or install the version that wrote it.")
    return info


def load(path):
    """Read a model written by :func:`save` into a :class:`Pipeline` ready to ``predict``."""
    from .pipeline import Pipeline

    path = Path(path)
    info = check_dir(path)
    try:
        with np.load(path / "arrays.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as e:  # object arrays need pickle: refuse
        raise ModelFormatError(f"{path}/arrays.npz holds non-numeric (pickled) arrays; refusing: {e}") from e
    st = info["stages"]
    stages = {k: _stage_from_json(k, st.get(k)) for k in ("reducer", "outliers", "clusterer")}
    pipe = Pipeline(reducer=stages["reducer"], outliers=stages["outliers"], clusterer=stages["clusterer"],
                    **info["pipeline"])
    for name in ARRAYS:
        setattr(pipe, name, arrays.get(name.rstrip("_")))
    pipe.reducer_, pipe.clusterer_ = stages["reducer"], stages["clusterer"]
    pipe.n_features_in_ = int(info["n_features_in"])
    pipe.ref_normalize_ = bool(info["ref_normalize"])
    pipe.timings_ = dict(info.get("timings_s", {}))
    pipe.outliers_ = None
    if stages["outliers"] is not None:
        keep_all = pipe.embedding_
        pipe.outliers_ = stages["outliers"].fit(keep_all)
    pipe._build_index()
    pipe.model_info_ = info
    return pipe


def model_size(path) -> int:
    return int(sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()))
