"""The Ray path and the embedding cache: what a first embedding of a folder, an identical re-run
and a re-run over the folder grown by 1% cost on a local Ray cluster, with the code given by
``PYTHONPATH`` (this checkout's ``src``: the Ray path reads and fills the cache; an older
checkout's ``src``: ``--label before``).

The folder is ``--images`` Imagenette val photos (hard links, flat names, a seeded sample), and
``--grow`` percent more from the rest of the set for the third run. One driver process starts a
local Ray (``ray.init(num_cpus=2)``, not timed); every run is ``RayExecutor(workers=2).embed``
of the folder with one embedding cache, empty at the start (its actors start anew each run, as a
command's do; a run of ``cluster`` publishes its run folder and drops its work folder, so the
code before this change started every re-run of a command from nothing: ``shards`` is not given).
Each label's record is saved as ``benchmarks/out/ray_cache/LABEL.json``; ``--write-results``
writes the section from the records present.

    PYTHONPATH=/tmp/rayvec/base_src python benchmarks/ray_cache.py --label before
    PYTHONPATH=src python benchmarks/ray_cache.py --label after --write-results
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import _results

SECTION = "## The Ray path and the embedding cache (rayvec helper)"
OUT = _results.HERE / "out" / "ray_cache"
IMAGENETTE = Path("/work/data/imagenette/val")
CASES = ("first", "identical re-run", "re-run with new files")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", default="after", help="the record's name (before / after)")
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--grow", type=float, default=1.0, help="percent of new files for the third run")
    ap.add_argument("--source", type=Path, default=IMAGENETTE, help="a folder of class folders of images")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--write-results", action="store_true")
    ap.add_argument("--tables", action="store_true", help="measure nothing: the section from the saved records")
    a = ap.parse_args(argv)
    if a.tables:
        _results.publish(SECTION, render(_records()), a.write_results)
        return 0
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import numpy as np
    import ray

    from mediacluster.encoders import get_encoder
    from mediacluster.executors.ray_executor import RayExecutor
    from mediacluster.ingest import collect

    res = _results.started("ray_cache.py", argv)
    res.update(label=a.label, commit=_results.commit(), images=a.images,
               code=str(Path(__import__("mediacluster").__file__).parents[1]))
    files = sorted(p for p in a.source.rglob("*") if p.is_file())
    pick = np.random.default_rng(0).permutation(len(files))
    n_new = max(1, round(a.images * a.grow / 100))
    base, new = [files[i] for i in pick[:a.images]], [files[i] for i in pick[a.images:a.images + n_new]]
    res["new"], res["grow"] = len(new), a.grow
    t = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    res["ray_start_s"] = round(time.perf_counter() - t, 1)
    res["ray"] = ray.__version__
    enc = get_encoder("efficientnet-lite0")
    runs: dict[str, dict] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="ray_cache_") as tmp:
            folder, cache = Path(tmp) / "photos", Path(tmp) / "cache"
            folder.mkdir()

            def link(ps):
                for p in ps:
                    os.link(p, folder / f"{p.parent.name}_{p.name}")
                time.sleep(2.1)  # hash records are kept only for files older than 2 s

            def one(case: str) -> None:
                exe = RayExecutor(workers=a.workers)
                coll = collect(folder)
                emb, m = _results.timed(lambda: exe.embed(coll, encoder=enc, cache_dir=cache, batch_size=16,
                                                          progress=False, encoder_spec="efficientnet-lite0"))
                m.update({k: exe.stats.get(k) for k in ("cached", "embed_sent", "embed_first_result_s")},
                         items=len(coll), kept=len(emb))
                m["wall_s"], m["cpu_s"] = round(m["wall_s"], 2), round(m["cpu_s"], 2)
                runs[case] = m
                print(case, json.dumps(m), file=sys.stderr, flush=True)

            link(base)
            one(CASES[0])
            one(CASES[1])
            link(new)
            one(CASES[2])
    finally:
        ray.shutdown()
    res["runs"] = runs
    res["loadavg_after"] = _results.loadavg()
    res["finished"] = _results.finished()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{a.label}.json").write_text(json.dumps(res, indent=1))
    _results.publish(SECTION, render(_records()), a.write_results)
    return 0


def _records() -> dict[str, dict]:
    """The saved records, ``before*`` first."""
    found = {p.stem: json.loads(p.read_text()) for p in OUT.glob("*.json")}
    return {k: found[k] for k in sorted(found, key=lambda k: (not k.startswith("before"), k))}


def render(records: dict[str, dict]) -> str:
    labels = list(records)
    any_ = records[labels[-1]]
    lines = [SECTION, ""]
    for k in labels:
        r = records[k]
        lines.append(f"- `{k}`: `PYTHONPATH={'src' if k.startswith('after') else r['code']} {r['command']}` (commit "
                     f"{r['commit']}{'' if k.startswith('after') else ' of the script; the code measured: ' + r['code']}, "
                     f"{r['finished']}; Ray {r['ray']} started locally in {r['ray_start_s']} s, not counted; "
                     f"load {r['loadavg']} before, {r['loadavg_after']} after).")
    lines += ["", f"{any_['images']} Imagenette val photos (a seeded sample, hard links), then {any_['new']} more "
              f"({any_['grow']:g}%) for the third run, embedded by `RayExecutor(workers=2)` on a local Ray (2 CPUs) with one "
              "embedding cache, empty at the start. Wall seconds of `embed` (the actors start anew each "
              "run; a run that sends nothing starts none). `before`: the Ray path before it read or filled "
              "the cache (every run of a command embedded every file again); `after`: this code; a label "
              "ending in 2: the same, a second round.", "",
              "| code | run | wall s | driver CPU s | files sent to the workers | from the cache | "
              "first result after s | 1-min load |",
              "|---|---|---:|---:|---:|---:|---:|---|"]
    for k in labels:
        for case in CASES:
            m = records[k]["runs"].get(case)
            if m is None:
                continue
            first = m.get("embed_first_result_s")
            lines.append(f"| {k} | {case} | {m['wall_s']:.1f} | {m['cpu_s']:.2f} | {m['embed_sent']} of {m['items']} | "
                         f"{m.get('cached') or 0} | {'-' if first is None else first} | "
                         f"{m['load_before']}-{m['load_after']} |")
    lines += ["", _reading(records)]
    return "\n".join(lines) + "\n"


def _reading(records: dict[str, dict]) -> str:
    """What the table says, from its own numbers (ranges over the rounds of each code)."""
    def span(code: str, case: str, key: str, fmt: str = ".1f") -> str:
        vals = sorted(r["runs"][case][key] for k, r in records.items() if k.startswith(code) and case in r["runs"])
        if not vals:
            return "?"
        lo, hi = f"{vals[0]:{fmt}}", f"{vals[-1]:{fmt}}"
        return lo if lo == hi else f"{lo}-{hi}"

    grown = next((r["runs"][CASES[2]] for k, r in records.items() if k.startswith("after") and CASES[2] in r["runs"]), None)
    if grown is None or not any(k.startswith("before") for k in records):
        return ""
    return (f"Reading: an identical re-run sends nothing to the workers and starts no actors ({span('after', CASES[1], 'wall_s')} s "
            f"instead of {span('before', CASES[1], 'wall_s')} s); the folder grown by {records[next(iter(records))]['grow']:g}% "
            f"sends its {grown['embed_sent']} new files only ({span('after', CASES[2], 'wall_s')} s, the first result "
            f"after {span('after', CASES[2], 'embed_first_result_s')} s of actors starting, instead of "
            f"{span('before', CASES[2], 'wall_s')} s for all {grown['items']}). A first run costs what it did "
            f"({span('after', CASES[0], 'wall_s')} s vs {span('before', CASES[0], 'wall_s')} s at these loads; driver CPU "
            f"{span('after', CASES[0], 'cpu_s', '.2f')} vs {span('before', CASES[0], 'cpu_s', '.2f')} s, the cache's "
            "commits included): the workers now hash every file they read, and the driver keeps each block "
            "in the cache instead of in memory (or in a run's work folder).")


if __name__ == "__main__":
    sys.exit(main())
