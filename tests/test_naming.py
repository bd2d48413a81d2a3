"""Automatic cluster names (WordNet lifting, zero-shot), names.yaml overrides, the WordNet API."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mediacluster.naming import wordnet as wn

CAT, DOMESTIC_CAT, DOG, CAR, SHIP = "n02121620", "n02121808", "n02084071", "n02958343", "n04194289"


def test_wordnet_api():
    assert CAT in wn.synsets_for("cat")
    assert wn.synsets_for("cats")[0] == CAT  # plural reduced like nltk's morphy
    assert wn.synsets_for("Tiger cat") == wn.synsets_for("tiger_cat") != []
    assert wn.synsets_for("no such word xyz") == []
    ims = wn.imagenet_synsets()
    assert len(ims) == 1000 and ims[0] == "n01440764" and len(set(ims)) == 1000
    tabby = ims[281]
    assert "tabby" in wn.lemmas(tabby)
    anc = wn.hypernym_closure(tabby)
    assert {DOMESTIC_CAT, CAT, "n00015388", "n00001740"} <= anc  # domestic cat, cat, animal, entity
    assert tabby not in anc
    assert wn.depth("n00001740") == 0 and wn.depth(CAT) > wn.depth("n00015388")
    assert wn.is_hypernym_or_synonym("automobile", CAR) and wn.is_hypernym_or_synonym("vehicle", CAR)
    assert not wn.is_hypernym_or_synonym("dog", CAT)
    assert len(wn.all_synsets()) == 82115  # WordNet 3.0 nouns


def test_lift_prefers_specific_covering_concept():
    from mediacluster.naming.imagenet import lift

    idx = [281, 282, 283]  # tabby, tiger cat, Persian cat
    mass = np.zeros(1000)
    mass[idx] = [0.4, 0.35, 0.25]
    best = lift(mass)[0]
    assert best["synset"] in (DOMESTIC_CAT, CAT), best  # not "tabby", not "animal"
    assert best["cover"] == pytest.approx(1.0)
    # one dominant class keeps its own name
    mass2 = np.full(1000, 0.02 / 999)
    mass2[idx[0]] = 0.98
    assert lift(mass2)[0]["synset"] == wn.imagenet_synsets()[idx[0]]
    # dog breeds + cat breeds in equal parts: a concept covering both (carnivore / mammal...)
    mass3 = np.zeros(1000)
    dogs = [i for i, s in enumerate(wn.imagenet_synsets()) if DOG in wn.hypernym_closure(s)][:20]
    mass3[dogs] = 0.5 / len(dogs)
    mass3[idx] = 0.5 / 3
    b3 = lift(mass3)[0]["synset"]
    ims = wn.imagenet_synsets()
    assert b3 in wn.hypernym_closure(ims[281]) and b3 in wn.hypernym_closure(ims[dogs[0]])  # e.g. domestic animal


def test_a_shared_first_name_gets_each_clusters_own_alternative_else_a_numeral():
    """``unique_names``: two clusters first named "dog" keep it with an alternative of their own
    ("dog (terrier)", "dog (toy dog)"); clusters with no alternative left are numbered from the
    second ("cat", "cat 2", "cat 3"); a name only one cluster has stays as it is."""
    from mediacluster.naming.names import unique_names

    def c(*names):
        return [{"name": n} for n in names]

    got = unique_names({0: c("dog", "terrier"), 1: c("dog", "toy dog"), 2: c("cat"), 3: c("cat"), 4: c("cat"),
                        5: c("fish", "carp")})
    assert got == {0: "dog (terrier)", 1: "dog (toy dog)", 2: "cat", 3: "cat 2", 4: "cat 3", 5: "fish"}


def test_unique_names_are_disambiguated():
    from mediacluster.naming.names import name_clusters

    rng = np.random.default_rng(0)
    P = np.zeros((40, 1000), dtype=np.float32)
    a = [281, 282]  # tabby, tiger cat
    P[:20, a[0]] = 0.9
    P[20:, a[1]] = 0.3
    P[20:, 283] = 0.6  # Persian cat
    P += rng.random(P.shape).astype(np.float32) * 1e-4
    labels = np.array([0] * 20 + [1] * 20)
    out = name_clusters(None, labels, imagenet_probs=P)
    got = [e["name"] for e in out]
    assert len(set(got)) == 2, got
    assert all(len(e["alternatives"]) == 3 and e["name"] not in e["alternatives"] for e in out)


@pytest.fixture(scope="module")
def cifar4(tmp_path_factory):
    """50 CIFAR-10 test images each of cat, dog, ship, automobile, embedded by the default encoder."""
    from conftest import dataset

    from mediacluster.datasets import extract_slice
    from mediacluster.embed import embed_collection
    from mediacluster.ingest import collect

    d = tmp_path_factory.mktemp("cifar4")
    extract_slice(dataset("cifar10-test"), d, classes=["cat", "dog", "ship", "automobile"], per_class=50, seed=1)
    coll = collect(d, labels_from_folders=True)
    return embed_collection(coll, cache_dir=tmp_path_factory.mktemp("cache4"), progress=False)


@pytest.mark.slow
def test_names_of_cifar_classes_are_acceptable(cifar4):
    """Clusters = true classes; each name must be the class's concept or a hypernym of it
    (checked through WordNet, not by string), and not the useless root."""
    from mediacluster.naming.imagenet import PART_SEP
    from mediacluster.naming.names import name_clusters

    truth = {"cat": CAT, "dog": DOG, "ship": SHIP, "automobile": CAR}
    classes = sorted(truth)
    labels = np.array([classes.index(x) for x in cifar4.labels])
    out = name_clusters(cifar4.vectors, labels, imagenet_probs=cifar4.extras["imagenet_probs"])
    assert len({e["name"] for e in out}) == len(classes)
    for e in out:
        cls = classes[e["cluster"]]
        syn = e["candidates"][0]["synset"]
        ok = {truth[cls]} | wn.hypernym_closure(truth[cls])
        assert syn in ok, (cls, e["name"], e["candidates"][:2])
        assert wn.depth(syn) >= 4, (cls, e["name"])  # deeper than entity/object/whole/...
        # the readable name itself resolves to such a concept (a mixed cluster's: its largest part)
        head = e["name"].split(" (")[0].split(PART_SEP)[0]
        assert any(s in ok for s in wn.synsets_for(head)), (cls, e["name"])


def tiny_run(path, clusters, probs=None, clusters_json=None):
    """A real run folder (through RunDir) holding these cluster labels."""
    import pandas as pd

    from mediacluster.data import Embeddings
    from mediacluster.rundir import RunDir

    n = len(clusters)
    ids = [f"item{i}" for i in range(n)]
    emb = Embeddings(ids=ids, vectors=np.eye(n, 4, dtype=np.float32), encoder="x",
                     extras={} if probs is None else {"imagenet_probs": probs})
    with RunDir.create(path) as run:
        run.write_embeddings(emb)
        run.write_assignments(pd.DataFrame({"id": ids, "cluster": clusters, "status": "clustered"}))
        run.write_clusters(clusters_json if clusters_json is not None else
                           [{"cluster": c, "size": int(np.sum(np.asarray(clusters) == c))}
                            for c in sorted(set(clusters) - {-1, -2})])
        run.write_info({})
    return run.published


def test_load_names_overrides(tmp_path):
    from mediacluster.errors import ConfigError
    from mediacluster.naming import load_names, save_names_template

    run = tiny_run(tmp_path / "run", [0, 0, 0, 1, 1, 2, 2], clusters_json=[
        {"cluster": 0, "size": 3, "name": "cat", "alternatives": []},
        {"cluster": 1, "size": 2, "name": "dog", "alternatives": []},
        {"cluster": 2, "size": 2}])
    assert load_names(run) == {0: "cat", 1: "dog"}
    p = save_names_template(run)
    assert "1:   # automatic: dog" in p.read_text()
    assert load_names(run) == {0: "cat", 1: "dog"}  # the empty template changes nothing
    p.write_text("1: my dogs\n2: 'screenshots'\n")
    assert load_names(run.path) == {0: "cat", 1: "my dogs", 2: "screenshots"}
    run.write_names([{"cluster": 0, "name": "feline", "alternatives": []}])
    assert load_names(run)[0] == "feline"
    p.write_text("x: bad\n")
    with pytest.raises(ConfigError, match="names.yaml: cluster id 'x' is not an integer"):
        load_names(run)
    for typo in ("1.7: dogs\n", "true: dogs\n"):  # neither is cluster 1 (int() made both so)
        p.write_text(typo)
        with pytest.raises(ConfigError, match="names.yaml: cluster id .* is not an integer"):
            load_names(run)
    p.write_text("1: dogs\n'1': hounds\n")  # two YAML keys, one cluster: which name was meant?
    with pytest.raises(ConfigError, match="names.yaml: cluster 1 is named twice"):
        load_names(run)
    p.write_text("7: ghost\n")
    with pytest.raises(ConfigError, match="7 is not a cluster of this run"):
        load_names(run)
    p.write_text("1: {a: 1}\n")
    with pytest.raises(ConfigError, match="must be plain text"):
        load_names(run)
    p.write_text("1: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_names(run)


def test_name_run_writes_names(tmp_path):
    from mediacluster.naming.names import name_run

    names = wn.imagenet_names()
    P = np.full((6, 1000), 1e-5, dtype=np.float32)
    P[:3, names.index("golf ball")] = 1.0
    P[3:, names.index("tench")] = 1.0
    run = tiny_run(tmp_path / "run", [0, 0, 0, 1, 1, -1], probs=P.astype(np.float16))
    name_run(run)
    cj = json.loads((run.path / "clusters.json").read_text())["clusters"]
    assert [e["name"] for e in cj] == ["golf ball", "tench"]
    assert json.loads((run.path / "names.json").read_text())["clusters"][1]["method"] == "imagenet-wordnet"


@pytest.fixture(scope="module")
def tiny_clip_encoder(tmp_path_factory):
    pytest.importorskip("transformers")
    from test_encoders import make_tiny_clip

    from mediacluster.encoders import get_encoder

    return get_encoder(f"clip:{make_tiny_clip(tmp_path_factory.mktemp('tiny_clip'))}")


def test_zeroshot_names_with_clip_text_tower(tiny_clip_encoder, tmp_path):
    """The encoders helper's tiny random-weight CLIP (real transformers CLIPModel): clusters whose
    members lie next to a topic's prompt-ensembled text vector get that topic's name."""
    from mediacluster.naming.names import name_clusters
    from mediacluster.naming.zeroshot import TEMPLATES, load_vocabulary, topic_vectors

    vocab = load_vocabulary(None)
    assert len(vocab) > 50 and "memes" in vocab and "cats" in vocab
    enc = tiny_clip_encoder
    calls = []
    orig = enc.encode_text
    enc.encode_text = lambda texts: (calls.append(len(texts)), orig(texts))[1]
    try:
        T = topic_vectors(enc, ["cats", "cars", "food"])
    finally:
        enc.encode_text = orig
    assert calls == [3 * len(TEMPLATES)]  # every topic through every prompt template
    assert T.shape == (3, 16) and np.allclose(np.linalg.norm(T, axis=1), 1, atol=1e-5)
    # members = the topic vector plus small noise (what a perfect image tower would give)
    rng = np.random.default_rng(0)
    V = np.vstack([T[j] + 0.05 * rng.standard_normal((10, 16)) for j in range(3)]).astype(np.float32)
    labels = np.repeat([0, 1, 2], 10)
    vf = tmp_path / "topics.txt"
    vf.write_text("# my topics\ncats\ncars\nfood\n")
    out = name_clusters(V, labels, encoder=enc, vocabulary=load_vocabulary(vf))
    assert [e["name"] for e in out] == ["cats", "cars", "food"]
    assert all(e["method"] == "clip-zeroshot" and set(e["alternatives"]) <= {"cats", "cars", "food"} for e in out)
    # two clusters of the same topic get distinct names
    out2 = name_clusters(V[:10], np.repeat([0, 1], 5), encoder=enc, vocabulary=["cats", "cars", "food"])
    assert out2[0]["name"].startswith("cats") and out2[1]["name"].startswith("cats")
    assert len({e["name"] for e in out2}) == 2


def test_names_near_a_saved_model(tmp_path):
    """``assign`` finds the run's names from a model saved in RUN/models/v0001 (hand names win)."""
    import pandas as pd

    from mediacluster.data import Embeddings
    from mediacluster.naming import names_near
    from mediacluster.rundir import RunDir

    (tmp_path / "model").mkdir()
    assert names_near(tmp_path / "model") == {}
    emb = Embeddings(ids=["a", "b"], vectors=np.eye(2, dtype=np.float32), encoder="x")
    with RunDir.create(tmp_path / "run") as run:
        run.write_embeddings(emb)
        run.write_assignments(pd.DataFrame({"id": ["a", "b"], "cluster": [0, 1], "status": "clustered"}))
        run.write_clusters([{"cluster": 0}, {"cluster": 1}])
        run.write_names([{"cluster": 0, "name": "cat"}, {"cluster": 1, "name": "dog"}])
        run.write_info({})
    (tmp_path / "run" / "names.yaml").write_text("1: puppies\n")
    assert names_near(tmp_path / "run" / "models" / "v0001") == {0: "cat", 1: "puppies"}
    assert names_near(tmp_path / "run") == {0: "cat", 1: "puppies"}
    # a model's published names (e.g. curated in the studio) beat the automatic ones; names.yaml
    # still wins; a model outside any run keeps exactly what it was published with
    from mediacluster.naming import model_names

    model = tmp_path / "run" / "models" / "v0002"
    assert model_names(model, {"0": "kittens", "1": "hounds"}) == {0: "kittens", 1: "puppies"}
    assert model_names(model, None) == {0: "cat", 1: "puppies"}
    assert model_names(tmp_path / "model", {"3": "x"}) == {3: "x"}


def _cluster_probs(classes: list[int], weights: list[float], n: int, rng) -> np.ndarray:
    """``n`` items' ImageNet probabilities: each item sure of one of ``classes`` (drawn in
    proportion to ``weights``), a little noise on every class."""
    P = rng.random((n, 1000)).astype(np.float32) * 1e-4
    w = np.asarray(weights, float)
    picks = rng.choice(classes, size=n, p=w / w.sum())
    P[np.arange(n), picks] += 0.9
    return P / P.sum(axis=1, keepdims=True)


def test_a_mixed_cluster_is_named_by_its_parts(monkeypatch):
    """A cluster spread over unrelated classes (no concept covers MIN_COVER of it) is named by
    its main parts, largest first; the concept it was named by before (the most enriched broad
    one) stays among the alternatives; a clear cluster's name is exactly what it was."""
    from mediacluster.naming import imagenet
    from mediacluster.naming.names import name_clusters

    rng = np.random.default_rng(0)
    # 0: tench, church, golf ball, parachute, cassette player (a fish, a building, equipment)
    mixed = _cluster_probs([0, 497, 574, 701, 482], [0.3, 0.25, 0.2, 0.15, 0.1], 200, rng)
    # 1: cats of three breeds (one concept covers them all)
    cats = _cluster_probs([281, 282, 283], [0.4, 0.35, 0.25], 120, rng)
    P = np.vstack([mixed, cats])
    labels = np.array([0] * 200 + [1] * 120)
    out = {e["cluster"]: e for e in name_clusters(None, labels, imagenet_probs=P)}
    assert out[0]["name"] == "equipment · tench · church", out[0]
    parts = out[0]["candidates"][0]["parts"]
    assert [p["name"] for p in parts] == ["equipment", "tench", "church"]
    assert all(p["cover"] < imagenet.MIN_COVER for p in parts)
    assert sum(p["cover"] for p in parts) == pytest.approx(1.0, abs=0.02)  # golf ball, parachute, cassette player are equipment
    monkeypatch.setattr(imagenet, "MAX_PARTS", 0)  # the rule before: one concept for all of it
    before = {e["cluster"]: e for e in name_clusters(None, labels, imagenet_probs=P)}
    assert before[0]["name"] == "equipment" and "equipment" in out[0]["alternatives"]
    assert out[1]["name"] == before[1]["name"] and out[1]["name"] in ("cat", "domestic cat")


def test_a_cluster_is_a_mix_of_at_most_as_many_kinds_as_it_has_items():
    """One unsure image (its probability spread over unrelated classes) is not named by its own
    runner-up guesses; two items list at most two parts."""
    from mediacluster.naming.names import name_clusters

    rng = np.random.default_rng(2)
    unsure = np.full((1, 1000), 1e-5, np.float32)
    unsure[0, [0, 497, 574, 701, 482]] = [0.3, 0.25, 0.2, 0.15, 0.1]  # tench, church, golf ball, ...
    two = np.vstack([_cluster_probs([0], [1], 1, rng), _cluster_probs([497], [1], 1, rng)])  # tench, church
    many = _cluster_probs([0, 497, 217, 574, 569, 566], [1] * 6, 60, rng)  # six kinds
    P = np.vstack([unsure / unsure.sum(), two, many])
    labels = np.array([0, 1, 1] + [2] * 60)
    out = {e["cluster"]: e for e in name_clusters(None, labels, imagenet_probs=P)}
    assert " \u00b7 " not in out[0]["name"], out[0]  # one item: one concept, as before composites
    assert len(out[1]["candidates"][0].get("parts", [1, 1])) <= 2 and "\u2026" not in out[1]["name"], out[1]
    assert out[2]["name"].count(" \u00b7 ") == 2 and out[2]["name"].endswith("\u2026"), out[2]


def test_composite_names_are_bounded_and_unique():
    """Six unrelated kinds in equal shares list MAX_PARTS parts and say there are more; two
    mixed clusters of the same kinds still get distinct names."""
    from mediacluster.naming import imagenet
    from mediacluster.naming.names import name_clusters

    rng = np.random.default_rng(1)
    six = [0, 497, 217, 574, 569, 566]  # tench, church, springer, golf ball, garbage truck, French horn
    P = np.vstack([_cluster_probs(six, [1] * 6, 180, rng), _cluster_probs(six, [1] * 6, 180, rng)])
    labels = np.array([0] * 180 + [1] * 180)
    out = name_clusters(None, labels, imagenet_probs=P)
    names = [e["name"] for e in out]
    assert len(set(names)) == 2, names
    for e in out:
        c0 = e["candidates"][0]
        assert c0["composite"] and len(c0["parts"]) == imagenet.MAX_PARTS
        assert e["name"].startswith(imagenet.PART_SEP.join(p["name"] for p in c0["parts"]) + imagenet.ELLIPSIS)
    # a mass with one dominant kind and a minor rest is not a composite
    m = np.zeros(1000)
    m[[0, 497]] = [0.45, 0.4]
    m[600:650] = 0.15 / 50
    assert imagenet.lift(m)[0]["name"] == "tench · church"


def test_zeroshot_names_of_sounds_read_sound_prompts_and_topics(tmp_path, monkeypatch):
    """A CLAP run is named from sound captions ("this is a sound of {}.") against the shipped
    sound topics, never from photo prompts and social-media topics (a tiny random ClapModel
    saved by the test: the real text tower through transformers)."""
    from conftest import tiny_clap

    from mediacluster.encoders import get_encoder
    from mediacluster.naming.names import name_clusters
    from mediacluster.naming.zeroshot import (
        AUDIO_TEMPLATES,
        IMAGE_TEMPLATES,
        default_vocabulary,
        templates_for,
        topic_vectors,
    )

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = get_encoder(f"clap:{tiny_clap(tmp_path / 'tiny-clap', tokenizer=True)}")
    assert enc.media == "audio" and templates_for(enc) == AUDIO_TEMPLATES
    sounds, social = default_vocabulary("audio"), default_vocabulary("image")
    assert "a dog barking" in sounds and "rain" in sounds and "memes" in social and "memes" not in sounds
    # the topic vector is the ensemble of the sound captions, not of the photo captions
    T = topic_vectors(enc, ["rain"])[0]
    sound = enc.encode_text([t.format("rain") for t in AUDIO_TEMPLATES])
    photo = enc.encode_text([t.format("rain") for t in IMAGE_TEMPLATES])
    unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)  # noqa: E731
    assert np.allclose(T, unit(unit(sound).mean(0)), atol=1e-5)
    assert not np.allclose(T, unit(unit(photo).mean(0)), atol=1e-3)
    # names without --vocabulary come from the sound topics
    Ts = topic_vectors(enc, sounds)
    rng = np.random.default_rng(0)
    V = np.vstack([Ts[j] + 0.001 * rng.standard_normal((8, Ts.shape[1])) for j in (0, 26, 35)]).astype(np.float32)
    named = name_clusters(V, np.repeat([0, 1, 2], 8), encoder=enc)
    assert [n["method"] for n in named] == ["clip-zeroshot"] * 3
    assert all(n["name"] in sounds for n in named)
    assert [n["name"] for n in named] == [sounds[0], sounds[26], sounds[35]]
    with pytest.raises(ValueError, match="media"):
        default_vocabulary("video")
