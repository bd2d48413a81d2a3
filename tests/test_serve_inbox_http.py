"""The inbox over HTTP (`serve.inbox_http`) and the uploader's own ids (`item_ids`), as a
moderation team's dashboard uses them: a real `mediacluster serve --keep-uploads` process on
127.0.0.1 with a full and a read-only token; its pages concatenate to `mediacluster inbox`'s
listing, its files are the uploads' bytes, a mark over HTTP is what the CLI shows next, ids
(hostile ones too) go round trip, and bad requests are 4xx while the server keeps serving. An
inbox written before `uploads.item_id` existed opens and gains the column."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx
import numpy as np
import pytest
from test_serve import Server
from test_serve_inbox import metric, rows

from mediacluster.inbox import DB_NAME, FILES, REVIEWED, listing, mark, open_db, summary

TOKEN, READ = "full-token-123456", "read-token-654321"
#: an uploader's id a dashboard might send, at its worst: a path, NUL, a right-to-left override,
#: markup, SQL, an emoji, and the rest up to the 256-character bound
HOSTILE = "../../etc/passwd\x00\u202e<img src=x onerror=alert(1)>'; DROP TABLE uploads; --\U0001f600"
HOSTILE += "x" * (256 - len(HOSTILE))


@pytest.fixture(scope="module")
def fast_run(cifar3_embeddings, tmp_path_factory) -> Path:
    from studio_helpers import make_run

    return make_run(cifar3_embeddings, tmp_path_factory.mktemp("inbox-http") / "run")


def _cli(*args: str, capsys) -> tuple[int, dict]:
    from mediacluster.cli import main

    capsys.readouterr()
    code = main(["inbox", *args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def _raw_get(url: str, path: str, token: str) -> tuple[int, str]:
    """GET ``path`` exactly as given (httpx would resolve ``..`` before sending it)."""
    import http.client
    from urllib.parse import urlsplit

    u = urlsplit(url)
    con = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    try:
        con.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        r = con.getresponse()
        r.read()
        return r.status, r.getheader("content-type") or ""
    finally:
        con.close()


def _pages(c: httpx.Client, state: str, limit: int) -> list[dict]:
    out, after = [], None
    while True:
        r = c.get("/v1/inbox", params={"state": state, "limit": limit, **({"after": after} if after else {})})
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["items"]) <= limit
        out += page["items"]
        after = page["next"]
        if after is None:
            return out


def test_the_inbox_over_http(fast_run, cifar3_dir, cifar3_embeddings, tmp_path, capsys):
    inbox = tmp_path / "inbox"
    s = Server(str(fast_run), "--keep-uploads", str(inbox), "--keep", "all", "--read-token", READ,
               log=tmp_path / "server.log", token=TOKEN)
    full = s.client
    read = httpx.Client(base_url=s.url, timeout=60, headers={"Authorization": f"Bearer {READ}"})
    anon = httpx.Client(base_url=s.url, timeout=60)
    try:
        photos = sorted(cifar3_dir.rglob("*.jpg"))[:5]
        ids = ["post-1", HOSTILE, "", "\u732b 42", "post-1"]  # "" : no id; post-1 twice: two contents
        files = [("files", (f"p{i}.jpg", p.read_bytes(), "image/jpeg")) for i, p in enumerate(photos)]
        r = read.post("/v1/assign", files=files, data={"item_ids": ids})  # predicting: the read token may
        assert r.status_code == 200, r.text
        assert [it["item_id"] for it in r.json()["items"]] == ["post-1", HOSTILE, None, "\u732b 42", "post-1"]
        assert all(it["kept"] == "all" for it in r.json()["items"])
        X = np.asarray(cifar3_embeddings.vectors[:2], dtype="float32")
        r = full.post("/v1/assign", json={"vectors": X.tolist(), "item_ids": ["vec-a", None]})
        assert r.status_code == 200 and [it["item_id"] for it in r.json()["items"]] == ["vec-a", None], r.text
        r = full.post("/v1/assign", files=files[:1])  # no ids at all: as before
        assert r.status_code == 200 and r.json()["items"][0]["item_id"] is None
        assert len(rows(inbox, 8)) == 8

        # tokens: reading needs one of the two, marking the full one
        assert anon.get("/v1/inbox").status_code == 401
        assert anon.post("/v1/inbox/mark", json={"keys": ["post-1"]}).status_code == 401
        first = read.get("/v1/inbox", params={"state": "all"})
        assert first.status_code == 200, first.text
        page = first.json()
        assert page["contents"] == {"pending": 7, "reviewed": 0, "clustered": 0} and page["uploads"] == 8
        assert page["full"] is False and page["max_bytes"] is None
        assert anon.get(page["items"][0]["url"]).status_code == 401
        r = read.post("/v1/inbox/mark", json={"keys": ["post-1"]})
        assert r.status_code == 403 and r.json()["error"]["kind"] == "read_only_token", r.text

        # the pages (2 rows each, by the cursor) concatenate to the CLI's listing, plus each url
        got = _pages(read, "all", 2)
        code, cli = _cli(str(inbox), "--list", "all", "--limit", "100", capsys=capsys)
        assert code == 0 and [{k: v for k, v in it.items() if k != "url"} for it in got] == cli["items"]
        assert len(got) == 7 and [it["seq"] for it in got] == sorted(it["seq"] for it in got)
        by_id = {i: it for it in got for i in it["ids"]}
        assert set(by_id) == {"post-1", HOSTILE, "\u732b 42", "vec-a"}  # the hostile id is data, whole
        assert [it["name"] for it in got if "post-1" in it["ids"]] == ["p0.jpg", "p4.jpg"]
        assert by_id["vec-a"]["file"] is None and by_id["vec-a"]["url"] is None

        # a file's bytes are the upload's; nothing outside files/ is reachable
        for i, p in enumerate(photos):
            row = next(it for it in got if it["name"] == f"p{i}.jpg")
            r = read.get(row["url"])
            assert r.status_code == 200 and r.content == p.read_bytes(), row
            assert r.headers["content-type"] == "image/jpeg" and r.headers["x-content-type-options"] == "nosniff"
        for bad in ("/v1/inbox/files/..%2Finbox.sqlite", "/v1/inbox/files/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
                    "/v1/inbox/files/inbox.sqlite", "/v1/inbox/files/..", "/v1/inbox/files/../inbox.sqlite",
                    "/v1/inbox/files/../../../../etc/passwd", "/v1/inbox/files/nothing.jpg",
                    "/v1/inbox/files/%00", "/v1/inbox/files/" + "a" * 3000):
            status, ctype = _raw_get(s.url, bad, READ)  # as sent: no client folds the dots away
            assert status in (400, 404) and ctype.startswith("application/json"), (bad, status)
        (inbox / FILES / "planted.jpg").write_bytes(b"not one of the inbox's")  # a file the table lacks
        assert read.get("/v1/inbox/files/planted.jpg").status_code == 404

        # mark over HTTP (the full token): per key what happened; the CLI shows it next
        first_post = next(it for it in got if "post-1" in it["ids"])
        r = full.post("/v1/inbox/mark", json={"keys": [HOSTILE, first_post["file"], "nope", HOSTILE,
                                                        by_id["\u732b 42"]["hash"][:10]]})
        assert r.status_code == 200, r.text
        m = r.json()
        assert [k["result"] for k in m["keys"]] == ["marked", "marked", "unknown", "already", "marked"]
        assert m["keys"][0]["key"] == HOSTILE and m["keys"][3]["state"] == REVIEWED
        assert m["marked"] == 3 and m["unknown"] == ["nope"]
        assert m["contents"] == {"pending": 4, "reviewed": 3, "clustered": 0}
        r = full.post("/v1/inbox/mark", json={"keys": ["post-1"], "state": "reviewed"})  # both contents of it
        assert r.json()["keys"][0]["result"] == "marked" and len(r.json()["keys"][0]["hashes"]) == 2
        code, cli = _cli(str(inbox), capsys=capsys)
        assert cli["contents"] == {"pending": 3, "reviewed": 4, "clustered": 0}
        assert {i for it in cli["items"] for i in it["ids"]} == {"vec-a"}
        assert [it["hash"] for it in _pages(read, "reviewed", 500)] == [it["hash"] for it in listing(inbox, REVIEWED)]
        assert metric(s, "mediacluster_inbox_contents", state="reviewed") == 4

        # bad requests: 4xx naming the field, never a 5xx; the server keeps serving
        for body in ({}, {"keys": []}, {"keys": "post-1"}, {"keys": [1]}, {"keys": ["x"], "state": "pending"},
                     {"keys": ["x"], "extra": 1}, {"keys": ["k" * 401]}, ["x"]):
            r = full.post("/v1/inbox/mark", json=body)
            assert r.status_code == 422 and r.json()["error"]["kind"] == "invalid_request", (body, r.text)
        r = full.post("/v1/inbox/mark", content=b'{"keys": ["\\udc80"]}', headers={"content-type": "application/json"})
        assert r.status_code == 422, r.text
        assert full.post("/v1/inbox/mark", content=b"{not json", headers={"content-type": "application/json"}
                         ).status_code == 400
        for params in ({"limit": 0}, {"limit": 501}, {"state": "gone"}, {"after": -1}, {"after": "x"}, {"page": 2}):
            assert read.get("/v1/inbox", params=params).status_code == 422, params
        bad_assign = [({"files": files[:2], "data": {"item_ids": ["one"]}}, "1 ids for 2 files"),
                      ({"files": files[:1], "data": {"item_ids": ["x" * 257]}}, "at most 256"),
                      ({"files": files[:1] + [("item_ids", ("id.txt", b"x", "text/plain"))]}, "text fields"),
                      ({"json": {"vectors": X.tolist(), "item_ids": ["a"]}}, "1 ids for 2 vectors"),
                      ({"json": {"vectors": X.tolist(), "item_ids": [1, 2]}}, "item_ids[0]"),
                      ({"json": {"vectors": X.tolist(), "item_ids": "ab"}}, "item_ids")]
        for kw, said in bad_assign:
            r = full.post("/v1/assign", **kw)
            assert r.status_code == 422 and said in r.json()["error"]["message"], (said, r.text)
        r = full.post("/v1/assign", content=json.dumps({"vectors": X[:1].tolist(), "item_ids": ["\udc80"]}),
                      headers={"content-type": "application/json"})
        assert r.status_code == 422 and "item_ids[0]" in r.text, r.text
        assert s.alive() and read.get("/v1/inbox").status_code == 200
        assert len(rows(inbox)) == 8  # nothing of the refused requests was kept
    finally:
        for c in (read, anon):
            c.close()
        s.stop()


def test_a_service_without_an_inbox_says_how_to_keep_one(fast_run, tmp_path):
    s = Server(str(fast_run), log=tmp_path / "server.log")
    try:
        for method, path, kw in (("GET", "/v1/inbox", {}), ("GET", "/v1/inbox/files/a.jpg", {}),
                                 ("POST", "/v1/inbox/mark", {"json": {"keys": ["a"]}})):
            r = s.client.request(method, path, **kw)
            assert r.status_code == 404 and r.json()["error"]["kind"] == "no_inbox", r.text
            assert "--keep-uploads" in r.json()["error"]["message"]
        assert "/v1/inbox" in s.client.get("/openapi.json").json()["paths"]
    finally:
        s.stop()


#: the tables as `main` wrote them before `uploads.item_id` (inbox.py at 8b00154)
OLD_SCHEMA = [
    "CREATE TABLE stored (hash TEXT PRIMARY KEY, file TEXT, size INTEGER NOT NULL, vector BLOB)",
    """CREATE TABLE uploads (id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, model_version TEXT,
        route TEXT, input TEXT NOT NULL, reason TEXT NOT NULL, cluster INTEGER, name TEXT, status TEXT,
        probability REAL, novelty REAL, novel INTEGER, duplicate_of TEXT, filename TEXT,
        size INTEGER NOT NULL, hash TEXT NOT NULL, file TEXT, pid INTEGER)""",
    "CREATE INDEX uploads_hash ON uploads(hash)",
    """CREATE VIEW contents AS SELECT s.hash AS hash, s.file AS file, s.size AS size, COUNT(u.id) AS count,
        MIN(u.time) AS first_seen, MAX(u.time) AS last_seen
        FROM stored s LEFT JOIN uploads u ON u.hash = s.hash GROUP BY s.hash""",
    "CREATE TABLE reviewed (hash TEXT PRIMARY KEY, how TEXT NOT NULL, time TEXT NOT NULL, run TEXT)",
    "CREATE INDEX stored_file ON stored(file)",
]


def test_an_inbox_without_the_id_column_opens_and_gains_it(cifar3_dir, tmp_path):
    from mediacluster.serve.inbox import Inbox, KeepRule

    inbox = tmp_path / "old"
    (inbox / FILES).mkdir(parents=True)
    con = sqlite3.connect(inbox / DB_NAME)
    for stmt in OLD_SCHEMA:
        con.execute(stmt)
    h = "ab" * 16
    (inbox / FILES / f"old--{h[:16]}.jpg").write_bytes(b"x")
    con.execute("INSERT INTO stored VALUES (?, ?, 1, NULL)", (h, f"{FILES}/old--{h[:16]}.jpg"))
    con.execute("INSERT INTO uploads (time, input, reason, filename, size, hash, file) VALUES "
                "('2026-01-01T00:00:00Z', 'image', 'novel', 'old.jpg', 1, ?, ?)", (h, f"{FILES}/old--{h[:16]}.jpg"))
    con.commit()
    con.close()
    # a reader first (GET /v1/inbox, /metrics): it migrates, and the old row has no id
    assert [(it["name"], it["ids"]) for it in listing(inbox)] == [("old.jpg", [])]
    cols = {r[1] for r in sqlite3.connect(inbox / DB_NAME).execute("PRAGMA table_info(uploads)")}
    assert "item_id" in cols
    box = Inbox(inbox, KeepRule(frozenset({"all"})))  # the service's writer on the migrated table
    box.offer("v1", "assign", "image", [{"filename": "new.jpg", "item_id": "post 9", "probability": 0.9}],
              datas=[sorted(cifar3_dir.rglob("*.jpg"))[0].read_bytes()])
    box.close()
    assert [it["ids"] for it in listing(inbox)] == [[], ["post 9"]]
    assert mark(inbox, ["post 9"], detail=True)["keys"][0]["result"] == "marked"
    assert summary(inbox)["contents"] == {"pending": 1, "reviewed": 1, "clustered": 0}
    open_db(inbox).close()  # opening again changes nothing
    assert len(listing(inbox, "all")) == 2
