"""What a researcher reporting a study needs from a run with levels: every level scored against
labels, a table of the clusters of every level with their names, a static map figure and a
methods paragraph (300 CIFAR-10 images, PCA + the hierarchy clusterer: quick)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from mediacluster import metrics as M
from mediacluster.cli import main


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
    best = max(levels, key=lambda e: e["nmi"])
    assert f"best NMI: level {best['level']}" in printed and "every level against the 2 classes" in printed
