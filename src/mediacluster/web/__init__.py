"""The web stack shared by the studio and the service: FastAPI + uvicorn.

``create_app`` gives a FastAPI application with the house rules: every error answered as JSON
``{"error": {"kind", "message"}}`` with a 4xx status for what the client sent (a
``MediaclusterError`` included) and 500 for a bug (logged; the server keeps serving), a request
body limit (413), an optional access token (401), and a per-request time limit (503).
``run_server`` binds a socket itself (port 0 = a free port), prints the URL it really listens
on, then hands the socket to uvicorn; a host other than loopback needs a token. ``StrictBody``
is the base of every JSON request body the apps read: unknown keys and values of another type
are a 422 naming the field (``check_body`` for a body a handler parses itself); so is a query
parameter the matched route does not declare (``token`` is every route's; ``create_app(free_query=)``
names the routes that take any).
"""

from .app import ApiError, StrictBody, check_body, create_app, run_server, whole

__all__ = ["ApiError", "StrictBody", "check_body", "create_app", "run_server", "whole"]
