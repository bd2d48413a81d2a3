"""Duplicate finding: reposts of real photos caught, same-class photos kept apart, no blind chaining."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from broken_media import make_broken

from mediacluster.cli import main
from mediacluster.duplicates import DuplicateFinder, DuplicateIndex, Signatures
from mediacluster.duplicates.reposts import KINDS, make_repost
from mediacluster.duplicates.search import cosine_pairs, hamming_pairs
from mediacluster.errors import InputError, ParameterError

CLASS = "n02102040"  # English springer: distinct photos of one class must stay apart


@pytest.fixture(scope="module")
def reposts(imagenette_dir, tmp_path_factory):
    """3 originals of one class, each reposted once per kind, 2 more photos of that class and
    2 held-out reposts/photos for new-item queries; embedded with the default encoder."""
    from mediacluster.data import Collection
    from mediacluster.embed import embed_collection

    photos = sorted((imagenette_dir / CLASS).iterdir())
    d = tmp_path_factory.mktemp("reposts")
    rng = np.random.default_rng(0)
    items = []  # (path, original index or -1, kind)
    for k, src in enumerate(photos[:3]):
        items.append((str(src), k, "original"))
        for kind in KINDS:
            path, _ = make_repost(src, d / f"{k}_{kind}", kind, rng)
            items.append((path, k, kind))
    for src in photos[3:5]:
        items.append((str(src), -1, "distinct"))
    held_jpeg, _ = make_repost(photos[0], d / "new_jpeg", "jpeg", rng)
    held_crop, _ = make_repost(photos[1], d / "new_crop", "crop", rng)
    held_copy = str(d / "new_copy.jpeg")
    shutil.copyfile(photos[2], held_copy)
    held_new = str(photos[6])
    held = [held_jpeg, held_crop, held_copy, held_new]
    paths = [p for p, _, _ in items]
    emb = embed_collection(Collection(ids=paths + held, paths=paths + held),
                           cache_dir=tmp_path_factory.mktemp("cache"), progress=False)
    assert emb.ids == paths + held
    X = emb.vectors
    finder = DuplicateFinder().fit(paths, X[:len(paths)])
    return {"items": items, "paths": paths, "finder": finder, "held": held, "held_vectors": X[len(paths):]}


def test_every_repost_kind_is_caught_at_the_defaults(reposts):
    f, items = reposts["finder"], reposts["items"]
    lab = f.labels_
    orig = {k: i for i, (_, k, kind) in enumerate(items) if kind == "original"}
    missed = [(k, kind) for i, (_, k, kind) in enumerate(items)
              if kind not in ("original", "distinct") and not (lab[i] >= 0 and lab[i] == lab[orig[k]])]
    assert not missed, f"reposts not grouped with their original: {missed}"
    # each group is exactly one original and its reposts
    for k, i in orig.items():
        members = {items[m][1] for m in np.flatnonzero(lab == lab[i])}
        assert members == {k}
    t = f.table()
    assert list(t.columns[:3]) == ["id", "duplicate_group", "duplicate_of"]
    assert (t["link_kind"][lab >= 0] != "").all()
    assert set(t["link_kind"]) >= {"exact", "perceptual", "geometric"}
    assert (f.group_diameter_ <= f.max_diameter).all()


def test_distinct_photos_of_one_class_are_not_grouped(reposts):
    f, items = reposts["finder"], reposts["items"]
    lab = f.labels_
    origs = [lab[i] for i, (_, _, kind) in enumerate(items) if kind == "original"]
    assert len(set(origs)) == 3 and min(origs) >= 0
    for i, (_, _, kind) in enumerate(items):
        if kind == "distinct":
            assert lab[i] == -1 and f.duplicate_of_[i] == -1


def test_identical_files_are_one_group_and_bad_files_are_skipped(imagenette_dir, tmp_path):
    photos = sorted((imagenette_dir / CLASS).iterdir())
    paths = []
    for k in range(3):
        paths.append(str(tmp_path / f"copy{k}.jpg"))
        shutil.copyfile(photos[0], paths[-1])
    paths.append(str(photos[1]))
    for name in ("broken.jpg", "broken_copy.jpg"):
        (tmp_path / name).write_bytes(photos[0].read_bytes()[:300])
        paths.append(str(tmp_path / name))
    f = DuplicateFinder().fit(paths)
    assert f.labels_[0] == f.labels_[1] == f.labels_[2] >= 0
    assert f.labels_[3] == -1
    assert f.labels_[4] == f.labels_[5] >= 0 and f.labels_[4] != f.labels_[0]  # identical broken files
    assert set(f.link_kind_[:3]) == {0}  # exact
    rep = f.representative_[0]
    assert rep in (0, 1, 2) and f.duplicate_of_[rep] == -1
    assert sorted(f.duplicate_of_[:3].tolist()) == sorted([-1, rep, rep])
    assert "truncated" in f.skipped_[4]
    assert f.groups()[0]["size"] == 3 and f.groups()[0]["diameter"] == 0.0


def test_dups_no_embed_lists_undecodable_files_and_exits_3(imagenette_dir, tmp_path, capsys):
    """`dups --no-embed`: files that cannot be decoded are left out of the table, as the embedding
    check leaves them out (two copies of one broken file were one group without embeddings, none
    with them), and, as `cluster` does with skipped files, each is listed with its reason (stdout
    and dups.json) and the command exits 3; 0 when every file was used."""
    root = tmp_path / "photos"
    root.mkdir()
    photos = sorted((imagenette_dir / CLASS).iterdir())[:3]
    for p in photos:
        shutil.copyfile(p, root / p.name)
    shutil.copyfile(photos[0], root / "copy.jpg")
    rc = main(["dups", str(root), "--out", str(tmp_path / "clean"), "--no-embed", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0 and "skipped: 0 file(s)" in out, out
    kinds = make_broken(root)
    shutil.copyfile(root / "truncated.jpg", root / "truncated_copy.jpg")
    rc = main(["dups", str(root), "--out", str(tmp_path / "dups"), "--no-embed", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 3, out
    info = json.loads((tmp_path / "dups" / "dups.json").read_text())
    listed = {os.path.basename(x["path"]): x["reason"] for x in info["skipped_files"]}
    assert set(listed) == {*kinds, "truncated_copy.jpg"}, listed
    assert "truncated" in listed["truncated.jpg"]
    assert f"skipped: {len(listed)} file(s)" in out
    for name, reason in listed.items():
        assert f"{root / name}: {reason}" in out, (name, out)
    df = pd.read_parquet(tmp_path / "dups" / "dups.parquet").set_index("path")
    assert sorted(df.index) == sorted([p.name for p in photos] + ["copy.jpg"]), df.index
    assert df.loc["copy.jpg", "duplicate_group"] == df.loc[photos[0].name, "duplicate_group"] >= 0
    rc = main(["dups", str(root), "--out", str(tmp_path / "embedded"), "--quiet"])  # the embedding check
    assert rc == 3 and sorted(pd.read_parquet(tmp_path / "embedded" / "dups.parquet")["path"]) == sorted(df.index)
    assert {os.path.basename(x["path"]) for x in json.loads((tmp_path / "embedded" / "dups.json").read_text())[
        "skipped_files"]} == set(listed)


def _unit(angles_deg):
    a = np.radians(angles_deg)
    return np.stack([np.cos(a), np.sin(a)], 1).astype(np.float32)


def test_a_three_image_chain_with_distant_ends_is_split():
    # A and B share a perceptual hash; B and C have near-identical embeddings; A and C differ
    # in both. Connected components would merge all three.
    rng = np.random.default_rng(0)
    h = rng.integers(0, 256, (3, 8), dtype=np.uint8)
    h[1] = h[0]
    h[2] = ~h[0]
    sig = Signatures(content=[None] * 3, hashes=h, mirror=h.copy(), kind="phash", hash_size=8)
    X = _unit([0, 80, 81])
    f = DuplicateFinder().fit(vectors=X, signatures=sig)
    assert sorted(f.links_["kind"].tolist()) == [1, 3]  # one perceptual, one semantic link
    assert f.labels_[0] != f.labels_[2] or f.labels_[0] == -1
    assert (f.labels_ >= 0).sum() == 2  # B stays with one of them
    g = DuplicateFinder(max_diameter=np.inf).fit(vectors=X, signatures=sig)
    assert g.labels_[0] == g.labels_[1] == g.labels_[2] >= 0


def test_a_long_chain_of_near_duplicates_is_cut():
    # five items on an arc, each at cosine 0.975 (a link for vectors alone) from the next; the
    # ends are at cosine 0.62
    theta = np.degrees(np.arccos(0.975))
    X = _unit([k * theta for k in range(5)])
    f = DuplicateFinder().fit(vectors=X)
    assert len(set(f.labels_.tolist()) - {-1}) >= 2
    assert (f.group_diameter_ <= 2).all()
    g = DuplicateFinder(max_diameter=np.inf).fit(vectors=X)
    assert (g.labels_ == g.labels_[0]).all() and g.labels_[0] >= 0
    assert g.group_diameter_[0] > 2


def test_a_star_of_reposts_stays_whole():
    # an original and 4 variants each at cosine 0.975 in different directions: variants are
    # further from each other than from the original, as reposts are
    rng = np.random.default_rng(1)
    o = rng.standard_normal(64)
    o /= np.linalg.norm(o)
    vs = []
    for _ in range(4):
        u = rng.standard_normal(64)
        u -= u @ o * o
        u /= np.linalg.norm(u)
        vs.append(0.975 * o + np.sqrt(1 - 0.975 ** 2) * u)
    X = np.vstack([o, *vs, -o]).astype(np.float32)
    f = DuplicateFinder().fit(vectors=X)
    assert (f.labels_[:5] == f.labels_[0]).all() and f.labels_[0] >= 0 and f.labels_[5] == -1
    assert f.representative_[0] == 0  # the original is the centre


def test_a_groups_representative_is_the_member_nearest_to_all_not_the_one_nearest_on_average():
    """The centre is the member whose LARGEST distance to the others is smallest (a star's
    original); a member with a smaller sum of distances but a far end loses to it."""
    from mediacluster.duplicates.grouping import PairDistance, group_links

    X = _unit([0, 10, 20, 21, 22])  # item 1 is within 12 degrees of all; item 2 has the smallest sum
    i, j = np.array([0, 1, 2, 3]), np.array([1, 2, 3, 4])
    labels, rep, _ = group_links(5, i, j, PairDistance(5, vectors=X), max_diameter=np.inf)
    assert (labels == 0).all() and (rep == 1).all()


def test_a_split_component_gives_the_leader_its_nearest_copy_first():
    """A leader linked to two copies that are too far from each other to share a group: the
    nearer copy joins it (complete linkage, nearest first), the farther one is left alone."""
    from mediacluster.duplicates.grouping import PairDistance, group_links

    X = _unit([0, 10, -16])  # normalised distances: 0.87 and 1.39 from the leader, 2.25 apart
    labels, rep, _ = group_links(3, np.array([0, 0]), np.array([1, 2]), PairDistance(3, vectors=X, cos_scale=0.02))
    assert labels.tolist() == [0, 0, -1] and rep[0] in (0, 1)


def test_pair_distances_of_a_huge_component_are_its_matrix_mirror_included():
    """A component past ``FULL_MATRIX_LIMIT`` is split with pairwise distances
    (``PairDistance.between``), a smaller one with its matrix: both see a mirrored copy (its
    hash equals the other's mirror hash) at distance 0."""
    from mediacluster.duplicates.grouping import PairDistance

    rng = np.random.default_rng(0)
    h = rng.integers(0, 256, (6, 8), dtype=np.uint8)
    m = rng.integers(0, 256, (6, 8), dtype=np.uint8)
    h[3] = m[0]  # item 3 is item 0 flipped
    d = PairDistance(6, hashes=h, mirror=m, hash_scale=10.0)
    D = d.matrix(np.arange(6))
    i, j = np.triu_indices(6, 1)
    assert np.allclose(np.minimum(d.between(i, j), d.between(j, i)), D[i, j])
    assert d.between(np.array([0]), np.array([3]))[0] == 0.0 == D[0, 3]


def test_new_item_query_after_save_and_load(reposts, tmp_path):
    f = reposts["finder"]
    held, V = reposts["held"], reposts["held_vectors"]
    f.index().save(tmp_path / "dups")
    idx = DuplicateIndex.load(tmp_path / "dups")
    assert len(idx) == f.n_items_
    lab = f.labels_
    orig = {k: i for i, (_, k, kind) in enumerate(reposts["items"]) if kind == "original"}

    m = idx.query(path=held[0])                 # a new JPEG re-encode of original 0
    assert m is not None and m.kind in ("exact", "perceptual") and m.group == lab[orig[0]]
    assert "near-duplicate of" in str(m)
    m = idx.query(path=held[1], vector=V[1])    # a new crop of original 1
    assert m is not None and m.group == lab[orig[1]]
    m = idx.query(path=held[2])                 # a byte copy of original 2
    assert m is not None and m.kind == "exact" and m.distance == 0 and m.index == orig[2]
    assert idx.query(path=held[3], vector=V[3]) is None   # a distinct photo of the class
    # vectors only, nothing to verify against: the semantic rule alone
    m = idx.query(vector=f.vectors_[orig[0]], exclude=orig[0])
    assert m is None or m.group == lab[orig[0]]


def test_hamming_search_is_exact(rng):
    n = 1200
    codes = rng.integers(0, 256, (n, 8), dtype=np.uint8)
    bits = np.unpackbits(codes, axis=1)
    for a in range(0, 400, 2):  # plant neighbours at 0..12 bits
        b = bits[a].copy()
        b[rng.choice(64, a % 13, replace=False)] ^= 1
        bits[a + 1] = b
    codes = np.packbits(bits, axis=1)
    w = codes.view(np.uint64)
    D = np.bitwise_count(w[:, None, 0] ^ w[None, :, 0]).astype(int)
    for radius, methods in ((3, ("flat", "multihash")), (7, ("flat", "multihash")), (10, ("flat",))):
        want = {(i, j) for i, j in zip(*np.nonzero(np.triu(D <= radius, 1)))}
        for method in methods:
            i, j, d = hamming_pairs(codes, radius, method=method)
            assert set(zip(i.tolist(), j.tolist())) == want, (method, radius)
            assert (d == D[i, j]).all()


def test_cosine_search_inverted_file_finds_close_pairs(rng):
    X = rng.standard_normal((2000, 64)).astype(np.float32)
    X[1::2] = X[0::2] + 0.2 * rng.standard_normal((1000, 64)).astype(np.float32)
    i, j, c = cosine_pairs(X, 0.9, k=5, method="ivf")
    got = set(zip(i.tolist(), j.tolist()))
    assert len(got & {(a, a + 1) for a in range(0, 2000, 2)}) >= 990
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    assert np.allclose(c, (Xn[i] * Xn[j]).sum(1), atol=1e-5)


def test_a_bad_row_of_a_vector_file_is_named_with_the_file(tmp_path):
    """`dups v.npy` (memory-mapped) and `dups v.npz` name the file with the bad row, as `cluster`
    does; the message said only "vectors: row 3 ..."."""
    from mediacluster.duplicates.collection import find_duplicates_in

    X = np.random.default_rng(0).normal(size=(12, 8)).astype(np.float32)
    X[3] = np.nan
    np.save(tmp_path / "v.npy", X)
    np.savez(tmp_path / "v.npz", vectors=X)
    for name in ("v.npy", "v.npz"):
        with pytest.raises(ValueError, match=rf"^{tmp_path / name}: row 3 contains NaN or infinity$"):
            find_duplicates_in(str(tmp_path / name), tmp_path / "out", progress=False)


def test_bad_parameters_name_themselves():
    with pytest.raises(ValueError, match="hash="):
        DuplicateFinder(hash="md5").fit(vectors=np.eye(3))
    with pytest.raises(ValueError, match="max_diameter"):
        DuplicateFinder(max_diameter=0.5).fit(vectors=np.eye(3))
    with pytest.raises(ValueError, match=r"^vectors: row 1 contains NaN or infinity$"):
        DuplicateFinder().fit(vectors=np.array([[1.0, 0], [np.nan, 0]]))
    with pytest.raises(ValueError, match="expected 2"):
        DuplicateFinder().fit(paths=[Path("a"), Path("b")], vectors=np.eye(3))


@pytest.mark.parametrize("param,value,expect", [
    ("min_ncc", "nan", "expected a number"),             # --param min_ncc=nan: YAML's 'nan' is a string
    ("grey_chroma", float("nan"), "expected a number"),
    ("semantic_only_threshold", "none", "or null"),      # YAML's null is 'null' or '~'
    ("max_diameter", "inf", "expected a number"),
    ("hash_radius", 2.5, "a whole number"),              # was truncated to 2
    ("n_neighbors", 1.5, "a whole number"),
    ("verify", "nope", "true or false"),                 # a string is truthy: verification stayed on
    ("workers", 0, "workers=0"),
    ("hash_size", 0, "hash_size=0"),                     # named hash_radius ("must be in [0, 0)")
    ("min_inliers", -1, "min_inliers=-1"),
    ("max_chroma", -1, "max_chroma=-1"),
    ("min_ncc", 2, "min_ncc=2"),
])
def test_parameters_of_the_wrong_kind_or_out_of_range_are_refused_by_name(param, value, expect):
    # before: numpy's UFuncTypeError / TypeError from inside the search, after the files were
    # read, or silently a finder other than the one asked for
    with pytest.raises(ParameterError, match=expect) as e:
        DuplicateFinder(**{param: value}).fit(vectors=np.eye(3))
    assert e.value.param == param


def test_index_load_refuses_damaged_or_foreign_files(tmp_path):
    """A model's duplicate index is checked on load: JSON + npz only, never unpickled."""
    import json

    from mediacluster.errors import ModelFormatError

    X = np.random.default_rng(0).standard_normal((6, 8)).astype(np.float32)
    X[1] = X[0] + 1e-4
    d = DuplicateFinder().fit(vectors=X).index().save(tmp_path / "ok")
    assert len(DuplicateIndex.load(d)) == 6
    bad = tmp_path / "bad"
    shutil.copytree(d, bad)
    meta = json.loads((bad / "duplicates.json").read_text())
    (bad / "duplicates.json").write_text(json.dumps({**meta, "format": "something-else"}))
    with pytest.raises(ModelFormatError, match="format"):
        DuplicateIndex.load(bad)
    (bad / "duplicates.json").write_text(json.dumps({**meta, "ids": meta["ids"][:3]}))
    with pytest.raises(ModelFormatError, match="rows"):
        DuplicateIndex.load(bad)
    (bad / "duplicates.json").write_text(json.dumps(meta))
    np.savez(bad / "duplicates.npz", labels=np.array([object()] * 6, dtype=object))
    with pytest.raises(ModelFormatError, match="cannot read"):
        DuplicateIndex.load(bad)
    # cut short (a copy of the model interrupted, a full disk): zipfile's BadZipFile was an
    # internal error of `serve` and `assign` on a model saved with --dedup
    shutil.copyfile(d / "duplicates.npz", bad / "duplicates.npz")
    with open(bad / "duplicates.npz", "r+b") as f:
        f.truncate((bad / "duplicates.npz").stat().st_size // 2)
    with pytest.raises(ModelFormatError, match="duplicates.npz: cannot read the duplicate index arrays"):
        DuplicateIndex.load(bad)


# -- a moved collection / run / model (gaps item 2) ---------------------------------------------
def test_a_queried_index_pickles_and_answers_the_same(reposts, tmp_path):
    """A user may pickle (or joblib.dump) the index as any scikit-learn object: after a query
    that ran the geometric check it failed with "cannot pickle 'module' object"."""
    import pickle

    import joblib

    f = reposts["finder"]
    held, V = reposts["held"], reposts["held_vectors"]
    f.index().save(tmp_path / "dups")
    idx = DuplicateIndex.load(tmp_path / "dups")
    before = [str(idx.query(path=p, vector=v)) for p, v in zip(held, V)]  # the crop runs the check
    for copy in (pickle.loads(pickle.dumps(idx)), joblib.load(joblib.dump(idx, tmp_path / "i.joblib")[0])):
        assert [str(copy.query(path=p, vector=v)) for p, v in zip(held, V)] == before


@pytest.fixture(scope="module")
def project(imagenette_dir, tmp_path_factory):
    """``project/photos``: 6 photos of one class (training files) and, outside it, a crop, a
    captioned and a bordered repost of the first (new uploads the geometric check confirms by
    reading the stored file), with their default-encoder vectors."""
    from mediacluster.data import Collection
    from mediacluster.embed import embed_collection

    t = tmp_path_factory.mktemp("moving")
    proj = t / "project"
    (proj / "photos" / "a").mkdir(parents=True)
    train = []
    for k, p in enumerate(sorted((imagenette_dir / CLASS).iterdir())[:6]):
        dst = proj / "photos" / ("a" if k % 2 else "") / p.name  # two folders deep: a real root
        shutil.copyfile(p, dst)
        train.append(str(dst))
    rng = np.random.default_rng(1)
    held = [make_repost(train[0], t / f"new_{kind}", kind, rng)[0] for kind in ("crop", "caption", "border")]
    emb = embed_collection(Collection(ids=train + held, paths=train + held), cache_dir=t / "cache", progress=False)
    return {"root": t, "project": proj, "train": train, "held": held, "X": emb.vectors[:len(train)],
            "V": emb.vectors[len(train):], "cache": t / "cache"}


def geometric_kinds(idx, project) -> list:
    return [(m.kind, m.index) if m else None for m in idx.query_many(project["held"], project["V"])]


def test_index_finds_its_files_after_the_project_moved(project, tmp_path):
    """Paths are stored relative to the collection root: after the folder holding the photos and
    the index moved, the stored files are found again (the geometric check reads them)."""
    import json

    src = tmp_path / "project"
    shutil.copytree(project["project"], src)
    train = [str(src / os.path.relpath(p, project["project"])) for p in project["train"]]
    DuplicateFinder().fit(train, project["X"]).index().save(src / "model" / "dups")
    meta = json.loads((src / "model" / "dups" / "duplicates.json").read_text())
    assert meta["root"] == str(src / "photos") and meta["root_from_index"] == "../../photos"
    assert not any(os.path.isabs(p) for p in meta["paths"]) and "a/" + Path(train[1]).name in meta["paths"]
    before = geometric_kinds(DuplicateIndex.load(src / "model" / "dups"), project)
    assert before == [("geometric", 0)] * 3, before

    moved = tmp_path / "elsewhere" / "renamed"
    moved.parent.mkdir()
    shutil.move(src, moved)
    idx = DuplicateIndex.load(moved / "model" / "dups")
    assert idx.root == str(moved / "photos") and idx.files_found
    assert all(os.path.exists(p) for p in idx.paths) and idx.paths[1] == str(moved / "photos" / "a" / Path(train[1]).name)
    assert geometric_kinds(idx, project) == before
    # the index alone moved (a model copied to another machine): the files are not found and the
    # answer falls back to hashes and vectors, until the caller says where the collection is
    alone = tmp_path / "model_copy"
    shutil.copytree(moved / "model" / "dups", alone)
    shutil.move(moved / "photos", tmp_path / "photos_now")
    idx = DuplicateIndex.load(alone)
    assert idx.files_found is False
    assert all(k is None or k[0] != "geometric" for k in geometric_kinds(idx, project))
    idx = DuplicateIndex.load(alone, root=tmp_path / "photos_now")
    assert idx.files_found and geometric_kinds(idx, project) == before
    with pytest.raises(InputError, match="collection root .*not a folder"):
        DuplicateIndex.load(alone, root=tmp_path / "nowhere")


def test_an_index_with_absolute_paths_is_still_read_and_can_be_re_rooted(project, tmp_path):
    """Format 1 (absolute paths, no root) loads as before and follows ``root=``."""
    import json

    d = DuplicateFinder().fit(project["train"], project["X"]).index().save(tmp_path / "dups")
    vectors = DuplicateIndex.load(d).vectors[:]
    meta = json.loads((d / "duplicates.json").read_text())
    old = {**{k: v for k, v in meta.items() if k not in ("root", "root_from_index", "vectors")},
           "format": "mediacluster.duplicates/1", "paths": project["train"]}
    (d / "duplicates.json").write_text(json.dumps(old))
    # format 1 kept the vectors (float16) inside duplicates.npz
    with np.load(d / "duplicates.npz") as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(d / "duplicates.npz", **arrays, vectors=np.array(vectors))
    (d / "vectors.faiss").unlink()
    idx = DuplicateIndex.load(d)
    assert idx.paths == project["train"] and idx.files_found
    assert geometric_kinds(idx, project) == [("geometric", 0)] * 3
    now = tmp_path / "copy"
    shutil.copytree(project["project"] / "photos", now)
    idx = DuplicateIndex.load(d, root=now)
    assert idx.paths == [str(now / os.path.relpath(p, project["project"] / "photos")) for p in project["train"]]
    assert all(os.path.exists(p) for p in idx.paths)


def test_index_keeps_file_names_that_are_not_utf8(tmp_path):
    import json

    X = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    names = [os.fsdecode(b"caf\xe9.jpg"), "back\\slash.jpg", "plain.jpg"]
    paths = [str(tmp_path / "photos" / n) for n in names]
    d = DuplicateFinder().fit(vectors=X).index()
    d.paths = paths
    d.save(tmp_path / "dups")
    json.loads((tmp_path / "dups" / "duplicates.json").read_bytes().decode("utf-8"))  # valid UTF-8
    assert DuplicateIndex.load(tmp_path / "dups").paths == paths


@pytest.mark.slow
def test_assign_finds_the_files_of_a_moved_dedup_run(project, tmp_path):
    """`cluster --dedup --save-model` inside a project folder, the project moved whole: `assign`
    still confirms the reposts against the stored files; the run alone moved elsewhere with the
    photos somewhere else: a note on stderr, then `--collection-root` finds them again."""
    import contextlib
    import io

    import pandas as pd

    from mediacluster.cli import main

    def cli(*argv):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in argv])
        return code, out.getvalue(), err.getvalue()

    src = tmp_path / "project"
    shutil.copytree(project["project"], src)
    code, out, err = cli("cluster", src / "photos", "--out", src / "run", "--dedup", "--save-model", "--quiet",
                         "--reducer", "pca", "--reducer-param", "n_components=4", "--clusterer", "kmeans",
                         "--clusterer-param", "n_clusters=2", "--no-names", "--cache-dir", project["cache"])
    assert code == 0, out + err

    def kinds(run, *extra):
        table = tmp_path / "a.csv"
        code, out, err = cli("assign", run, *project["held"], "--out", table, "--quiet",
                             "--cache-dir", project["cache"], *extra)
        assert code == 0, out + err
        return pd.read_csv(table)["duplicate_kind"].tolist(), err

    assert kinds(src / "run") == (["geometric"] * 3, "")
    moved = tmp_path / "moved"
    shutil.move(src, moved)
    assert kinds(moved / "run") == (["geometric"] * 3, "")
    shutil.move(moved / "photos", tmp_path / "photos_now")
    got, err = kinds(moved / "run")
    assert "geometric" not in got and "training files are not under" in err and "--collection-root" in err
    assert kinds(moved / "run", "--collection-root", tmp_path / "photos_now") == (["geometric"] * 3, "")
    # the service, as a real process over HTTP, the same way
    from test_serve import Server

    s = Server(str(moved / "run"), "--collection-root", str(tmp_path / "photos_now"), log=tmp_path / "serve.log")
    try:
        files = [("files", (Path(p).name, Path(p).read_bytes(), "image/jpeg")) for p in project["held"]]
        r = s.client.post("/v1/assign", files=files)
        assert r.status_code == 200, r.text
        assert [it["duplicate_of"]["kind"] for it in r.json()["items"]] == ["geometric"] * 3
    finally:
        s.stop()


# -- vectors read block by block (gaps item 3) ----------------------------------------------------
def planted_pairs(rng, n: int, d: int) -> np.ndarray:
    """(n, d) float32 rows of varied length, every odd row a near-copy of the row before."""
    X = rng.standard_normal((n, d)).astype(np.float32)
    X[1::2] = X[0::2] + 0.2 * rng.standard_normal((n // 2, d)).astype(np.float32)
    return X * rng.uniform(0.5, 3.0, (n, 1)).astype(np.float32)


@pytest.mark.parametrize("method", ["flat", pytest.param("ivf", marks=pytest.mark.slow)])
def test_cosine_pairs_read_a_memory_mapped_file_block_by_block(rng, tmp_path, monkeypatch, method):
    """A ``.npy`` opened with mmap_mode="r" gives the same pairs and cosines as the normalised
    array in memory, read in blocks (a small BLOCK here, so there are many), never written to."""
    from mediacluster.duplicates import search

    X = planted_pairs(rng, 6000, 160)  # above IVF_DIMS: the PCA before the inverted file too
    np.save(tmp_path / "v.npy", X)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    want = cosine_pairs(Xn, 0.9, k=5, method=method)
    monkeypatch.setattr(search, "BLOCK", 500)
    mm = np.load(tmp_path / "v.npy", mmap_mode="r")
    got = cosine_pairs(mm, 0.9, k=5, method=method, batch=700)
    assert len(got[0]) >= 2900
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    assert np.allclose(got[2], want[2], atol=1e-5)
    assert np.array_equal(np.load(tmp_path / "v.npy"), X)
    # a subset of rows (valid) too
    valid = np.ones(len(X), bool)
    valid[::7] = False
    a = cosine_pairs(mm, 0.9, k=5, method=method, valid=valid)
    b = cosine_pairs(Xn, 0.9, k=5, method=method, valid=valid)
    assert all(np.array_equal(x, y) for x, y in zip(a[:2], b[:2])) and valid[a[0]].all() and valid[a[1]].all()


def test_unit_rows_index_like_the_normalised_array(rng):
    from mediacluster.duplicates.search import UnitRows, normalise

    X = planted_pairs(rng, 300, 8)
    X[5] = 0
    Xn = np.divide(X, np.linalg.norm(X, axis=1, keepdims=True), out=np.zeros_like(X),
                   where=np.linalg.norm(X, axis=1, keepdims=True) > 0)
    V = UnitRows(X, block=64)
    assert V.shape == X.shape and not V.unit
    for idx in (7, slice(10, 100), np.array([5, 3, 3, 299]), np.array([[1, 2], [2, 1]]), X[:, 0] > 0):
        assert np.allclose(V[idx], Xn[idx], atol=1e-6), idx
    assert np.allclose(V.to_array(np.float16), Xn.astype(np.float16), atol=1e-3)
    unit = np.ascontiguousarray(Xn[np.arange(300) != 5])
    assert normalise(unit) is unit, "unit rows in memory: no copy, no view"
    assert isinstance(normalise(X), UnitRows)


@pytest.mark.slow
def test_finder_fits_a_memory_mapped_file_as_the_array(rng, tmp_path):
    """DuplicateFinder.fit on a memory-mapped ``.npy``: the same groups, links and index as on
    the array in memory, the vectors kept as a view (no normalised copy)."""
    from mediacluster.duplicates.search import UnitRows

    X = planted_pairs(rng, 25_000, 32)  # above EXACT_LIMIT: PCA + inverted file
    X[1::2] = X[0::2] * 1.7 + 0.005 * rng.standard_normal((len(X) // 2, 32)).astype(np.float32)
    np.save(tmp_path / "v.npy", X)
    a = DuplicateFinder().fit(vectors=X)
    b = DuplicateFinder().fit(vectors=np.load(tmp_path / "v.npy", mmap_mode="r"))
    assert isinstance(b.vectors_, UnitRows) and isinstance(b.vectors_.X, np.memmap)
    assert a.n_groups_ >= 12_000 and np.array_equal(a.labels_, b.labels_)
    assert np.array_equal(a.links_, b.links_) and np.array_equal(a.representative_, b.representative_)
    ia, ib = a.index(), b.index()
    assert ib.vectors is b.vectors_, "the unsaved index keeps the finder's rows, no float16 copy"
    ia.save(tmp_path / "ia")
    ib.save(tmp_path / "ib")
    assert (tmp_path / "ia" / "vectors.faiss").read_bytes() == (tmp_path / "ib" / "vectors.faiss").read_bytes()
    m = ib.query(vector=X[0] * 3, exclude=0)
    assert m is not None and m.index == 1 and m.kind == "semantic"


# -- the stored vectors: a memory-mapped file (format 3) ----------------------------------------
def answers(matches) -> list:
    return [None if m is None else (m.id, m.kind, m.group, m.distance) for m in matches]


def test_index_vectors_are_written_block_by_block_and_memory_mapped_on_load(rng, tmp_path, monkeypatch):
    """``save`` writes the vectors as a faiss float16 index file, block by block from a
    memory-mapped input; ``load`` maps it (no vectors in memory) and answers exactly as the
    unsaved index, one query at a time and in batches (the blocked BLAS pass)."""
    import json

    import faiss

    from mediacluster.duplicates import index as index_mod
    from mediacluster.duplicates import search

    X = planted_pairs(rng, 3000, 48)  # every even row has a close copy at the next odd row
    np.save(tmp_path / "v.npy", X)
    monkeypatch.setattr(search, "BLOCK", 256)  # many blocks, written and searched
    finder = DuplicateFinder(semantic_only_threshold=0.9).fit(vectors=np.load(tmp_path / "v.npy", mmap_mode="r"))
    unsaved = finder.index()
    assert unsaved.vectors is finder.vectors_ and isinstance(unsaved.vectors, search.UnitRows)
    monkeypatch.setattr(search.UnitRows, "to_array", lambda *a, **k: pytest.fail("a whole n x d copy"))
    d = unsaved.save(tmp_path / "dups")
    meta = json.loads((d / "duplicates.json").read_text())
    assert meta["format"] == "mediacluster.duplicates/3" and "vectors" not in meta["arrays"]
    assert meta["vectors"] == {"file": "vectors.faiss", "rows": 3000, "dims": 48, "dtype": "float16"}
    with np.load(d / "duplicates.npz") as z:
        assert "vectors" not in z.files
    assert faiss.read_index(str(d / "vectors.faiss")).ntotal == 3000  # a plain faiss index file too

    idx = DuplicateIndex.load(d)
    assert isinstance(idx.vectors, np.memmap) and idx.vectors.dtype == np.float16
    assert np.array_equal(idx.vectors, finder.vectors_[:].astype(np.float16))  # its unit rows, as float16
    # new items: noisy copies of stored rows (their pair's other member is close too) and strangers
    Q = np.vstack([X[:40] + 0.05 * rng.standard_normal((40, 48)).astype(np.float32),
                   rng.standard_normal((40, 48)).astype(np.float32)])
    one_by_one = [idx.query(vector=q) for q in Q]
    assert sum(m is not None for m in one_by_one[:40]) >= 35 and all(m is None for m in one_by_one[40:])
    assert answers(one_by_one) == answers(unsaved.query(vector=q) for q in Q)
    assert len(Q) >= index_mod.BATCH_QUERIES  # query_many takes the blocked pass
    batched = idx.query_many(None, Q)
    assert [a[:3] if a else None for a in answers(batched)] == [a[:3] if a else None for a in answers(one_by_one)]
    assert np.allclose([m.distance for m in batched if m], [m.distance for m in one_by_one if m], atol=1e-6)
    # a stored row checked against the others: its pair
    m = idx.query(vector=X[10], exclude=10)
    assert m is not None and m.index == 11 and m.kind == "semantic"


def test_an_index_in_format_2_still_loads_and_answers_as_before(tmp_path):
    """A model folder written before the vectors had their own file (format 2: every vector in
    ``duplicates.npz``; tests/fixtures/dupindex_format2, made by that code with its answers) loads
    and answers the same; saved again, it is format 3 and still answers the same."""
    import json

    fixture = Path(__file__).parent / "fixtures" / "dupindex_format2"
    assert json.loads((fixture / "duplicates.json").read_text())["format"] == "mediacluster.duplicates/2"
    Q = np.load(fixture / "queries.npy")
    want = json.loads((fixture / "answers.json").read_text())
    assert sum(w is not None for w in want) == 4
    old = DuplicateIndex.load(fixture)
    assert not isinstance(old.vectors, np.memmap) and old.vectors.dtype == np.float16
    assert [None if m is None else m.to_dict() for m in old.query_many(None, Q)] == want
    assert [None if m is None else m.to_dict() for m in old.query_many(None, np.repeat(Q, 20, axis=0))[::20]] == want
    new = DuplicateIndex.load(old.save(tmp_path / "again"))
    assert isinstance(new.vectors, np.memmap)
    assert [None if m is None else m.to_dict() for m in new.query_many(None, Q)] == want


def test_a_damaged_vectors_file_is_refused(rng, tmp_path):
    import json

    from mediacluster.errors import ModelFormatError

    d = DuplicateFinder().fit(vectors=planted_pairs(rng, 50, 8)).index().save(tmp_path / "ok")
    for name, damage in [("short", lambda p: p.write_bytes(p.read_bytes()[:-10])),
                         ("foreign", lambda p: p.write_bytes(b"not a faiss index"))]:
        bad = tmp_path / name
        shutil.copytree(d, bad)
        damage(bad / "vectors.faiss")
        with pytest.raises(ModelFormatError, match="vectors"):
            DuplicateIndex.load(bad)
    bad = tmp_path / "rows"
    shutil.copytree(d, bad)
    meta = json.loads((bad / "duplicates.json").read_text())
    (bad / "duplicates.json").write_text(json.dumps({**meta, "vectors": {**meta["vectors"], "rows": 49}}))
    with pytest.raises(ModelFormatError, match="vectors"):
        DuplicateIndex.load(bad)


def test_dups_reads_a_float32_npy_where_it_lies(rng, tmp_path, monkeypatch):
    """`mediacluster dups vectors.npy`: the file is memory-mapped (never loaded whole), with the
    same table as the same vectors read into memory from an .npz."""
    import pandas as pd

    from mediacluster.duplicates import collection, search

    X = planted_pairs(rng, 3000, 24)
    X[1::2] = X[0::2] * 2 + 0.002 * rng.standard_normal((1500, 24)).astype(np.float32)
    np.save(tmp_path / "v.npy", X)
    np.savez(tmp_path / "v.npz", vectors=X)
    seen = []
    real = search.UnitRows.__init__

    def spy(self, V, block=None):
        seen.append(type(V))
        real(self, V, block)

    monkeypatch.setattr(search.UnitRows, "__init__", spy)
    a = collection.find_duplicates_in(tmp_path / "v.npy", tmp_path / "a", progress=False, page=False)
    assert seen and seen[0] is np.memmap
    b = collection.find_duplicates_in(tmp_path / "v.npz", tmp_path / "b", progress=False, page=False)
    assert a["groups"] == b["groups"] >= 1400
    ta, tb = pd.read_parquet(a["table"]), pd.read_parquet(b["table"])
    assert ta.equals(tb)


def test_prepared_cache_keeps_the_newest_items_within_its_bounds():
    """The verifiers' cache (images: by count, audio fingerprints: by bytes) prepares a file
    once, keeps the most recently used and always the newest, and caches unreadable files too."""
    from mediacluster.duplicates.verify import PreparedCache

    calls = []

    def prepare(path):
        calls.append(path)
        return None if path == "bad" else np.zeros(int(path), np.uint8)

    by_count = PreparedCache(prepare, max_items=2)
    for p in ("10", "20", "10", "30", "bad", "bad"):
        by_count.get(p)
    assert calls == ["10", "20", "30", "bad"] and len(by_count) == 2  # "10" reused; "20" then "10" dropped
    calls.clear()
    by_bytes = PreparedCache(prepare, max_bytes=50, nbytes=lambda a: a.nbytes)
    for p in ("30", "20", "40", "100"):
        by_bytes.get(p)
    assert len(by_bytes) == 1 and by_bytes.get("100").nbytes == 100  # over the bound alone: kept
    assert calls == ["30", "20", "40", "100"]


def test_groups_across_folders_counts_copies_spanning_top_level_folders():
    from mediacluster.duplicates.collection import across_folders

    groups = [0, 0, 1, 1, 2, 2, 2, -1, 3, 3]
    paths = ["train/cat/a.jpg", "test/cat/a.jpg",     # across train and test
             "train/cat/b.jpg", "train/dog/b.jpg",    # one split: not counted
             "train/x.jpg", "val/x.jpg", "test/x.jpg",  # three folders
             "test/alone.jpg",                        # no group
             "top.jpg", "/elsewhere/top.jpg"]         # the root's own files and files outside it: "."
    assert across_folders(groups, paths) == {"test + train": 1, "test + train + val": 1}
    assert across_folders(groups, None) == {}
    assert across_folders([0, 0], ["a/1.jpg", "b/1.jpg"]) == {"a + b": 1}


def test_the_studio_counts_groups_across_folders_by_the_duplicates_packages_rule(tmp_path):
    """One rule for a copy's top-level folder and the groups across folders: ``dups`` (paths as
    stored, relative) and the studio (absolute paths under the collection's folder) give the same
    counts, a folder whose name is not UTF-8 escaped as JSON text in both."""
    from mediacluster.duplicates.collection import across_folders, group_folders, top_folder
    from mediacluster.fileio import path_to_text
    from mediacluster.studio.dupgroups import DuplicateGroups

    root = str(tmp_path)
    odd = os.fsdecode(b"sp\xe9cial")  # not UTF-8: a surrogate escape
    rel = ["train/cat/a.jpg", "test/cat/a.jpg", "train/cat/b.jpg", "train/dog/b.jpg",
           "train/x.jpg", "val/x.jpg", "test/x.jpg", "test/alone.jpg", "top.jpg", None,
           f"{odd}/c.jpg", "train/c.jpg"]
    groups = [0, 0, 1, 1, 2, 2, 2, -1, 3, 3, 4, 4]
    absolute = [None if p is None else os.path.join(root, p) for p in rel]
    absolute[9] = "/elsewhere/top.jpg"
    assert [top_folder(p) for p in rel[:3]] == ["train", "test", "train"]
    assert top_folder(absolute[0], root) == "train" and top_folder(absolute[8], root) == "."
    assert top_folder(absolute[9], root) == "." and top_folder(None, root) == "."
    assert group_folders(groups, absolute, root)[2] == ["test", "train", "val"]
    expected = {"test + train": 1, "test + train + val": 1, f"{path_to_text(odd)} + train": 1}
    assert across_folders(groups, rel) == expected
    assert across_folders(groups, absolute, root) == expected
    studio = DuplicateGroups(np.array(groups), np.zeros(len(groups), bool), absolute, root)
    summary = studio.summary(np.zeros(len(groups), np.int64))
    assert summary["across_folders"] == expected
    json.dumps(summary)  # JSON text throughout
