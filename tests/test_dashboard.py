"""`mediacluster tune`'s OUT/study.db opens in optuna-dashboard (issue 4).

A tiny real study is tuned on the 300-item CIFAR slice, then served by optuna-dashboard's own
WSGI app (built from the ``sqlite:///`` URL the way ``optuna-dashboard sqlite:///OUT/study.db``
does) over real HTTP on 127.0.0.1, and its JSON API must list the study with its trials.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

from mediacluster.pipeline import Pipeline
from mediacluster.tune import tune

optuna_dashboard = pytest.importorskip("optuna_dashboard")

# fast: UMAP with few epochs on 300 vectors
SPACE = {
    "reducer__n_neighbors": {"int": [10, 30]},
    "reducer__n_components": {"choice": [3, 5]},
    "reducer__n_epochs": 100,
    "clusterer": "hdbscan",
    "clusterer__min_cluster_size": {"int": [5, 40], "log": True},
}
N_TRIALS = 3


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):  # keep the request log out of pytest's output
        pass


@pytest.fixture(scope="module")
def study_db(cifar3_embeddings, tmp_path_factory, one_blas_thread):
    out = tmp_path_factory.mktemp("tune-out")
    res = tune(cifar3_embeddings.vectors, Pipeline(), out=out, n_trials=N_TRIALS, sampler="random",
               space=SPACE, seed=0, refit=False, progress=False)
    return out / "study.db", res


@pytest.fixture(scope="module")
def dashboard(study_db):
    """GET a path from optuna-dashboard serving study.db; returns (status, content type, body)."""
    db, _ = study_db
    assert db.is_file(), "tune did not write OUT/study.db"
    app = optuna_dashboard.wsgi(f"sqlite:///{db}")  # same storage the CLI builds from the URL
    httpd = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    th = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                          daemon=True)
    th.start()
    base = f"http://127.0.0.1:{httpd.server_port}"

    def get(path):
        with urllib.request.urlopen(base + path, timeout=30) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()

    yield get
    httpd.shutdown()
    httpd.server_close()
    th.join(5)


def _attrs(serialized: list[dict]) -> dict[str, str]:
    return {a["key"]: a["value"] for a in serialized}


@pytest.mark.slow
def test_study_db_opens_in_optuna_dashboard(study_db, dashboard):
    _, res = study_db
    status, ctype, body = dashboard("/api/studies")
    assert status == 200 and "json" in ctype
    studies = json.loads(body)["study_summaries"]
    by_name = {s["study_name"]: s for s in studies}
    assert "mediacluster" in by_name, f"studies in study.db: {sorted(by_name)}"
    summary = by_name["mediacluster"]
    assert summary["directions"] == ["maximize"]
    meta = _attrs(summary["user_attrs"])
    assert meta["sampler"] == "random" and meta["objective"] == "default"

    status, _, body = dashboard(f"/api/studies/{summary['study_id']}")
    assert status == 200
    detail = json.loads(body)
    assert detail["name"] == "mediacluster"
    trials = detail["trials"]
    assert [t["number"] for t in trials] == list(range(N_TRIALS))
    assert all(t["state"] == "Complete" for t in trials)
    for t in trials:
        ua = _attrs(t["user_attrs"])
        assert int(ua["n_clusters"]) >= 0 and 0.0 <= float(ua["coverage"]) <= 1.0
        assert ua["fidelity"] == "full"
        assert {p["name"] for p in t["params"]} == {
            "reducer__n_neighbors", "reducer__n_components", "clusterer__min_cluster_size"}
    # the dashboard shows the same trials and best value that tune() returned
    own = {t.number: t for t in res.study.trials}
    for t in trials:
        assert float(_attrs(t["user_attrs"])["coverage"]) == pytest.approx(
            own[t["number"]].user_attrs["coverage"])
    assert len(detail["best_trials"]) == 1
    assert detail["best_trials"][0]["number"] == res.study.best_trial.number
    keys = {a["key"] for a in detail["union_user_attrs"]}
    assert {"n_clusters", "coverage"} <= keys

    # the single-page app itself is served too (what a browser opens first)
    status, ctype, body = dashboard("/dashboard")
    assert status == 200 and "text/html" in ctype and b"bundle.js" in body
