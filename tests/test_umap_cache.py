"""umap-learn's hottest kernels are compiled once per machine, not once per process.

umap-learn compiles ``smooth_knn_dist``, ``compute_membership_strengths`` and its serial layout
epoch without numba's on-disk cache; ``stages.reduce.import_umap`` re-wraps them with
``cache=True``. Two fresh processes share a numba cache folder: the second must load those
kernels instead of compiling them (numba's own compile events tell which).
"""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

CHILD = r"""
import json, sys
import numpy as np
from numba.core import event
from mediacluster.stages.reduce import UMAPReducer

X = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
with event.install_recorder("numba:compile") as rec:
    UMAPReducer(n_neighbors=10, n_components=3, n_epochs=20, random_state=0).fit(X)
names = sorted({ev.data["dispatcher"].py_func.__qualname__ for _, ev in rec.buffer if ev.is_start})
print(json.dumps(names))
"""

HOT = {"smooth_knn_dist", "compute_membership_strengths", "_optimize_layout_euclidean_single_epoch"}


def _compiled(env) -> set:
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_second_process_loads_umap_kernels_from_the_disk_cache(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"), NUMBA_NUM_THREADS="1")
    first = _compiled(env)
    assert HOT <= first, f"a fresh cache must compile the kernels (compiled: {sorted(first)})"
    second = _compiled(env)
    assert not (HOT & second), f"compiled again in a second process: {sorted(HOT & second)}"
    assert any((tmp_path / "numba").rglob("*.nbi")), "no numba cache index written"


def test_during_layout_runs_a_job_beside_the_layout_and_changes_nothing():
    """``reduce.during_layout(job)``: ``job`` runs in a second thread while the next seeded UMAP
    fit lays out (the engine computes the agreement check's PCA there), is joined before the
    fit returns, and the embedding is bit for bit the one of a fit without it, even when the
    job limits BLAS to one thread (a process-wide setting). A failing job's error is kept in the
    future; without a layout (no fit in the block) the future stays undone."""
    import threading

    import numpy as np
    from threadpoolctl import threadpool_info

    from mediacluster.stages.cluster import single_blas_thread
    from mediacluster.stages.reduce import UMAPReducer, during_layout

    X = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)

    def fit():
        return UMAPReducer(n_neighbors=10, n_components=3, n_epochs=30, init="pca", random_state=0).fit(X).embedding_

    alone = fit()
    blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    def job():
        with single_blas_thread():
            return threading.get_ident(), np.linalg.svd(X, full_matrices=False)[1]

    with during_layout(job) as fut:
        beside = fit()
    assert fut.done(), "the job ran during the fit"
    ident, sv = fut.result()
    assert ident != threading.get_ident() and np.allclose(sv, np.linalg.svd(X, compute_uv=False))
    assert np.array_equal(alone, beside), "the layout's result does not depend on the job"
    assert [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"] == blas

    def boom():
        raise ValueError("job failed")

    with during_layout(boom) as fut:
        again = fit()
    assert isinstance(fut.exception(), ValueError) and np.array_equal(alone, again)
    with during_layout(job) as fut:
        pass
    assert not fut.done()
    with during_layout(None) as fut:
        assert fut is None


def test_during_layout_tells_the_job_when_the_layout_ends():
    """``during_layout(job, stop=event)`` sets ``event`` as soon as the layout's epochs end and
    only then waits for the job, so a job doing optional work (the agreement check's K-means
    starts ahead of time) stops there instead of holding the fit up; the embedding is the
    one of a fit without the job. Failed before: ``during_layout`` took no ``stop``."""
    import threading
    import time

    import numpy as np

    from mediacluster.stages.reduce import UMAPReducer, during_layout

    X = np.random.default_rng(1).normal(size=(300, 16)).astype(np.float32)

    def fit():
        return UMAPReducer(n_neighbors=10, n_components=3, n_epochs=30, init="pca", random_state=0).fit(X).embedding_

    alone = fit()
    stop = threading.Event()

    def job():  # would run 60 s unless told to stop
        rounds = 0
        while not stop.wait(0.01) and rounds < 6000:
            rounds += 1
        return stop.is_set()

    t = time.perf_counter()
    with during_layout(job, stop=stop) as fut:
        beside = fit()
    assert fut.done() and fut.result() is True, "the job saw the layout end"
    assert time.perf_counter() - t < 30, "the fit did not wait for the job's full work"
    assert np.array_equal(alone, beside)
