"""Publish the curated clusters as a new model version of the run (``RUN/models/vNNNN``).

The model is a plain :class:`~mediacluster.pipeline.Pipeline` whose labels are the curated ones
(:meth:`Pipeline.fit_labels`): ``predict`` votes among the nearest training items, so it puts a
new item where a person put its look-alikes, and reproduces the curated label of every curated
item (checked on publishing: ``agreement``). On a run with levels the curated clusters are
the finest level of a tree that keeps the run's coarser levels above them: the tree
:func:`~mediacluster.curated_tree.curated_tree` computes for the studio's groups and the report
(each curated cluster under the coarse clusters most of its items were in, top-down so it
nests; junk clusters on a branch of their own; the coarse levels named as the run named them,
``names_by_level``), computed once and given to ``fit_labels(tree=)``, and checked against the
fitted model's levels (``same_tree``), so
``predict_path``, ``assign --level`` and the service's ``path`` go on working after curation;
a run without levels gets a flat model. It is saved like any other model (JSON + npz,
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

from .. import persist
from ..curated_tree import CuratedTree, curated_tree
from ..data import NOISE, OUTLIER
from ..duplicates.index import link_to_model, read_from_model
from ..errors import MediaclusterError
from ..naming.overrides import run_level_names
from ..naming.support import BY_HAND, NOT_MEASURED, with_hand_names
from ..pipeline import PIPELINE_PARAMS, Pipeline
from ..rundir import RunDir, RunLevels
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


def curated_pipeline(vectors, labels, probability, fitted, base: Pipeline | None, xy,
                     map_method: str, pipeline_desc: dict | None = None,
                     tree: CuratedTree | None = None) -> Pipeline:
    """A fitted Pipeline whose labels are ``labels`` (the curated clusters); with ``tree``
    (``curated_tree``: the run's coarser levels above them, junk clusters on their own branch)
    the finest level of that tree (``Pipeline.fit_labels(tree=)``)."""
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
    given = None if tree is None else (tree.rows, tree.parents, tree.sources)
    return pipe.fit_labels(np.asarray(vectors, dtype=np.float32), lab, Z, prob, tree=given)


def same_tree(tree: CuratedTree | None, pipe: Pipeline) -> bool:
    """Whether a fitted curated model serves ``tree``: its levels come from the same run levels
    (``tree_sources_``) and put every curated item where the tree does (``levels_``)."""
    sources = pipe.tree_sources_
    if tree is None or sources is None:
        return tree is None and sources is None
    ok = tree.rows[-1] >= 0
    return len(tree.sources) == len(sources) and all(
        a["level"] == b["level"] and np.array_equal(a["clusters"], b["clusters"]) for a, b in zip(tree.sources, sources)
    ) and pipe.levels_ is not None and np.array_equal(np.asarray(pipe.levels_)[:, ok], tree.rows[:, ok])


def by_hand(tree: CuratedTree, stored: dict[int, list[dict]], named: dict[int, dict[int, str]]) -> dict[str, dict[str, dict]]:
    """The coarse groups a person named (``names.yaml``'s ``levels:``, the studio's level
    renames: a name that is not the automatic one the run stored, ``support.with_hand_names``;
    ``named``: ``naming.run_level_names``' level key -> the run's cluster id -> name): sure, by
    hand, as ``names_support_by_level`` records by the model's group ids (``naming.support.of_names``
    reads them)."""
    out: dict[str, dict[str, dict]] = {}
    for j, src in enumerate(tree.sources):
        key = tree.index[j]
        hand = {int(e["cluster"]): {f: e[f] for f in ("name", "name_sure", "name_support", "name_why")}
                for e in with_hand_names(stored.get(key, []), named.get(key, {})) if e.get("name_why") == BY_HAND}
        for new, orig in enumerate(np.asarray(src["clusters"]).tolist()):
            if orig >= 0 and int(orig) in hand:
                out.setdefault(str(j), {})[str(new)] = hand[int(orig)]
    return out


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
        if not persist.model_id(folder).startswith(f"{run.run_id}/"):
            continue  # an earlier run's version, kept for rollback: its index is of other items
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
                    item_tags: dict[int, list[str]] | None = None, levels: RunLevels | None = None,
                    items: dict | None = None, note: str | None = None,
                    level_names: dict | None = None) -> dict:
    """Fit the curated model, check it, and publish it as the run's next model version
    (``levels``: the run's, ``RunDir.read_levels``, read here when not given; ``items``:
    ``{"ids", "paths"}`` of the run's items, which the model keeps for ``similar``; ``note``:
    what this version is, metadata ``curated.note``, which ``mediacluster models`` shows;
    ``level_names``: every level's names, ``naming.run_level_names`` (the studio passes its
    live ones), read here when not given: the coarse levels' names the model serves)."""
    junk = [e["id"] for e in table if e.get("junk")]
    levels = run.read_levels() if levels is None else levels
    tree = curated_tree(levels, labels, junk)  # the tree the studio shows
    pipe = curated_pipeline(vectors, labels, probability, fitted, base, xy, map_method,
                            run.info.get("pipeline"), tree=tree)
    if not same_tree(tree, pipe):
        raise RuntimeError("the curated model's levels differ from the tree the studio shows (curated_tree)")
    share, checked = agreement(pipe, vectors, labels)
    enc = encoder.get("name")
    names = {str(e["id"]): e["name"] for e in table}
    metadata = {
        "encoder": None if enc in (None, "", "precomputed") else enc,
        "names": names,
        "curated": {"edits_seq": int(seq), "agreement": round(share, 5), "checked": checked,
                    "junk": junk,
                    "tags": {str(e["id"]): e["tags"] for e in table if e.get("tags")},
                    "items_tagged": len(item_tags or {}), **({"note": note} if note else {})},
    }
    # how sure each name is (the studio's cluster list: a person's sure, an automatic one as measured)
    support = {str(e["id"]): {"name": e["name"], **{f: e.get(f) for f in NOT_MEASURED}}
               for e in table if isinstance(e.get("name_sure"), bool)}
    if support:
        metadata["names_support"] = support
    if pipe.levels_ is not None:
        stored = run.read_level_names()
        named = run_level_names(run) if level_names is None else level_names
        metadata["names_by_level"] = tree.names_by_level(named, names, [e["name"] for e in table if e.get("junk")])
        by = {**tree.support_by_level(stored), **({str(len(tree.sources)): support} if support else {})}
        for j, level in by_hand(tree, stored, named).items():
            by.setdefault(j, {}).update(level)
        if by:
            metadata["names_support_by_level"] = by
    with run.writing("studio"):
        dups = stored_duplicates(run, len(labels))
        items = None if items is None else {**items, "root": run.collection_root.path}
        if dups is None:
            path = pipe.publish(run.models, metadata=metadata, run_id=run.run_id, source="studio", items=items)
        else:  # as the cluster job publishes a --dedup model (workflow.publish_model)
            path = pipe.publish(run.models, metadata={**metadata, "duplicates": True}, run_id=run.run_id,
                                source="studio", items=items, also=lambda folder: link_to_model(dups, folder))
    return {"version": os.path.basename(path), "path": path, "agreement": share, "checked": checked,
            "duplicates": dups is not None,
            "clusters": int(len(set(np.asarray(labels)[np.asarray(labels) >= 0].tolist()))),
            "levels": [] if pipe.levels_ is None else [int(len(np.unique(r))) for r in pipe.levels_],
            "edits_seq": int(seq)}
