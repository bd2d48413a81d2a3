"""The service's inbox over HTTP: what ``serve --keep-uploads DIR`` kept, for a dashboard that
has no shell on the box. A thin layer over :mod:`mediacluster.inbox` (the store: ``summary``,
``listing``, ``mark``), the same calls ``mediacluster inbox DIR`` makes:

- ``GET /v1/inbox?state=pending&limit=50&after=SEQ``: the counts (contents per state, uploads,
  bytes, whether ``--keep-max-mb`` is reached) and one page of the listing, each row the fields
  ``inbox --json`` gives plus ``url`` (its file). **Pagination**: a cursor. Rows come in the
  order their content first came (``seq``, the id of its first upload); ``next`` is the ``seq``
  of the page's last row when more may follow (null on the last page): pass it as ``after``.
  A person marking rows meanwhile moves no row onto a page already read (an offset would skip
  one for every row marked), new uploads come at the end.
- ``GET /v1/inbox/files/{name}``: a stored file's bytes (its content type from the sniffed
  extension). Only a name the table holds under ``files/`` is served, looked up in the table,
  never a path joined from the request: anything else is a 404.
- ``POST /v1/inbox/mark`` ``{"keys": [...], "state": "reviewed"}``: takes the contents the keys
  name out of the pending set (``inbox --mark-reviewed``'s keys: a content hash or 8+ of its
  leading hex digits, a stored file, and the uploader's own id, ``/v1/assign``'s ``item_ids``),
  answering per key ``marked`` / ``already`` (with the state it is in) / ``unknown``.

Reading is a GET: the read-only token (``--read-token``) may; marking changes the inbox: the
full ``--token`` only (the stack's guard, ``web.create_app``). **No purge over HTTP**: purging
deletes the uploads' rows and files for good; a retention is the operator's decision on the box
(``mediacluster inbox DIR --purge DAYS``, e.g. from cron), and a leaked token, or a dashboard
bug, could otherwise erase what a moderation team must still be able to look at. Without
``--keep-uploads`` every route answers 404 ``no_inbox`` saying how to turn it on.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import FastAPI, Query
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from .. import inbox as store
from ..fileio import needs_escape  # JSON's \udc80 alone is no Unicode text: SQLite cannot store it
from ..ingest.sources import content_type
from ..web import ApiError, StrictBody
from ..web.app import error_docs

#: rows of one ``GET /v1/inbox`` page at most
MAX_PAGE = 500
#: keys of one ``POST /v1/inbox/mark`` at most
MAX_MARK_KEYS = 1000
#: characters of one key at most (a stored file's name, a hash, an uploader's id)
MAX_KEY = 400
FILES_ROUTE = "/v1/inbox/files/"
NO_INBOX = ("this service keeps no uploads: start it with `mediacluster serve MODEL --keep-uploads DIR` "
            "(and --keep novel|uncertain|junk|all) to keep the uploads it could not place and read them here")
class Counts(BaseModel):
    pending: int = Field(description="contents waiting for review")
    reviewed: int = Field(description="contents a person marked reviewed")
    clustered: int = Field(description="contents a `cluster` run read (part of that collection now)")


class Answer(BaseModel):
    cluster: int | None = Field(None, description="the cluster the last upload was answered with")
    name: str | None = Field(None, description="that cluster's name")
    status: str | None = Field(None, description="clustered | noise | outlier | junk")
    probability: float | None = Field(None, description="its membership probability")
    novelty: float | None = Field(None, description="its novelty (0..1)")
    novel: int | None = Field(None, description="1: flagged novel")
    model_version: str | None = Field(None, description="the model version that answered")


class InboxRow(BaseModel):
    seq: int | None = Field(description="the content's place in the order contents came (the id of its first "
                            "upload): the cursor, `after`")
    hash: str = Field(description="the content hash (BLAKE2b-128): a key of `POST /v1/inbox/mark`")
    file: str | None = Field(None, description="the stored file, relative to the inbox (null: a posted vector)")
    url: str | None = Field(None, description="where its bytes are: `GET` this path on the service (the "
                            "same token); null for a posted vector")
    name: str | None = Field(None, description="the uploader's file name of its first upload, made safe")
    names: list[str] = Field(description="every distinct file name it was uploaded under, made safe")
    ids: list[str] = Field(description="every distinct id the uploaders gave it (`item_ids` of /v1/assign), "
                           "in the order they came")
    size: int = Field(description="bytes")
    count: int = Field(description="how many times it was uploaded")
    first_seen: str | None = Field(None, description="its first upload (UTC, ISO 8601)")
    last_seen: str | None = Field(None, description="its last upload")
    reason: str | None = Field(None, description="why the last upload was kept (the --keep rule)")
    input: str | None = Field(None, description="image | audio | vector")
    answer: Answer = Field(description="the last upload's answer")
    state: str = Field(description="pending | reviewed | clustered")
    when: str | None = Field(None, description="when it left the pending set")
    run: str | None = Field(None, description="the run that took it (clustered)")
    missing: bool = Field(False, description="its stored file is gone from the inbox (deleted by hand): "
                          "`url` answers 404")


class InboxPage(BaseModel):
    contents: Counts = Field(description="contents (distinct uploads) per state")
    uploads: int = Field(description="upload rows (an upload of the same bytes again is a row)")
    bytes: int = Field(description="bytes stored")
    pending_uploads: int = Field(description="upload rows of pending contents")
    oldest_pending: str | None = Field(None, description="the oldest pending upload's time")
    max_bytes: int | None = Field(None, description="--keep-max-mb in bytes; null: unbounded")
    full: bool = Field(description="new contents are no longer kept: --keep-max-mb is reached (this worker "
                       "refused one for room, or the stored bytes reach the bound)")
    state: str = Field(description="the state listed")
    limit: int = Field(description="rows per page asked for")
    after: int | None = Field(None, description="the cursor this page started after")
    next: int | None = Field(None, description="pass as `after` for the next page; null: this was the last")
    items: list[InboxRow] = Field(description="this page, in the order the contents first came")


class MarkBody(StrictBody):
    keys: list[Annotated[str, Field(max_length=MAX_KEY)]] = Field(min_length=1, max_length=MAX_MARK_KEYS, description=(
        f"1..{MAX_MARK_KEYS} contents to mark: a content hash (or 8+ of its leading hex digits), a stored "
        "file (`files/NAME` or NAME), or an id the uploader gave (`item_ids`: every content uploaded with "
        f"it); each at most {MAX_KEY} characters"))
    state: Literal["reviewed"] = Field("reviewed", description="the state to move them to: reviewed (a person "
                                       "looked at them); a content a clustering took stays clustered")


class KeyResult(BaseModel):
    key: str = Field(description="the key as sent")
    result: Literal["marked", "already", "unknown"] = Field(description="marked: it left the pending set now; "
                                                            "already: it was not pending (see `state`); "
                                                            "unknown: no content has this hash, file or id")
    state: str | None = Field(None, description="the state its contents are in now (reviewed, clustered)")
    hashes: list[str] = Field(description="the contents it names")


class MarkResult(BaseModel):
    marked: int = Field(description="contents that left the pending set")
    unknown: list[str] = Field(description="keys that name no content")
    keys: list[KeyResult] = Field(description="per key, in the order sent")
    contents: Counts = Field(description="the counts per state after marking")


def add_inbox_routes(app: FastAPI, root: str | os.PathLike | None, keeper=None) -> None:
    """The inbox routes on ``app``, over the inbox at ``root`` (None: the service keeps no
    uploads; each route a 404 saying how to). ``keeper``: this process's ``serve.inbox.Inbox``
    (whether it found the store full)."""
    folder = Path(root) if root else None

    def where() -> Path:
        if folder is None:
            raise ApiError(404, "no_inbox", NO_INBOX)
        return folder

    def reading(call, *args, **kw):
        """A store call, its failures the API's: a table that cannot be read is a 503."""
        try:
            return call(*args, **kw)
        except (OSError, sqlite3.Error) as e:
            raise ApiError(503, "inbox_unavailable", f"the inbox cannot be read now: {type(e).__name__}: {e}") from None

    def page(state: str, limit: int, after: int | None) -> dict:
        root = where()
        counts = reading(store.summary, root)
        rows = reading(store.listing, root, state, limit=limit + 1, after=after)
        more = len(rows) > limit
        rows = rows[:limit]
        for r in rows:
            r["url"] = FILES_ROUTE + quote(os.path.basename(r["file"])) if r["file"] else None
        max_bytes = getattr(keeper, "max_bytes", None)
        full = bool(getattr(keeper, "full", False)) or (max_bytes is not None and counts["bytes"] >= max_bytes)
        return {**counts, "max_bytes": max_bytes, "full": full, "state": state, "limit": limit, "after": after,
                "next": rows[-1]["seq"] if more and rows else None, "items": rows}

    @app.get("/v1/inbox", response_model=InboxPage,
             summary="The inbox (--keep-uploads): counts per state and a page of its contents",
             responses=error_docs({404: "the service keeps no uploads (start it with --keep-uploads DIR)",
                                   503: "the inbox's table cannot be read now"}))
    async def inbox_page(state: Literal["pending", "reviewed", "clustered", "all"] = Query(
                             "pending", description="which contents: pending (the review queue), reviewed, "
                             "clustered, or all"),
                         limit: int = Query(50, ge=1, le=MAX_PAGE, description=f"rows per page (1..{MAX_PAGE})"),
                         after: int | None = Query(None, ge=0, le=2**62, description="the cursor: the `next` of "
                                                   "the page before (rows whose `seq` is larger); none: the first page")):
        return await asyncio.to_thread(page, state, limit, after)

    def stored_path(name: str) -> tuple[Path, str]:
        root = where()
        if needs_escape(name) or "\x00" in name:
            raise ApiError(404, "not_found", "no such stored file in the inbox")
        held = reading(store.holds_file, root, name)
        path = root / store.FILES / name
        files = (root / store.FILES).resolve()
        # the name is one the table holds (the writer made it: inbox.stored_file), and it lies in files/
        if not held or "/" in name or "\\" in name or name in (".", "..") or path.resolve().parent != files \
                or not path.is_file():
            raise ApiError(404, "not_found", f"no stored file {name[:200]!r} in the inbox (GET /v1/inbox lists "
                           "them: each row's `url`)")
        return path, content_type(name)

    @app.get(FILES_ROUTE + "{name}", response_class=FileResponse,
             summary="The bytes of a file the inbox keeps (a row's `url`)",
             responses={200: {"description": "the upload's bytes as stored (the format sniffed from them)",
                              "content": {"image/*": {}, "audio/*": {}, "application/octet-stream": {}}},
                        **error_docs({404: "no such stored file, or the service keeps no uploads",
                                      503: "the inbox's table cannot be read now"})})
    async def inbox_file(name: str):
        path, kind = await asyncio.to_thread(stored_path, name)
        # the bytes are a user's upload: never rendered as anything but what the type says
        return FileResponse(path, media_type=kind, headers={
            "Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox"})

    def do_mark(keys: list[str]) -> dict:
        root = where()
        got = reading(store.mark, root, keys, how=store.REVIEWED, detail=True)
        return {**got, "contents": reading(store.summary, root)["contents"]}

    @app.post("/v1/inbox/mark", response_model=MarkResult,
              summary="Mark contents of the inbox reviewed (by hash, stored file or the uploader's id)",
              responses=error_docs({404: "the service keeps no uploads (start it with --keep-uploads DIR)",
                                    422: "a body of the wrong form (the error names the field)",
                                    503: "the inbox's table cannot be written now"}))
    async def inbox_mark(body: MarkBody):
        bad = next((i for i, k in enumerate(body.keys) if needs_escape(k)), None)
        if bad is not None:
            raise ApiError(422, "invalid_request", f"keys[{bad}] is not Unicode text (a lone surrogate)")
        return await asyncio.to_thread(do_mark, body.keys)
