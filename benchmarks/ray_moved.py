"""The Ray path after a folder is moved: a first embedding of ``--images`` Imagenette val photos
(hard links, flat names, a seeded sample) on a local Ray, then every file moved (the folder
renamed) and embedded again, then an identical re-run; one embedding cache, empty at the start.
The code measured is the one ``PYTHONPATH`` gives (an older checkout's ``src`` for ``before``).
Prints one JSON record (and saves it as ``benchmarks/out/ray_moved/LABEL.json``); the numbers
are quoted by hand in RESULTS "Loose ends, third pass (loose3 helper)".

    PYTHONPATH=/tmp/loose3/base/src python benchmarks/ray_moved.py --label before
    PYTHONPATH=src python benchmarks/ray_moved.py --label after
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

OUT = _results.HERE / "out" / "ray_moved"
IMAGENETTE = Path("/work/data/imagenette/val")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", default="after")
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--source", type=Path, default=IMAGENETTE, help="a folder of class folders of images")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import numpy as np
    import ray

    from mediacluster.encoders import get_encoder
    from mediacluster.executors.ray_executor import RayExecutor
    from mediacluster.ingest import collect

    res = _results.started("ray_moved.py", argv)
    res.update(label=a.label, commit=_results.commit(), images=a.images,
               code=str(Path(__import__("mediacluster").__file__).parents[1]))
    files = sorted(p for p in a.source.rglob("*") if p.is_file())
    base = [files[i] for i in np.random.default_rng(0).permutation(len(files))[:a.images]]
    t = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    res["ray_start_s"], res["ray"] = round(time.perf_counter() - t, 1), ray.__version__
    enc = get_encoder("efficientnet-lite0")
    runs: dict[str, dict] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="ray_moved_") as tmp:
            cache = Path(tmp) / "cache"
            (Path(tmp) / "a").mkdir()
            for p in base:
                os.link(p, Path(tmp) / "a" / f"{p.parent.name}_{p.name}")
            time.sleep(2.1)  # hash records are kept only for files older than 2 s

            def one(case: str, folder: Path) -> None:
                exe = RayExecutor(workers=a.workers)
                coll = collect(folder)
                emb, m = _results.timed(lambda: exe.embed(coll, encoder=enc, cache_dir=cache, batch_size=16,
                                                          progress=False, encoder_spec="efficientnet-lite0"))
                m.update({k: exe.stats.get(k) for k in ("cached", "embed_sent", "hashed_on_workers",
                                                         "embed_first_result_s")}, items=len(coll), kept=len(emb))
                m["wall_s"], m["cpu_s"] = round(m["wall_s"], 2), round(m["cpu_s"], 2)
                runs[case] = m
                print(case, json.dumps(m), file=sys.stderr, flush=True)

            one("first", Path(tmp) / "a")
            (Path(tmp) / "a").rename(Path(tmp) / "b")  # every file moved
            one("all moved", Path(tmp) / "b")
            one("identical re-run", Path(tmp) / "b")
    finally:
        ray.shutdown()
    res["runs"], res["loadavg_after"], res["finished"] = runs, _results.loadavg(), _results.finished()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{a.label}.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
