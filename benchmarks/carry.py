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

Usage::

    python benchmarks/carry.py --sets imagenette cifar10-test --seeds 0 1 2 --write
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from mediacluster.data import Embeddings
from mediacluster.pipeline import Pipeline
from mediacluster.rundir import RunDir
from mediacluster.studio.carry import carry_curation
from mediacluster.studio.session import Studio
from mediacluster.workflow import publish_run

SECTION = "## Carrying curation to a re-clustered collection (carry helper)"
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


def load(name: str, vec_dir: Path) -> Embeddings:
    d = np.load(vec_dir / f"{name}.npz")
    ids = [str(x) for x in d["ids"]]
    return Embeddings(ids=ids, vectors=np.asarray(d["vectors"], dtype=np.float32), encoder="efficientnet-lite0",
                      paths=ids, labels=[str(x) for x in d["labels"]],
                      extras={"imagenet_probs": np.asarray(d["imagenet_probs"], dtype=np.float32)},
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


def curate(run: Path, labels: np.ndarray, seed: int) -> dict:
    """The simulated person (see the module docstring); returns what was done."""
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


def one(name: str, emb: Embeddings, seed: int, work: Path) -> list[dict]:
    n = len(emb)
    rng = np.random.default_rng(seed)
    old_idx = np.sort(rng.choice(n, OLD_SIZE[name], replace=False))
    old_emb = emb.subset(old_idx)
    labels_all = np.asarray(emb.labels)
    old_run, t_old = make_run(old_emb, work / f"{name}-{seed}-old", seed)
    done = curate(old_run, labels_all[old_idx], seed)
    curated = RunDir.open(old_run).read_assignments()["curated_cluster"].to_numpy()
    old_maj = majority(labels_all[old_idx], curated)
    rows = []
    for scen, emb_new, new_seed, labels_new in (("grown", emb, seed, labels_all),
                                                ("same items, new seed", old_emb, seed + 100, labels_all[old_idx])):
        new_run, t_new = make_run(emb_new, work / f"{name}-{seed}-{scen.split()[0]}", new_seed)
        cache = work / f"cache-{name}-{seed}-{scen.split()[0]}"
        t = time.perf_counter()
        s = carry_curation(old_run, new_run, cache_dir=cache)
        wall = time.perf_counter() - t
        same, named = kept_names(old_run, new_run)
        rows.append({"set": name, "seed": seed, "scenario": scen, "old": len(old_emb), "new_items": len(emb_new),
                     "kept_names": same, "named_items": named,
                     "curated": done, **score(s, old_maj, new_run, labels_new), "wall": wall,
                     "fit_s": t_new, "identity": s["identity"]})
        print(rows[-1], flush=True)
    return rows


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
    ap.add_argument("--write", action="store_true", help="write the section of benchmarks/RESULTS.md")
    args = ap.parse_args()
    load1 = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="mc-carry-") as tmp:
        for name in args.sets:
            emb = load(name, Path(args.vectors))
            for seed in args.seeds:
                rows.extend(one(name, emb, seed, Path(tmp)))
    text = table(rows)
    print(text)
    if args.write:
        from _results import write_section

        block = (f"{SECTION}\n\n"
                 f"`python benchmarks/carry.py --sets {' '.join(args.sets)} --seeds {' '.join(map(str, args.seeds))} "
                 f"--write` (1-min load average {load1:.1f} at the start; default encoder vectors from "
                 f"`{args.vectors}`, default `Pipeline(random_state=seed)`; written by the script).\n\n"
                 + NOTES + "\n\n" + text + "\n")
        write_section(SECTION, block)


if __name__ == "__main__":
    main()
