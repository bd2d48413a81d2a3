"""A methods paragraph for a paper, written from what the run recorded (``run.json``).

A study must say how its groups were made: the encoder, every stage's parameters, the levels
and which one was used, the seed, the versions of the libraries that computed it. ``run.json``
holds all of it as data; :func:`methods_text` says it in prose (Markdown), with a fingerprint
of the assignments so that a re-run can be checked to give the same groups
(:func:`assignments_fingerprint`). ``make_report`` writes it as ``report/methods.md``
(:func:`write_methods`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..fileio import atomic_path, read_json
from ..naming.overrides import load_names
from ..rundir import NAMES, RunDir

#: the libraries a methods paragraph cites, when the run recorded their versions
CITED = ("numpy", "scikit-learn", "umap-learn", "pynndescent", "hdbscan", "faiss-cpu", "onnxruntime", "torch",
         "transformers")


def assignments_fingerprint(run) -> str:
    """SHA-256 (first 16 hex digits) of the run's groups: every item's cluster at every level
    (or the ``cluster`` column of a flat run), in the order of the items. Two runs with the
    same fingerprint put every item in the same clusters, whatever their run ids and times."""
    run = run if isinstance(run, RunDir) else RunDir.open(run)
    a = run.read_assignments()
    lv = run.read_levels(a)
    rows = list(lv.labels) if len(lv) else [a["cluster"].to_numpy()]
    h = hashlib.sha256()
    for row in rows + [a["cluster"].to_numpy()]:
        h.update(np.ascontiguousarray(row, dtype="<i8").tobytes())
    return h.hexdigest()[:16]


def _stage(doc: dict | None) -> str:
    if not doc:
        return "none"
    params = ", ".join(f"{k}={v}" for k, v in sorted((doc.get("params") or {}).items()) if v is not None)
    return f"{doc.get('class', '?')} ({params})" if params else str(doc.get("class", "?"))


def methods_text(run) -> str:
    """The methods paragraph of ``run`` (a run folder or ``RunDir``) as Markdown."""
    run = run if isinstance(run, RunDir) else RunDir.open(run)
    info = run.info
    versions = info.get("versions", {})
    summary = info.get("summary", {})
    pipe = (info.get("pipeline") or {}).get("params", {})
    enc = info.get("encoder") or {}
    n = summary.get("items")
    skipped = summary.get("skipped", 0)
    lines = [f"# Methods (mediacluster {versions.get('mediacluster', '?')}, run {run.run_id})", ""]
    media = enc.get("media", "image")
    if enc.get("name") == "precomputed":  # a vectors file: nothing was embedded here
        p = [f"We clustered {n:,} precomputed vectors" if isinstance(n, int) else "We clustered the precomputed vectors",
             f" of `{info.get('source', '?')}`."]
    else:
        p = [f"We embedded {n:,} {media} files" if isinstance(n, int) else f"We embedded the {media} files",
             f" of `{info.get('collection_root', info.get('source', '?'))}`"
             + (f" ({skipped} could not be used and were left out: unreadable, missing or listed twice; "
                "`run.json` gives each with its reason)" if skipped else ""),
             f" with the encoder `{enc.get('name', '?')}` (id `{enc.get('id', '?')}`)."]
    if info.get("fit_sample"):
        fs = info["fit_sample"]  # {"size", "of", "seed"} (a bare number in a run.json written before)
        sample = (f"a random sample of {fs.get('size', '?'):,} of the {fs.get('of', '?'):,} items (seed "
                  f"{fs.get('seed', '?')})" if isinstance(fs, dict) else f"a random sample ({fs})")
        p.append(f" The pipeline was fitted on {sample} and every other item assigned by the fitted model.")
    dups = info.get("duplicates")
    if dups:
        params = dups.get("params") if isinstance(dups, dict) else None
        said = ("its parameters: " + ", ".join(f"{k}={v}" for k, v in sorted(params.items()))
                if isinstance(params, dict) else "its parameters were not recorded by the version that made the run")
        counts = (f" {dups['groups']:,} groups held {dups['items_in_groups']:,} of the {dups['items']:,} items."
                  if isinstance(dups, dict) and all(isinstance(dups.get(k), int) for k in ("groups", "items_in_groups", "items"))
                  else "")
        p.append(" Near-duplicate groups were found first and fitted as one item each (`--dedup`, "
                 f"`duplicates.DuplicateFinder`; {said}).{counts}")
    p.append(f" Reduction: {_stage(pipe.get('reducer_'))}. Outlier removal: {_stage(pipe.get('outliers_'))}."
             f" Clustering: {_stage(pipe.get('clusterer_'))}.")
    levels = summary.get("levels")
    if levels:
        at, auto = levels.get("level"), levels.get("auto_level")
        counts = levels.get("n_clusters", [])
        chosen = ("modularity of the input vectors' neighbour graph, checked against K-means"
                  if (pipe.get("clusterer_") or {}).get("class") == "HierarchyClusterer" else "its own criterion")
        p.append(f" The clusterer gives {len(counts)} nested levels (every cluster has one parent on the next "
                 f"coarser level) with {', '.join(str(c) for c in counts)} clusters; level {at} "
                 f"({counts[at] if at is not None and at < len(counts) else '?'} clusters) is the flat answer"
                 + (f", the clusterer's own label-free choice ({chosen})."
                    if at == auto else f", chosen by hand (the automatic choice was level {auto})."))
    else:
        p.append(f" It gives {summary.get('clusters', '?')} clusters.")
    if pipe.get("assign_noise"):
        noise, out = summary.get("noise", 0), summary.get("outliers", 0)
        p.append(f" Items left as noise ({noise}) or outliers ({out}) were given their nearest cluster.")
    names = summary.get("names") or {}
    method = read_json(run.file(NAMES)).get("method") if run.file(NAMES).exists() else None
    if names or method:
        how = ("by CLIP zero-shot classification against a list of topics" if method == "clip-zeroshot" else
               "from the encoder's ImageNet class probabilities lifted through WordNet")
        p.append(f" Clusters were named automatically {how}"
                 + (f"; {names['sure']} of {names['measured']} names are supported by their items (chance-corrected "
                    "support of at least 0.5, against random groups of the same size)." if "sure" in names else "."))
    hand = load_names(run, automatic=False)
    if hand:
        p.append(f" {len(hand)} cluster(s) were then named by hand (`names.yaml`, the studio).")
    carry = run.read_carry()
    if carry and carry.get("from"):  # cluster --carry-from: a re-run of a grown collection
        st = carry.get("previous_clusters") or {}
        p.append(f" The clusters were matched to those of the previous run {carry['from'].get('run_id', '?')} by a "
                 f"mutual majority of their {carry.get('shared_items', 0):,} shared items (compared by "
                 f"{carry.get('identity', '?')}): " + ", ".join(f"{st.get(k, 0)} {k}" for k in ("kept", "split", "merged",
                                                                                                 "gone"))
                 + f", {len(carry.get('new_clusters') or [])} new; a cluster that continues a previous one keeps "
                 "its lasting id (`lineage`: the run and cluster where the group was first seen).")
    if run.read_curated() is not None:
        p.append(" The clusters were reviewed in the mediacluster studio; the curated clusters are the "
                 "assignments' `curated_*` columns.")
    xy = run.read_map(n) if isinstance(n, int) else None
    if xy is not None:
        m = xy[1].get("method")
        p.append(" The 2-D map is " + ("a UMAP of the embeddings (`report.build.layout_2d`)." if m == "umap" else
                                       "a PCA projection of the embeddings." if m == "pca" else
                                       f"a {str(m).replace('umap', 'UMAP').replace('pca', 'PCA')}."))  # a sampled fit's
    p.append(f" Every random step used seed {info.get('seed', pipe.get('random_state', '?'))}.")
    lines.append("".join(p))
    lines.append("")
    lib = ", ".join(f"{k} {versions[k]}" for k in CITED if k in versions)
    lines.append(f"Software: Python {versions.get('python', '?')}, mediacluster {versions.get('mediacluster', '?')}"
                 + (f", {lib}" if lib else "") + ".")
    lines.append("")
    lines.append(f"Reproducibility: the assignments' fingerprint is `{assignments_fingerprint(run)}` "
                 "(`mediacluster.report.methods.assignments_fingerprint`); a re-run with the same seed, "
                 "input and versions gives the same fingerprint. Every parameter is in the run's `run.json`.")
    return "\n".join(lines) + "\n"


def write_methods(run, path) -> Path:
    """Write :func:`methods_text` to ``path`` (atomically); returns ``path``."""
    path = Path(path)
    text = methods_text(run)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return path


__all__ = ["CITED", "assignments_fingerprint", "methods_text", "write_methods"]
