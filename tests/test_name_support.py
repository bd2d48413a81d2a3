"""How sure an automatic name is (naming.support): constructed probabilities, real slices, and the
run's records, report and CLI carrying it."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import dataset

from mediacluster.naming import support
from mediacluster.naming import wordnet as wn
from mediacluster.naming.names import name_clusters


def _peaked(rng, classes: list[str], per: int, peak: float = 0.9) -> np.ndarray:
    """``per`` items per class, each putting ``peak`` of its softmax on its class, the rest spread."""
    names = wn.imagenet_names()
    P = rng.dirichlet(np.ones(1000), size=per * len(classes)) * (1 - peak)
    for j, c in enumerate(classes):
        P[j * per:(j + 1) * per, names.index(c)] += peak
    return P.astype(np.float32)


def test_kappa_and_the_stated_criterion():
    assert support.kappa(0.8, 0.08) == pytest.approx((0.8 - 0.08) / 0.92)
    assert support.kappa(0.48, 0.48) == 0.0 and support.kappa(0.3, 0.5) < 0
    assert support.kappa(1.0, 1.0) == 0.0  # a collection certain of the name: nothing set apart
    assert support.decide(support.SURE, None) and not support.decide(support.SURE - 1e-9, None)
    assert not support.decide(0.9, 0.95)  # no better than random groups of its size
    # the sentence says which condition failed (0.497 shows as 0.50 but is below SURE)
    assert "needs 0.50" in support.why(False, 0.5, 0.0, 0.497, None)
    assert "this small" in support.why(False, 0.95, 0.0, 0.9, 0.95)
    assert support.note("clip-zeroshot") != support.note("imagenet-wordnet") == support.MOSTLY_UNSURE_NOTE
    assert [support.bucket(m) for m in (1, 2, 3, 63, 64, 65, 10_000)] == [1, 2, 2, 32, 64, 64, support.NULL_MAX_SIZE]


def test_peaked_in_domain_names_are_sure_flat_out_of_domain_ones_are_not(rng):
    # in domain: four kinds the encoder knows, each cluster's items confident of their class
    P = _peaked(rng, ["tench", "golf ball", "parachute", "gas pump"], per=30)
    lab = np.repeat(np.arange(4), 30)
    named = name_clusters(None, lab, imagenet_probs=P)
    assert [e["name"] for e in named] == ["tench", "golf ball", "parachute", "gas pump"]
    assert all(e["name_sure"] and e["name_support"] > 0.8 for e in named)
    assert all(e["name_why"].startswith("sure:") for e in named)
    # out of domain: every item's softmax flat, the same kind of flatness whatever its cluster;
    # the rule still finds a concept for each cluster, but none is set apart from the collection
    Q = rng.dirichlet(np.full(1000, 0.3), size=120).astype(np.float32)
    named = name_clusters(None, lab, imagenet_probs=Q)
    assert all(e["name"] for e in named)
    assert not any(e["name_sure"] for e in named)
    assert all(abs(e["name_support"]) < 0.2 and "do not set these items apart" in e["name_why"] for e in named)


def test_a_tiny_cluster_is_not_sure_because_it_is_small(rng):
    """A single item is named by its own top class and supports it by construction: the null
    (random single items of the same collection, named by the same rule) earns as much."""
    names = wn.imagenet_names()
    kinds = rng.choice(len(names), size=200, replace=False)
    P = _peaked(rng, [names[k] for k in kinds], per=1)
    lab = np.full(200, -1)
    lab[0] = 0
    lab[1:41] = 1  # 40 items of 40 different kinds: nothing the encoder is sure of for all
    e0, e1 = name_clusters(None, lab, imagenet_probs=P)
    assert e0["name_support"] > support.SURE  # high support ...
    assert not e0["name_sure"] and "this small" in e0["name_why"]  # ... but chance for one item
    assert not e1["name_sure"]


def test_zeroshot_names_speak_the_same_way(rng):
    """CLIP zero-shot names: the same fields, on votes (each member's best topic)."""
    votes = np.concatenate([np.zeros(40, int), np.ones(40, int), rng.integers(0, 5, 40)])
    lab = np.repeat([0, 1, 2], 40)
    S = np.eye(5)[votes]  # an item's similarities: 1 to its own topic
    sup = support.zeroshot_support(votes, lab, {0: 0, 1: 1, 2: int(np.bincount(votes[80:]).argmax())}, 5,
                                   group_name=lambda g: int(np.argmax(S[g].mean(axis=0))))
    assert sup[0]["name_sure"] and sup[1]["name_sure"] and sup[0]["name_support"] > 0.5
    assert not sup[2]["name_sure"] and sup[2]["name_why"].startswith("unsure:")
    assert "best topic" in sup[0]["name_why"]


def _embed_slice(archive: str, classes: list[str], per_class: int, tmp_path_factory):
    from mediacluster.datasets import extract_slice
    from mediacluster.embed import embed_collection
    from mediacluster.ingest import collect

    d = tmp_path_factory.mktemp(archive)
    extract_slice(dataset(archive), d, classes=classes, per_class=per_class, seed=0)
    coll = collect(d, labels_from_folders=True)
    return d, embed_collection(coll, cache_dir=tmp_path_factory.mktemp("cache"), progress=False)


@pytest.fixture(scope="module")
def mnist_slice(tmp_path_factory):
    """60 MNIST test digits (0, 1, 7: 20 each): drawn strokes ImageNet never saw."""
    return _embed_slice("mnist-test", ["0", "1", "7"], 20, tmp_path_factory)


@pytest.fixture(scope="module")
def imagenette_embeddings(imagenette_dir, tmp_path_factory):
    from mediacluster.embed import embed_collection
    from mediacluster.ingest import collect

    return embed_collection(collect(imagenette_dir, labels_from_folders=True),
                            cache_dir=tmp_path_factory.mktemp("cache"), progress=False)


def _by_class(emb):
    classes, lab = np.unique(np.asarray(emb.labels).astype(str), return_inverse=True)
    return classes, name_clusters(None, lab, imagenet_probs=emb.extras["imagenet_probs"])


def test_real_photos_of_imagenet_kinds_are_sure(imagenette_embeddings):
    """Imagenette photos (tench, church, parachute, springer; grouped by their true class): the
    classes ImageNet has are named surely; none of them falls below what the collection says."""
    classes, named = _by_class(imagenette_embeddings)
    by = dict(zip(classes, named))
    assert by["n01440764"]["name"] == "tench" and by["n01440764"]["name_sure"]
    assert by["n03888257"]["name_sure"] and by["n03028079"]["name_sure"]
    assert all(e["name_support"] > 0.3 for e in named)


def test_drawn_digits_are_unsure(mnist_slice):
    _, emb = mnist_slice
    classes, named = _by_class(emb)
    assert len(named) == 3 and all(e["name"] for e in named)  # the rule names them all ...
    assert not any(e["name_sure"] for e in named)  # ... and says it is not sure of any


def test_records_report_and_cli_carry_it(mnist_slice, tmp_path, capsys):
    """A real run of the CLI on the digits: clusters.json, names.json and level_names.json carry
    the support, the summary line counts the sure names, the report marks every unsure name
    (the name itself unchanged) and says once that the names are guesses; a person's name is
    sure."""
    from mediacluster.cli import main

    src, _ = mnist_slice
    out = tmp_path / "run"
    rc = main(["cluster", str(src), "--out", str(out), "--quiet", "--cache-dir", str(tmp_path / "c")])
    assert rc == 0
    text = capsys.readouterr().out
    clusters = json.loads((out / "clusters.json").read_text())["clusters"]
    names = json.loads((out / "names.json").read_text())["clusters"]
    assert clusters and all({"name_support", "name_sure", "name_why"} <= set(e) for e in clusters)
    assert [(e["name"], e["name_sure"]) for e in names] == [(e["name"], e["name_sure"]) for e in clusters]
    n_sure = sum(e["name_sure"] for e in clusters)
    assert n_sure * 2 < len(clusters)  # digits: most names unsure
    assert f"names: {n_sure} of {len(clusters)} sure" in text and support.MOSTLY_UNSURE_NOTE in text
    levels = json.loads((out / "level_names.json").read_text())["levels"] if (out / "level_names.json").exists() else {}
    assert all("name_sure" in e for named in levels.values() for e in named)
    info = json.loads((out / "run.json").read_text())
    assert info["summary"]["names"] == {"measured": len(clusters), "sure": n_sure, "mostly_unsure": True,
                                        "note": support.MOSTLY_UNSURE_NOTE}

    first = clusters[0]["cluster"]
    (out / "names.yaml").write_text(f"{first}: my digits\n", encoding="utf-8")
    assert main(["report", str(out), "--quiet"]) == 0
    page = (out / "report" / "index.html").read_text(encoding="utf-8")
    cards = page[page.index('<section id="clusters">'):page.index('<section id="noise">')]
    assert "names are guesses" in cards and 'class="note names-unsure"' in cards
    if 'data-view="' in cards:  # a run with levels: the run's own view (every view is marked alike)
        from test_report import _run_cards

        cards = _run_cards(page)
        assert 'data-name-sure="no"' in page[page.index('<div class="cards" data-view="0"'):]
    for e in clusters:
        m = re.search(rf'<section class="card" data-cluster="{e["cluster"]}" data-name-sure="(\w+)"(.*?)</section>',
                      cards, re.S)
        assert m, e["cluster"]
        h3 = re.search(r"<h3[^>]*>(.*?)</h3>", m.group(2), re.S).group(1)
        if e["cluster"] == first:  # a person's name: sure, whatever the automatic one was
            assert m.group(1) == "yes" and "my digits" in h3 and "unsure-mark" not in h3
        elif not e["name_sure"]:
            assert m.group(1) == "no" and 'class="unsure-mark"' in h3
            from html import unescape

            assert unescape(h3.split("<span", 1)[0]) == e["name"]  # the name string is unchanged
        else:
            assert m.group(1) == "yes" and "unsure-mark" not in h3

    # the studio's cluster list: the person's name sure, the automatic ones as measured; a
    # rename makes a name the person's, and so sure
    from mediacluster.studio.session import Studio

    st = Studio(out, warm=False)
    try:
        rows = {e["id"]: e for e in st.clusters()["clusters"]}
        assert rows[first]["name_sure"] is True and rows[first]["name"] == "my digits"
        unsure = [e["cluster"] for e in clusters if not e["name_sure"] and e["cluster"] != first]
        assert unsure and all(rows[c]["name_sure"] is False and rows[c]["name_why"].startswith("unsure:")
                              for c in unsure)
        st.edit("rename", {"cluster": unsure[0], "name": "sevens"})
        row = next(e for e in st.clusters()["clusters"] if e["id"] == unsure[0])
        assert row["name_sure"] is True and row["name_why"] == support.BY_HAND
    finally:
        st.close()
