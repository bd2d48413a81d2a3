"""What keeping uploads costs a request: `serve --keep-uploads` off, `--keep novel`, `--keep all`.

One client sends one distinct 224 px Imagenette JPEG per request over a keep-alive loopback
connection (``benchmarks/serve.py``'s client and server helpers) to a `mediacluster serve`
process of a run with a saved model (default pipeline on Imagenette val, built once by
``serve.build_run`` or given with ``--run``); per configuration the latency p50 / p95 / p99, the
server's CPU per request (/proc: user + system of the whole process, so the writer thread's
hashing and writing are in it), and how many uploads the inbox kept (its /metrics counter). The
configurations run in the order off, novel, all, all, novel, off (each a fresh server and a fresh
inbox folder), so that a drift of the machine's load shows instead of favouring one.

    flock /tmp/mc-bench.lock python benchmarks/inbox.py [--requests 300] [--write]

Bounded: each configuration stops at ``--requests`` or ``--budget`` seconds.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402
from serve import (  # noqa: E402 - the service benchmark's helpers
    ROOT,
    Client,
    Server,
    build_run,
    images_dir,
    multipart,
    one_client,
)

SECTION = "## The service keeps what it could not place (inbox helper)"
CONFIGS = {"off": [], "novel": ["--keep", "novel"], "all": ["--keep", "all"]}


def kept(server: Server) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = Client(server.url).get("/metrics").decode()
    return sum(s.value for f in text_string_to_metric_families(text) if f.name == "mediacluster_inbox_kept"
               for s in f.samples if s.name.endswith("_total"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "serve"),
                    help="where serve.py's run is (built there when missing)")
    ap.add_argument("--run", default=None, help="a run folder with a saved model (default: OUT/run)")
    ap.add_argument("--data", default=None, help="folder of 224 px JPEGs (default: Imagenette val)")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--budget", type=float, default=60.0, help="seconds per configuration, at most")
    _results.add_common_args(ap)
    args = ap.parse_args()
    load_start = _results.loadavg()
    data = images_dir(args)
    files = sorted(p for p in data.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg"))
    # distinct files: --keep all stores every one (none is a repeat of a stored content)
    step = max(1, len(files) // (args.requests + 20))
    bodies = [multipart(p) for p in files[::step][:args.requests + 20]]
    run = Path(args.run) if args.run else build_run(args, data)
    results = []
    tmp = Path(tempfile.mkdtemp(prefix="mc-inbox-bench-"))
    try:
        for i, name in enumerate(["off", "novel", "all", "all", "novel", "off"]):
            inbox = tmp / f"inbox{i}"
            flags = ["--keep-uploads", str(inbox), *CONFIGS[name]] if name != "off" else []
            s = Server(run, *flags, log=tmp / f"server{i}.log")
            try:
                # warm-up (20 bodies) and timed requests use different images: the timed ones are new
                r = one_client(s, bodies, args.requests, args.budget)
                time.sleep(0.5)
                r.update(config=name, kept=kept(s) if flags else 0.0, load=_results.loadavg())
            finally:
                s.stop()
            results.append(r)
            print(f"{name:6s} p50 {r['p50_ms']:.1f} p95 {r['p95_ms']:.1f} p99 {r['p99_ms']:.1f} ms, "
                  f"server CPU {r['server_cpu_ms']:.1f} ms/request, kept {r['kept']:.0f} of "
                  f"{r['requests'] + 20}, failed {r['failed']}, load {r['load']}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load_end = _results.loadavg()
    block = report(results, " ".join(sys.argv[1:]), load_start, load_end)
    _results.publish(SECTION, block, args.write)


def summary(results: list[dict]) -> str:
    import statistics

    def med(name, key):
        return statistics.median(r[key] for r in results if r["config"] == name)

    parts = []
    for name in ("novel", "all"):
        parts.append(f"`{name}` against off: p50 {med(name, 'p50_ms') - med('off', 'p50_ms'):+.1f} ms, "
                     f"p95 {med(name, 'p95_ms') - med('off', 'p95_ms'):+.1f} ms, server CPU "
                     f"{med(name, 'server_cpu_ms') - med('off', 'server_cpu_ms'):+.1f} ms per request "
                     f"(medians of its two rows)")
    off = [r for r in results if r["config"] == "off"]
    noise = (f" The two `off` rows differ by {abs(off[0]['p50_ms'] - off[1]['p50_ms']):.1f} ms at p50 and "
             f"{abs(off[0]['p95_ms'] - off[1]['p95_ms']):.1f} ms at p95: the noise floor of this machine."
             if len(off) == 2 else "")
    return "; ".join(parts) + "." + noise


def report(results: list[dict], argv: str, load_start, load_end) -> str:
    rows = "\n".join(
        f"| {r['config']} | {r['requests']} | {r['failed']} | {r['p50_ms']:.1f} / {r['p95_ms']:.1f} / "
        f"{r['p99_ms']:.1f} ms | {r['server_cpu_ms']:.1f} ms | {r['kept']:.0f} | {r['load']} |"
        for r in results)
    cmd = f"flock /tmp/mc-bench.lock python benchmarks/inbox.py {argv}".strip()
    return f"""{SECTION}

`{cmd}`

Loopback, 2 cores shared with other work; load average at start {load_start}, at end
{load_end}. The run of "Service" above (Imagenette val, default pipeline, saved model);
one client, one distinct 224 px JPEG per request (multipart, keep-alive); each row
a fresh `mediacluster serve` process and a fresh inbox folder, in the order written. "kept"
counts the uploads in the inbox after the row (warm-up requests included). Server CPU is the
server process's user + system time per request (the writer thread's hashing, sniffing, atomic
write with fsync and SQLite row are in it).

| --keep | requests | failed | p50 / p95 / p99 | server CPU per request | kept | load after |
|---|---|---|---|---|---|---|
{rows}

{summary(results)}

The answer is sent before anything is written: the request only checks the rule and queues the
item for the process's writer thread (hash, format sniffing, atomic write with fsync, one SQLite
transaction). So an upload the rule does not pick costs the rule check only; one that is kept
costs its request no waiting on the disk, but on 2 cores the writer's CPU competes with the next
requests' encoding, which is what the `all` rows' extra latency is.
"""


if __name__ == "__main__":
    main()
