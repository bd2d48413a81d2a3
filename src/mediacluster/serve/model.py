"""The model a service answers with, and switching to a newer version without downtime.

:class:`ModelHolder` owns the current :class:`Served` (a loaded ``Pipeline`` with its cluster
names, encoder, micro-batcher and tagger). A request reads ``holder.current`` once and keeps
that reference to the end, so a switch (one attribute assignment, atomic in Python) never
changes the model under a request: requests in flight finish on the version they started
with, the next ones get the new one, and none fails. The old version is freed when its last
request ends.

New versions are found through the model store's ``LATEST`` file (``persist.ModelStore``:
rewritten atomically after a complete version is in place): a watch thread reads it every
``poll_s`` seconds, and ``reload()`` (``POST /v1/reload``) checks at once. The new version is
loaded and warmed up completely before the switch; if it cannot be loaded the old one keeps
serving and the error is kept for ``/v1/model`` and the reload answer. A model folder given
directly (``RUN/models/v0003``) is pinned: it is never switched.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import persist
from ..data import status_of
from ..duplicates.index import read_from_model
from ..errors import InputError, MediaclusterError, ModelFormatError, ParameterError
from ..ingest import SkipItem
from ..model_items import neighbour_records
from ..naming import level_names, level_names_sure, pipeline_names, pipeline_names_sure
from ..pipeline import Pipeline
from ..similar import item_positions, use_duplicate_index
from .batcher import MicroBatcher

log = logging.getLogger(__name__)


@dataclass
class EncoderSlot:
    """An encoder loaded once and the micro-batcher that feeds it (shared by model versions
    that use the same encoder). The batcher's items are ``(served, upload bytes, file name)``;
    each resolves to the item's answer (:func:`answer_images`)."""

    name: str
    encoder: object
    batcher: MicroBatcher


@dataclass
class Served:
    """One loaded model version and what answering with it needs."""

    pipeline: Pipeline
    path: str
    version: str
    pointer: dict
    names: dict[int, str]
    encoder_name: str | None
    slot: EncoderSlot | None
    tagger: object | None
    loaded: str
    identity: tuple = ()
    clusters: list[dict] = field(default_factory=list)
    levels: list[dict] = field(default_factory=list)
    level_names: dict = field(default_factory=dict)  # level -> cluster id -> name (models with levels)
    names_sure: dict = field(default_factory=dict)  # cluster id -> name_sure/name_support/name_why
    level_names_sure: dict = field(default_factory=dict)  # level -> the same (models with levels)
    duplicates: object | None = None  # the model's DuplicateIndex (cluster --save-model --dedup)
    collection_root: str | None = None  # where the model's collection is now (--collection-root)

    @property
    def id(self) -> str:
        """The model id, unique across runs (``RUN_ID/v0003``: ``persist.model_id``), where
        ``version`` repeats between run folders."""
        return persist.model_id(self.path, self.pipeline.model_info_)

    @property
    def dim(self) -> int:
        return int(self.pipeline.n_features_in_)

    @property
    def media(self) -> str | None:
        """What the model reads from uploaded files, its encoder's ``media`` ("image" or
        "audio"); None for a model served without an encoder (vectors only). The one reading of
        it: the warm-up, ``describe`` and the endpoints' input kind and messages."""
        return getattr(self.slot.encoder, "media", None) if self.slot is not None else None

    def describe(self) -> dict:
        info = self.pipeline.model_info_
        meta = info.get("metadata", {}) or {}
        return {
            "version": self.version, "id": self.id, "path": self.path,
            "run_id": meta.get("run_id") or self.pointer.get("run_id"),
            "source": meta.get("source") or self.pointer.get("source"),
            "published": self.pointer.get("published"),
            "created": _created(Path(self.path)),
            "loaded": self.loaded,
            "encoder": self.encoder_name, "dim": self.dim,
            "media": self.media,
            "n_items": int(info.get("n_items", len(self.pipeline.labels_))),
            "n_clusters": int(self.pipeline.n_clusters_),
            "stages": info.get("stages"),
            "mediacluster_version": info.get("mediacluster_version"),
            "tags": self.tagger.classifier.classes_.tolist() if self.tagger is not None else None,
        }

    def answer(self, X: np.ndarray, uploads: list[bytes] | None = None,
               filenames: list[str | None] | None = None, similar: SimilarAsk | None = None) -> list[dict]:
        """One answer per item (the ``Assigned`` record of the API, ``index`` = position in
        ``X``; with ``similar`` the ``Similar`` record: plus its neighbours): :meth:`predict`
        made into plain JSON-ready dicts."""
        filenames = filenames if filenames is not None else [None] * len(X)
        return answer_rows(self, self.predict(X, uploads, filenames, similar), filenames)

    def predict(self, X: np.ndarray, uploads: list[bytes] | None = None,
                filenames: list[str | None] | None = None, similar: SimilarAsk | None = None) -> dict:
        """``Pipeline.predict_details`` plus tag suggestions (``tags``: one list per item, None
        without a tagger) and, when the model carries a duplicate index, ``duplicate_of`` (one
        ``DuplicateMatch.to_dict()`` or None per item; images by their ``uploads`` bytes and
        vectors, vectors alone otherwise); with ``similar``, ``similar``: ``Pipeline.similar``
        of the items (the same details, so the same cluster, as the rest of the answer)."""
        _one_omp_thread()
        det = self.pipeline.predict_details(X)
        if similar is not None:
            det["similar"] = self.pipeline.similar(X, details=dict(det), collection_root=self.collection_root,
                                                   **similar.params())
        det["path"] = path_records(det.get("path"), self.level_names, self.level_names_sure)
        if self.duplicates is not None:
            det["duplicate_of"] = duplicate_matches(self.duplicates, X, uploads, filenames)
        if self.tagger is not None:
            clf = self.tagger.classifier
            det["tags"] = clf.suggest_proba(clf.predict_proba(np.asarray(X, dtype=np.float32)))
        return det


@dataclass(frozen=True)
class SimilarAsk:
    """What ``/v1/similar`` asks for each of its items (``Pipeline.similar``'s parameters)."""

    k: int = 10
    same_cluster: bool = False
    level: int | None = None
    offset: int = 0
    per_cluster: int | None = None
    exclude: tuple[str, ...] = ()

    def params(self) -> dict:
        """The keyword arguments of ``Pipeline.similar``."""
        return {"k": self.k, "same_cluster": self.same_cluster, "level": self.level, "offset": self.offset,
                "per_cluster": self.per_cluster, "exclude": list(self.exclude) or None}


def similar_items(served: Served, ids: list[str], ask: SimilarAsk) -> list[dict | None]:
    """``/v1/similar`` of items of the served model's collection by their ids
    (``Pipeline.similar(ids=)``): per id, the item's own fitted answer (``id``, ``row``,
    ``cluster`` / ``name`` / ``name_sure`` / ``status`` at the level in use) plus ``level``,
    ``level_cluster`` / ``level_name`` / ``level_name_sure`` and its ``neighbours`` (the item
    itself left out), as ``similar_rows``; None for an id the model cannot search
    (``similar.item_positions``), answered by the caller as a failed item."""
    pipe = served.pipeline
    pos = item_positions(pipe, ids, served.collection_root)
    ok = np.flatnonzero(pos >= 0)
    out: list[dict | None] = [None] * len(ids)
    if not len(ok):
        return out
    sim = pipe.similar(ids=[ids[i] for i in ok], collection_root=served.collection_root, **ask.params())
    rows = sim["query_rows"]
    labels = np.asarray(pipe.labels_)[rows]
    status = np.where(np.isin(labels, pipe.junk_clusters() or []), "junk", status_of(labels))
    sure = {c: r["name_sure"] for c, r in served.names_sure.items()}
    for j, (i, rec) in enumerate(zip(ok, similar_rows(served, sim))):
        c = int(labels[j])
        out[i] = {"index": int(i), "id": str(ids[i]), "row": int(rows[j]), "cluster": c,
                  "name": served.names.get(c), "name_sure": sure.get(c), "status": str(status[j]), **rec}
    return out


def jsonable(v):
    """numpy scalars and arrays inside ``v`` (dicts, lists) as plain Python values."""
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [jsonable(x) for x in v]
    return v


def answer_rows(served: Served, det: dict, filenames: list[str | None]) -> list[dict]:
    """``Served.predict``'s arrays as one answer dict per item (fields and order of the API's
    ``Assigned``)."""
    names = served.names
    sure = {c: r["name_sure"] for c, r in served.names_sure.items()}
    labels, cluster = det["labels"].tolist(), det["cluster"].tolist()
    prob, conf = det["probabilities"].tolist(), det["confidence"].tolist()
    status, novel = list(det["status"]), det["novel"].tolist()
    novelty = [None if not np.isfinite(v) else round(float(v), 6) for v in det["novelty"].tolist()]
    paths, dups, tags = det.get("path"), det.get("duplicate_of"), det.get("tags")
    out = []
    for i in range(len(labels)):
        c, a = int(labels[i]), int(cluster[i])
        out.append({
            "index": i, "filename": filenames[i], "cluster": c, "name": names.get(c), "name_sure": sure.get(c),
            "status": str(status[i]), "probability": round(float(prob[i]), 6),
            "assigned_cluster": a, "assigned_name": names.get(a), "assigned_name_sure": sure.get(a),
            "confidence": round(float(conf[i]), 6), "outlier": c == -2, "novel": bool(novel[i]),
            "novelty": novelty[i],
            # path_records gives plain values already
            "path": paths[i] if paths is not None and paths[i] is not None else [],
            "duplicate_of": jsonable(dups[i]) if dups is not None and dups[i] is not None else None,
            "tags": ([{"tag": t, "confidence": round(float(p), 4)} for t, p in tags[i]]
                     if tags is not None else None),
        })
    if det.get("similar") is not None:
        for i, rec in enumerate(similar_rows(served, det["similar"])):
            out[i].update(rec)
    return out


def similar_rows(served: Served, sim: dict) -> list[dict]:
    """``Pipeline.similar``'s arrays as, per item, ``level``, ``level_cluster`` /
    ``level_name`` and ``neighbours`` (``model_items.neighbour_records``), named at the level."""
    lv = sim["level"]
    names = served.names if lv is None else served.level_names.get(lv, {})
    # how sure each name at that level is (null: not measured, e.g. a model saved before it was kept)
    recs = served.names_sure if lv is None else served.level_names_sure.get(lv, {})
    sure = {int(c): r.get("name_sure") for c, r in (recs or {}).items() if isinstance(r, dict)}
    return [{"level": lv, "level_cluster": int(qc), "level_name": names.get(int(qc)),
             "level_name_sure": sure.get(int(qc)), "neighbours": near}
            for qc, near in zip(sim["cluster"], neighbour_records(sim, names, sure))]


def answer_images(encoder, items: list[tuple]) -> list:
    """The batch function of an encoder's micro-batcher: ``items`` are ``(served, upload bytes,
    file name)`` or ``(served, upload bytes, file name, SimilarAsk)`` (``/v1/similar``) from any
    number of requests. Each upload is decoded by the encoder's own hardened loader
    (``prepare_bytes``), the decodable ones encoded in one call, and answered by their model
    version (``Served.answer``) in one call per version and question. Returns per item its
    answer dict, or the exception that refuses it (``SkipItem`` for an unusable upload, and for
    one whose embedding the model cannot place: :func:`answer_placeable`)."""
    out: list = [None] * len(items)
    ok, crops = [], []
    for i, (_, data, name, *_rest) in enumerate(items):
        try:
            crops.append(encoder.prepare_bytes(data, name or ""))
            ok.append(i)
        except SkipItem as e:
            out[i] = e
    if not ok:
        return out
    V = np.asarray(encoder.encode(crops)["embedding"], dtype=np.float32)
    groups: dict[tuple, list[int]] = {}  # rows of V by model version (a switch mid-batch: two) and question
    for j, i in enumerate(ok):
        groups.setdefault((id(items[i][0]), _ask(items[i])), []).append(j)
    for rows in groups.values():
        idx = [ok[j] for j in rows]
        served = items[idx[0]][0]
        try:
            answers = answer_placeable(served, V[rows], [items[i][1] for i in idx], [items[i][2] for i in idx],
                                       similar=_ask(items[idx[0]]))
        except Exception as e:  # noqa: BLE001 - refuses these items; their requests answer it
            answers = [e] * len(idx)
        for i, a in zip(idx, answers):
            out[i] = a
    return out


#: the kinds of an upload whose embedding the model cannot place (``Pipeline.unplaceable``)
UNPLACEABLE = ("no_direction", "too_large")


def answer_placeable(served: Served, V: np.ndarray, uploads: list[bytes], filenames: list[str | None],
                     similar: SimilarAsk | None = None) -> list:
    """``served.answer`` of uploads' embeddings ``V``, one per row; a row the model refuses (an
    encoder's vector without direction for a model that compares directions, values too large:
    ``Pipeline.unplaceable``) is a ``SkipItem`` of that kind instead, its upload's own failure, as
    an unreadable upload's, and the other rows are answered as if sent alone. The common case
    costs nothing more: the rows are asked about only when the model refuses the batch."""
    try:
        return served.answer(V, uploads, filenames, similar=similar)
    except InputError:
        refused = served.pipeline.unplaceable(V)
        if not refused:
            raise
    out: list = [None] * len(V)
    for r, (kind, why) in refused.items():
        out[r] = SkipItem(f"its embedding ({served.encoder_name}) {why}", kind, lasting=False)
    keep = [r for r in range(len(V)) if r not in refused]
    if keep:
        answers = served.answer(V[keep], [uploads[r] for r in keep], [filenames[r] for r in keep],
                                similar=similar)
        for r, a in zip(keep, answers):
            out[r] = a
    return out


def _ask(item: tuple) -> SimilarAsk | None:
    return item[3] if len(item) > 3 else None


def duplicate_matches(index, X: np.ndarray, uploads: list[bytes] | None,
                      filenames: list[str | None] | None) -> list[dict | None]:
    """"near-duplicate of item X (kind, distance d)" for each new item, as dicts. The batch's
    vectors are searched together (``DuplicateIndex.nearest``: one pass over the stored vectors
    for a large batch)."""
    out = []
    near = index.nearest(X) if index.vectors is not None and len(X) else None
    for i in range(len(X)):
        ni = None if near is None else (near[0][i], near[1][i])
        if uploads is not None:
            suffix = Path(filenames[i] or "").suffix if filenames is not None else ""
            m = index.query_bytes(uploads[i], vector=X[i], suffix=suffix, near=ni)
        else:
            m = index.query(vector=X[i], near=ni)
        out.append(None if m is None else {**m.to_dict(), "text": str(m)})
    return out


def _one_omp_thread() -> None:
    """faiss's OpenMP threads to 1 for the calling thread (OpenMP keeps this setting per thread,
    so the process-wide limit set at start does not reach the request threads)."""
    import faiss  # loaded already: the pipeline's index is a faiss index

    if faiss.omp_get_max_threads() != 1:
        faiss.omp_set_num_threads(1)


def identity(folder: Path) -> tuple:
    """What tells two model versions apart even at the same path (a run re-run into the same
    folder without a model and then with one starts again at v0001; a version carried into a
    re-run keeps its hard-linked model.json, so it is the same): the folder, and model.json's
    inode and modification time."""
    st = (Path(folder) / persist.MODEL_JSON).stat()
    return (str(Path(folder).resolve()), st.st_ino, st.st_mtime_ns)


def _created(path: Path) -> str | None:
    try:
        st = (path / persist.MODEL_JSON).stat()
    except OSError:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(st.st_mtime))


def cluster_table(pipe: Pipeline, names: dict[int, str], sure: dict[int, dict] | None = None) -> list[dict]:
    """id, name, how sure the name is (``name_sure``, ``name_support``, ``name_why`` from
    ``sure``, ``naming.pipeline_names_sure``; null where not measured), size (training items
    labelled so), assigned size (items whose nearest cluster it is, noise and outliers
    included) and junk (a person marked it so in the studio: ``predict_details`` answers its
    items with the status junk) of every cluster of a model."""
    labels = np.asarray(pipe.labels_)
    ids, sizes = np.unique(labels[labels >= 0], return_counts=True)
    assigned = dict(zip(*np.unique(np.asarray(pipe.cluster_), return_counts=True)))
    level = getattr(pipe, "level_", None)
    junk = set(pipe.junk_clusters())  # the pipeline's one reading of the curated metadata
    return [{"id": int(c), "name": names.get(int(c)), **_sure((sure or {}).get(int(c))), "size": int(n),
             "assigned_size": int(assigned.get(c, 0)), "level": int(level or 0), "junk": int(c) in junk}
            for c, n in zip(ids, sizes)]


def _sure(rec: dict | None) -> dict:
    """The ``name_sure`` / ``name_support`` / ``name_why`` of a cluster listing (null: not measured)."""
    from ..naming.support import NOT_MEASURED

    return {f: (rec or NOT_MEASURED).get(f) for f in NOT_MEASURED}


def path_records(path: dict | None, names: dict[int, dict[int, str]] | None = None,
                 sure: dict[int, dict[int, dict]] | None = None) -> list[list[dict]] | None:
    """``predict_details``'s ``path`` ({"labels", "probabilities"}, each (n_levels, m)) as one
    list per item of ``{"level", "cluster", "name", "name_sure", "probability"}``, root to leaf
    (``names``: level -> cluster id -> name, see ``naming.level_names``; ``sure``: level ->
    cluster id -> how sure, ``naming.level_names_sure``; null where not measured); None
    without levels."""
    if path is None:
        return None
    lab, prob = np.asarray(path["labels"]), np.asarray(path["probabilities"])
    names, sure = names or {}, sure or {}
    return [[{"level": lv, "cluster": int(lab[lv, i]), "name": names.get(lv, {}).get(int(lab[lv, i])),
              "name_sure": (sure.get(lv, {}).get(int(lab[lv, i])) or {}).get("name_sure"),
              "probability": round(float(prob[lv, i]), 6)}
             for lv in range(lab.shape[0])] for i in range(lab.shape[1])]


def level_table(pipe: Pipeline, names: dict[int, str], by_level: dict[int, dict[int, str]] | None = None,
                sure: dict[int, dict] | None = None, sure_by_level: dict[int, dict[int, dict]] | None = None) -> list[dict]:
    """The model's levels, coarse to fine: ``level``, ``n_clusters``, ``auto`` / ``chosen``
    (the clusterer's choice / the level ``cluster`` answers with) and per cluster its ``id``,
    ``name``, ``size`` (training items) and ``parent`` (its cluster in the level above; None at
    level 0); a flat model has one level, ``{"level": 0, "n_clusters": k}``. The chosen level
    is named by ``names``, the others by ``by_level`` (level -> cluster id -> name), each name
    with how sure it is (``sure`` / ``sure_by_level``, as :func:`cluster_table`). An id with
    no training items is not listed (the finest level of a curated tree keeps the studio's ids,
    which have gaps where clusters were merged away)."""
    table = pipe.level_table()
    if not table:
        return [{"level": 0, "n_clusters": int(pipe.n_clusters_)}]
    out = []
    for t in table:
        par = t["parents"]
        out.append({"level": t["level"], "n_clusters": t["n_clusters"], "auto": t["auto"], "chosen": t["chosen"],
                    "clusters": [{"id": c, "size": n, "parent": None if par is None else par[c],
                                  "name": names.get(c) if t["chosen"] else (by_level or {}).get(t["level"], {}).get(c),
                                  **_sure((sure or {}).get(c) if t["chosen"]
                                          else (sure_by_level or {}).get(t["level"], {}).get(c))}
                                 for c, n in enumerate(t["sizes"]) if n > 0]})
    return out


def _sample_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (256, 256), (127, 127, 127)).save(buf, "PNG")
    return buf.getvalue()


def _sample_wav() -> bytes:
    """One second of a 440 Hz tone, 16 kHz 16-bit mono (the standard library's wave writer)."""
    import wave

    t = np.arange(16000) / 16000.0
    pcm = (0.3 * 32767 * np.sin(2 * np.pi * 440.0 * t)).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


class ModelHolder:
    """The current model version of a service, switched atomically (see the module docstring).

    Parameters
    ----------
    source : a run folder, a ``models/`` folder (watched) or one model folder (pinned)
    tagger : a loaded ``mediacluster.tags.Tagger`` (its encoder must be the model's), or None
    poll_s : seconds between two reads of ``LATEST`` by the watch thread
    max_batch, window_s, encode_workers : the micro-batcher (see ``MicroBatcher``);
        ``encode_workers`` None = the encoder's own ``concurrency``
    on_batch : metrics hook ``(batch size, seconds)``
    collection_root : where a ``--dedup`` model's training files are now (its duplicate index's
        geometric check reads them; ``duplicates.index.DuplicateIndex.load``)
    """

    def __init__(self, source: str | os.PathLike, tagger=None, poll_s: float = 1.0,
                 max_batch: int = 32, window_s: float = 0.002, encode_workers: int | None = None,
                 on_batch=None, on_switch=None, collection_root: str | os.PathLike | None = None):
        self.source = Path(source)
        self.collection_root = collection_root
        self.store = persist.model_store_of(self.source)
        self.tagger = tagger
        self.poll_s = float(poll_s)
        self.max_batch, self.window_s, self.encode_workers = max_batch, window_s, encode_workers
        self.on_batch = on_batch
        self.on_switch = on_switch
        #: called with "switched" / "unchanged" / "failed" after every reload check, the file
        #: watch's and POST /v1/reload's alike (the service counts them)
        self.on_reload = None
        self._slots: dict[str, EncoderSlot] = {}
        self._load_lock = threading.Lock()
        self._stop = threading.Event()
        self._watch: threading.Thread | None = None
        self.last_error: str | None = None
        self.switches = 0
        self._seen = self.store.pointer() if self.store is not None else None
        self.current: Served = self._load(persist.resolve_model(self.source))

    # -- loading ---------------------------------------------------------------------------------
    def _slot(self, name: str) -> EncoderSlot:
        slot = self._slots.get(name)
        if slot is not None:
            return slot
        from ..encoders import get_encoder

        enc = get_encoder(name)

        def run(items):
            return answer_images(enc, items)

        workers = self.encode_workers or int(getattr(enc, "concurrency", 1) or 1)
        batcher = MicroBatcher(run, max_batch=self.max_batch, window_s=self.window_s,
                               workers=workers, on_batch=self.on_batch, name=f"encode-{name}")
        slot = EncoderSlot(name, enc, batcher)
        self._slots[name] = slot
        return slot

    def _load(self, folder: Path) -> Served:
        pipe = Pipeline.load(folder)
        meta = pipe.model_info_.get("metadata", {}) or {}
        names = pipeline_names(pipe)
        by_level = level_names(pipe, names)
        sure, sure_by_level = pipeline_names_sure(pipe, names), level_names_sure(pipe, by_level)
        encoder_name = meta.get("encoder") or None
        slot = self._slot(encoder_name) if encoder_name else None
        tagger = self.tagger
        if tagger is not None:
            tag_enc = tagger.encoder_name if tagger.encoder_name not in ("precomputed", "") else None
            if tag_enc != encoder_name:
                raise ParameterError(
                    f"the tag model reads {tag_enc or 'precomputed'} vectors but the model {folder} "
                    f"was fitted on {encoder_name or 'precomputed'} vectors; train the tagger on the "
                    "same encoder", "tags")
            if slot is not None and tagger.encoder_id and tagger.encoder_id != slot.encoder.id:
                raise ParameterError(f"the tag model was trained on {tagger.encoder_id} vectors but "
                                     f"the installed encoder is {slot.encoder.id}", "tags")
            n_in = int(getattr(tagger.classifier, "n_features_in_", pipe.n_features_in_))
            if n_in != pipe.n_features_in_:
                raise ParameterError(f"the tag model reads {n_in}-d vectors, the model "
                                     f"{pipe.n_features_in_}-d", "tags")
        pointer = (self.store.pointer() if self.store is not None else None) or {}
        if pointer.get("version") != folder.name:
            pointer = {}
        served = Served(pipeline=pipe, path=str(folder), version=folder.name, pointer=pointer,
                        names=names, encoder_name=encoder_name, slot=slot, tagger=tagger,
                        loaded=time.strftime("%Y-%m-%dT%H:%M:%S%z"), identity=identity(folder),
                        clusters=cluster_table(pipe, names, sure),
                        levels=level_table(pipe, names, by_level, sure, sure_by_level),
                        level_names=by_level, names_sure=sure, level_names_sure=sure_by_level,
                        duplicates=read_from_model(folder, root=self.collection_root),
                        collection_root=None if self.collection_root is None else str(self.collection_root))
        pipe.model_items(served.collection_root)  # read (and checked) now, not by the first /v1/similar
        use_duplicate_index(pipe, served.duplicates)  # similar(ids=) finds a repost by it, not read twice
        media = served.media
        if media in ("image", "audio"):
            # warm up the whole way of an upload: the encoder's first call pays graph set-up (an
            # audio encoder: librosa's import and numba kernels, over a second, which the first
            # clip uploaded to a "ready" service used to wait for)
            sample = (_sample_png(), "warm-up.png") if media == "image" else (_sample_wav(), "warm-up.wav")
            got = answer_images(slot.encoder, [(served, *sample)])[0]
            # an embedding the model cannot place (an encoder with nothing to say about a plain
            # grey picture) went the whole way too: the model serves the uploads it can place
            if isinstance(got, BaseException) and not (isinstance(got, SkipItem) and got.kind in UNPLACEABLE):
                raise got
        else:  # warm up: faiss, the outlier stage, the tagger
            rng = np.random.default_rng(0)
            served.predict(rng.standard_normal((1, served.dim)).astype(np.float32))
        return served

    def set_batch_hook(self, on_batch) -> None:
        """Call ``on_batch(size, seconds)`` after every encoder call, now and for later encoders."""
        self.on_batch = on_batch
        for slot in self._slots.values():
            slot.batcher.on_batch = on_batch

    # -- switching -------------------------------------------------------------------------------
    @property
    def pinned(self) -> bool:
        return self.store is None

    def latest_path(self, ptr: dict | None = None) -> Path | None:
        """The version to serve: the one ``ptr`` (a read of ``LATEST``) names, else a new read's."""
        if self.store is None:
            return None
        return self.store.latest_of(ptr) if ptr is not None else self.store.latest()

    def reload(self) -> dict:
        """Switch to the store's latest version if it is not the one served; returns
        ``{"switched", "version", "previous"}``. Raises ``ModelFormatError`` (the old version
        keeps serving) when the latest version cannot be loaded."""
        try:
            res = self._reload()
        except Exception:
            self._reloaded("failed")
            raise
        self._reloaded("switched" if res["switched"] else "unchanged")
        return res

    def _reloaded(self, result: str) -> None:
        if self.on_reload is not None:
            self.on_reload(result)

    def _reload(self) -> dict:
        with self._load_lock:
            cur = self.current
            # held (ModelStore.hold: not to serve yet) and the version from one read of LATEST: a
            # held version published between two reads was served
            ptr = self.store.pointer() if self.store is not None else None
            if (ptr or {}).get("held"):
                return {"switched": False, "version": cur.version, "previous": cur.version}
            latest = self.latest_path(ptr)
            try:
                same = latest is None or identity(latest) == cur.identity
            except OSError:
                same = False  # no readable model.json: let loading say what is wrong
            if same:
                return {"switched": False, "version": cur.version, "previous": cur.version}
            try:
                new = self._load(Path(latest))
            except MediaclusterError as e:
                self.last_error = f"{latest}: {e}"
                log.error("model version %s not loaded, still serving %s: %s", latest, cur.version, e)
                raise ModelFormatError(f"cannot switch to {latest}: {e}; still serving "
                                       f"{cur.version}") from e
            self.current = new  # the switch: one reference assignment
            self.last_error = None
            self.switches += 1
            log.info("switched model %s -> %s", cur.version, new.version)
            if self.on_switch is not None:
                self.on_switch(cur, new)
            return {"switched": True, "version": new.version, "previous": cur.version}

    def _watch_loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                ptr = self.store.pointer()
                if ptr != self._seen:  # LATEST was rewritten: a new version, or a new run
                    self._seen = ptr
                    self.reload()
            except ModelFormatError:
                pass  # logged and kept in last_error; tried again when LATEST changes again
            except Exception:  # noqa: BLE001 - the watch must outlive any surprise
                log.exception("model watch: unexpected error")

    def start(self) -> None:
        """Start the file watch (nothing to watch for a pinned model folder)."""
        if self.store is None or self._watch is not None:
            return
        self._stop.clear()
        self._watch = threading.Thread(target=self._watch_loop, name="model-watch", daemon=True)
        self._watch.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.join(timeout=5)
            self._watch = None
        for slot in self._slots.values():
            slot.batcher.close()

    @property
    def ready(self) -> bool:
        cur = self.current
        return cur is not None and (cur.slot is None or cur.slot.batcher.alive)
