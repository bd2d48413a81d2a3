"""What a researcher tracing meme templates through a scrape needs from a run made from her
post table (a CSV manifest of posts: id, file, time, platform, likes, author): her columns kept
with the run and carried by its tables (benchmarks/RESULTS.md, "Meme templates through a
scrape"). Tiny synthetic images, PCA + K-means: quick."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mediacluster.cli import main
from mediacluster.ingest import collect
from mediacluster.naming import named_assignments
from mediacluster.rundir import RunDir

QUICK = ["--quiet", "--no-names", "--reducer", "pca", "--reducer-param", "n_components=4",
         "--clusterer", "kmeans", "--clusterer-param", "n_clusters=2", "--seed", "0"]


def _quick(k):
    return [f"n_clusters={k}" if a.startswith("n_clusters=") else a for a in QUICK]


def _kind(i: int) -> int:
    """Image ``i``'s kind: the first 12 of two kinds, later ones of three (a new template)."""
    return i % 2 if i < 12 else i % 3


def _scrape(root, n=12):
    """``n`` images (kinds: stripes, a disc, checks; noisy; see :func:`_kind`) and a post table
    naming them, with a row whose file was never downloaded and a post id written twice (more
    likes the second time). A larger ``n`` grows the same scrape."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    yy, xx = np.mgrid[:64, :64]
    shapes = [(yy // 8) % 2, (yy - 32) ** 2 + (xx - 32) ** 2 < 400, (yy // 16 + xx // 16) % 2]  # stripes, disc, checks
    for i in range(n):
        px = rng.random((64, 64, 3)) * 60 + 150 * shapes[_kind(i)][..., None]
        Image.fromarray(px.astype(np.uint8)).save(root / "images" / f"m{i}.png")
        rows.append({"id": f"p{i:03d}", "path": f"images/m{i}.png", "Timestamp": f"2026-09-{7 + i:02d}T10:00:00",
                     "platform": ["reddit", "x"][i % 3 == 0], "like_count": 10 * i, "cluster": f"c{i}"})
    rows.append({**rows[0], "id": "gone", "path": "images/never.png"})
    rows.append({**rows[3], "like_count": 999})
    pd.DataFrame(rows).to_csv(root / "posts.csv", index=False)
    return root / "posts.csv"


def test_manifest_columns_travel_with_the_run(tmp_path, capsys):
    manifest = _scrape(tmp_path / "scrape")
    coll = collect(manifest)
    meta = coll.metadata
    # the kept rows only, in the items' order, the first row of a repeated id; numbers as numbers
    assert list(meta["id"]) == coll.ids == [f"p{i:03d}" for i in range(12)]
    assert list(meta.columns) == ["id", "timestamp", "platform", "like_count", "cluster"]
    assert meta["like_count"].tolist() == [10 * i for i in range(12)]
    assert meta["like_count"].dtype.kind == "i"
    out = tmp_path / "run"
    assert main(["cluster", str(manifest), "--out", str(out), "--cache-dir", str(tmp_path / "cache"), *QUICK]) == 3
    run = RunDir.open(out)
    kept = run.read_metadata()
    pd.testing.assert_frame_equal(kept, meta, check_dtype=False)
    assert kept["like_count"].dtype.kind == "i"
    a = named_assignments(run)
    assert len(a) == 12 and a["id"].tolist() == coll.ids
    # her columns after the run's own; one named like a run column keeps both
    assert a.columns[-4:].tolist() == ["timestamp", "platform", "like_count", "cluster_manifest"]
    assert a["cluster"].dtype.kind == "i" and a["cluster_manifest"].tolist() == [f"c{i}" for i in range(12)]
    assert a.set_index("id").loc["p003", "like_count"] == 30
    # the studio's table export (one row per post) carries them too
    capsys.readouterr()
    assert main(["studio", str(out), "--export", "csv"]) == 0
    exported = pd.read_csv(next((out / "exports").rglob("*.csv")))
    assert exported[["id", "like_count", "platform"]].equals(a[["id", "like_count", "platform"]])


def test_a_run_without_manifest_columns_has_no_metadata(tmp_path):
    manifest = _scrape(tmp_path / "scrape", n=6)
    pd.read_csv(manifest)[["id", "path"]].to_csv(manifest, index=False)
    assert collect(manifest).metadata is None
    out = tmp_path / "run"
    assert main(["cluster", str(manifest), "--out", str(out), "--cache-dir", str(tmp_path / "cache"), *QUICK]) == 3
    run = RunDir.open(out)
    assert run.read_metadata() is None and not (out / "metadata.parquet").exists()
    cols = run.read_assignments().columns.tolist()
    cols.insert(cols.index("cluster") + 1, "lineage")
    assert named_assignments(run).columns.tolist() == cols


def test_a_template_keeps_its_lasting_id_through_re_clusters(tmp_path):
    """Month 1: two kinds; month 2: the same files and a third kind; month 3: more of each.
    Cluster numbers are the fit's own each month; ``lineage`` names each group by the run and
    cluster where it was first seen, through every ``--carry-from``, without any studio edit."""
    from mediacluster.naming import cluster_lineage, cluster_table

    scrape = tmp_path / "scrape"
    runs = []
    for month, (n, kinds) in enumerate([(12, 2), (18, 3), (24, 3)]):
        manifest = _scrape(scrape, n=n)
        out = tmp_path / f"m{month}"
        carry = ["--carry-from", str(runs[-1])] if runs else []
        assert main(["cluster", str(manifest), "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
                     *_quick(kinds), *carry]) == 3
        runs.append(out)
    kind = {f"p{i:03d}": _kind(i) for i in range(24)}
    tables = [named_assignments(r).set_index("id") for r in runs]
    first = RunDir.open(runs[0]).run_id
    second = RunDir.open(runs[1]).run_id
    for t in tables:  # each month's clusters are the kinds (the test's premise)
        assert t.groupby(t.index.map(kind))["cluster"].nunique().eq(1).all()
    for month, t in enumerate(tables):
        by_kind = t.groupby(t.index.map(kind))["lineage"].agg(set)
        assert by_kind.map(len).eq(1).all()
        lasting = {k: next(iter(v)) for k, v in by_kind.items()}
        # the two first kinds keep month 1's id, the third its month 2 id, every month
        for k in (0, 1):
            c = tables[0].loc[tables[0].index.map(kind) == k, "cluster"].iloc[0]
            assert lasting[k] == f"{first}/{c}"
        if month >= 1:
            c = tables[1].loc[tables[1].index.map(kind) == 2, "cluster"].iloc[0]
            assert lasting[2] == f"{second}/{c}"
    last = cluster_table(runs[2])
    assert last.set_index("cluster")["lineage"].to_dict() == cluster_lineage(runs[2])
    # the methods paragraph a paper cites says which run the clusters continue, and how
    from mediacluster.report.methods import methods_text

    text = methods_text(runs[2])
    assert (f"matched to those of the previous run {second} by a mutual majority of their 18 shared items "
            "(compared by content): 3 kept, 0 split, 0 merged, 0 gone, 0 new") in text
    assert "previous run" not in methods_text(runs[0])
    assert "(2 could not be used and were left out: unreadable, missing or listed twice;" in text
    # the studio's table export carries it beside the curated cluster
    assert main(["studio", str(runs[2]), "--export", "csv"]) == 0
    exported = pd.read_csv(next((runs[2] / "exports").rglob("*.csv"))).set_index("id")
    assert exported.columns.get_loc("lineage") == exported.columns.get_loc("curated_name") + 1
    assert exported["lineage"].to_dict() == tables[2]["lineage"].to_dict()
    # a person merges the third kind into the first: the merged cluster keeps the larger part's id
    from mediacluster.studio.session import Studio

    t = tables[2]
    small, large = (int(t.loc[t.index.map(kind) == k, "cluster"].iloc[0]) for k in (2, 0))
    st = Studio(runs[2], warm=False, map_method="pca")
    try:
        st.edit("merge", {"clusters": [small, large]})
        _, merged, _ = st.curated_table()
    finally:
        st.close()
    merged = merged.set_index("id")["lineage"]
    assert set(merged[t.index.map(kind).isin([0, 2])]) == {f"{first}/{tables[0].loc['p000', 'cluster']}"}
    assert merged[t.index.map(kind) == 1].tolist() == t.loc[t.index.map(kind) == 1, "lineage"].tolist()


def test_group_lineage_follows_the_larger_part():
    """A curated cluster takes the lasting id of the fitted cluster it holds most of, when it
    holds the most of that cluster; the smaller part of a split is its own."""
    from mediacluster.naming.tables import group_lineage

    fitted = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, -1])
    lasting = {0: "A/0", 1: "B/1", 2: "A/2"}
    assert group_lineage(fitted, fitted, lasting, "R") == {0: "A/0", 1: "B/1", 2: "A/2"}
    # 1 merged into 0, or 0 into 1: either way the template of 0
    assert group_lineage(np.where(fitted == 1, 0, fitted), fitted, lasting, "R") == {0: "A/0", 2: "A/2"}
    assert group_lineage(np.where(fitted == 0, 1, fitted), fitted, lasting, "R") == {1: "A/0", 2: "A/2"}
    # 0 split into 0 (3 items) and a new 7 (1 item); 2 moved to junk -> its own id
    split = np.array([0, 0, 0, 7, 1, 1, 2, 2, 2, -1])
    assert group_lineage(split, fitted, lasting, "R") == {0: "A/0", 1: "B/1", 2: "A/2", 7: "R/7"}


@pytest.fixture(autouse=True)
def _no_browser(monkeypatch):
    monkeypatch.setenv("BROWSER", "true")


def test_dedup_that_leaves_a_handful_to_fit_says_where_the_groups_are(tmp_path, capsys):
    """Posts that are reposts and re-captions of a few templates: ``--dedup`` fits each group
    once, so the fit sees a handful of items and its automatic level is one cluster; the run
    says so and where the groups are instead of leaving one cluster as the answer."""
    from mediacluster.cli.cluster import few_fitted

    yy, xx = np.mgrid[:128, :128]
    shapes = [(yy // 16) % 2, (yy - 64) ** 2 + (xx - 64) ** 2 < 1600, (yy // 32 + xx // 32) % 2, yy > xx]
    d = tmp_path / "posts"
    d.mkdir()
    rng = np.random.default_rng(0)
    for t, shape in enumerate(shapes):
        base = Image.fromarray((rng.random((128, 128, 3)) * 40 + 200 * shape[..., None]).astype(np.uint8))
        for j in range(4):  # the template re-posted: re-encoded, resized
            base.resize((128 - 16 * j, 128 - 16 * j)).save(d / f"t{t}-{j}.jpg", quality=90 - 15 * j)
    out = tmp_path / "run"
    assert main(["cluster", str(d), "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--dedup",
                 "--quiet", "--no-names", "--reducer", "pca", "--reducer-param", "n_components=2", "--seed", "0"]) == 0
    printed = capsys.readouterr().out
    info = RunDir.open(out).info
    lv, dups = info["summary"]["levels"], info["duplicates"]
    assert dups["groups"] >= 3 and lv["n_clusters"][lv["auto_level"]] == 1  # the premise
    fitted = 16 - dups["duplicates"]  # one per group and the items in none
    assert fitted < 8 and (f"note: the fit saw {fitted} distinct items ({dups['items_in_groups']} of 16 items are "
                           f"in {dups['groups']} duplicate groups, each fitted once)") in printed
    assert f"--level {len(lv['n_clusters']) - 1}:" in printed
    # said only when the automatic level in use is one cluster of several levels
    assert few_fitted(dups, {**lv, "level": len(lv["n_clusters"]) - 1}) is None
    assert few_fitted(dups, {"n_clusters": [1], "level": 0, "auto_level": 0}) is None
    assert few_fitted(dups, {"n_clusters": [2, 4], "level": 0, "auto_level": 0}) is None


def test_a_post_table_with_its_own_column_names(tmp_path, capsys):
    """Her scrape's table names its columns post_id and file_name: --id-column / --path-column
    read it as it is (cluster and dups), with the roles' names refused when the table lacks them."""
    from mediacluster.errors import InputError, ParameterError

    manifest = _scrape(tmp_path / "scrape", n=6)
    pd.read_csv(manifest).rename(columns={"id": "post_id", "path": "File_Name"}).to_csv(manifest, index=False)
    cols = {"path": "file_name", "id": "POST_ID"}  # header names match case-insensitively
    coll = collect(manifest, columns=cols)
    assert coll.ids == [f"p{i:03d}" for i in range(6)] and coll.paths[0].endswith("m0.png")
    assert list(coll.metadata.columns) == ["id", "timestamp", "platform", "like_count", "cluster"]
    with pytest.raises(InputError, match=r"no column 'fname' \(given as its path column\); columns are \["):
        collect(manifest, columns={"path": "fname"})
    with pytest.raises(ParameterError, match="unknown manifest column role 'time'"):
        collect(manifest, columns={"time": "timestamp"})
    both = tmp_path / "both.csv"
    pd.read_csv(manifest).assign(path="x.png").to_csv(both, index=False)
    with pytest.raises(InputError, match="has a 'path' column too"):
        collect(both, columns=cols)
    out = tmp_path / "run"
    assert main(["cluster", str(manifest), "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
                 "--path-column", "file_name", "--id-column", "post_id", *QUICK]) == 3
    assert named_assignments(out)["id"].tolist() == coll.ids
    assert main(["dups", str(manifest), "--out", str(tmp_path / "dups"), "--no-embed", "--quiet",
                 "--cache-dir", str(tmp_path / "cache"), "--path-column", "file_name", "--id-column", "post_id"]) == 3
    assert pd.read_parquet(tmp_path / "dups" / "dups.parquet")["id"].tolist() == coll.ids
    capsys.readouterr()
    assert main(["cluster", str(manifest), "--out", str(tmp_path / "r2"), "--path-column", "fname", *QUICK]) == 2
    assert "no column 'fname'" in capsys.readouterr().err
