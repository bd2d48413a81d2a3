"""``cluster --dedup`` on the streamed path: a vectors file fitted on a sample (``--fit-sample``
below the collection size), the duplicate groups found over every item from the run's
memory-mapped vectors, the sample drawn among their representatives, every copy given its
representative's cluster; the saved model's duplicate index answers for new vectors.

The collection: 1,500 vectors around 6 centres in 64-d with 20 planted groups (each source row
plus 2 byte-identical and 2 near copies, 1e-3 noise), shuffled so copies sit in other assignment
batches than their representative, before or after it.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pandas as pd
import pytest

from mediacluster.cli import main
from mediacluster.pipeline import Pipeline
from mediacluster.rundir import RunDir

N, GROUPS, COPIES, DIM = 1500, 20, 4, 64
FAST = ["--no-names", "--reducer", "pca", "--reducer-param", "n_components=8", "--clusterer", "kmeans",
        "--clusterer-param", "n_clusters=6", "--batch-rows", "128", "--quiet"]


def cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def planted_vectors(seed: int = 0) -> tuple[np.ndarray, list[list[int]]]:
    """(vectors, groups): each group the row numbers of one source row and its copies."""
    rng = np.random.default_rng(seed)
    C = rng.normal(size=(6, DIM)) * 1.5
    X = (C[rng.integers(0, 6, N)] + rng.normal(size=(N, DIM))).astype(np.float32)
    sources = rng.choice(N, GROUPS, replace=False)
    rows, owner = [X], []
    for g, s in enumerate(sources):
        for j in range(COPIES):
            v = X[s].copy() if j < 2 else X[s] + rng.normal(size=DIM).astype(np.float32) * 1e-3
            rows.append(v[None])
            owner.append(g)
    X = np.concatenate(rows)
    perm = rng.permutation(len(X))  # new row of old row k: where[k]
    where = np.empty(len(X), np.int64)
    where[perm] = np.arange(len(X))
    groups = [[int(where[s])] + [int(where[N + g * COPIES + j]) for j in range(COPIES)]
              for g, s in enumerate(sources)]
    return X[perm], groups


@pytest.fixture(scope="module")
def sampled_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("dedupscale")
    X, groups = planted_vectors()
    np.save(root / "v.npy", X)
    out = root / "run"
    code, text, err = cli("cluster", root / "v.npy", "--out", out, "--fit-sample", 300, "--dedup",
                          "--save-model", *FAST)
    assert code == 0, text + err
    return root, X, groups, out


def test_sampled_dedup_keeps_every_copy_group_in_one_cluster(sampled_run):
    root, X, groups, out = sampled_run
    run = RunDir.open(out)
    assert run.info["fit_sample"]["size"] == 300 and run.info["fit_sample"]["of"] == len(X)
    a = run.read_assignments()
    assert len(a) == len(X) and {"duplicate_group", "duplicate_of"} <= set(a.columns)
    dg = a["duplicate_group"].to_numpy()
    for g in groups:  # every planted copy is found, in its source's group and its cluster
        assert dg[g[0]] >= 0 and len(set(dg[g].tolist())) == 1, g
        for col in ("cluster", "assigned_cluster", "probability", "confidence"):
            assert a[col].iloc[g].nunique() == 1, (col, g)
    # the guarantee holds for every group found, not just the planted ones
    per = a[a["duplicate_group"] >= 0].groupby("duplicate_group")[["cluster", "assigned_cluster"]].nunique()
    assert (per.to_numpy() == 1).all()
    # members name their representative, which is a member of the same group
    ids = a["id"].astype(str).tolist()
    row = {x: i for i, x in enumerate(ids)}
    for i in np.flatnonzero(dg >= 0):
        rep = a["duplicate_of"].iloc[i]
        if isinstance(rep, str):
            assert dg[row[rep]] == dg[i] and a["cluster"].iloc[row[rep]] == a["cluster"].iloc[i]
    # the fit saw representatives only: the examples (drawn from the fitted items) are no copies
    clusters = run.read_clusters()
    shown = [row[str(e)] for c in clusters for e in c["examples"]]
    assert shown and all(a["duplicate_of"].isna().iloc[shown])
    assert all("duplicates" in c for c in clusters)
    assert sum(c["duplicates"]["items"] for c in clusters) == int((dg >= 0).sum())
    table = run.read_duplicates()
    assert len(table) == len(X) and np.array_equal(table["duplicate_group"].to_numpy(), dg)
    info = run.info["duplicates"]
    assert info["groups"] == len(set(dg[dg >= 0].tolist())) >= GROUPS and info["items"] == len(X)
    assert info["links"]["semantic"] > 0 and info["links"]["exact"] == 0  # vectors only: no file hashes
    assert "dedup" in run.info["timings_s"] and "dedup" in run.info["peak_rss_mb"]


def test_sampled_dedup_finds_the_groups_a_full_fit_finds(sampled_run, tmp_path):
    root, X, groups, out = sampled_run
    full = tmp_path / "full"
    code, text, err = cli("cluster", root / "v.npy", "--out", full, "--fit-sample", "all", "--dedup", *FAST)
    assert code == 0, text + err
    a, b = RunDir.open(out).read_duplicates(), RunDir.open(full).read_duplicates()
    pd.testing.assert_frame_equal(a, b)


def test_saved_model_of_a_sampled_dedup_run_answers_duplicate_of(sampled_run, tmp_path):
    root, X, groups, out = sampled_run
    model = RunDir.open(out).models.latest()
    assert (model / "duplicates" / "duplicates.json").exists()
    assert Pipeline.load(model).model_info_["metadata"]["duplicates"] is True
    rng = np.random.default_rng(7)
    g = groups[3]
    new = np.stack([X[g[1]] + rng.normal(size=DIM).astype(np.float32) * 1e-4,  # a repost of group 3
                    rng.normal(size=DIM).astype(np.float32) * 40])  # far from everything
    np.save(tmp_path / "new.npy", new)
    dst = tmp_path / "assigned.csv"
    code, text, err = cli("assign", out, tmp_path / "new.npy", "--out", dst, "--quiet")
    assert code == 0, text + err
    got = pd.read_csv(dst, dtype={"duplicate_of": str})
    a = RunDir.open(out).read_assignments()
    dg = a["duplicate_group"].to_numpy()
    match = got["duplicate_of"].iloc[0]
    assert isinstance(match, str) and dg[int(match)] == dg[g[0]]
    assert got["duplicate_group"].iloc[0] == dg[g[0]]
    assert 0 <= got["duplicate_distance"].iloc[0] < 1e-3  # a cosine distance, never below 0
    assert pd.isna(got["duplicate_of"].iloc[1]) and got["duplicate_group"].iloc[1] == -1


def test_sampled_dedup_refuses_a_collection_of_copies(tmp_path):
    X = np.repeat(np.ones((1, 8), np.float32), 10, axis=0)
    np.save(tmp_path / "same.npy", X)
    code, text, err = cli("cluster", tmp_path / "same.npy", "--out", tmp_path / "run", "--fit-sample", 5,
                          "--dedup", *FAST)
    assert code == 2
    assert "only 1 distinct after --dedup" in err
    assert not (tmp_path / "run").exists()
