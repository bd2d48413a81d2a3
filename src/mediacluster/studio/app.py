"""The studio's HTTP API and front end, on the shared web stack (:mod:`mediacluster.web`).

Every route is a thin call into :class:`~mediacluster.studio.session.Studio`. What is served:
the front end's three files (a fixed list, never a path from the request), JSON, the map and
labels as little-endian binary arrays, and renderings of the collection's files made by the
package's loaders (JPEG thumbnails of images, spectrograms and re-encoded excerpts of sounds),
addressed by item number only, so no request can name a file
(no path traversal by construction; tested anyway).

Safety beyond the shared stack (JSON errors, body limit, token): requests that change
something need the ``X-Mediacluster`` header (a browser cannot send it from another site
without a CORS preflight, which this server never grants), a loopback server answers only to
loopback host names (against DNS rebinding), and pages carry a strict Content-Security-Policy
(scripts and styles from this server only) on top of the front end writing every string as text.
"""

from __future__ import annotations

import re
from contextlib import asynccontextmanager
from importlib import resources
from os import PathLike
from typing import Annotated, Literal, Union
from urllib.parse import unquote

from fastapi import File, Form, Path, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Discriminator, Field, Tag

from .._version import __version__
from ..web import ApiError, StrictBody, create_app, whole
from ..web.app import FREE_QUERY, error_docs, is_loopback, token_cookie
from .dupgroups import MAX_GROUPS, MAX_MEMBERS, MEMBERS_LIMIT
from .dupgroups import ORDERS as GROUP_ORDERS
from .editlog import user_name
from .exports import KINDS as EXPORT_KINDS
from .exports import SPLITS as EXPORT_SPLITS
from .media import THUMB_SIZES
from .search import MAX_QUERY
from .session import ORDERS
from .state import EDITS, MAX_NAME, MAX_TAG, EditConflict

STATIC = {"studio.js": "text/javascript; charset=utf-8", "studio.css": "text/css; charset=utf-8"}
MAX_UPLOAD = 20 << 20
DOWNLOADS = ("curated_assignments.csv", "curated_assignments.parquet")
CSP = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self'; script-src 'self'; "
       "style-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1", "[::1]"}
_CLIENT = re.compile(r"[A-Za-z0-9_-]{1,64}")


# -- the JSON bodies (web.StrictBody: an unknown key or a value of another type is a 422 naming
# the field before a handler runs; "3" is not a cluster id, 3.0 is: web.whole). FastAPI validates them and
# describes them in /openapi.json (/docs), so a client, or a fuzzer built from the
# description, sends what the handlers read. What depends on the state (a cluster that exists,
# an item number below n, k below a cluster's size) is CuratedState's / the Splitter's.
ClusterId = whole(description="a cluster id (GET /api/clusters)")
ItemNo = whole(ge=0, description="an item number (0 .. n-1, GET /api/info)")
Items = Annotated[list[ItemNo], Field(min_length=1, description="item numbers (0 .. n-1, GET /api/info)")]
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
TagText = Annotated[str, Field(min_length=1, max_length=MAX_TAG)]
Tags = Annotated[list[TagText] | None, Field(description="at most 50 tags per edit, added and removed together")]
PartNames = Annotated[list[Annotated[str, Field(max_length=MAX_NAME)] | None] | None,
                      Field(description="a name per part (null: the preview's)")]


class Rename(StrictBody):
    """name a cluster"""
    kind: Literal["rename"]
    cluster: ClusterId
    name: Name


class Merge(StrictBody):
    """merge clusters into one"""
    kind: Literal["merge"]
    clusters: Annotated[list[ClusterId], Field(min_length=2)]
    into: ClusterId | None = Field(None, description="the cluster that keeps its id and name (default the largest)")


class Move(StrictBody):
    """move items to a cluster, to unassigned (-1), to a new cluster or to junk"""
    kind: Literal["move"]
    items: Items
    to: ClusterId | Literal["new", "junk"] = Field(description="a cluster id, -1 (unassigned), "
                                                   "\"new\" or \"junk\"")
    name: Name | None = Field(None, description="the new cluster's name (to: new)")


class SplitPreviewed(StrictBody):
    """split a cluster as a preview showed it"""
    kind: Literal["split"]
    preview: str = Field(description="a split preview's id (POST /api/split/preview)")
    names: PartNames = None


class SplitGiven(StrictBody):
    """split a cluster into given parts"""
    kind: Literal["split"]
    cluster: ClusterId
    items: Items
    parts: Annotated[list[whole(ge=0)], Field(
        min_length=1, description="the part of each of the cluster's members (all of them, in order)")]
    names: PartNames = None


class TagEdit(StrictBody):
    """add or remove tags of clusters and items"""
    kind: Literal["tag"]
    clusters: list[ClusterId] | None = None
    items: list[ItemNo] | None = None
    add: Tags = None
    remove: Tags = None


class Junk(StrictBody):
    """mark clusters as junk (or not)"""
    kind: Literal["junk"]
    clusters: Annotated[list[ClusterId], Field(min_length=1)]
    value: bool = Field(True, description="junk or not (default true)")


class Keep(StrictBody):
    """keep this copy of a duplicate group (a --dedup run's) in a clean dataset, over the export's rule"""
    kind: Literal["keep"]
    group: whole(ge=0) = Field(description="the duplicate group (GET /api/duplicates)")
    item: ItemNo | None = Field(description="the member to keep; null: the export's rule decides again")


class LevelRename(StrictBody):
    """name a group of a coarser level of the run's hierarchy"""
    kind: Literal["level_rename"]
    level: str | whole(ge=0) = Field(description="the level: its name in the level switch (GET /api/info "
                                     "levels, e.g. level_0) or its key in level_names.json")
    cluster: ClusterId = Field(description="the group's cluster id in that level of the run "
                               "(GET /api/clusters group_clusters)")
    name: Name


#: each edit body's tag: its kind (a split: by a preview or by given parts), which names the
#: edit in a 422's message ("rename.cluster: Input should be a valid integer")
_EDITS = {"rename": Rename, "merge": Merge, "move": Move, "split by preview": SplitPreviewed,
          "split by parts": SplitGiven, "tag": TagEdit, "junk": Junk, "keep": Keep,
          "level_rename": LevelRename}
assert {m.model_fields["kind"].annotation.__args__[0] for m in _EDITS.values()} == set(EDITS)


def _edit_kind(body) -> str | None:
    """Which edit a body is (its tag in ``_EDITS``): its ``kind``; a split by a preview or by
    given parts."""
    if isinstance(body, BaseModel):
        return next(t for t, m in _EDITS.items() if isinstance(body, m))
    kind = body.get("kind") if isinstance(body, dict) else None
    if kind == "split":
        return "split by preview" if "preview" in body else "split by parts"
    return kind if isinstance(kind, str) else None


Edit = Annotated[Union[tuple(Annotated[m, Tag(t)] for t, m in _EDITS.items())],  # noqa: UP007
                 Discriminator(_edit_kind, custom_error_type="invalid_edit",
                               custom_error_message=f"an edit needs a 'kind': one of {', '.join(EDITS)}")]


class Target(StrictBody):
    """undo / redo"""
    target: whole(ge=1) | None = Field(None, description="the edit to take back (undo) or re-apply (redo), "
                                     "as /api/version's undo / redo showed it: a 409 when another studio "
                                     "or tab made another edit the latest since (default: the latest)")


class SplitPreview(StrictBody):
    cluster: ClusterId
    k: whole(ge=2, le=100) | Literal["auto"] | None = Field(
        None, description="parts (default, \"auto\" or null: chosen by the studio)")
    reducer: Literal["auto", "tree", "model", "pca", "umap"] | None = Field(
        None, description="where to re-cluster (default, or null: auto)")


class Export(StrictBody):
    kind: Literal[EXPORT_KINDS]  # type: ignore[valid-type]
    mode: Literal["symlink", "copy"] | None = Field(
        None, description="folders: link or copy the files (default, or null: symlink)")
    prefer: list[str] | None = Field(
        None, description="classes: folder prefixes under the collection (such as [\"train/\"]), first "
        "preferred: a duplicate group keeps its copy under the earliest (default: the largest file)")
    split: Literal[EXPORT_SPLITS] | None = Field(  # type: ignore[valid-type]
        None, description="classes: \"top\" keeps each file's top-level folder under the collection (its "
        "split: train/, test/) above its class folder, train/<name>/file; of a duplicate group across "
        "splits one copy is kept, the others are listed in dropped.csv as \"leak\" (default, or null: one tree)")


def _binary(media: str, text: str) -> dict:
    """``responses`` for a route answering ``media`` bytes, not JSON."""
    return {200: {"description": text, "content": {media: {"schema": {"type": "string", "format": "binary"}}}}}


def _hostname(host: str) -> str:
    """The name part of a Host header ("127.0.0.1:8765" -> "127.0.0.1", "[::1]:80" -> "[::1]")."""
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _asset(name: str) -> bytes:
    return resources.files("mediacluster.studio").joinpath("static", name).read_bytes()


def create_studio_app(studio, token: str | None = None, host: str = "127.0.0.1",
                      max_body_bytes: int = 32 << 20, user: str | None = None, read_token: str | None = None):
    """The FastAPI app serving ``studio`` (a :class:`~mediacluster.studio.session.Studio`).
    ``user``: the name an edit is recorded with when its page gives none (``studio --user``, a
    single-user start); a page's "your name" (the ``X-Mediacluster-User`` header) wins.
    ``read_token``: a token that may only look (GET); edits and publishing need ``token``."""
    default_user = user_name(user or "")

    @asynccontextmanager
    async def lifespan(app):
        yield
        await run_in_threadpool(studio.close)  # write what is not written yet

    # read_token: GET only (pages, clusters, items, downloads); every edit and publish needs token
    app = create_app("mediacluster studio", __version__, token=token, max_body_bytes=max_body_bytes,
                     read_token=read_token,
                     free_query=FREE_QUERY + ("/static/{name}",),  # the page's files: ?v=2 is no typo
                     lifespan=lifespan,  # /docs: the API, from files shipped in the package
                     responses=error_docs({
                         403: "a change without the X-Mediacluster header, or a host name other "
                              "than loopback on a loopback studio" + (", or a change with the read-only "
                                                                      "token (--read-token)" if read_token else ""),
                         404: "no such cluster, item, file or download",
                         409: "the edit no longer fits (another tab or studio changed it first: a "
                              "cluster it names was merged away, a split's cluster changed, undo / "
                              "redo's target is no longer the latest; the message says which edit did "
                              "it, by whom (the name the person gave, else which page) and when, the error's "
                              "`edit` its seq, kind, client id, user name and ts), or nothing to undo / redo",
                         422: "a body with a key it does not have, or a value of the wrong type "
                              "or out of range (the error names the field)"}))
    app.state.studio = studio
    loopback = is_loopback(host)

    @app.middleware("http")
    async def _studio_guards(request: Request, call_next):
        if loopback:
            if _hostname(request.headers.get("host") or "") not in LOOPBACK_NAMES:
                return JSONResponse({"error": {"kind": "forbidden", "message": "this studio answers "
                                     "to localhost / 127.0.0.1 only"}}, status_code=403)
        if request.method not in ("GET", "HEAD", "OPTIONS") and not request.headers.get("x-mediacluster"):
            return JSONResponse({"error": {"kind": "forbidden", "message": "changes need an "
                                 "X-Mediacluster header, any value (curl -H 'X-Mediacluster: 1'); the "
                                 "studio's page sends it, a page of another site cannot"}}, status_code=403)
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    def call(fn, *a, **kw):
        try:
            return fn(*a, **kw)
        except EditConflict as e:  # the message for a person, the edit that changed the state for the page
            raise ApiError(409, "conflict", str(e), e.details()) from None
        except KeyError as e:
            raise ApiError(404, "not_found", f"no such cluster or item: {e.args[0] if e.args else ''}") from None
        except FileNotFoundError as e:
            raise ApiError(404, "no_image", str(e)) from None

    def client_of(request: Request) -> str:
        c = request.headers.get("x-mediacluster-client", "")
        return c if _CLIENT.fullmatch(c) else ""

    def user_of(request: Request) -> str:
        """The person's name the page sent (percent-encoded UTF-8: a header holds Latin-1 only),
        else the studio's ``--user``."""
        return user_name(unquote(request.headers.get("x-mediacluster-user", ""), errors="replace")) or default_user

    def binary(data: bytes, headers: dict | None = None) -> Response:
        return Response(data, media_type="application/octet-stream",
                        headers={"Cache-Control": "no-store", **{k: str(v) for k, v in (headers or {}).items()}})

    # -- the page ------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse)
    def index(request: Request):
        r = HTMLResponse(_asset("index.html"), headers={"Content-Security-Policy": CSP,
                                                         "Cache-Control": "no-store"})
        given = request.query_params.get("token")
        if token and given:  # the middleware checked it: keep it for the page's own requests
            r.set_cookie(token_cookie(request.headers.get("host") or ""), given, httponly=True, samesite="strict")
        return r

    @app.get("/static/{name}", response_class=Response,
             responses={200: {"description": "the page's script or style sheet",
                              "content": {"text/javascript": {}, "text/css": {}}}})
    def static(name: str = Path(json_schema_extra={"enum": list(STATIC)})):
        if name not in STATIC:
            raise ApiError(404, "not_found", "no such file")
        return Response(_asset(name), media_type=STATIC[name], headers={"Cache-Control": "no-cache"})

    @app.get("/healthz")
    def healthz():
        return {"ok": True}

    # -- reading -------------------------------------------------------------------------------
    @app.get("/api/info")
    def info():
        return {**studio.info(), "user": default_user}  # user: studio --user, the page's name when it gives none

    @app.get("/api/version")
    def version():
        return studio.version()

    @app.get("/api/map", response_class=Response,
             responses=_binary("application/octet-stream", "x then y of every item, float32 little-endian"))
    def map_xy():
        return binary(studio.map_bytes(), {"X-Items": studio.n})

    @app.get("/api/labels", response_class=Response,
             responses=_binary("application/octet-stream", "every item's curated cluster, int32 little-endian"))
    def labels():
        seq, data = studio.labels_bytes()
        return binary(data, {"X-Seq": seq})

    @app.get("/api/levels/{name}", response_class=Response,
             responses=_binary("application/octet-stream", "every item's group at that level, int32 little-endian"))
    def level(name: str):
        return binary(studio.level_bytes(name))

    @app.get("/api/clusters")
    def clusters():
        return studio.clusters()

    @app.get("/api/clusters/{cid}")
    def cluster(cid: int):
        return call(studio.cluster, cid)

    @app.get("/api/clusters/{cid}/items")
    def cluster_items(cid: int, offset: int = 0, limit: int = 60,
                      order: str = Query("typical", json_schema_extra={"enum": list(ORDERS)})):
        return call(studio.members, cid, offset, limit, order)

    @app.get("/api/clusters/{cid}/all")
    def cluster_all(cid: int):
        return {"cluster": cid, "items": call(studio.all_members, cid)}

    @app.get("/api/briefs")
    def briefs(ids: str = ""):
        try:
            nums = [int(x) for x in ids.split(",") if x.strip()]
        except ValueError:
            raise ApiError(400, "invalid_request", "ids must be item numbers separated by commas") from None
        return {"items": call(studio.briefs, nums)}

    @app.get("/api/items/{i}")
    def item(i: int):
        return call(studio.item, i)

    def media(pair) -> Response:
        data, kind = pair
        return Response(data, media_type=kind, headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/items/{i}/thumb", response_class=Response,
             responses={200: {"description": "a JPEG thumbnail (an image) or a PNG spectrogram (a sound)",
                              "content": {"image/jpeg": {}, "image/png": {}}}})
    def thumb(i: int, size: int = Query(160, json_schema_extra={"enum": list(THUMB_SIZES)})):
        return media(call(studio.thumbnail, i, size))

    @app.get("/api/items/{i}/preview", response_class=Response,
             responses={200: {"description": "a larger JPEG (an image) or PNG spectrogram (a sound)",
                              "content": {"image/jpeg": {}, "image/png": {}}}})
    def preview(i: int):
        return media(call(studio.preview, i))

    @app.get("/api/items/{i}/audio", response_class=Response,
             responses={200: {"description": "a short excerpt of a sound", "content": {"audio/*": {}}}})
    def audio(i: int):
        # a file response: byte ranges (Range, If-Range, 206), which a player needs to seek
        path, kind = call(studio.audio_file, i)
        if not isinstance(path, PathLike):  # the cache could not keep it: its bytes, whole
            return media((path, kind))
        return FileResponse(path, media_type=kind, headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/duplicates")
    def duplicates(
            offset: int = Query(0, ge=0, description="groups to skip"),
            limit: int = Query(20, ge=1, le=MAX_GROUPS, description="groups on this page"),
            order: Literal[GROUP_ORDERS] = Query(  # type: ignore[valid-type]
                "size", description="size: largest first; folders: groups across top-level folders "
                "(train/ + test/: a leak) first; clusters: groups in more than one curated cluster first"),
            prefer: list[str] | None = Query(None, description="the classes export's preferred folders "
                                             "(repeat: first preferred), for the copy shown as kept"),
            members_limit: int = Query(MEMBERS_LIMIT, ge=1, le=MAX_MEMBERS, description=(
                "members listed with each group, the kept copy first (members_total: all of them; "
                "the rest: GET /api/duplicates/{group})"))):
        """A page of the run's duplicate groups (``cluster --dedup``): members with their curated
        cluster and top-level folder, the copy a ``classes`` export keeps and why
        (``has_duplicates`` false, with a message, for a run without duplicate data)."""
        return call(studio.duplicate_groups, offset, limit, order, prefer, members_limit)

    @app.get("/api/duplicates/{group}")
    def duplicate_group(
            group: int,
            members_offset: int = Query(0, ge=0, description="members to skip (the kept copy is the first)"),
            members_limit: int = Query(MEMBERS_LIMIT, ge=1, le=MAX_MEMBERS, description="members listed"),
            prefer: list[str] | None = Query(None, description="as GET /api/duplicates' prefer")):
        """One duplicate group with a page of its members: a group of hundreds of copies (a meme
        posted 500 times) is read a page at a time."""
        out = call(studio.duplicate_group, group, members_offset, members_limit, prefer)
        if out is None:
            raise ApiError(404, "not_found", f"no duplicate group {group}")
        return out

    @app.get("/api/edits")
    def edits(since: int = 0, limit: int = 200):
        return studio.events(since, limit)

    # -- search --------------------------------------------------------------------------------
    @app.get("/api/search/words")
    def search_words(q: str = Query(json_schema_extra={"minLength": 1, "maxLength": MAX_QUERY}),
                     cluster: int | None = None, limit: int = 200):
        return call(studio.search_words, q, cluster, limit)

    @app.get("/api/search/similar")
    def search_similar(item: int, cluster: int | None = None, limit: int = 100):
        return call(studio.search_item, item, cluster, limit)

    @app.post("/api/search/image", openapi_extra={"requestBody": {"content": {"multipart/form-data": {
        "schema": {"additionalProperties": False}}}}})  # the fields below only (a sibling of FastAPI's $ref)
    async def search_image(request: Request, file: UploadFile = File(...), cluster: int | None = Form(None),
                           limit: int = Form(100)):
        # a form field the search does not read is refused as a JSON body's unknown key is
        # (web.StrictBody; the form is the one FastAPI parsed, kept by Starlette)
        extra = sorted(set((await request.form()).keys()) - {"file", "cluster", "limit"})
        if extra:
            raise ApiError(422, "invalid_request", f"{extra[0]}: Extra inputs are not permitted (the form "
                           "fields are file, cluster and limit)")
        data = await file.read(MAX_UPLOAD + 1)
        if len(data) > MAX_UPLOAD:
            raise ApiError(413, "too_large", f"the upload is over {MAX_UPLOAD >> 20} MB")
        return await run_in_threadpool(call, studio.search_image, data, file.filename or "", cluster, limit)

    # -- editing -------------------------------------------------------------------------------
    @app.post("/api/edits")
    def edit(body: Edit, request: Request):
        # the keys the client sent (a missing one is not the same as null: split "names")
        req = body.model_dump(exclude={"kind"}, exclude_unset=True)
        return call(studio.edit, body.kind, req, client_of(request), user_of(request))

    @app.post("/api/undo")
    def undo(request: Request, body: Target | None = None):
        return call(studio.edit, "undo", {"target": body.target if body else None}, client_of(request),
                    user_of(request))

    @app.post("/api/redo")
    def redo(request: Request, body: Target | None = None):
        return call(studio.edit, "redo", {"target": body.target if body else None}, client_of(request),
                    user_of(request))

    @app.post("/api/split/preview")
    def split_preview(body: SplitPreview):
        return call(studio.split_preview, body.cluster, None if body.k in (None, "auto") else body.k,
                    body.reducer or "auto")

    # -- results -------------------------------------------------------------------------------
    @app.post("/api/export")
    def export(body: Export, request: Request):
        return call(studio.export, body.kind, body.mode or "symlink", client_of(request), user_of(request),
                    body.prefer, body.split)

    @app.get("/api/download/{name}", response_class=Response,
             responses={200: {"description": "the curated table", "content": {
                 "text/csv": {}, "application/vnd.apache.parquet": {}}}})
    def download(name: str = Path(json_schema_extra={"enum": list(DOWNLOADS)})):
        import io

        if name not in DOWNLOADS:
            raise ApiError(404, "not_found", "downloads: curated_assignments.csv, curated_assignments.parquet")
        _, df, _ = studio.curated_table()
        buf = io.BytesIO()
        if name.endswith(".csv"):
            df.to_csv(buf, index=False)
            media = "text/csv; charset=utf-8"
        else:
            df.to_parquet(buf, index=False)
            media = "application/vnd.apache.parquet"
        return Response(buf.getvalue(), media_type=media,
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @app.post("/api/publish")
    def publish(request: Request):
        return call(studio.publish, client_of(request), user_of(request))

    return app
