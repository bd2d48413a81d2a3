"""Naming every level by hand (levelnames3): what a coarse group's rename and the exports with
one id + name column per level cost.

A run of a set's default-encoder vectors (``/work/vec/<set>.npz``) fitted by the hierarchy on a
10-dimensional PCA (the tests' ``pca_tree``: no UMAP compilation) at the first level with at
least 8 clusters and two coarser levels above it, published with its model. A studio
(``Studio``, in-process: the same calls the HTTP layer makes) renames a group of the coarsest
level the curated tree keeps (``level_rename``), then times: the edit (checked, committed to the
log with fsync, applied), ``/api/clusters``' answer after it (the groups' names), the curated
table with and without the level columns, the CSV and Parquet exports, publishing the curated
model, and ``naming.run_level_names`` / ``named_assignments`` of the run afterwards.

With ``--carry`` (carrylevels) it times carrying level names instead: the previous run is
the hierarchy fitted on a random 90% of the set, the new one on the whole set (grown by 10%,
re-clustered); copies of the previous run get, in their ``names.yaml``, one flat name only
(*flat*), also every group of every level above the level in use renamed (*coarse*), also every
group of each finer level with at most ``--fine-max`` groups (*many*); each is carried
(``carry_curation``) into a fresh copy of the new run, three times, the first (which hashes
the files into a new cache) left out, the median of the others kept. Counted
per scenario: the level names carried and not (by the status of the group in the paired new
level) and, of those carried, how many land on a group whose majority label is the previous
group's.

Usage::

    python benchmarks/level_rename.py --sets imagenette cifar10-test --write
    python benchmarks/level_rename.py --carry --sets imagenette cifar10-test --write
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import _results
import numpy as np
import pandas as pd
from carry import load  # a /work/vec set as Embeddings, as carry.py reads it

from mediacluster.data import Embeddings
from mediacluster.naming import named_assignments, run_level_names
from mediacluster.pipeline import Pipeline
from mediacluster.rundir import RunDir
from mediacluster.stages import registry
from mediacluster.studio.exports import curated_table, level_columns
from mediacluster.studio.session import Studio
from mediacluster.workflow import publish_run

SECTION = "## Naming every level by hand: timings (levelnames3 helper)"
CARRY_SECTION = "## Carrying level names: timings (carrylevels helper)"


def timed(fn, repeat: int = 1):
    out, ts = None, []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return out, statistics.median(ts)


def one(name: str, vec_dir: Path, tmp: Path) -> dict:
    emb = load(name, vec_dir)
    t = time.perf_counter()
    pipe = Pipeline(reducer=registry.build("reducer", "pca", {"n_components": 10}), clusterer="hierarchy",
                    random_state=0).fit(emb.vectors)
    counts = pipe.n_clusters_per_level_.tolist()
    pipe.set_level(next(lv for lv, k in enumerate(counts) if lv >= 2 and k >= 8))
    run = publish_run(tmp / name, emb, pipe, save_model=True)
    fit_s = time.perf_counter() - t
    st = Studio(run.path, map_method="pca", warm=False, lazy_map=True, write_delay=3600)
    try:
        shown = st.clusters()
        level = next(iter(shown["group_clusters"]))
        groups = [k for k in shown["group_clusters"][level].values() if k >= 0]
        # a rename per group (different names each time), the median of them
        acks, edit_s = [], []
        for i, cid in enumerate(groups[:10]):
            ack, s = timed(lambda cid=cid, i=i: st.edit("level_rename", {"level": level, "cluster": cid, "name": f"group {i}"}))
            acks.append(ack)
            edit_s.append(s)
        after, clusters_s = timed(st.clusters, 3)
        assert after["group_names"][level]  # named
        seq, labels, table, status, tags = st._snapshot()
        tree, named = st._levels_now()
        names = {e["id"]: e["name"] for e in table}
        junk = [e["name"] for e in table if e.get("junk")]
        _, table_s = timed(lambda: curated_table(st.ids, st.paths, st.fitted, labels, names, status, st.probability,
                                                 tags, st.truth, levels=level_columns(tree, named, junk)), 3)
        _, flat_s = timed(lambda: curated_table(st.ids, st.paths, st.fitted, labels, names, status, st.probability,
                                                tags, st.truth), 3)
        csv, csv_s = timed(lambda: st.export("csv"))
        pq, pq_s = timed(lambda: st.export("parquet"))
        res, publish_s = timed(st.publish)
        st.write_state()
    finally:
        st.close()
    rd = RunDir.open(run.path)
    named, rln_s = timed(lambda: run_level_names(rd), 3)
    _, na_s = timed(lambda: named_assignments(rd), 3)
    model = Pipeline.load(run.path)
    served = model.model_info_["metadata"]["names_by_level"]["0"]
    return {"set": name, "n": len(emb.ids), "levels": counts, "level": int(pipe.level_), "fit_s": round(fit_s, 2),
            "renamed": len(acks), "level_groups": len(groups), "edit_ms": round(1000 * statistics.median(edit_s), 1),
            "edit_max_ms": round(1000 * max(edit_s), 1), "clusters_ms": round(1000 * clusters_s, 1),
            "table_ms": round(1000 * table_s, 1), "table_flat_ms": round(1000 * flat_s, 1),
            "csv_s": round(csv_s, 3), "parquet_s": round(pq_s, 3), "columns": len(pd.read_parquet(Path(pq["path"]) / "curated_assignments.parquet").columns),
            "publish_s": round(publish_s, 2), "run_level_names_ms": round(1000 * rln_s, 1),
            "named_assignments_ms": round(1000 * na_s, 1),
            "served_named": sum(v.startswith("group ") for v in served.values()), "csv_rows": csv["items"]}


def render(res: dict) -> str:
    lines = [SECTION, "", f"`{res['command']}` (commit {res['commit']}, 1-min load {res['loadavg']} before, "
             f"{res['loadavg_after']} after; {res['finished']}; 2 shared cores).", "",
             "A studio (in-process, the calls the HTTP layer makes) renames up to 10 groups of the coarsest level "
             "the curated tree keeps (`level_rename`: checked, committed with fsync, applied); then `/api/clusters`' "
             "answer, the curated table of one snapshot of the state with the level columns (`exports.level_columns` "
             "included) and without them (*flat*), the CSV / Parquet exports, "
             "publishing, and `run_level_names` / `named_assignments` of the run afterwards. Medians.", "",
             "| set | items | clusters per level (in use) | groups renamed | edit ms (max) | clusters ms | table ms (flat) "
             "| CSV s | Parquet s (columns) | publish s | run_level_names ms | named_assignments ms | served names |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        lines.append(f"| {r['set']} | {r['n']:,} | {' / '.join(map(str, r['levels']))} ({r['level']}) | "
                     f"{r['renamed']} of {r['level_groups']} | {r['edit_ms']} ({r['edit_max_ms']}) | {r['clusters_ms']} | "
                     f"{r['table_ms']} ({r['table_flat_ms']}) | {r['csv_s']} | {r['parquet_s']} ({r['columns']}) | "
                     f"{r['publish_s']} | {r['run_level_names_ms']} | {r['named_assignments_ms']} | {r['served_named']} |")
    lines += ["", "*served names*: the renamed groups named so in the published model's `names_by_level` "
              "(level 0), what `assign` and the service's `path` answer."]
    return "\n".join(lines) + "\n"


def tree_run(emb: Embeddings, out: Path, seed: int = 0) -> tuple[RunDir, list[int]]:
    """The hierarchy on a 10-dimensional PCA at the first level with >= 8 clusters and two
    coarser levels, published with its model."""
    pipe = Pipeline(reducer=registry.build("reducer", "pca", {"n_components": 10}), clusterer="hierarchy",
                    random_state=seed).fit(emb.vectors)
    counts = pipe.n_clusters_per_level_.tolist()
    pipe.set_level(next(lv for lv, k in enumerate(counts) if lv >= 2 and k >= 8))
    return publish_run(out, emb, pipe, save_model=True), counts


def name_levels(run: Path, scenario: str, fine_max: int) -> int:
    """The person's names of a scenario (see the module docstring), written as the run's
    ``names.yaml`` (a flat name and a ``levels:`` section: carried as the studio's level
    renames are, without a studio session per scenario); how many level names."""
    rd = RunDir.open(run)
    lv = rd.read_levels()
    first = int(sorted(set(lv.labels[lv.level][lv.labels[lv.level] >= 0].tolist()))[0])
    lines, named = [f"{first}: my cluster", "levels:"], 0
    for j, (key, lab) in enumerate(zip(lv.index, lv.labels)):
        groups = sorted(set(lab[lab >= 0].tolist()))
        coarse = j < lv.level
        if j == lv.level or scenario == "flat" or (not coarse and (scenario == "coarse" or len(groups) > fine_max)):
            continue
        lines.append(f"  {int(key)}:")
        lines += [f"    {int(c)}: l{int(key)} g{int(c)}" for c in groups]
        named += len(groups)
    (run / "names.yaml").write_text("\n".join(lines if named else lines[:1]) + "\n", encoding="utf-8")
    return named


def majority_labels(lab: np.ndarray, truth: np.ndarray) -> dict[int, str]:
    df = pd.DataFrame({"c": lab, "t": truth})
    return {int(c): str(g["t"].mode()[0]) for c, g in df[df["c"] >= 0].groupby("c")}


def carry_one(name: str, vec_dir: Path, tmp: Path, fine_max: int) -> list[dict]:
    import shutil

    from mediacluster.studio.carry import carry_curation

    emb = load(name, vec_dir)
    rng = np.random.default_rng(0)
    old_rows = np.sort(rng.choice(len(emb.ids), int(0.9 * len(emb.ids)), replace=False))
    old_run, old_counts = tree_run(emb.subset(old_rows), tmp / f"{name}-old")
    new_run, new_counts = tree_run(emb, tmp / f"{name}-new", seed=1)
    truth = np.asarray(emb.labels, dtype=object)
    lo, ln = old_run.read_levels(), new_run.read_levels()
    old_major = {k: majority_labels(lab, truth[old_rows]) for k, lab in zip(lo.index, lo.labels)}
    new_major = {k: majority_labels(lab, truth) for k, lab in zip(ln.index, ln.labels)}
    cache = tmp / f"{name}-cache"
    rows = []
    for scenario in ("flat", "coarse", "many"):
        old = tmp / f"{name}-old-{scenario}"
        shutil.copytree(old_run.path, old)
        given = name_levels(old, scenario, fine_max)
        times, summary = [], None
        for k in range(3):  # the first warms the hash cache (every file hashed once): not counted
            new = tmp / f"{name}-new-{scenario}-{k}"
            shutil.copytree(new_run.path, new)
            summary, s = timed(lambda new=new, old=old: carry_curation(old, new, cache_dir=cache))
            if k:
                times.append(s)
        events = []
        log = RunDir.open(new).edits()  # the last copy's
        try:
            events = [e.payload for e in log.events() if e.kind == "level_rename"]
        finally:
            log.close()
        right = sum(old_major[p["previous_level"]].get(p["previous_cluster"]) == new_major[p["level"]].get(p["cluster"])
                    for p in events)
        statuses: dict[str, int] = {}
        for r in summary["not_carried"]:
            if r["what"] == "level_names":
                why = r["reason"]
                key = r.get("status") or ("level in use" if "level in use" in why else
                                          "same new group" if "takes the name" in why else
                                          "no level paired" if "no level of the new run" in why else "other")
                statuses[key] = statuses.get(key, 0) + 1
        rows.append({"set": name, "n_old": len(old_rows), "n": len(emb.ids), "old_levels": old_counts,
                     "new_levels": new_counts, "old_level": int(lo.level), "new_level": int(ln.level),
                     "scenario": scenario, "given": given, "carried": summary["carried"]["level_names"],
                     "right": int(right), "not_carried": statuses, "names": summary["carried"]["names"],
                     "carry_s": round(statistics.median(times), 3), "carry_max_s": round(max(times), 3)})
        print(rows[-1], flush=True)
    return rows


def render_carry(res: dict) -> str:
    r0 = res["rows"]
    lines = [CARRY_SECTION, "", f"`{res['command']}` (commit {res['commit']}, 1-min load {res['loadavg']} before, "
             f"{res['loadavg_after']} after; {res['finished']}; 2 shared cores).", "",
             "The previous run: the hierarchy (PCA 10 + `hierarchy`) on a random 90% of the set; the new one on the "
             "whole set (another seed). *flat*: the previous run has one flat name (`names.yaml`); *coarse*: also every group of "
             "every level above the level in use named (`names.yaml` `levels:`); *many*: also every group of each finer level "
             f"with at most {res['fine_max']} groups. *carry s*: `carry_curation` into a fresh copy of the new run, "
             "median of 2 after one that hashed the files (max in brackets). *right*: carried names whose new group's "
             "majority label is the previous group's. *not carried*: by the group's status in the paired level.", "",
             "| set | items old -> new | clusters per level old (in use) | new (in use) | scenario | level names given "
             "| carried (right) | not carried | carry s (max) |",
             "|---|---|---|---|---|---:|---|---|---:|"]
    for r in r0:
        nc = ", ".join(f"{v} {k}" for k, v in sorted(r["not_carried"].items())) or "0"
        lines.append(f"| {r['set']} | {r['n_old']:,} -> {r['n']:,} | {' / '.join(map(str, r['old_levels']))} "
                     f"({r['old_level']}) | {' / '.join(map(str, r['new_levels']))} ({r['new_level']}) | {r['scenario']} "
                     f"| {r['given']} | {r['carried']} ({r['right']}) | {nc} | {r['carry_s']} ({r['carry_max_s']}) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", default=["imagenette"])
    ap.add_argument("--vectors-from", type=Path, default=Path("/work/vec"))
    _results.add_common_args(ap)
    ap.add_argument("--carry", action="store_true", help="time carrying level names (see the docstring)")
    ap.add_argument("--fine-max", type=int, default=128, help="with --carry: finer levels named up to this many groups")
    args = ap.parse_args()
    res = _results.started("level_rename.py")
    res["commit"] = _results.commit()
    if args.carry:
        res["fine_max"] = args.fine_max
        with tempfile.TemporaryDirectory(prefix="carry-levels-") as tmp:
            res["rows"] = [row for s in args.sets for row in carry_one(s, args.vectors_from, Path(tmp), args.fine_max)]
        _results.finish(res, CARRY_SECTION, render_carry, args.write)
        return
    with tempfile.TemporaryDirectory(prefix="level-rename-") as tmp:
        res["rows"] = [one(s, args.vectors_from, Path(tmp)) for s in args.sets]
    _results.finish(res, SECTION, render, args.write)


if __name__ == "__main__":
    main()
