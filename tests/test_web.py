"""The shared web stack's listening socket (web.app.bind)."""

from __future__ import annotations

import asyncio
import socket

import pytest
from conftest import sigint_default

from mediacluster.web.app import StrictBody, bind


def test_accepted_connections_send_without_waiting_for_acks():
    """asyncio turns Nagle's algorithm off (TCP_NODELAY) only on sockets that say they are TCP;
    a listening socket made with proto 0 left it on, and every response then waited for the
    client's delayed ACK (~44 ms per request on loopback)."""
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    seen: list[int] = []

    async def main():
        done = asyncio.Event()

        def on_client(reader, writer):
            s = writer.get_extra_info("socket")
            seen.append(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()
            done.set()

        server = await asyncio.start_server(on_client, sock=sock)
        async with server:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            await asyncio.wait_for(done.wait(), 10)
            w.close()

    asyncio.run(main())
    assert seen and seen[0] != 0


def _serve(app):
    """``app`` under uvicorn on a free loopback port in a thread; returns (port, server)."""
    import threading
    import time

    import uvicorn

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan="off"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    t0 = time.time()
    while not server.started:
        assert time.time() - t0 < 30, "the server did not start"
        time.sleep(0.02)
    return sock.getsockname()[1], server


def _responses(port: int, paths: list[str]) -> list[bytes]:
    """Each path requested in turn on ONE keep-alive connection; the raw answers (b"" once the
    server has closed the connection)."""
    out = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        for p in paths:
            try:
                s.sendall(f"GET {p} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
                data = b""
                while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
                        data.split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0]):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            except (OSError, IndexError):
                data = b""
            out.append(data)
    return out


def test_a_bug_answers_500_and_keeps_the_connection():
    """A bug in an endpoint gets a 500 JSON error and the server goes on serving, on the SAME
    connection too: Starlette's outermost error middleware re-raises after answering, and uvicorn
    then closed the keep-alive connection, so a client's next request on it failed with a reset
    (seen in the studio: the request after a 500 got "Connection reset by peer")."""
    from mediacluster.web import create_app

    kinds = []
    app = create_app("t", "1", on_error=kinds.append)

    @app.get("/boom")
    def boom():
        raise RuntimeError("a bug")

    @app.get("/ok")
    def ok():
        return {"ok": True}

    port, server = _serve(app)
    try:
        first, second, third = _responses(port, ["/boom", "/ok", "/boom"])
    finally:
        server.should_exit = True
    assert first.startswith(b"HTTP/1.1 500 ") and b'"kind":"internal"' in first, first[:300]
    assert second.startswith(b"HTTP/1.1 200 ") and b'{"ok":true}' in second, second[:300]
    assert third.startswith(b"HTTP/1.1 500 "), third[:300]
    assert kinds == ["internal", "internal"]


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_ctrl_c_stops_a_server_cleanly(tmp_path, workers):
    """Ctrl+C (SIGINT) is how a person stops `serve` / `studio`: exit 0 and "stopped", not the
    batch commands' "interrupted; ... re-run the same command to resume" and 130; also with
    several worker processes (uvicorn's supervisor stops them)."""
    import os
    import re
    import signal
    import subprocess
    import sys

    import numpy as np

    from mediacluster.pipeline import Pipeline

    X = np.random.default_rng(0).normal(size=(60, 8)).astype(np.float32)
    pipe = Pipeline(outliers=None, random_state=0).with_params(
        {"reducer": "pca", "reducer__n_components": 2, "clusterer": "kmeans", "clusterer__n_clusters": 2})
    pipe.fit(X).save(tmp_path / "model")
    proc = subprocess.Popen([sys.executable, "-m", "mediacluster", "serve", str(tmp_path / "model"), "--port", "0",
                             "--workers", str(workers)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=sigint_default)  # Ctrl+C as a terminal delivers it
    try:
        lines = []
        while not any("listening on" in x for x in lines) and (line := proc.stdout.readline()):
            lines.append(line)
        assert re.search(r"listening on http://127\.0\.0\.1:\d+/", "".join(lines)), "".join(lines)
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=60)[0]
    finally:  # a server that did not stop must not outlive the test
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, (proc.returncode, out)
    assert "stopped" in out and "resume" not in out, out


def refuses_unknown_query(c, headers: dict | None = None, free: tuple = ()) -> int:
    """Every operation ``c``'s server describes in /openapi.json, asked with one query parameter
    it does not take (``zzz``): a 422 naming it and listing exactly the query parameters the
    description gives the operation (the check reads the route's declaration, the description
    is made from the same one); returns the number of operations asked. Path parameters are
    filled with a value the path pattern takes (the check runs before the handler); ``free``:
    the paths that opt out."""
    import re

    doc = c.get("/openapi.json").json()
    n = 0
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if path in free:
                continue
            declared = sorted(p["name"] for p in op.get("parameters", []) if p["in"] == "query")
            url = re.sub(r"\{[^}]+\}", "0", path)
            r = c.request(method.upper(), url, params={"zzz": "1"}, headers=headers or {})
            assert r.status_code == 422, (method, path, r.status_code, r.text[:300])
            err = r.json()["error"]
            assert err["kind"] == "invalid_request" and err["parameters"] == ["zzz"], (path, err)
            assert err["accepted"] == declared, (method, path, err, declared)
            assert "unknown query parameter 'zzz'" in err["message"] and path in err["message"], err
            n += 1
    return n


def test_an_unknown_query_parameter_is_a_422_naming_it_on_every_route():
    """A query parameter the route does not declare was ignored (`?levle=2` answered as if it
    were absent): refused with a 422 naming it, the route's parameters and the closest one, on
    the app's routes, Starlette's own (/openapi.json, the docs page) too; the access token is every
    route's; a route that opts out (free_query) takes anything, the docs page's files by default
    (a cache-busting ?v=2 on a file is no typo); no route: 404."""
    import httpx
    from fastapi import Query

    from mediacluster.web import create_app
    from mediacluster.web.app import FREE_QUERY

    kinds = []
    app = create_app("t", "1", on_error=kinds.append, free_query=FREE_QUERY + ("/free",))

    @app.get("/items/{i}")
    def items(i: int, limit: int = 10, order: str = Query("a", alias="sort-order")):
        return {"i": i, "limit": limit, "order": order}

    @app.post("/items/{i}")
    def change(i: int):
        return {"changed": i}

    @app.get("/free")
    def free():
        return {"free": True}

    port, server = _serve(app)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            assert c.get("/items/3?limit=5&sort-order=b").json() == {"i": 3, "limit": 5, "order": "b"}
            r = c.get("/items/3?limt=5")
            assert r.status_code == 422, r.text
            err = r.json()["error"]
            assert err == {"kind": "invalid_request", "parameters": ["limt"], "accepted": ["limit", "sort-order"],
                           "message": "unknown query parameter 'limt' (did you mean 'limit'?): /items/{i} "
                                      "takes the query parameters limit, sort-order"}
            r = c.get("/items/3", params={"order": "b", "x": ""})  # the field's name, not its alias; a blank one
            assert r.status_code == 422 and r.json()["error"]["parameters"] == ["order", "x"], r.text
            r = c.post("/items/3?dry_run=1")
            assert r.status_code == 422 and "/items/{i} takes no query parameters" in r.text, r.text
            assert c.post("/items/3").json() == {"changed": 3}
            assert c.get("/items/3?token=abc").status_code == 200  # the stack's parameter
            for path in ("/openapi.json", "/docs"):
                assert c.get(path).status_code == 200, path
                r = c.get(path, params={"v": "2"})
                assert r.status_code == 422 and r.json()["error"]["parameters"] == ["v"], (path, r.text)
            assert c.get("/static-offline-docs/swagger-ui.css?v=2").status_code == 200  # a file
            assert c.get("/free?anything=1").json() == {"free": True}
            assert c.get("/docs/oauth2-redirect?code=x&state=y").status_code == 200
            assert c.get("/nope?x=1").status_code == 404
            assert c.put("/items/3?x=1").status_code == 405  # the method is what is wrong
            assert refuses_unknown_query(c, free=("/free",)) == 2  # GET and POST /items/{i}
    finally:
        server.should_exit = True
    assert kinds.count("invalid_request") >= 5


def test_every_answer_names_its_request():
    """Every answer of the stack carries an X-Request-ID, refusals and errors too: the client's
    own id when it sent a sane one (a proxy's trace id joins the server's log), else a new one
    per request; a header that is not a sane token is replaced, never echoed."""
    import httpx

    from mediacluster.web import create_app

    app = create_app("t", "1", token="tok", max_body_bytes=100, public_paths=("/open",))

    @app.get("/open")
    def open_():
        return {"ok": True}

    @app.get("/data")
    def data():
        return {"ok": True}

    port, server = _serve(app)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            auth = {"Authorization": "Bearer tok"}
            answers = [c.get("/open"), c.get("/open"), c.get("/data"),           # ok, ok, 401
                       c.get("/data?limt=1", headers=auth),                      # 422 (query)
                       c.post("/data", headers=auth, content=b"x" * 200),        # 413
                       c.get("/nowhere", headers=auth)]                          # 404
            assert [r.status_code for r in answers] == [200, 200, 401, 422, 413, 404]
            ids = [r.headers.get("x-request-id") for r in answers]
            assert all(i and len(i) == 32 and int(i, 16) >= 0 for i in ids), ids
            assert len(set(ids)) == len(ids), ids
            mine = c.get("/data", headers={**auth, "X-Request-ID": "trace-0af7651916cd43dd"})
            assert mine.status_code == 200 and mine.headers["x-request-id"] == "trace-0af7651916cd43dd"
            odd = c.get("/open", headers={"X-Request-ID": "two words " + "x" * 200})
            assert odd.headers["x-request-id"] != "two words" and len(odd.headers["x-request-id"]) == 32
    finally:
        server.should_exit = True


class _Rename(StrictBody):
    cluster: int
    name: str


def test_a_body_that_is_not_json_is_a_400_saying_where_as_the_service_says_it():
    """A JSON body that does not parse, on a route whose body FastAPI validates (the studio's
    edits), is a 400 ``invalid_json`` saying what and where, as the service's own parsing
    answers it; pydantic's words were a 422 "0: JSON decode error"."""
    import httpx

    from mediacluster.web import create_app

    app = create_app("t", "1")

    @app.post("/edits")
    def edits(body: _Rename):
        return {"ok": body.name}

    port, server = _serve(app)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            h = {"content-type": "application/json"}
            r = c.post("/edits", content=b'{"cluster": 3, "name": "x"', headers=h)
            assert r.status_code == 400, r.text
            err = r.json()["error"]
            assert err["kind"] == "invalid_json" and "not valid JSON" in err["message"], err
            assert "(char 26)" in err["message"] and "delimiter" in err["message"], err
            ok = c.post("/edits", content=b'{"cluster": 3, "name": "x"}', headers=h)
            assert ok.status_code == 200 and ok.json() == {"ok": "x"}
            typo = c.post("/edits", content=b'{"cluster": 3, "nmae": "x"}', headers=h)
            assert typo.status_code == 422 and "nmae" in typo.json()["error"]["message"]
    finally:
        server.should_exit = True


def test_a_read_only_token_looks_but_does_not_change():
    """The stack's read-only token (the studio's `--read-token`, the service's): GET answers, a
    POST (an edit) is a 403 naming the access token, unless the app lists it as a read (the
    service's predictions); a read-only token without an access token, or equal to it, is refused."""
    import httpx

    from mediacluster.errors import ParameterError
    from mediacluster.web import create_app

    app = create_app("t", "1", token="full", read_token="look", read_posts=("/ask",))

    @app.get("/data")
    def data():
        return {"ok": True}

    @app.post("/data")
    def change():
        return {"changed": True}

    @app.post("/ask")
    def ask():
        return {"answer": 42}

    port, server = _serve(app)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            look, full = {"Authorization": "Bearer look"}, {"Authorization": "Bearer full"}
            assert c.get("/data", headers=look).status_code == 200
            assert c.post("/ask", headers=look).status_code == 200
            r = c.post("/data", headers=look)
            assert r.status_code == 403 and r.json()["error"]["kind"] == "read_only_token", r.text
            assert "POST /data" in r.json()["error"]["message"] and "look" not in r.text
            assert c.post("/data", headers=full).json() == {"changed": True}
            assert c.get("/data").status_code == 401
            # what the server would refuse anyway is said as to the access token: no such method, no such path
            r = c.post("/ask2", headers=look)
            assert r.status_code == 404, r.text
            r = c.delete("/data", headers=look)
            assert r.status_code == 405 and r.headers["allow"] == "GET, POST", r.text
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, cookies={"mediacluster_token": "look"}) as c:
            assert c.get("/data").status_code == 200 and c.post("/data").status_code == 403  # the page's cookie
    finally:
        server.should_exit = True
    for bad in ({"read_token": "look"}, {"token": "same", "read_token": "same"}):
        with pytest.raises(ParameterError, match="read-only token"):
            create_app("t", "1", **bad)


def test_a_token_that_cannot_travel_in_a_header_is_refused_and_any_bearer_spelling_is_read(capsys):
    """A token is sent as `Authorization: Bearer TOKEN`: a header carries ASCII (the server reads
    its bytes as Latin-1) and loses a token's leading and trailing spaces, so `--token 'päss'` or
    `--read-token ' r'` was taken and then refused on every request that sent it in the header
    (only `?token=` worked). Such a token is refused at the start, naming the flag. The scheme
    is case-insensitive (RFC 9110): `bearer TOKEN` was a 401."""
    import httpx

    from mediacluster.cli import main
    from mediacluster.errors import ParameterError
    from mediacluster.web import create_app

    app = create_app("t", "1", token="full-1")

    @app.get("/data")
    def data():
        return {"ok": True}

    port, server = _serve(app)
    try:
        for auth in ("Bearer full-1", "bearer full-1", "BEARER  full-1"):
            r = httpx.get(f"http://127.0.0.1:{port}/data", headers={"Authorization": auth}, timeout=10)
            assert r.status_code == 200, (auth, r.text)
        assert httpx.get(f"http://127.0.0.1:{port}/data", headers={"Authorization": "Basic full-1"},
                         timeout=10).status_code == 401
    finally:
        server.should_exit = True
    for bad in ({"token": "päss"}, {"token": " full"}, {"token": "full\n"},
                {"token": "full", "read_token": "wörd"}):
        with pytest.raises(ParameterError, match="token"):
            create_app("t", "1", **bad)
    for flag, args in (("--token", ["--token", "päss wörd"]),
                       ("--read-token", ["--token", "full", "--read-token", " r"])):
        assert main(["serve", "/nonexistent/run", *args]) == 2
        err = capsys.readouterr().err
        assert flag in err and "ASCII" in err, err


def test_a_given_token_in_the_opened_url_is_percent_encoded():
    """The studio opens (and the service prints) `URL?token=TOKEN`; a given token holding `+`,
    `&`, `#` or `%` was put in as it is, so the page opened with another token (`+` reads as a
    space, `&` and `#` end it) and every call it made got a 401."""
    import httpx

    from mediacluster.web import create_app
    from mediacluster.web.app import token_query

    token = "a+b&c#d%e f"
    app = create_app("t", "1", token=token)

    @app.get("/data")
    def data():
        return {"ok": True}

    port, server = _serve(app)
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/data{token_query(token)}", timeout=10)
        assert r.status_code == 200, r.text
        assert httpx.get(f"http://127.0.0.1:{port}/data?token={token}", timeout=10).status_code == 401
    finally:
        server.should_exit = True


@pytest.mark.parametrize("port", [70000, -1])
def test_a_port_out_of_range_is_a_parameter_error_not_a_crash(port):
    """`serve --port 70000` (or -1) was an internal error (socket's OverflowError) after the
    model had loaded; it is the same clear `--port` refusal as a port in use."""
    from mediacluster.errors import ParameterError

    with pytest.raises(ParameterError, match=f"cannot listen on 127.0.0.1:{port}") as e:
        bind("127.0.0.1", port)
    assert e.value.param == "port"


def test_head_is_answered_as_get_without_the_body():
    """FastAPI's GET routes took no HEAD: `HEAD /healthz` (an uptime monitor's default probe,
    `curl -I`) was a 405, though a server must answer HEAD where it answers GET (RFC 9110 9.1).
    Now the GET's status and headers, no body; the token guard treats it as a read."""
    import httpx

    from mediacluster.web import create_app

    app = create_app("t", "1", token="full", read_token="look", public_paths=("/healthz",))

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.get("/data")
    def data():
        return {"ok": True}

    @app.post("/change")
    def change():
        return {"changed": True}

    port, server = _serve(app)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            got, head = c.get("/healthz"), c.head("/healthz")
            assert head.status_code == 200 and head.content == b"", head
            assert head.headers["content-length"] == got.headers["content-length"]
            assert head.headers["content-type"] == got.headers["content-type"]
            assert c.head("/data", headers={"Authorization": "Bearer look"}).status_code == 200
            assert c.head("/data").status_code == 401
            assert c.head("/change", headers={"Authorization": "Bearer full"}).status_code == 405
            assert c.get("/data", headers={"Authorization": "Bearer look"}).json() == {"ok": True}  # same connection
    finally:
        server.should_exit = True


@pytest.mark.parametrize("flag", ["--max-body-mb", "--max-file-mb", "--keep-max-mb"])
def test_a_limit_too_large_to_count_in_bytes_is_refused_by_name(flag, capsys):
    """`serve --max-body-mb 1e308` (an operator's "no limit") passed the argument check and then
    was an internal error (OverflowError: MiB times 2**20 is infinite) after the model loaded."""
    from mediacluster.cli import main

    with pytest.raises(SystemExit) as e:
        main(["serve", "/nonexistent/run", flag, "1e308"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and "1e308" in err, err


def test_an_output_error_is_answered_by_its_cause_full_disk_507_read_only_403(tmp_path):
    """Every OutputError was a 507 Insufficient Storage, a read-only run folder too (its fix is
    a writable folder, not free space). Now a full disk is 507, a read-only folder or file
    (also SQLite's "readonly", as the edit log raises it) 403, a file where a folder goes 409;
    each message names the file. Real writes: a full tmpfs, a read-only tmpfs, a read-only
    SQLite connection."""
    import sqlite3
    import subprocess

    import httpx

    from mediacluster.errors import OutputError
    from mediacluster.fileio import atomic_path
    from mediacluster.web import create_app

    full, ro = tmp_path / "full", tmp_path / "ro"
    mounted = []
    for d, opts in ((full, "size=16k"), (ro, "ro,size=16k")):
        d.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(d)], capture_output=True).returncode:
            for m in mounted:
                subprocess.run(["umount", str(m)], capture_output=True)
            pytest.skip("no permission to mount a small or read-only file system")
        mounted.append(d)
    (tmp_path / "way").write_text("a file where a folder goes")
    db = tmp_path / "edits.sqlite"
    sqlite3.connect(db).executescript("CREATE TABLE t (x); INSERT INTO t VALUES (1);").close()
    try:
        app = create_app("t", "1")
        where = {"full": full / "big.bin", "ro": ro / "x.bin", "way": tmp_path / "way" / "x.bin"}

        @app.post("/write/{to}")
        def write(to: str):
            with atomic_path(where[to]) as tmp:
                with open(tmp, "wb") as f:
                    f.write(b"x" * 64 * 1024)
            return {"ok": True}

        @app.post("/edit")
        def edit():
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                con.execute("INSERT INTO t VALUES (2)")
            except sqlite3.OperationalError as e:
                raise OutputError(f"cannot write {db}: {e}; this edit was not recorded") from e
            finally:
                con.close()

        port, server = _serve(app)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
                for path, status, named in (("/write/full", 507, where["full"]), ("/write/ro", 403, where["ro"]),
                                            ("/write/way", 409, where["way"]), ("/edit", 403, db)):
                    r = c.post(path)
                    err = r.json()["error"]
                    assert (r.status_code, err["kind"]) == (status, "output"), (path, r.text)
                    assert str(named) in err["message"], (path, r.text)
        finally:
            server.should_exit = True
    finally:
        for m in mounted:
            subprocess.run(["umount", "-l", str(m)], capture_output=True)
