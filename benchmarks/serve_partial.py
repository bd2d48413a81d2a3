"""The service's per-item answers: what a 32-image upload costs, all good and with one bad file.

Clusters a few hundred Imagenette val photos (default pipeline, saved model) once into
``--out/run``, starts ``mediacluster serve`` on it (the package on ``PYTHONPATH``: run it once
with the code before a change and once after to compare), then one client on a keep-alive
connection sends ``--requests`` uploads of 32 photos each (bodies built beforehand), of three
kinds: all good; 31 good and one truncated JPEG at position 16; and, what a client of a service
that refuses the whole batch then has to do, that upload followed by the 31 good ones again when
it is refused. Per kind: the status, the items placed per request, latency (p50 / p95, ms) and the
server's CPU time per request (from /proc), with the 1-min load average.

    flock /tmp/mc-bench.lock python benchmarks/serve_partial.py [--requests 20] [--out DIR]

Prints one JSON line per kind; the figures are in benchmarks/RESULTS.md, "The service answers
per item (partial helper)" (written by hand: before and after are two runs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _results import loadavg
from serve import BOUNDARY, Client, Server, percentile, proc_cpu

DATA = Path("/work/data/imagenette/val")


def body(files: list[tuple[str, bytes]]) -> bytes:
    """A multipart body with ``files`` (name, bytes) as the repeated field ``files``."""
    out = b""
    for name, data in files:
        out += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
                f"Content-Type: image/jpeg\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def placed(out: bytes) -> int:
    try:
        return sum("cluster" in it for it in json.loads(out).get("items", []))
    except ValueError:
        return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA, help="a folder of class folders of JPEGs")
    ap.add_argument("--fit", type=int, default=20, help="photos per class folder to fit the model on")
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path("/tmp/serve-partial-bench"))
    args = ap.parse_args()
    classes = sorted(p for p in args.data.iterdir() if p.is_dir())
    fit = args.out / "fit"
    if not fit.is_dir():  # links to the first --fit photos of each class: no copy of the data
        for c in classes:
            (fit / c.name).mkdir(parents=True)
            for p in sorted(c.glob("*.JPEG"))[:args.fit]:
                (fit / c.name / p.name).symlink_to(p)
    run = args.out / "run"
    if not (run / "models" / "LATEST").exists():
        from mediacluster.workflow import cluster_folder

        t = time.perf_counter()
        cluster_folder(fit, run, save_model=True, progress=False)
        print(f"run built in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    # 32 new photos (not fitted on), and a truncated one
    new = [p for c in classes for p in sorted(c.glob("*.JPEG"))[args.fit:args.fit + 4]][:32]
    good = [(p.name, p.read_bytes()) for p in new]
    broken = ("truncated.jpg", good[16][1][: len(good[16][1]) // 2])
    bodies = {"32 good": [body(good)], "31 good + 1 truncated": [body(good[:16] + [broken] + good[17:])],
              "31 good + 1 truncated, resent without it when refused":
                  [body(good[:16] + [broken] + good[17:]), body(good[:16] + good[17:])]}
    args.out.mkdir(parents=True, exist_ok=True)
    server = Server(run, "--max-files", "64", log=args.out / "server.log")
    ctype = f"multipart/form-data; boundary={BOUNDARY}"
    try:
        c = Client(server.url)
        for _ in range(3):  # warm-up
            c.post(bodies["32 good"][0], ctype)
        for kind, (first, *retry) in bodies.items():
            lat, cpu0, statuses, n_placed = [], proc_cpu(server.pid), [], []
            for _ in range(args.requests):
                status, s, out = c.post(first, ctype)
                got = placed(out) if status == 200 else 0
                if status != 200 and retry:  # the client finds the bad file and sends the rest again
                    status2, s2, out = c.post(retry[0], ctype)
                    s += s2
                    got = placed(out) if status2 == 200 else 0
                lat.append(s)
                statuses.append(status)
                n_placed.append(got)
            cpu = proc_cpu(server.pid) - cpu0
            print(json.dumps({"kind": kind, "requests": args.requests, "status": sorted(set(statuses)),
                              "placed_per_request": min(n_placed), "p50_ms": round(percentile(lat, 50) * 1e3, 1),
                              "p95_ms": round(percentile(lat, 95) * 1e3, 1),
                              "server_cpu_ms": round(cpu / args.requests * 1e3, 1), "loadavg": loadavg()}),
                  flush=True)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
