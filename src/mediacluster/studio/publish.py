"""Publish the curated clusters as a new model version of the run (``RUN/models/vNNNN``).

The model is a plain :class:`~mediacluster.pipeline.Pipeline` whose labels are the curated ones
(:meth:`Pipeline.fit_labels`): ``predict`` votes among the nearest training items, so it puts a
new item where a person put its look-alikes, and reproduces the curated label of every curated
item (checked on publishing: ``agreement``). On a run with levels the curated clusters are
the finest level of a tree that keeps the run's coarser levels above them (``fit_labels(levels=)``:
each curated cluster under the coarse clusters most of its items were in, top-down so it nests;
junk clusters on a branch of their own; the coarse levels named as the run named them,
``names_by_level``), so ``predict_path``, ``assign --level`` and the service's ``path`` go on
working after curation; a run without levels gets a flat model. It is saved like any other model (JSON + npz,
``LATEST`` rewritten last), so ``mediacluster assign RUN``, ``tags train --run RUN`` and the
service load it without knowing it came from the studio. Its reduced space is the fitted
model's when the run kept one (``cluster --save-model``), else the studio's 2-D map; the
metadata carries the encoder, the curated names, junk clusters and tags. A run clustered with
``--dedup --save-model`` keeps its duplicate index in every curated version too (the newest
version's that holds one, ``stored_duplicates``, hard-linked: ``duplicates.index.link_to_model``),
so ``assign`` and the service go on answering "near-duplicate of item X" after curation.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from ..data import NOISE, OUTLIER
from ..duplicates.index import link_to_model, read_from_model
from ..errors import MediaclusterError
from ..pipeline import PIPELINE_PARAMS, Pipeline
from ..rundir import RunDir
from ..stages import registry

log = logging.getLogger(__name__)

#: curated items re-predicted to measure the agreement (a random sample above this)
CHECK_ITEMS = 20000


def _stage(kind: str, desc):
    """A stage from run.json's description of the fitted pipeline ({"class", "params"})."""
    if not isinstance(desc, dict) or "class" not in desc:
        return "auto"
    try:
        info = registry.by_class(kind, desc["class"])
    except KeyError:
        return "auto"
    params = {k: v for k, v in (desc.get("params") or {}).items() if k in info.params}
    try:
        return registry.build(kind, info.name, params)
    except Exception:  # noqa: BLE001 - an old description: the default stage's parameters
        return "auto"


def run_levels_above(run: RunDir, n: int) -> np.ndarray | None:
    """The run's hierarchy levels coarser than the one its ``cluster`` column holds (the
    clustering the person curated), ``(L, n)`` row 0 coarsest, from ``hierarchy.npz``; None for
    a run without levels (or whose tree does not cover its ``n`` items: published flat)."""
    try:
        h = run.read_hierarchy()
    except (OSError, ValueError) as e:
        log.warning("studio: the run's hierarchy is not readable, the curated model is flat: %s", e)
        return None
    levels = np.asarray((h or {}).get("levels", np.zeros((0, 0), np.int64)))
    if levels.ndim != 2 or levels.shape[1] != n or levels.dtype.kind not in "iu" or not len(levels):
        return None
    at = h.get("level")
    at = int(at) if at is not None and np.ndim(at) == 0 else len(levels)
    return levels[:max(0, min(at, len(levels)))] if at > 0 else None


def levels_names(pipe: Pipeline, stored: dict[int, list[dict]], names: dict[str, str],
                 junk_names: list[str]) -> dict[str, dict[str, str]]:
    """``names_by_level`` of a curated tree: a coarse level's clusters are named as the run named
    the clusters they come from (``level_names.json``), the junk branch by the junk cluster's
    name (``junk`` when there are several), the finest level by the curated ``names``."""
    out = {}
    for j, src in enumerate(pipe.tree_sources_ or []):
        named = {int(e["cluster"]): e.get("name") for e in stored.get(int(src["level"]), [])}
        junk_name = junk_names[0] if len(junk_names) == 1 else "junk"
        level = {str(new): (junk_name if orig < 0 else named.get(int(orig)))
                 for new, orig in enumerate(np.asarray(src["clusters"]).tolist())}
        out[str(j)] = {k: v for k, v in level.items() if isinstance(v, str) and v}
    out[str(len(out))] = dict(names)
    return out


def curated_pipeline(vectors, labels, probability, fitted, base: Pipeline | None, xy,
                     map_method: str, pipeline_desc: dict | None = None, levels=None,
                     junk=()) -> Pipeline:
    """A fitted Pipeline whose labels are ``labels`` (the curated clusters); with ``levels``
    (:func:`run_levels_above`) the finest level of a tree that keeps the run's coarser levels
    above them (``Pipeline.fit_labels``), the clusters in ``junk`` on their own branch."""
    lab = np.asarray(labels, dtype=np.int64).copy()
    lab[lab == OUTLIER] = NOISE  # no outlier stage in a curated model: unassigned
    prob = np.where(lab == np.asarray(fitted), np.asarray(probability, dtype=np.float64), 1.0)
    n = len(lab)
    if base is not None:
        Z = np.asarray(base.embedding_)
        reducer, clusterer = base.reducer_, base.clusterer_
        params = {k: v for k, v in base.get_params(deep=False).items() if k in PIPELINE_PARAMS}
    else:
        Z = np.asarray(xy, dtype=np.float32)
        if map_method == "umap":  # the studio's map: the report's 2-D UMAP
            reducer = registry.build("reducer", "umap", {"n_components": 2, "min_dist": 0.1, "metric": "cosine",
                                                         "n_neighbors": int(min(30, max(2, n - 1)))})
        else:
            reducer = registry.build("reducer", "pca", {"n_components": 2})
        fitted_desc = ((pipeline_desc or {}).get("params") or {})
        clusterer = _stage("clusterer", fitted_desc.get("clusterer_"))
        params = {}
    params["reference_size"] = None  # every curated item stays a reference: predict reproduces it
    params["level"] = "auto"  # a curated tree answers at its finest level, the curated clusters
    pipe = Pipeline(reducer=reducer, outliers=None, clusterer=clusterer, **params)
    return pipe.fit_labels(np.asarray(vectors, dtype=np.float32), lab, Z, prob, levels=levels, junk=junk)


def agreement(pipe: Pipeline, vectors, labels, random_state: int = 0) -> tuple[float, int]:
    """Share of curated items (label >= 0) whose predicted label is their curated one."""
    lab = np.asarray(labels)
    idx = np.flatnonzero(lab >= 0)
    if len(idx) > CHECK_ITEMS:
        idx = np.sort(np.random.default_rng(random_state).choice(idx, CHECK_ITEMS, replace=False))
    if not len(idx):
        return 1.0, 0
    # the run's own items: an all-zero one is placed (it was fitted), not refused as a new one is
    pred = pipe.predict_details(np.asarray(vectors[idx], dtype=np.float32), zero_vectors="place")["labels"]
    return float((pred == lab[idx]).mean()), int(len(idx))


def stored_duplicates(run: RunDir, n: int):
    """The model version holding the run's duplicate index (``cluster --dedup --save-model``
    stores it in its version; the studio's versions carry it on): the newest whose index is
    readable and holds the run's ``n`` items, or None. A damaged one is passed over with a
    warning (an older version's is the same index)."""
    for version in reversed(run.models.versions()):
        folder = run.models.root / version
        try:
            index = read_from_model(folder, root=run.collection_root.path)  # checked, not kept
        except MediaclusterError as e:
            log.warning("studio: the duplicate index of %s is not carried on: %s", folder, e)
            continue
        if index is not None and len(index.labels) == n:
            return folder
    return None


def publish_curated(run: RunDir, vectors, labels, table: list[dict], probability, fitted,
                    base: Pipeline | None, xy, map_method: str, encoder: dict, seq: int,
                    item_tags: dict[int, list[str]] | None = None) -> dict:
    """Fit the curated model, check it, and publish it as the run's next model version."""
    junk = [e["id"] for e in table if e.get("junk")]
    pipe = curated_pipeline(vectors, labels, probability, fitted, base, xy, map_method,
                            run.info.get("pipeline"), levels=run_levels_above(run, len(labels)), junk=junk)
    share, checked = agreement(pipe, vectors, labels)
    enc = encoder.get("name")
    names = {str(e["id"]): e["name"] for e in table}
    metadata = {
        "encoder": None if enc in (None, "", "precomputed") else enc,
        "names": names,
        "curated": {"edits_seq": int(seq), "agreement": round(share, 5), "checked": checked,
                    "junk": junk,
                    "tags": {str(e["id"]): e["tags"] for e in table if e.get("tags")},
                    "items_tagged": len(item_tags or {})},
    }
    if pipe.levels_ is not None:
        metadata["names_by_level"] = levels_names(pipe, run.read_level_names(), names,
                                                  [e["name"] for e in table if e.get("junk")])
    with run.writing("studio"):
        dups = stored_duplicates(run, len(labels))
        if dups is None:
            path = pipe.publish(run.models, metadata=metadata, run_id=run.run_id, source="studio")
        else:  # as the cluster job publishes a --dedup model (workflow.publish_model)
            path = pipe.publish(run.models, metadata={**metadata, "duplicates": True}, run_id=run.run_id,
                                source="studio", also=lambda folder: link_to_model(dups, folder))
    return {"version": os.path.basename(path), "path": path, "agreement": share, "checked": checked,
            "duplicates": dups is not None,
            "clusters": int(len(set(np.asarray(labels)[np.asarray(labels) >= 0].tolist()))),
            "levels": [] if pipe.levels_ is None else [int(len(np.unique(r))) for r in pipe.levels_],
            "edits_seq": int(seq)}
