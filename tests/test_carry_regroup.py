"""Carrying how a person regrouped a collection: their merges and splits, the names they gave
the groups, and the groups' lasting ids (``mediacluster.studio.carry``).

Real slices of Imagenette (tench, springer, church; the grown collection adds parachutes),
clustered with PCA + K-means through the CLI (deterministic), curated through the studio's edit
API (real SQLite edit logs), carried with ``cluster --carry-from`` / :func:`carry_curation`.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from studio_helpers import copy_run
from test_carry import CLASSES, by_label, cluster

from mediacluster.rundir import RunDir
from mediacluster.studio.carry import carry_curation
from mediacluster.studio.matching import merge_targets
from mediacluster.studio.session import Studio

FISH, DOGS, CHURCH = CLASSES


@pytest.fixture(scope="module")
def world(imagenette_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("regroup")
    old, new = base / "old", base / "new"
    for c in CLASSES:
        shutil.copytree(imagenette_dir / c, old / c)
    shutil.copytree(imagenette_dir, new)
    cache = base / "cache"
    for k in (3, 4):  # 4: the springers in two clusters
        rc, out = cluster(old, base / f"old{k}", k, cache)
        assert rc == 0, out
    rc, out = cluster(new, base / "new4", 4, cache)  # a cluster per class
    assert rc == 0, out
    return {"base": base, "old": old, "new": new, "cache": cache}


def edit(run, *edits) -> None:
    st = Studio(run, warm=False, map_method="pca")
    try:
        for kind, req in edits:
            st.edit(kind, req)
    finally:
        st.close()


def state_of(run):
    st = Studio(run, warm=False, map_method="pca")
    try:
        return st.state, st.log.events()
    finally:
        st.close()


def test_a_merge_is_carried_to_the_clusters_its_parts_became(world, tmp_path):
    """The person merged the fish and the dogs ("animals"); the new run has a cluster for each.
    The carry merges them (an ordinary merge event) and the group's name and tag go to the
    merged cluster; before, "animals" was reported split and its name carried nowhere."""
    old = copy_run(world["base"] / "old3", tmp_path / "old")
    new = copy_run(world["base"] / "new4", tmp_path / "new")
    cl = by_label(old)
    edit(old, ("merge", {"clusters": [cl[DOGS], cl[FISH]], "into": cl[DOGS]}),
         ("rename", {"cluster": cl[DOGS], "name": "animals"}), ("tag", {"clusters": [cl[DOGS]], "add": ["pets"]}))
    s = carry_curation(old, new, cache_dir=world["cache"])
    nl = by_label(new)
    into = nl[DOGS]  # the cluster holding most of the group (a tie: the one the group's id continues)
    assert s["carried"]["merges"] == 1 and s["carried"]["names"] == 1 and s["carried"]["cluster_tags"] == 1
    rec = {r["cluster"]: r for r in s["previous"]}[cl[DOGS]]
    assert rec["status"] == "kept" and rec["carried_to"] == into
    assert rec["merged_parts"] == sorted([nl[DOGS], nl[FISH]])
    assert not [r for r in s["not_carried"] if r["what"] == "merges"]
    state, evs = state_of(new)
    assert not state.clusters[nl[FISH]].alive
    assert set(np.flatnonzero(state.labels == into)) >= set(np.flatnonzero(
        pd.read_parquet(new / "assignments.parquet")["cluster"].isin([nl[DOGS], nl[FISH]])))
    c = state.clusters[into]
    assert (c.name, c.named_by, c.tags) == ("animals", "person", ["pets"])
    merges = [e for e in evs if e.kind == "merge"]
    assert len(merges) == 1 and merges[0].payload["carried_from"] == RunDir.open(old).run_id
    assert merges[0].payload["previous_cluster"] == cl[DOGS]
    # the studio undoes it as any edit; carrying again then leaves the person's undo alone
    st = Studio(new, warm=False, map_method="pca")
    try:
        while st.state.done and st.state.done[-1].kind != "merge":
            st.edit("undo", {})
        st.edit("undo", {})
        assert st.state.clusters[nl[FISH]].alive
    finally:
        st.close()
    edit(old, ("tag", {"clusters": [cl[DOGS]], "add": ["later"]}))
    s = carry_curation(old, new, cache_dir=world["cache"])
    assert s["carried"]["merges"] == 0
    state, _ = state_of(new)
    assert state.clusters[nl[FISH]].alive


def test_a_merge_the_new_run_already_has_writes_nothing(world, tmp_path):
    """The springers were two clusters the person merged; the new run has them as one: no merge
    event, nothing listed as not carried, the name carried to that cluster."""
    old = copy_run(world["base"] / "old4", tmp_path / "old")
    new = copy_run(world["base"] / "new4", tmp_path / "new")
    a = pd.read_parquet(old / "assignments.parquet")
    parts = sorted(a.loc[a["label"] == DOGS, "cluster"].unique().tolist())
    assert len(parts) == 2, "the fixture's K-means no longer splits the springers"
    edit(old, ("merge", {"clusters": parts, "into": parts[0]}), ("rename", {"cluster": parts[0], "name": "dogs"}))
    s = carry_curation(old, new, cache_dir=world["cache"])
    assert s["carried"]["merges"] == 0 and s["carried"]["names"] == 1
    assert not [r for r in s["not_carried"] if r["what"] == "merges"]
    state, evs = state_of(new)
    assert state.clusters[by_label(new)[DOGS]].name == "dogs"
    assert [e.kind for e in evs] == ["rename", "carry"]


def test_a_merge_carried_again_after_the_first_carry(world, tmp_path):
    """Merged in the previous run after the first carry: carried the next time, once."""
    old = copy_run(world["base"] / "old3", tmp_path / "old")
    new = copy_run(world["base"] / "new4", tmp_path / "new")
    cl = by_label(old)
    edit(old, ("rename", {"cluster": cl[CHURCH], "name": "church"}))
    s = carry_curation(old, new, cache_dir=world["cache"])
    assert s["carried"]["names"] == 1 and s["carried"]["merges"] == 0
    edit(old, ("merge", {"clusters": [cl[FISH], cl[DOGS]], "into": cl[FISH]}))
    s = carry_curation(old, new, cache_dir=world["cache"])
    assert s["carried"]["merges"] == 1
    assert not [r for r in s["not_carried"] if r["what"] == "merge"]  # no longer listed as left
    state, evs = state_of(new)
    assert int(state.labels[pd.read_parquet(new / "assignments.parquet")["label"].eq(DOGS).idxmax()]) == \
        int(state.labels[pd.read_parquet(new / "assignments.parquet")["label"].eq(FISH).idxmax()])
    assert sum(e.kind == "merge" for e in evs) == 1
    s = carry_curation(old, new, cache_dir=world["cache"])
    assert s.get("already")


def test_which_new_clusters_a_merge_goes_to():
    """The rule alone: a previous group made of parts (the clusters a person merged: 0, 1, 2 in
    group 0); each part goes to the new cluster it is a mutual majority with."""
    # parts 0 -> 10, 1 -> 11 (mutual), 2 scattered: merge 10 and 11, part 2 listed
    parts = np.array([0] * 6 + [1] * 6 + [2] * 4 + [5] * 6)
    group = np.array([0] * 16 + [5] * 6)
    new = np.array([10] * 6 + [11] * 6 + [12, 13, 12, 13] + [12] * 3 + [13] * 3)
    targets, into, left = merge_targets(parts, group, new, 0, carried_to=None)
    assert targets == [10, 11] and into == 10 and left == [2]
    # into: the cluster the group as a whole was carried to, else where its own part went
    assert merge_targets(parts, group, new, 0, carried_to=11)[1] == 11
    assert merge_targets(parts, group, np.where(new == 10, 14, new), 0, carried_to=None)[1] == 14
    # only one side has a match: nothing to merge, the other listed
    elsewhere = np.array([10] * 6 + [12] * 6 + [12, 13, 12, 13] + [12] * 6)  # 12: mostly group 5's
    targets, into, left = merge_targets(parts, group, elsewhere, 0, carried_to=None)
    assert targets == [10] and left == [1, 2]
    # the new run already has them as one: nothing to merge, nothing listed
    together = np.array([10] * 16 + [12] * 6)
    assert merge_targets(parts, group, together, 0, carried_to=10) == ([10], 10, [])



def test_carrying_what_this_run_already_has_writes_and_lists_nothing(world, tmp_path):
    """After the first carry the person goes on in both runs and does the same things twice:
    the same rename, the same cluster and item tags, the same move of an item. Carrying again
    finds each already there: no event is written for it and none is listed as not carried
    (before, the move was listed as "this run's own edit wins" though it agreed)."""
    old = copy_run(world["base"] / "old3", tmp_path / "old")
    new = copy_run(world["base"] / "new4", tmp_path / "new")
    cl, nl = by_label(old), by_label(new)
    edit(old, ("rename", {"cluster": cl[CHURCH], "name": "church"}))
    carry_curation(old, new, cache_dir=world["cache"])
    a_old = pd.read_parquet(old / "assignments.parquet")
    a_new = pd.read_parquet(new / "assignments.parquet")
    row_new = {p.split("/")[-1]: i for i, p in enumerate(a_new["path"])}
    dog = int(a_old.index[a_old["label"] == DOGS][0])
    dog_new = row_new[a_old["path"][dog].split("/")[-1]]
    same = [("rename", {"cluster": nl[FISH], "name": "fish"}), ("tag", {"clusters": [nl[DOGS]], "add": ["pets"]}),
            ("tag", {"items": [dog_new], "add": ["good"]}), ("move", {"items": [dog_new], "to": nl[CHURCH]})]
    edit(new, *same)
    edit(old, ("rename", {"cluster": cl[FISH], "name": "fish"}), ("tag", {"clusters": [cl[DOGS]], "add": ["pets"]}),
         ("tag", {"items": [dog], "add": ["good"]}), ("move", {"items": [dog], "to": cl[CHURCH]}))
    _, before = state_of(new)
    s = carry_curation(old, new, cache_dir=world["cache"])
    _, after = state_of(new)
    assert [e.kind for e in after[len(before):]] == ["carry"]
    assert not any(s["carried"].values()) and s["not_carried"] == []
    assert "already has" in s["message"]


def lasting_of(run) -> dict[int, str]:
    """Each curated cluster's lasting id as the studio's table export gives it."""
    st = Studio(run, warm=False, map_method="pca")
    try:
        _, df, _ = st.curated_table()
    finally:
        st.close()
    out = {}
    for c, ids in df.groupby("curated_cluster")["lineage"]:
        assert ids.nunique() == 1
        out[int(c)] = ids.iloc[0]
    return out


def test_the_lasting_id_follows_the_persons_group(world, tmp_path):
    """A group's lasting id (RUN_ID/C) follows where the person's group went, not the new fit's
    clusters: the "animals" group (fish and dogs merged) keeps its id in the new run, where
    the carry merged its two clusters; both fitted clusters carry it in carry.json's lineage.
    Carrying again after the person merged two clusters in the new run keeps lineage keyed by
    the run's fitted clusters (it was keyed by the curated ones: the merged-away cluster lost its
    id). Before, the merged cluster took the fish cluster's new id (the fitted cluster listed
    first), and the fish cluster had no lineage entry."""
    old = copy_run(world["base"] / "old3", tmp_path / "old")
    new = copy_run(world["base"] / "new4", tmp_path / "new")
    cl, nl = by_label(old), by_label(new)
    edit(old, ("merge", {"clusters": [cl[DOGS], cl[FISH]], "into": cl[DOGS]}),
         ("rename", {"cluster": cl[DOGS], "name": "animals"}))
    animals = lasting_of(old)[cl[DOGS]]
    s = carry_curation(old, new, cache_dir=world["cache"])
    fitted = sorted(pd.read_parquet(new / "assignments.parquet")["cluster"].unique().tolist())
    assert sorted(map(int, s["lineage"])) == fitted
    assert s["lineage"][str(nl[FISH])] == s["lineage"][str(nl[DOGS])] == animals
    assert lasting_of(new)[nl[DOGS]] == animals
    church = lasting_of(new)[nl[CHURCH]]
    # the person merges the church into the parachutes here, then the previous run goes on
    from test_carry import NEW_CLASS

    edit(new, ("merge", {"clusters": [nl[NEW_CLASS], nl[CHURCH]], "into": nl[NEW_CLASS]}))
    edit(old, ("tag", {"clusters": [cl[CHURCH]], "add": ["old"]}))
    s = carry_curation(old, new, cache_dir=world["cache"])
    assert sorted(map(int, s["lineage"])) == fitted
    assert s["lineage"][str(nl[DOGS])] == animals
    assert lasting_of(new)[nl[DOGS]] == animals
    # the church group went on (with the parachutes) in the cluster the person merged it into
    assert lasting_of(new)[nl[NEW_CLASS]] == church == s["lineage"][str(nl[NEW_CLASS])]


def split_dogs(run, names=("springers", "puppies"), tags=("pets",)) -> tuple[int, int, list[str]]:
    """The person splits the springers' cluster in two (the first 8 members apart) naming both
    parts, and tags the new part; (the cluster, the new part, the new part's files)."""
    c = by_label(run)[DOGS]
    st = Studio(run, warm=False, map_method="pca")
    try:
        members = st.state.members(c).tolist()
        parts = [1] * 8 + [0] * (len(members) - 8)
        st.edit("split", {"cluster": c, "items": members, "parts": parts, "names": list(names)})
        made = int(st.state.labels[members[0]])
        if tags:
            st.edit("tag", {"clusters": [made], "add": list(tags)})
    finally:
        st.close()
    paths = pd.read_parquet(run / "assignments.parquet")["path"]
    return c, made, sorted(paths[i].split("/")[-1] for i in members[:8])


def test_a_split_part_is_carried_to_where_its_items_went(world, tmp_path):
    """The person split the springers in two and named both parts; the new run has them as one
    cluster (the part that kept the id is its mutual majority). The other part is made again
    there from its items (a move to a new cluster, named and tagged as the person did); before,
    it was reported merged and its name and tag carried nowhere."""
    old = copy_run(world["base"] / "old3", tmp_path / "old")
    new = copy_run(world["base"] / "new4", tmp_path / "new")
    c, made, files = split_dogs(old)
    s = carry_curation(old, new, cache_dir=world["cache"])
    nl = by_label(new)
    rec = {r["cluster"]: r for r in s["previous"]}
    assert rec[c]["carried_to"] == nl[DOGS] and rec[made]["status"] == "merged"
    assert s["carried"]["splits"] == 1 and s["carried_items_moved"] == 8
    state, evs = state_of(new)
    paths = pd.read_parquet(new / "assignments.parquet")["path"]
    rows = [i for i, p in enumerate(paths) if p.split("/")[-1] in files]
    assert len(rows) == 8 and len({int(state.labels[i]) for i in rows}) == 1
    part = state.clusters[int(state.labels[rows[0]])]
    assert part.id != nl[DOGS] and (part.name, part.named_by, part.tags) == ("puppies", "person", ["pets"])
    assert state.clusters[nl[DOGS]].name == "springers"
    assert state.sizes()[part.id] == 8
    assert not [r for r in s["not_carried"] if r.get("previous_cluster") == made]
    # carried again with nothing new there: nothing twice; a rename of the part since arrives
    edit(old, ("rename", {"cluster": made, "name": "pups"}))
    s = carry_curation(old, new, cache_dir=world["cache"])
    assert s["carried"]["splits"] == 0 and s["carried"]["names"] == 1
    state, _ = state_of(new)
    assert state.clusters[part.id].name == "pups" and state.sizes()[part.id] == 8


def test_the_split_part_that_kept_the_id_is_carried_when_the_other_part_wins(world, tmp_path):
    """The part of a split that kept the cluster's id lost items to the other part afterwards
    (the person moved 4 there), so the new run's springer cluster continues the other part; the
    part that kept the id is made again from its items there (it was left: only a split's new
    parts were)."""
    old = copy_run(world["base"] / "old3", tmp_path / "old")
    new = copy_run(world["base"] / "new4", tmp_path / "new")
    c, made, files = split_dogs(old, tags=())
    st = Studio(old, warm=False, map_method="pca")
    try:
        kept = st.state.members(c).tolist()
        st.edit("move", {"items": kept[:4], "to": made})
    finally:
        st.close()
    s = carry_curation(old, new, cache_dir=world["cache"])
    nl = by_label(new)
    rec = {r["cluster"]: r for r in s["previous"]}
    assert rec[made]["carried_to"] == nl[DOGS] and rec[c]["carried_to"] is None
    assert s["carried"]["splits"] == 1
    state, _ = state_of(new)
    assert state.clusters[nl[DOGS]].name == "puppies"
    paths = pd.read_parquet(old / "assignments.parquet")["path"]
    mine = {paths[i].split("/")[-1] for i in kept[4:]}
    rows = [i for i, p in enumerate(pd.read_parquet(new / "assignments.parquet")["path"]) if p.split("/")[-1] in mine]
    assert len(rows) == len(mine) and len({int(state.labels[i]) for i in rows}) == 1
    part = state.clusters[int(state.labels[rows[0]])]
    assert part.id != nl[DOGS] and (part.name, part.named_by) == ("springers", "person")


def test_a_new_cluster_holding_a_whole_split_continues_its_larger_part(world, tmp_path):
    """The person split the springers half and half; the new run has them as one cluster, which
    neither half is most of. The cluster continues the part that kept the id (a tie: the lower
    id), the other half is made again from it; before, both halves were made again and the
    fit's cluster was left empty."""
    old = copy_run(world["base"] / "old3", tmp_path / "old")
    new = copy_run(world["base"] / "new4", tmp_path / "new")
    c = by_label(old)[DOGS]
    st = Studio(old, warm=False, map_method="pca")
    try:
        members = st.state.members(c).tolist()
        st.edit("split", {"cluster": c, "items": members, "parts": [1] * 10 + [0] * 10,
                          "names": ["springers", "puppies"]})
    finally:
        st.close()
    s = carry_curation(old, new, cache_dir=world["cache"])
    nl = by_label(new)
    assert {r["cluster"]: r["carried_to"] for r in s["previous"]}[c] == nl[DOGS]
    assert s["carried"]["splits"] == 1
    state, _ = state_of(new)
    sizes = state.sizes()
    assert state.clusters[nl[DOGS]].name == "springers" and sizes[nl[DOGS]] == 10
    made = [x for x in state.alive() if x.name == "puppies"]
    assert len(made) == 1 and sizes[made[0].id] == 10


def test_a_split_part_made_again_keeps_its_lasting_id(world, tmp_path):
    """The part of a split the carry made again ("puppies", a cluster of the curation only) is the
    person's group: it keeps the lasting id it had in the previous run (recorded in carry.json's
    ``made_lineage``), through a carry again and into the next run; before, each run gave it an id
    of its own (lineage is keyed by fitted clusters, which such a part is not)."""
    old = copy_run(world["base"] / "old3", tmp_path / "old")
    new = copy_run(world["base"] / "new4", tmp_path / "new")
    third = copy_run(world["base"] / "old4", tmp_path / "third")
    c, made, files = split_dogs(old)
    puppies = lasting_of(old)[made]
    springers = lasting_of(old)[c]
    s = carry_curation(old, new, cache_dir=world["cache"])
    assert s["carried"]["splits"] == 1
    state, _ = state_of(new)
    part = next(x.id for x in state.alive() if x.name == "puppies")
    assert lasting_of(new)[part] == puppies and s["made_lineage"] == {str(part): puppies}
    assert lasting_of(new)[by_label(new)[DOGS]] == springers
    edit(old, ("rename", {"cluster": made, "name": "pups"}))  # carried again: still recorded
    s = carry_curation(old, new, cache_dir=world["cache"])
    assert lasting_of(new)[part] == puppies and s["made_lineage"] == {str(part): puppies}
    s = carry_curation(new, third, cache_dir=world["cache"])  # and on into the next run
    state, _ = state_of(third)
    part3 = [x.id for x in state.alive() if x.name == "pups"]
    assert len(part3) == 1 and lasting_of(third)[part3[0]] == puppies, (part3, s["not_carried"])


def test_a_continued_split_part_takes_its_items_from_its_heir(world, tmp_path):
    """The next fit (k 4 on the same photos) has the springers in two clusters, 6 and 14. The
    person's split put 3 of the 6 and 4 of the 14 in "puppies", the rest in "springers" (10 + 2)
    and one item alone. The 14's cluster continues "springers" (a mutual majority); the 6's
    continues "puppies", its largest part there (`split_continues`), though most of "puppies"
    lies in the 14's cluster, its heir. Its 4 items there now go with it; before, they stayed
    under "springers" (3 of the 7 puppies in "puppies")."""
    old = copy_run(world["base"] / "old3", tmp_path / "old")
    new = copy_run(world["base"] / "old4", tmp_path / "new")
    c = by_label(old)[DOGS]
    name = pd.read_parquet(old / "assignments.parquet")["path"].str.split("/").str[-1]
    a4 = pd.read_parquet(new / "assignments.parquet")
    where = dict(zip(a4["path"].str.split("/").str[-1], a4["cluster"]))
    st = Studio(old, warm=False, map_method="pca")
    try:
        members = st.state.members(c).tolist()
        placed = [where[name[i]] for i in members]
        small = min(set(placed), key=placed.count)
        A = [i for i, y in zip(members, placed) if y == small]
        B = [i for i, y in zip(members, placed) if y != small]
        assert len(A) == 6 and len(B) == 14 and len(set(placed)) == 2  # the fit this test is about
        part = {**{i: 0 for i in A[:2] + B[4:]}, **{i: 1 for i in A[2:5] + B[:4]}, A[5]: 2}
        st.edit("split", {"cluster": c, "items": members, "parts": [part[i] for i in members],
                          "names": ["springers", "puppies", "odd"]})
    finally:
        st.close()
    puppies = {name[i] for i in A[2:5] + B[:4]}
    s = carry_curation(old, new, cache_dir=world["cache"])
    state, _ = state_of(new)
    rows = [i for i, p in enumerate(a4["path"].str.split("/").str[-1]) if p in puppies]
    assert len(rows) == 7
    held = {int(state.labels[i]) for i in rows}
    assert len(held) == 1 and state.clusters[held.pop()].name == "puppies", s["previous"]
    springers = [x for x in state.alive() if x.name == "springers"]
    assert len(springers) == 1 and state.sizes()[springers[0].id] == 10
