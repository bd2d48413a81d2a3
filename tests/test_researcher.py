"""What a researcher reporting a study needs from a run with levels: every level scored against
labels, a table of the clusters of every level with their names, a static map figure and a
methods paragraph (300 CIFAR-10 images, PCA + the hierarchy clusterer: quick)."""

from __future__ import annotations

import json
from html import escape

import numpy as np
import pandas as pd
import pytest

from mediacluster import metrics as M
from mediacluster.cli import main
from mediacluster.rundir import RunDir


@pytest.fixture(scope="module")
def tree_run(cifar3_embeddings, tmp_path_factory, one_blas_thread):
    from mediacluster.pipeline import Pipeline
    from mediacluster.stages import registry
    from mediacluster.workflow import publish_run

    pipe = Pipeline(reducer=registry.build("reducer", "pca", {"n_components": 10}), clusterer="hierarchy",
                    random_state=0).fit(cifar3_embeddings.vectors)
    assert len(pipe.n_clusters_per_level_) >= 3
    out = tmp_path_factory.mktemp("tree") / "run"
    publish_run(out, cifar3_embeddings, pipe, save_model=True)
    return out


def test_evaluate_scores_every_level(tree_run, cifar3_embeddings, tmp_path, capsys):
    a = pd.read_parquet(tree_run / "assignments.parquet")
    cols = sorted((c for c in a.columns if c.startswith("level_")), key=lambda c: int(c[6:]))
    # a coarse labelling (two groups of the three classes) as a researcher's --labels manifest
    first = sorted(set(cifar3_embeddings.labels))[0]
    coarse = [("a" if y == first else "b") for y in cifar3_embeddings.labels]
    manifest = tmp_path / "coarse.csv"
    pd.DataFrame({"id": list(cifar3_embeddings.ids), "label": coarse}).to_csv(manifest, index=False)
    out = tmp_path / "ev.json"
    assert main(["evaluate", str(tree_run), "--labels", str(manifest), "--out", str(out),
                 "--no-original", "--vote-k", "0"]) == 0
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    levels = res["levels"]
    assert [e["level"] for e in levels] == list(range(len(cols)))
    for e, c in zip(levels, cols):  # each level's numbers are the metrics module's on that column
        ext = M.external_scores(coarse, a[c].to_numpy())
        assert e["nmi"] == pytest.approx(ext["all"]["nmi"]) and e["n_clusters"] == a[c].nunique()
    best = max(levels, key=lambda e: e["ami"])
    assert f"best AMI: level {best['level']}" in printed and "every level against the 2 classes" in printed
    # folder labels 'a/<class>' cut to their first folder score as the coarse labels do
    pd.DataFrame({"id": list(cifar3_embeddings.ids),
                  "label": [f"{c}/{y}" for c, y in zip(coarse, cifar3_embeddings.labels)]}).to_csv(manifest, index=False)
    cut = tmp_path / "cut.json"
    assert main(["evaluate", str(tree_run), "--labels", str(manifest), "--label-depth", "1", "--out", str(cut),
                 "--no-original", "--vote-k", "0"]) == 0
    assert "labels cut to their first 1 folder(s)" in capsys.readouterr().out
    assert json.loads(cut.read_text())["levels"] == levels
    assert main(["evaluate", str(tree_run), "--label-depth", "0"]) == 2
    assert "--label-depth must be >= 1" in capsys.readouterr().err


def test_cluster_table_and_named_assignments(tree_run):
    from mediacluster.naming import cluster_table, named_assignments

    run = RunDir.open(tree_run)
    a = run.read_assignments()
    lv = run.read_levels(a)
    (tree_run / "names.yaml").write_text("0: my first group\n", encoding="utf-8")
    t = cluster_table(tree_run)
    assert list(t["level"].unique()) == list(range(len(lv)))
    for k, lab in zip(lv.index, lv.labels):
        rows = t[t["level"] == k].set_index("cluster")
        ids, sizes = np.unique(lab, return_counts=True)
        assert rows.index.tolist() == ids.tolist() and rows["size"].tolist() == sizes.tolist()
        assert rows["share"].sum() == pytest.approx(1.0)
        if k == 0:
            assert (rows["parent"] == -1).all()
        else:  # each cluster's parent is the coarser cluster of every one of its items
            prev = lv.labels[k - 1]
            for c in ids:
                assert set(prev[lab == c].tolist()) == {rows.loc[c, "parent"]}
    stored = run.read_level_names()
    assert stored, "the run was named when clustering"
    in_use = t[t["in_use"]]
    assert in_use["level"].nunique() == 1 and int(in_use["level"].iloc[0]) == lv.level
    hand = in_use.set_index("cluster").loc[0]
    assert hand["name"] == "my first group" and bool(hand["name_sure"]) is True
    other = next(k for k in lv.index if k != lv.level)  # another level: its stored automatic names
    assert t[t["level"] == other].set_index("cluster")["name"].to_dict() == {
        e["cluster"]: e["name"] for e in stored[other]}
    # the assignments with a name per level, as `assign --out` writes them, joinable on id
    na = named_assignments(tree_run)
    assert len(na) == len(a) and (na["id"] == a["id"]).all()
    for k in lv.index:
        assert na.columns.get_loc(f"level_{k}_name") == na.columns.get_loc(f"level_{k}") + 1
        want = t[t["level"] == k].set_index("cluster")["name"]
        assert (na[f"level_{k}_name"].to_numpy() == want.loc[na[f"level_{k}"]].to_numpy()).all()
    (tree_run / "names.yaml").unlink()


def test_report_writes_the_map_as_a_figure(tree_run, capsys):
    from PIL import Image

    run = RunDir.open(tree_run)
    n_levels = len(run.read_levels())
    png = tree_run.parent / "map.png"
    assert main(["report", str(tree_run), "--quiet", "--figure", str(png), "--figure-level", "0"]) == 0
    assert f"figure: {png}" in capsys.readouterr().out
    with Image.open(png) as im:
        assert im.format == "PNG" and min(im.size) >= 800
        px = np.asarray(im.convert("RGB"))
    assert (px < 250).any(axis=2).mean() > 0.005  # points drawn, not a blank page
    assert run.read_map(len(run.read_assignments())) is not None  # the report's map, cached
    svg = tree_run.parent / "map.svg"
    from mediacluster.naming import cluster_table
    from mediacluster.report.figure import map_figure

    map_figure(tree_run, svg, level=n_levels - 1, labels=3)
    text = svg.read_text(encoding="utf-8")
    finest = cluster_table(tree_run).query("level == @n_levels - 1").nlargest(3, "size")
    for name in finest["name"]:  # the three largest clusters are labelled with their names
        assert f">{escape(name)}" in text
    # refused before any work, naming the option
    assert main(["report", str(tree_run), "--figure", str(tree_run.parent / "map.jpg")]) == 2
    assert main(["report", str(tree_run), "--figure", str(png), "--figure-level", str(n_levels)]) == 2
    err = capsys.readouterr().err
    assert "--figure" in err and f"levels 0..{n_levels - 1}" in err


def test_methods_paragraph_and_fingerprint(tree_run, cifar3_embeddings, tmp_path, one_blas_thread):
    from mediacluster.pipeline import Pipeline
    from mediacluster.report import make_report
    from mediacluster.report.methods import assignments_fingerprint, methods_text
    from mediacluster.stages import registry
    from mediacluster.workflow import publish_run

    run = RunDir.open(tree_run)
    info = run.info
    text = methods_text(run)
    counts = info["summary"]["levels"]["n_clusters"]
    assert ", ".join(str(c) for c in counts) in text and f"level {info['summary']['levels']['level']} " in text
    assert "n_components=10" in text and f"scikit-learn {info['versions']['scikit-learn']}" in text
    assert f"seed {info.get('seed', 0)}" in text
    fp = assignments_fingerprint(run)
    assert f"`{fp}`" in text
    html = make_report(tree_run, progress=False)  # the report writes it beside index.html
    assert (html.parent / "methods.md").read_text(encoding="utf-8") == methods_text(run)
    # a re-fit with the same seed gives the same groups and fingerprint; another level does not
    again = Pipeline(reducer=registry.build("reducer", "pca", {"n_components": 10}), clusterer="hierarchy",
                     random_state=0).fit(cifar3_embeddings.vectors)
    assert assignments_fingerprint(publish_run(tmp_path / "again", cifar3_embeddings, again, name=False)) == fp
    other = Pipeline(reducer=registry.build("reducer", "pca", {"n_components": 10}), clusterer="hierarchy",
                     random_state=0, level=(again.level_ + 1) % len(counts)).fit(cifar3_embeddings.vectors)
    assert assignments_fingerprint(publish_run(tmp_path / "other", cifar3_embeddings, other, name=False)) != fp


def test_cluster_report_names_the_methods_file(cifar3_embeddings, tmp_path, capsys, one_blas_thread):
    vec = tmp_path / "v.npy"
    np.save(vec, cifar3_embeddings.vectors)
    out = tmp_path / "run"
    assert main(["cluster", str(vec), "--out", str(out), "--reducer", "pca", "--reducer-param", "n_components=10",
                 "--clusterer", "hierarchy", "--report", "--quiet"]) == 0
    printed = capsys.readouterr().out
    methods = out / "report" / "methods.md"
    assert f"fingerprint): {methods}" in printed and "nested levels" in methods.read_text(encoding="utf-8")
