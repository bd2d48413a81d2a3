"""Large collections: vectors streamed from disk, a fit on a sample, every item assigned in batches.

Fast tests use small synthetic vectors (a mixture with known groups) and the PCA + K-means
pipeline; the tests that fit the default pipeline on real images, and the memory test, are
marked slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mediacluster.errors import InputError, ParameterError
from mediacluster.ingest.stream import NpyVectors, ParquetVectors, open_vectors, streamable
from mediacluster.pipeline import Pipeline
from mediacluster.rundir import RunDir
from mediacluster.scale import assign_batch, fit_sample_size, sample_rows
from mediacluster.workflow import cluster_folder

ROOT = Path(__file__).resolve().parents[1]


def mixture(n=1200, d=24, k=6, seed=0):
    rng = np.random.default_rng(seed)
    C = rng.normal(size=(k, d)) * 3
    y = rng.integers(0, k, n)
    return (C[y] + rng.normal(size=(n, d))).astype(np.float32), y


def fast_pipeline(k=6):
    return Pipeline(random_state=0).with_params({"reducer": "pca", "reducer__n_components": 8,
                                                 "clusterer": "kmeans", "clusterer__n_clusters": k})


# ---------------------------------------------------------------------------------- sources
def test_npy_source_reads_windows_and_samples(tmp_path):
    X, _ = mixture(n=1000)
    p = tmp_path / "v.npy"
    np.save(p, X.astype(np.float64))  # any numeric dtype, handed out as float32
    src = open_vectors(p)
    assert isinstance(src, NpyVectors) and (src.n, src.dim) == (1000, 24)
    assert src.npy_float32_file is None  # float64: copied row by row, not as a file
    got = np.vstack([b for _, b in src.batches(rows=128)])
    assert got.dtype == np.float32 and np.allclose(got, X)
    assert [s for s, _ in src.batches(rows=300)] == [0, 300, 600, 900]
    rows = np.array([0, 5, 6, 511, 999])
    assert np.allclose(src.take(rows), X[rows])
    assert src.ids()[:3] == ["0", "1", "2"] and src.labels() is None
    np.save(tmp_path / "f.npy", np.asfortranarray(X))  # column-major is read too
    assert np.allclose(open_vectors(tmp_path / "f.npy").read(10, 20), X[10:20])
    np.save(tmp_path / "f32.npy", X)
    assert open_vectors(tmp_path / "f32.npy").npy_float32_file == str(tmp_path / "f32.npy")


def test_npy_source_refuses_bad_files_with_row_numbers(tmp_path):
    X, _ = mixture(n=300)
    X[257, 3] = np.nan
    np.save(tmp_path / "nan.npy", X)
    src = open_vectors(tmp_path / "nan.npy")
    with pytest.raises(InputError, match=r"nan\.npy: row 257 contains NaN or infinity$"):
        list(src.batches(rows=100))
    with pytest.raises(InputError, match=r"nan\.npy: row 257 contains NaN or infinity$"):
        src.take(np.array([1, 257]))
    np.save(tmp_path / "one.npy", X[0])
    with pytest.raises(InputError, match="reshape"):
        open_vectors(tmp_path / "one.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="never unpickled"):
        open_vectors(tmp_path / "obj.npy")
    raw = (tmp_path / "nan.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError):
        list(open_vectors(tmp_path / "cut.npy").batches())


def write_shards(folder: Path, X, y, per_shard=400, row_group=150, fixed=True):
    folder.mkdir()
    for k, s in enumerate(range(0, len(X), per_shard)):
        part = X[s:s + per_shard]
        vec = (pa.FixedSizeListArray.from_arrays(pa.array(part.ravel()), part.shape[1]) if fixed
               else pa.array([r.tolist() for r in part]))
        t = pa.table({"id": [f"item{i}" for i in range(s, s + len(part))], "label": [str(v) for v in y[s:s + per_shard]],
                      "embedding": vec})
        pq.write_table(t, folder / f"part-{k:03d}.parquet", row_group_size=row_group)


@pytest.mark.parametrize("fixed", [True, False])
def test_parquet_shards_are_read_by_row_group(tmp_path, fixed):
    X, y = mixture(n=1000)
    write_shards(tmp_path / "vec", X, y, fixed=fixed)
    assert streamable(tmp_path / "vec")
    src = open_vectors(tmp_path / "vec")
    assert isinstance(src, ParquetVectors) and (src.n, src.dim) == (1000, 24)
    assert np.allclose(src.read(140, 810), X[140:810])
    rows = np.array([3, 149, 150, 399, 400, 999])
    assert np.allclose(src.take(rows), X[rows])
    assert src.ids()[998:] == ["item998", "item999"]
    assert src.labels()[:3] == [str(v) for v in y[:3]]


def test_parquet_shards_refuse_ragged_and_mismatched(tmp_path):
    d = tmp_path / "ragged"
    d.mkdir()
    pq.write_table(pa.table({"vector": [[1.0, 2.0], [1.0, 2.0, 3.0]]}), d / "a.parquet")
    with pytest.raises(InputError, match="different lengths"):
        open_vectors(d)
    d2 = tmp_path / "mixed"
    d2.mkdir()
    pq.write_table(pa.table({"vector": [[1.0, 2.0]]}), d2 / "a.parquet")
    pq.write_table(pa.table({"vector": [[1.0, 2.0]], "extra": [1]}), d2 / "b.parquet")
    with pytest.raises(InputError, match="differ from the first shard"):
        open_vectors(d2)
    d3 = tmp_path / "dupe"
    d3.mkdir()
    pq.write_table(pa.table({"id": ["a", "a"], "vector": [[1.0, 2.0], [3.0, 4.0]]}), d3 / "a.parquet")
    with pytest.raises(InputError, match="not unique"):
        open_vectors(d3).ids()


@pytest.mark.parametrize("fixed", [True, False])
def test_an_empty_first_shard_or_row_group_is_read_past(tmp_path, fixed):
    # before: the width was taken from the first row group, 0 rows wide, and every row refused
    # ("b.parquet: row 0 has 24 values, earlier rows 0")
    X, _ = mixture(n=30)
    typ = pa.list_(pa.float32(), 24) if fixed else pa.list_(pa.float32())
    d = tmp_path / "vec"
    d.mkdir()
    for name, rows in (("a", X[:0]), ("b", X[:20]), ("c", X[:0]), ("d", X[20:])):
        pq.write_table(pa.table({"id": [f"{name}{i}" for i in range(len(rows))],
                                 "vector": pa.array(list(rows), type=typ)}), d / f"{name}.parquet")
    src = open_vectors(d)
    assert (src.n, src.dim) == (30, 24)
    np.testing.assert_array_equal(src.read(0, 30), X)
    np.testing.assert_array_equal(src.take(np.array([0, 19, 20, 29])), X[[0, 19, 20, 29]])


# ---------------------------------------------------------------------------------- the sample
def test_fit_sample_size_rules():
    assert fit_sample_size("auto", 1000) == 1000
    assert fit_sample_size("auto", 10**6) < 10**6
    assert fit_sample_size("all", 10**6) == 10**6
    assert fit_sample_size(500, 300) == 300
    with pytest.raises(ParameterError):
        fit_sample_size(2, 100)
    with pytest.raises(ParameterError):
        fit_sample_size("most", 100)
    r = sample_rows(1000, 100, 0)
    assert len(r) == 100 and (np.diff(r) > 0).all() and np.array_equal(r, sample_rows(1000, 100, 0))


def test_assign_batch_keeps_what_the_fit_gave_its_rows():
    X, y = mixture(n=1500)
    rows = sample_rows(len(X), 400, 1)
    pipe = fast_pipeline().fit(X[rows])
    ref_xy = np.random.default_rng(0).normal(size=(len(rows), 2)).astype(np.float32)
    outs = [assign_batch(pipe, rows, s, X[s:s + 256], ref_xy) for s in range(0, len(X), 256)]
    cluster = np.concatenate([o["cluster"] for o in outs])
    xy = np.vstack([o["xy"] for o in outs])
    assert np.array_equal(cluster[rows], pipe.cluster_)
    assert np.allclose(xy[rows], ref_xy)
    from sklearn.metrics import normalized_mutual_info_score as nmi

    assert nmi(y, cluster) > 0.95  # well-separated groups: the assigned rest agrees with the truth


# ---------------------------------------------------------------------------------- whole runs
def test_streamed_run_writes_a_complete_run_folder(tmp_path):
    X, y = mixture(n=2000)
    np.save(tmp_path / "v.npy", X)
    res = cluster_folder(tmp_path / "v.npy", tmp_path / "out", pipeline=fast_pipeline(), fit_sample=500,
                         batch_rows=300, progress=False)
    run = RunDir.open(res.out)
    info = run.info
    assert info["fit_sample"] == {"size": 500, "of": 2000, "seed": 0}
    assert set(info["peak_rss_mb"]) >= {"vectors", "sample", "fit", "assign"}
    df = run.read_assignments()
    assert len(df) == 2000 and df["id"].tolist() == [str(i) for i in range(2000)]
    assert {"cluster", "status", "probability", "assigned_cluster", "confidence"} <= set(df.columns)
    csv = pd.read_csv(run.path / "assignments.csv")
    assert len(csv) == 2000 and csv["cluster"].tolist() == df["cluster"].tolist()
    assert np.array_equal(np.load(run.embeddings_path), X)  # the vectors, copied as they were
    emb = run.read_embeddings(mmap=True)
    assert len(emb) == 2000
    xy, meta = run.read_map(2000)
    assert meta["fit_sample"] == 500 and np.isfinite(xy).all()
    sizes = sum(c["size"] for c in run.read_clusters())
    assert sizes == int((df["cluster"] >= 0).sum())
    assert info["summary"]["items"] == 2000
    from sklearn.metrics import normalized_mutual_info_score as nmi

    assert nmi(y, df["cluster"]) > 0.95
    assert not (tmp_path / ".out.work").exists()  # no work left behind once published


def test_streamed_parquet_input_and_fit_on_everything(tmp_path):
    X, y = mixture(n=900)
    write_shards(tmp_path / "vec", X, y, per_shard=300, row_group=100)
    res = cluster_folder(tmp_path / "vec", tmp_path / "out", pipeline=fast_pipeline(), fit_sample=200,
                         batch_rows=250, progress=False, csv=False)
    run = RunDir.open(res.out)
    assert np.allclose(np.load(run.embeddings_path), X)
    df = run.read_assignments()
    assert df["id"].tolist()[:2] == ["item0", "item1"] and df["label"].tolist() == [str(v) for v in y]
    assert not (run.path / "assignments.csv").exists()
    # fit on all: the in-memory path, the same table layout
    res2 = cluster_folder(tmp_path / "vec", tmp_path / "out2", pipeline=fast_pipeline(), fit_sample="all",
                          progress=False)
    df2 = RunDir.open(res2.out).read_assignments()
    assert list(df2.columns) == list(df.columns)


def test_cli_fit_sample_and_executor_flags(tmp_path, capsys):
    from mediacluster.cli import main

    X, _ = mixture(n=600)
    np.save(tmp_path / "v.npy", X)
    rc = main(["cluster", str(tmp_path / "v.npy"), "--out", str(tmp_path / "o"), "--fit-sample", "200",
               "--batch-rows", "128", "--reducer", "pca", "--reducer-param", "n_components=5",
               "--clusterer", "kmeans", "--clusterer-param", "n_clusters=6", "--quiet", "--no-names"])
    assert rc == 0
    assert json.loads((tmp_path / "o" / "run.json").read_text())["fit_sample"]["size"] == 200
    assert "2-D map" not in capsys.readouterr().err  # --quiet
    rc = main(["cluster", str(tmp_path / "v.npy"), "--out", str(tmp_path / "o3"), "--fit-sample", "200",
               "--reducer", "pca", "--clusterer", "kmeans", "--clusterer-param", "n_clusters=6", "--no-names"])
    err = capsys.readouterr().err  # the sample's map, laid out before the assign bar, is said
    assert rc == 0 and "2-D map: laying out the 200 fitted items" in err
    assert err.index("2-D map") < err.index("assign")
    with pytest.raises(SystemExit):
        main(["cluster", str(tmp_path / "v.npy"), "--out", str(tmp_path / "o2"), "--fit-sample", "2"])
    assert "at least 3" in capsys.readouterr().err


@pytest.mark.slow
def test_ray_executor_without_ray_says_how_to_install(tmp_path):
    """Ray is optional: the local executor never imports it, the ray executor names the extra."""
    X, _ = mixture(n=300)
    np.save(tmp_path / "v.npy", X)
    code = textwrap.dedent(f"""
        import sys
        sys.modules["ray"] = None  # as if Ray were not installed: `import ray` raises ImportError
        from mediacluster.cli import main
        args = ["cluster", {str(tmp_path / 'v.npy')!r}, "--fit-sample", "100", "--quiet", "--no-names",
                "--reducer", "pca", "--clusterer", "kmeans", "--clusterer-param", "n_clusters=3"]
        rc = main(args + ["--out", {str(tmp_path / 'local')!r}])
        assert rc == 0, rc
        assert "ray" not in [m.split(".")[0] for m in sys.modules if sys.modules[m] is not None]
        sys.exit(main(args + ["--out", {str(tmp_path / 'ray')!r}, "--executor", "ray"]))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 2, p.stderr[-2000:]
    assert "pip install 'mediacluster[ray]'" in p.stderr
    assert (tmp_path / "local" / "run.json").exists() and not (tmp_path / "ray").exists()


# The measured peak of this run was ~575 MB (2026-11-30: a 921 MB file, 2,000-item sample, PCA +
# K-means, 4,096-row batches; the largest stage is the assignment, ~570 MB, then the 2-D map's
# UMAP of the sample, ~500 MB). The bound leaves room for other numpy/BLAS builds and stays
# below the file's size, so the test fails if the vectors are ever loaded whole.
RSS_BOUND_MB = 800


# Linux carries a process's peak RSS across exec, and a child forked (or vforked) from this big
# test process starts with this process's peak; a small launcher process in between makes the
# figure the command's own.
LAUNCHER = ("import json, os, subprocess, sys; p = subprocess.Popen(json.loads(sys.argv[1]), "
            "stdout=subprocess.DEVNULL); _, st, ru = os.wait4(p.pid, 0); "
            "print(json.dumps([os.waitstatus_to_exitcode(st), ru.ru_maxrss / 1024]))")


def peak_rss_mb(cmd: list[str], env: dict) -> tuple[int, float]:
    """(exit code, peak resident MB) of ``cmd``, run by a small launcher (see LAUNCHER)."""
    out = subprocess.run([sys.executable, "-c", LAUNCHER, json.dumps(cmd)], env=env, capture_output=True,
                         text=True, timeout=1800, check=True).stdout
    rc, peak = json.loads(out.strip().splitlines()[-1])
    return rc, peak


@pytest.mark.slow
def test_streaming_a_file_larger_than_the_memory_bound(tmp_path):
    """`mediacluster cluster` on a 1 GB vector file, in a child process whose peak resident
    memory (its own, from wait4) must stay under RSS_BOUND_MB (< the file's size)."""
    X, _ = mixture(n=20_000, d=768, k=20)
    rows = 340_000
    mm = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.float32, shape=(rows, 768))
    for k, s in enumerate(range(0, rows, len(X))):
        mm[s:s + len(X)] = (X + np.float32(1e-3 * k))[: rows - s]
    mm.flush()
    del mm
    size_mb = (tmp_path / "big.npy").stat().st_size / 2**20
    assert size_mb > RSS_BOUND_MB
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "mediacluster", "cluster", str(tmp_path / "big.npy"), "--out",
           str(tmp_path / "run"), "--fit-sample", "2000", "--batch-rows", "4096", "--reducer", "pca",
           "--reducer-param", "n_components=8", "--clusterer", "kmeans", "--clusterer-param", "n_clusters=20",
           "--no-names", "--no-csv", "--quiet"]
    rc, peak_mb = peak_rss_mb(cmd, env)
    assert rc == 0
    assert peak_mb < RSS_BOUND_MB, f"peak RSS {peak_mb:.0f} MB streaming a {size_mb:.0f} MB file"
    run = RunDir.open(tmp_path / "run")
    assert run.info["summary"]["items"] == rows
    assert max(run.info["peak_rss_mb"].values()) <= peak_mb + 1  # the stages' peaks, as sampled


# Measured 2026-11-30 on the 300 CIFAR-10 images of cifar3_embeddings, default reducer (UMAP) +
# K-means told k=3: fitted on 150 random items (sample seeds 0-3), the other 150 items agreed with
# a fit on all 300 for 0.887 / 0.927 / 0.940 / 0.960 of them after matching cluster ids one to one
# (samples of 100: 0.935-0.955; of 200: 0.94-0.98). With the default clusterer, which chooses k
# by the silhouette curve, a 150-item sample picks another k than the full fit (2 to 11 clusters
# on these 300 items), so agreement is about k, not assignment: that comparison is made at scale
# in benchmarks/RESULTS.md ("Scale", CIFAR-10 60,000).
SLICE_AGREEMENT = 0.85


@pytest.mark.slow
def test_sample_fit_then_assign_matches_a_full_fit_on_a_real_slice(cifar3_embeddings):
    from scipy.optimize import linear_sum_assignment

    X = cifar3_embeddings.vectors

    def pipe():
        return Pipeline(random_state=0).with_params({"clusterer": "kmeans", "clusterer__n_clusters": 3})

    full = pipe().fit(X).cluster_
    rows = sample_rows(len(X), 150, 0)
    sampled = pipe().fit(X[rows])
    got = assign_batch(sampled, rows, 0, X)["cluster"]
    rest = np.setdiff1d(np.arange(len(X)), rows)
    table = np.zeros((3, 3), dtype=np.int64)
    np.add.at(table, (got[rest], full[rest]), 1)
    r, c = linear_sum_assignment(-table)
    agreement = table[r, c].sum() / len(rest)
    assert agreement >= SLICE_AGREEMENT, agreement
    assert np.array_equal(got[rows], sampled.cluster_)


def test_a_folder_is_shards_only_when_it_holds_parquet_alone(tmp_path):
    X, y = mixture(n=50)
    write_shards(tmp_path / "vec", X, y)
    assert streamable(tmp_path / "vec")
    (tmp_path / "vec" / "photo.jpg").write_bytes(b"not really")
    assert not streamable(tmp_path / "vec")  # a media folder with a stray table is a media folder


@pytest.mark.parametrize("fit_sample", ["all", "60"])
def test_a_row_without_a_path_keeps_the_others_paths(tmp_path, fit_sample, capsys):
    """A Parquet vector file whose path column is empty on one row: every path was dropped (a
    sampled fit), and a whole fit dropped them all even when every row had one. The others keep
    theirs; the empty one is an item without a path, counted in run.json and printed."""
    from mediacluster.cli import main

    X, _ = mixture(n=120)
    paths = [f"/data/img/{i}.jpg" for i in range(len(X))]
    paths[5] = ""
    pd.DataFrame({"id": [f"i{i}" for i in range(len(X))], "path": paths,
                  "vector": list(X)}).to_parquet(tmp_path / "v.parquet")
    assert main(["cluster", str(tmp_path / "v.parquet"), "--out", str(tmp_path / "o"), "--fit-sample", fit_sample,
                 "--reducer", "pca", "--reducer-param", "n_components=4", "--clusterer", "kmeans",
                 "--clusterer-param", "n_clusters=3", "--quiet", "--no-names"]) == 0
    assert "items without a path: 1 (their path column is empty; e.g. i5)" in capsys.readouterr().out
    run = RunDir.open(tmp_path / "o")
    assert run.info["items_without_path"] == {"count": 1, "ids": ["i5"]}
    got = run.read_embeddings().paths
    assert got[4] == "/data/img/4.jpg" and got[6] == "/data/img/6.jpg" and not isinstance(got[5], str)
    assert ParquetVectors(tmp_path / "v.parquet").paths()[5] is None
    # an .npz's paths array (read whole, by ingest.collect) says an empty one as the Parquet does
    np.savez(tmp_path / "v.npz", vectors=X, ids=np.array([f"i{i}" for i in range(len(X))]), paths=np.array(paths))
    assert main(["cluster", str(tmp_path / "v.npz"), "--out", str(tmp_path / "z"), "--fit-sample", fit_sample,
                 "--reducer", "pca", "--reducer-param", "n_components=4", "--clusterer", "kmeans",
                 "--clusterer-param", "n_clusters=3", "--quiet", "--no-names"]) == 0
    assert RunDir.open(tmp_path / "z").info["items_without_path"] == {"count": 1, "ids": ["i5"]}
    assert RunDir.open(tmp_path / "z").read_embeddings().paths[6] == "/data/img/6.jpg"
