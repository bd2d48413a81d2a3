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

Usage::

    python benchmarks/level_rename.py --sets imagenette cifar10-test --write
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import _results
import numpy as np
import pandas as pd

from mediacluster.data import Embeddings
from mediacluster.naming import named_assignments, run_level_names
from mediacluster.pipeline import Pipeline
from mediacluster.rundir import RunDir
from mediacluster.stages import registry
from mediacluster.studio.exports import curated_table, level_columns
from mediacluster.studio.session import Studio
from mediacluster.workflow import publish_run

SECTION = "## Naming every level by hand: timings (levelnames3 helper)"


def load(name: str, vec_dir: Path) -> Embeddings:
    d = np.load(vec_dir / f"{name}.npz")
    ids = [str(x) for x in d["ids"]]
    return Embeddings(ids=ids, vectors=np.asarray(d["vectors"], dtype=np.float32), encoder="efficientnet-lite0",
                      paths=ids, labels=[str(x) for x in d["labels"]],
                      extras={"imagenet_probs": np.asarray(d["imagenet_probs"], dtype=np.float32)},
                      root=os.path.commonpath(ids))


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", default=["imagenette"])
    ap.add_argument("--vectors-from", type=Path, default=Path("/work/vec"))
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    res = _results.started("level_rename.py")
    res["commit"] = _results.commit()
    with tempfile.TemporaryDirectory(prefix="level-rename-") as tmp:
        res["rows"] = [one(s, args.vectors_from, Path(tmp)) for s in args.sets]
    _results.finish(res, SECTION, render, args.write)


if __name__ == "__main__":
    main()
