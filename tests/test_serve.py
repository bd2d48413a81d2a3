"""The service, as a client sees it: a real `mediacluster serve` process on a free loopback port,
spoken to over HTTP. Every endpoint, every kind of bad input (the server stays up), a model switch
while a client keeps sending (zero failures), /metrics as Prometheus text, and answers equal to
``Pipeline.predict_details`` on the same items."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from broken_media import jpeg_bytes, make_broken, photo

from mediacluster.pipeline import Pipeline
from mediacluster.stages import build as make_stage

ENCODER = "efficientnet-lite0"
TOKEN = "test-token-7f3a"
LIMITS = ["--max-files", "6", "--max-vectors", "100", "--max-file-mb", "1", "--max-body-mb", "2",
          "--time-limit", "6"]


pytestmark = pytest.mark.usefixtures("one_blas_thread")  # small matrices: see conftest


def fast_pipeline(k: int = 3) -> Pipeline:
    return Pipeline(reducer=make_stage("reducer", "pca", {"n_components": 8}),
                    clusterer=make_stage("clusterer", "kmeans", {"n_clusters": k}), reference_dims=64)


@pytest.fixture(scope="module")
def run_dir(cifar3_embeddings, tmp_path_factory) -> Path:
    """A run folder with a saved model, as `cluster --save-model` writes it."""
    from mediacluster.workflow import publish_run

    out = tmp_path_factory.mktemp("serve") / "run"
    pipe = fast_pipeline().fit(cifar3_embeddings.vectors)
    publish_run(out, cifar3_embeddings, pipe, save_model=True)
    assert (out / "models" / "v0001" / "model.json").exists()
    return out


@pytest.fixture(scope="module")
def tag_model(cifar3_embeddings, tmp_path_factory) -> Path:
    """A tag model trained on the same vectors (folder labels: airplane / frog / truck)."""
    from mediacluster.encoders import get_encoder
    from mediacluster.tags import TagClassifier, Tagger

    clf = TagClassifier(model="logreg", precision=0.9).fit(cifar3_embeddings.vectors,
                                                           list(cifar3_embeddings.labels))
    folder = tmp_path_factory.mktemp("tagger")
    Tagger(clf, encoder=ENCODER, encoder_id=get_encoder(ENCODER).id).save(folder)
    return folder


class Server:
    """`python -m mediacluster serve ...` in a child process; URL read from its first line."""

    def __init__(self, *args: str, log: Path, token: str | None = None, command: list[str] | None = None):
        self.log = open(log, "w")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        extra = ["--token", token] if token else []
        command = command or [sys.executable, "-m", "mediacluster"]
        self.proc = subprocess.Popen([*command, "serve", *args, *extra, "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        self.url = None
        deadline = time.monotonic() + 240
        lines = []
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "listening on " in line:
                self.banner = line
                self.url = line.split("listening on ", 1)[1].split()[0].split("?")[0].rstrip("/")
                break
        if self.url is None:
            self.stop()
            raise AssertionError(f"server did not start: {''.join(lines)}\n{log.read_text()}")
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # keep the pipe drained
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=self.url, timeout=60, headers=self.headers)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def server(run_dir, tag_model, tmp_path_factory):
    s = Server(str(run_dir), "--tags", str(tag_model), "--poll", "0.2", *LIMITS,
               log=tmp_path_factory.mktemp("serve-log") / "server.log", token=TOKEN)
    yield s
    s.stop()
    assert s.proc.returncode in (0, -15), s.proc.returncode


@pytest.fixture(scope="module")
def images(cifar3_dir) -> list[Path]:
    return [p for c in ("airplane", "frog", "truck") for p in sorted((cifar3_dir / c).glob("*.jpg"))[:2]]


def upload(paths) -> list:
    return [("files", (Path(p).name, Path(p).read_bytes(), "image/jpeg")) for p in paths]


def expected(run_dir: Path, version: str, X: np.ndarray) -> dict:
    return Pipeline.load(run_dir / "models" / version).predict_details(X)


def check_items(items: list[dict], det: dict, names: dict | None = None, atol: float = 2e-6) -> None:
    """The service's items against predict_details (answers are rounded to 6 decimals)."""
    assert [it["cluster"] for it in items] == det["labels"].tolist()
    assert [it["assigned_cluster"] for it in items] == det["cluster"].tolist()
    assert [it["status"] for it in items] == list(det["status"])
    assert [it["novel"] for it in items] == det["novel"].tolist()
    assert all(it["novelty"] is not None for it in items)  # fitted by this code: calibrated
    np.testing.assert_allclose([it["novelty"] for it in items], det["novelty"], atol=atol)
    assert [it["outlier"] for it in items] == (det["labels"] == -2).tolist()
    np.testing.assert_allclose([it["probability"] for it in items], det["probabilities"], atol=atol)
    np.testing.assert_allclose([it["confidence"] for it in items], det["confidence"], atol=atol)
    for it in items:
        assert it["path"] == [] and it["duplicate_of"] is None  # a flat model without a dup index
        if names is not None:
            assert it["name"] == names.get(it["cluster"])


def test_a_tag_model_reading_vectors_of_another_size_is_refused_when_the_model_loads(tmp_path):
    """The tag model must read the model's vectors: one trained on 8-d vectors beside a model of
    16-d ones is refused by name when the service loads, not at its first request (where every
    answer would fail on the classifier's shape check)."""
    from mediacluster.errors import ParameterError
    from mediacluster.serve.model import ModelHolder
    from mediacluster.tags import TagClassifier, Tagger

    rng = np.random.default_rng(0)
    fast_pipeline(2).fit(rng.normal(size=(80, 16)).astype(np.float32)).save(tmp_path / "m")
    labels = ["a", "b"] * 40
    for dim, ok in ((16, True), (8, False)):
        clf = TagClassifier(model="logreg", precision=0.9).fit(rng.normal(size=(80, dim)).astype(np.float32), labels)
        if ok:
            assert ModelHolder(tmp_path / "m", tagger=Tagger(clf, encoder=None)).current.tagger is not None
        else:
            with pytest.raises(ParameterError, match="reads 8-d vectors, the model 16-d"):
                ModelHolder(tmp_path / "m", tagger=Tagger(clf, encoder=None))


# -- endpoints -----------------------------------------------------------------------------------


def test_model_clusters_health_docs(server, run_dir):
    c = server.client
    assert c.get("/healthz").json() == {"status": "ok"}
    assert c.get("/readyz").json()["status"] == "ready"
    m = c.get("/v1/model").json()
    assert m["version"] == "v0001" and m["encoder"] == ENCODER and m["dim"] == 1280
    assert m["n_clusters"] == 3 and m["n_items"] == 300 and m["created"] and m["run_id"]
    assert m["watching"] == str(run_dir / "models") and m["tags"] == ["airplane", "frog", "truck"]
    cl = c.get("/v1/clusters").json()
    assert cl["model"]["version"] == "v0001" and len(cl["clusters"]) == 3
    assert sum(x["size"] for x in cl["clusters"]) == 300
    assert all(x["name"] for x in cl["clusters"])  # automatic names from the run
    assert cl["levels"] == [{"level": 0, "n_clusters": 3}]
    spec = c.get("/openapi.json").json()
    body = spec["paths"]["/v1/assign"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(body)
    assert {"/v1/clusters", "/v1/model", "/v1/reload", "/healthz", "/readyz", "/metrics"} <= set(spec["paths"])
    assert "novelty" in spec["components"]["schemas"]["Assigned"]["properties"]
    assert "junk" in spec["components"]["schemas"]["Assigned"]["properties"]["status"]["description"]
    assert "audio" in body["multipart/form-data"]["schema"]["properties"]["files"]["description"]
    # the description holds what the handler reads (a client or a fuzzer built from it sends
    # that): 1..--max-files files, 1..--max-vectors vectors of the model's size, float32 numbers
    files = body["multipart/form-data"]["schema"]["properties"]["files"]
    assert (files["minItems"], files["maxItems"]) == (1, 6)
    vectors = body["application/json"]["schema"]["properties"]["vectors"]
    assert (vectors["minItems"], vectors["maxItems"]) == (1, 100)
    assert (vectors["items"]["minItems"], vectors["items"]["maxItems"]) == (1280, 1280)
    limit = vectors["items"]["items"]["exclusiveMaximum"]
    assert np.isfinite(np.float32(np.nextafter(limit, 0))) and limit == -vectors["items"]["items"]["exclusiveMinimum"]
    with np.errstate(over="ignore"):
        assert np.isinf(np.float32(limit))
    # /metrics is described as the text it is, and errors as the JSON they are
    assert set(spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    errors = spec["paths"]["/v1/similar"]["post"]["responses"]
    assert {"400", "401", "413", "415", "422", "503"} <= set(errors)
    assert errors["422"]["content"]["application/json"]["schema"]["required"] == ["error"]
    # the OpenAPI page works offline: Swagger UI comes from the package, not a CDN
    page = c.get("/docs").text
    assert "swagger" in page.lower() and "cdn" not in page.lower()
    js = page.split('src="', 1)[1].split('"', 1)[0]
    assert js.startswith("/static-offline-docs/") and c.get(js).status_code == 200
    # the token: data and metrics need it; probes and the API description do not
    bare = httpx.Client(base_url=server.url, timeout=30)
    for path in ("/v1/model", "/v1/clusters", "/metrics"):
        r = bare.get(path)
        assert r.status_code == 401 and r.json()["error"]["kind"] == "unauthorized", path
        assert r.headers["www-authenticate"] == "Bearer", path  # a 401 names its scheme (RFC 9110)
    assert bare.post("/v1/assign", json={"vectors": [[0.0] * 1280]}).status_code == 401
    for path in ("/healthz", "/readyz", "/docs", "/openapi.json", js):
        assert bare.get(path).status_code == 200, path
    assert bare.get("/v1/model", params={"token": TOKEN}).status_code == 200
    # /metrics counts the API description, its page's files and refused requests under their
    # own routes, not as "unmatched" (which is kept for paths the app does not serve)
    c.get("/v1/nope")
    # a request is counted once its answer has been sent, so a scrape right after a streamed
    # file can come first: read again for a moment until the counts are in
    for _ in range(50):
        req = metric_families(server)["mediacluster_http_requests"].samples
        count = {(s.labels["route"], s.labels["status"]): s.value for s in req if s.name.endswith("_total")}
        if count.get(("/static-offline-docs", "200"), 0) >= 2 and count.get(("unmatched", "404"), 0) >= 1:
            break
        time.sleep(0.1)
    assert count.get(("/openapi.json", "200"), 0) >= 2 and count.get(("/docs", "200"), 0) >= 2, count
    assert count.get(("/static-offline-docs", "200"), 0) >= 2, count
    assert count.get(("/v1/model", "401"), 0) >= 1 and count.get(("/metrics", "401"), 0) >= 1, count
    assert count.get(("unmatched", "404"), 0) >= 1, count
    assert not [k for k in count if k[0] == "unmatched" and k[1] != "404"], count


def test_an_unknown_query_parameter_is_a_422_naming_it(server, cifar3_embeddings):
    """`/v1/similar?levle=2` was answered as if `level` were absent (the level in use), and any
    other route ignored what it does not take: now a 422 naming the parameter, the route's own
    and the closest one, on every operation the service describes; `token` (the access token)
    is taken everywhere, and the service's own parameters as before."""
    from test_web import refuses_unknown_query

    c = server.client
    assert refuses_unknown_query(c) >= 8
    X = cifar3_embeddings.vectors[:2].tolist()
    r = c.post("/v1/similar?k=2&levle=0", json={"vectors": X})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["parameters"] == ["levle"]
    assert err["accepted"] == ["exclude", "k", "level", "offset", "per_cluster", "same_cluster"]
    assert err["message"] == ("unknown query parameter 'levle' (did you mean 'level'?): /v1/similar takes "
                              "the query parameters exclude, k, level, offset, per_cluster, same_cluster "
                              "(and token, the access token)")
    r = c.post("/v1/assign?k=3", json={"vectors": X})  # a parameter of /v1/similar, not of assign
    assert r.status_code == 422 and "/v1/assign takes no query parameters" in r.text, r.text
    r = c.post("/v1/similar?k=2&same_cluster=true&level=0", json={"vectors": X})
    assert r.status_code == 200 and r.json()["k"] == 2, r.text
    bare = httpx.Client(base_url=server.url, timeout=30)
    assert bare.post("/v1/similar", params={"token": TOKEN, "k": 2}, json={"vectors": X}).status_code == 200
    # refused before anything is counted as assigned, under its route in /metrics
    req = metric_families(server)["mediacluster_http_requests"].samples
    assert any(s.labels["route"] == "/v1/similar" and s.labels["status"] == "422" and s.value >= 2
               for s in req if s.name.endswith("_total"))


def test_images_answered_like_predict(server, run_dir, images, tag_model):
    """One request with six images, and one image per request: the same answers as encoding the
    files here and calling Pipeline.predict_details; tags as the tagger suggests them."""
    from mediacluster.encoders import get_encoder
    from mediacluster.tags import Tagger

    enc = get_encoder(ENCODER)
    X = enc.encode([enc.prepare(str(p)) for p in images])["embedding"]
    r = server.client.post("/v1/assign", files=upload(images))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"]["version"] == "v0001"
    items = body["items"]
    assert [it["filename"] for it in items] == [p.name for p in images]
    # encoded here in one batch of six, there one by one or batched with others: the same
    # labels; probabilities within float32 noise of the encoder
    check_items(items, expected(run_dir, "v0001", X), atol=1e-5)
    tagger = Tagger.load(tag_model)
    sugg = tagger.classifier.suggest_proba(tagger.classifier.predict_proba(X))
    for it, s in zip(items, sugg):
        assert [t["tag"] for t in it["tags"]] == [t for t, _ in s]  # [] when it abstains
    assert any(it["tags"] for it in items)
    one = [server.client.post("/v1/assign", files=upload([p])).json()["items"][0] for p in images]
    assert [o["cluster"] for o in one] == [it["cluster"] for it in items]
    np.testing.assert_allclose([o["probability"] for o in one], [it["probability"] for it in items], atol=1e-4)


def test_vectors_answered_exactly_like_predict(server, run_dir, cifar3_embeddings):
    """JSON vectors (float32 written as text) give exactly predict_details' answers."""
    rng = np.random.default_rng(1)
    X = cifar3_embeddings.vectors[rng.choice(300, 60, replace=False)].astype(np.float32)
    X = np.vstack([X, X[:20] + rng.normal(0, 0.3, X[:20].shape).astype(np.float32)])
    r = server.client.post("/v1/assign", json={"vectors": X.tolist()})
    assert r.status_code == 200, r.text
    body = r.json()
    names = {c["id"]: c["name"] for c in server.client.get("/v1/clusters").json()["clusters"]}
    check_items(body["items"], expected(run_dir, body["model"]["version"], X), names)


def test_a_batch_of_exactly_max_vectors_is_answered_one_more_is_refused(server, cifar3_embeddings):
    """``--max-vectors 100``: 100 vectors are one batch the service answers; 101 are a 413."""
    X = np.round(cifar3_embeddings.vectors[:100].astype(np.float64), 3)  # short numbers: a small body
    r = server.client.post("/v1/assign", json={"vectors": X.tolist()})
    assert r.status_code == 200, r.text[:300]
    assert [it["index"] for it in r.json()["items"]] == list(range(100))
    r = server.client.post("/v1/assign", json={"vectors": X.tolist() + X[:1].tolist()})
    assert r.status_code == 413 and r.json()["error"]["kind"] == "batch_too_large", r.text[:300]


def test_a_request_pinned_to_the_served_model_by_id_or_by_version_is_answered(server, cifar3_embeddings):
    """``X-Model-Id`` takes an answer's ``model.id`` or just its version (``v0001``); another
    model's is a 409 naming the one served."""
    body = {"vectors": np.round(cifar3_embeddings.vectors[:2].astype(np.float64), 3).tolist()}
    model = server.client.post("/v1/assign", json=body).json()["model"]
    for pin in (model["id"], model["version"]):
        r = server.client.post("/v1/assign", json=body, headers={"X-Model-Id": pin})
        assert r.status_code == 200 and r.json()["model"]["id"] == model["id"], (pin, r.text[:300])
    r = server.client.post("/v1/assign", json=body, headers={"X-Model-Id": "nosuch/v0009"})
    assert r.status_code == 409 and r.json()["error"]["served"]["id"] == model["id"], r.text[:300]


def test_unreadable_uploads_are_a_413_only_when_every_one_is_too_large(server, images):
    """No upload of a request readable: 413 when each is too large, else 400 (a text file and a
    too-large photo: the text file is no size matter), each named in 'items'."""
    big = images[0].read_bytes() + os.urandom(1_200_000)  # over --max-file-mb 1
    files = [("files", ("notes.jpg", b"just some text", "image/jpeg")), ("files", ("big.jpg", big, "image/jpeg"))]
    r = server.client.post("/v1/assign", files=files)
    assert r.status_code == 400, r.text[:300]
    assert [it["kind"] for it in r.json()["error"]["items"]] == ["not_an_image", "file_too_large"]
    r = server.client.post("/v1/assign", files=files[1:])
    assert r.status_code == 413 and r.json()["error"]["kind"] == "file_too_large", r.text[:300]


# -- hostile input -------------------------------------------------------------------------------


def raw_request(url: str, head: bytes, body_chunks, pause: float) -> bytes:
    """Send a request by hand (a slow client), return the raw answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(head)
        for chunk in body_chunks:
            try:
                s.sendall(chunk)
            except OSError:
                break  # the server answered and closed early
            time.sleep(pause)
        s.settimeout(30)
        out = b""
        while b"\r\n\r\n" not in out or not out.rstrip().endswith(b"}"):
            try:
                part = s.recv(65536)
            except OSError:
                break
            if not part:
                break
            out += part
        return out


@pytest.mark.slow
def test_hostile_input_gets_4xx_and_server_stays_up(server, images, tmp_path):
    c = server.client
    broken = tmp_path / "broken"
    make_broken(broken)
    good = upload(images[:1])
    vec = [0.0] * 1280

    def refused(status: int, kind: str, **kw):
        r = c.post("/v1/assign", **kw)
        assert r.status_code == status, (kind, r.status_code, r.text)
        err = r.json()["error"]
        assert err["kind"] == kind and err["message"], err
        ok = c.post("/v1/assign", files=good)  # the next request is served normally
        assert ok.status_code == 200 and ok.json()["items"][0]["cluster"] >= 0
        return err

    def file(name, data, ctype="image/jpeg"):
        return [("files", (name, data, ctype))]

    for name, kind in (("notes.jpg", "not_an_image"), ("truncated.jpg", "truncated"),
                       ("empty.jpg", "empty"), ("badcrc.png", "corrupt")):
        err = refused(400, kind, files=file(name, (broken / name).read_bytes()))
        assert name in err["message"] and err["items"][0]["filename"] == name
    err = refused(413, "image_too_large", files=file("bomb.png", (broken / "bomb.png").read_bytes()))
    assert "decompression bomb" in err["message"]
    big = jpeg_bytes(photo((64, 64))) + os.urandom(1_200_000)  # over the 1 MB file limit
    refused(413, "file_too_large", files=file("big.jpg", big))
    refused(413, "too_large", content=b"{" + b" " * (3 << 20) + b"}", headers={"content-type": "application/json"})
    # several bad files and no good one: refused, naming the first and listing each
    err = refused(400, "not_an_image", files=file("notes.jpg", (broken / "notes.jpg").read_bytes())
                  + file("empty.jpg", b""))
    assert err["message"].startswith("files[0] ('notes.jpg')") and "(and 1 more, see 'items')" in err["message"]
    assert [(it["index"], it["kind"]) for it in err["items"]] == [(0, "not_an_image"), (1, "empty")], err
    # (one bad file among good ones is answered per item: test_a_batch_answers_per_item)
    refused(413, "batch_too_large", files=upload(images + images[:1]))
    refused(400, "empty_batch", content=b"--x--\r\n", headers={"content-type": "multipart/form-data; boundary=x"})
    # a form field other than files: refused as an unknown key of a JSON body is (web.StrictBody)
    err = refused(422, "invalid_request", data={"note": "hi"}, files=good)
    assert "note" in err["message"], err
    # vectors
    refused(400, "wrong_dimension", json={"vectors": [vec[:100]]})
    # one level of nesting too many, or too few: the message says the shape, not "has 1 values"
    err = refused(400, "wrong_shape", json={"vectors": [[vec]]})
    assert "vectors[0] is a list of lists (3 levels of nesting, not 2)" in err["message"], err
    assert "(n, 1280)" in err["message"], err
    err = refused(400, "wrong_shape", json={"vectors": vec})
    assert "one list of 1280 numbers, not a list of vectors" in err["message"] and "(n, 1280)" in err["message"]
    err = refused(400, "not_finite", content=b'{"vectors": [[NaN' + b", 0.0" * 1279 + b"]]}",
                  headers={"content-type": "application/json"})
    assert err["message"] == "vectors[0] contains NaN or infinity", err
    err = refused(400, "not_finite", content=b'{"vectors": [[-Infinity' + b", 0.0" * 1279 + b"], [NaN"
                  + b", 0.0" * 1279 + b"]]}", headers={"content-type": "application/json"})
    assert err["message"] == "vectors[0] contains NaN or infinity (rows [0, 1]: 2 of 2)", err
    assert [it["index"] for it in err["items"]] == [0, 1], err
    refused(400, "not_finite", content=b'{"vectors": [[1e999' + b", 0.0" * 1279 + b"]]}",
            headers={"content-type": "application/json"})
    # a zero vector has no direction for the model's cosine predictor (Pipeline.neighbour_metric):
    # refused naming the vector, not a cluster from an arbitrary vote
    err = refused(400, "no_direction", json={"vectors": [vec]})
    assert err["message"].startswith("vectors[0] is all zeros"), err
    refused(400, "empty_batch", json={"vectors": []})
    refused(400, "empty_batch", content=b"", headers={"content-type": "application/json"})
    # no body and no content type (curl -X POST): both forms named
    r = server.client.post("/v1/assign")
    assert r.status_code == 400 and r.json()["error"]["kind"] == "empty_batch"
    assert "multipart/form-data (field 'files')" in r.json()["error"]["message"] and "vectors" in r.text
    refused(413, "batch_too_large", json={"vectors": [vec] * 101})
    refused(400, "invalid_json", content=b'{"vectors": [[1, 2', headers={"content-type": "application/json"})
    refused(400, "invalid_request", json={"vectors": [["a"] * 1280]})
    refused(400, "invalid_request", json={"vectors": [["0.5"] * 1280]})  # numbers as text: not numbers
    refused(400, "invalid_request", json={"vectors": [[True] * 1280]})
    refused(400, "invalid_request", json={"vectors": [[None] * 1280]})
    refused(400, "invalid_request", json={"vectors": [vec, 3]})
    # not the object {"vectors": ...}, or a key beside it: the body's form (web.StrictBody), 422 naming it
    refused(422, "invalid_request", json=[[0.0] * 1280])
    err = refused(422, "invalid_request", json={"vectors": [vec], "vectorz": [vec]})
    assert "vectorz: Extra inputs are not permitted" in err["message"], err
    err = refused(422, "invalid_request", json={"vector": [vec]})
    assert "vectors: Field required" in err["message"] and "vector:" in err["message"], err
    err = refused(422, "invalid_request", json={"vectors": "1, 2"})
    assert "vectors: Input should be a valid list" in err["message"], err
    refused(415, "unsupported_media_type", content=b"hello", headers={"content-type": "text/plain"})
    r = c.post("/v1/assign", files=[])  # no body at all
    assert r.status_code in (400, 415) and r.json()["error"]["kind"]
    r = c.post("/v1/assign", content=b"--x\r\n\r\n", headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 400 and r.json()["error"]["kind"] in ("empty_batch", "invalid_request")
    # a client that trickles its body past the time limit gets 503, the server is not held up
    head = (b"POST /v1/assign HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: 100000\r\n\r\n")
    t = time.monotonic()
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(raw_request, server.url, head, [b" " * 100] * 100, 0.1)
        time.sleep(0.5)
        assert c.post("/v1/assign", files=good).status_code == 200  # served meanwhile
        answer = slow.result()
    assert b" 503 " in answer.split(b"\r\n", 1)[0] and b'"timeout"' in answer, answer[:300]
    assert time.monotonic() - t < 20
    assert c.get("/v1/nope").json()["error"]["kind"] == "not_found"
    r = c.get("/v1/assign")  # a 405 says which methods the path takes (found by schemathesis)
    assert r.status_code == 405 and r.headers["allow"] == "POST" and r.json()["error"]["kind"] == "method_not_allowed"
    assert server.alive()


# -- per-item answers ----------------------------------------------------------------------------


def item_errors(server) -> dict:
    fams = metric_families(server)
    f = fams.get("mediacluster_item_errors")
    return {s.labels["kind"]: s.value for s in f.samples if s.name.endswith("_total")} if f else {}


def test_a_batch_answers_per_item(server, images, tmp_path):
    """Good files and each kind of unreadable one in one upload: the good ones are placed as
    alone, each bad one keeps its position with its error (naming it) and no placement, `failed`
    counts them, and /metrics counts them by kind; the same through /v1/similar."""
    c = server.client
    broken = tmp_path / "broken"
    kinds = make_broken(broken)
    bad = {"notes.jpg": "not_an_image", "truncated.jpg": "truncated", "empty.jpg": "empty"}
    assert all(kinds[n] == k for n, k in bad.items())
    alone = c.post("/v1/assign", files=upload(images[:3]))
    assert alone.status_code == 200 and alone.json()["failed"] == 0, alone.text
    before = item_errors(server)
    # 6 files (the server's --max-files): good, bad, good, bad, good, bad
    files = []
    for g, b in zip(images[:3], bad):
        files += upload([g]) + [("files", (b, (broken / b).read_bytes(), "image/jpeg"))]
    r = c.post("/v1/assign", files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["failed"] == 3 and [it["index"] for it in body["items"]] == list(range(6))
    placed, failed = body["items"][0::2], body["items"][1::2]
    for j, (it, a) in enumerate(zip(placed, alone.json()["items"])):  # as when sent without the bad ones
        assert (it["index"], it["filename"], it["cluster"], it["name"]) == (2 * j, a["filename"], a["cluster"], a["name"])
        assert abs(it["probability"] - a["probability"]) < 1e-3 and it["tags"] is not None
    for it, (name, kind) in zip(failed, bad.items()):
        assert it["filename"] == name and it["error"]["kind"] == kind, it
        assert it["error"]["message"].startswith(f"files[{it['index']}] ('{name}'): "), it
        assert "cluster" not in it and "status" not in it, it
    after = item_errors(server)
    for kind in bad.values():
        assert after.get(kind, 0) - before.get(kind, 0) == 1, (kind, before, after)
    # the same upload through /v1/similar: placements with neighbours, the bad ones their errors
    s = c.post("/v1/similar", params={"k": 2}, files=files)
    assert s.status_code == 200 and s.json()["failed"] == 3, s.text
    items = s.json()["items"]
    assert [len(it["neighbours"]) for it in items[0::2]] == [2, 2, 2]
    assert [it["cluster"] for it in items[0::2]] == [it["cluster"] for it in placed]
    assert [it["error"]["kind"] for it in items[1::2]] == list(bad.values())
    # both answers as the OpenAPI description says (each item one of its two forms)
    from jsonschema import Draft202012Validator

    doc = c.get("/openapi.json").json()
    for answer, schema in ((body, "AssignResponse"), (s.json(), "SimilarResponse")):
        Draft202012Validator({"$ref": f"#/components/schemas/{schema}", "components": doc["components"]}
                             ).validate(answer)
    # a file over --max-file-mb is not read, and fails alone
    big = jpeg_bytes(photo((64, 64))) + os.urandom(1_200_000)
    r = c.post("/v1/assign", files=[("files", ("big.jpg", big, "image/jpeg"))] + upload(images[:1]))
    assert r.status_code == 200 and r.json()["failed"] == 1, r.text
    first, second = r.json()["items"]
    assert first["error"]["kind"] == "file_too_large" and "big.jpg" in first["error"]["message"], first
    assert second["index"] == 1 and second["cluster"] >= 0
    # a vector with NaN among good ones: the same, by row
    # a vector with NaN, or all zeros (no direction for the cosine model), among good ones: the
    # same, by row
    good = [[float(j % 7 + 1) / 7 for j in range(1280)], [float(j % 5 + 1) / 5 for j in range(1280)]]
    text = json.dumps({"vectors": [[0.0] * 1280, good[0], [0.0] * 1280, good[1]]})
    text = text.replace("[0.0, ", "[NaN, ", 1)
    r = c.post("/v1/assign", content=text.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 200 and r.json()["failed"] == 2, r.text
    nan, a, zero, b = r.json()["items"]
    assert nan == {"index": 0, "filename": None, "item_id": None,  # no item_ids sent
                   "error": {"kind": "not_finite", "message": "vectors[0] contains NaN or infinity"}}
    assert zero["index"] == 2 and zero["error"]["kind"] == "no_direction", zero
    assert zero["error"]["message"].startswith("vectors[2] is all zeros"), zero
    both = c.post("/v1/assign", json={"vectors": good}).json()["items"]
    assert [a["cluster"], b["cluster"]] == [it["cluster"] for it in both] and (a["index"], b["index"]) == (1, 3)
    # nothing readable at all: refused, each named
    r = c.post("/v1/assign", files=[("files", (n, (broken / n).read_bytes(), "image/jpeg")) for n in bad])
    assert r.status_code == 400 and len(r.json()["error"]["items"]) == 3, r.text
    assert item_errors(server).get("empty", 0) - after.get("empty", 0) == 2  # similar's and this one's


PLUGIN = '''
"""A plugin encoder (``mediacluster.encoders.register``): the default encoder, except that a
picture of one colour has nothing in it to describe (as a face or object finder has no face or
object to describe there), so its vector is all zeros."""
import numpy as np

from mediacluster.encoders import register
from mediacluster.encoders.efficientnet import EfficientNetLite0


class PlainIsBlank(EfficientNetLite0):
    name = "plain-is-blank"

    def encode(self, batch):
        out = super().encode(batch)
        out["embedding"][[bool((b == b[0, 0]).all()) for b in batch]] = 0.0  # one colour
        return out


register("plain-is-blank", PlainIsBlank)
'''


def test_an_upload_whose_embedding_cannot_be_placed_fails_alone(run_dir, images, cifar3_embeddings, tmp_path):
    """An upload that decodes but whose embedding the model refuses (a zero vector for a model
    that compares directions: a plugin encoder's answer for a picture with nothing to describe)
    is a per-item failure like an unreadable upload: its place in `items` with `no_direction`,
    counted in `mediacluster_item_errors`; the others placed as when sent alone. The service also
    starts with such an encoder (its warm-up picture, plain grey, is one of them)."""
    import io
    import shutil

    from PIL import Image

    (tmp_path / "plugin").mkdir()
    (tmp_path / "plugin" / "plain_is_blank.py").write_text(PLUGIN)
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    version = publish(run, fast_pipeline().fit(cifar3_embeddings.vectors), encoder="plain-is-blank")
    start = (f"import sys; sys.path.insert(0, {str(tmp_path / 'plugin')!r}); import plain_is_blank; "
             "from mediacluster.cli import main; sys.exit(main(sys.argv[1:]))")
    s = Server(str(run), *LIMITS, log=tmp_path / "server.log", command=[sys.executable, "-c", start])
    try:
        c = s.client
        assert c.get("/v1/model").json()["version"] == version

        def plain(rgb) -> tuple:
            buf = io.BytesIO()
            Image.new("RGB", (64, 48), rgb).save(buf, "PNG")
            return ("files", (f"plain{rgb[0]}.png", buf.getvalue(), "image/png"))

        alone = c.post("/v1/assign", files=upload(images[:3]))
        assert alone.status_code == 200 and alone.json()["failed"] == 0, alone.text
        before = item_errors(s)
        files = upload(images[:2]) + [plain((90, 140, 200))] + upload(images[2:3])
        r = c.post("/v1/assign", files=files)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["failed"] == 1 and [it["index"] for it in body["items"]] == [0, 1, 2, 3]
        bad = body["items"][2]
        assert bad["filename"] == "plain90.png" and bad["error"]["kind"] == "no_direction", bad
        assert bad["error"]["message"].startswith("files[2] ('plain90.png'): its embedding (plain-is-blank) "
                                                  "is all zeros"), bad
        assert "cluster" not in bad
        placed = [body["items"][k] for k in (0, 1, 3)]
        assert [it["cluster"] for it in placed] == [it["cluster"] for it in alone.json()["items"]]
        assert item_errors(s).get("no_direction", 0) - before.get("no_direction", 0) == 1
        sim = c.post("/v1/similar", params={"k": 2}, files=files)
        assert sim.status_code == 200 and sim.json()["failed"] == 1, sim.text
        assert sim.json()["items"][2]["error"]["kind"] == "no_direction"
        assert [len(sim.json()["items"][k]["neighbours"]) for k in (0, 1, 3)] == [2, 2, 2]
        # none placeable: refused, each named, as unreadable uploads are
        r = c.post("/v1/assign", files=[plain((90, 140, 200)), plain((10, 10, 10))])
        assert r.status_code == 400 and r.json()["error"]["kind"] == "no_direction", r.text
        assert [it["index"] for it in r.json()["error"]["items"]] == [0, 1]
        assert item_errors(s).get("no_direction", 0) - before.get("no_direction", 0) == 4
    finally:
        s.stop()


# -- metrics and batching ------------------------------------------------------------------------


def metric_families(server) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    r = server.client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(r.text)}


def test_concurrent_images_are_batched_and_metrics_parse(server, images):
    before = metric_families(server)

    def batches(fams):
        f = fams.get("mediacluster_encode_batch_size")
        s = {x.name.rsplit("_", 1)[1]: x.value for x in f.samples if not x.labels.get("le")} if f else {}
        return s.get("count", 0.0), s.get("sum", 0.0)

    n0, s0 = batches(before)
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda p: server.client.post("/v1/assign", files=upload([p])).status_code,
                              images * 6))
    assert codes == [200] * len(codes)
    fams = metric_families(server)
    n1, s1 = batches(fams)
    assert s1 - s0 == len(codes)  # every image went through the batcher once
    assert (s1 - s0) / (n1 - n0) > 1.0, (n1 - n0, s1 - s0)  # and some calls held several
    req = fams["mediacluster_http_requests"]
    ok = [s for s in req.samples if s.labels.get("route") == "/v1/assign" and s.labels.get("status") == "200"]
    assert ok and ok[0].value >= len(codes)
    lat = fams["mediacluster_http_request_duration_seconds"]
    assert any(s.name.endswith("_bucket") and s.labels["route"] == "/v1/assign" for s in lat.samples)
    assert "mediacluster_http_errors" in fams and "mediacluster_model_info" in fams
    items = {s.labels["input"]: s.value for s in fams["mediacluster_assign_items"].samples
             if s.name.endswith("_total")}
    assert items["image"] >= len(codes)


def test_errors_counted_by_kind(server):
    fams = metric_families(server)
    kinds = {s.labels["kind"]: s.value for s in fams["mediacluster_http_errors"].samples
             if s.name.endswith("_total")}
    if not kinds.get("not_an_image"):  # on its own (-k): make one
        server.client.post("/v1/assign", files=[("files", ("a.jpg", b"hello there", "image/jpeg"))])
        fams = metric_families(server)
        kinds = {s.labels["kind"]: s.value for s in fams["mediacluster_http_errors"].samples
                 if s.name.endswith("_total")}
    assert kinds["not_an_image"] >= 1


def test_a_client_that_goes_away_mid_upload_is_no_internal_error(server):
    """A client that sends half a body and closes (a phone losing its network) was logged as an
    internal error with a traceback (Starlette's ClientDisconnect) and counted as a 500 and an
    `internal` error: an alert for the on-call. It is counted as 499 (nginx's "client closed
    request"), not as an error; a request still answers on a fresh connection."""
    def counts() -> tuple[float, float]:
        fams = metric_families(server)
        internal = sum(s.value for s in fams["mediacluster_http_errors"].samples
                       if s.name.endswith("_total") and s.labels["kind"] == "internal")
        gone = sum(s.value for s in fams["mediacluster_http_requests"].samples
                   if s.name.endswith("_total") and s.labels["route"] == "/v1/assign"
                   and s.labels["status"] in ("500", "499"))
        return internal, gone

    before = counts()
    host, port = server.url.removeprefix("http://").split(":")
    part = b'{"vectors": [[0.5, 0.25'
    for framing in (b"Content-Length: 100000\r\n\r\n" + part,
                    b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n" % (len(part), part)):
        with socket.create_connection((host, int(port)), timeout=30) as s:
            s.sendall(b"POST /v1/assign HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Authorization: Bearer " + TOKEN.encode() + b"\r\n" + framing)
            time.sleep(0.3)
    deadline = time.monotonic() + 20
    while counts()[1] < before[1] + 2:  # the server notices the disconnects when it reads on
        assert time.monotonic() < deadline, counts()
        time.sleep(0.2)
    after = counts()
    assert after[0] == before[0], "a client's disconnect was counted as an internal error"
    fams = metric_families(server)
    assert not [s for s in fams["mediacluster_http_requests"].samples
                if s.labels.get("route") == "/v1/assign" and s.labels.get("status") == "500"]
    assert server.alive()


def test_metrics_filter_by_name_and_openmetrics(server):
    """/metrics speaks as prometheus_client's own handler: ``name[]`` keeps only those metrics
    (it was refused as an unknown parameter), an OpenMetrics Accept header gets OpenMetrics."""
    from prometheus_client.parser import text_string_to_metric_families

    server.client.get("/healthz")
    r = server.client.get("/metrics", params=[("name[]", "mediacluster_http_requests_total"),
                                              ("name[]", "mediacluster_model_info")])
    assert r.status_code == 200, r.text
    names = {f.name for f in text_string_to_metric_families(r.text)}
    assert names == {"mediacluster_http_requests", "mediacluster_model_info"}, names
    r = server.client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.rstrip().endswith("# EOF")
    plain = server.client.get("/metrics")
    assert plain.headers["content-type"].startswith("text/plain") and "# EOF" not in plain.text
    assert server.client.get("/metrics", params={"nam": "x"}).status_code == 422  # typos still named


# -- model versions ------------------------------------------------------------------------------


def publish(run_dir: Path, pipe: Pipeline, encoder: str | None = ENCODER, names=None) -> str:
    from mediacluster.rundir import RunDir

    run = RunDir.open(run_dir)
    path = pipe.publish(run_dir / "models", metadata={"encoder": encoder, "names": names or {}},
                        run_id=run.run_id, source="test")
    return Path(path).name


def wait_for_version(server, version: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.client.get("/v1/model").json()["version"] == version:
            return
        time.sleep(0.1)
    raise AssertionError(f"the server did not switch to {version}")


@pytest.mark.slow
def test_switch_versions_under_load_without_a_failed_request(server, run_dir, cifar3_embeddings, images):
    """A client keeps sending images and vectors while new versions are published (file watch)
    and reloaded (POST /v1/reload), and when the run is clustered again into the same folder: no
    request fails, and every answer is the answer of the version it names. A damaged version, or
    one the tag model cannot read, is not switched to: the old one keeps serving and /v1/model
    says why."""
    from mediacluster.workflow import publish_run

    X = cifar3_embeddings.vectors[::15].astype(np.float32)
    stop = threading.Event()
    seen: list[tuple[str, list]] = []
    failures: list[str] = []

    def client_loop():
        with httpx.Client(base_url=server.url, timeout=60, headers=server.headers) as c:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    if i % 2:
                        r = c.post("/v1/assign", json={"vectors": X.tolist()})
                    else:
                        r = c.post("/v1/assign", files=upload(images[i % 6:i % 6 + 1]))
                except httpx.HTTPError as e:
                    failures.append(f"{type(e).__name__}: {e}")
                    continue
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text[:200]}")
                elif i % 2:
                    m = r.json()["model"]
                    seen.append(((m["run_id"], m["version"]), r.json()["items"]))

    threads = [threading.Thread(target=client_loop) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        v2 = publish(run_dir, fast_pipeline(4).fit(cifar3_embeddings.vectors), names={"0": "zero"})
        wait_for_version(server, v2)  # the file watch found it
        time.sleep(0.5)
        # POST /v1/reload: switches at once (if the watch has not already)
        v3 = publish(run_dir, fast_pipeline(2).fit(cifar3_embeddings.vectors))
        r = server.client.post("/v1/reload").json()
        assert r["version"] == v3 and server.client.get("/v1/model").json()["version"] == v3
        assert server.client.post("/v1/reload").json()["switched"] is False
        time.sleep(0.5)
        # a damaged version: refused, v3 keeps serving, /v1/model says why
        bad = run_dir / "models" / "v0099"
        bad.mkdir()
        (bad / "model.json").write_text("{not json")
        (run_dir / "models" / "LATEST").write_text(json.dumps({"version": "v0099"}))
        r = server.client.post("/v1/reload")
        assert r.status_code == 503 and r.json()["error"]["kind"] == "model_format", r.text
        m = server.client.get("/v1/model").json()
        assert m["version"] == v3 and "v0099" in m["reload_error"]
        # a version fitted on other vectors than the tag model's: refused too, with the reason
        v4 = publish(run_dir, fast_pipeline(3).fit(cifar3_embeddings.vectors), encoder=None)
        deadline = time.monotonic() + 30
        while "tag model" not in (server.client.get("/v1/model").json()["reload_error"] or ""):
            assert time.monotonic() < deadline, "the watch did not try the new version"
            time.sleep(0.1)
        assert server.client.get("/v1/model").json()["version"] == v3
        v5 = publish(run_dir, fast_pipeline(3).fit(cifar3_embeddings.vectors))
        wait_for_version(server, v5)
        assert server.client.get("/v1/model").json()["reload_error"] is None
        time.sleep(0.5)
        # the run is clustered again into the same folder: its models/ keeps the earlier
        # versions (numbering goes on), and the service notices the new model
        old_run = server.client.get("/v1/model").json()["run_id"]
        models = {(old_run, v): Pipeline.load(run_dir / "models" / v) for v in ("v0001", v2, v3, v5)}
        new_run = publish_run(run_dir, cifar3_embeddings, fast_pipeline(5).fit(cifar3_embeddings.vectors),
                              save_model=True).run_id
        deadline = time.monotonic() + 30
        while server.client.get("/v1/model").json()["run_id"] != new_run:
            assert time.monotonic() < deadline, "the server did not switch to the re-run's model"
            time.sleep(0.1)
        v6 = json.loads((run_dir / "models" / "LATEST").read_text())["version"]
        assert v6 > "v0099", v6  # after the earlier run's numbers, the damaged v0099 too
        assert server.client.get("/v1/clusters").json()["model"] == {"version": v6, "id": f"{new_run}/{v6}",
                                                                     "run_id": new_run}
        models[(new_run, v6)] = Pipeline.load(run_dir / "models" / v6)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not failures, failures[:5]
    versions = {v for v, _ in seen}
    assert {(old_run, v) for v in (v2, v3, v5)} | {(new_run, v6)} <= versions, versions
    assert (old_run, v4) not in versions
    for key in versions:  # every answer is exactly the answer of the version that gave it
        items = next(it for k, it in seen if k == key)
        check_items(items, models[key].predict_details(X))
    assert server.client.get("/v1/model").json()["switches"] >= 4
    # /metrics counts every reload check, the file watch's too (it counted POST /v1/reload only,
    # so a watch that switched, or failed on a broken version, left no trace there)
    family = metric_families(server)["mediacluster_model_reloads"]
    reloads = {s.labels["result"]: s.value for s in family.samples if s.name.endswith("_total")}
    assert reloads.get("switched", 0) >= 4 and reloads.get("failed", 0) >= 2, reloads
    # a switch is counted by every worker process (the sum read as switches over-counted N times)
    assert "with --workers N one new version counts N switches" in family.documentation
    assert server.alive()


def test_vectors_only_model_refuses_images(cifar3_embeddings, images, tmp_path):
    """A model fitted on precomputed vectors (no encoder): vectors are answered, an image
    upload gets a clear 400 (and the server goes on)."""
    pipe = fast_pipeline().fit(cifar3_embeddings.vectors)
    pipe.save(tmp_path / "model", metadata={"encoder": None})
    s = Server(str(tmp_path / "model"), log=tmp_path / "server.log")
    try:
        r = s.client.post("/v1/assign", files=upload(images[:1]))
        assert r.status_code == 400 and r.json()["error"]["kind"] == "no_encoder", r.text
        assert "vectors" in r.json()["error"]["message"]
        X = cifar3_embeddings.vectors[:5]
        r = s.client.post("/v1/assign", json={"vectors": X.tolist()})
        assert r.status_code == 200
        check_items(r.json()["items"], pipe.predict_details(X))
        m = s.client.get("/v1/model").json()
        assert m["encoder"] is None and m["watching"] is None and m["tags"] is None
        assert s.client.post("/v1/reload").json()["pinned"] is True
    finally:
        s.stop()


def test_model_with_levels_answers_paths_and_lists_levels(cifar3_embeddings, tmp_path):
    """A hierarchy model (no encoder: vectors only): every item gets its root-to-leaf path, the
    path's cluster at the model's level is the item's cluster, and /v1/clusters lists the levels
    with sizes and parents."""
    pipe = Pipeline(reducer=make_stage("reducer", "pca", {"n_components": 8}), clusterer="hierarchy",
                    reference_dims=64).fit(cifar3_embeddings.vectors)
    pipe.save(tmp_path / "model", metadata={"encoder": None})
    s = Server(str(tmp_path / "model"), log=tmp_path / "server.log")
    try:
        X = cifar3_embeddings.vectors[::25] + 0.01
        r = s.client.post("/v1/assign", json={"vectors": X.tolist()})
        assert r.status_code == 200, r.text
        det = pipe.predict_details(X)
        n_levels = len(pipe.levels_)
        for i, it in enumerate(r.json()["items"]):
            assert [p["level"] for p in it["path"]] == list(range(n_levels))
            assert [p["cluster"] for p in it["path"]] == det["path"]["labels"][:, i].tolist()
            assert it["path"][pipe.level_]["cluster"] == it["cluster"] == it["assigned_cluster"]
            assert all(0 <= p["probability"] <= 1 for p in it["path"])
        cl = s.client.get("/v1/clusters").json()
        levels = cl["levels"]
        assert [lv["n_clusters"] for lv in levels] == pipe.n_clusters_per_level_.tolist()
        assert [lv["chosen"] for lv in levels].index(True) == pipe.level_
        assert levels[0]["clusters"][0]["parent"] is None
        for lv in levels:
            assert sum(c["size"] for c in lv["clusters"]) == 300
            if lv["level"]:
                k_up = levels[lv["level"] - 1]["n_clusters"]
                assert all(0 <= c["parent"] < k_up for c in lv["clusters"])
        assert {c["id"] for c in cl["clusters"]} == set(range(pipe.n_clusters_))
    finally:
        s.stop()


# -- the micro-batcher on its own ------------------------------------------------------------------


def test_batcher_waits_only_for_announced_items():
    """A lone item is encoded at once whatever the window; items other requests announced are
    waited for (up to the window) and encoded in one call; a withdrawn announcement ends the
    wait; a failing call fails its items only; batches never exceed max_batch."""
    from mediacluster.serve import MicroBatcher

    sizes = []

    def encode(batch):
        if any(x is None for x in batch):
            raise RuntimeError("cannot encode None")
        return np.stack([np.full(3, x, np.float32) for x in batch])

    b = MicroBatcher(encode, max_batch=4, window_s=2.0, on_batch=lambda n, s: sizes.append(n))
    try:
        t = time.monotonic()
        assert b.submit([1.0])[0].result(5)[0] == 1.0
        assert time.monotonic() - t < 1.0 and sizes == [1]  # nobody announced: no waiting
        b.announce(3)
        first = b.submit([2.0], announced=True)
        time.sleep(0.2)
        rest = b.submit([3.0, 4.0], announced=True)
        assert [f.result(5)[0] for f in first + rest] == [2.0, 3.0, 4.0] and sizes[-1] == 3
        b.announce(2)
        f = b.submit([5.0], announced=True)
        time.sleep(0.1)
        t = time.monotonic()
        b.withdraw(1)  # the other announced item failed to decode
        assert f[0].result(5)[0] == 5.0 and time.monotonic() - t < 1.0
        bad = b.submit([None, 6.0])
        with pytest.raises(RuntimeError):
            bad[0].result(5)
        assert b.submit([7.0])[0].result(5)[0] == 7.0 and b.alive
        futs = b.submit([float(i) for i in range(10)])
        assert [f.result(5)[0] for f in futs] == list(range(10)) and max(sizes) <= 4
    finally:
        b.close()
    assert not b.alive


def test_batcher_spreads_over_idle_workers_and_fails_single_items():
    """Two idle workers and six items arriving together: three each (a many-image request uses
    both cores); a result that is an exception fails that item only."""
    from mediacluster.serve import MicroBatcher

    sizes = []

    def work(batch):
        time.sleep(0.3)  # busy: the other worker must take its share, not wait for this one
        return [ValueError(f"item {x} refused") if x < 0 else x * 2 for x in batch]

    b = MicroBatcher(work, max_batch=32, workers=2, on_batch=lambda n, s: sizes.append(n))
    try:
        time.sleep(0.2)  # both workers waiting for items
        futs = b.submit([1, 2, -3, 4, 5, 6])
        with pytest.raises(ValueError, match="item -3 refused"):
            futs[2].result(5)
        assert [f.result(5) for i, f in enumerate(futs) if i != 2] == [2, 4, 8, 10, 12]
        assert sorted(sizes) == [3, 3]
    finally:
        b.close()


# -- the holder on its own, and the command line --------------------------------------------------


def test_pinned_model_folder_is_never_switched(run_dir):
    from mediacluster.serve import ModelHolder

    h = ModelHolder(run_dir / "models" / "v0001", poll_s=0.1)
    try:
        assert h.pinned and h.current.version == "v0001"
        assert h.reload()["switched"] is False and h.current.version == "v0001"
    finally:
        h.stop()


def test_cli_refuses_bad_model_and_mismatched_tagger(tmp_path, run_dir, capsys):
    from mediacluster.cli import main

    assert main(["serve", str(tmp_path / "nothing"), "--port", "0"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--port", "0"]) == 2
    assert "holds no model" in capsys.readouterr().err
    from mediacluster.tags import TagClassifier, Tagger

    rng = np.random.default_rng(0)
    clf = TagClassifier(model="logreg").fit(rng.standard_normal((80, 16)), ["a", "b"] * 40)
    Tagger(clf, encoder="precomputed").save(tmp_path / "tags")
    assert main(["serve", str(run_dir / "models" / "v0001"), "--tags", str(tmp_path / "tags"),
                 "--port", "0"]) == 2
    assert "tag model" in capsys.readouterr().err


@pytest.mark.slow
def test_two_worker_processes_share_the_port_and_the_metrics(run_dir, images, tmp_path):
    """`--workers 2`: both processes answer on the one port, and `/metrics`, whichever of them
    answers it, counts the requests of both (prometheus_client's multi-process files, summed).
    Each request goes on a fresh connection: over pooled keep-alive connections one worker could
    answer everything, and a `/metrics` reporting its own worker only then still counted all (it
    passed so). Which worker answered is `mediacluster_worker_requests`, one sample per process
    (labelled pid), by route."""
    from prometheus_client.parser import text_string_to_metric_families

    s = Server(str(run_dir / "models" / "v0001"), "--workers", "2", log=tmp_path / "server.log")
    # no keep-alive: every request is a new connection, accepted by whichever worker takes it
    fresh = httpx.Client(base_url=s.url, timeout=60, limits=httpx.Limits(max_keepalive_connections=0))
    try:
        def counts() -> tuple[float, dict]:
            """/metrics read once (on a fresh connection): the /v1/assign requests summed, and
            per route the requests each worker (pid) answered."""
            fams = {f.name: f for f in text_string_to_metric_families(fresh.get("/metrics").text)}
            total = sum(x.value for x in fams["mediacluster_http_requests"].samples
                        if x.labels.get("route") == "/v1/assign" and x.name.endswith("_total"))
            per: dict = {}
            for x in fams["mediacluster_worker_requests"].samples:
                if x.value > 0:
                    per.setdefault(x.labels.get("route"), {})[x.labels.get("pid")] = x.value
            return total, per

        # both workers up: a worker still loading takes no connections, and the other would
        # answer everything meanwhile (each answers /readyz once it accepts connections)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                fresh.get("/readyz")
                ready = counts()[1].get("/readyz", {})
                if len(ready) == 2 or None in ready:  # None: no sample per worker (asserted below)
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)

        def counted(sent: int) -> tuple[float, dict, dict]:
            # a request is counted when its response has been sent (web.metrics._Measure), so the
            # client can hold the last answer, and the other worker answer /metrics, a moment
            # before the count is written (seen once under load: 23): read until it is all there
            deadline = time.monotonic() + 10
            while (got := counts())[0] < sent and time.monotonic() < deadline:
                time.sleep(0.2)
            total, per = got
            return total, per.get("/v1/assign", {}), per.get("/metrics", {})

        sent, by_worker = 0, {}
        with ThreadPoolExecutor(4) as pool:
            # which worker accepts a connection is the kernel's, and it is uneven (48 requests
            # went 43 / 5 once): send until both have answered
            deadline = time.monotonic() + 60
            while len(by_worker) < 2 and time.monotonic() < deadline:
                codes = list(pool.map(lambda p: fresh.post("/v1/assign", files=upload([p])).status_code,
                                      images * 2))
                assert codes == [200] * len(codes)
                sent += len(codes)
                total, by_worker, _ = counted(sent)
                assert total == sent  # summed over the workers, whichever answered /metrics
        assert len(by_worker) == 2, by_worker  # two processes answered
        assert sum(by_worker.values()) == sent, (by_worker, sent)
        # /metrics from each worker: read until both have answered it, each answer the sum
        metrics_by, deadline = {}, time.monotonic() + 30
        while time.monotonic() < deadline:
            total, by_worker, metrics_by = counted(sent)
            assert total == sent and sum(by_worker.values()) == sent, (total, by_worker, sent)
            if len(metrics_by) == 2:
                break
        assert set(metrics_by) == set(by_worker), (metrics_by, by_worker)  # both answered /metrics
        # a worker killed (it can run nothing more) and started anew by uvicorn: its per-process
        # samples go (web.metrics.prune_dead_workers), its counts stay in the sums, and the new
        # worker has its own sample once it answers
        import signal

        gone = sorted(by_worker)[0]
        os.kill(int(gone), signal.SIGKILL)
        deadline, pids = time.monotonic() + 30, {gone}
        while gone in pids and time.monotonic() < deadline:
            time.sleep(0.2)
            fams = {f.name: f for f in text_string_to_metric_families(fresh.get("/metrics").text)}
            pids = {x.labels.get("pid") for x in fams["mediacluster_worker_requests"].samples}
        assert gone not in pids, pids
        assert counts()[0] == sent  # the killed worker's requests are still counted
        deadline, now = time.monotonic() + 120, set()
        while not (now - set(by_worker)) and time.monotonic() < deadline:
            try:
                assert fresh.post("/v1/assign", files=upload(images[:1])).status_code == 200
                sent += 1
            except httpx.HTTPError:  # a connection the killed worker held
                pass
            now = set(counted(sent)[1])
        assert now - set(by_worker) and gone not in now, (now, by_worker)  # the new worker answers
    finally:
        fresh.close()
        s.stop()


@pytest.mark.slow
def test_the_described_vector_size_follows_a_model_switch(cifar3_embeddings, tmp_path):
    """/openapi.json says the served model's vector size (a client or a fuzzer built from it
    sends what the handler reads); a newer version of another size is described after the
    switch, not the size the server started with."""
    X = cifar3_embeddings.vectors
    store = tmp_path / "models"
    fast_pipeline().fit(X).publish(store, metadata={"encoder": None}, source="test")
    s = Server(str(store), "--poll", "0.2", log=tmp_path / "server.log")
    try:
        def size() -> int:
            body = s.client.get("/openapi.json").json()["paths"]["/v1/assign"]["post"]["requestBody"]
            return body["content"]["application/json"]["schema"]["properties"]["vectors"]["items"]["minItems"]

        assert size() == 1280
        fast_pipeline().fit(X[:, :16]).publish(store, metadata={"encoder": None}, source="test")
        wait_for_version(s, "v0002")
        assert size() == 16
        r = s.client.post("/v1/assign", json={"vectors": X[:2, :16].tolist()})
        assert r.status_code == 200 and len(r.json()["items"]) == 2, r.text
    finally:
        s.stop()


@pytest.mark.slow
def test_a_browser_page_of_a_listed_origin_may_call_the_service(server, run_dir, images, tmp_path):
    """--cors-origin lets a web page of that origin call the service (CORS): its preflight is
    answered before the token check (a browser sends none there), the answers name the origin
    and let the page read X-Request-ID; the token is still needed. Without the flag (the module's
    server) and for another origin, no page may."""
    page = "https://app.example"
    pre = {"Origin": page, "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization, content-type"}
    plain = server.client.options("/v1/assign", headers=pre)
    assert "access-control-allow-origin" not in plain.headers, plain.headers
    s = Server(str(run_dir), "--cors-origin", page, log=tmp_path / "cors.log", token=TOKEN)
    try:
        with httpx.Client(base_url=s.url, timeout=60) as c:
            ok = c.options("/v1/assign", headers=pre)
            assert ok.status_code == 200, ok.text
            assert ok.headers["access-control-allow-origin"] == page
            assert "authorization" in ok.headers["access-control-allow-headers"].lower()
            assert "POST" in ok.headers["access-control-allow-methods"]
            other = c.options("/v1/assign", headers={**pre, "Origin": "https://evil.example"})
            assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
            files = upload(images[:1])
            refused = c.post("/v1/assign", files=files, headers={"Origin": page})
            assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == page
            r = c.post("/v1/assign", files=upload(images[:1]),
                       headers={"Origin": page, **s.headers})
            assert r.status_code == 200 and r.json()["items"][0]["cluster"] >= 0
            assert r.headers["access-control-allow-origin"] == page
            assert "x-request-id" in r.headers["access-control-expose-headers"].lower()
            assert len(r.headers["x-request-id"]) == 32
    finally:
        s.stop()


def test_models_use_rolls_the_service_back_without_a_failed_request(server, run_dir, cifar3_embeddings,
                                                                     capsys):
    """`mediacluster models RUN --use VERSION` points LATEST at an earlier version: the watching
    service switches back to it while a client keeps sending (no failed request, and each
    answer names the version that gave it); the next publish is the latest again. An unknown
    version is refused naming the versions there are."""
    from mediacluster.cli import main

    X = cifar3_embeddings.vectors[::30].astype(np.float32)
    old = server.client.get("/v1/model").json()["version"]
    new = publish(run_dir, fast_pipeline(4).fit(cifar3_embeddings.vectors))
    wait_for_version(server, new)
    stop, seen, failures = threading.Event(), [], []

    def client_loop():
        with httpx.Client(base_url=server.url, timeout=60, headers=server.headers) as c:
            while not stop.is_set():
                r = c.post("/v1/assign", json={"vectors": X.tolist()})
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text[:200]}")
                else:
                    seen.append(r.json()["model"]["version"])

    t = threading.Thread(target=client_loop)
    t.start()
    try:
        time.sleep(0.3)
        assert main(["models", str(run_dir), "--use", old]) == 0
        out = capsys.readouterr().out
        assert f"LATEST -> {old}" in out and f"* {old}" in out, out
        wait_for_version(server, old)
        time.sleep(0.3)
    finally:
        stop.set()
        t.join(30)
    assert not failures, failures[:3]
    assert seen[0] == new and seen[-1] == old and set(seen) == {new, old}, set(seen)
    assert main(["models", str(run_dir), "--use", "v9999"]) == 2
    assert "no model version 'v9999' (versions: " in capsys.readouterr().err
    newest = publish(run_dir, fast_pipeline(3).fit(cifar3_embeddings.vectors))
    wait_for_version(server, newest)
    assert int(newest[1:]) > int(new[1:])
    # a version published held (cluster --carry-from's bare fit until the carried curation is
    # published): neither the watch nor POST /v1/reload switches to it; `models --use` releases it
    from mediacluster.rundir import RunDir

    held = Path(fast_pipeline(5).fit(cifar3_embeddings.vectors).publish(
        run_dir / "models", metadata={"encoder": ENCODER}, run_id=RunDir.open(run_dir).run_id, held=True)).name
    assert RunDir.open(run_dir).models.pointer()["held"] is True
    capsys.readouterr()
    assert main(["models", str(run_dir)]) == 0  # the listing says the latest is held
    assert [ln for ln in capsys.readouterr().out.splitlines() if "(held:" in ln][0].startswith(f"* {held}")
    time.sleep(1.0)  # several polls of the watch
    assert server.client.post("/v1/reload").json()["version"] == newest
    assert server.client.get("/v1/model").json()["version"] == newest
    assert main(["models", str(run_dir), "--use", held]) == 0
    wait_for_version(server, held)


@pytest.mark.slow
def test_a_rollback_reaches_the_model_of_an_earlier_run_of_the_folder(cifar3_embeddings, tmp_path, capsys):
    """The weekly loop re-clusters into the same folder: the new run keeps last week's versions
    (numbering goes on, each version's id RUN_ID/vNNNN unique across runs), so `models --use`
    rolls a watching service back to last week's model, named by its version or its id, while a
    client keeps sending (no failed request); answers, /readyz and /metrics carry the id."""
    from mediacluster.cli import main
    from mediacluster.rundir import RunDir
    from mediacluster.workflow import publish_run

    run = tmp_path / "run"
    week1 = publish_run(run, cifar3_embeddings, fast_pipeline(3).fit(cifar3_embeddings.vectors),
                        save_model=True).run_id
    X = cifar3_embeddings.vectors[::30].astype(np.float32)
    s = Server(str(run), "--poll", "0.2", log=tmp_path / "server.log")
    stop, seen, failures = threading.Event(), [], []

    def client_loop():
        with httpx.Client(base_url=s.url, timeout=60) as c:
            while not stop.is_set():
                r = c.post("/v1/assign", json={"vectors": X.tolist()})
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text[:200]}")
                else:
                    seen.append((r.json()["model"]["id"], r.json()["items"]))

    t = threading.Thread(target=client_loop)
    try:
        assert s.client.get("/readyz").json() == {"status": "ready", "version": "v0001", "id": f"{week1}/v0001"}
        t.start()
        week2 = publish_run(run, cifar3_embeddings, fast_pipeline(4).fit(cifar3_embeddings.vectors),
                            save_model=True).run_id
        wait_for_version(s, "v0002")  # not v0001 again: the folder's numbering goes on
        assert s.client.get("/v1/model").json()["id"] == f"{week2}/v0002"
        assert [v["id"] for v in RunDir.open(run).models.describe()] == [f"{week1}/v0001", f"{week2}/v0002"]
        assert main(["models", str(run), "--use", f"{week1}/v0001"]) == 0  # by its id
        out = capsys.readouterr().out
        assert "LATEST -> v0001" in out and "* v0001" in out and f"id {week1}/v0001" in out, out
        wait_for_version(s, "v0001")
        time.sleep(0.3)
        metrics = s.client.get("/metrics").text
        assert f'id="{week1}/v0001"' in metrics and f'id="{week2}/v0002"' in metrics, metrics
        assert main(["models", str(run), "--use", "nosuchrun/v0001"]) == 2
        err = capsys.readouterr().err
        assert "no model version 'nosuchrun/v0001'" in err and f"{week2}/v0002" in err, err
    finally:
        stop.set()
        if t.is_alive():
            t.join(30)
        s.stop()
    assert not failures, failures[:3]
    ids = [i for i, _ in seen]
    assert ids[0] == f"{week1}/v0001" and ids[-1] == f"{week1}/v0001" and f"{week2}/v0002" in ids, set(ids)
    models = {f"{week1}/v0001": Pipeline.load(run / "models" / "v0001"),
              f"{week2}/v0002": Pipeline.load(run / "models" / "v0002")}
    for key in set(ids):  # the rolled-back answers are last week's model's
        check_items(next(it for k, it in seen if k == key), models[key].predict_details(X))


def test_the_description_says_which_operations_need_the_token(server):
    """A client generated from /openapi.json learns the bearer scheme and which operations need
    it (every one but the probes and the description), as the server enforces it."""
    doc = httpx.get(server.url + "/openapi.json", timeout=30).json()
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": doc["components"]["securitySchemes"]["bearer"]["description"]}
    ops = {(p, m): o for p, v in doc["paths"].items() for m, o in v.items()}
    assert ops[("/v1/assign", "post")]["security"] == [{"bearer": []}]
    assert ops[("/metrics", "get")]["security"] == [{"bearer": []}]
    for public, fields in (("/healthz", {"status"}), ("/readyz", {"status", "version", "id"})):
        assert "security" not in ops[(public, "get")]
        ref = ops[(public, "get")]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
        assert set(schema["properties"]) == fields  # the probes' answers are described
        assert set(httpx.get(server.url + public, timeout=30).json()) == fields
        assert httpx.get(server.url + public, timeout=30).status_code == 200  # as described
    assert httpx.get(server.url + "/v1/clusters", timeout=30).status_code == 401


def test_a_read_only_token_predicts_but_cannot_reload(run_dir, cifar3_embeddings, tmp_path):
    """`serve --token T --read-token R`: a team holding R predicts and reads (assign, similar,
    clusters, model, metrics) while POST /v1/reload, which switches the model, is a 403 saying it
    needs the access token; a missing or wrong token is a 401 naming the tokens that would do.
    /openapi.json describes both schemes; neither token appears in an answer or the log."""
    write, read = "ops-write-token-1d9c", "ops-read-token-77ab"
    s = Server(str(run_dir), "--read-token", read, log=tmp_path / "server.log", token=write)
    X = cifar3_embeddings.vectors[:2].tolist()
    try:
        with httpx.Client(base_url=s.url, timeout=60, headers={"Authorization": f"Bearer {read}"}) as c:
            assert c.post("/v1/assign", json={"vectors": X}).status_code == 200
            assert c.post("/v1/similar?k=2", json={"vectors": X}).status_code == 200
            for path in ("/v1/clusters", "/v1/model", "/metrics"):
                assert c.get(path).status_code == 200, path
            r = c.post("/v1/reload")
            assert r.status_code == 403 and r.json()["error"]["kind"] == "read_only_token", r.text
            assert "--token" in r.json()["error"]["message"] and read not in r.text
            # the token as ?token= too (a browser link); the read one still may not write
            assert httpx.post(f"{s.url}/v1/reload?token={read}", timeout=30).status_code == 403
        assert s.client.post("/v1/reload").status_code == 200  # the access token writes
        anon = httpx.post(f"{s.url}/v1/assign", json={"vectors": X}, timeout=30)
        assert anon.status_code == 401 and "--read-token" in anon.json()["error"]["message"], anon.text
        wrong = httpx.post(f"{s.url}/v1/reload", headers={"Authorization": "Bearer nope"}, timeout=30)
        msg = wrong.json()["error"]["message"]
        assert wrong.status_code == 401 and "--token" in msg and "--read-token" not in msg, msg
        doc = httpx.get(s.url + "/openapi.json", timeout=30).json()
        assert set(doc["components"]["securitySchemes"]) == {"bearer", "bearer_write"}
        ops = doc["paths"]
        assert ops["/v1/reload"]["post"]["security"] == [{"bearer_write": []}]
        assert ops["/v1/assign"]["post"]["security"] == [{"bearer": []}]
        assert ops["/v1/clusters"]["get"]["security"] == [{"bearer": []}]
        assert "403" in ops["/v1/reload"]["post"]["responses"]
    finally:
        s.stop()
    logged = (tmp_path / "server.log").read_text()
    assert read not in logged and write not in logged
    # a token the operator gave is not printed with the URL (stdout often ends in a log store)
    assert write not in s.banner and read not in s.banner and "given with --token" in s.banner, s.banner


def test_a_read_only_token_must_come_with_a_different_access_token(run_dir, capsys):
    """`--read-token` equal to `--token` is refused naming the flag (before anything loads)."""
    from mediacluster.cli import main

    assert main(["serve", str(run_dir), "--token", "same-1", "--read-token", "same-1"]) == 2
    assert "--read-token must differ from --token" in capsys.readouterr().err


@pytest.mark.slow
def test_a_request_pinned_to_a_model_is_never_answered_by_another(cifar3_embeddings, tmp_path):
    """Two workers switch one by one after a publish; a client that must not mix models names
    one (`X-Model-Id`: an answer's model.id, or the version): every answer is that model's, or a
    409 model_mismatch naming the model the worker serves, never another model's answer."""
    store = tmp_path / "models"
    pipes = [fast_pipeline(3).fit(cifar3_embeddings.vectors), fast_pipeline(4).fit(cifar3_embeddings.vectors)]
    pipes[0].publish(store, metadata={"encoder": None}, run_id="week1", source="test")
    s = Server(str(store), "--workers", "2", "--poll", "0.3", log=tmp_path / "server.log")
    body = {"vectors": cifar3_embeddings.vectors[:3].tolist()}

    def ask(pin: str | None = None) -> httpx.Response:  # a new connection each: either worker
        return httpx.post(f"{s.url}/v1/assign", json=body, timeout=60, headers={"X-Model-Id": pin} if pin else {})

    try:
        assert ask().json()["model"]["id"] == "week1/v0001"
        r = ask("nosuch/v0009")
        assert r.status_code == 409 and r.json()["error"]["kind"] == "model_mismatch", r.text
        assert r.json()["error"]["served"]["id"] == "week1/v0001" and "X-Model-Id" in r.json()["error"]["message"]
        pipes[1].publish(store, metadata={"encoder": None}, run_id="week2", source="test")
        seen, streak, deadline = [], 0, time.monotonic() + 60
        while streak < 20:  # until 20 answers in a row come from the new model
            assert time.monotonic() < deadline, "the workers did not switch"
            plain, old, new = ask(), ask("week1/v0001"), ask("v0002")
            seen.append((plain.json()["model"]["id"], old.status_code, new.status_code))
            streak = streak + 1 if plain.json()["model"]["id"] == "week2/v0002" else 0
            for r, want in ((old, "week1/v0001"), (new, "week2/v0002")):
                if r.status_code == 200:
                    assert r.json()["model"]["id"] == want, r.text
                    want_det = pipes[0 if want.startswith("week1") else 1].predict_details(
                        np.asarray(body["vectors"], dtype=np.float32))
                    assert [it["cluster"] for it in r.json()["items"]] == want_det["labels"].tolist()
                else:
                    assert r.status_code == 409 and r.json()["error"]["served"]["id"] != want, r.text
        assert ask("week1/v0001").status_code == 409 and ask("week2/v0002").status_code == 200
    finally:
        s.stop()


def test_a_command_whose_reader_goes_away_stops_quietly(run_dir):
    """`mediacluster models RUN | head -1`: the pipe's reader went away; the command stops with
    141 (as a shell reports SIGPIPE) and no "internal error (a bug)" message or crash log."""
    p = subprocess.Popen([sys.executable, "-m", "mediacluster", "models", str(run_dir)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read().decode()
    p.wait(120)
    assert p.returncode == 141 and "internal error" not in err, (p.returncode, err)


@pytest.mark.parametrize("workers", ["1", pytest.param("2", marks=pytest.mark.slow)])
def test_sigterm_finishes_the_requests_in_flight_and_exits_within_the_grace(tmp_path, workers):
    """SIGTERM under load (a real ``serve`` process, vectors-only model): requests whose bodies
    were on their way when it came (each connection's headers and half its body sent; the rest
    0.5 s after the signal) are all answered 200; two clients that stall mid-body are cut at the
    grace period (``timeout_graceful_shutdown``, 5 s), so the process is gone in 5 s + a margin.
    Before, one worker ended by the signal itself (exit -15, 143 in a pod) without "stopped";
    now it exits 0 as ``--workers 2`` did."""
    import re
    import signal

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 8)).astype(np.float32)
    Pipeline(reducer=make_stage("reducer", "pca", {"n_components": 4}), outliers=None,
             clusterer=make_stage("clusterer", "kmeans", {"n_clusters": 3})).fit(X).publish(tmp_path / "models")
    proc = subprocess.Popen([sys.executable, "-m", "mediacluster", "serve", str(tmp_path / "models"), "--port", "0",
                             "--workers", workers], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = ""
        while "listening on " not in line:
            line = proc.stdout.readline()
            assert line, "the service did not start"
        host, port = re.search(r"http://([^:/]+):(\d+)", line).groups()
        body = json.dumps({"vectors": X[:4].tolist()}).encode()
        head = (f"POST /v1/assign HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        with httpx.Client(base_url=f"http://{host}:{port}", timeout=30) as c:  # every worker up
            for _ in range(8):
                assert c.post("/v1/assign", json={"vectors": X[:4].tolist()}).status_code == 200

        def half_sent():
            s = socket.create_connection((host, int(port)), timeout=30)
            s.sendall(head + body[: len(body) // 2])
            return s

        flying = [half_sent() for _ in range(8)]
        stalled = [half_sent() for _ in range(2)]
        time.sleep(0.3)  # the server has read what was sent
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        time.sleep(0.5)
        answers = []
        for s in flying:
            s.sendall(body[len(body) // 2:])
        for s in flying:
            got = b""
            while chunk := s.recv(65536):
                got += chunk
            answers.append(got.split(b"\r\n", 1)[0])
            s.close()
        assert answers == [b"HTTP/1.1 200 OK"] * 8, answers
        rest, _ = proc.communicate(timeout=20)
        took = time.monotonic() - t0
        assert took < 5 + 3, took  # the grace period, and a margin for a loaded machine
        assert "stopped" in rest and proc.returncode == 0, (proc.returncode, rest)
        for s in stalled:
            s.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
