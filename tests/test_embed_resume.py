"""Interrupt an embedding run (kill -9, Ctrl-C), re-run it: nothing finished is redone or lost.

The run happens in a child process over 120 real CIFAR-10 images. The child wraps the real
default encoder only to (a) log how many images each ``encode`` call received, and (b) pause a
little per batch so that the test can stop it part-way: once the store holds some but not all
vectors (read from the outside), the test interrupts it. Then a second child finishes the job.
Checks: the store is intact; the second run encodes exactly the files not committed before the
interruption (so no committed file is embedded twice, and each vector is written once); the final
vectors equal those of an uninterrupted run.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mediacluster.embed import embed_collection_cached
from mediacluster.embed.store import EmbeddingStore
from mediacluster.fileio import hash_file
from mediacluster.ingest import collect

N = 120
BATCH = 8

CHILD = r"""
import signal, sys, time
# Ctrl-C as a terminal delivers it, whatever the test runner inherited: a runner started in the
# background by a non-interactive shell has SIGINT ignored, and its children would inherit that
signal.signal(signal.SIGINT, signal.default_int_handler)
from mediacluster.embed import embed_collection_cached
from mediacluster.encoders import get_encoder
from mediacluster.ingest import collect

folder, cache, log_path, pause = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
enc = get_encoder("efficientnet-lite0")
real_encode, real_prepare = enc.encode, enc.prepare
real_encode([real_prepare(sys.argv[5])])  # load the model before the run starts
log = open(log_path, "a", buffering=1)

def prepare(path):
    log.write("prepare " + path + "\n")
    return real_prepare(path)

def encode(batch):
    out = real_encode(batch)
    log.write(f"encode {len(batch)}\n")
    time.sleep(pause)
    return out

enc.prepare, enc.encode = prepare, encode
log.write("ready\n")
emb = embed_collection_cached(collect(folder), enc, cache_dir=cache, batch_size=int(sys.argv[6]), progress=False)
log.write(f"done {len(emb)}\n")
"""


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    from conftest import dataset

    from mediacluster.datasets import extract_slice

    d = tmp_path_factory.mktemp("resume_imgs")
    extract_slice(dataset("cifar10-test"), d, classes=["cat", "ship", "horse"], per_class=N // 3, seed=1)
    return d


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory):
    """An uninterrupted run in its own store."""
    return embed_collection_cached(collect(images), "efficientnet-lite0",
                                   cache_dir=tmp_path_factory.mktemp("ref_cache"), progress=False)


def _committed(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:  # tables not created yet
        return 0


def _log(path: Path) -> tuple[int, list[str]]:
    lines = path.read_text().splitlines() if path.exists() else []
    encoded = sum(int(x.split()[1]) for x in lines if x.startswith("encode "))
    prepared = [x[len("prepare "):] for x in lines if x.startswith("prepare ")]
    return encoded, prepared


def _child(images, cache, log, pause):
    first = str(sorted(Path(images).rglob("*.jpg"))[0])
    return subprocess.Popen([sys.executable, "-c", CHILD, str(images), str(cache), str(log), str(pause), first,
                             str(BATCH)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_interrupted_run_resumes_without_rework(images, reference, tmp_path, sig):
    cache, log1, log2 = tmp_path / "cache", tmp_path / "run1.log", tmp_path / "run2.log"
    db = cache / "embeddings.sqlite"
    p = _child(images, cache, log1, pause=0.25)
    deadline = time.monotonic() + 180
    n_at_signal = 0
    while time.monotonic() < deadline and p.poll() is None:
        n_at_signal = _committed(db)
        if n_at_signal >= 3 * BATCH:
            break
        time.sleep(0.02)
    assert p.poll() is None, f"child ended before it could be interrupted: {p.communicate()[1][-2000:]}"
    assert 0 < n_at_signal < N
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode != 0, ("the interrupted child should not report success; its log: "
                               f"{log1.read_text()[-600:]!r}; stderr: {err[-1500:]!r}")
    if sig == signal.SIGINT:
        assert "KeyboardInterrupt" in err

    committed = _committed(db)
    assert n_at_signal <= committed < N  # finished batches were kept, the run did not complete
    with EmbeddingStore(cache) as st:
        assert st.integrity_check() == "ok"
        done_before = set(st.writes(reference.encoder_version))
    encoded1, _ = _log(log1)
    # in flight when killed: at most the batches being encoded at once (+ the one being handed out)
    assert encoded1 - committed <= 3 * BATCH

    p2 = _child(images, cache, log2, pause=0.0)
    out, err = p2.communicate(timeout=180)
    assert p2.returncode == 0, err[-3000:]
    encoded2, prepared2 = _log(log2)
    assert f"done {N}" in log2.read_text()
    # the second run embedded exactly what was not committed, and none of what was
    assert encoded2 == N - committed
    assert len(prepared2) == N - committed
    assert not {hash_file(x) for x in prepared2} & done_before

    with EmbeddingStore(cache) as st:
        assert st.integrity_check() == "ok"
        writes = st.writes(reference.encoder_version)
    assert len(writes) == N and set(writes.values()) == {1}

    final = embed_collection_cached(collect(images), "efficientnet-lite0", cache_dir=cache, progress=False)
    assert final.cache_stats["encoded"] == 0
    assert final.paths == reference.paths
    np.testing.assert_allclose(final.vectors, reference.vectors, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(final.extras["imagenet_probs"], reference.extras["imagenet_probs"], atol=1e-3)
