"""The duplicate cache's housekeeping: how big the embedding cache file is after stale derived
kinds are pruned, and what giving the freed pages back costs.

A cache of N items (Imagenette val's vectors and ImageNet probabilities from ``--vectors``, as
``embed_collection`` stores them, in batches of 64) holding the duplicate finder's signatures
(792 bytes per photo, as ``duplicates.hashing`` packs them) and pair verdicts of an old and of
the current version; or signatures only (``dups --no-embed``). Each is built twice: as caches
are made now (``auto_vacuum=INCREMENTAL``) and as they were made before (``auto_vacuum`` off).
Then the old version's kinds are pruned (``EmbeddingStore.prune_derived``) and the pages given
back (``reclaim``, forced: ``vacuum_share=0``). Sizes are the database file plus its WAL.
``--big CACHE``: also the cost of rewriting (``VACUUM``) a copy of that cache (SQLite backup).

    PYTHONPATH=src python benchmarks/cache_housekeeping.py --vectors /work/vec/imagenette.npz \
        --big ~/.cache/mediacluster --write-results
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
from pathlib import Path

import _results
import numpy as np

from mediacluster.embed import EmbeddingStore
from mediacluster.embed.store import _SCHEMA, VACUUM_SHARE

SECTION = "## The duplicate cache's housekeeping (perturb3 helper)"
SIG_BYTES = 792  # one photo's signature (benchmarks/RESULTS.md, "Duplicates: first runs")


def size(store: EmbeddingStore) -> int:
    return sum(os.path.getsize(p) for p in (store.path, Path(f"{store.path}-wal")) if os.path.exists(p))


def build(path: Path, vectors, probs, legacy: bool) -> tuple[EmbeddingStore, float]:
    path.mkdir(parents=True)
    if legacy:  # the schema made before EmbeddingStore asked for incremental vacuum
        con = sqlite3.connect(path / "embeddings.sqlite")
        con.execute("PRAGMA journal_mode=WAL")
        con.executescript(_SCHEMA)
        con.close()
    store = EmbeddingStore(path)
    rng = np.random.default_rng(0)
    n = len(vectors) if vectors is not None else len(probs)
    keys = [f"{i:032x}" for i in range(n)]
    t = time.perf_counter()
    if vectors is not None:
        for i in range(0, n, 64):
            store.put(keys[i:i + 64], "encoder", {"embedding": vectors[i:i + 64],
                                                  "imagenet_probs": probs[i:i + 64]})
    put_s = time.perf_counter() - t
    for version in ("v0", "v1"):
        store.put_derived([(k, rng.bytes(SIG_BYTES)) for k in keys], f"dups.signature/{version}")
        pairs = [f"{keys[i]}|{keys[(i * 7 + 1) % n]}" for i in range(0, n, 2)]
        store.put_derived([(p, b"\x01") for p in pairs], f"dups.geometric/{version}")
    return store, put_s


def measure(store: EmbeddingStore) -> dict:
    con = store._con
    mode = con.execute("PRAGMA auto_vacuum").fetchone()[0]
    checkpoint = "PRAGMA wal_checkpoint(TRUNCATE)"  # sizes of the database file itself
    con.execute(checkpoint).fetchall()
    before = size(store)
    reclaim = store.reclaim
    store.reclaim = lambda *a, **k: 0  # the prune alone, as before this change
    t = time.perf_counter()
    pruned = store.prune_derived(lambda k: "/v0" in k)
    prune_s = time.perf_counter() - t
    store.reclaim = reclaim
    con.execute(checkpoint).fetchall()
    after_prune = size(store)
    free = con.execute("PRAGMA freelist_count").fetchone()[0]
    share = free / con.execute("PRAGMA page_count").fetchone()[0]
    t = time.perf_counter()
    store.reclaim(vacuum_share=0.0)
    reclaim_s = time.perf_counter() - t
    assert store.integrity_check() == "ok"
    return {"mode": {0: "off (older cache)", 2: "incremental"}[mode], "before": before,
            "after_prune": after_prune, "share": share, "after": size(store), "prune_s": prune_s,
            "reclaim_s": reclaim_s, "pruned": sum(pruned.values()),
            "how": "incremental_vacuum" if mode == 2 else "VACUUM"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vectors", required=True, help=".npz with vectors and imagenet_probs")
    ap.add_argument("--n", type=int, default=None, help="items (default: all)")
    ap.add_argument("--big", default=None, help="a real cache folder (or file) to time VACUUM on a copy of")
    ap.add_argument("--write-results", action="store_true")
    a = ap.parse_args(argv)
    d = np.load(a.vectors)
    vectors, probs = d["vectors"][:a.n], d["imagenet_probs"][:a.n]
    mb = 1 / 2**20
    rows = []
    with tempfile.TemporaryDirectory(prefix="cache-hk-") as tmp:
        for content in ("embeddings + signatures", "signatures only"):
            for legacy in (True, False):
                vec = vectors if content.startswith("embeddings") else None
                store, put_s = build(Path(tmp) / f"{len(rows)}", vec, probs, legacy)
                m = measure(store)
                store.close()
                m.update(content=content, put_s=put_s)
                rows.append(m)
                print(m, flush=True)
        big = None
        if a.big:
            src = Path(a.big)
            src = src / "embeddings.sqlite" if src.is_dir() else src
            dst = Path(tmp) / "big.sqlite"
            s, t = sqlite3.connect(f"file:{src}?mode=ro", uri=True), sqlite3.connect(dst)
            s.backup(t)
            s.close()
            t.close()
            con = sqlite3.connect(dst, isolation_level=None)
            before = os.path.getsize(dst)
            t0 = time.perf_counter()
            con.execute("VACUUM")
            big = (before, time.perf_counter() - t0, os.path.getsize(dst))
            con.close()
            print("big", big, flush=True)
    load = _results.load1()
    lines = [SECTION, "",
             f"`PYTHONPATH=src python benchmarks/cache_housekeeping.py --vectors {a.vectors}"
             f"{' --big ' + a.big if a.big else ''}` ({len(probs):,} items; 1-min load {load:.1f}).",
             "An old and a current version's signatures (792 B per photo) and verdicts (one per "
             "two photos) in the cache; the old version's pruned (`prune_derived`), then the pages "
             "given back (`reclaim(vacuum_share=0)`: incremental vacuum where the cache was "
             "created with it, else VACUUM). Sizes: the database file, its WAL checkpointed. `put` s: storing the vectors "
             "and probabilities in batches of 64 (the cost of incremental mode on writes).", "",
             "| cache content | auto_vacuum | size before MB | after prune MB (as before) | freed share "
             "| after reclaim MB | prune s | reclaim | reclaim s | put s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for m in rows:
        lines.append(f"| {m['content']} | {m['mode']} | {m['before'] * mb:.1f} | {m['after_prune'] * mb:.1f} | "
                     f"{m['share']:.0%} | {m['after'] * mb:.1f} | {m['prune_s']:.3f} | {m['how']} | "
                     f"{m['reclaim_s']:.3f} | {m['put_s']:.2f} |".replace(" 0.00 |", " |"))
    if big:
        lines += ["", f"VACUUM of a copy of `{a.big}`: {big[0] * mb:.0f} MB -> {big[2] * mb:.0f} MB in "
                  f"{big[1]:.2f} s ({big[1] / (big[0] * mb) * 100:.2f} s per 100 MB)."]
    lines += ["", f"Default `VACUUM_SHARE` = {VACUUM_SHARE:.2f} (a cache made before incremental vacuum is "
              "rewritten only when a prune freed at least that share of it)."]
    _results.publish(SECTION, "\n".join(lines) + "\n", a.write_results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
