"""Carrying curation to a re-clustered, grown collection (``mediacluster.studio.carry``).

Question: when a curated collection grows and is clustered again, how much of the person's work
does the mutual-majority rule carry, is it carried to the right groups, and how long does it take?

For each set and seed: a random ``--old`` items of the set are clustered with the default
``Pipeline(random_state=seed)`` (the previous run) and curated by a simulated person through the
studio's own edit API (``Studio.edit``): the clusters of one majority class merged into the one
holding most of the class, the smallest cluster then marked junk, every other cluster renamed after
its class and tagged with it, every item of a class outside its class's cluster (and outside the
junk) moved there, 50 random items tagged. Then the
whole set is clustered with the same seed (the grown collection) and ``carry_curation`` carries the
curation into it (items identified by content hash: the set's real files are hashed). A second
scenario re-clusters the same old items with another seed (nothing grew; only the fit changed).

Reported: previous curated clusters kept / split / merged / gone, new clusters with no ancestor,
carried edits, the share of carried names that landed on a new cluster of the same majority class
("right"), the new clusters whose majority class had a named previous cluster but got no name
("unnamed"), and the wall time of ``carry_curation`` (hashing included: the files were not
embedded through this cache, so every file is read once).

With ``--third`` the simulated person also splits their largest named cluster in two (by its
items' first principal component, the new part named "my <class> (b)"), and the table says how
many of the person's merges and split parts were carried (``carried`` ``merges`` / ``splits``),
how many merged groups the new run had apart before the carry, and how many named items keep
their name; written to the carry3 section (run it on the code before and after to compare).

With ``--second`` the grown run is then carried into a second time (``second_pass``): after
the first carry the person edits the new run (renames the first carried cluster, moves a few
items to a cluster of their own) and goes on curating the previous run (every named cluster
renamed and tagged again, items unassigned, items tagged); carrying again must carry exactly
those later edits, once, and leave the new run's own edits alone. Written to its own section.

Usage::

    python benchmarks/carry.py --sets imagenette cifar10-test --seeds 0 1 2 --write
    python benchmarks/carry.py --sets imagenette --seeds 0 --second --write
    python benchmarks/carry.py --sets imagenette cifar10-test --seeds 0 1 2 --third
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import _results
import numpy as np

from mediacluster.data import Embeddings
from mediacluster.pipeline import Pipeline
from mediacluster.rundir import RunDir
from mediacluster.studio.carry import carry_curation
from mediacluster.studio.session import Studio
from mediacluster.workflow import publish_run

SECTION = "## Carrying curation to a re-clustered collection (carry helper)"
SECTION2 = "## Carrying curation, second pass (carry2 helper)"
OLD_SIZE = {"imagenette": 2000, "cifar10-test": 5000}


NOTES = """\
A simulated person curates a random part of the set (clusters of one majority class merged, the
smallest cluster junk, the rest renamed "my <class>" and tagged, items of a class moved into its
cluster, 50 items tagged: `curate` in the script); the whole set ("grown") or the same items with
another seed is clustered again and `carry_curation` carries the curation. *previous clusters*:
the curated clusters with items; *kept / split / merged / gone*: their status under the
mutual-majority rule; *new*: new clusters with no ancestor (of all new clusters); *names carried
(right class)*: person-given names carried, and of the carried pairs (junk included) how many land
on a new cluster whose majority class is the previous cluster's; *unnamed classes*: new clusters
whose majority class had a curated cluster but that inherited nothing (mostly the second part of a
split: to review); *named items keeping their name*: of the shared items the person had named, the
share whose curated name in the new run is the same after carrying (split parts, merges and
re-clustered borders lose theirs); *carry s*: `carry_curation` wall time, hashing every file of
both runs included. On CIFAR-10 the default clusters hold several classes each, so a cluster's
majority class can flip between two runs while the group stays the same: checked by hand for
seed 0 (grown; the same runs refitted by a scratch script), the two carried pairs counted as another class were
"my airplane" (497 airplanes, 385 ships) -> a new cluster of 840 ships and 810 airplanes, and "my
truck" (491 trucks, 457 automobiles) -> 651 automobiles and 555 trucks; the gone "my frog" (frog
463, bird 317, deer 171, cat 167) is spread over several new clusters, none holding half of it,
and the frog-majority new cluster is reported new.\
"""


NOTES2 = """\
First the carry helper's measurement again (the same script and seeds: the table below has its
columns; compare with its section). Then, on the grown run, a second round (`second_pass` in the
script): after the first carry the person renames the first carried cluster in the new run
("named here") and moves 5 items there to a cluster of their own; then, in the previous run,
renames every cluster they had named ("my <class> v2") and tags it `v2`, unassigns 20 random
clustered items (5 of them the ones moved in the new run) and tags 50 random items `second`; then
`carry_curation` runs again. *made*: those second-round edits, per cluster or item; *arrived*:
found in the new run after the second carry (a name or tag on the cluster the previous cluster
is carried to, an item's tag, an item unassigned); *kept here*: those the new run's own later
edit touched, which the carry left alone and listed in `carry.json` `not_carried`; *no match*:
renames of previous clusters with no mutual match (not carried, listed); *duplicated*: carried
events of the new run's log equal (kind and payload) to another; *third carry*: a carry with
nothing new since.\
"""


def load(name: str, vec_dir: Path) -> Embeddings:
    """A set's vectors: ``<name>.npz`` (``ids``, ``imagenet_probs``) or ``<name>-val.npz`` (the
    development vectors: ``paths`` for ids, no ImageNet probabilities)."""
    f = vec_dir / f"{name}.npz"
    d = np.load(f if f.exists() else vec_dir / f"{name}-val.npz")
    ids = [str(x) for x in (d["ids"] if "ids" in d.files else d["paths"])]
    extras = {"imagenet_probs": np.asarray(d["imagenet_probs"], dtype=np.float32)} if "imagenet_probs" in d.files else {}
    return Embeddings(ids=ids, vectors=np.asarray(d["vectors"], dtype=np.float32), encoder="efficientnet-lite0",
                      paths=ids, labels=[str(x) for x in d["labels"]], extras=extras,
                      root=os.path.commonpath(ids))


def make_run(emb: Embeddings, out: Path, seed: int) -> tuple[Path, float]:
    t = time.perf_counter()
    pipe = Pipeline(random_state=seed).fit(emb.vectors)
    publish_run(out, emb, pipe)
    return out, time.perf_counter() - t


def majority(labels: np.ndarray, clusters: np.ndarray) -> dict[int, str]:
    out = {}
    for c in np.unique(clusters[clusters >= 0]):
        out[int(c)] = Counter(labels[clusters == c].tolist()).most_common(1)[0][0]
    return out


def curate(run: Path, labels: np.ndarray, seed: int, split: bool = False) -> dict:
    """The simulated person (see the module docstring; ``split``: also split the largest named
    cluster in two); returns what was done."""
    st = Studio(run, warm=False, map_method="pca")
    try:
        lab = st.state.labels
        maj = majority(labels, lab)
        done = Counter()
        home: dict[str, tuple[int, int]] = {}  # the cluster holding most of each class
        for c, cls in maj.items():
            n = int(np.sum((lab == c) & (labels == cls)))
            if n > home.get(cls, (-1, 0))[1]:
                home[cls] = (c, n)
        for cls, (c, _) in sorted(home.items()):  # clusters of one class merged into its home
            same = [d for d, k in maj.items() if k == cls and d != c]
            if same:
                st.edit("merge", {"clusters": [c, *same], "into": c})
                done["merges"] += 1
        sizes = Counter(lab[lab >= 0].tolist())
        junk = min(sizes, key=lambda c: (sizes[c], c))
        st.edit("junk", {"clusters": [junk]})
        for cls, (c, _) in sorted(home.items()):
            if c != junk:
                st.edit("rename", {"cluster": c, "name": f"my {cls}"})
                st.edit("tag", {"clusters": [c], "add": [cls]})
                done["names"] += 1
                wrong = np.flatnonzero((labels == cls) & (lab != c) & (lab >= 0) & (lab != junk))
                if len(wrong):
                    st.edit("move", {"items": wrong.tolist(), "to": c})
                    done["moved items"] += len(wrong)
        if split:
            named = {c: cls for cls, (c, _) in home.items() if c != junk}
            big = max(named, key=lambda c: (int(np.sum(lab == c)), -c))
            members = st.state.members(big)
            x = RunDir.open(run).read_vectors(mmap=False)[members]
            x = x - x.mean(axis=0)
            pc = np.linalg.svd(x, full_matrices=False)[2][0]
            parts = (x @ pc > np.median(x @ pc)).astype(int).tolist()
            st.edit("split", {"cluster": big, "items": members.tolist(), "parts": parts,
                              "names": [f"my {named[big]}", f"my {named[big]} (b)"]})
            done["splits"] += 1
        rng = np.random.default_rng(seed)
        st.edit("tag", {"items": sorted(rng.choice(len(lab), 50, replace=False).tolist()), "add": ["favourite"]})
        done["clusters"] = len(np.unique(lab[lab >= 0]))
        return dict(done)
    finally:
        st.close()


def kept_names(old_run: Path, new_run: Path) -> tuple[int, int]:
    """(shared items a person named in the previous run whose new curated name is the same, all
    such items): the items are the same files, so their ids are the same."""
    a = RunDir.open(old_run).read_assignments()
    b = RunDir.open(new_run).read_assignments()
    new_name = dict(zip(b["id"], b["curated_name"] if "curated_name" in b else [None] * len(b)))
    named = [(i, n) for i, n in zip(a["id"], a["curated_name"]) if isinstance(n, str) and n.startswith("my ")
             and i in new_name]
    return sum(new_name[i] == n for i, n in named), len(named)


def score(summary: dict, old_maj: dict[int, str], new_run: Path, labels_new: np.ndarray) -> dict:
    clusters = RunDir.open(new_run).read_assignments()["cluster"].to_numpy()
    new_maj = majority(labels_new, clusters)
    carried = {r["cluster"]: r["carried_to"] for r in summary["previous"] if r.get("carried_to") is not None}
    right = sum(old_maj.get(a) == new_maj.get(b) for a, b in carried.items())
    named_classes = set(old_maj.values())
    inherited = set(carried.values())
    unnamed = [b for b, cls in new_maj.items() if cls in named_classes and b not in inherited]
    st = summary["previous_clusters"]
    return {"kept": st.get("kept", 0), "split": st.get("split", 0), "merged": st.get("merged", 0),
            "gone": st.get("gone", 0), "new": len(summary["new_clusters"]), "new_total": len(new_maj),
            "names": summary["carried"]["names"], "right": right, "carried_pairs": len(carried),
            "unnamed": len(unnamed), "moves": summary["carried"]["moves"],
            "moved_items": summary["carried_items_moved"], "item_tags": summary["carried"]["item_tags"],
            "junk": summary["carried"]["junk"], "seconds": summary["seconds"]}


def apart(old_run: Path, new_run: Path) -> int:
    """The previous run's merges whose parts are in two or more of the new run's fitted clusters
    (each part, the items of a merged cluster as the person's other edits left them, in the
    cluster holding most of its items): the merges there are to carry. A part a later split or
    move emptied is none."""
    from mediacluster.studio.state import CuratedState, start_names

    ro, rn = RunDir.open(old_run), RunDir.open(new_run)
    a, b = ro.read_assignments(), rn.read_assignments()
    log = ro.edits()
    try:
        evs = log.events()
    finally:
        log.close()
    st = CuratedState(a["cluster"].to_numpy(np.int64), start_names(ro))
    for e in evs:
        st.apply(e)
    parts = CuratedState(a["cluster"].to_numpy(np.int64), start_names(ro))  # the edits without the merges
    for e in st.done:
        if e.kind != "merge":
            parts.apply(e)
    new_of = dict(zip(b["id"], b["cluster"]))
    out = 0
    for e in (e for e in st.done if e.kind == "merge"):
        homes = set()
        for c in e.payload["clusters"]:
            there = [new_of[i] for i in a["id"][parts.labels == c] if i in new_of]
            if there:
                homes.add(Counter(there).most_common(1)[0][0])
        out += len(homes) >= 2
    return out


BEFORE = """
import json, sys
from mediacluster.studio.carry import carry_curation
s = carry_curation(sys.argv[1], sys.argv[2], cache_dir=sys.argv[3])
print(json.dumps({k: s[k] for k in ("previous_clusters", "new_clusters", "carried", "carried_items_moved",
                                    "previous", "seconds", "identity", "not_carried")}))
"""


def carry_before(src: str, old_run: Path, new_run: Path, cache: Path) -> tuple[Path, dict]:
    """``carry_curation`` of the package at ``src`` (the code before a change) into a copy of
    ``new_run`` (``<new_run>-before``, its own hash cache), in its own process; its summary."""
    import shutil
    import subprocess
    import sys

    dst = new_run.parent / f"{new_run.name}-before"
    shutil.copytree(new_run, dst, symlinks=True)
    out = subprocess.run([sys.executable, "-c", BEFORE, str(old_run), str(dst), str(cache)], check=True,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": src})
    return dst, json.loads(out.stdout.strip().splitlines()[-1])


def one(name: str, emb: Embeddings, seed: int, work: Path, second: bool = False,
        third: bool = False, before: str | None = None, keep: bool = False) -> tuple[list[dict], list[dict]]:
    n = len(emb)
    rng = np.random.default_rng(seed)
    old_idx = np.sort(rng.choice(n, OLD_SIZE[name], replace=False))
    old_emb = emb.subset(old_idx)
    labels_all = np.asarray(emb.labels)
    old_run, t_old = make_run(old_emb, work / f"{name}-{seed}-old", seed)
    done = curate(old_run, labels_all[old_idx], seed, split=third)
    curated = RunDir.open(old_run).read_assignments()["curated_cluster"].to_numpy()
    old_maj = majority(labels_all[old_idx], curated)
    rows, grown = [], None
    for scen, emb_new, new_seed, labels_new in (("grown", emb, seed, labels_all),
                                                ("same items, new seed", old_emb, seed + 100, labels_all[old_idx])):
        new_run, t_new = make_run(emb_new, work / f"{name}-{seed}-{scen.split()[0]}", new_seed)
        cache = work / f"cache-{name}-{seed}-{scen.split()[0]}"
        if keep:  # the new run as the fit left it, for timing the carry again later
            import shutil

            shutil.copytree(new_run, new_run.parent / f"{new_run.name}-fresh", symlinks=True)
        if before:
            dst, s = carry_before(before, old_run, new_run, work / f"cache-before-{name}-{seed}-{scen.split()[0]}")
            same, named = kept_names(old_run, dst)
            rows.append({"set": name, "seed": seed, "scenario": scen + " (before)", "old": len(old_emb),
                         "new_items": len(emb_new), "kept_names": same, "named_items": named, "curated": done,
                         **score(s, old_maj, dst, labels_new), "wall": None, "fit_s": t_new,
                         "identity": s["identity"], "merges_carried": s["carried"].get("merges", 0),
                         "splits_carried": s["carried"].get("splits", 0), "apart": apart(old_run, new_run)})
            print(rows[-1], flush=True)
        t = time.perf_counter()
        s = carry_curation(old_run, new_run, cache_dir=cache)
        wall = time.perf_counter() - t
        if scen == "grown":
            grown = (new_run, s, cache)
        same, named = kept_names(old_run, new_run)
        rows.append({"set": name, "seed": seed, "scenario": scen, "old": len(old_emb), "new_items": len(emb_new),
                     "kept_names": same, "named_items": named,
                     "curated": done, **score(s, old_maj, new_run, labels_new), "wall": wall,
                     "fit_s": t_new, "identity": s["identity"],
                     "merges_carried": s["carried"].get("merges", 0), "splits_carried": s["carried"].get("splits", 0),
                     "apart": apart(old_run, new_run) if third else None})
        print(rows[-1], flush=True)
    rows2 = []
    if second:
        rows2.append(second_pass(name, seed, old_run, *grown))
        print(rows2[-1], flush=True)
    return rows, rows2


def second_pass(name: str, seed: int, old_run: Path, new_run: Path, first: dict, cache: Path) -> dict:
    """The second round on a carried pair of runs (see the module docstring); what arrived."""
    rng = np.random.default_rng(seed + 1)
    old_ids = [str(x) for x in RunDir.open(old_run).read_assignments()["id"]]
    new_row = {str(x): i for i, x in enumerate(RunDir.open(new_run).read_assignments()["id"])}
    pairs = sorted((r["cluster"], r["carried_to"]) for r in first["previous"]
                   if r.get("carried_to") is not None and r["named_by"] == "person" and not r["junk"])
    st = Studio(old_run, warm=False, map_method="pca")
    try:
        lab = st.state.labels
        junk = {c.id for c in st.state.alive() if c.junk}
        clustered = np.flatnonzero((lab >= 0) & ~np.isin(lab, list(junk)))
        unassign = sorted(rng.choice(clustered, 20, replace=False).tolist())
        tagged = sorted(rng.choice(len(lab), 50, replace=False).tolist())
    finally:
        st.close()
    here_rows = [new_row[old_ids[r]] for r in unassign[:5]]
    st = Studio(new_run, warm=False, map_method="pca")  # the person's own edits in the new run
    try:
        b0 = pairs[0][1]
        st.edit("rename", {"cluster": b0, "name": "named here"}, client="person")
        st.edit("move", {"items": here_rows, "to": "new", "name": "mine"}, client="person")
        mine = int(st.state.labels[here_rows[0]])
        n_events = len(st.log.events())
    finally:
        st.close()
    st = Studio(old_run, warm=False, map_method="pca")  # the previous run, curated further
    renamed = {}
    try:
        for c in [c for c in st.state.alive() if c.named_by == "person" and not c.junk]:
            renamed[c.id] = f"{c.name} v2"
            st.edit("rename", {"cluster": c.id, "name": renamed[c.id]}, client="person")
            st.edit("tag", {"clusters": [c.id], "add": ["v2"]}, client="person")
        st.edit("move", {"items": unassign, "to": -1}, client="person")
        st.edit("tag", {"items": tagged, "add": ["second"]}, client="person")
    finally:
        st.close()
    t = time.perf_counter()
    s2 = carry_curation(old_run, new_run, cache_dir=cache)
    wall = time.perf_counter() - t
    s3 = carry_curation(old_run, new_run, cache_dir=cache)
    to = {r["cluster"]: r["carried_to"] for r in s2["previous"] if r.get("carried_to") is not None}
    st = Studio(new_run, warm=False, map_method="pca")
    try:
        state = st.state
        evs = st.log.events()
        carried = [e for e in evs if e.client.startswith("carried from") and e.kind != "carry"]
        sigs = Counter((e.kind, json.dumps({k: v for k, v in e.payload.items() if k != "carried_from"},
                                           sort_keys=True)) for e in carried)
        matched = [a for a in renamed if a in to]
        names = sum(state.clusters[to[a]].name == renamed[a] for a in matched)
        ctags = sum("v2" in state.clusters[to[a]].tags for a in matched)
        itags = sum("second" in state.item_tags.get(new_row[old_ids[r]], []) for r in tagged)
        gone = sum(int(state.labels[new_row[old_ids[r]]]) == -1 for r in unassign)
        kept_here = {"name": state.clusters[b0].name == "named here",
                     "items": sum(int(state.labels[i]) == mine for i in here_rows)}
        third_same = len(st.log.events()) == len(evs)
    finally:
        st.close()
    refused = [r for r in s2["not_carried"] if "own edit" in r.get("reason", "")]
    made = 2 * len(renamed) + len(tagged) + len(unassign)
    return {"set": name, "seed": seed, "renames": len(renamed), "matched": len(matched), "names": names,
            "ctags": ctags, "itags": itags, "tagged": len(tagged), "unassigned": gone, "unassign": len(unassign),
            "refused_names": sum(r["what"] == "names" for r in refused),
            "refused_items": sum(r.get("items", 0) for r in refused if r["what"] == "moves"),
            "kept_here": kept_here, "made": made, "arrived": names + ctags + itags + gone,
            "round1": sum(first["carried"].values()), "round2": sum(s2["carried"].values()),
            "events_before": n_events, "duplicated": sum(k - 1 for k in sigs.values() if k > 1),
            "third": bool(s3.get("already")) and third_same, "seconds": wall,
            "not_carried": len(s2["not_carried"])}


def table2(rows: list[dict]) -> str:
    head = ("| set | seed | second-round edits made (renames + cluster tags + items tagged + items unassigned) | "
            "arrived | renames arrived (of matched; kept here; no match) | cluster tags arrived | items tagged arrived | "
            "items unassigned arrived (kept here) | carried events round 1 / round 2 | duplicated | third carry | carry s |")
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        eligible = r["made"] - (r["renames"] - r["matched"]) * 2 - r["refused_names"] - r["refused_items"]
        out.append(
            f"| {r['set']} | {r['seed']} | {r['made']} ({r['renames']} + {r['renames']} + {r['tagged']} + {r['unassign']}) | "
            f"{r['arrived']} / {r['made']} ({100 * r['arrived'] / r['made']:.0f}%; {r['arrived']} / {eligible} of those "
            f"neither kept here nor without a match) | {r['names']} / {r['renames']} ({r['matched']}; {r['refused_names']}"
            f"{' (its name kept)' if r['kept_here']['name'] else ''}; {r['renames'] - r['matched']}) | {r['ctags']} / {r['matched']} | "
            f"{r['itags']} / {r['tagged']} | {r['unassigned']} / {r['unassign']} ({r['refused_items']}, "
            f"{r['kept_here']['items']} still where this run put them) | {r['round1']} / {r['round2']} | "
            f"{r['duplicated']} | {'nothing carried' if r['third'] else 'CARRIED AGAIN'} | {r['seconds']:.2f} |")
    return "\n".join(out)


def table3(rows: list[dict]) -> str:
    head = ("| set | seed | scenario | merges made | merged groups apart in the new fit | merges carried | "
            "split parts made | split parts carried | names carried | named items keeping their name | carry s |")
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        out.append(f"| {r['set']} | {r['seed']} | {r['scenario']} | {r['curated'].get('merges', 0)} | {r['apart']} | "
                   f"{r['merges_carried']} | {r['curated'].get('splits', 0)} | {r['splits_carried']} | {r['names']} | "
                   f"{r['kept_names']:,} / {r['named_items']:,} ({100 * r['kept_names'] / max(1, r['named_items']):.1f}%) | "
                   f"{r['seconds']:.2f} |")
    tot = lambda k: sum(r[k] for r in rows)  # noqa: E731
    out.append(f"\nAll rows: merges made {sum(r['curated'].get('merges', 0) for r in rows)}, apart {tot('apart')}, "
               f"carried {tot('merges_carried')}; split parts carried {tot('splits_carried')} of "
               f"{sum(r['curated'].get('splits', 0) for r in rows)}; named items keeping their name "
               f"{100 * tot('kept_names') / max(1, tot('named_items')):.1f}%; carry_curation "
               f"{min(r['seconds'] for r in rows):.2f}-{max(r['seconds'] for r in rows):.2f} s")
    return "\n".join(out)


def table(rows: list[dict]) -> str:
    head = ("| set | seed | scenario | items old -> new | previous clusters | kept | split | merged | gone | "
            "new (of all) | names carried (right class) | unnamed classes | named items keeping their name | "
            "moves (items) | carry s |")
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        out.append(f"| {r['set']} | {r['seed']} | {r['scenario']} | {r['old']:,} -> {r['new_items']:,} | "
                   f"{r['curated']['clusters']} | {r['kept']} | {r['split']} | {r['merged']} | {r['gone']} | "
                   f"{r['new']} ({r['new_total']}) | {r['names']} ({r['right']}/{r['carried_pairs']}) | "
                   f"{r['unnamed']} | {r['kept_names']:,} / {r['named_items']:,} ({100 * r['kept_names'] / max(1, r['named_items']):.0f}%) | "
                   f"{r['moves']} ({r['moved_items']}) | {r['seconds']:.2f} |")
    out.append("")
    for scen in dict.fromkeys(r["scenario"] for r in rows):
        for name in dict.fromkeys(r["set"] for r in rows):
            rs = [r for r in rows if r["scenario"] == scen and r["set"] == name]
            prev = sum(r["curated"]["clusters"] for r in rs)
            out.append(
                f"- {name}, {scen} ({len(rs)} seeds): of {prev} previous curated clusters {sum(r['kept'] for r in rs)} "
                f"kept, {sum(r['split'] for r in rs)} split, {sum(r['merged'] for r in rs)} merged, "
                f"{sum(r['gone'] for r in rs)} gone; carried pairs on a cluster of the same majority class "
                f"{sum(r['right'] for r in rs)} / {sum(r['carried_pairs'] for r in rs)}; named items keeping "
                f"their name {100 * sum(r['kept_names'] for r in rs) / max(1, sum(r['named_items'] for r in rs)):.1f}%; "
                f"carry_curation {min(r['seconds'] for r in rs):.2f}-{max(r['seconds'] for r in rs):.2f} s "
                f"(identity by {', '.join(sorted({r['identity'] for r in rs}))}, every file hashed: the cache was new)")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", nargs="+", default=["imagenette"], choices=sorted(OLD_SIZE))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--vectors", default="/work/vec", help="folder of <set>.npz (vectors, imagenet_probs, labels, ids)")
    ap.add_argument("--third", action="store_true", help="the person also splits a cluster; the table of "
                    "merges and split parts carried (printed; the carry3 section is written by hand)")
    ap.add_argument("--before", metavar="SRC", help="also carry with the package at SRC (the code before a "
                    "change, e.g. a `git archive` of its src) into a copy of each new run, in its own process")
    ap.add_argument("--work", metavar="DIR", help="keep the runs in DIR (each new run also as it was before "
                    "the carry, <run>-fresh) instead of a temporary folder")
    ap.add_argument("--second", action="store_true", help="also carry into the grown run a second time "
                    "(second_pass) and write the carry2 section instead of the carry one")
    _results.add_common_args(ap)
    args = ap.parse_args()
    load1 = _results.load1()
    rows, rows2 = [], []
    with tempfile.TemporaryDirectory(prefix="mc-carry-") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in args.sets:
            emb = load(name, Path(args.vectors))
            for seed in args.seeds:
                r1, r2 = one(name, emb, seed, work, args.second, args.third, args.before, bool(args.work))
                rows.extend(r1)
                rows2.extend(r2)
    text = table(rows) + ("\n\n" + table2(rows2) if rows2 else "")
    print(text)
    if args.third:
        print("\n" + table3(rows))
        return
    if args.write:
        section, notes = (SECTION2, NOTES2) if args.second else (SECTION, NOTES)
        block = (f"{section}\n\n"
                 f"`python benchmarks/carry.py --sets {' '.join(args.sets)} --seeds {' '.join(map(str, args.seeds))} "
                 f"{'--second ' if args.second else ''}--write` (1-min load average {load1:.1f} at the start; "
                 f"default encoder vectors from `{args.vectors}`"
                 f"{'' if args.second else ', default `Pipeline(random_state=seed)`'}; written by the script).\n\n"
                 + notes + "\n\n" + text + "\n")
        _results.publish(section, block, True, show=False)


if __name__ == "__main__":
    main()
