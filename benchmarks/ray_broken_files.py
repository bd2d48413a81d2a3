"""Broken files on the Ray path: what a second embedding of a folder with many unusable files
costs on a local Ray cluster, with their failures remembered by the embedding cache and with
every broken file sent to the workers again (the Ray path before it read the remembered
failures; here: the same code right after ``forget_failures``, i.e. ``--retry-bad``).

The folder is ``broken_files.make_folder``'s (Imagenette photos, cheap broken files of five
kinds, cut-off phone-sized JPEGs and PNGs). One driver process starts a local Ray
(``ray.init(num_cpus=2)``, not timed); every run is ``RayExecutor(workers=2).embed`` of the
folder with one embedding cache (its actors start anew each run, as a command's do). Order:
a first run (cache empty), then ``--repeats`` rounds of: a run with the failures remembered,
then ``forget_failures`` and a run that sends everything, then the good photos alone (the floor).
Since the Ray path keeps vectors in the cache too (``benchmarks/ray_cache.py``), the good photos
are sent out by the first run only: a re-run sends nothing, or the broken files alone after
``forget_failures``.

    PYTHONPATH=src python benchmarks/ray_broken_files.py --write-results
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _results
from broken_files import add_folder_args, folder_of

SECTION = "## Broken files on the Ray path (rayfail helper)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_folder_args(ap, broken=60, cut_jpg=60, cut_png=15, repeats=2)
    ap.add_argument("--write-results", action="store_true")
    a = ap.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from mediacluster.embed import EmbeddingStore
    from mediacluster.encoders import get_encoder
    from mediacluster.executors.ray_executor import RayExecutor
    from mediacluster.ingest import collect

    res = _results.started("ray_broken_files.py", argv)
    res["commit"] = _results.commit()
    t = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    res["ray_start_s"] = round(time.perf_counter() - t, 1)
    res["ray"] = ray.__version__
    enc = get_encoder("efficientnet-lite0")
    runs: dict[str, list[dict]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="ray_broken_") as tmp:
            tmp = Path(tmp)
            res["folder"] = folder_of(a, tmp / "mixed")
            good = tmp / "good"
            good.mkdir()
            for p in sorted((tmp / "mixed").glob("good_*")):
                os.link(p, good / p.name)
            time.sleep(2.1)  # hash records are kept only for files older than 2 s
            cache = tmp / "cache"

            def one(case: str, folder: Path) -> None:
                exe = RayExecutor(workers=2)
                coll = collect(folder)
                emb, m = _results.timed(lambda: exe.embed(coll, encoder=enc, cache_dir=cache, batch_size=16,
                                                          progress=False, encoder_spec="efficientnet-lite0"))
                m.update({k: exe.stats.get(k) for k in ("known_bad", "embed_sent", "embed_first_result_s")},
                         kept=len(emb), skipped=len(emb.skipped))
                m["wall_s"], m["cpu_s"] = round(m["wall_s"], 2), round(m["cpu_s"], 2)
                runs.setdefault(case, []).append(m)
                print(case, m, file=sys.stderr)

            one("first", tmp / "mixed")
            for _ in range(a.repeats):
                one("remembered", tmp / "mixed")
                with EmbeddingStore(cache) as store:
                    store.forget_failures()
                one("sent again", tmp / "mixed")
                one("good only", good)
    finally:
        ray.shutdown()
    res["runs"] = runs
    _results.finish(res, SECTION, render, a.write_results)
    return 0


def render(res: dict) -> str:
    f, runs = res["folder"], res["runs"]
    lines = [SECTION, "",
             f"`{res['command']}` (commit {res['commit']}, {res['finished']}; Ray {res['ray']} started locally "
             f"in {res['ray_start_s']} s, not counted; load {res['loadavg']} before, {res['loadavg_after']} after).",
             "",
             f"A folder of {f['good']} Imagenette photos and {f['broken']} files that cannot be used "
             "(`broken_files.make_folder`), embedded by `RayExecutor(workers=2)` on a local Ray "
             "(2 CPUs) through one embedding cache. `remembered`: a re-run, the failures remembered "
             "by the earlier runs (those files are not sent to the workers); `sent again`: a re-run "
             "right after `forget_failures` (`--retry-bad`), which is what every re-run cost before the "
             "Ray path read them; `good only`: the photos alone, the floor. Wall seconds of "
             "`embed` (the actors start anew each run), median of the runs.", "",
             "| run | runs | wall s | driver CPU s | files sent to the workers | known not to decode | "
             "first result after s | 1-min load |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for case in ("first", "remembered", "sent again", "good only"):
        rs = runs[case]
        loads = sorted({r["load_before"] for r in rs} | {r["load_after"] for r in rs})
        lines.append(f"| {case} | {len(rs)} | {statistics.median(r['wall_s'] for r in rs):.1f} | "
                     f"{statistics.median(r['cpu_s'] for r in rs):.2f} | {rs[0]['embed_sent']} | "
                     f"{rs[0]['known_bad']} | {statistics.median(r['embed_first_result_s'] or 0 for r in rs):.1f} | "
                     f"{loads[0]}-{loads[-1]} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
