"""The Ray executor on a real two-node Ray cluster that this module starts (on 127.0.0.1) and
stops: embedding through Ray Data actors equals the local path, a killed worker loses and
duplicates nothing, and a killed driver's re-run resumes from the shards it wrote and writes the
same run folder as a local run.

Slow (a Ray cluster takes ~20 s to start on 2 cores); skipped when Ray is not installed
(``pip install -e ".[ray]"``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

# Ray binds to the machine's outward address unless told it is not in a cluster-capable mode;
# the test cluster must listen on the loopback address only.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ray = pytest.importorskip("ray")

from mediacluster.rundir import RunDir, ShardSet  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _children(roots: set[int]) -> set[int]:
    """Every live descendant of ``roots`` (from /proc)."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    out, grew = set(roots), True
    while grew:
        new = {p for p, pp in parent.items() if pp in out and p not in out}
        out |= new
        grew = bool(new)
    return out - set(roots)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


@pytest.fixture(scope="module")
def ray_cluster():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "object_store_memory": 150 * 1024**2})
    cluster.add_node(num_cpus=1, object_store_memory=150 * 1024**2)
    nodes = list(cluster.list_all_nodes())
    roots = {p.process.pid for node in nodes for procs in node.all_processes.values() for p in procs}
    try:
        if not cluster.address.startswith("127.0.0.1:"):
            pytest.skip(f"the test Ray cluster did not bind to the loopback address ({cluster.address})")
        cluster.roots = roots
        yield cluster
    finally:
        spawned = _children(roots)
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
        deadline = time.time() + 30
        while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in roots | spawned):
            time.sleep(0.5)
        for p in roots | spawned:  # anything of ours that outlived the shutdown
            if Path(f"/proc/{p}").exists() and "ray" in _cmdline(p):
                os.kill(p, signal.SIGKILL)


def kill_a_worker(cluster, name: str) -> int:
    """SIGKILL one of the cluster's actor processes whose title names ``name``; its pid."""
    for p in sorted(_children(cluster.roots)):
        if _cmdline(p).startswith("ray::") and name in _cmdline(p):
            os.kill(p, signal.SIGKILL)
            return p
    return 0


def shard_rows(folder: Path) -> np.ndarray:
    import pyarrow.parquet as pq

    rows = [pq.read_table(p, columns=["row"]).column(0).to_numpy() for p in sorted(folder.rglob("shard-*.parquet"))]
    return np.concatenate(rows) if rows else np.zeros(0, np.int64)


def test_ray_embedding_equals_local_and_survives_a_killed_worker(ray_cluster, cifar3_dir, cifar3_embeddings,
                                                                  tmp_path):
    from mediacluster.encoders import get_encoder
    from mediacluster.executors.ray_executor import RayExecutor
    from mediacluster.ingest import collect

    coll = collect(cifar3_dir, labels_from_folders=True)
    work = tmp_path / "work"
    exe = RayExecutor(address=ray_cluster.address, workers=2, embed_block=12)
    result: dict = {}

    def job():
        try:
            result["emb"] = exe.embed(coll, encoder=get_encoder("efficientnet-lite0"), batch_size=6,
                                      progress=False, cache_dir=tmp_path / "cache", shards=lambda name: ShardSet(work / name),
                                      encoder_spec="efficientnet-lite0")
        except BaseException as e:  # reported by the assertion below
            result["error"] = e

    th = threading.Thread(target=job)
    th.start()
    killed, done_at_kill = 0, None
    deadline = time.time() + 600
    while th.is_alive() and time.time() < deadline and not killed:
        if len(shard_rows(work)) >= 12:  # some blocks are written, most are not
            done_at_kill = len(shard_rows(work))
            killed = kill_a_worker(ray_cluster, "MapWorker")
        time.sleep(0.05)
    th.join(timeout=600)
    assert "error" not in result, result.get("error")
    assert killed, "no Ray Data worker was found to kill"
    assert done_at_kill < len(coll), "the job ended before a worker could be killed mid-job"
    emb, local = result["emb"], cifar3_embeddings
    rows = shard_rows(work)
    assert len(rows) == len(set(rows.tolist())) == len(coll)  # every item once: none lost, none twice
    assert exe.stats["duplicates"] == 0
    assert emb.ids == local.ids and emb.paths == local.paths and emb.labels == local.labels
    assert [s.path for s in emb.skipped] == [s.path for s in local.skipped]
    assert np.allclose(emb.vectors, local.vectors, atol=1e-4, rtol=1e-4)
    assert np.allclose(emb.extras["imagenet_probs"], local.extras["imagenet_probs"], atol=2e-3)


def test_ray_remembers_broken_files_as_the_local_path_does(ray_cluster, tmp_path):
    """Files whose own bytes fail are remembered by the embedding cache as each batch comes back
    from the workers; a re-run on Ray (or locally) lists them with the same reasons without
    sending them out, and forgetting them (``--retry-bad``) sends them again, keeping another
    collection's failures in the same cache."""
    from broken_media import jpeg_bytes, make_broken, photo

    from mediacluster.embed import EmbeddingStore, embed_collection
    from mediacluster.embed.store import failure_kind, retrying_failures
    from mediacluster.encoders import get_encoder
    from mediacluster.executors.ray_executor import RayExecutor
    from mediacluster.ingest import collect

    d, cache = tmp_path / "photos", tmp_path / "cache"
    kinds = make_broken(d)
    for k in range(3):
        (d / f"good{k}.jpg").write_bytes(jpeg_bytes(photo((96, 64), seed=k)))
    time.sleep(2.1)  # files younger than 2 s are never taken from the hash records (racily clean)
    enc = get_encoder("efficientnet-lite0")

    def on_ray():  # blocks of two batches: the first block's first batch and the whole second
        # block fail (no extras columns there: Ray Data joins a block's batches with nulls)
        exe = RayExecutor(address=ray_cluster.address, workers=2, embed_block=6)
        emb = exe.embed(collect(d), encoder=enc, cache_dir=cache, batch_size=3, progress=False,
                        encoder_spec="efficientnet-lite0")
        return emb, exe.stats

    first, st1 = on_ray()
    assert sorted(s.path.rsplit("/", 1)[-1] for s in first.skipped) == sorted(kinds)
    assert all(s.lasting for s in first.skipped) and len(first) == 3
    assert st1["known_bad"] == 0 and st1["embed_sent"] == 8
    with EmbeddingStore(cache) as store:
        hashes, _ = store.hash_files([s.path for s in first.skipped])
        assert store.failures(hashes, failure_kind(enc.id)) == {h: s.reason for h, s in zip(hashes, first.skipped)}
    again, st2 = on_ray()
    assert st2["known_bad"] == 5 and st2["embed_sent"] == 3  # only the good files went out
    assert again.skipped == first.skipped and again.ids == first.ids
    assert np.allclose(again.vectors, first.vectors, atol=1e-5)
    local = embed_collection(collect(d), cache_dir=cache, progress=False)  # one memory for both paths
    assert local.cache_stats["known_bad"] == 5 and local.cache_stats["decoded"] == 3
    assert local.skipped == first.skipped
    other = tmp_path / "other"  # another collection's broken files, remembered in the same cache
    for k in range(3):
        whole = jpeg_bytes(photo((120, 80), seed=90 + k))
        (other / f"cut{k}.jpg").parent.mkdir(exist_ok=True)
        (other / f"cut{k}.jpg").write_bytes(whole[: len(whole) // 3])
    assert len(embed_collection(collect(other), cache_dir=cache, progress=False).skipped) == 3
    with retrying_failures() as retry:  # --retry-bad: this collection's failures only
        retried, st3 = on_ray()
    assert retry.forgotten == 5
    assert st3["known_bad"] == 0 and st3["embed_sent"] == 8 and retried.skipped == first.skipped
    assert embed_collection(collect(other), cache_dir=cache, progress=False).cache_stats["known_bad"] == 3
    with EmbeddingStore(cache) as store:
        assert store.forget_failures() == 5 + 3  # without keys: every one


def _cli(args: list[str], env=None, **kw) -> subprocess.Popen:
    env = {**os.environ, **(env or {}),
           "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "mediacluster", *args], env=env, **kw)


def test_ray_run_resumes_after_the_driver_is_killed_and_writes_the_local_run(ray_cluster, tmp_path):
    rng = np.random.default_rng(0)
    C = rng.normal(size=(6, 32)) * 3
    X = (C[rng.integers(0, 6, 3000)] + rng.normal(size=(3000, 32))).astype(np.float32)
    np.save(tmp_path / "v.npy", X)
    common = [str(tmp_path / "v.npy"), "--fit-sample", "600", "--batch-rows", "40", "--quiet", "--no-names",
              "--reducer", "pca", "--reducer-param", "n_components=8", "--clusterer", "kmeans",
              "--clusterer-param", "n_clusters=6"]
    local = _cli(["cluster", *common, "--out", str(tmp_path / "local")])
    ray_args = ["cluster", *common, "--out", str(tmp_path / "ray"), "--executor", "ray",
                "--ray-address", ray_cluster.address, "--ray-workers", "2"]
    first = _cli(ray_args, stderr=subprocess.DEVNULL)
    work = tmp_path / ".ray.work"
    seen = 0
    deadline = time.time() + 600
    while first.poll() is None and time.time() < deadline:
        seen = len(list(work.rglob("shard-*.parquet"))) if work.exists() else 0
        if seen >= 3:
            first.send_signal(signal.SIGKILL)  # the driver dies with the job under way
            break
        time.sleep(0.05)
    first.wait(timeout=60)
    assert seen >= 3, "the Ray job wrote no shards"
    assert not (tmp_path / "ray").exists(), "the killed run must publish nothing"
    written = shard_rows(work)
    assert len(written) == len(set(written.tolist()))
    second = _cli(ray_args)
    assert second.wait(timeout=600) == 0
    assert local.wait(timeout=600) == 0
    a, b = RunDir.open(tmp_path / "local"), RunDir.open(tmp_path / "ray")
    stats = b.info["executor"]["stats"]
    assert stats["assign_ranges_resumed"] >= 3  # what the killed driver wrote was not redone
    pd.testing.assert_frame_equal(a.read_assignments(), b.read_assignments())
    assert (a.path / "assignments.csv").read_text() == (b.path / "assignments.csv").read_text()
    pd.testing.assert_frame_equal(a.read_items(), b.read_items())
    assert np.array_equal(np.load(a.embeddings_path), np.load(b.embeddings_path))
    assert np.allclose(a.read_map()[0], b.read_map()[0], atol=1e-5)
    assert a.read_clusters() == b.read_clusters()
    assert not work.exists()  # the shards go once the run is published
    assert json.loads((b.path / "run.json").read_text())["executor"]["name"] == "ray"


def test_ray_dedup_run_keeps_copies_together_and_writes_the_local_run(ray_cluster, tmp_path):
    """``--executor ray --dedup``: the duplicate search runs in the driver over the run's
    memory-mapped vectors, assignment on Ray; every copy group lands in one cluster and the run
    (duplicates table and columns included) is the local executor's."""
    from test_dedup_scale import FAST, planted_vectors

    X, groups = planted_vectors(seed=1)
    np.save(tmp_path / "v.npy", X)
    common = [str(tmp_path / "v.npy"), "--fit-sample", "300", "--dedup", "--save-model", *FAST]
    local = _cli(["cluster", *common, "--out", str(tmp_path / "local")])
    assert local.wait(timeout=600) == 0
    ray_run = _cli(["cluster", *common, "--out", str(tmp_path / "ray"), "--executor", "ray",
                    "--ray-address", ray_cluster.address, "--ray-workers", "2"])
    assert ray_run.wait(timeout=600) == 0
    a, b = RunDir.open(tmp_path / "local"), RunDir.open(tmp_path / "ray")
    assert b.info["executor"]["name"] == "ray"
    got = b.read_assignments()
    pd.testing.assert_frame_equal(a.read_assignments(), got)
    pd.testing.assert_frame_equal(a.read_duplicates(), b.read_duplicates())
    assert a.read_clusters() == b.read_clusters() and a.info["duplicates"] == b.info["duplicates"]
    dg = got["duplicate_group"].to_numpy()
    for g in groups:
        assert dg[g[0]] >= 0 and len(set(dg[g].tolist())) == 1 and got["cluster"].iloc[g].nunique() == 1
    assert (b.models.latest() / "duplicates" / "duplicates.json").exists()
