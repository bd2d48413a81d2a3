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
