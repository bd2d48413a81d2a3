"""Scoring a clustering: read a run folder or a saved model, score it, with or without labels.

``load_source(path)`` gathers what scoring needs (ids, original vectors, reduced coordinates,
the labellings, true labels) from a run folder (through its ``RunDir``) or a model folder;
``evaluate(src)`` computes, for each labelling (``fitted``: as found, -1 noise / -2 outliers
kept; ``assigned``: after noise assignment), internal scores in the original and the reduced
space (``metrics.internal_scores``), external scores against true labels when there are any
(``metrics.external_scores``), and coverage. With true labels it also finds the items whose label
disagrees with the clustering (``label_issues``: an item whose label is not the label most of
its cluster's items have), the question a curator asks of a labelled-by-folder collection, and
scores each labelled item by how strongly its nearest neighbours disagree with its label
(``neighbour_vote``, the clustering aside: a wrong label, not a wrong cluster).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from . import metrics as M
from ._version import versions
from .data import l2_normalize
from .errors import InputError, MediaclusterError, ParameterError, RunDirError
from .fileio import read_table
from .persist import ModelStore
from .pipeline import Pipeline
from .progress import logged_step
from .rundir import RunDir, find_run
from .stages.registry import SEED, Int

# each scoring step said with its seconds (the CLI shows INFO): on 50,000 items evaluate was
# minutes of silence
log = logging.getLogger(__name__)


def _read_table(path: Path):
    try:  # labels and ids are names, as the manifests cluster reads (ingest): "07" stays "07", 7 never 7.0
        return read_table(path, encoding_errors="surrogateescape", dtype={"label": object, "id": object})
    except FileNotFoundError:
        raise InputError(f"{path} does not exist") from None
    except Exception as e:  # noqa: BLE001 - pandas / pyarrow parse errors: name the file
        raise InputError(f"cannot read {path} as a table: {e}") from None


def load_source(path: Path) -> dict:
    """Everything evaluate needs: ids, original vectors, reduced coords, labellings, truth."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"not found: {path}")
    if not path.is_dir():
        raise InputError(f"{path} is not a folder; expected a run folder (from 'mediacluster cluster') "
                         f"or a model folder (with model.json)")
    notes: list[str] = []
    if not (path / "model.json").exists() and not RunDir.is_run(path) and ModelStore(path).versions():
        # a model store (RUN/models, which `assign` takes): its run, whose latest model it is
        if path.name == "models" and RunDir.is_run(path.parent):
            notes.append(f"{path} is the model store of the run {path.parent}: the run evaluated")
            path = path.parent
        else:
            raise InputError(f"{path} is a model store (versions {', '.join(ModelStore(path).versions())}), "
                             "not a run: give the run folder it belongs to, or one version (e.g. "
                             f"{path / ModelStore(path).versions()[-1]}) with --out FILE")
    if not (path / "model.json").exists() and not RunDir.is_run(path) and ModelStore(path / "models").versions():
        # `tune --out DIR`: the study and its model store, no run ("not a run folder ... write one
        # with `mediacluster cluster`" sent a user who had just tuned back to clustering)
        latest = ModelStore(path / "models").latest() or path / "models" / ModelStore(path / "models").versions()[-1]
        raise InputError(f"{path} holds models (models/{', '.join(ModelStore(path / 'models').versions())}) but "
                         f"no run: evaluate a model version, e.g. `mediacluster evaluate {latest} --out FILE`")
    src: dict = {"path": str(path), "notes": notes}
    pipe = None
    run = None
    if (path / "model.json").exists():
        src["kind"] = "model"
        pipe = Pipeline.load(path)
        src["model"] = str(path)
        run = find_run(path.parent)
        if run is not None and pipe.model_info_.get("metadata", {}).get("run_id") != run.run_id:
            src["notes"].append(f"model {path} was not fitted in the run {run.path}; its items not used")
            run = None
    else:
        run = RunDir.open(path)
        src["kind"] = "run"
        latest = _own_model(run, src["notes"])
        if latest is not None:
            try:
                pipe = Pipeline.load(latest)
                src["model"] = str(latest)
            except MediaclusterError as e:
                src["notes"].append(f"model {latest} not used: {e}")
            if pipe is not None and (pipe.model_info_.get("metadata") or {}).get("run_id") != run.run_id:
                # a version of an earlier run of the folder (kept for rollback; LATEST rolled back
                # to it, or this run published none): its clusters are not this run's
                src["notes"].append(f"model {latest} was fitted in an earlier run of {run.path}; not used")
                pipe = None
                src.pop("model", None)

    if run is not None:
        emb = run.read_embeddings()
        src["ids"] = list(emb.ids)
        src["paths"] = emb.paths
        src["root"] = run.collection_root.path  # a labels file's relative paths are relative to it
        src["truth"] = emb.labels
        src["X"] = emb.vectors
        src["encoder"] = emb.encoder
        a = run.read_assignments()
        if len(a) != len(src["ids"]) or list(a["id"]) != list(src["ids"]):
            raise RunDirError(f"{run.path}: assignments do not match the run's items; the folder is "
                              "damaged, re-run cluster")
        src["fitted"] = a["cluster"].to_numpy(np.int64)
        lv = run.read_levels(a)
        if len(lv):  # a clusterer with levels: every level is scored against the labels too
            src["levels"] = [(int(k), lab) for k, lab in zip(lv.index, lv.labels)]
            src["level_in_use"] = int(lv.index[lv.level]) if lv.level is not None else None
        if "assigned_cluster" in a.columns:
            src["assigned"] = a["assigned_cluster"].to_numpy(np.int64)
        if "curated_cluster" in a.columns:
            src["curated"] = a["curated_cluster"].to_numpy(np.int64)
            if "curated_status" in a.columns:  # junk says nothing about a label: no issues there
                src["curated_junk"] = (a["curated_status"] == "junk").to_numpy()
        if pipe is not None:
            if len(pipe.labels_) == len(src["ids"]) and np.array_equal(np.asarray(pipe.labels_), src["fitted"]):
                src["Z"] = np.asarray(pipe.embedding_)
            elif len(pipe.labels_) != len(src["ids"]):  # cluster --fit-sample: the rest were assigned
                src["notes"].append(f"the model was fitted on {len(pipe.labels_)} of the run's {len(src['ids'])} "
                                    "items (a fit sample): reduced-space scores not computed")
            else:
                src["notes"].append("the model's labels differ from the run's assignments (a curated "
                                    "model?): reduced-space scores not computed")
    else:  # a bare model folder
        src["ids"] = None
        src["paths"] = None
        src["truth"] = None
        src["X"] = None
        src["Z"] = np.asarray(pipe.embedding_)
        src["fitted"] = np.asarray(pipe.labels_, np.int64)
        if getattr(pipe, "levels_", None) is not None:
            src["levels"] = [(k, np.asarray(row, np.int64)) for k, row in enumerate(pipe.levels_)]
            src["level_in_use"] = None if getattr(pipe, "level_", None) is None else int(pipe.level_)
        if getattr(pipe, "cluster_", None) is not None:
            src["assigned"] = np.asarray(pipe.cluster_, np.int64)
        src["notes"].append("a model keeps no original vectors (only reduced coordinates and a "
                            "compressed reference set): internal scores in the reduced space only")
    if "Z" not in src and src["kind"] == "run" and pipe is None and "model" not in src:
        src["notes"].append("reduced space not available (no model of this run in the run folder; "
                            "run 'mediacluster cluster --save-model' to keep it)")
    if "assigned" in src and np.array_equal(src["assigned"], src["fitted"]):
        del src["assigned"]  # nothing was assigned: one labelling
    return src


def _own_model(run: RunDir, notes: list) -> Path | None:
    """The model version whose reduced space is the run's: the one ``LATEST`` names, unless that
    is a version of an earlier run of the folder (``models --use``: a rollback), then the run's
    own newest version (said in ``notes``); None without one."""
    from .persist import model_id

    store = run.models
    latest = store.latest()
    if latest is None or model_id(latest).split("/")[0] == run.run_id:
        return latest
    own = [store.root / v for v in reversed(store.versions())
           if model_id(store.root / v).split("/")[0] == run.run_id]
    if not own:
        return latest  # refused below, said so
    notes.append(f"LATEST names {latest.name}, a version of an earlier run of {run.path} (a rollback): "
                 f"the run's own {own[0].name} used")
    return own[0]


def read_labels(path: Path, ids, paths, n: int, root: str | None = None) -> tuple[list, str]:
    """Truth labels from a manifest, aligned with the items; returns (labels, how matched).
    A ``path`` matches an item's absolute path, or, relative, its path under the collection
    ``root`` (as the run's own tables store it). A file with both columns is matched by the one
    naming more items (a tie: ``id``)."""
    df = _read_table(Path(path))
    if "label" not in df.columns:
        raise InputError(f"{path} needs a 'label' column (and 'id' or 'path'); has {list(df.columns)}")
    # missing: None, NaN, and pandas' NA of a nullable column (Int64, string: a Parquet file
    # pandas wrote), which no comparison can take
    lab = df["label"].astype(object).where(df["label"].notna(), None).tolist()
    best = None  # (hits, key, keys, map, conflict): the key column matching the most items
    for key, keys in (("id", ids), ("path", paths)):
        if key in df.columns and keys is not None:
            m: dict = {}
            conflict = None
            for row, (k, v) in enumerate(zip(df[key], lab)):
                k = str(k)
                if key == "path" and root is not None and not os.path.isabs(k):
                    k = os.path.join(root, k)
                if key == "path":  # './cats/1.jpg' (find's output), 'a//b.jpg': the file they name
                    k = os.path.normpath(k)
                if k in m and m[k] != v and conflict is None:
                    conflict = (f"{path}: row {row + 2} gives {key} {k!r} the label {v!r}, an "
                                f"earlier row gave it {m[k]!r}; conflicting labels are refused")
                m.setdefault(k, v)
            hits = sum(str(k) in m for k in keys)
            if hits and (best is None or hits > best[0]):  # ties: 'id'
                best = (hits, key, keys, m, conflict)
    if best is not None:  # a file with both columns: an id column that names a few items by
        hits, key, keys, m, conflict = best  # chance no longer hides a path column naming all
        if conflict:
            raise InputError(conflict)
        return [m.get(str(k)) for k in keys], f"matched by {key}: {hits} of {len(keys)} items"
    if ids is None and len(df) == n:
        return lab, f"matched by position ({n} rows; the model stores no item ids)"
    raise InputError(f"{path}: no row matches the items by 'id' or 'path'")


# --------------------------------------------------------------------------------------------
# label issues: items whose label disagrees with their cluster
# --------------------------------------------------------------------------------------------
ISSUE_COLUMNS = ["item", "id", "path", "label", "neighbour_disagreement", "neighbour_label",
                 "neighbour_label_share", "cluster_disagrees", "cluster", "cluster_label",
                 "cluster_label_share", "label_share", "cluster_size"]
VOTE_K = 10  # neighbours voting on an item's label (``evaluate --vote-k``)


def neighbour_vote(X, truth, k: int = VOTE_K) -> dict:
    """How strongly each labelled item's ``k`` nearest labelled neighbours disagree with its label.

    The search is the predictor's own (:class:`~mediacluster.predictor.NeighbourPredictor`'s
    faiss search, exact below ``EXACT_SEARCH_MAX`` items) over the L2-normalised vectors of the
    labelled items: cosine, unprojected, the item itself left out (an exact copy of it is a
    neighbour like any other). Independent of any clustering, so a clustering mistake does not
    make an item's label look wrong; a label its neighbours do not carry does.

    An item's own label can hold at most as many votes as there are other labelled items of it
    (3 labelled items of a class and ``k`` 10: 2 of 10), so it is judged by the share of the votes
    it could hold: the item is outvoted when another label's share of the ``k`` votes is at least
    its own label's votes over ``min(k, its label's other labelled items)`` (with ample labels: a
    plurality, ties to the nearer neighbours' label). A plain plurality outvoted most correct
    labels of a class with few labels (RESULTS "Loose ends, ninth pass").

    Returns arrays over all items (unlabelled items: NaN / None): ``disagreement`` the share of
    the neighbours carrying a label other than the item's, ``label`` the vote's label (its own
    unless outvoted, else the label most of them carry, ties: the nearer neighbours' label),
    ``share`` its share of the neighbours; ``alone`` (bool) the labelled
    items whose label no other labelled item carries: a vote cannot judge them (every neighbour
    carries another label, so with few labels most of them were listed as outvoted), so they
    get no vote (NaN / None) though they vote for the others; and ``k`` the neighbours used.
    """
    from .predictor import NeighbourPredictor

    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ParameterError(f"vote k must be a whole number >= 1, got {k!r}", "vote_k")
    n = len(truth)
    X = np.asarray(X, dtype=np.float32)
    if len(X) != n:
        raise InputError(f"{len(truth)} labels for {len(X)} vectors")
    known = M.labelled(truth)
    rows = np.flatnonzero(known)
    out = {"disagreement": np.full(n, np.nan), "label": [None] * n, "share": np.full(n, np.nan),
           "alone": np.zeros(n, bool), "k": 0}
    kk = int(min(k, len(rows) - 1))
    if kk < 1:
        return out
    labs = [truth[i] for i in rows]
    uniq = sorted(set(labs), key=str)
    code_of = {v: c for c, v in enumerate(uniq)}
    codes = np.array([code_of[v] for v in labs], np.int64)
    out["alone"][rows] = np.bincount(codes, minlength=len(uniq))[codes] == 1
    V = l2_normalize(X[rows])
    pred = NeighbourPredictor.from_arrays(
        {"ref_index": rows, "ref_vectors": np.ascontiguousarray(V, np.float32)}, n_features_in=X.shape[1],
        ref_normalize=True, n_neighbors=kk + 1, reference_dims=None, metric="cosine")
    _, pos = pred.kneighbors(X[rows], kk + 1, zero_vectors="place")
    own = pos == np.arange(len(rows))[:, None]
    own[~own.any(axis=1), -1] = True  # itself not found (exact copies filled the slots): drop the farthest
    pos = pos[~own].reshape(len(rows), kk)
    C = codes[pos]  # (m, kk) the neighbours' labels, nearest first
    counts = (C[:, :, None] == C[:, None, :]).sum(axis=2)  # each slot's label's votes
    top = np.argmax(counts, axis=1)  # most votes; ties: the nearest neighbour's label
    r = np.arange(len(rows))
    mine = (C == codes[:, None]).sum(axis=1)  # the own label's votes, of at most min(kk, its others)
    room = np.minimum(kk, np.bincount(codes, minlength=len(uniq))[codes] - 1)
    held = (C[r, top] == codes) | (counts[r, top] * room < mine * kk)  # its share of what it could hold
    top = np.where(held, np.argmax(C == codes[:, None], axis=1), top)  # held: a slot of its own label
    judged = ~out["alone"][rows]
    out["disagreement"][rows[judged]] = (C != codes[:, None]).mean(axis=1)[judged]
    out["share"][rows[judged]] = (counts[r, top] / kk)[judged]
    for i, c in zip(rows[judged], C[r, top][judged]):
        out["label"][i] = uniq[c]
    out["k"] = kk
    return out


def label_issues(truth, clusters, ids=None, paths=None, root=None, exclude=None, max_mixed: int = 20,
                 vote: dict | None = None):
    """Items whose label is not the label of most of their cluster, and the clusters without one.

    ``truth``: a label per item (None / NaN: unlabelled, passed over); ``clusters``: cluster per
    item (-1 noise and -2 outliers, and items where ``exclude`` is true, are passed over). A
    cluster's label is the label more than half of its labelled items have; every other item
    of that cluster is an issue, its cluster's label the suggested one. A cluster where no label
    has more than half is *mixed*: the clustering, not an item's label, is in question there,
    so its items are not listed (the summary lists the cluster with its largest labels).

    Returns ``(table, summary)``: a DataFrame with :data:`ISSUE_COLUMNS` (``item`` the row, the
    item number the studio's API takes; ``path`` relative to ``root`` where it lies under it;
    ``cluster_label_share`` the share of the cluster holding the suggested label,
    ``label_share`` the share holding the item's own label, ``cluster_disagrees`` this rule's
    flag), the least supported labels first; and ``{items, labelled, share, clusters_mixed,
    mixed}`` (``items``: the items this rule flags).

    ``vote``: :func:`neighbour_vote` of the same items. With it the table also lists the
    labelled items whose neighbours vote most for another label (noise and outliers among them;
    junk passed over), fills ``neighbour_disagreement`` / ``neighbour_label`` /
    ``neighbour_label_share`` and is sorted by ``neighbour_disagreement``, highest first; the
    summary gets ``neighbour_vote`` ``{k, items, labelled, rule}``. A flipped label is outvoted
    by its neighbours; an item the clustering put with another class keeps its neighbours' vote.
    """
    import pandas as pd

    from .locations import Root

    lab = np.asarray(clusters, np.int64)
    n = len(lab)
    if len(truth) != n:
        raise InputError(f"{len(truth)} labels for {n} items")
    known = M.labelled(truth)
    use = known & (lab >= 0)
    if exclude is not None:
        use &= ~np.asarray(exclude, bool)
    rows = np.flatnonzero(use)
    df = pd.DataFrame({"item": rows, "label": [truth[i] for i in rows], "cluster": lab[rows]})
    counts = df.groupby(["cluster", "label"]).size().rename("count").reset_index()
    sizes = df.groupby("cluster").size().rename("cluster_size")
    counts = counts.merge(sizes.reset_index(), on="cluster")
    counts["share"] = counts["count"] / counts["cluster_size"]
    top = counts.sort_values(["cluster", "count", "label"], ascending=[True, False, True],
                             key=lambda c: c.astype(str) if c.name == "label" else c).groupby("cluster").head(1)
    top = top.set_index("cluster")
    has_major = top["share"] > 0.5
    mixed_ids = top.index[~has_major.to_numpy()]
    mixed = []
    for c in mixed_ids[:max(int(max_mixed), 0)]:  # those listed (one pass over the counts each:
        # every mixed cluster of a run cut at 10,000 clusters took 44 s, RESULTS "Slow corners at scale")
        parts = counts[counts["cluster"] == c].nlargest(3, "count")
        mixed.append({"cluster": int(c), "size": int(sizes[c]),
                      "labels": [{"label": r.label, "share": round(float(r.share), 3)} for r in parts.itertuples()]})
    major = top.loc[has_major, ["label", "share"]].rename(
        columns={"label": "cluster_label", "share": "cluster_label_share"}).reset_index()
    major["cluster_label"] = major["cluster_label"].astype(object)  # a mixed cluster's NaN keeps 8 an 8
    df = df.merge(major, on="cluster", how="left")
    df["cluster_disagrees"] = df["cluster_label"].notna() & (df["label"] != df["cluster_label"])
    df = df.merge(counts[["cluster", "label", "share", "cluster_size"]].rename(columns={"share": "label_share"}),
                  on=["cluster", "label"], how="left")
    # the neighbour vote: every labelled item (noise and outliers too, not junk), clustering aside
    voted = known if exclude is None else known & ~np.asarray(exclude, bool)
    if vote is not None:
        vl = vote["label"]
        against = np.array([voted[i] and vl[i] is not None and vl[i] != truth[i] for i in range(n)], bool)
        only = np.flatnonzero(against & ~np.isin(np.arange(n), df["item"].to_numpy()))
        if len(only):  # (an empty frame's float columns would turn integer labels into 2.0)
            df = pd.concat([df, pd.DataFrame({"item": only, "label": [truth[i] for i in only],
                                              "cluster": lab[only], "cluster_disagrees": False})],
                           ignore_index=True)
        it = df["item"].to_numpy(np.int64)
        df["cluster_disagrees"] = df["cluster_disagrees"].astype(bool)
        df = df[df["cluster_disagrees"].to_numpy() | against[it]].copy()
        it = df["item"].to_numpy(np.int64)
        df["neighbour_disagreement"] = vote["disagreement"][it]
        df["neighbour_label"] = [vl[i] for i in it]
        df["neighbour_label_share"] = vote["share"][it]
        df = df.sort_values(["neighbour_disagreement", "cluster_disagrees", "label_share", "item"],
                            ascending=[False, False, True, True], na_position="last")
    else:
        df = df[df["cluster_disagrees"]].copy()
        df["neighbour_disagreement"], df["neighbour_label"], df["neighbour_label_share"] = np.nan, None, np.nan
        df = df.sort_values(["label_share", "cluster_label_share", "item"], ascending=[True, False, True])
    df["item"] = df["item"].astype(np.int64)
    df["cluster_size"] = df["cluster_size"].astype("Int64")  # empty for an item the vote alone lists
    loc = Root(path=root, recorded=root)
    df["id"] = [ids[i] if ids is not None else int(i) for i in df["item"]]
    df["path"] = loc.store_all([paths[i] for i in df["item"]]) if paths is not None else None
    table = df[ISSUE_COLUMNS].reset_index(drop=True)
    summary = {"items": int(table["cluster_disagrees"].sum()), "labelled": int(len(rows)),
               "share": float(table["cluster_disagrees"].sum() / len(rows)) if len(rows) else 0.0,
               "clusters_mixed": len(mixed_ids), "mixed": mixed,
               "rule": "an item whose label is not the label more than half of its cluster's labelled items "
                       "have; clusters where no label has more than half are listed as mixed"}
    if vote is not None:
        nv = int(against.sum())
        alone = vote.get("alone")  # a vote made before it was recorded: none left out
        summary["neighbour_vote"] = {
            "k": int(vote["k"]), "items": nv, "labelled": int(voted.sum()),
            "alone": int((voted & alone).sum()) if alone is not None else 0,
            "rule": f"an item whose {int(vote['k'])} nearest labelled items (cosine) vote most for another "
                    "label, its share of the votes at least the own label's share of the votes it could hold "
                    "(its other labelled items, at most k); neighbour_disagreement: the share of them carrying a label other than its own; "
                    "alone: items whose label no other labelled item carries, which a vote cannot judge "
                    "(not listed for it)"}
    return table, summary


# --------------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------------
def level_scores(truth, levels) -> list[dict]:
    """External scores of every hierarchy level against ``truth``, coarse to fine: one entry
    per ``(level, labels)`` of ``levels`` with ``level``, ``n_clusters`` and
    :func:`metrics.external_scores`' ``all`` scores (``nmi``, ``ami``, ``ari``, ``acc``, ``n``;
    every level assigns every item, so ``all`` and ``clustered`` agree). The level whose
    clusters match the labels best (by AMI: NMI rises with the number of clusters by chance
    alone) is the granularity the labels describe (a coarse labelling such as drawn / photo
    peaks at a coarse level, a fine one at a fine level)."""
    out = []
    for k, lab in levels:
        x = M.external_scores(truth, lab)
        out.append({"level": int(k), "n_clusters": x["n_clusters"], "n_classes": x["n_classes"], **x["all"]})
    return out


def same_partition(a, b) -> bool:
    """Whether two labellings make the same groups (cluster ids aside; noise -1 and outliers -2
    where they are in both)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or not np.array_equal(a < 0, b < 0) or not np.array_equal(a[a < 0], b[b < 0]):
        return False
    pairs = np.unique(np.stack([a, b]), axis=1)
    return pairs.shape[1] == len(np.unique(a)) == len(np.unique(b))


def _step(what: str):
    """``with _step(what):`` logs ``what ...`` and then its seconds (INFO)."""
    return logged_step(log, f"{what} ...", f"{what}:")


def evaluate(src: dict, sample_size=10000, dbcv_sample_size=2000, seed=0, labeling="both",
             original=True, labels_file=None, tables: dict | None = None, vote_k: int | None = VOTE_K,
             label_depth: int | None = None) -> dict:
    """Score each labelling of ``src`` (:func:`load_source`). With true labels each labelling
    also gets ``label_issues`` (:func:`label_issues`' summary; with the run's vectors and
    ``vote_k`` (None: none), the :func:`neighbour_vote` of the ``vote_k`` nearest labelled
    items, computed once, the clustering aside); given a dict ``tables``, the
    issues table of the last labelling scored (curated, else assigned, else fitted) is put there
    as ``tables["label_issues"]`` and its labelling in ``res["label_issues_of"]``. ``label_depth``
    N scores against each label's first N folders (``drawn/Flags`` -> ``drawn``). A run or model
    with levels and labels also gets ``res["levels"]``: every level scored (:func:`level_scores`)."""
    # numpy's errors after the work otherwise ("negative dimensions", "expected non-negative integer")
    seed = SEED.check(seed, "seed")
    sample_size = Int(0, none_ok=True).check(sample_size, "sample_size")
    dbcv_sample_size = Int(0, none_ok=True).check(dbcv_sample_size, "dbcv_sample_size")
    label_depth = Int(1, none_ok=True).check(label_depth, "label_depth")  # 0 would cut every label to ""
    res = {"source": src["path"], "kind": src["kind"], "n_items": int(len(src["fitted"])),
           "seed": seed, "sample_size": sample_size, "dbcv_sample_size": dbcv_sample_size,
           "noise_policy": {"internal": M.NOISE_POLICY_INTERNAL, "external": M.NOISE_POLICY_EXTERNAL},
           "notes": list(src["notes"]), "labelings": {}}
    truth = src.get("truth")
    if labels_file is not None:
        truth, how = read_labels(labels_file, src.get("ids"), src.get("paths"), len(src["fitted"]),
                                 root=src.get("root"))
        res["labels_file"] = str(labels_file)
        res["labels_matched"] = how
    if label_depth is not None and truth is not None:  # folder labels 'drawn/Flags' -> 'drawn'
        truth = ["/".join(str(t).split("/")[:label_depth]) if known else t
                 for t, known in zip(truth, M.labelled(truth))]
        res["label_depth"] = int(label_depth)
    has_truth = truth is not None and any(t is not None for t in truth)
    names = ["fitted", "assigned", "curated"] if labeling == "both" else [labeling]
    names = [k for k in names if k in src]
    if not names:
        has = ", ".join(k for k in ("fitted", "assigned", "curated") if k in src)
        raise InputError(f"labelling {labeling!r} not available in {src['path']} (has: {has})")
    t0 = time.perf_counter()
    vote = None
    if has_truth and vote_k is not None:
        if src.get("X") is not None:
            with _step(f"neighbour vote ({vote_k} nearest labelled items of {len(src['X']):,})"):
                vote = neighbour_vote(src["X"], truth, vote_k)
            if vote["k"] < vote_k:  # fewer labelled items than asked for: the vote used all the others
                res["notes"].append(f"vote k {vote_k} is more than the other labelled items: the neighbour vote used "
                                    f"{vote['k']}" + (" (too few labelled items: no vote)" if vote["k"] == 0 else ""))
        else:
            res["notes"].append("no original vectors (a model folder): label issues without the neighbour vote")
    for name in names:
        lab = src[name]
        entry = {"coverage": M.coverage(lab), "n_clusters": M.n_clusters(lab),
                 "noise": int((lab == -1).sum()), "outliers": int((lab == -2).sum()), "internal": {}}
        kw = dict(sample_size=sample_size, random_state=seed, dbcv_sample_size=dbcv_sample_size)
        same = next((k for k in res["labelings"] if same_partition(src[k], lab)), None)
        if same is not None:  # the same groups (a curation that only renamed): the same internal
            # scores, not computed again (11 s of 1:42 on 50,000 items, load 4)
            entry["internal"] = {sp: {**v, "same_as": same} for sp, v in res["labelings"][same]["internal"].items()}
            log.info("%s labelling: the same groups as %s, internal scores taken from it", name, same)
        if same is None and original and src.get("X") is not None:
            with _step(f"{name} labelling: internal scores on the original vectors"):
                entry["internal"]["original"] = M.internal_scores(src["X"], lab, space="original", **kw)
        if same is None and src.get("Z") is not None:
            with _step(f"{name} labelling: internal scores in the reduced space"):
                entry["internal"]["reduced"] = M.internal_scores(src["Z"], lab, space="reduced", **kw)
        if has_truth:
            entry["external"] = M.external_scores(truth, lab)
            table, entry["label_issues"] = label_issues(
                truth, lab, src.get("ids"), src.get("paths"), src.get("root"),
                exclude=src.get("curated_junk") if name == "curated" else None, vote=vote)
            if tables is not None:
                tables["label_issues"] = table
                res["label_issues_of"] = name
        res["labelings"][name] = entry
    if has_truth and src.get("levels"):
        res["levels"] = level_scores(truth, src["levels"])
        res["level_in_use"] = src.get("level_in_use")  # the level the run's clusters are (None: unknown)
    res["seconds"] = round(time.perf_counter() - t0, 2)
    res["versions"] = versions()
    res["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if not has_truth:
        res["notes"].append("no true labels (items.parquet label column empty, no --labels): "
                            "external scores skipped")
    return res
