"""Prometheus metrics for a web app: requests by route and status, a latency histogram, errors
by kind, in the Prometheus text format (``prometheus_client``).

One :class:`HttpMetrics` per app. ``metrics.install(app)`` after ``create_app`` wraps the whole
app (outermost, so requests refused by the token or body-limit guards are counted too);
``create_app(on_error=metrics.error)`` counts every error answered, by its ``kind``;
``metrics.response()`` is the body of a ``/metrics`` endpoint. Apps add their own metrics to
``metrics.registry``.

Several worker processes: when ``PROMETHEUS_MULTIPROC_DIR`` names an empty folder before the
workers start (``multiprocess_dir()`` makes one), prometheus_client keeps every value in files
there and ``response()`` sums them over the workers, so any worker answers for all. One metric
is kept per worker instead: ``PREFIX_worker_requests``, the requests each worker process
answered, by route, labelled ``pid`` (how the load is spread, and that every worker answers).
It is a "live" gauge (``liveall``): a worker that ended takes its sample with it, by
``multiprocess.mark_process_dead`` where it ends (``close()``, in the app's lifespan) and, for a
worker that could run nothing more (killed; uvicorn starts another in its place), at the next
``/metrics`` of any worker (``prune_dead_workers``: the processes with live-gauge files that no
longer run). The counters of an ended worker stay in the sums. In one process it has no ``pid``.
"""

from __future__ import annotations

import glob
import os
import time

from starlette.routing import Match

from ..fileio import pid_alive

#: latency buckets (seconds): fine around the milliseconds a model call takes, coarse above
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.06, 0.08, 0.1,
                   0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str:
    """Create a private folder for multi-process metrics and point ``PROMETHEUS_MULTIPROC_DIR``
    at it (call in the parent before the workers start; they inherit the environment)."""
    import tempfile

    d = tempfile.mkdtemp(prefix="mediacluster-metrics-")
    os.environ[MULTIPROC_ENV] = d
    return d


class HttpMetrics:
    """Request counts, latency and errors of one app (``prefix`` starts every metric name)."""

    def __init__(self, prefix: str = "mediacluster"):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.prefix = prefix
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(f"{prefix}_http_requests", "HTTP requests answered, by route "
                                "template, method and status code", ["route", "method", "status"],
                                registry=self.registry)
        self.latency = Histogram(f"{prefix}_http_request_duration_seconds", "Time from the "
                                 "request's arrival to the end of its response, by route template",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.errors = Counter(f"{prefix}_http_errors", "Errors answered, by kind (the 'kind' of "
                              "the JSON error body)", ["kind"], registry=self.registry)
        # a gauge, not a counter: prometheus_client sums a counter over the worker processes,
        # a gauge of mode "liveall" keeps one sample per running process, labelled pid
        self.worker = Gauge(f"{prefix}_worker_requests", "HTTP requests answered by each running worker "
                            "process (--workers N: one sample per process, labelled pid; the other "
                            "metrics are summed over the processes), by route template", ["route"],
                            registry=self.registry, multiprocess_mode="liveall")

    def error(self, kind: str) -> None:
        self.errors.labels(kind).inc()

    def install(self, app) -> None:
        """Measure every request of ``app`` (call after the app's own middleware is added)."""
        app.add_middleware(_Measure, metrics=self, router=app.router)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        self.worker.labels(route).inc()

    def close(self) -> None:
        """This process ends: its live gauges' samples go (several workers; nothing otherwise)."""
        path = os.environ.get(MULTIPROC_ENV)
        if path:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid(), path)

    def render(self, accept: str | None = None, names: list[str] | None = None) -> tuple[bytes, str]:
        """``(body, content type)`` of the exposition, as prometheus_client's own handler makes
        it: the format the ``Accept`` header asks for (Prometheus text, or OpenMetrics), only the
        samples of ``names`` when given (its ``name[]`` query parameter)."""
        from prometheus_client.exposition import choose_encoder

        reg = self.registry
        if path := os.environ.get(MULTIPROC_ENV):
            from prometheus_client import CollectorRegistry, multiprocess

            prune_dead_workers(path)
            reg = CollectorRegistry()
            multiprocess.MultiProcessCollector(reg)
        if names:
            reg = reg.restricted_registry(names)
        encoder, ctype = choose_encoder(accept or "")
        return encoder(reg), ctype

    def response(self, request=None):
        """The body of a ``/metrics`` endpoint for ``request`` (its ``Accept`` header and
        ``name[]`` parameters; plain Prometheus text of every metric without one)."""
        from starlette.responses import Response

        accept = names = None
        if request is not None:
            accept = request.headers.get("accept")
            names = request.query_params.getlist("name[]") or None
        body, ctype = self.render(accept, names)
        return Response(body, media_type=ctype)


def prune_dead_workers(path: str) -> list[int]:
    """``multiprocess.mark_process_dead`` for each process that left live-gauge files in
    ``path`` (the server's private folder: only its own workers write there) and no longer runs,
    such as a worker killed and replaced by uvicorn; returns their pids."""
    from prometheus_client import multiprocess

    pids = set()
    for f in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        pid = os.path.basename(f)[:-3].rsplit("_", 1)[-1]
        if pid.isdigit():
            pids.add(int(pid))
    dead = sorted(p for p in pids if p != os.getpid() and not pid_alive(p))
    for pid in dead:
        try:
            multiprocess.mark_process_dead(pid, path)
        except FileNotFoundError:  # another worker's /metrics removed them first
            pass
    return dead


class _Measure:
    """Plain ASGI middleware (no per-request task like ``BaseHTTPMiddleware``): times each HTTP
    request and labels it with its route template, never the raw path (bounded label values)."""

    def __init__(self, app, metrics: HttpMetrics, router=None):
        self.app = app
        self.metrics = metrics
        self.router = router

    def template(self, scope: dict, path: str, root_path: str) -> str:
        """The route template of a request. FastAPI's own routes put themselves in the scope;
        Starlette's plain ones (``/openapi.json``, the docs page's static files) and requests the
        guards answer before routing (401, 413) do not: they are matched here, as the router
        would match them (a full match first, then one that only the method refuses)."""
        route = scope.get("route")
        if getattr(route, "path", None):
            return route.path
        if self.router is not None:
            probe = {"type": "http", "path": path, "root_path": root_path, "method": scope.get("method", "")}
            partial = None
            for r in self.router.routes:
                match, _ = r.matches(probe)
                if match == Match.FULL:
                    return r.path
                if match == Match.PARTIAL and partial is None:
                    partial = r.path
            if partial:
                return partial
        return "unmatched"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [499]  # no answer sent: the client went away first (nginx's "client closed request")
        path, root_path = scope["path"], scope.get("root_path", "")  # routing may change them

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except BaseException:
            if status[0] == 499:
                status[0] = 500
            raise
        finally:
            self.metrics.observe(self.template(scope, path, root_path), scope.get("method", ""),
                                 status[0], time.perf_counter() - t0)
