"""The service and the studio fuzzed from their own OpenAPI descriptions (schemathesis): every
operation, schema-valid and schema-violating requests (derandomized: the same examples every
run), against real server processes on loopback. No answer may be a 5xx, a status, content type
or body the description does not declare; no request may hang; and after the fuzzing each
server still answers a good request. What fuzzing found was fixed, each with a plain regression
test (test_serve.py, test_studio.py); benchmarks/RESULTS.md, "Fuzzing the service and the
studio", has the longer runs.
"""

from __future__ import annotations

import collections
import os
import time

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from studio_helpers import WRITE, client, make_run, post
from studio_helpers import Server as StudioServer
from test_serve import Server as ServiceServer
from test_serve import fast_pipeline, upload

pytestmark = pytest.mark.slow

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
#: examples per operation and generation mode (schema-valid, schema-violating); a bigger run:
#: MEDIACLUSTER_FUZZ_EXAMPLES=100
EXAMPLES = int(os.environ.get("MEDIACLUSTER_FUZZ_EXAMPLES", "10"))
#: what a guard refuses before any handler runs: FastAPI's own validation (422, kind
#: invalid_request with a message from pydantic) and the studio's header guard (403)
DOOR = {(422, "invalid_request"), (403, "forbidden")}


def fuzz(base: str, headers: dict, examples: int = EXAMPLES) -> dict:
    """Every operation of the OpenAPI description at ``base``, ``examples`` schema-valid and
    ``examples`` schema-violating requests each; returns the counts and the failures."""
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json", timeout=60)
    out = {"operations": 0, "failures": [], "statuses": collections.Counter(),
           "reached": collections.Counter()}
    for result in schema.get_all_operations():
        out["operations"] += 1
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            try:
                _requests(result.ok(), mode, base, headers, examples, out)
            except Unsatisfiable:  # no schema-violating request exists (no parameters, no body)
                pass
    reached = out.pop("reached")

    def share(modes) -> float:
        return sum(reached[m, True] for m in modes) / max(1, sum(reached[m, y] for m in modes for y in (True, False)))

    return {**out, "examples": sum(out["statuses"].values()), "reached": share(("positive", "negative")),
            "reached_valid": share(("positive",)), "reached_invalid": share(("negative",))}


def _requests(op, mode, base: str, headers: dict, examples: int, out: dict) -> None:
    """``examples`` requests of ``op`` made by ``mode``, counted and checked into ``out``."""

    @settings(max_examples=examples, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    @given(case=op.as_strategy(generation_mode=mode))
    def one(case):
        try:
            r = case.call(base_url=base, headers=headers, timeout=60)  # a hang: a timeout
        except Exception as e:  # the connection broke or the server hung
            out["failures"].append(f"{op.label}: {type(e).__name__}: {e}")
            return
        out["statuses"][r.status_code // 100] += 1
        try:
            kind = (r.json().get("error") or {}).get("kind") if r.status_code >= 400 else None
        except ValueError:
            kind = None
        out["reached"][mode.value, (r.status_code, kind) not in DOOR] += 1
        try:
            case.validate_response(r, checks=CHECKS)
        except Exception as e:
            out["failures"].append(f"{op.label} ({mode.value}): {r.status_code} {str(e)[:600]}")

    one()


def _report(name: str, res: dict) -> None:
    print(f"\n{name}: {res['operations']} operations, {res['examples']} requests, status classes "
          f"{sorted(res['statuses'].items())}, {res['reached']:.0%} reached a handler (schema-valid "
          f"{res['reached_valid']:.0%}, schema-violating {res['reached_invalid']:.0%}), "
          f"{res['seconds']:.1f} s")


@pytest.fixture(scope="module")
def service(cifar3_embeddings, tmp_path_factory):
    from mediacluster.workflow import publish_run

    out = tmp_path_factory.mktemp("fuzz-serve") / "run"
    publish_run(out, cifar3_embeddings, fast_pipeline().fit(cifar3_embeddings.vectors), save_model=True)
    s = ServiceServer(str(out), "--max-files", "4", "--max-vectors", "8", "--max-file-mb", "1",
                      "--time-limit", "20", "--keep-uploads", str(out.parent / "inbox"), "--keep", "all",
                      log=out.parent / "server.log")
    yield s
    s.stop()


def test_fuzzing_the_service_finds_no_5xx_and_it_serves_on(service, cifar3_embeddings, images):
    t = time.perf_counter()
    res = fuzz(service.url, {})
    res["seconds"] = time.perf_counter() - t
    _report("service", res)
    assert not res["failures"], "\n".join(res["failures"][:10])
    # /v1/assign and /v1/similar, each both ways, and one request of each GET without parameters
    assert res["operations"] >= 8 and res["examples"] >= 4 * EXAMPLES
    assert service.alive()
    c = service.client
    r = c.post("/v1/assign", files=upload(images[:2]))
    assert r.status_code == 200 and [it["index"] for it in r.json()["items"]] == [0, 1], r.text
    X = np.asarray(cifar3_embeddings.vectors[:3])
    r = c.post("/v1/similar", params={"k": 3}, json={"vectors": X.tolist()})
    assert r.status_code == 200 and all(len(it["neighbours"]) == 3 for it in r.json()["items"]), r.text


@pytest.fixture(scope="module")
def images(cifar3_dir):
    return sorted((cifar3_dir / "frog").glob("*.jpg"))[:2]


@pytest.fixture(scope="module")
def studio(cifar3_embeddings, tmp_path_factory):
    s = StudioServer(make_run(cifar3_embeddings, tmp_path_factory.mktemp("fuzz-studio") / "run"))
    yield s
    s.stop()


def test_fuzzing_the_studio_finds_no_5xx_and_it_serves_on(studio):
    t = time.perf_counter()
    res = fuzz(studio.base.rstrip("/"), WRITE)
    res["seconds"] = time.perf_counter() - t
    _report("studio", res)
    assert not res["failures"], "\n".join(res["failures"][:10])
    assert res["operations"] >= 25 and res["examples"] >= 15 * EXAMPLES
    # schema-valid requests get past the door (FastAPI's validation and the header guard) to
    # the handlers: the request bodies are described, not just "an object"; schema-violating
    # bodies are the door's to refuse (web.StrictBody: 422 naming the field)
    assert res["reached_valid"] > 0.9, res
    assert studio.proc.poll() is None
    with client(studio) as c:
        cl = c.get("/api/clusters").json()["clusters"]
        assert cl
        r = post(c, "/api/edits", {"kind": "rename", "cluster": cl[0]["id"], "name": "after fuzzing"})
        assert r.status_code == 200, r.text
        assert {e["id"]: e["name"] for e in c.get("/api/clusters").json()["clusters"]}[cl[0]["id"]] == "after fuzzing"
