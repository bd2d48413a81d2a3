"""``mediacluster evaluate`` on a real run folder (300 CIFAR-10 images) and on a saved model."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mediacluster import metrics as M
from mediacluster.cli import main
from mediacluster.errors import ParameterError


@pytest.fixture(scope="module")
def run_dir(cifar3_embeddings, tmp_path_factory):
    """A run folder laid out as ``mediacluster cluster --save-model`` writes it.

    PCA + HDBSCAN (instead of the UMAP default) keeps the fixture quick; HDBSCAN leaves noise,
    so both the fitted and the noise-assigned labellings exist.
    """
    from mediacluster.pipeline import Pipeline
    from mediacluster.stages.cluster import HDBSCANClusterer
    from mediacluster.stages.reduce import PCAReducer
    from mediacluster.workflow import publish_run

    out = tmp_path_factory.mktemp("run") / "run"
    emb = cifar3_embeddings
    pipe = Pipeline(reducer=PCAReducer(n_components=10), clusterer=HDBSCANClusterer(min_cluster_size=15),
                    random_state=0).fit(emb.vectors)
    assert (pipe.labels_ == -1).any() and pipe.n_clusters_ >= 2
    publish_run(out, emb, pipe, save_model=True)
    return out


def _read(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def test_evaluate_run_folder(run_dir, cifar3_embeddings, capsys, caplog):
    caplog.set_level("INFO", logger="mediacluster.evaluation")
    assert main(["evaluate", str(run_dir)]) == 0
    printed = capsys.readouterr().out
    # each scoring step is said, then its seconds (50,000 items: minutes of silence before)
    said = [r.getMessage() for r in caplog.records if r.name == "mediacluster.evaluation"]
    for step in ("neighbour vote (10 nearest labelled items", "fitted labelling: internal scores on the original",
                 "assigned labelling: internal scores in the reduced space"):
        assert any(m.startswith(step) and m.endswith(" ...") for m in said), (step, said)
        assert any(m.startswith(step) and m.endswith(" s") for m in said), (step, said)
    assert "coverage" in printed and "NMI" in printed and "original space" in printed
    res = _read(run_dir / "evaluation.json")
    assert not list(run_dir.glob(".evaluation.json*"))  # atomic write left no temp file
    a = pd.read_parquet(run_dir / "assignments.parquet")
    y = cifar3_embeddings.labels
    assert set(res["labelings"]) == {"fitted", "assigned"}
    fitted, assigned = res["labelings"]["fitted"], res["labelings"]["assigned"]
    assert fitted["coverage"] == pytest.approx((a["cluster"] >= 0).mean()) and fitted["coverage"] < 1
    assert assigned["coverage"] == 1.0
    # internal scores in both spaces, with the space and noise policy stated
    for e in (fitted, assigned):
        assert set(e["internal"]) == {"original", "reduced"}
        assert e["internal"]["original"]["dims"] == 1280 and e["internal"]["reduced"]["dims"] == 10
        assert e["internal"]["original"]["silhouette"]["exclude_noise"] is True
    # the numbers are exactly the metrics module's on the same labels
    ext = M.external_scores(y, a["cluster"].to_numpy())
    assert fitted["external"]["all"] == pytest.approx(ext["all"])
    assert fitted["external"]["clustered"] == pytest.approx(ext["clustered"])
    ext2 = M.external_scores(y, a["assigned_cluster"].to_numpy())
    assert assigned["external"]["all"]["nmi"] == pytest.approx(ext2["all"]["nmi"])
    sil = M.silhouette(cifar3_embeddings.vectors, a["cluster"].to_numpy())
    assert fitted["internal"]["original"]["silhouette"]["value"] == pytest.approx(sil["value"])
    assert res["noise_policy"]["external"] == M.NOISE_POLICY_EXTERNAL


def test_evaluate_labels_file_and_unlabelled_items(run_dir, tmp_path, capsys):
    items = pd.read_parquet(run_dir / "items.parquet")
    lab = items["label"].tolist()
    lab[:50] = [None] * 50  # unlabelled items are excluded from external scores
    pd.DataFrame({"path": items["path"], "label": lab}).to_csv(tmp_path / "truth.csv", index=False)
    out = tmp_path / "ev.json"
    assert main(["evaluate", str(run_dir), "--labels", str(tmp_path / "truth.csv"),
                 "--out", str(out), "--labeling", "fitted", "--no-original"]) == 0
    res = _read(out)
    assert "matched by path" in res["labels_matched"]
    assert set(res["labelings"]) == {"fitted"}
    e = res["labelings"]["fitted"]
    assert set(e["internal"]) == {"reduced"}
    assert e["external"]["n_labelled"] == 250 and e["external"]["n_unlabelled"] == 50
    assert "true labels" in capsys.readouterr().out
    # items.parquet keeps paths relative to the collection root (as read above); a labels file
    # with the files' absolute paths matches the same items
    from mediacluster.rundir import RunDir

    absolute = RunDir.open(run_dir).read_items()["path"]
    assert not items["path"].map(os.path.isabs).any() and absolute.map(os.path.isabs).all()
    pd.DataFrame({"path": absolute, "label": lab}).to_csv(tmp_path / "truth_abs.csv", index=False)
    assert main(["evaluate", str(run_dir), "--labels", str(tmp_path / "truth_abs.csv"),
                 "--out", str(out), "--labeling", "fitted", "--no-original"]) == 0
    assert _read(out)["labelings"]["fitted"]["external"] == e["external"]


def test_evaluate_run_without_labels_or_model(run_dir, tmp_path):
    run2 = tmp_path / "run2"
    shutil.copytree(run_dir, run2, ignore=shutil.ignore_patterns("models", "evaluation.json"))
    items = pd.read_parquet(run2 / "items.parquet")
    items["label"] = None
    items.to_parquet(run2 / "items.parquet", index=False)
    assert main(["evaluate", str(run2), "--labeling", "fitted"]) == 0
    res = _read(run2 / "evaluation.json")
    e = res["labelings"]["fitted"]
    assert "external" not in e and set(e["internal"]) == {"original"}
    assert any("no true labels" in n for n in res["notes"])
    assert any("reduced space not available" in n for n in res["notes"])


def test_evaluate_bare_model(run_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(run_dir / "models" / "v0001", model)
    items = pd.read_parquet(run_dir / "items.parquet")
    items[["label"]].to_csv(tmp_path / "labels.csv", index=False)  # no ids: matched by position
    assert main(["evaluate", str(model), "--labels", str(tmp_path / "labels.csv")]) == 0
    res = _read(model / "evaluation.json")
    assert res["kind"] == "model" and "position" in res["labels_matched"]
    fitted = res["labelings"]["fitted"]
    assert set(fitted["internal"]) == {"reduced"}
    a = pd.read_parquet(run_dir / "assignments.parquet")
    assert fitted["external"]["all"]["nmi"] == pytest.approx(
        M.external_scores(items["label"], a["cluster"].to_numpy())["all"]["nmi"])


def test_evaluate_never_writes_into_a_published_model_version(run_dir, tmp_path, capsys):
    """RUN/models/v0001 is read by assign and serve as it was published: evaluating it without
    --out is refused before any work, saying where the scores can go; with --out it is scored."""
    version = run_dir / "models" / "v0001"
    before = sorted(p.name for p in version.iterdir())
    assert main(["evaluate", str(version)]) == 2
    err = capsys.readouterr().err
    assert "published model version" in err and "--out" in err and str(run_dir) in err, err
    assert sorted(p.name for p in version.iterdir()) == before
    out = tmp_path / "v0001-evaluation.json"
    assert main(["evaluate", str(version), "--out", str(out)]) == 0
    assert _read(out)["kind"] == "model"
    assert sorted(p.name for p in version.iterdir()) == before, "nothing written into the version"


def test_evaluate_refuses_bad_input(run_dir, tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "missing")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", str(tmp_path / "empty")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    bad = tmp_path / "bad_model"
    shutil.copytree(run_dir / "models" / "v0001", bad)
    (bad / "evil.pkl").write_bytes(b"\x80\x04K\x01.")
    assert main(["evaluate", str(bad)]) == 2
    assert "pickle" in capsys.readouterr().err
    # a labels file that matches nothing is an error, not silent zeros
    pd.DataFrame({"id": ["x", "y"], "label": ["a", "b"]}).to_csv(tmp_path / "l.csv", index=False)
    assert main(["evaluate", str(run_dir), "--labels", str(tmp_path / "l.csv"), "--no-original",
                 "--out", str(tmp_path / "e.json")]) == 2
    assert not (tmp_path / "e.json").exists()
    assert np.isfinite(_read(run_dir / "models" / "v0001" / "model.json")["n_items"])


def test_evaluate_a_run_fitted_on_a_sample(cifar3_embeddings, tmp_path, capsys):
    """A run fitted on a sample has a model: the note says so (it said 'no model in the run folder'
    and blamed a curated model)."""
    np.save(tmp_path / "v.npy", np.asarray(cifar3_embeddings.vectors, np.float32))
    out = tmp_path / "run"
    assert main(["cluster", str(tmp_path / "v.npy"), "--out", str(out), "--fit-sample", "100", "--save-model",
                 "--reducer", "pca", "--reducer-param", "n_components=8", "--clusterer", "kmeans",
                 "--clusterer-param", "n_clusters=3", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0
    text = capsys.readouterr().out
    n = len(cifar3_embeddings.vectors)
    assert f"the model was fitted on 100 of the run's {n} items (a fit sample)" in text, text
    assert "no model in the run folder" not in text and "curated" not in text


def test_evaluate_prints_each_labelling_by_what_it_is(run_dir, tmp_path, capsys):
    """A run curated in the studio is scored as curated, and printed so (the curated labelling was
    headed 'after noise assignment')."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    a = pd.read_parquet(run / "assignments.parquet")
    a["curated_cluster"] = np.where(a["assigned_cluster"] == 0, 1, a["assigned_cluster"])  # a merge
    a.to_parquet(run / "assignments.parquet")
    assert main(["evaluate", str(run), "--no-original", "--out", str(tmp_path / "e.json")]) == 0
    text = capsys.readouterr().out
    heads = [ln for ln in text.splitlines() if ln.startswith("[")]
    assert [h.split(":")[0] for h in heads] == ["[fitted] as fitted", "[assigned] after noise assignment",
                                                "[curated] as curated in the studio (curated_cluster)"], heads
    cur = _read(tmp_path / "e.json")["labelings"]["curated"]
    assert cur["n_clusters"] == len(set(a["curated_cluster"][a["curated_cluster"] >= 0]))


def test_label_issues_lists_items_against_their_clusters_label():
    from mediacluster.evaluation import ISSUE_COLUMNS, label_issues

    truth = ["a", "a", "a", "b", "a", "b", "c", None, "b", "a"]
    clusters = [0, 0, 0, 0, 1, 1, -1, 0, 2, 2]
    paths = [f"/photos/{t or 'x'}/{i}.jpg" for i, t in enumerate(truth)]
    table, summary = label_issues(truth, clusters, ids=[f"id{i}" for i in range(10)], paths=paths,
                                  root="/photos")
    assert list(table.columns) == ISSUE_COLUMNS
    # cluster 0: three a and one b (the unlabelled item 7 counts for nothing): b is the issue;
    # clusters 1 and 2 hold a and b alike: mixed, nothing listed; noise (item 6) passed over
    assert table["item"].tolist() == [3]
    r = table.iloc[0]
    assert (r["id"], r["path"], r["label"], r["cluster"], r["cluster_label"]) == ("id3", "b/3.jpg", "b", 0, "a")
    assert r["cluster_label_share"] == pytest.approx(0.75) and r["label_share"] == pytest.approx(0.25)
    assert r["cluster_size"] == 4
    assert summary["items"] == 1 and summary["labelled"] == 8 and summary["share"] == pytest.approx(1 / 8)
    assert summary["clusters_mixed"] == 2 and [m["cluster"] for m in summary["mixed"]] == [1, 2]
    # excluded items (junk in a curation) are neither issues nor counted
    table, summary = label_issues(truth, clusters, exclude=[i == 3 for i in range(10)])
    assert table.empty and summary["labelled"] == 7
    # the least supported label first: a 1-of-5 label before a 1-of-4 one
    table, _ = label_issues(list("aaabxxxxy"), [0, 0, 0, 0, 1, 1, 1, 1, 1])
    assert table["item"].tolist() == [8, 3] and table["id"].tolist() == [8, 3]


def test_neighbour_vote_tells_a_flipped_label_from_a_clustering_mistake():
    """Two classes apart in the vectors: a flipped label is outvoted by its neighbours; an item
    of class b that the clustering put with the a's keeps its b neighbours' vote. Both disagree
    with their cluster; the vote ranks the flipped label first."""
    from mediacluster.evaluation import ISSUE_COLUMNS, label_issues, neighbour_vote

    rng = np.random.default_rng(0)
    X = rng.normal(0, 1, (60, 8))
    X[:30, 0] += 12
    X[30:, 1] += 12
    truth = ["a"] * 30 + ["b"] * 30
    truth[3] = "b"  # a wrong label: an a image filed under b
    truth[10] = None  # unlabelled: neither votes nor is voted on
    clusters = np.array([0] * 30 + [1] * 30)
    clusters[45] = 0  # a clustering mistake: a b image put with the a's
    clusters[50] = -1  # noise: still voted on
    truth[50] = "a"  # a wrong label the clustering left out as noise
    vote = neighbour_vote(X, truth, k=5)
    assert vote["k"] == 5 and np.isnan(vote["disagreement"][10]) and vote["label"][10] is None
    assert vote["disagreement"][3] == 1.0 and vote["label"][3] == "a" and vote["share"][3] == 1.0
    assert vote["disagreement"][45] == 0.0 and vote["label"][45] == "b"
    assert vote["disagreement"][50] == 1.0 and vote["label"][50] == "b"
    table, summary = label_issues(truth, clusters, vote=vote)
    assert list(table.columns) == ISSUE_COLUMNS
    assert table["item"].tolist() == [3, 50, 45]  # the vote's order: outvoted labels first
    assert table["cluster_disagrees"].tolist() == [True, False, True]
    assert table.loc[1, "cluster"] == -1 and pd.isna(table.loc[1, "cluster_size"])
    assert summary["items"] == 2 and summary["neighbour_vote"]["items"] == 2
    import io

    from mediacluster.cli.evaluate import print_issues

    buf = io.StringIO()
    print_issues(table, "assigned", out=buf)
    lines = buf.getvalue().strip("\n").splitlines()[1:]
    assert lines[0].startswith("  3: 3: b -> a (100% of its neighbours")
    assert lines[1].startswith("  50: 50: a -> b") and lines[1].endswith("in no cluster")
    assert "its neighbours carry its label" in lines[2] and lines[2].endswith("a clustering mistake?")
    # without the vote: the cluster rule alone cannot tell 3 from 45 (both 1 b among the a's)
    alone, _ = label_issues(truth, clusters)
    assert sorted(alone["item"]) == [3, 45] and alone["neighbour_disagreement"].isna().all()
    assert alone["label_share"].nunique() == 1
    with pytest.raises(ParameterError, match="vote k"):
        neighbour_vote(X, truth, k=0)


def test_a_vote_k_above_the_labelled_count_is_said():
    """`evaluate --vote-k 50` with 12 labelled items voted with the 11 others and said nothing;
    the run's notes now say how many neighbours the vote used."""
    from mediacluster.evaluation import evaluate

    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 8)).astype(np.float32)
    truth = ["a"] * 6 + ["b"] * 6
    src = {"path": "run", "kind": "run", "notes": [], "fitted": np.repeat([0, 1], 6), "ids": None,
           "X": X, "truth": truth}
    res = evaluate(src, vote_k=50, original=False)
    assert any("vote k 50" in n and "used 11" in n for n in res["notes"]), res["notes"]
    assert not any("vote k" in n for n in evaluate({**src, "notes": []}, vote_k=5, original=False)["notes"])


def test_evaluate_lists_the_items_whose_label_disagrees(run_dir, tmp_path, capsys):
    """A few labels flipped to another class: evaluate lists them in label_issues.csv beside
    evaluation.json, with their cluster's label (the true one) and the studio's item number."""
    items = pd.read_parquet(run_dir / "items.parquet")
    a = pd.read_parquet(run_dir / "assignments.parquet")
    lab = items["label"].tolist()
    classes = sorted(set(lab))
    cl = a["assigned_cluster"].to_numpy()
    truth = items["label"].to_numpy()
    # three items, each of a cluster most of whose items are of its class (70% or more)
    clean = [i for i in range(len(cl)) if (truth[cl == cl[i]] == truth[i]).mean() >= 0.7]
    flipped = clean[::len(clean) // 3][:3]
    assert len(flipped) == 3
    for i in flipped:
        lab[i] = classes[(classes.index(lab[i]) + 1) % len(classes)]
    pd.DataFrame({"path": items["path"], "label": lab}).to_csv(tmp_path / "truth.csv", index=False)
    out = tmp_path / "ev.json"
    assert main(["evaluate", str(run_dir), "--labels", str(tmp_path / "truth.csv"), "--out", str(out),
                 "--no-original"]) == 0
    printed = capsys.readouterr().out
    res = _read(out)
    assert res["label_issues_of"] == "assigned"
    table = pd.read_csv(tmp_path / "ev.label_issues.csv")
    assert res["labelings"]["assigned"]["label_issues"]["items"] == int(table["cluster_disagrees"].sum())
    vote = res["labelings"]["assigned"]["label_issues"]["neighbour_vote"]
    assert vote["k"] == 10 and vote["items"] == int((table["neighbour_label"] != table["label"]).sum())
    assert "label issues" in printed and "ev.label_issues.csv" in printed and "neighbour vote" in printed
    # sorted by the neighbour vote, most outvoted first; each flipped item outvoted for its class
    assert table["neighbour_disagreement"].is_monotonic_decreasing
    for i in flipped:
        row = table[table["item"] == i]
        assert row["neighbour_label"].iloc[0] == truth[i] and row["neighbour_disagreement"].iloc[0] > 0.5
    # each flipped item is listed, suggesting its true class (its cluster's label)
    for i in flipped:
        row = table[table["item"] == i]
        assert len(row) == 1 and row["cluster_label"].iloc[0] == truth[i] and row["label"].iloc[0] == lab[i]
        assert row["path"].iloc[0] == items["path"].iloc[i]
    # the run's own labels, written into the run folder
    assert main(["evaluate", str(run_dir), "--no-original"]) == 0
    table = pd.read_csv(run_dir / "label_issues.csv")
    flagged = table["cluster_disagrees"]
    assert (table["label"] != table["cluster_label"])[flagged].all()
    assert (flagged | (table["label"] != table["neighbour_label"])).all()
    assert (truth[table["item"]] == table["label"]).all()


def test_folder_label_name_makes_train_and_test_one_class(imagenette_dir, tmp_path, capsys):
    """train/ and test/ holding the same class folders: ``--folder-label name`` labels each file
    by its own folder (2 classes, not 4), so evaluate scores against the classes and a test
    item is not a label issue for sitting among train items of its class."""
    root = tmp_path / "photos"
    for split, part in (("train", slice(0, 12)), ("test", slice(12, 18))):
        for cls in ("n01440764", "n03888257"):
            (root / split / cls).mkdir(parents=True)
            for f in sorted((imagenette_dir / cls).iterdir())[part]:
                shutil.copy(f, root / split / cls / f.name)
    out = tmp_path / "run"
    assert main(["cluster", str(root), "--out", str(out), "--folder-label", "name", "--quiet",
                 "--cache-dir", str(tmp_path / "cache"), "--no-names", "--reducer", "pca",
                 "--reducer-param", "n_components=5", "--clusterer", "kmeans",
                 "--clusterer-param", "n_clusters=2"]) == 0
    items = pd.read_parquet(out / "items.parquet")
    assert sorted(set(items["label"])) == ["n01440764", "n03888257"]
    assert items["path"].str.startswith("test/").sum() == 12
    capsys.readouterr()
    assert main(["evaluate", str(out), "--no-original"]) == 0
    ext = _read(out / "evaluation.json")["labelings"]["fitted"]["external"]
    assert ext["n_classes"] == 2 and ext["all"]["acc"] > 0.9  # tench against parachutes
    assert len(pd.read_csv(out / "label_issues.csv")) <= 2
    with pytest.raises(SystemExit) as e:  # refused by the parser, before any work
        main(["cluster", str(root), "--out", str(tmp_path / "run2"), "--folder-label", "last"])
    assert e.value.code == 2 and "--folder-label" in capsys.readouterr().err


@pytest.mark.parametrize("flag,value,name", [("--seed", "-1", "seed"), ("--seed", str(2**32), "seed"),
                                             ("--sample-size", "-5", "sample_size"),
                                             ("--dbcv-sample-size", "-5", "dbcv_sample_size")])
def test_a_seed_or_sample_size_numpy_cannot_take_is_refused_by_name(flag, value, name, run_dir, tmp_path, capsys):
    # before: numpy's "expected non-negative integer" / "negative dimensions" as an internal
    # error after the scoring had started (a crash log, exit 1)
    out = tmp_path / "e.json"
    assert main(["evaluate", str(run_dir), flag, value, "--no-original", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert name in err and "internal error" not in err
    assert not out.exists()


def test_a_labelling_the_run_lacks_is_refused_naming_those_it_has(run_dir, tmp_path, capsys):
    # before: "(has: fitted only)" whatever the run held (this one has a noise-assigned labelling too)
    assert main(["evaluate", str(run_dir), "--labeling", "curated", "--no-original",
                 "--out", str(tmp_path / "e.json")]) == 2
    assert "labelling 'curated' not available" in (err := capsys.readouterr().err)
    assert "(has: fitted, assigned)" in err


def test_labels_keep_their_written_form(tmp_path):
    """Digit or speaker-number labels print as written: a labels CSV's '07' stays '07' (as the
    manifests cluster reads), integer labels never turn into 8.0 by a mixed cluster or an empty
    vote (the FSDD digits were printed '2.0 -> 8', cluster label '8.0')."""
    from mediacluster.evaluation import label_issues, neighbour_vote, read_labels

    pd.DataFrame({"path": ["a.wav", "b.wav", "c.wav"], "label": ["07", "7", ""]}).to_csv(
        tmp_path / "labels.csv", index=False)
    labels, how = read_labels(tmp_path / "labels.csv", None, [str(tmp_path / p) for p in ("a.wav", "b.wav", "c.wav")],
                              3, root=str(tmp_path))
    assert labels == ["07", "7", None] and "3 of 3" in how
    # cluster 0: label 2 with one 8; cluster 1: mixed (NaN label), holding the other 8 (a label
    # only one labelled item carries gets no vote: the neighbour vote cannot judge it)
    truth = [2, 2, 2, 8, 3, 4, 8, 5]
    clusters = [0, 0, 0, 0, 1, 1, 1, 1]
    X = np.eye(8, dtype=np.float32)
    X[:4, 0] += 5  # the first four items are each other's neighbours
    table, _ = label_issues(truth, clusters, vote=neighbour_vote(X, truth, 3))
    row = table[table["item"] == 3].iloc[0]
    assert [str(row[c]) for c in ("label", "cluster_label", "neighbour_label")] == ["8", "2", "2"]


def test_ids_in_a_labels_file_keep_their_written_form(tmp_path):
    """A labels CSV's ids are names as the run stores them: ids '000'..'119' (an .npz's zero-padded
    ids) were read as the numbers 0..119, so only '100'..'119' matched ("matched by id: 20 of
    120 items", scored against one class); a blank id cell made the whole column floats
    ('0.0'), so no id matched at all."""
    from mediacluster.evaluation import read_labels

    ids = [f"{i:03d}" for i in range(12)]
    (tmp_path / "zeros.csv").write_text("id,label\n" + "".join(f"{i},{int(i) % 3}\n" for i in ids))
    labels, how = read_labels(tmp_path / "zeros.csv", ids, None, 12)
    assert labels == [str(i % 3) for i in range(12)] and "12 of 12" in how
    rows = [str(i) for i in range(12)]
    (tmp_path / "blank.csv").write_text("id,label\n" + "".join(f"{i},a\n" for i in rows[:6]) + ",b\n")
    labels, how = read_labels(tmp_path / "blank.csv", rows, None, 12)
    assert labels == ["a"] * 6 + [None] * 6 and "6 of 12" in how


def test_paths_in_a_labels_file_are_matched_as_the_files_they_name(tmp_path):
    """A labels file written from ``find . -name '*.jpg'`` in the collection gives paths such as
    './cats/1.jpg': joined to the collection root as written ('/root/./cats/1.jpg') they matched
    no item ("no row matches the items by 'id' or 'path'"); nor did '/root//dogs/2.jpg'."""
    from mediacluster.evaluation import read_labels

    root = tmp_path / "coll"
    paths = [str(root / "cats" / "1.jpg"), str(root / "dogs" / "2.jpg"), str(root / "dogs" / "3.jpg")]
    (tmp_path / "l.csv").write_text(f"path,label\n./cats/1.jpg,cat\n{root}//dogs/2.jpg,dog\n"
                                    "dogs/../dogs/3.jpg,dog\n")
    labels, how = read_labels(tmp_path / "l.csv", ["a", "b", "c"], paths, 3, root=str(root))
    assert labels == ["cat", "dog", "dog"] and "3 of 3" in how


def test_labels_are_matched_by_the_key_column_that_names_the_most_items(tmp_path):
    """A labels file with both an ``id`` and a ``path`` column was matched by ``id`` as soon as
    one id named an item, so a file whose ids were another system's (one of them equal to an
    item's id by chance) left every other item unlabelled although its paths named them all.
    The column that names the most items is used now (a tie: ``id``)."""
    from mediacluster.evaluation import read_labels

    root = tmp_path / "coll"
    paths = [str(root / f"{i}.jpg") for i in range(4)]
    (tmp_path / "l.csv").write_text("id,path,label\n0,0.jpg,cat\nx7,1.jpg,dog\nx8,2.jpg,dog\nx9,3.jpg,cat\n")
    labels, how = read_labels(tmp_path / "l.csv", ["0", "1", "2", "3"], paths, 4, root=str(root))
    assert labels == ["cat", "dog", "dog", "cat"] and how == "matched by path: 4 of 4 items"
    (tmp_path / "t.csv").write_text("id,path,label\n0,0.jpg,cat\n1,1.jpg,dog\n")
    labels, how = read_labels(tmp_path / "t.csv", ["0", "1", "2", "3"], paths, 4, root=str(root))
    assert labels == ["cat", "dog", None, None] and how.startswith("matched by id")


def test_an_out_folder_gets_evaluation_json_inside_it(run_dir, tmp_path, capsys):
    """``evaluate RUN --out results`` with ``results`` an existing folder scored everything and
    then failed "cannot write results: Is a directory" (exit 2, the work lost); ``--out new/``
    wrote a file named ``new``. A folder (existing, or written with a trailing separator) now
    gets ``evaluation.json`` and ``label_issues.csv`` inside it."""
    (tmp_path / "results").mkdir()
    for given in (str(tmp_path / "results"), str(tmp_path / "new") + os.sep):
        assert main(["evaluate", str(run_dir), "--no-original", "--vote-k", "0", "--out", given]) == 0
        folder = Path(given)
        assert (folder / "evaluation.json").is_file() and (folder / "label_issues.csv").is_file()
        assert f"written: {folder / 'evaluation.json'}" in capsys.readouterr().out


def test_a_parquet_labels_file_with_nullable_columns_reads_missing_as_unlabelled(tmp_path):
    """Labels written by pandas as nullable integers or strings (``Int64``, ``string``: a
    missing label is ``pd.NA``) stopped ``evaluate --labels`` with an internal error
    ("TypeError: boolean value of NA is ambiguous")."""
    from mediacluster.evaluation import read_labels

    ids = [str(i) for i in range(6)]
    for dtype, vals in (("Int64", [0, None, 1, 1, None, 0]), ("string", ["a", None, "b", "b", None, "a"])):
        pd.DataFrame({"id": ids, "label": pd.array(vals, dtype=dtype)}).to_parquet(tmp_path / "l.parquet")
        labels, how = read_labels(tmp_path / "l.parquet", ids, None, 6)
        assert [v is None for v in labels] == [False, True, False, False, True, False], dtype
        assert [str(v) for v in labels if v is not None] == [str(v) for v in vals if v is not None]


def test_each_level_is_scored_against_the_labels():
    """A voice collection's hierarchy holds the speakers at one level and speaker + word at a
    finer one: evaluate scores every level, so a person sees which level their labels match,
    and which one the run's clusters are."""
    import io

    from mediacluster.cli.evaluate import print_report
    from mediacluster.evaluation import evaluate, level_scores

    speaker = np.repeat([0, 1, 2], 20)
    word = np.tile(np.repeat([0, 1], 10), 3)
    levels = [(0, speaker.copy()), (1, speaker * 2 + word)]
    truth = [f"spk{s}" for s in speaker]
    res = level_scores(truth, levels)
    assert [r["n_clusters"] for r in res] == [3, 6]
    assert res[0]["ami"] == pytest.approx(1.0) and res[1]["ami"] < 0.9
    words = level_scores([f"w{w}" for w in word], levels)
    assert words[1]["ami"] > words[0]["ami"]
    src = {"path": "run", "kind": "run", "notes": [], "fitted": levels[1][1], "levels": levels,
           "level_in_use": 1, "ids": None, "X": None, "truth": truth}
    ev = evaluate(src, vote_k=None)
    assert ev["levels"] == res and ev["level_in_use"] == 1
    buf = io.StringIO()
    print_report(ev, out=buf)
    lines = [ln for ln in buf.getvalue().splitlines() if ln.lstrip().startswith("level ")]
    assert len(lines) == 2 and "<- best" in lines[0] and "<- in use" in lines[1] and "3 clusters" in lines[0]


def test_a_curation_that_only_renamed_is_not_scored_again(run_dir, tmp_path, capsys):
    """Curated clusters that are the assigned ones under other ids (a studio that only renamed):
    the internal scores are the assigned labelling's, taken, not computed again (on 50,000 items
    11 s of 1:42; the neighbour vote's 80 s is the most of it); a real change (a merge) is scored."""
    import shutil

    from mediacluster.evaluation import same_partition

    assert same_partition([0, 0, 1, -1, -2], [5, 5, 3, -1, -2])
    assert not same_partition([0, 0, 1, -1], [5, 5, 5, -1])  # a merge
    assert not same_partition([0, 1, 1, -1], [0, 1, 2, -1])  # a split
    assert not same_partition([0, 0, 1, -1], [0, 0, 1, 1])  # noise given a cluster
    assert not same_partition([0, -1, 1, 1], [-1, 0, 1, 1])  # as much noise, on other items
    assert not same_partition([0, 0, -2], [0, 0, -1])
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    a = pd.read_parquet(run / "assignments.parquet")
    a["curated_cluster"] = np.where(a["assigned_cluster"] >= 0, a["assigned_cluster"] + 100, a["assigned_cluster"])
    a.to_parquet(run / "assignments.parquet")
    assert main(["evaluate", str(run), "--out", str(tmp_path / "e.json")]) == 0
    printed = capsys.readouterr().out
    lab = _read(tmp_path / "e.json")["labelings"]
    for space in ("original", "reduced"):
        cur, asg = lab["curated"]["internal"][space], lab["assigned"]["internal"][space]
        assert cur["same_as"] == "assigned" and "same_as" not in asg
        assert cur["silhouette"] == asg["silhouette"]
    assert "[curated] as curated in the studio" in printed
    a["curated_cluster"] = np.where(a["assigned_cluster"] == 0, 1, a["assigned_cluster"])  # a merge: scored
    a.to_parquet(run / "assignments.parquet")
    assert main(["evaluate", str(run), "--out", str(tmp_path / "e2.json")]) == 0
    assert "same_as" not in _read(tmp_path / "e2.json")["labelings"]["curated"]["internal"]["original"]


def test_a_run_whose_latest_was_rolled_back_is_scored_with_its_own_model(cifar3_embeddings, tmp_path, capsys):
    """``models RUN --use v0001`` (a rollback to the previous run's version) left ``evaluate RUN``
    without the reduced space, saying "no model in the run folder" while the run's own v0002 was
    there: the run's own newest version is the one its clusters were fitted in."""
    np.save(tmp_path / "v.npy", np.asarray(cifar3_embeddings.vectors, np.float32))
    out = tmp_path / "run"
    fast = ["--reducer", "pca", "--reducer-param", "n_components=8", "--clusterer", "kmeans", "--quiet"]
    for k in (3, 4):
        assert main(["cluster", str(tmp_path / "v.npy"), "--out", str(out), "--save-model",
                     "--clusterer-param", f"n_clusters={k}", *fast]) == 0
    assert main(["models", str(out), "--use", "v0001"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--no-original", "--out", str(tmp_path / "e.json")]) == 0
    text = capsys.readouterr().out
    assert "no model" not in text and "the run's own v0002 used" in text, text
    assert "reduced" in _read(tmp_path / "e.json")["labelings"]["fitted"]["internal"]


def test_a_runs_model_store_is_evaluated_as_its_run(tmp_path, capsys):
    """``evaluate RUN/models`` (the store, which ``assign`` takes) said "not a run folder": it is
    the run's, so the run is evaluated (scores in RUN/evaluation.json, the store untouched); a
    store belonging to no run is refused saying what to give."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "v.npy", np.concatenate([rng.normal(c, 1, (30, 8)) for c in range(3)]).astype(np.float32))
    run = tmp_path / "run"
    assert main(["cluster", str(tmp_path / "v.npy"), "--out", str(run), "--save-model", "--quiet", "--no-names",
                 "--reducer", "pca", "--reducer-param", "n_components=4",
                 "--clusterer", "kmeans", "--clusterer-param", "n_clusters=3"]) == 0
    capsys.readouterr()
    store = sorted(p.name for p in (run / "models").iterdir())
    assert main(["evaluate", str(run / "models")]) == 0
    out = capsys.readouterr().out
    assert "model store of the run" in out and _read(run / "evaluation.json")["kind"] == "run", out
    assert sorted(p.name for p in (run / "models").iterdir()) == store
    shutil.copytree(run / "models", tmp_path / "alone")
    assert main(["evaluate", str(tmp_path / "alone")]) == 2
    err = capsys.readouterr().err
    assert "is a model store (versions v0001)" in err and "alone/v0001" in err and "--out" in err, err


def test_a_tune_output_folder_points_to_its_model_versions(tmp_path, capsys):
    """``evaluate DIR`` of ``tune --out DIR`` (study.db and models/, no run) said "DIR is not a
    run folder (no run.json); write one with `mediacluster cluster INPUT --out DIR`": a user who
    had just tuned was sent back to clustering, with no word of the model versions there."""
    from mediacluster.pipeline import Pipeline

    X = np.random.default_rng(0).normal(size=(60, 8)).astype(np.float32)
    Pipeline(reducer="pca", outliers=None, clusterer="kmeans").fit(X).publish(tmp_path / "t" / "models", source="tune")
    rc = main(["evaluate", str(tmp_path / "t")])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "holds models (models/v0001) but no run" in err and "evaluate" in err and "v0001 --out FILE" in err, err


def test_a_streamed_run_of_bare_vectors_has_no_labels_not_a_class_of_nan(tmp_path, capsys):
    """``cluster v.npy --fit-sample N`` (streamed from disk) stores the missing paths and labels as
    an all-null string column, read back as NaN: ``read_embeddings`` took the NaNs for labels and
    ``evaluate`` printed external scores "vs 0 classes" with a level table of n/a and a vote note,
    where the same run made without streaming says "no true labels"."""
    from mediacluster.rundir import RunDir

    rng = np.random.default_rng(0)
    np.save(tmp_path / "v.npy", np.vstack([rng.normal(size=(100, 8)) + 5 * np.eye(8)[i] for i in range(2)])
            .astype(np.float32))
    assert main(["cluster", str(tmp_path / "v.npy"), "--out", str(tmp_path / "run"), "--fit-sample", "60",
                 "--reducer", "pca", "--clusterer", "kmeans", "--quiet", "--no-names"]) == 0
    emb = RunDir.open(tmp_path / "run").read_embeddings()
    assert emb.labels is None and emb.paths is None
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run"), "--out", str(tmp_path / "e.json")]) == 0
    out = capsys.readouterr().out
    assert "no true labels" in out and "classes" not in out, out


def test_the_neighbour_vote_leaves_out_a_label_no_other_labelled_item_has(tmp_path, capsys):
    """With few labels, every item whose label no other labelled item shares was listed as
    outvoted (all its neighbours carry other labels): a vote cannot judge it. Such items get no
    vote and are counted as not judged; an item of a shared label is still judged."""
    from mediacluster.evaluation import neighbour_vote

    rng = np.random.default_rng(0)
    X = rng.normal(0, 1, (40, 8)).astype(np.float32)
    X[:20, 0] += 12
    truth = [None] * 40
    for i in range(6):  # six a's among the first twenty, one flipped to b
        truth[i] = "a"
    truth[5] = "b"
    truth[6] = "b"  # a second b: the label is shared, so both b's are judged
    truth[25] = "b"  # and a third apart (with one other b, one b among the neighbours is all it could hold)
    truth[20], truth[21] = "c", "d"  # one item each: nobody else to vote for them
    vote = neighbour_vote(X, truth, k=5)
    assert vote["alone"].tolist() == [i in (20, 21) for i in range(40)]
    assert vote["label"][20] is None and np.isnan(vote["disagreement"][20]) and np.isnan(vote["share"][21])
    assert vote["label"][5] == "a" and vote["disagreement"][5] > 0.5  # the flipped one, still judged
    # the real CLI on a run of these vectors with these labels
    ids = np.array([f"i{j}" for j in range(40)])
    np.savez(tmp_path / "v.npz", vectors=X, ids=ids)
    assert main(["cluster", str(tmp_path / "v.npz"), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    pd.DataFrame({"id": ids[[i for i in range(40) if truth[i]]],
                  "label": [t for t in truth if t]}).to_csv(tmp_path / "labels.csv", index=False)
    capsys.readouterr()
    out = tmp_path / "ev.json"
    assert main(["evaluate", str(tmp_path / "run"), "--labels", str(tmp_path / "labels.csv"), "--out", str(out),
                 "--no-original", "--vote-k", "5"]) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(tmp_path / "ev.label_issues.csv")
    lone = table[table["id"].isin(["i20", "i21"])]  # listed only where their cluster flags them
    assert lone["cluster_disagrees"].all() and lone["neighbour_label"].isna().all(), lone
    assert table.loc[table["id"] == "i5", "neighbour_label"].tolist() == ["a"]
    nv = next(e["label_issues"]["neighbour_vote"] for e in _read(out)["labelings"].values() if "label_issues" in e)
    assert nv["alone"] == 2 and nv["labelled"] == 10
    assert "2 not judged: no other labelled item has their label" in printed, printed


def test_a_correct_label_of_a_class_with_few_labels_is_not_outvoted_by_its_count():
    """Three labelled items of a class and ``k`` 10: the item's own label can hold at most 2 of
    the 10 votes, so a plurality listed every correct one as outvoted by the big class next to
    it. Judged by the share of the votes its label could hold, the correct ones keep their label;
    a wrong label of the small class (an item among the big class's) is still outvoted, and so
    is a small-class item whose neighbours hold none of its label's other items."""
    from mediacluster.evaluation import neighbour_vote

    rng = np.random.default_rng(0)
    big = rng.normal(0, 1, (30, 8)) + np.r_[10, np.zeros(7)]
    small = rng.normal(0, 0.3, (3, 8)) + np.r_[7, 3, np.zeros(6)]  # beside the big class, close together
    far = rng.normal(0, 1, (20, 8)) + np.r_[0, 0, 10, np.zeros(5)]
    X = np.vstack([big, small, far]).astype(np.float32)
    truth = ["big"] * 30 + ["small"] * 3 + ["far"] * 20
    truth[4] = "far"  # wrong: a big item labelled far (20 others of it, none near)
    vote = neighbour_vote(X, truth, k=10)
    assert [vote["label"][i] for i in (30, 31, 32)] == ["small"] * 3  # were "big": 8 of the 10 votes
    assert [vote["disagreement"][i] for i in (30, 31, 32)] == [0.8] * 3  # the share itself unchanged
    assert vote["label"][4] == "big"
    truth2 = list(truth)
    truth2[5] = "small"  # a big item labelled small: its 10 neighbours are big items, no small one
    assert neighbour_vote(X, truth2, k=10)["label"][5] == "big"
    # with ample labels the plurality stands: every big and far item keeps or loses its label as before
    assert all(vote["label"][i] == "big" for i in range(30)) and all(vote["label"][i] == "far" for i in range(33, 53))
