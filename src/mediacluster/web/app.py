"""FastAPI application factory and server runner (see the package docstring)."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import secrets
import socket
import sys

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    InputError,
    MediaclusterError,
    ModelFormatError,
    ParameterError,
    RunDirError,
    RunLockedError,
)

log = logging.getLogger(__name__)

#: status codes for the errors a client's request can cause
STATUS = [(RunLockedError, 409), (RunDirError, 404), (ModelFormatError, 503), (ParameterError, 400),
          (InputError, 400), (MediaclusterError, 400)]


class ApiError(Exception):
    """Raise in an endpoint to answer ``status`` with ``{"error": {"kind", "message", ...}}``
    (``details``: more JSON fields for the error object, e.g. which items of a batch failed)."""

    def __init__(self, status: int, kind: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.status, self.kind, self.message, self.details = status, kind, message, details or {}


def error_response(status: int, kind: str, message: str, details: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"kind": kind, "message": message, **(details or {})}},
                        status_code=status)


def _kind(e: Exception) -> str:
    name = type(e).__name__
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_").removesuffix("_error") or "error"


#: the documentation page's own files (served from the package: the page works offline)
DOCS_STATIC = "/static-offline-docs/"


def create_app(title: str, version: str, token: str | None = None, max_body_bytes: int = 32 << 20,
               time_limit_s: float | None = None, on_error=None,
               public_paths: tuple[str, ...] = ("/healthz",), **kw) -> FastAPI:
    """A FastAPI app with JSON errors, a body limit, an optional token and a time limit.

    ``on_error(kind)`` is called for every error answered (the service counts them).
    ``public_paths`` need no token (an entry ending in "/" is a prefix). The OpenAPI page
    (``/docs``) loads Swagger UI from files shipped in ``fastapi-offline``, not from a CDN."""
    from fastapi_offline import FastAPIOffline

    app = FastAPIOffline(title=title, version=version, static_url=DOCS_STATIC.rstrip("/"), **kw)
    public = {p for p in public_paths if not p.endswith("/")}
    prefixes = tuple(p for p in public_paths if p.endswith("/"))
    app.state.token = token
    count = on_error or (lambda kind: None)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        count(e.kind)
        return error_response(e.status, e.kind, e.message, e.details)

    @app.exception_handler(MediaclusterError)
    async def _user_error(request: Request, e: MediaclusterError):
        status = next(s for cls, s in STATUS if isinstance(e, cls))
        count(_kind(e))
        return error_response(status, _kind(e), str(e))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, e: RequestValidationError):
        parts = []
        for err in e.errors()[:5]:
            where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body",))
            parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        count("invalid_request")
        return error_response(422, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        kind = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized",
                413: "too_large"}.get(e.status_code, "http_error")
        count(kind)
        return error_response(e.status_code, kind, str(e.detail))

    @app.exception_handler(Exception)
    async def _bug(request: Request, e: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        count("internal")
        return error_response(500, "internal", f"internal error ({type(e).__name__}); the server log "
                                               "has the traceback")

    @app.middleware("http")
    async def _guards(request: Request, call_next):
        expected = request.app.state.token
        path = request.url.path
        if expected and path not in public and not path.startswith(prefixes):
            given = (request.headers.get("authorization", "").removeprefix("Bearer ").strip()
                     or request.query_params.get("token") or request.cookies.get("mediacluster_token") or "")
            if not hmac.compare_digest(given.encode(), expected.encode()):
                count("unauthorized")
                return error_response(401, "unauthorized", "this server needs its access token "
                                      "(Authorization: Bearer TOKEN, or ?token=TOKEN)")
        length = request.headers.get("content-length")
        if length is not None:
            try:
                too_big = int(length) > max_body_bytes
            except ValueError:
                count("invalid_request")
                return error_response(400, "invalid_request", "bad Content-Length header")
            if too_big:
                count("too_large")
                return error_response(413, "too_large", f"request body of {int(length)} bytes is over "
                                      f"the limit of {max_body_bytes} bytes")
        elif request.method in ("POST", "PUT", "PATCH") and request.headers.get("transfer-encoding"):
            body = b""
            async for chunk in request.stream():
                body += chunk
                if len(body) > max_body_bytes:
                    count("too_large")
                    return error_response(413, "too_large", f"request body is over the limit of "
                                          f"{max_body_bytes} bytes")
            request._body = body  # starlette reads the cached body later
        if time_limit_s is None:
            return await call_next(request)
        try:
            return await asyncio.wait_for(call_next(request), timeout=time_limit_s)
        except TimeoutError:
            count("timeout")
            return error_response(503, "timeout", f"the request took longer than {time_limit_s:g} s")

    return app


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
    except OSError as e:
        sock.close()
        raise ParameterError(f"cannot listen on {host}:{port}: {e.strerror or e}", "port") from None
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


def resolve_token(host: str, token: str | None) -> str | None:
    """The access token a server on ``host`` needs: none on loopback unless given; elsewhere the
    given one or a new random one (printed with the URL)."""
    if token:
        return token
    return None if is_loopback(host) else secrets.token_urlsafe(24)


def run_server(app, host: str = "127.0.0.1", port: int = 0, name: str = "mediacluster",
               log_level: str = "warning", on_listen=None, workers: int = 1,
               token: str | None = None) -> None:
    """Serve ``app`` with uvicorn on a socket bound here; print ``NAME: listening on URL``.

    With ``workers`` > 1, ``app`` is the import string ``"module:factory"`` of a function that
    builds the application; uvicorn starts that many worker processes which share the socket,
    each building its own app (so its own state). ``token`` is the one shown with the URL
    (default: ``app.state.token``)."""
    import uvicorn

    if workers > 1 and not isinstance(app, str):
        raise ParameterError("several workers need the app as an import string 'module:factory'",
                             "workers")
    sock = bind(host, port)
    real_port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{real_port}/"
    if token is None:
        token = getattr(getattr(app, "state", None), "token", None)
    sys.stdout.write(f"{name}: listening on {url}" + (f"?token={token}" if token else "") + "\n")
    sys.stdout.flush()
    if on_listen is not None:
        on_listen(url)
    common = dict(log_level=log_level, access_log=False, lifespan="on", timeout_graceful_shutdown=5)
    if workers > 1:
        from uvicorn.supervisors import Multiprocess

        config = uvicorn.Config(app, factory=True, workers=workers, **common)
        Multiprocess(config, sockets=[sock]).run()
        return
    config = uvicorn.Config(app, **common)
    uvicorn.Server(config).run(sockets=[sock])
