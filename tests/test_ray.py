"""The Ray executor on a real two-node Ray cluster that this module starts (on 127.0.0.1) and
stops: embedding through Ray Data actors equals the local path, a killed worker loses and
duplicates nothing, embedding goes through the embedding cache both ways (only what the cache
lacks is sent out; a killed driver's finished blocks are kept there), and a killed driver's
re-run of an assignment resumes from the shards it wrote and writes the same run folder as a
local run.

Slow (a Ray cluster takes ~20 s to start on 2 cores); skipped when Ray is not installed
(``pip install -e ".[ray]"``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
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

from mediacluster.embed import EmbeddingStore  # noqa: E402
from mediacluster.rundir import RunDir  # noqa: E402

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


def cached_vectors(cache: Path) -> int:
    """How many vectors the embedding cache at ``cache`` holds (0 before it exists)."""
    db = cache / "embeddings.sqlite"
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(db, timeout=5)
        try:
            return con.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:  # being created
        return 0


def test_ray_embedding_equals_local_and_survives_a_killed_worker(ray_cluster, cifar3_dir, cifar3_embeddings,
                                                                  tmp_path):
    from mediacluster.encoders import get_encoder
    from mediacluster.executors.ray_executor import RayExecutor
    from mediacluster.ingest import collect

    coll = collect(cifar3_dir, labels_from_folders=True)
    cache = tmp_path / "cache"
    enc = get_encoder("efficientnet-lite0")
    exe = RayExecutor(address=ray_cluster.address, workers=2, embed_block=12)
    result: dict = {}

    def job():
        try:
            result["emb"] = exe.embed(coll, encoder=enc, batch_size=6, progress=False, cache_dir=cache,
                                      encoder_spec="efficientnet-lite0")
        except BaseException as e:  # reported by the assertion below
            result["error"] = e

    th = threading.Thread(target=job)
    th.start()
    killed, done_at_kill = 0, None
    deadline = time.time() + 600
    while th.is_alive() and time.time() < deadline and not killed:
        if cached_vectors(cache) >= 12:  # some blocks are kept, most are not
            done_at_kill = cached_vectors(cache)
            killed = kill_a_worker(ray_cluster, "MapWorker")
        time.sleep(0.05)
    th.join(timeout=600)
    assert "error" not in result, result.get("error")
    assert killed, "no Ray Data worker was found to kill"
    assert done_at_kill < len(coll), "the job ended before a worker could be killed mid-job"
    emb, local = result["emb"], cifar3_embeddings
    with EmbeddingStore(cache) as store:  # every item kept once: none lost, none twice
        assert sorted(store.writes(enc.id).values()) == [1] * len(coll)
    assert exe.stats["duplicates"] == 0 and exe.stats["embed_sent"] == len(coll)
    assert emb.ids == local.ids and emb.paths == local.paths and emb.labels == local.labels
    assert [s.path for s in emb.skipped] == [s.path for s in local.skipped]
    assert np.allclose(emb.vectors, local.vectors, atol=1e-4, rtol=1e-4)
    assert np.allclose(emb.extras["imagenet_probs"], local.extras["imagenet_probs"], atol=2e-3)


def test_ray_embedding_uses_and_fills_the_embedding_cache(ray_cluster, cifar3_dir, tmp_path):
    """One cache for both executors: a Ray run after a local one sends nothing out and returns
    the local vectors; a grown folder sends only its new and changed files; what the workers
    embedded is what a later local run reads (nothing encoded), and the driver recorded their
    hashes without reading them (a third Ray run sends nothing)."""
    from mediacluster.embed import embed_collection
    from mediacluster.encoders import get_encoder
    from mediacluster.executors.ray_executor import RayExecutor
    from mediacluster.ingest import collect

    src = [p for p in sorted(cifar3_dir.rglob("*")) if p.is_file()]
    d, cache = tmp_path / "photos", tmp_path / "cache"
    d.mkdir()

    def flat(p: Path) -> Path:
        return d / f"{p.parent.name}_{p.name}"

    for p in src[:24]:
        shutil.copyfile(p, flat(p))
    time.sleep(2.1)  # files younger than 2 s are never taken from the hash records (racily clean)
    enc = get_encoder("efficientnet-lite0")

    def on_ray():
        exe = RayExecutor(address=ray_cluster.address, workers=2, embed_block=4)
        emb = exe.embed(collect(d), encoder=enc, cache_dir=cache, batch_size=2, progress=False,
                        encoder_spec="efficientnet-lite0")
        return emb, exe.stats

    local = embed_collection(collect(d), cache_dir=cache, progress=False)
    first, st = on_ray()
    assert st["embed_sent"] == 0 and st["cached"] == 24  # the local run's vectors
    assert first.ids == local.ids and np.array_equal(first.vectors, local.vectors)
    assert np.array_equal(first.extras["imagenet_probs"], local.extras["imagenet_probs"])
    assert first.content_hashes == local.content_hashes
    changed = flat(src[0])
    changed.write_bytes(src[30].read_bytes())  # new content under an old name
    for p in src[24:27]:
        shutil.copyfile(p, flat(p))
    time.sleep(2.1)
    grown, st = on_ray()
    assert st["embed_sent"] == 4 and st["cached"] == 23  # three new files and the changed one
    before = dict(zip(first.paths, first.vectors))
    after = dict(zip(grown.paths, grown.vectors))
    assert len(after) == 27 and not np.allclose(after[str(changed)], before[str(changed)], atol=1e-3)
    assert all(np.array_equal(after[p], v) for p, v in before.items() if p != str(changed))
    again = embed_collection(collect(d), cache_dir=cache, progress=False)  # what the workers kept
    assert again.cache_stats["encoded"] == 0 and again.ids == grown.ids
    assert np.array_equal(again.vectors, grown.vectors) and again.content_hashes == grown.content_hashes
    fresh = embed_collection(collect(d), cache_dir=tmp_path / "fresh", progress=False)
    assert np.allclose(grown.vectors, fresh.vectors, atol=1e-4, rtol=1e-4)  # the workers' vectors are right
    third, st = on_ray()  # the files the workers hashed are recorded: nothing is read or sent
    assert st["embed_sent"] == 0 and st["cached"] == 27 and np.array_equal(third.vectors, grown.vectors)


def test_ray_embeds_moved_and_copied_files_by_their_content_as_the_local_path_does(ray_cluster, cifar3_dir,
                                                                                    tmp_path):
    """A moved (renamed) or copied file has no hash record under its new path: the Ray path sent
    it out and encoded it again although the cache held its content, and encoded identical new
    files once per path. The local path reads (hashes) them and encodes each distinct content
    once. Now the workers hash the files without a record first, the driver looks the hashes up
    and sends out one file per missing content: both paths encode the same, and return the same."""
    from mediacluster.embed import embed_collection
    from mediacluster.encoders import get_encoder
    from mediacluster.executors.ray_executor import RayExecutor
    from mediacluster.ingest import collect

    src = [p for p in sorted(cifar3_dir.rglob("*")) if p.is_file()]
    d, cache = tmp_path / "photos", tmp_path / "cache"
    (d / "a").mkdir(parents=True)
    for k, p in enumerate(src[:10]):
        shutil.copyfile(p, d / "a" / f"{k}.png")
    time.sleep(2.1)  # files younger than 2 s are never taken from the hash records (racily clean)
    enc = get_encoder("efficientnet-lite0")

    def on_ray(cache_dir=cache):
        exe = RayExecutor(address=ray_cluster.address, workers=2, embed_block=4)
        emb = exe.embed(collect(d), encoder=enc, cache_dir=cache_dir, batch_size=2, progress=False,
                        encoder_spec="efficientnet-lite0")
        return emb, exe.stats

    first, st = on_ray()
    assert st["embed_sent"] == 10 and len(first) == 10
    before = dict(zip((Path(p).name for p in first.paths), first.vectors))
    (d / "a").rename(d / "b")  # every file moved
    for k in range(3):  # copies of a known file, and two copies of a new one
        shutil.copyfile(src[0], d / f"copy{k}.png")
    for k in range(2):
        shutil.copyfile(src[20], d / f"new{k}.png")
    time.sleep(2.1)
    moved, st = on_ray()
    assert st["hashed_on_workers"] == 15 and st["embed_sent"] == 1 and st["cached"] == 13
    assert len(moved) == 15 and moved.cache_stats["encoded"] == 1 and moved.cache_stats["distinct"] == 11
    got = dict(zip((Path(p).name for p in moved.paths), moved.vectors))
    assert all(np.array_equal(got[k], v) for k, v in before.items())  # the cache's vectors, not new ones
    assert all(np.array_equal(got[f"copy{k}.png"], before["0.png"]) for k in range(3))
    assert np.array_equal(got["new0.png"], got["new1.png"])
    local = embed_collection(collect(d), cache_dir=cache, progress=False)  # the local path: the same answer
    assert local.cache_stats["encoded"] == 0 and local.ids == moved.ids
    assert np.array_equal(local.vectors, moved.vectors) and local.content_hashes == moved.content_hashes
    again, st = on_ray()  # the workers' hashes were recorded: nothing is read or sent
    assert st["hashed_on_workers"] == 0 and st["embed_sent"] == 0 and np.array_equal(again.vectors, moved.vectors)
    # a cold cache: each distinct content encoded once on both paths
    cold, st = on_ray(tmp_path / "cold")
    fresh = embed_collection(collect(d), cache_dir=tmp_path / "fresh", progress=False)
    assert st["embed_sent"] == 11 == fresh.cache_stats["decoded"] and cold.cache_stats["encoded"] == 11
    assert np.allclose(cold.vectors, fresh.vectors, atol=1e-4, rtol=1e-4)


def test_ray_workers_with_another_encoder_keep_nothing_in_the_cache(ray_cluster, cifar3_dir, tmp_path):
    """Workers whose encoder is not the driver's (another version or model on the nodes) would
    put their vectors under the driver's encoder id: the run stops, naming both, and the cache
    holds none of them."""
    from mediacluster.encoders import get_encoder
    from mediacluster.errors import ConfigError
    from mediacluster.executors.ray_executor import RayExecutor
    from mediacluster.ingest import collect

    d = tmp_path / "photos"
    d.mkdir()
    for p in [p for p in sorted(cifar3_dir.rglob("*")) if p.is_file()][:4]:
        os.link(p, d / f"{p.parent.name}_{p.name}")
    enc = get_encoder("efficientnet-lite0")
    exe = RayExecutor(address=ray_cluster.address, workers=1, embed_block=4)
    with pytest.raises(ConfigError, match="the Ray workers' encoder is 'efficientnet-lite0-int8@.*the driver's"):
        exe.embed(collect(d), encoder=enc, cache_dir=tmp_path / "cache", batch_size=4, progress=False,
                  encoder_spec="efficientnet-lite0-int8")
    assert cached_vectors(tmp_path / "cache") == 0


def test_ray_embeds_with_a_cache_nobody_may_write_as_the_local_path_does(ray_cluster, cifar3_dir, tmp_path, caplog):
    """A cache on a read-only place (a shared or read-only HOME): the local run embeds through a
    temporary cache with a warning, and so does a Ray run (before: it stopped, "cannot write the
    embedding cache"); the temporary cache is gone afterwards."""
    import glob
    import tempfile

    from mediacluster.encoders import get_encoder
    from mediacluster.executors.ray_executor import RayExecutor
    from mediacluster.ingest import collect

    d, ro = tmp_path / "photos", tmp_path / "ro"
    d.mkdir()
    ro.mkdir()
    for p in [p for p in sorted(cifar3_dir.rglob("*")) if p.is_file()][:3]:
        os.link(p, d / f"{p.parent.name}_{p.name}")
    if os.geteuid() != 0:
        ro.chmod(0o555)
    elif subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)]).returncode != 0:
        pytest.skip("running as root without permission to mount a read-only folder")
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "mediacluster-cache-*")))
    try:
        exe = RayExecutor(address=ray_cluster.address, workers=1, embed_block=4)
        with caplog.at_level("WARNING"):
            emb = exe.embed(collect(d), encoder=get_encoder("efficientnet-lite0"), cache_dir=ro / "cache",
                            batch_size=4, progress=False, encoder_spec="efficientnet-lite0")
    finally:
        if os.geteuid() != 0:
            ro.chmod(0o755)
        else:
            subprocess.run(["umount", str(ro)])
    assert exe.stats["embed_sent"] == 3 and emb.vectors.shape[0] == 3 and np.isfinite(emb.vectors).all()
    assert str(ro / "cache") in caplog.text and "nothing is kept for the next run" in caplog.text
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "mediacluster-cache-*"))) == before


_EMBED_ON_RAY = """
import sys
from mediacluster.encoders import get_encoder
from mediacluster.executors.ray_executor import RayExecutor
from mediacluster.ingest import collect
exe = RayExecutor(address=sys.argv[1], workers=2, embed_block=4)
exe.embed(collect(sys.argv[2]), encoder=get_encoder("efficientnet-lite0"), cache_dir=sys.argv[3],
          batch_size=2, progress=False, encoder_spec="efficientnet-lite0")
"""


def test_a_killed_ray_embedding_keeps_its_finished_blocks(ray_cluster, cifar3_dir, cifar3_embeddings, tmp_path):
    """A driver killed mid-embedding (a real process, SIGKILL) has kept every block that came
    back in the cache; the re-run sends out only the rest and returns the local path's vectors."""
    from mediacluster.encoders import get_encoder
    from mediacluster.executors.ray_executor import RayExecutor
    from mediacluster.ingest import collect

    d, cache = tmp_path / "photos", tmp_path / "cache"
    d.mkdir()
    for p in [p for p in sorted(cifar3_dir.rglob("*")) if p.is_file()][::3]:
        os.link(p, d / f"{p.parent.name}_{p.name}")
    n = len(list(d.iterdir()))
    time.sleep(2.1)  # (a link is a change of the file's ctime: younger than 2 s, it is not recorded)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", _EMBED_ON_RAY, ray_cluster.address, str(d), str(cache)],
                            env=env, stderr=subprocess.DEVNULL)
    seen = 0
    deadline = time.time() + 600
    while proc.poll() is None and time.time() < deadline:
        seen = cached_vectors(cache)
        if seen >= 8:
            proc.send_signal(signal.SIGKILL)  # the driver dies with the job under way
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the driver finished before it could be killed"
    kept = cached_vectors(cache)
    assert 8 <= kept < n
    exe = RayExecutor(address=ray_cluster.address, workers=2, embed_block=4)
    emb = exe.embed(collect(d), encoder=get_encoder("efficientnet-lite0"), cache_dir=cache, batch_size=2,
                    progress=False, encoder_spec="efficientnet-lite0")
    assert exe.stats["cached"] == kept and exe.stats["embed_sent"] == n - kept
    local = dict(zip((f"{Path(p).parent.name}_{Path(p).name}" for p in cifar3_embeddings.paths),
                     cifar3_embeddings.vectors))
    assert len(emb) == n
    assert np.allclose(emb.vectors, np.stack([local[Path(p).name] for p in emb.paths]), atol=1e-4, rtol=1e-4)


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
    assert st2["known_bad"] == 5 and st2["cached"] == 3 and st2["embed_sent"] == 0  # nothing went out
    assert again.skipped == first.skipped and again.ids == first.ids
    assert np.allclose(again.vectors, first.vectors, atol=1e-5)
    local = embed_collection(collect(d), cache_dir=cache, progress=False)  # one memory for both paths
    assert local.cache_stats["known_bad"] == 5 and local.cache_stats["decoded"] == 0  # the vectors Ray kept
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
    assert st3["known_bad"] == 0 and st3["embed_sent"] == 5 and retried.skipped == first.skipped
    assert embed_collection(collect(other), cache_dir=cache, progress=False).cache_stats["known_bad"] == 3
    with EmbeddingStore(cache) as store:
        assert store.forget_failures() == 5 + 3  # without keys: every one


def test_ray_embeds_a_file_whose_name_is_not_utf8_as_the_local_path_does(ray_cluster, tmp_path):
    """A name of Latin-1 bytes (an old archive's "caf\xe9.jpg") is a str with a surrogate escape
    in Python. Before: building the Ray Data blocks of paths raised UnicodeEncodeError (pyarrow's
    strings are UTF-8): an internal error for the whole collection."""
    from broken_media import jpeg_bytes, photo

    from mediacluster.embed import embed_collection
    from mediacluster.encoders import get_encoder
    from mediacluster.executors.ray_executor import RayExecutor
    from mediacluster.ingest import collect

    d = tmp_path / "photos"
    d.mkdir()
    (d / "plain.jpg").write_bytes(jpeg_bytes(photo((96, 64), seed=1)))
    odd = os.fsdecode(bytes(d) + b"/caf\xe9.jpg")
    Path(odd).write_bytes(jpeg_bytes(photo((96, 64), seed=2)))
    coll = collect(d)
    assert odd in coll.paths
    enc = get_encoder("efficientnet-lite0")
    exe = RayExecutor(address=ray_cluster.address, workers=1)
    emb = exe.embed(coll, encoder=enc, cache_dir=tmp_path / "cache", progress=False,
                    encoder_spec="efficientnet-lite0")
    assert not emb.skipped and sorted(emb.paths) == sorted(coll.paths)
    local = embed_collection(collect(d), cache_dir=tmp_path / "local", progress=False)
    np.testing.assert_allclose(emb.vectors[emb.paths.index(odd)], local.vectors[local.paths.index(odd)], atol=1e-5)


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
