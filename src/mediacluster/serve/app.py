"""The service's HTTP API (FastAPI, on the shared ``mediacluster.web`` stack).

Endpoints: ``POST /v1/assign`` (images, or audio clips for an audio model, as multipart ``files``, or JSON ``{"vectors": [...]}``),
``POST /v1/similar`` (the same inputs, or ``{"ids": [...]}`` of the model's collection; per item its assign
answer (an id: its own fitted answer) and its ``k`` most similar fitted items, shaped by ``offset`` /
``per_cluster`` / ``exclude``: ``Pipeline.similar``, through the same micro-batcher and model version as assign),
``GET /v1/clusters``, ``GET /v1/model``, ``POST /v1/reload``, the inbox of ``--keep-uploads``
(``GET /v1/inbox``, ``GET /v1/inbox/files/{name}``, ``POST /v1/inbox/mark``: ``serve.inbox_http``),
``GET /healthz``, ``/readyz``,
``/metrics`` (Prometheus text), and the framework's OpenAPI page at ``/docs``.

One image's way through: the upload is read and size-checked here, on the event loop; then it
goes to the encoder's micro-batcher, whose worker threads take it together with whatever other
requests sent meanwhile and do the rest for the whole batch (``model.answer_images``): decode and
preprocess by the encoder's own ``prepare_bytes`` (the package's hardened loader:
decompression-bomb and size caps, truncated files, non-images), one encoder call, and one call of
the served model's ``predict_details`` (plus tags) per model version, each item with the version
its request started with. One hand-over and one wake-up per image for the event loop, and the
per-call costs of the encoder and the model shared by the batch (benchmarks/RESULTS.md,
"Service").

Per item: an item that cannot be read (an upload the loader refuses, a file over the size limit,
an upload whose embedding the model cannot place, a vector row with NaN or one the model cannot
place) is answered in its place with its error
(``FailedItem``), the others as usual; a 4xx is for what is wrong with the request itself, or a
request none of whose items can be read (benchmarks/RESULTS.md, "The service answers per item").
A client may give each item its own id (``item_ids``, one per file or vector, checked by ``item_ids``),
echoed in its answer as ``item_id`` and kept with it in the inbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import dataclass
from typing import Annotated

import numpy as np
from fastapi import FastAPI, Header, Query, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Discriminator, Field
from pydantic import Tag as Case

from .._version import __version__
from ..data import nonfinite_message, nonfinite_rows
from ..errors import InputError
from ..fileio import needs_escape
from ..inbox import MAX_ITEM_ID
from ..ingest import SkipItem
from ..web import ApiError, StrictBody, check_body, create_app
from ..web.app import DOCS_STATIC, error_docs
from ..web.metrics import HttpMetrics
from .inbox_http import add_inbox_routes
from .model import ModelHolder, Served, SimilarAsk, similar_items

#: SkipItem kinds that are about size: answered 413, the rest of a bad upload 400
TOO_LARGE = {"file_too_large", "image_too_large"}
MAX_FILENAME = 200
#: the most neighbours one item of ``/v1/similar`` may ask for
MAX_SIMILAR = 100
#: the most neighbours one item of ``/v1/similar`` may skip (``offset``: pages)
MAX_OFFSET = 900
#: numbers below this (in magnitude) stay finite as float32; from it on they round to infinity
F32_LIMIT = 2.0 ** 128 - 2.0 ** 103


@dataclass
class ServeOptions:
    """Limits and settings of one service (the CLI flags)."""

    max_files: int = 64            # images per request
    max_vectors: int = 4096        # vectors per request
    max_file_bytes: int = 20 << 20  # one uploaded file
    max_body_bytes: int = 128 << 20  # a whole request
    time_limit_s: float | None = 30.0
    token: str | None = None
    read_token: str | None = None    # --read-token: may predict and read, not POST /v1/reload
    cors_origins: tuple = ()         # --cors-origin: web origins whose pages may call the service
    keep_uploads: str | None = None  # the inbox folder (--keep-uploads; None: nothing is kept)
    keep: tuple = ("novel",)         # --keep: which answers are kept (serve.inbox.KEEP_KINDS)
    keep_below: float = 0.5          # --keep-below: "uncertain" is a probability below this
    keep_novelty: float | None = None  # --keep-novelty: "novel" also keeps novelty >= this
    keep_max_bytes: int | None = None  # --keep-max-mb: stored bytes at most


# -- response schema (also the OpenAPI page) ---------------------------------------------------
class Health(BaseModel):
    status: str = Field(description="always 'ok': the process answers (a liveness probe)")


class Ready(BaseModel):
    status: str = Field(description="'ready': a model version is loaded and its encoder workers run; "
                        "also while a newer version loads and after one failed to load (the served "
                        "one goes on: /v1/model's reload_error says why)")
    version: str = Field(description="the model version answering now (as each answer's model.version)")
    id: str = Field(description="the model id answering now (as each answer's model.id)")


# fields several answer models declare: each one's shape and description written once
ItemIndex = Annotated[int, Field(description="position of the item in the request")]
Filename = Annotated[str | None, Field(description="the uploaded file's name (images, audio clips)")]


class Tag(BaseModel):
    tag: str = Field(description="a tag the tagger suggests")
    confidence: float = Field(description="the tagger's confidence in it")


class Assigned(BaseModel):
    index: ItemIndex
    filename: Filename = None
    cluster: int = Field(description="cluster id; -1 noise, -2 outlier")
    name: str | None = Field(None, description="the cluster's name")
    name_sure: bool | None = Field(None, description="whether `name` is sure: a person gave it, or the "
                                   "items the model was fitted on support the automatic name (see "
                                   "`/v1/clusters`' `name_support` and `name_why`); false: a guess; null: "
                                   "not measured (no name, or a model saved before this was kept)")
    status: str = Field(description="clustered | noise | outlier | junk (a cluster marked junk in the studio)")
    probability: float = Field(description="membership probability of `cluster` (0 for noise/outliers)")
    assigned_cluster: int = Field(description="nearest cluster, also for noise and outliers")
    assigned_name: str | None = Field(None, description="the name of `assigned_cluster`")
    assigned_name_sure: bool | None = Field(None, description="whether `assigned_name` is sure (as `name_sure`)")
    confidence: float = Field(description="confidence of `assigned_cluster`")
    outlier: bool = Field(description="flagged as an outlier / novelty (status 'outlier')")
    novel: bool = Field(description="farther from its nearest training items than all but 1% of the "
                        "training items are when scored as new items (about `novelty` >= 0.99): "
                        "unlike the collection")
    novelty: float | None = Field(None, description="share of the training items, scored as new "
                                  "items, that are nearer to their nearest training items than this "
                                  "one (0..1; flag your own threshold, e.g. 0.95 for a 5% false-positive "
                                  "rate on items like the collection's); null from a model saved before "
                                  "this was kept")
    path: list = Field(default_factory=list, description="hierarchy path from the root to the "
                       "leaf when the model has levels: one {level, cluster, name, name_sure, probability} "
                       "per level, "
                       "coarse to fine; empty for a flat model")
    duplicate_of: dict | None = Field(None, description="near-duplicate match when the model "
                                      "carries a duplicate index")
    tags: list[Tag] | None = Field(None, description="suggested tags; [] when the tagger "
                                   "abstains; null without a tag model")
    item_id: str | None = Field(None, description="the id the client gave this item (`item_ids`, echoed; "
                                "kept with it in the inbox, a key of `POST /v1/inbox/mark`); null: none given")
    kept: str | None = Field(None, description="why this item was kept in the inbox for review "
                             "(`--keep-uploads`: novel, uncertain, junk or all, the `--keep` rule that "
                             "picked it; written after the answer); null: not kept (no inbox, the rule "
                             "did not pick it, or the inbox is full: `--keep-max-mb`)")


class ItemError(BaseModel):
    kind: str = Field(description="a short stable code: empty, truncated, not_an_image, corrupt, "
                      "image_too_large, file_too_large, not_finite, ... (the loader's, as `cluster`'s "
                      "skipped files); no_direction, too_large: an item (a vector row, or an upload's "
                      "embedding) the model cannot place")
    message: str = Field(description="the item named (`files[i] ('name.jpg')` or `vectors[i]`) and why it "
                         "cannot be read")


class FailedItem(BaseModel):
    index: ItemIndex
    filename: Filename = None
    item_id: str | None = Field(None, description="the id the client gave this item (`item_ids`), echoed")
    error: ItemError = Field(description="why this item has no answer; the request's other items are "
                             "answered as usual")


def _item_case(v) -> str:
    """Which schema one item of ``items`` has: ``failed`` (it carries ``error``) or ``placed``."""
    return "failed" if (v.get("error") if isinstance(v, dict) else getattr(v, "error", None)) else "placed"


def _similar_case(v) -> str:
    """Which schema one item of a ``/v1/similar`` answer has: ``failed``, ``item`` (asked by its
    id: it has its ``row``) or ``placed``."""
    if _item_case(v) == "failed":
        return "failed"
    return "item" if (("row" in v) if isinstance(v, dict) else hasattr(v, "row")) else "placed"


class Neighbour(BaseModel):
    row: int = Field(description="the item's row among the model's fitted items (its reference items)")
    id: str | None = Field(None, description="the item's id in the run the model was saved from (null for "
                           "a model fitted on bare vectors or saved before ids were kept: use `row`)")
    path: str | None = Field(None, description="the item's file, resolved against the collection root "
                             "(`serve --collection-root`, else the one recorded with the run); null "
                             "for a model without its items' ids, as `id`")
    similarity: float | None = Field(None, description="cosine similarity to the new item (1 - d^2/2 "
                                     "of the unit vectors in the model's projected search space; of the "
                                     "mean-centred ones, their correlation, for a correlation model); "
                                     "null for a model that does not compare directions")
    distance: float = Field(description="distance in the model's search space (smaller is nearer)")
    cluster: int = Field(description="the item's cluster at `level` (-1 noise, -2 outlier)")
    name: str | None = Field(None, description="that cluster's name")
    name_sure: bool | None = Field(None, description="whether `name` is sure (as the assign answer's "
                                   "`name_sure`, at `level`); null: not measured (no name, or a model "
                                   "saved before this was kept)")


# the level block of a /v1/similar answer, a new item's and a collection item's
AtLevel = Annotated[int | None, Field(description="the level `level_cluster` and the neighbours' `cluster` "
                                      "are at; null for a flat model")]
LevelCluster = Annotated[int, Field(description="the item's cluster at `level` (what `same_cluster` restricts "
                                    "to; a new item's noise assigned to its nearest cluster)")]
LevelName = Annotated[str | None, Field(description="that cluster's name")]
LevelNameSure = Annotated[bool | None, Field(description="whether `level_name` is sure (as `name_sure`); null: "
                                             "not measured")]
Neighbours = Annotated[list[Neighbour], Field(
    description="the `k` fitted items most similar to the item, nearest first (fewer with `same_cluster` in "
                "a smaller cluster); an item asked by id is never its own neighbour (nor, for a model "
                "fitted with --dedup, its near-duplicates: one item)")]


class Similar(Assigned):
    level: AtLevel = None
    level_cluster: LevelCluster
    level_name: LevelName = None
    level_name_sure: LevelNameSure = None
    neighbours: Neighbours


class SimilarToItem(BaseModel):
    index: int = Field(description="its position in the request's `ids`")
    id: str = Field(description="the item asked about, an id of the model's collection")
    row: int = Field(description="its row among the model's fitted items")
    cluster: int = Field(description="its own fitted cluster at the level in use (-1 noise, -2 outlier)")
    name: str | None = Field(None, description="that cluster's name")
    name_sure: bool | None = Field(None, description="whether `name` is sure (as the assign answer's)")
    status: str = Field(description="clustered / noise / outlier, or junk (a cluster marked junk in the studio)")
    level: AtLevel = None
    level_cluster: LevelCluster
    level_name: LevelName = None
    level_name_sure: LevelNameSure = None
    neighbours: Neighbours


class ModelRef(BaseModel):
    version: str = Field(description="the model version that answered (e.g. v0003; the number alone "
                         "repeats between run folders: `id` does not)")
    id: str = Field(description="the model id, unique across runs: RUN_ID/vNNNN (the run it was fitted "
                    "in and its version; the version alone for a model saved without a run id). A "
                    "version of an earlier run kept in the folder for rollback keeps its id")
    run_id: str | None = Field(None, description="the run the model was fitted from; null for a model "
                               "not saved from a run")


AnsweredBy = Annotated[ModelRef, Field(description="the model version that answered every item of the request")]


#: one item of an answer: placed, or (an upload that cannot be read, a vector with NaN) its error
AssignItem = Annotated[Annotated[Assigned, Case("placed")] | Annotated[FailedItem, Case("failed")],
                       Discriminator(_item_case)]
FAILED_TEXT = ("items that could not be read (each in `items` at its position, with `error` and no "
               "placement); 0 when every item was placed. A request none of whose items can be read "
               "is refused (400, or 413 when all are too large) naming each")


class AssignResponse(BaseModel):
    model: AnsweredBy
    failed: int = Field(0, description=FAILED_TEXT)
    items: list[AssignItem] = Field(description="one answer per item, in the order they were sent: "
                                    "its placement, or `error` for an item that could not be read")


class SimilarResponse(BaseModel):
    model: AnsweredBy
    k: int = Field(description="neighbours asked for per item")
    same_cluster: bool = Field(description="neighbours only from the item's own cluster at `level`")
    failed: int = Field(0, description=FAILED_TEXT)
    offset: int = Field(0, description="neighbours skipped per item (the page)")
    per_cluster: int | None = Field(None, description="at most this many neighbours of one cluster at `level`")
    items: list[Annotated[Annotated[Similar, Case("placed")] | Annotated[SimilarToItem, Case("item")]
                          | Annotated[FailedItem, Case("failed")], Discriminator(_similar_case)]] = Field(
        description="one answer per item, in the order they were sent: its placement and neighbours (a "
                    "collection item asked by id: its own cluster and neighbours), or `error` for an "
                    "item that could not be read (an id the model cannot search: `unknown_id`)")


class ClusterInfo(BaseModel):
    id: int = Field(description="the cluster id the answers' `cluster` uses")
    name: str | None = Field(None, description="the cluster's name")
    name_sure: bool | None = Field(None, description="true: a person gave the name, or the items support "
                                   "the automatic name (`name_support` at least 0.5 and above what random "
                                   "groups of its size reach); false: the automatic name is a guess; null: "
                                   "not measured (no name, a name without a concept, or a model saved "
                                   "before this was kept)")
    name_support: float | None = Field(None, description="how much more the encoder gives the name on the "
                                       "cluster's items than on the whole collection's, chance-corrected "
                                       "(1: certain, 0: no more than any item); null for a person's name "
                                       "or one not measured")
    name_why: str | None = Field(None, description="one sentence saying what `name_sure` rests on")
    size: int = Field(description="training items in the cluster")
    assigned_size: int = Field(description="training items whose nearest cluster it is")
    level: int = Field(0, description="the level these clusters belong to (the one `cluster` answers with)")
    junk: bool = Field(False, description="marked as junk in the studio: items answered in it have the "
                       "status junk")


class ClustersResponse(BaseModel):
    model: ModelRef = Field(description="the model version served")
    levels: list[dict] = Field(description="coarse to fine: level, n_clusters, auto, chosen and per "
                               "cluster its id, name, name_sure, name_support, name_why (as `clusters`), "
                               "size and parent (the cluster it belongs to one level up)")
    clusters: list[ClusterInfo] = Field(description="the clusters at the level in use (the one "
                                        "`cluster` answers with)")


def similar_body(dim: int, max_files: int, max_vectors: int) -> dict:
    """``/v1/similar``'s OpenAPI request body: ``/v1/assign``'s, or JSON ``{"ids": [...]}`` (items
    of the model's collection by id)."""
    doc = assign_body(dim, max_files, max_vectors)
    content = doc["requestBody"]["content"]
    ids = {"type": "object", "required": ["ids"], "additionalProperties": False, "properties": {"ids": {
        "type": "array", "minItems": 1, "maxItems": max_vectors, "items": {"type": "string"},
        "description": f"ids of the model's collection (as the neighbours' `id`), 1..{max_vectors} per "
                       "request: more like each of these items, the item itself left out"}}}
    content["application/json"] = {"schema": {"oneOf": [content["application/json"]["schema"], ids]}}
    return doc


def assign_body(dim: int, max_files: int, max_vectors: int) -> dict:
    """The OpenAPI request body of ``/v1/assign`` and ``/v1/similar`` (FastAPI cannot derive it:
    the handlers read files or JSON themselves), with the limits and the served model's vector
    size, so a client (or a fuzzer) built from the description sends what the handler reads."""
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["files"], "additionalProperties": False,
            "properties": {"files": {
                "type": "array", "minItems": 1, "maxItems": max_files,
                "items": {"type": "string", "format": "binary"},
                "description": f"image files, or audio clips for an audio model (repeat the field; "
                               f"1..{max_files} per request)"},
                "item_ids": {"type": "array", "maxItems": max_files, "items": ITEM_ID_SCHEMA,
                             "description": ITEM_IDS_TEXT + " (repeat the field, one per file, in the "
                                            "files' order; an empty one: none for that file)"}}}},
        "application/json": {"schema": {
            "type": "object", "required": ["vectors"], "additionalProperties": False,
            "properties": {"vectors": {
                "type": "array", "minItems": 1, "maxItems": max_vectors,
                "items": {"type": "array", "minItems": dim, "maxItems": dim, "items": {
                    # read as float32: a number past its range is infinity, refused as not finite
                    "type": "number", "exclusiveMinimum": -F32_LIMIT, "exclusiveMaximum": F32_LIMIT}},
                "description": f"vectors from the model's encoder: 1..{max_vectors} per request, "
                               f"each {dim} finite numbers"},
                "item_ids": {"type": "array", "minItems": 1, "maxItems": max_vectors,
                             "items": {"anyOf": [ITEM_ID_SCHEMA, {"type": "null"}]},
                             "description": ITEM_IDS_TEXT + " (one per vector, in order; null or \"\": none "
                                            "for that one)"}}}},
    }}}


#: an uploader's own id for one item (``item_ids``), as the OpenAPI description gives it
ITEM_ID_SCHEMA = {"type": "string", "maxLength": MAX_ITEM_ID}
ITEM_IDS_TEXT = (f"optional: your own id for each item (a post id, any text up to {MAX_ITEM_ID} characters), "
                 "echoed in its answer's `item_id`, kept with it in the inbox (`--keep-uploads`: "
                 "`GET /v1/inbox` shows it, `POST /v1/inbox/mark` takes it as a key)")


def item_ids(ids: list, n: int, what: str) -> list[str | None]:
    """The uploader's ids of a request's ``n`` items (``what``: "files" or "vectors"), one per
    item ("" or None: none); a 422 naming the one that is not text, too long or not Unicode
    text (a lone surrogate), or the count when it is not one per item."""
    if len(ids) != n:
        raise ApiError(422, "invalid_request", f"item_ids: {len(ids)} ids for {n} {what}; send one per item, "
                       "in the same order (\"\" or null for an item without one)")
    out = []
    for i, v in enumerate(ids):
        if v is not None and not isinstance(v, str):
            raise ApiError(422, "invalid_request", f"item_ids[{i}]: an id is text (or null), got {type(v).__name__}")
        if v and len(v) > MAX_ITEM_ID:
            raise ApiError(422, "invalid_request", f"item_ids[{i}]: {len(v)} characters; at most {MAX_ITEM_ID}")
        if v and needs_escape(v):
            raise ApiError(422, "invalid_request", f"item_ids[{i}] is not Unicode text (a lone "
                           "surrogate: \\ud800-\\udfff alone)")
        out.append(v or None)
    return out


#: /v1/similar's `level`, before the served model's levels are added (level_param)
LEVEL_TEXT = ("the level of the model's tree whose clusters are answered (`level`, `level_cluster`, the "
              "neighbours' `cluster`) and that `same_cluster` restricts to; default the level in use. The "
              "levels are the model's: 0 is the coarsest, each next one finer; a flat model has level 0 "
              "only (`GET /v1/clusters` lists them). A level the model lacks is a 400 naming the range")


def level_param(served: Served) -> tuple[str, dict]:
    """The description and schema of /v1/similar's ``level`` for ``served``: its levels, coarse
    to fine, their cluster counts, the level in use and the automatic one."""
    table = [t for t in served.levels if "chosen" in t]
    if not table:
        return (f"{LEVEL_TEXT}. This model ({served.version}) is flat: level 0 only",
                {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 0}, {"type": "null"}]})
    top = len(table) - 1
    counts = ", ".join(f"{t['level']}: {t['n_clusters']}" for t in table)
    chosen = next((t["level"] for t in table if t["chosen"]), None)
    auto = next((t["level"] for t in table if t["auto"]), None)
    return (f"{LEVEL_TEXT}. This model ({served.version}): levels 0..{top}, coarse to fine (clusters per "
            f"level: {counts}); the level in use (the default) is {chosen}, the clusterer's automatic "
            f"level {auto}", {"anyOf": [{"type": "integer", "minimum": 0, "maximum": top}, {"type": "null"}]})


#: the request header that pins a request to one model (its id, or its version)
MODEL_HEADER = "X-Model-Id"
PIN_TEXT = ("answer only with this model: its id (RUN_ID/vNNNN, as an answer's model.id) or version; "
            "a worker serving another one answers 409 model_mismatch naming its own (with --workers N the "
            "workers switch one by one, for up to --poll seconds after a publish or rollback)")

#: the POST routes that only read (a read-only token may call them): predictions
READ_POSTS = ("/v1/assign", "/v1/similar")

#: what /v1/assign and /v1/similar answer besides 200 (the stack's own 400 / 413 / 401 / 503 too)
ASSIGN_ERRORS = {409: f"the request named a model ({MODEL_HEADER}) this worker does not serve now (the "
                      "error's `served` names the one it does)",
                 400: "an unusable request (the error names what), or one none of whose items can be read "
                      "(the error names the first, `items` each); a request with some readable items is "
                      "answered 200, each unreadable item with its `error`",
                 422: "a body of the wrong form: a key or form field other than `vectors` / `files` / "
                      "`item_ids`, `vectors` not a list, or `item_ids` not one id (text up to "
                      f"{MAX_ITEM_ID} characters, or null) per item (the error names it)",
                 413: "too large: the body, the batch, or every file or image of it",
                 415: "a content type other than multipart/form-data or application/json"}


def _ref(served: Served) -> dict:
    return {"version": served.version, "id": served.id, "run_id": (served.pipeline.model_info_.get("metadata") or {})
            .get("run_id") or served.pointer.get("run_id")}


def _depth(x) -> int:
    """How many lists are nested at the start of ``x`` (``[[1.0]]``: 2)."""
    depth = 0
    while isinstance(x, list):
        depth += 1
        x = x[0] if x else None
    return depth


class VectorsBody(StrictBody):
    """The JSON body of /v1/assign and /v1/similar, as far as pydantic checks it (the numbers are
    ``_parse_vectors``'s: numpy reads millions of them faster)."""

    vectors: list = Field(description="vectors from the model's encoder, each a list of numbers")
    item_ids: list | None = Field(None, description="your own id for each vector, in order (see `item_ids`)")


class IdsBody(StrictBody):
    """``/v1/similar``'s JSON body that names items of the model's collection."""

    ids: list[str] = Field(description="ids of the model's collection (as the neighbours' `id`): more like "
                           "each of these, the item itself left out")


#: /v1/similar's query parameters that shape the list (Pipeline.similar's)
SIMILAR_PARAMS = ("k", "same_cluster", "level", "offset", "per_cluster", "exclude")


def _query_hint(keys) -> str:
    """What to say when a request puts /v1/similar's parameters in its body."""
    asked = [k for k in keys if k in SIMILAR_PARAMS]
    return (f" ({', '.join(asked)}: query parameters of /v1/similar, e.g. /v1/similar?k=10&same_cluster=true)"
            if asked else "")


def _parse_vectors(body: bytes, served: Served, limit: int, seen: dict | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The body's vectors (float32, (n, d)) and the rows among them that hold NaN or infinity
    (answered per item). What is wrong with the body itself (not JSON, a wrong shape or size, not
    numbers, no rows, too many, ``item_ids`` not one id per row) is an ``ApiError``, and so are
    non-finite rows when every row is. ``seen["ids"]``: the rows' ``item_ids``, once read."""
    if not body:
        raise ApiError(400, "empty_batch", "the request body is empty; send {\"vectors\": [[...], ...]}")
    try:
        import orjson

        doc = orjson.loads(body)
    except ImportError:
        doc = None
    except ValueError:
        doc = None  # orjson refuses NaN / Infinity literals: the stdlib parser reads them
    if doc is None:
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, "invalid_json", f"the body is not valid JSON: {e}") from None
    # the body's keys and the type of 'vectors' as every JSON body is checked (web.StrictBody):
    # a 422 naming the field; its numbers are checked below, at numpy's speed
    note = " (send {\"vectors\": [[...], ...]})"
    parsed = check_body(VectorsBody, doc, _query_hint(doc) if isinstance(doc, dict) else note)
    rows = parsed.vectors
    if not rows:
        raise ApiError(400, "empty_batch", "'vectors' is empty: send at least one vector")
    if parsed.item_ids is not None and len(rows) <= limit and seen is not None:
        seen["ids"] = item_ids(parsed.item_ids, len(rows), "vectors")
    d = served.dim
    shape = (f"'vectors' must have shape (n, {d}): a list of vectors, each a list of {d} numbers "
             f"({{\"vectors\": [[x1, ..., x{d}], ...]}})")
    if not isinstance(rows[0], list) and all(isinstance(x, int | float) and not isinstance(x, bool)
                                             for x in rows):
        raise ApiError(400, "wrong_shape", f"'vectors' is one list of {len(rows)} numbers, not a list "
                       f"of vectors; {shape}")
    if len(rows) > limit:
        raise ApiError(413, "batch_too_large", f"{len(rows)} vectors in one request; the limit is {limit}")
    for i, r in enumerate(rows):
        if not isinstance(r, list):
            raise ApiError(400, "invalid_request", f"vectors[{i}] is not a list of numbers")
        if r and isinstance(r[0], list):
            raise ApiError(400, "wrong_shape", f"vectors[{i}] is a list of lists ({_depth(r) + 1} "
                           f"levels of nesting, not 2); {shape}")
        if len(r) != d:
            raise ApiError(400, "wrong_dimension", f"vectors[{i}] has {len(r)} values; this model "
                           f"reads {d}-d vectors from {served.encoder_name or 'its training data'}")
    try:
        # without a dtype first: numpy would read "0.5" (a string) and true (a bool) as numbers
        A = np.asarray(rows)
        if A.dtype.kind not in "fiu":
            raise TypeError(A.dtype)
        X = A.astype(np.float32)
    except (ValueError, TypeError):
        bad = next((i for i, r in enumerate(rows) if not all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in r)), None)
        raise ApiError(400, "invalid_request", f"vectors[{bad}] holds something that is not a number"
                       if bad is not None else "'vectors' must hold numbers only") from None
    bad = nonfinite_rows(X)
    if len(bad) == len(X):  # nothing to answer: the request is refused, naming the rows
        raise ApiError(400, "not_finite", nonfinite_message(bad, len(X), row="vectors[{}]"),
                       {"items": [{"index": int(i), "filename": None, "kind": "not_finite",
                                   "message": f"vectors[{int(i)}] contains NaN or infinity"} for i in bad]})
    return X, bad


def failed_item(index: int, kind: str, message: str, filename: str | None = None) -> dict:
    """The answer for an item that cannot be read (the API's ``FailedItem``)."""
    return {"index": index, "filename": filename, "error": {"kind": kind, "message": message}}


def _answer_vectors(body: bytes, served: Served, limit: int, similar: SimilarAsk | None = None,
                    seen: dict | None = None) -> tuple[np.ndarray, list[dict]]:
    """The answers to a JSON body's vectors, one per row in order (a row the model cannot place:
    NaN or infinity, no direction for a cosine model, values too large, its error; the others
    placed), and the rows that were placed. None placeable: an ``ApiError`` naming each."""
    X, bad = _parse_vectors(body, served, limit, seen)
    if not len(bad):
        try:  # the common case first: every row placeable, nothing checked twice
            return X, served.answer(X, similar=similar)
        except InputError:  # a row the model refuses: which ones, and the rest answered
            more = served.pipeline.unplaceable(X)
            if not more:
                raise
    else:  # the finite rows the model refuses, by their rows in X
        finite = np.flatnonzero(np.isin(np.arange(len(X)), bad, invert=True))
        more = {int(finite[i]): e for i, e in served.pipeline.unplaceable(X[finite]).items()}
    errors = {int(i): ("not_finite", "contains NaN or infinity") for i in bad}
    errors.update(more)
    failed = [{"index": i, "filename": None, "kind": k, "message": f"vectors[{i}] {why}"}
              for i, (k, why) in sorted(errors.items())]
    if len(errors) == len(X):  # nothing to answer: the request is refused, naming each row
        tail = f" (and {len(failed) - 1} more, see 'items')" if len(failed) > 1 else ""
        raise ApiError(400, failed[0]["kind"], failed[0]["message"] + tail, {"items": failed})
    rows = np.flatnonzero(np.isin(np.arange(len(X)), list(errors), invert=True))
    X = X[rows]
    items: list = [None] * (len(X) + len(failed))
    for f in failed:
        items[f["index"]] = failed_item(f["index"], f["kind"], f["message"])
    for row, answer in zip(rows.tolist(), served.answer(X, similar=similar)):
        answer["index"] = row
        items[row] = answer
    return X, items


async def _similar_ids(request: Request) -> list[str] | None:
    """The ``ids`` of a ``/v1/similar`` JSON body that names collection items (``{"ids": [...]}``,
    checked as ``IdsBody``: a 422 naming a wrong key or value); None for any other body (vectors,
    files: ``_answer``'s). The body is read once (starlette keeps it for ``_answer``)."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() not in ("application/json", ""):
        return None
    body = await request.body()
    if b'"ids"' not in body:  # vectors hold numbers only: not parsed twice
        return None
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None  # _answer says what is wrong with it
    if not isinstance(doc, dict) or "ids" not in doc:
        return None
    ids = check_body(IdsBody, doc, " (send {\"ids\": [\"ID\", ...]}; the other parameters go in the query, "
                     "e.g. /v1/similar?k=10&per_cluster=2)").ids
    if not ids:
        raise ApiError(400, "empty_batch", "'ids' is empty: send at least one id")
    return ids


def _answer_ids(ids: list[str], served: Served, ask: SimilarAsk, limit: int) -> tuple[list[dict], int]:
    """``/v1/similar`` of collection items by id (``model.similar_items``): an id the model
    cannot search is answered in its place as a failed item ``unknown_id``; none known: a 400
    naming each."""
    if len(ids) > limit:
        raise ApiError(413, "batch_too_large", f"{len(ids)} ids in one request; the limit is {limit}")
    answers = similar_items(served, ids, ask)
    failed = [{"index": i, "filename": None, "kind": "unknown_id",
               "message": f"ids[{i}] {ids[i][:200]!r} is not an item this model can search (its collection's "
                          "reference items, items.json; an item assigned after the model was published is "
                          "found only after the next publish)"}
              for i, a in enumerate(answers) if a is None]
    if len(failed) == len(ids):
        tail = f" (and {len(failed) - 1} more, see 'items')" if len(failed) > 1 else ""
        raise ApiError(400, "unknown_id", failed[0]["message"] + tail, {"items": failed})
    for f in failed:
        answers[f["index"]] = failed_item(f["index"], f["kind"], f["message"])
    return answers, len(failed)


def create_service(holder: ModelHolder, options: ServeOptions | None = None) -> FastAPI:
    """The FastAPI app answering with ``holder``'s current model."""
    opt = options or ServeOptions()
    metrics = HttpMetrics("mediacluster")
    from prometheus_client import Counter, Gauge, Histogram

    reg = metrics.registry
    items_total = Counter("mediacluster_assign_items", "Items assigned, by input kind (image, audio, vector)", ["input"],
                          registry=reg)
    similar_total = Counter("mediacluster_similar_items", "Items answered by /v1/similar, by input kind "
                            "(image, audio, vector, id)", ["input"], registry=reg)
    batch_size = Histogram("mediacluster_encode_batch_size", "Items per encoder call (micro-batches)",
                           buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=reg)
    encode_s = Histogram("mediacluster_encode_batch_seconds", "Time of one batch (decode, encoder call, model answer)",
                         buckets=(0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56), registry=reg)
    item_errors = Counter("mediacluster_item_errors", "Items of /v1/assign and /v1/similar that could "
                          "not be read (an unreadable upload, a vector with NaN), by kind: those answered "
                          "with an error beside their request's other items, and those of a request "
                          "refused because none could be read", ["kind"], registry=reg)
    reloads = Counter("mediacluster_model_reloads", "Model reload checks (the file watch's and POST "
                      "/v1/reload's), by result; each worker process checks and counts its own, so "
                      "with --workers N one new version counts N switches", ["result"], registry=reg)
    model_info = Gauge("mediacluster_model_info", "The model version served (value 1; 0: served before "
                       "by this worker); id is unique across runs (RUN_ID/vNNNN), version alone is not",
                       ["version", "run_id", "id"], registry=reg, multiprocess_mode="livemax")
    inbox = None
    if opt.keep_uploads:
        from .inbox import Inbox, KeepRule

        kept = Counter("mediacluster_inbox_kept", "Uploads (and vectors) kept in the inbox "
                       "(--keep-uploads), by input kind", ["input"], registry=reg)
        skipped = Counter("mediacluster_inbox_skipped", "Uploads the --keep rule picked but the inbox "
                          "did not keep, by reason (full: --keep-max-mb reached; error: a write failed; "
                          "backlog: the writer was behind)", ["reason"], registry=reg)
        full = Gauge("mediacluster_inbox_full", "1 once --keep-max-mb is reached (new uploads are no "
                     "longer kept)", registry=reg, multiprocess_mode="livemax")
        full.set(0)
        # the inbox's table is shared by the workers and written by `mediacluster inbox` and
        # `cluster` too: read at each scrape, the most recent reading of any worker reported
        held = Gauge("mediacluster_inbox_contents", "Contents (distinct uploads) in the inbox, by state: "
                     "pending (to review), reviewed (marked by a person), clustered (taken by a cluster "
                     "run); read at each scrape", ["state"], registry=reg, multiprocess_mode="livemostrecent")

        def on_inbox(kind: str, label: str) -> None:
            if kind == "kept":
                kept.labels(label).inc()
            elif kind == "skipped":
                skipped.labels(label).inc()
            elif kind == "full":
                full.set(1)

        inbox = Inbox(opt.keep_uploads, KeepRule(frozenset(opt.keep), float(opt.keep_below), opt.keep_novelty),
                      opt.keep_max_bytes, on_event=on_inbox)

    def on_batch(n: int, seconds: float) -> None:
        batch_size.observe(n)
        encode_s.observe(seconds)

    def show(served: Served, old: Served | None = None) -> None:
        if old is not None:  # kept at 0, not removed: several workers may switch at different times
            ref = _ref(old)
            model_info.labels(ref["version"], ref["run_id"] or "", ref["id"]).set(0)
        ref = _ref(served)
        model_info.labels(ref["version"], ref["run_id"] or "", ref["id"]).set(1)

    # the request body's description, kept to the served model's vector size
    body = assign_body(holder.current.dim, opt.max_files, opt.max_vectors)

    def on_switch(old: Served, new: Served) -> None:
        show(new, old)
        if old is None or new.dim != old.dim:
            body.update(assign_body(new.dim, opt.max_files, opt.max_vectors))  # one key: replaced at once
        app.openapi_schema = None  # described anew on the next /openapi.json: the size, the levels

    holder.set_batch_hook(on_batch)
    holder.on_switch = on_switch
    holder.on_reload = lambda result: reloads.labels(result).inc()
    show(holder.current)

    @contextlib.asynccontextmanager
    async def lifespan(app):  # the file watch runs while the server does
        holder.start()
        try:
            yield
        finally:
            holder.stop()
            if inbox is not None:  # what was answered is written before the process ends
                inbox.close()
            metrics.close()  # this worker's per-process samples go with it

    app = create_app("mediacluster service", __version__, token=opt.token, cors_origins=tuple(opt.cors_origins),
                     # a read-only token predicts and reads; POST /v1/reload needs the token itself
                     read_token=opt.read_token, read_posts=READ_POSTS,
                     max_body_bytes=opt.max_body_bytes, time_limit_s=opt.time_limit_s,
                     on_error=metrics.error, lifespan=lifespan,
                     # probes and the API description need no token; data and metrics do
                     public_paths=("/healthz", "/readyz", "/docs", "/docs/oauth2-redirect",
                                   "/openapi.json", DOCS_STATIC),
                     description="Which cluster does this image or clip belong to: assigns new images, "
                                 "audio clips or vectors to the clusters of a saved mediacluster model.")
    app.state.holder = holder
    app.state.inbox = inbox
    add_inbox_routes(app, opt.keep_uploads, inbox)  # GET /v1/inbox, its files, POST /v1/inbox/mark

    def _files_of(served: Served) -> str:
        """The uploads the served model reads, for messages: "images" or "audio clips"."""
        return "audio clips" if served.media == "audio" else "images"

    async def _images(request: Request, served: Served, similar: SimilarAsk | None, seen: dict
                      ) -> tuple[list[dict], list[bytes | None]]:
        """The answers to a request's uploaded files, one per file in order (a file that cannot
        be read: its error, ``failed_item``), and the files' bytes (None for a file not read).
        None readable: an ``ApiError`` naming each. ``seen["ids"]``: the files' ``item_ids``."""
        batcher = served.slot.batcher if served.slot is not None else None
        if batcher is not None:  # its items come soon: a batch forming now may wait for them
            batcher.announce(1)
        announced = 1 if batcher is not None else 0
        try:
            try:
                form = await request.form(max_files=opt.max_files + 1, max_fields=2 * opt.max_files + 8)
            except Exception as e:  # starlette answers a malformed or over-long form with HTTPException
                msg = getattr(e, "detail", None) or str(e)
                if "Too many files" in msg:
                    raise ApiError(413, "batch_too_large", f"more than {opt.max_files} files in one "
                                   "request; send fewer per request") from None
                raise ApiError(400, "invalid_request", f"cannot read the multipart form: {msg}") from None
            try:
                others = sorted({k for k in form.keys() if k not in ("files", "item_ids")})
                uploads = form.getlist("files")
                if others:  # an unknown field, as in a JSON body (web.StrictBody): 422
                    raise ApiError(422, "invalid_request", f"unexpected form fields {others}; send the "
                                   f"{_files_of(served)} as 'files' (repeat the field for several), your "
                                   "own ids for them as 'item_ids' (optional, one per file)"
                                   + _query_hint(others))
                files = [u for u in uploads if hasattr(u, "read")]
                if len(files) != len(uploads):
                    raise ApiError(400, "invalid_request", "'files' must be file uploads, not text fields")
                if not files:
                    raise ApiError(400, "empty_batch", f"no files in the request; send {_files_of(served)} as 'files'")
                if len(files) > opt.max_files:
                    raise ApiError(413, "batch_too_large", f"{len(files)} files in one request; the "
                                   f"limit is {opt.max_files}")
                ids = form.getlist("item_ids")
                if ids:
                    if any(hasattr(v, "read") for v in ids):
                        raise ApiError(422, "invalid_request", "'item_ids' must be text fields, not file uploads")
                    seen["ids"] = item_ids(ids, len(files), "files")
                if batcher is None:
                    raise ApiError(400, "no_encoder", f"model {served.version} was fitted on precomputed "
                                   "vectors, so it cannot read images; send {\"vectors\": [...]} as JSON")
                names = [(u.filename or "")[:MAX_FILENAME] or None for u in files]
                # a file over the size limit is not read: its item fails, the others are answered
                big = {i: f"has {u.size} bytes; the limit is {opt.max_file_bytes} per file"
                       for i, u in enumerate(files) if u.size is not None and u.size > opt.max_file_bytes}
                datas = [None if i in big else await u.read() for i, u in enumerate(files)]
            finally:
                await form.close()
            ask = () if similar is None else (similar,)
            todo = [i for i in range(len(files)) if i not in big]
            futures = batcher.submit([(served, datas[i], names[i], *ask) for i in todo],
                                     announced=announced) if todo else []
            announced = 0 if todo else announced
        finally:
            if announced:
                batcher.withdraw(announced)
        results: list = [SkipItem(big[i], "file_too_large") if i in big else None for i in range(len(files))]
        for i, r in zip(todo, await asyncio.gather(*(asyncio.wrap_future(f) for f in futures),
                                                   return_exceptions=True)):
            results[i] = r
        bad = []
        for i, r in enumerate(results):
            if isinstance(r, SkipItem):
                where = f"files[{i}]" + (f" ({names[i]!r})" if names[i] else "")
                bad.append((i, r.kind or "unusable", where, r.reason))
                results[i] = failed_item(i, r.kind or "unusable", f"{where}: {r.reason}", names[i])
            elif isinstance(r, BaseException):
                raise r
            else:
                r["index"] = i
        if len(bad) == len(results):  # none readable: the request is refused, naming each
            i, kind, where, reason = bad[0]
            status = 413 if all(b[1] in TOO_LARGE for b in bad) else 400
            more = f" (and {len(bad) - 1} more, see 'items')" if len(bad) > 1 else ""
            raise ApiError(status, kind, f"{where}: {reason}{more}",
                           {"items": [{"index": i, "filename": names[i], "kind": k, "message": m}
                                      for i, k, _, m in bad]})
        return results, datas

    def item_errors_of(items: list[dict]) -> int:
        """Count the items of an answer that could not be read (``mediacluster_item_errors``, by
        kind); returns how many."""
        n = 0
        for it in items:
            if "error" in it:
                item_errors.labels(it["error"]["kind"]).inc()
                n += 1
        return n

    def pinned(served: Served, want: str | None) -> Served:
        """``served``, when the request names no model (``X-Model-Id``) or names this one (its id
        or its version); else a 409 naming both: with --workers N the workers switch one by one,
        so a client that must not mix versions retries (another worker, or this one after its
        next poll, may serve it) or starts over with the served one."""
        if want is None or want.strip() in (served.id, served.version):
            return served
        raise ApiError(409, "model_mismatch", f"asked for model {want.strip()[:200]!r} ({MODEL_HEADER}); "
                       f"this worker answers with {served.id}. With several workers (or just after a "
                       "publish or rollback) the versions interleave for up to --poll seconds: retry, or "
                       "drop the header to take the served one", {"served": _ref(served)})

    @app.post("/v1/assign", response_model=AssignResponse, openapi_extra=body,
              summary="Assign images or audio clips (an audio model), or vectors, to the model's clusters",
              responses=error_docs(ASSIGN_ERRORS))
    async def assign(request: Request, model_id: str | None = Header(None, alias=MODEL_HEADER,
                                                                      description=PIN_TEXT)):
        served = pinned(holder.current, model_id)  # this request answers with this version, whatever happens
        items, failed = await _answer(request, served, None)
        return {"model": _ref(served), "failed": failed, "items": items}

    async def _answer(request: Request, served: Served, similar: SimilarAsk | None) -> tuple[list[dict], int]:
        """The items of an assign or similar request (files or vectors), answered by ``served``
        (an item that could not be read: its error), and how many could not be read."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        datas = X = None
        seen: dict = {}  # the parsers put the items' item_ids here once read
        try:
            if ctype == "multipart/form-data":
                items, datas = await _images(request, served, similar, seen)
                kind = served.media  # files are answered only by a model with an encoder
            elif ctype in ("application/json", ""):
                body = await request.body()
                if not body and not ctype:  # nothing at all: say both forms, not only the JSON one
                    raise ApiError(400, "empty_batch", f"the request is empty: send {_files_of(served)} as "
                                   "multipart/form-data (field 'files') or vectors as application/json "
                                   "{\"vectors\": [[...], ...]}")
                # parsed and answered off the event loop: megabytes of JSON would hold up every
                # other request
                X, items = await asyncio.to_thread(_answer_vectors, body, served, opt.max_vectors, similar, seen)
                kind = "vector"
            else:
                raise ApiError(415, "unsupported_media_type", f"content type {ctype!r}: send {_files_of(served)} "
                               "as multipart/form-data (field 'files') or vectors as application/json")
        except ApiError as e:  # a request none of whose items could be read: each item counted
            for it in e.details.get("items", ()):
                item_errors.labels(it["kind"]).inc()
                if seen.get("ids"):
                    it["item_id"] = seen["ids"][it["index"]]
            raise
        if seen.get("ids"):  # echoed per item (and so kept with it in the inbox)
            for it in items:
                it["item_id"] = seen["ids"][it["index"]]
        failed = item_errors_of(items) if len(items) else 0
        placed = [it for it in items if "error" not in it] if failed else items
        if inbox is not None:  # the rule only; hashing and writing are the writer thread's
            # an item that could not be read is not kept: it has no answer to review and
            # nothing a clustering could read (the client was told why)
            if failed and datas is not None:
                datas = [datas[it["index"]] for it in placed]
            inbox.offer(served.version, "similar" if similar is not None else "assign", kind, placed,
                        datas=datas, vectors=X)  # X: the placed rows only (_answer_vectors)
        (items_total if similar is None else similar_total).labels(kind).inc(len(placed))
        return items, failed

    @app.post("/v1/similar", response_model=SimilarResponse,
              openapi_extra=similar_body(holder.current.dim, opt.max_files, opt.max_vectors),
              summary="More like this: each image, clip or vector's cluster (as /v1/assign answers) and "
                      "the k most similar items of the model's collection",
              responses=error_docs({**ASSIGN_ERRORS, 400: "unusable input, or a level the model lacks "
                                    "(the error names the model's levels)",
                                    422: "a parameter out of range or a body of the wrong form (the "
                                         "error names it)"}))
    async def similar(request: Request,
                      k: int = Query(10, ge=1, le=MAX_SIMILAR, description=f"neighbours per item (1..{MAX_SIMILAR})"),
                      same_cluster: bool = Query(False, description="only items of the new item's own "
                                                 "cluster at `level`"),
                      # no bounds here: the served model's levels are described by level_param
                      # and checked by Pipeline.level_index, whose 400 names the allowed range
                      level: int | None = Query(None, description=LEVEL_TEXT),
                      offset: int = Query(0, ge=0, le=MAX_OFFSET, description="skip this many neighbours "
                                          f"per item (the next page: offset=k; 0..{MAX_OFFSET})"),
                      per_cluster: int | None = Query(None, ge=1, description="at most this many "
                                                      "neighbours of one cluster at `level` (noise counts as "
                                                      "one): a diverse list"),
                      exclude: list[str] | None = Query(None, description="an id of the model's collection "
                                                        "never to answer (repeat it; ids the model does not "
                                                        "hold are ignored)"),
                      model_id: str | None = Header(None, alias=MODEL_HEADER, description=PIN_TEXT)):
        served = pinned(holder.current, model_id)  # this request answers with this version, whatever happens
        # checked before any upload is read or encoded: a level the model lacks names `level`
        served.pipeline.level_index(level)
        ask = SimilarAsk(k=int(k), same_cluster=bool(same_cluster), level=level, offset=int(offset),
                         per_cluster=per_cluster, exclude=tuple(exclude or ()))
        ids = await _similar_ids(request)
        if ids is not None:  # items of the collection by id: no upload, nothing to keep
            try:
                items, failed = await asyncio.to_thread(_answer_ids, ids, served, ask, opt.max_vectors)
            except ApiError as e:  # no id known: each counted, as unreadable uploads are
                for it in e.details.get("items", ()):
                    item_errors.labels(it["kind"]).inc()
                raise
            similar_total.labels("id").inc(len(items) - failed)
            item_errors_of(items)
        else:
            items, failed = await _answer(request, served, ask)
        return {"model": _ref(served), "k": ask.k, "same_cluster": ask.same_cluster, "offset": ask.offset,
                "per_cluster": ask.per_cluster, "failed": failed, "items": items}

    @app.get("/v1/clusters", response_model=ClustersResponse, summary="The model's clusters")
    async def clusters():
        served = holder.current
        return {"model": _ref(served), "clusters": served.clusters, "levels": served.levels}

    @app.get("/v1/model", summary="The model version served")
    async def model():
        served = holder.current
        return {**served.describe(), "watching": None if holder.pinned else str(holder.store.root),
                "switches": holder.switches, "reload_error": holder.last_error}

    @app.post("/v1/reload", summary="Switch to the newest model version now, if there is one")
    async def reload():
        if holder.pinned:
            reloads.labels("pinned").inc()
            return {"switched": False, "version": holder.current.version,
                    "previous": holder.current.version, "pinned": True}
        return await asyncio.to_thread(holder.reload)  # counted in reloads by holder.on_reload

    @app.get("/healthz", summary="The process is up", response_model=Health)
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", summary="A model is loaded and the encoder runs", response_model=Ready,
             responses=error_docs({503: "the encoder workers are not running"}))
    async def readyz():
        if not holder.ready:
            raise ApiError(503, "not_ready", "the encoder workers are not running")
        cur = holder.current
        return {"status": "ready", "version": cur.version, "id": cur.id}

    @app.get("/metrics", summary="Prometheus metrics (text format, or OpenMetrics when the Accept header "
             "asks for it)", response_class=PlainTextResponse)
    async def prom(request: Request,
                   names: list[str] | None = Query(None, alias="name[]", description="only these metrics' "
                                                   "samples (repeat it; Prometheus' own name[] filter)")):
        if inbox is not None:  # a short read of the shared table, off the event loop
            for state, n in ((await asyncio.to_thread(inbox.counts)) or {}).items():
                held.labels(state).set(n)
        return metrics.response(request)

    @app.get("/", include_in_schema=False)
    async def index():
        return {"service": "mediacluster", "version": __version__, "model": holder.current.version,
                "docs": "/docs", "endpoints": ["/v1/assign", "/v1/similar", "/v1/clusters", "/v1/model",
                                               "/v1/reload", "/v1/inbox", "/v1/inbox/mark", "/healthz",
                                               "/readyz", "/metrics"]}

    framework_openapi = app.openapi

    def openapi() -> dict:
        """FastAPI's description, with /v1/similar's `level` described for the served model
        (its levels differ by model and change with a new version)."""
        if app.openapi_schema is None:
            doc = framework_openapi()
            text, schema = level_param(holder.current)
            for p in doc["paths"]["/v1/similar"]["post"].get("parameters", []):
                if p.get("name") == "level" and p.get("in") == "query":
                    p["description"], p["schema"] = text, schema
        return app.openapi_schema

    app.openapi = openapi
    metrics.install(app)
    return app


CONFIG_ENV = "MEDIACLUSTER_SERVE_CONFIG"


def build_service(config: dict) -> FastAPI:
    """Load the model (and tag model) named in ``config`` and build the app: what each worker
    process does. Keys: ``source``, ``tags``, ``poll_s``, ``max_batch``, ``window_ms``,
    ``encode_workers``, and the ``ServeOptions`` fields."""
    from threadpoolctl import threadpool_limits

    # One BLAS / OpenMP thread per call for the whole server process: its parallelism is the
    # concurrent requests. predict_details on 256 vectors cost 30.9 ms CPU with the default 2
    # threads (spinning on a busy machine), 13.2 ms with 1 (RESULTS.md, Service). The encoder's
    # ONNX Runtime threads are its own and not affected.
    threadpool_limits(limits=1)
    tagger = None
    if config.get("tags"):
        from ..tags import Tagger

        tagger = Tagger.load(config["tags"])
    holder = ModelHolder(config["source"], tagger=tagger, poll_s=config.get("poll_s", 1.0),
                         max_batch=config.get("max_batch", 32),
                         window_s=config.get("window_ms", 2.0) / 1000.0,
                         encode_workers=config.get("encode_workers"),
                         collection_root=config.get("collection_root"))
    fields = ServeOptions.__dataclass_fields__
    return create_service(holder, ServeOptions(**{k: v for k, v in config.items() if k in fields}))


def app_from_env() -> FastAPI:
    """The app factory of a worker process (``--workers`` > 1): its config is in the
    environment variable ``MEDIACLUSTER_SERVE_CONFIG`` (JSON) set by the parent."""
    return build_service(json.loads(os.environ[CONFIG_ENV]))
