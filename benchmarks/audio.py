"""Audio clustering on the Free Spoken Digit Dataset (3,000 clips, 10 digits x 6 speakers).

For each encoder, embeds all clips through the package (``mediacluster.run.embed_collection``,
embedding cache in ``WORK/cache``), then clusters twice per labelling (digit = content, speaker):

* ``kmeans-k``: scikit-learn K-means told the true k (10 digits / 6 speakers), on the encoder's
  vectors as they come (n_init=10, seed 0);
* ``pipeline``: ``mediacluster.pipeline.Pipeline()`` with its defaults, never told k (at the
  time of writing: UMAP 10-d cosine -> K-means with k chosen by the silhouette curve);
* ``umap+hdbscan``: the seed study's recipe on the same UMAP output: HDBSCAN with
  min_cluster_size 1% of n, scored with noise as its own group and after noise assignment
  (``+assign``); ``umap+hdbscan-mcs5%``: min_cluster_size 5% of n, noise as its own group.

Scores from ``mediacluster.metrics.external_scores``: ACC (Hungarian), NMI, ARI, coverage.
Labels come from the file names ``{digit}_{speaker}_{i}.wav`` via a manifest with label columns.
Clips/s is the encoding throughput when the cache was cold (``embed.encode`` timing).

    python benchmarks/audio.py                         # mfcc, resemblyzer, birdnet
    python benchmarks/audio.py --encoders mfcc --limit 600

BirdNET's model is CC BY-NC-SA 4.0 (non-commercial); this benchmark is research use.
Writes ``WORK/results.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import _results
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = _results.SHARED / "fsdd.tar.gz"


def prepare_data(work: Path, limit: int | None = None, seed: int = 0) -> Path:
    """Extract FSDD into ``work/fsdd`` and write ``work/fsdd.csv`` (path, label, digit, speaker)."""
    import pandas as pd

    from mediacluster.datasets import extract_slice

    dest = work / "fsdd"
    if not dest.exists() or len(list(dest.glob("*.wav"))) < 3000:
        extract_slice(ARCHIVE, dest, flat=True)
    files = sorted(dest.glob("*.wav"))
    if limit:
        rng = np.random.default_rng(seed)
        files = [files[i] for i in sorted(rng.choice(len(files), limit, replace=False))]
    rows = []
    for f in files:
        digit, speaker, _ = f.stem.split("_")
        rows.append({"path": str(f), "label": digit, "digit": digit, "speaker": speaker})
    manifest = work / ("fsdd.csv" if not limit else f"fsdd-{limit}.csv")
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def score(y, labels) -> dict:
    from mediacluster.metrics import external_scores

    s = external_scores(list(y), np.asarray(labels))
    a = s["all"]
    return {"acc": a["acc"], "nmi": a["nmi"], "ari": a["ari"], "coverage": s["coverage"],
            "n_clusters": s["n_clusters"]}


def run_encoder(spec: str, manifest: Path, work: Path, seed: int = 0) -> dict:
    import pandas as pd
    from sklearn.cluster import KMeans

    from mediacluster.embed import embed_collection
    from mediacluster.ingest import collect
    from mediacluster.pipeline import Pipeline

    coll = collect(manifest, media="audio")
    t = time.perf_counter()
    emb = embed_collection(coll, encoder=spec, cache_dir=work / "cache", progress=False)
    wall = time.perf_counter() - t
    stats = getattr(emb, "cache_stats", {})
    enc_s = emb.timings.get("embed.encode", wall)
    clips_s = stats.get("encoded", 0) / enc_s if stats.get("encoded") else None
    truth = pd.read_csv(manifest).set_index("path")
    res = {"encoder": spec, "id": emb.encoder_version, "n": len(emb), "dim": int(emb.vectors.shape[1]),
           "skipped": len(emb.skipped), "embed_wall_s": wall, "encoded": stats.get("encoded"),
           "clips_per_s": clips_s, "loadavg": os.getloadavg(), "by": {}}
    X = emb.vectors
    t = time.perf_counter()
    pipe = Pipeline(random_state=seed).fit(X)
    res["pipeline_s"] = time.perf_counter() - t
    res["pipeline_clusters"] = pipe.n_clusters_
    res["pipeline_clusterer"] = type(pipe.clusterer_).__name__
    # the seed study's recipe on the same UMAP output (not told k): HDBSCAN min_cluster_size 1%
    # of n with noise assignment, and a coarser 5% with noise left as its own group
    from mediacluster.pipeline import default_min_cluster_size
    from mediacluster.stages.cluster import HDBSCANClusterer

    hdb = Pipeline(clusterer=HDBSCANClusterer(min_cluster_size=default_min_cluster_size(len(X))),
                   random_state=seed).fit(X, embedding=pipe.embedding_)
    coarse = HDBSCANClusterer(min_cluster_size=max(5, len(X) // 20)).fit(pipe.embedding_).labels_
    for lab in ("digit", "speaker"):
        y = truth.loc[emb.paths, lab].astype(str).to_numpy()
        k = len(set(y))
        km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(X)
        res["by"][lab] = {
            "k": k,
            "kmeans-k": score(y, km),
            "pipeline": score(y, pipe.labels_),
            "umap+hdbscan": score(y, hdb.labels_),
            "umap+hdbscan+assign": score(y, hdb.cluster_),
            "umap+hdbscan-mcs5%": score(y, coarse),
        }
    return res


def table(results: list[dict]) -> str:
    lines = ["| labelling | encoder | method | ACC | NMI | ARI | coverage | clusters |",
             "|---|---|---|---|---|---|---|---|"]
    for lab in ("digit", "speaker"):
        for r in results:
            for m in ("kmeans-k", "pipeline", "umap+hdbscan", "umap+hdbscan+assign", "umap+hdbscan-mcs5%"):
                s = r["by"][lab][m]
                if s is None:
                    continue
                name = {"kmeans-k": f"K-means k={r['by'][lab]['k']}",
                        "pipeline": f"Pipeline() default ({r.get('pipeline_clusterer', '')})"}.get(m, m)
                lines.append(f"| {lab} | {r['encoder']} | {name} | {s['acc']:.3f} | {s['nmi']:.3f} | "
                             f"{s['ari']:.3f} | {s['coverage']:.3f} | {s['n_clusters']} |")
    lines.append("")
    lines.append("| encoder | dim | clips/s (encode, cold cache) | load avg | skipped |")
    lines.append("|---|---|---|---|---|")
    for r in results:
        cps = f"{r['clips_per_s']:.1f}" if r["clips_per_s"] else "cached"
        la = ", ".join(f"{x:.1f}" for x in r["loadavg"])
        lines.append(f"| {r['encoder']} | {r['dim']} | {cps} | {la} | {r['skipped']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--encoders", default="mfcc,resemblyzer,birdnet")
    ap.add_argument("--work", default=str(ROOT / "benchmarks" / "out" / "audio"))
    ap.add_argument("--limit", type=int, default=None, help="random subset of clips (default all 3000)")
    _results.add_common_args(ap, write=False, seed=True)
    args = ap.parse_args(argv)
    if not ARCHIVE.exists():
        print(f"dataset not found: {ARCHIVE}", file=sys.stderr)
        return 2
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    manifest = prepare_data(work, args.limit, args.seed)
    results = []
    for spec in args.encoders.split(","):
        print(f"== {spec}", file=sys.stderr)
        results.append(run_encoder(spec, manifest, work, args.seed))
        print(json.dumps(results[-1], default=float)[:2000], file=sys.stderr)
    (work / "results.json").write_text(json.dumps(results, indent=1, default=float))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
