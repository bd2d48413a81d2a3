"""The pipeline's model format: what a fitted ``Pipeline`` writes into a model folder and how a
saved one is read back, every field and array checked.

``persist`` owns the folder (model.json + arrays.npz, no pickle, versions in a model store); this
module owns what the pipeline puts in it:

* model.json: ``pipeline`` (the pipeline's own parameters), ``stages`` (each stage's registry
  class and parameters, rebuilt only from the registry), ``n_items``, ``n_features_in``,
  ``feature_names_in`` (a DataFrame's column names, when fitted on one; absent otherwise and from
  models saved before it: such a model checks the width only),
  ``n_clusters``, ``n_reference``, ``levels`` (counts, auto and chosen level), ``ref_normalize``
  (the predictor compares directions; loaded, it keeps the metric it was fitted with, so a model
  saved with false before ``Pipeline.neighbour_metric`` answers by euclidean distance as then),
  ``ref_center`` (rows mean-centred first: the correlation metric; absent from a model saved
  before, which answers as it was fitted: a correlation model by euclidean distance),
  ``timings_s``, ``metadata`` (``encoder``, ``names``, ``names_by_level``, how sure each
  automatic name is: ``names_support`` / ``names_support_by_level``, ``run_id``, ...);
* arrays.npz: the fitted items' ``labels``, ``probabilities``, ``cluster``, ``confidence``,
  ``embedding``; the predictor's ``ref_index``, ``ref_vectors``, ``ref_mean``,
  ``ref_components``, ``novelty_threshold``, ``novelty_calibration`` (``predictor.NeighbourPredictor``;
  the last is absent from models saved before it: they answer ``novelty`` NaN); and with levels
  the tree (:func:`hierarchy_arrays`).

An outlier stage is refitted on load from the saved embedding (deterministic), never unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.utils.validation import check_is_fitted

from . import persist, pipeline_levels
from .copies import distinct_rows
from .data import OUTLIER
from .errors import MediaclusterError, ModelFormatError
from .model_items import ITEMS_JSON, save_items
from .predictor import NeighbourPredictor, compared_as
from .stages import registry

STAGES = registry.KINDS
ITEM_ARRAYS = ("labels_", "probabilities_", "cluster_", "confidence_", "embedding_")
PREDICTOR_ARRAYS = ("ref_index_", "ref_vectors_", "ref_mean_", "ref_components_", "novelty_threshold_",
                    "novelty_calibration_")
# the order of arrays.npz's members and of model.json's "arrays"
MODEL_ARRAYS = ITEM_ARRAYS + PREDICTOR_ARRAYS


def model_doc(pipe, metadata: dict | None, items_saved: bool = False) -> tuple[dict, dict]:
    """``(model.json fields, arrays)`` of a fitted pipeline, for ``persist.write_model``;
    ``items_saved``: an ``items.json`` is written beside it (recorded, so that one deleted later
    is told apart from a model that never had one)."""
    check_is_fitted(pipe, "predictor_")
    pred = pipe.predictor_
    arrays = {}
    for name in MODEL_ARRAYS:
        v = getattr(pred if name in PREDICTOR_ARRAYS else pipe, name, None)
        if v is not None:
            arrays[name.rstrip("_")] = np.asarray(v) if np.ndim(v) == 0 else np.ascontiguousarray(v)
    arrays.update(hierarchy_arrays(pipe))
    params = {k: v for k, v in pipe.get_params(deep=False).items() if k not in STAGES}
    info = {
        "pipeline": params,
        "stages": {"reducer": stage_json(pipe.reducer_), "outliers": stage_json(pipe.outliers_),
                   "clusterer": stage_json(pipe.clusterer_)},
        "n_items": int(len(pipe.labels_)), "n_features_in": int(pipe.n_features_in_),
        **({"feature_names_in": [str(c) for c in pipe.feature_names_in_]}
           if getattr(pipe, "feature_names_in_", None) is not None else {}),
        "n_clusters": int(pipe.n_clusters_), "n_reference": int(len(pred.ref_index_)),
        "levels": None if getattr(pipe, "levels_", None) is None else {
            "n_levels": int(len(pipe.levels_)), "n_clusters_per_level": pipe.n_clusters_per_level_.tolist(),
            "auto_level": int(pipe.auto_level_), "level": int(pipe.level_)},
        "ref_normalize": bool(pred.ref_normalize_),
        "ref_center": bool(pred.ref_center_),
        "timings_s": {k: float(v) for k, v in getattr(pipe, "timings_", {}).items()},
        "metadata": dict(metadata or {}),
        "items_saved": bool(items_saved),
    }
    return info, arrays


def hierarchy_arrays(pipe) -> dict[str, np.ndarray]:
    """The fitted tree as plain arrays ({} without levels): ``levels`` (n_levels, n) int32,
    row 0 coarsest; ``parents`` + ``parents_offsets`` (level ``l + 1``'s parents are
    ``parents[offsets[l]:offsets[l + 1]]``); ``n_clusters``; ``auto_level``; ``level``;
    ``level_probabilities`` (n_levels, n) float32."""
    if getattr(pipe, "levels_", None) is None:
        return {}
    P = pipe.parents_
    return {"levels": pipe.levels_.astype(np.int32),
            "parents": np.concatenate(P).astype(np.int32) if P else np.zeros(0, np.int32),
            "parents_offsets": np.cumsum([0] + [len(p) for p in P]).astype(np.int64),
            "n_clusters": pipe.n_clusters_per_level_.astype(np.int64),
            "auto_level": np.asarray(pipe.auto_level_, np.int64), "level": np.asarray(pipe.level_, np.int64),
            "level_probabilities": pipe.level_probabilities_.astype(np.float32)}


def load(cls, path, pipeline_params):
    """A model written by ``Pipeline.save`` / ``publish`` as a fitted ``cls`` (the Pipeline
    class; ``pipeline_params``: the names of its own parameters), ready to ``predict``."""
    folder = persist.resolve_model(path)
    info, arrays = persist.read_model(folder)
    try:
        check_model_doc(info, pipeline_params)
        st = info["stages"]
        stages = {k: stage_from_json(k, st.get(k)) for k in STAGES}
        pipe = cls(**stages, **info["pipeline"])
        pipe.check_params()
        got = {name: arrays.get(name.rstrip("_")) for name in MODEL_ARRAYS}
        pipe.reducer_, pipe.clusterer_ = stages["reducer"], stages["clusterer"]
        pipe.n_features_in_ = int(info["n_features_in"])
        if "feature_names_in" in info:  # fitted on a DataFrame: its names are checked as after fit
            pipe.feature_names_in_ = np.asarray(info["feature_names_in"], dtype=object)
        ref_normalize = bool(info["ref_normalize"])
        ref_center = bool(info.get("ref_center", False))  # absent: saved before correlation was compared as such
        pipe.timings_ = dict(info.get("timings_s", {}))
    except (KeyError, TypeError, ValueError, MediaclusterError) as e:
        what = f"lacks {e}" if isinstance(e, KeyError) else str(e)
        raise ModelFormatError(f"{folder}/model.json is damaged or was edited: {what}") from e
    check_model_arrays(got, pipe.n_features_in_, folder, info)
    for name in ITEM_ARRAYS:
        setattr(pipe, name, got[name])
    pipeline_levels.set_path(pipe, levels_from_arrays(arrays, len(pipe.labels_), folder))
    pipe.outliers_ = None
    if stages["outliers"] is not None:  # deterministic given its data: refit, never unpickle
        E = pipe.embedding_  # fitted on the distinct items, as in fit (copies share a row)
        dup = distinct_rows(np.asarray(E, dtype=np.float32))
        pipe.outliers_ = stages["outliers"].fit(E[dup[0]] if dup is not None else E)
    params = pipe._predictor().get_params()
    recorded = "correlation" if ref_center else "cosine" if ref_normalize else "euclidean"
    if compared_as(params["metric"]) != recorded:
        # saved before the predictor followed Pipeline.neighbour_metric (a pipeline without UMAP
        # compared raw vectors by euclidean distance), or before it compared correlation as UMAP
        # does (by euclidean distance on the raw vectors): it answers as it was fitted
        params["metric"] = recorded
    pipe.predictor_ = NeighbourPredictor.from_arrays(
        arrays, pipe.n_features_in_, ref_normalize, ref_center, **params).set_votes(**pipe._votes())
    pipe.model_info_ = info
    pipe.model_path_ = str(folder)
    return pipe


def write_items(folder, pipe, items: dict | None) -> None:
    """The ids / paths of the model's reference items into its folder (``model_items``):
    ``items`` ``{"ids", "paths", "root"}`` are per fitted row and taken at ``ref_index_``; None
    writes a loaded model's own again (re-saved with their paths where they are now), or
    nothing for a model without them."""
    ri = pipe.predictor_.ref_index_
    if items is None:
        own = pipe.model_items()
        if own is not None:
            save_items(folder, own.ids, own.paths, own.root)
        else:  # an overwritten model's items.json would name this model's neighbours
            (Path(folder) / ITEMS_JSON).unlink(missing_ok=True)
        return
    ids, paths = items["ids"], items.get("paths")
    if len(ids) != len(pipe.labels_) or (paths is not None and len(paths) != len(ids)):
        raise ValueError(f"items: {len(ids)} ids and {None if paths is None else len(paths)} paths for "
                         f"{len(pipe.labels_)} fitted rows")
    save_items(folder, [ids[i] for i in ri], None if paths is None else [paths[i] for i in ri], items.get("root"))


def drop_foreign_extras(folder, pipe) -> None:
    """Remove a duplicate index (``persist.DUPLICATES_DIR``) left in ``folder`` by the model a
    ``Pipeline.save(overwrite=True)`` replaced: ``save`` writes none, so one there is another
    model's ("near-duplicate of" items of another collection), unless ``pipe`` was loaded from
    this very folder (saved again in place: the index is its own)."""
    import shutil

    own = getattr(pipe, "model_path_", None)
    if own is not None and Path(own).resolve() == Path(folder).resolve():
        return
    shutil.rmtree(Path(folder) / persist.DUPLICATES_DIR, ignore_errors=True)


def stage_json(stage):
    """A stage as ``{"class", "params"}`` (None for none); only registered stages with
    JSON-able parameters can be saved."""
    if stage is None:
        return None
    info = registry.of(stage)
    if info is None:
        raise ModelFormatError(f"cannot save stage of type {type(stage).__name__}: not a registered stage")
    # numpy scalars (a grid search over np.arange) are stored as the Python numbers they are
    params = {k: v.item() if isinstance(v, np.generic) else v for k, v in stage.get_params(deep=False).items()}
    for k, v in params.items():
        try:
            json.dumps(v)
        except TypeError as e:
            raise ModelFormatError(f"{type(stage).__name__}.{k}={v!r} is not JSON-serialisable; cannot save") from e
    return {"class": type(stage).__name__, "params": params}


def stage_from_json(kind: str, spec):
    """The stage :func:`stage_json` wrote, built through the registry (never unpickled)."""
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise ModelFormatError(f"{kind}: expected {{class, params}}, got {spec!r}")
    try:
        info = registry.by_class(kind, spec.get("class"))
    except KeyError:
        raise ModelFormatError(f"unknown {kind} class {spec.get('class')!r} in model; known: "
                               f"{sorted(i.cls.__name__ for i in map(lambda n: registry.get(kind, n), registry.names(kind)))}") from None
    params = spec.get("params", {})
    if not isinstance(params, dict) or set(params) - set(info.params):
        raise ModelFormatError(f"{kind} {spec.get('class')}: unexpected parameters {params!r}")
    return registry.build(kind, info.name, params)


def _need_type(doc: dict, key: str, types, what: str, optional: bool = False, prefix: str = ""):
    if key not in doc:
        if optional:
            return None
        raise ModelFormatError(f"lacks {prefix}{key!r}")
    v = doc[key]
    if v is None and optional:
        return None
    if (isinstance(v, bool) and types is not bool) or not isinstance(v, types):
        raise ModelFormatError(f"{prefix}{key} must be {what}, got {v!r}")
    return v


def check_model_doc(info: dict, pipeline_params) -> None:
    """Every field of model.json that loading or ``assign`` reads, by type and range (the
    arrays are checked by :func:`check_model_arrays`); ``pipeline_params``: the names of the
    pipeline's own parameters."""
    pipe = _need_type(info, "pipeline", dict, "a mapping of pipeline parameters")
    bad = sorted(set(pipe) - set(pipeline_params))
    if bad:
        raise ModelFormatError(f"pipeline has unknown parameter(s) {bad}")
    st = _need_type(info, "stages", dict, "a mapping reducer/outliers/clusterer -> {class, params}")
    bad = sorted(set(st) - set(STAGES))
    if bad:
        raise ModelFormatError(f"stages has unknown stage kind(s) {bad}")
    for key in ("n_features_in", "n_items"):
        v = _need_type(info, key, int, "a positive integer", optional=key != "n_features_in")
        if v is not None and v < 1:
            raise ModelFormatError(f"{key} must be a positive integer, got {v!r}")
    names_in = _need_type(info, "feature_names_in", list, "a list of column names", optional=True)
    if names_in is not None and (len(names_in) != info["n_features_in"]
                                 or not all(isinstance(c, str) for c in names_in)):
        raise ModelFormatError(f"feature_names_in must be {info['n_features_in']} column names (n_features_in)")
    _need_type(info, "ref_normalize", bool, "true or false")
    if _need_type(info, "ref_center", bool, "true or false", optional=True) and not info["ref_normalize"]:
        raise ModelFormatError("ref_center is true but ref_normalize false: a correlation model compares "
                               "centred vectors by direction")
    t = _need_type(info, "timings_s", dict, "a mapping of stage -> seconds", optional=True)
    if t and not all(isinstance(v, int | float) and not isinstance(v, bool) for v in t.values()):
        raise ModelFormatError("timings_s must map stages to seconds")
    meta = _need_type(info, "metadata", dict, "a mapping", optional=True) or {}
    for key in ("encoder", "run_id", "source"):
        _need_type(meta, key, str, "text", optional=True, prefix="metadata.")
    names = _need_type(meta, "names", dict, "a mapping of cluster id -> name", optional=True,
                       prefix="metadata.") or {}
    _check_names(names, "metadata.names")
    by_level = _need_type(meta, "names_by_level", dict, "a mapping of level -> {cluster id: name}",
                          optional=True, prefix="metadata.") or {}
    n_levels = ((info.get("levels") or {}).get("n_levels")) if isinstance(info.get("levels"), dict) else None
    for lv, named in by_level.items():
        try:
            ok = int(lv) >= 0 and (n_levels is None or int(lv) < int(n_levels))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ModelFormatError(f"metadata.names_by_level: {lv!r} is not a level of this model")
        if not isinstance(named, dict):
            raise ModelFormatError(f"metadata.names_by_level.{lv} must be a mapping of cluster id -> name")
        _check_names(named, f"metadata.names_by_level.{lv}")
    sup = _need_type(meta, "names_support", dict, "a mapping of cluster id -> how sure its name is",
                     optional=True, prefix="metadata.") or {}
    _check_support(sup, "metadata.names_support")
    sup_by = _need_type(meta, "names_support_by_level", dict, "a mapping of level -> {cluster id: support}",
                        optional=True, prefix="metadata.") or {}
    for lv, sup in sup_by.items():
        if lv not in by_level:
            raise ModelFormatError(f"metadata.names_support_by_level: {lv!r} is not a level of names_by_level")
        if not isinstance(sup, dict):
            raise ModelFormatError(f"metadata.names_support_by_level.{lv} must be a mapping of cluster id -> support")
        _check_support(sup, f"metadata.names_support_by_level.{lv}")


def _check_support(sup: dict, where: str) -> None:
    """``names_support`` entries: {"name", "name_support", "name_sure", "name_why"} (read by
    ``naming.support.of_names``: a wrong type would answer a wrong ``name_sure``)."""
    for k, v in sup.items():
        try:
            int(k)
        except ValueError:
            raise ModelFormatError(f"{where}: {k!r} is not a cluster id") from None
        ok = (isinstance(v, dict) and isinstance(v.get("name_sure"), bool)
              and (v.get("name_support") is None or (isinstance(v.get("name_support"), int | float)
                                                     and not isinstance(v.get("name_support"), bool)))
              and all(v.get(f) is None or isinstance(v.get(f), str) for f in ("name", "name_why")))
        if not ok:
            raise ModelFormatError(f"{where}.{k} must be {{name, name_support (number), name_sure (true/false), "
                                   f"name_why}}, got {v!r}")


def _check_names(names: dict, where: str) -> None:
    for k, v in names.items():
        try:
            int(k)
        except ValueError:
            raise ModelFormatError(f"{where}: {k!r} is not a cluster id") from None
        if v is not None and not isinstance(v, str):
            raise ModelFormatError(f"{where}: the name of cluster {k} must be text, got {v!r}")


def check_model_arrays(got: dict, n_features_in: int, folder, info: dict | None = None) -> None:
    """The arrays of a loaded model (``got``: each of ``MODEL_ARRAYS`` -> its array or None):
    present, of the right kind, shape and range, consistent with each other and with model.json
    (a tampered model is refused, naming what is wrong)."""
    def bad(msg):
        return ModelFormatError(f"{folder}/arrays.npz is damaged or was edited: {msg}")

    need = ("labels_", "probabilities_", "cluster_", "confidence_", "embedding_", "ref_index_",
            "ref_vectors_", "novelty_threshold_")
    for name in need:
        if got[name] is None:
            raise bad(f"it lacks {name.rstrip('_')!r}")
    for name in ("ref_mean_", "ref_components_"):
        v = got[name]
        if v is not None and v.dtype.kind not in "iuf":
            raise bad(f"{name.rstrip('_')} must be numbers")
    for name in ("labels_", "cluster_", "ref_index_"):
        a = got[name]
        if a.dtype.kind not in "iu" or a.ndim != 1:
            raise bad(f"{name.rstrip('_')} must be a 1-D array of integers, got {a.dtype} {a.shape}")
    for name in ("probabilities_", "confidence_", "embedding_", "ref_vectors_", "novelty_threshold_"):
        a = got[name]
        if a.dtype.kind not in "iuf":
            raise bad(f"{name.rstrip('_')} must be numbers, got {a.dtype}")
        if not np.isfinite(a).all():
            raise bad(f"{name.rstrip('_')} holds NaN or infinity")
    labels, cluster, emb = got["labels_"], got["cluster_"], got["embedding_"]
    n = len(labels)
    if n < 1:
        raise bad("the model has no items")
    for key, have in (("n_items", n), ("n_reference", len(got["ref_index_"]))):
        if info is not None and info.get(key) is not None and info.get(key) != have:
            raise bad(f"it holds {have} rows where model.json says {key} {info.get(key)!r}")
    for name in ("probabilities_", "confidence_"):
        a = got[name]
        if a.ndim != 1 or len(a) != n:
            raise bad(f"{name.rstrip('_')} has shape {a.shape}, labels {n} rows")
        if len(a) and (a.min() < 0 or a.max() > 1):
            raise bad(f"{name.rstrip('_')} must lie in [0, 1]")
    if len(cluster) != n:
        raise bad(f"cluster has {len(cluster)} rows, labels {n}")
    if emb.ndim != 2 or len(emb) != n or emb.shape[1] < 1:
        raise bad(f"embedding has shape {emb.shape}, expected ({n}, k)")
    for name in ("labels_", "cluster_"):
        if got[name].min() < OUTLIER:
            raise bad(f"{name.rstrip('_')} holds values below {OUTLIER}")
    ri, rv = got["ref_index_"], got["ref_vectors_"]
    if rv.ndim != 2 or len(ri) != len(rv) or len(ri) < 1 or ri.min() < 0 or ri.max() >= n:
        raise bad("ref_index does not match the reference vectors")
    d = n_features_in
    mean, comp = got["ref_mean_"], got["ref_components_"]
    if (mean is None) != (comp is None):
        raise bad("ref_mean and ref_components come together")
    if comp is not None:
        if comp.ndim != 2 or comp.shape[1] != d or mean.shape != (d,) or rv.shape[1] != comp.shape[0]:
            raise bad(f"ref_mean {mean.shape} / ref_components {comp.shape} / ref_vectors {rv.shape} "
                      f"do not fit {d}-d inputs")
    elif rv.shape[1] != d:
        raise bad(f"ref_vectors are {rv.shape[1]}-d but model.json says n_features_in {d}")
    nt = got["novelty_threshold_"]
    if nt.size != 1 or float(np.ravel(nt)[0]) < 0:
        raise bad(f"novelty_threshold must be one number >= 0, got {nt.tolist()}")
    cal = got.get("novelty_calibration_")
    if cal is not None and (cal.dtype.kind != "f" or cal.ndim != 1 or len(cal) < 1 or not np.isfinite(cal).all()
                            or cal.min() < 0 or (np.diff(cal) < 0).any()):
        raise bad("novelty_calibration must be a sorted 1-D array of finite numbers >= 0")


def levels_from_arrays(arrays: dict, n: int, folder):
    """The path tuple of :func:`~mediacluster.pipeline_levels.set_path` from a saved model's arrays (None when it
    has no levels), checked: nested, ordered coarse to fine, consistent with the parents."""
    present = [k for k in ("levels", "parents", "parents_offsets", "n_clusters", "auto_level", "level",
                           "level_probabilities") if k in arrays]
    if not present:
        return None

    def bad(msg):
        return ModelFormatError(f"{folder}/arrays.npz is damaged or was edited: the hierarchy {msg}")

    if len(present) < 7:
        raise bad(f"is incomplete (has only {present})")
    L, flat, off = (np.asarray(arrays[k]) for k in ("levels", "parents", "parents_offsets"))
    P = np.asarray(arrays["level_probabilities"])
    if L.ndim != 2 or L.shape[1] != n or L.shape[0] < 1 or L.dtype.kind not in "iu":
        raise bad(f"levels must be (n_levels, {n}) integers, got {L.dtype} {L.shape}")
    if P.shape != L.shape or P.dtype.kind != "f" or not np.isfinite(P).all() or P.min() < 0 or P.max() > 1:
        raise bad("level_probabilities must be numbers in [0, 1] shaped like levels")
    L = L.astype(np.int64)
    if L.min() < 0:
        raise bad("levels hold negative cluster ids")
    counts = np.array([int(r.max()) + 1 for r in L])
    if (np.diff(counts) <= 0).any() or not np.array_equal(counts, np.asarray(arrays["n_clusters"])):
        raise bad(f"levels are not ordered coarse to fine or disagree with n_clusters: {counts.tolist()}")
    if off.shape != (len(L),) or off[0] != 0 or (np.diff(off) != counts[1:]).any() or off[-1] != len(flat):
        raise bad("parents_offsets do not match the levels")
    parents = [flat[off[i]:off[i + 1]].astype(np.int64) for i in range(len(L) - 1)]
    for lv, par in enumerate(parents):
        if par.min(initial=0) < 0 or par.max(initial=0) >= counts[lv] or (par[L[lv + 1]] != L[lv]).any():
            raise bad(f"level {lv + 1} is not nested in level {lv}")
    auto, level = int(np.asarray(arrays["auto_level"])), int(np.asarray(arrays["level"]))
    if not (0 <= auto < len(L) and 0 <= level < len(L)):
        raise bad(f"auto_level {auto} / level {level} out of range 0..{len(L) - 1}")
    return L, P.astype(np.float64), parents, auto, level
