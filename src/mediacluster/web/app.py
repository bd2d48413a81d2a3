"""FastAPI application factory and server runner (see the package docstring)."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import re
import secrets
import signal
import socket
import sys
import threading
from contextlib import contextmanager
from typing import Annotated
from urllib.parse import parse_qsl, quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from ..errors import (
    InputError,
    MediaclusterError,
    ModelFormatError,
    OutputError,
    ParameterError,
    RunDirError,
    RunLockedError,
)

log = logging.getLogger(__name__)

#: status codes for the errors a client's request can cause (an OutputError: :data:`OUTPUT_STATUS`)
STATUS = [(RunLockedError, 409), (RunDirError, 404), (ModelFormatError, 503), (ParameterError, 400),
          (InputError, 400), (OutputError, 507), (MediaclusterError, 400)]

#: an OutputError by its cause (``fileio.refusal``): a full disk or quota is 507 Insufficient
#: Storage; a read-only run folder, model store or file is 403 (the server may not write there:
#: no retry helps until someone makes it writable; not 409, which the studio page reads as
#: another tab's edit and refreshes on, and the service as a model switch to retry after); a
#: file where a folder goes is 409 (the place is in another state): only an export or a publish
#: meets one (``exports/``, ``models/`` a file), and the page shows their errors' messages without
#: a refresh; an edit writes SQLite only (full or read-only), and no service request writes a
#: file (uploads are written after the answer), so neither reads it as a conflict. Any other
#: cause stays 507
OUTPUT_STATUS = {"full": 507, "readonly": 403, "in_the_way": 409}


def status_of(e: MediaclusterError) -> int:
    """The HTTP status a user error is answered with."""
    if isinstance(e, OutputError):
        from ..fileio import refusal

        return OUTPUT_STATUS.get(refusal(e), 507)
    return next(s for cls, s in STATUS if isinstance(e, cls))


class ApiError(Exception):
    """Raise in an endpoint to answer ``status`` with ``{"error": {"kind", "message", ...}}``
    (``details``: more JSON fields for the error object, e.g. which items of a batch failed)."""

    def __init__(self, status: int, kind: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.status, self.kind, self.message, self.details = status, kind, message, details or {}


class StrictBody(BaseModel):
    """The base of every JSON request body the web apps read (the studio's edits, split previews
    and exports, the service's vectors): a key the body does not have ("nmae" for "name") and a
    value of another JSON type (the text "3" or ``true`` where a whole number belongs: use
    :func:`whole`, which takes 3.0 as JSON Schema does) are refused before a handler runs, with a 422 naming the field, instead of
    being ignored or read as something else. Ranges and values that depend on the served state
    (a cluster that exists, a level the model has) are the handlers'."""

    model_config = ConfigDict(extra="forbid", strict=True)


def _integral(v):
    """A JSON number with no fraction (``2.0``) as the int it is: JSON Schema's "integer" takes
    it, and a strict int would refuse it; text, booleans and fractions stay refused."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


def whole(**field):
    """A whole number in a :class:`StrictBody` with ``Field`` constraints (``ge=0``,
    ``description=``): an int, or a JSON number with no fraction (2.0, as JSON Schema's
    "integer" reads it); never text ("2") or a boolean. (The constraints go on the int, before
    the conversion, so the description keeps them as ``minimum`` / ``maximum``.)"""
    return Annotated[int, Field(**field), BeforeValidator(_integral)]


def invalid_message(errors: list[dict], skip: tuple = ("body",)) -> str:
    """pydantic's errors as one line naming each field: "rename.nmae: Extra inputs are not
    permitted" (the first five)."""
    said: dict[str, list[str]] = {}  # the field -> what is wrong with it (each way a union is read)
    for err in errors:
        where = ".".join(str(x) for x in err.get("loc", ()) if x not in skip and not _UNION.match(str(x)))
        msg = str(err.get("msg"))
        if not where and err.get("type") in ("model_type", "model_attributes_type", "dict_type"):
            msg = "the body must be a JSON object"  # pydantic names its class ("instance of VectorsBody")
        msgs = said.setdefault(where, [])
        if msg not in msgs:
            msgs.append(msg)
    parts = [f"{where}: {' or '.join(m)}" if where else " or ".join(m) for where, m in list(said.items())[:5]]
    return "; ".join(parts) or "invalid request"


#: the names pydantic gives the ways a union field is read ("to.int", "k.literal['auto']"): not fields
_UNION = re.compile(r"^(int|str|bool|float|none|list\[.*|dict\[.*|literal\[.*|constrained-.*|function-.*|"
                    r"nullable\[.*)$")


def check_body(model: type[StrictBody], doc, note: str = "") -> StrictBody:
    """``doc`` (a JSON body a handler parsed itself, e.g. for speed) validated by ``model``, or
    the same 422 FastAPI's own validation of a declared body answers (``note``: said after it)."""
    try:
        return model.model_validate(doc)
    except ValidationError as e:
        raise ApiError(422, "invalid_request", invalid_message(e.errors()) + note) from None


def error_response(status: int, kind: str, message: str, details: dict | None = None,
                   headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"kind": kind, "message": message, **(details or {})}},
                        status_code=status, headers=headers)


#: the JSON Schema of every error answer, for the OpenAPI description (``error_docs``)
ERROR_SCHEMA = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["kind", "message"],
    "properties": {"kind": {"type": "string", "description": "what went wrong, in one word "
                            "(e.g. invalid_request, not_found, too_large)"},
                   "message": {"type": "string", "description": "what went wrong, naming the value"}}}}}


def error_docs(codes: dict[int, str]) -> dict:
    """OpenAPI ``responses`` entries for error answers: ``{status: description}`` -> each with
    :data:`ERROR_SCHEMA` (a 422 listed here replaces FastAPI's own ``detail`` form, which the
    JSON errors of this stack never answer)."""
    return {code: {"description": text, "content": {"application/json": {"schema": ERROR_SCHEMA}}}
            for code, text in codes.items()}


def _kind(e: Exception) -> str:
    name = type(e).__name__
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_").removesuffix("_error") or "error"


def _methods(request: Request) -> list[str]:
    """The methods the app's routes take at the request's path (a route whose path matches
    answers Match.PARTIAL for another method)."""
    methods = set()
    for route in request.app.router.routes:
        if getattr(route, "methods", None) and route.matches(request.scope)[0] != Match.NONE:
            methods |= set(route.methods)
    return sorted(methods)


def _bug_message(e: Exception) -> str:
    return f"internal error ({type(e).__name__}); the server log has the traceback"


#: the documentation page's own files (served from the package: the page works offline)
DOCS_STATIC = "/static-offline-docs/"
#: the page's token cookie (a port's own: :func:`token_cookie`; this plain name is still read)
TOKEN_COOKIE = "mediacluster_token"


def token_cookie(host: str) -> str:
    """The name of the cookie a page keeps its access token in, for the server a request's Host
    header names ("127.0.0.1:8765" -> ``mediacluster_token_8765``): one per port, since a browser
    sends a host's cookies to every port of it (RFC 6265 8.5), and two servers on one machine
    would overwrite each other's token (every request of the first page then a 401)."""
    tail = host.rsplit("]", 1)[-1]  # "[::1]:80" -> ":80"
    port = tail.rpartition(":")[2] if ":" in tail else ""
    return f"{TOKEN_COOKIE}_{port}" if port.isdigit() else TOKEN_COOKIE


def token_query(token: str) -> str:
    """``?token=TOKEN`` for a URL, the token percent-encoded (a given token may hold ``+ & # %``,
    which a browser would read as other parts of the URL)."""
    return f"?token={quote(token, safe='')}"


#: the query parameter every route takes: the access token (``?token=TOKEN``, read by the guards)
STACK_QUERY = frozenset({"token"})
#: routes whose query strings are free-form by default: the OpenAPI page's OAuth2 redirect
#: (``code``, ``state``, ... from an identity provider) and the docs page's files (a
#: cache-busting ``?v=2`` on a file is ordinary web practice, not a typo)
FREE_QUERY = ("/docs/oauth2-redirect", DOCS_STATIC.rstrip("/"))


def declared_query(route) -> frozenset[str]:
    """The query parameters ``route`` declares: a FastAPI route's ``Query`` parameters, its
    handler's and its dependencies' (by the name a client sends, the alias; a parameter model's
    fields one by one); a plain Starlette route or mount (``/openapi.json``, the docs' files):
    none."""
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return frozenset()
    from fastapi.dependencies import utils

    fields, todo = [], [dependant]
    while todo:
        d = todo.pop()
        fields.extend(d.query_params)
        todo.extend(d.dependencies)
    flat = getattr(utils, "_get_flat_fields_from_params", None)  # Query(model) -> its fields
    if flat is not None:
        fields = flat(fields)
    return frozenset(f.alias for f in fields)


def unknown_query(scope, free: frozenset[str], cache: dict) -> tuple[str, list[str], list[str]] | None:
    """``(route, unknown names, accepted names)`` for a request whose query string names a
    parameter its route does not declare (:func:`declared_query`, plus :data:`STACK_QUERY`);
    None when it names none, when its route's query is free-form (``free``: route paths), or
    when no route takes the request (the router's 404 / 405 then). The route is matched as the
    router matches it; ``cache``: the accepted names per route, filled on first use."""
    names = {k for k, _ in parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)}
    if not names or names <= STACK_QUERY:
        return None
    for route in scope["app"].router.routes:
        match, _ = route.matches(scope)
        if match != Match.FULL:  # none, or another method at this path (the router's 405 if no other takes it)
            continue
        path = getattr(route, "path", "")
        if path in free:
            return None
        got = cache.get(id(route))
        if got is None:
            got = cache[id(route)] = (route, declared_query(route))  # the route kept: its id stays its own
        accepted = got[1]
        unknown = sorted(names - accepted - STACK_QUERY)
        return (path, unknown, sorted(accepted)) if unknown else None
    return None


def query_message(path: str, unknown: list[str], accepted: list[str], token: bool) -> str:
    """What a 422 for unknown query parameters says: each one named (with the accepted name it
    is closest to), then the ones ``path`` takes."""
    import difflib

    said = []
    for name in unknown:
        near = difflib.get_close_matches(name, accepted, n=1, cutoff=0.6)
        said.append(f"{name!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
    head = f"unknown query parameter{'s' if len(unknown) > 1 else ''} {', '.join(said)}"
    takes = (f"{path} takes the query parameters {', '.join(accepted)}" if accepted
             else f"{path} takes no query parameters")
    return f"{head}: {takes}" + (" (and token, the access token)" if token else "")


def create_app(title: str, version: str, token: str | None = None, max_body_bytes: int = 32 << 20,
               time_limit_s: float | None = None, on_error=None,
               public_paths: tuple[str, ...] = ("/healthz",), free_query: tuple[str, ...] = FREE_QUERY,
               cors_origins: tuple[str, ...] = (), read_token: str | None = None,
               read_posts: tuple[str, ...] = (), **kw) -> FastAPI:
    """A FastAPI app with JSON errors, a body limit, an optional token, a time limit and strict
    query strings.

    ``on_error(kind)`` is called for every error answered (the service counts them).
    ``public_paths`` need no token (an entry ending in "/" is a prefix). A query parameter the
    matched route does not declare (:func:`declared_query`; ``token`` is every route's) is a 422
    naming it and the route's parameters, on every route but those whose path is in
    ``free_query`` (free-form query strings, opted out by name). Every answer carries an
    ``X-Request-ID`` (the client's, else a new one: :func:`request_id`). ``cors_origins``: the
    web origins (``https://app.example``, or ``*``) whose pages may call the app from a browser
    (CORS: preflights answered before the token check, ``Authorization`` and ``Content-Type``
    allowed, ``X-Request-ID`` readable); none by default. ``read_token``: a second token that
    may only read: GET / HEAD requests, and POSTs to ``read_posts`` (the service's predictions);
    any other request with it is a 403 saying the full ``token`` is needed (a ``read_token``
    needs a ``token``). The OpenAPI page
    (``/docs``) loads Swagger UI from files shipped in ``fastapi-offline``, not from a CDN."""
    from fastapi_offline import FastAPIOffline

    # what the stack itself may answer on any route, documented on every operation (the app's
    # own ``responses`` are added to these)
    stack = {400: "the request is malformed (the error names what)",
             413: f"the request body is over {max_body_bytes} bytes",
             422: "a query parameter the operation does not take (the error names it and the "
                  "ones it takes), or a body or parameter FastAPI's validation refuses"}
    check_token(token)
    check_token(read_token, "read-token")
    if read_token and not token:
        raise ParameterError("a read-only token needs a full access token too (--token)", "read_token")
    if read_token and hmac.compare_digest(read_token.encode(), token.encode()):
        raise ParameterError("the read-only token must differ from the access token (--token)", "read_token")
    if token:
        stack[401] = "the access token is missing or wrong"
    if read_token:
        stack[403] = ("the read-only token (--read-token) on an operation that changes the server: it "
                      "needs the access token (--token)")
    if time_limit_s is not None:
        stack[503] = f"the request took longer than {time_limit_s:g} s"
    kw["responses"] = {**error_docs(stack), **kw.get("responses", {})}
    app = FastAPIOffline(title=title, version=version, static_url=DOCS_STATIC.rstrip("/"), **kw)
    public = {p for p in public_paths if not p.endswith("/")}
    prefixes = tuple(p for p in public_paths if p.endswith("/"))
    app.state.token = token
    app.state.read_token = read_token
    count = on_error or (lambda kind: None)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        count(e.kind)
        return error_response(e.status, e.kind, e.message, e.details)

    @app.exception_handler(MediaclusterError)
    async def _user_error(request: Request, e: MediaclusterError):
        status = status_of(e)
        count(_kind(e))
        return error_response(status, _kind(e), str(e))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, e: RequestValidationError):
        broken = next((err for err in e.errors() if err.get("type") == "json_invalid"), None)
        if broken is not None:  # as the service's own parsing says it: 400 invalid_json, where
            count("invalid_json")  # pydantic said "0: JSON decode error" (a 422)
            where = (broken.get("loc") or ("", "?"))[-1]
            return error_response(400, "invalid_json", "the body is not valid JSON: "
                                  f"{(broken.get('ctx') or {}).get('error', 'cannot be parsed')} (char {where})")
        count("invalid_request")
        return error_response(422, "invalid_request", invalid_message(e.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        kind = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed", 401: "unauthorized",
                413: "too_large"}.get(e.status_code, "http_error")
        message = str(e.detail)
        if e.status_code == 400 and message == "There was an error parsing the body":
            # FastAPI's words for a JSON body that is not UTF-8 (or a form it cannot split)
            message = "the request body cannot be read: not UTF-8 JSON, or a broken form"
        count(kind)
        # the exception's headers too: a 405 says which methods the path takes (Allow, RFC 9110),
        # all of them: Starlette's names those of the first route of the path only (GET
        # /api/edits said "Allow: GET" of a path that takes POST too)
        headers = e.headers
        if e.status_code == 405:
            headers = {**(headers or {}), "Allow": ", ".join(_methods(request))}
        return error_response(e.status_code, kind, message, headers=headers)

    @app.exception_handler(Exception)
    async def _bug(request: Request, e: Exception):
        # only what fails outside _Guards comes here (e.g. an app's own middleware); Starlette
        # then closes the connection after this answer
        log.exception("internal error on %s %s (request %s)", request.method, request.url.path,
                      getattr(request.state, "request_id", None))
        count("internal")
        return error_response(500, "internal", _bug_message(e))

    app.add_middleware(_Guards, public=public, prefixes=prefixes, max_body_bytes=max_body_bytes,
                       time_limit_s=time_limit_s, count=count, free_query=frozenset(free_query),
                       read_posts=frozenset(read_posts))
    if token:  # the description says which operations need the token, for generated clients
        framework_openapi = app.openapi

        def openapi() -> dict:
            if app.openapi_schema is None:
                doc = framework_openapi()
                schemes = doc.setdefault("components", {}).setdefault("securitySchemes", {})
                schemes["bearer"] = {
                    "type": "http", "scheme": "bearer",
                    "description": "the server's access token (--token): Authorization: Bearer TOKEN"
                    + ("; or its read-only token (--read-token) where the operation only reads "
                       "(bearer_write: the access token only)" if read_token else "")}
                if read_token:
                    schemes["bearer_write"] = {
                        "type": "http", "scheme": "bearer",
                        "description": "the server's access token (--token) only: the read-only token "
                                       "(--read-token) is answered 403 on these operations"}
                for path, ops in doc.get("paths", {}).items():
                    if path not in public and not path.startswith(prefixes):
                        for method, op in ops.items():
                            writes = read_token and not _reads(method.upper(), path, frozenset(read_posts))
                            op["security"] = [{"bearer_write" if writes else "bearer": []}]
            return app.openapi_schema

        app.openapi = openapi
    if cors_origins:  # outside the guards: a browser's preflight carries no token
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["authorization", "content-type", REQUEST_ID, "x-model-id"],
                           expose_headers=[REQUEST_ID], max_age=600)
    return app


#: the header naming a request: a client's own id (kept when it is 1..128 printable ASCII
#: characters without spaces), else one the server makes; echoed on every answer
REQUEST_ID = "x-request-id"
_REQUEST_ID_OK = re.compile(r"[\x21-\x7e]{1,128}")


def request_id(given: str | None) -> str:
    """The id of a request: the client's ``X-Request-ID`` when it is a sane token (so a trace
    id from a proxy or a client's log joins the server's), else a new random one (32 hex)."""
    if given and _REQUEST_ID_OK.fullmatch(given):
        return given
    return secrets.token_hex(16)


def _reads(method: str, path: str, read_posts: frozenset) -> bool:
    """Whether a request only reads (a read-only token may send it): GET / HEAD / OPTIONS, or a
    POST to one of ``read_posts`` (the service's predictions)."""
    return method in ("GET", "HEAD", "OPTIONS") or (method == "POST" and path in read_posts)


def _routed(scope) -> bool:
    """Whether a route of the app takes this method at this path: a request no route takes is
    answered by the router (404, or 405 with ``Allow``) whichever token it carries."""
    from starlette.routing import Match

    return any(route.matches(scope)[0] == Match.FULL for route in scope["app"].router.routes)


class _Guards:
    """The token, the body limit, the query string and the time limit, as plain ASGI
    middleware: no task, memory stream and response wrapper per request as
    ``BaseHTTPMiddleware`` makes (which cost the service's event loop ~0.1 ms per request;
    benchmarks/RESULTS.md "Service"). The query check matches the route only for a request with
    a query string other than ``token``."""

    def __init__(self, app, public: set, prefixes: tuple, max_body_bytes: int,
                 time_limit_s: float | None, count, free_query: frozenset = frozenset(FREE_QUERY),
                 read_posts: frozenset = frozenset()):
        self.app = app
        self.read_posts = read_posts
        self.public, self.prefixes = public, prefixes
        self.max_body_bytes, self.time_limit_s, self.count = max_body_bytes, time_limit_s, count
        self.free_query, self._declared = free_query, {}

    async def _refuse(self, scope, receive, send, status: int, kind: str, message: str,
                      headers: dict | None = None) -> None:
        self.count(kind)
        await error_response(status, kind, message, headers=headers)(scope, receive, send)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        rid = request_id(request.headers.get(REQUEST_ID))
        scope.setdefault("state", {})["request_id"] = rid
        outer_send = send

        async def send(message):  # every answer (refusals and errors too) names its request
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()),
                                                  (REQUEST_ID.encode(), rid.encode())]}
            await outer_send(message)

        if scope["method"] == "HEAD":  # a server must answer HEAD where it answers GET (RFC 9110
            # 9.1; an uptime monitor's default probe); FastAPI's GET routes take GET only: the GET,
            # its status and headers, without the body
            scope, head_send = {**scope, "method": "GET"}, send

            async def send(message):
                if message["type"] == "http.response.body":
                    message = {**message, "body": b""}
                await head_send(message)

        expected = scope["app"].state.token
        reader = getattr(scope["app"].state, "read_token", None)
        path = scope["path"]
        if expected and path not in self.public and not path.startswith(self.prefixes):
            auth = request.headers.get("authorization", "").strip()
            scheme, _, cred = auth.partition(" ")  # the scheme is case-insensitive (RFC 9110)
            given = ((cred.strip() if scheme.lower() == "bearer" else auth)
                     or request.query_params.get("token")
                     or request.cookies.get(token_cookie(request.headers.get("host", "")))
                     or request.cookies.get(TOKEN_COOKIE) or "")
            if not hmac.compare_digest(given.encode(), expected.encode()):
                reads = _reads(scope["method"], path, self.read_posts)
                if reader and hmac.compare_digest(given.encode(), reader.encode()):
                    if not reads and _routed(scope):  # never the token itself in an answer or a log
                        await self._refuse(scope, receive, send, 403, "read_only_token", f"{scope['method']} "
                                           f"{path} changes the server: it needs the access token (--token); "
                                           "the token sent is the read-only one (--read-token)")
                        return
                else:
                    which = ("its access token (--token)" if not reader or not reads else
                             "its access token (--token) or its read-only token (--read-token)")
                    await self._refuse(scope, receive, send, 401, "unauthorized", f"this server needs "
                                       f"{which} (Authorization: Bearer TOKEN, or ?token=TOKEN)",
                                       {"WWW-Authenticate": "Bearer"})  # a 401 names its scheme (RFC 9110)
                    return
        if scope.get("query_string"):
            # a parameter the route does not take ("?levle=2", "?limt=5") was ignored, the request
            # answered as if it were absent: refused as a JSON body's unknown key is (StrictBody)
            bad = unknown_query(scope, self.free_query, self._declared)
            if bad is not None:
                route, unknown, accepted = bad
                self.count("invalid_request")
                await error_response(422, "invalid_request", query_message(route, unknown, accepted, bool(expected)),
                                     {"parameters": unknown, "accepted": accepted})(scope, receive, send)
                return
        limit = self.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None:
            try:
                too_big = int(length) > limit
            except ValueError:
                await self._refuse(scope, receive, send, 400, "invalid_request", "bad Content-Length header")
                return
            if too_big:
                await self._refuse(scope, receive, send, 413, "too_large", f"request body of "
                                   f"{int(length)} bytes is over the limit of {limit} bytes")
                return
        elif scope["method"] in ("POST", "PUT", "PATCH") and request.headers.get("transfer-encoding"):
            chunks, size = [], 0  # no length given: read it all here, refusing past the limit
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                if size > limit:
                    await self._refuse(scope, receive, send, 413, "too_large", f"request body is "
                                       f"over the limit of {limit} bytes")
                    return
                if not message.get("more_body", False):
                    break
            body, outer = b"".join(chunks), receive

            async def receive():  # the body once, then what the server says (a disconnect)
                nonlocal body
                if body is None:
                    return await outer()
                message, body = {"type": "http.request", "body": body, "more_body": False}, None
                return message

        started = False

        async def send_started(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            if self.time_limit_s is None:
                await self.app(scope, receive, send_started)
            else:
                await asyncio.wait_for(self.app(scope, receive, send_started), timeout=self.time_limit_s)
        except TimeoutError:
            if started:  # half an answer is out: nothing better than closing the connection
                raise
            await self._refuse(scope, receive, send, 503, "timeout", f"the request took longer "
                               f"than {self.time_limit_s:g} s")
        except ClientDisconnect:
            return  # the client went away mid-body (a lost network): no one to answer, no bug
        except Exception as e:
            # a bug: answered here, not by Starlette's outermost error middleware, which
            # re-raises after answering, so uvicorn closed the keep-alive connection and the
            # client's next request on it failed with a reset
            if started:
                raise
            log.error("internal error on %s %s (request %s)", scope["method"], path, rid, exc_info=e)
            await self._refuse(scope, receive, send, 500, "internal", _bug_message(e))


def is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one the OS picks)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only when the
    # socket says it is TCP (base_events._set_nodelay). With proto 0 every response waited for
    # the client's delayed ACK (Nagle): ~44 ms added to each request (/healthz: 44 ms -> ~1 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, OverflowError) as e:  # OverflowError: a port outside 0..65535
        sock.close()
        raise ParameterError(f"cannot listen on {host}:{port}: {getattr(e, 'strerror', None) or e}", "port") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def port_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be listened on now (to prefer a fixed default port)."""
    try:
        bind(host, port).close()
        return True
    except ParameterError:
        return False


def check_token(token: str | None, flag: str = "token") -> str | None:
    """``token`` when it can travel in ``Authorization: Bearer TOKEN``: printable ASCII without
    spaces at either end (a header's bytes are read as Latin-1 and its value is stripped, so such
    a token was taken and then refused on every request that sent it in the header); else a
    ParameterError naming ``flag``."""
    if token and (not token.isascii() or not token.isprintable() or token != token.strip()):
        raise ParameterError(f"--{flag} must be printable ASCII without spaces at either end (it is "
                             "sent in the Authorization header, which carries no other characters); "
                             "e.g. `python -c 'import secrets; print(secrets.token_urlsafe(24))'`", flag)
    return token


def resolve_token(host: str, token: str | None) -> str | None:
    """The access token a server on ``host`` needs: none on loopback unless given; elsewhere the
    given one or a new random one (printed with the URL). A given token is checked
    (:func:`check_token`)."""
    if token:
        return check_token(token)
    return None if is_loopback(host) else secrets.token_urlsafe(24)


def run_server(app, host: str = "127.0.0.1", port: int = 0, name: str = "mediacluster",
               log_level: str = "warning", on_listen=None, workers: int = 1,
               token: str | None = None, show_token: bool = True) -> None:
    """Serve ``app`` with uvicorn on a socket bound here; print ``NAME: listening on URL``.

    With ``workers`` > 1, ``app`` is the import string ``"module:factory"`` of a function that
    builds the application; uvicorn starts that many worker processes which share the socket,
    each building its own app (so its own state). ``token`` is the one shown with the URL
    (default: ``app.state.token``); ``show_token`` False: the URL is printed without it (a token the
    operator gave is theirs already, and a service's stdout often ends in a log store). Ctrl+C
    stops it: prints ``NAME: stopped`` and returns."""
    if workers > 1 and not isinstance(app, str):
        raise ParameterError("several workers need the app as an import string 'module:factory'",
                             "workers")
    sock = bind(host, port)
    try:
        _serve(app, sock, host, name, log_level, on_listen, workers, token, show_token)
    except KeyboardInterrupt:
        # Ctrl+C is how a server is stopped: uvicorn shut it down cleanly and re-raised the
        # signal; without this the CLI said "interrupted ... re-run to resume" and exited 130
        pass
    sys.stdout.write(f"{name}: stopped\n")
    sys.stdout.flush()


def _serve(app, sock, host, name, log_level, on_listen, workers, token, show_token=True) -> None:
    import uvicorn

    real_port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{real_port}/"
    if token is None:
        token = getattr(getattr(app, "state", None), "token", None)

    def announce() -> None:
        tail = (token_query(token) if show_token else " (send the access token given with --token)") if token else ""
        sys.stdout.write(f"{name}: listening on {url}{tail}\n")
        sys.stdout.flush()
        if on_listen is not None:
            on_listen(url)

    common = dict(log_level=log_level, access_log=False, lifespan="on", timeout_graceful_shutdown=5)
    if workers > 1:
        from uvicorn.supervisors import Multiprocess

        config = uvicorn.Config(app, factory=True, workers=workers, **common)
        # the supervisor takes Ctrl+C when it is made (its constructor installs the handlers),
        # so "listening" comes after that: said before, a Ctrl+C in between could land while
        # uvicorn was importing (see _announcing). The workers start the apps; the bound socket
        # queues connections until they do
        supervisor = Multiprocess(config, sockets=[sock])
        announce()
        supervisor.run()
    else:
        server = _announcing(uvicorn.Server)(uvicorn.Config(app, **common), announce)
        with _term_stops(server):
            server.run(sockets=[sock])


@contextmanager
def _term_stops(server):
    """SIGTERM (systemd's, Kubernetes') stops the one-process server as Ctrl+C does. uvicorn
    drains the requests in flight under its own handler, then raises the signal again for the
    handler it found: Python's default one ended the process by the signal (exit -15, 143 in a
    pod, no "stopped"). This one takes it as the stop it is (the supervisor of ``--workers N``
    already does)."""
    if threading.current_thread() is not threading.main_thread():  # signals are the main thread's
        yield
        return

    def stop(sig, frame):
        server.should_exit = True

    old = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _announcing(server_class):
    """``server_class`` (uvicorn's ``Server``, imported lazily) saying "listening" once the app
    has started, when Ctrl+C is uvicorn's to handle (its signal handlers are in place for the
    whole of ``serve``). Said before, a Ctrl+C in between reached Python's default handler while
    the app was still importing; a KeyboardInterrupt raised inside an import lock's callback is
    "ignored", so the server went on running (seen once in CI under load: killed after 60 s)."""

    class Announcing(server_class):
        def __init__(self, config, announce):
            super().__init__(config)
            self._announce = announce

        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            if not self.should_exit:
                self._announce()

    return Announcing

