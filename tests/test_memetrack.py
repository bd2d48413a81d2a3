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


def _scrape(root, n=12):
    """``n`` images (two kinds: reddish noise, bluish noise) and a post table naming them, with
    a row whose file was never downloaded and a post id written twice (more likes the second
    time)."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        px = rng.random((32, 32, 3)) * 80
        px[..., i % 2 * 2] += 170
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
    assert named_assignments(run).columns.tolist() == run.read_assignments().columns.tolist()


@pytest.fixture(autouse=True)
def _no_browser(monkeypatch):
    monkeypatch.setenv("BROWSER", "true")
