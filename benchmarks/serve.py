"""The service end to end on loopback: latency, throughput, vectors/s, memory, against the encoder.

Clusters Imagenette val (3,925 photos, 224 px JPEGs) with the default pipeline into a run with a
saved model (embeddings come from the shared cache), then, in this order, so that nothing else of
ours runs meanwhile:

1. the encoder's own batch rate in this process: ``encode`` on prepared 224 px crops in batches
   of 32 with the encoder's ``concurrency`` threads (what ``embed`` does), and decode + encode
   through ``embed_collection`` with an empty cache (img/s and CPU ms per image);
2. ``mediacluster assign RUN one.jpg`` per call (a new process each time);
3. for each batching window: a ``mediacluster serve`` process; one client sending one JPEG per
   request (latency p50/p95/p99), then 8 clients (throughput);
4. with the chosen window: vectors per second from JSON (256 vectors per request, 2 clients),
   and 20,000 one-image requests from 8 clients with the server's resident memory sampled every
   1,000 requests (growth after the first 2,000 = warm-up).

The clients use ``http.client`` with keep-alive connections and bodies built beforehand, so
they cost the 2 cores as little as a client can. The server's CPU time (from /proc) per
request is given next to wall times: on a loaded machine it is the figure that travels.

    flock /tmp/mc-bench.lock python benchmarks/serve.py [--requests 20000] [--write]

Bounded: every phase stops at its request count or its time budget, whichever comes first.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import _results
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Service (serve helper)"
DATA = Path("/work/data/imagenette/val")
SHARED = ROOT.parent / "shared" / "datasets"
BOUNDARY = "mcbenchboundary7d1e"
TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def images_dir(args) -> Path:
    if args.data:
        return Path(args.data)
    if DATA.is_dir():
        return DATA
    from mediacluster.datasets import extract_slice

    d = Path(args.out) / "imagenette-val"
    if not d.is_dir():
        extract_slice(SHARED / "imagenette-val.tar.gz", d)
    return d


def build_run(args, data: Path) -> Path:
    """A run with a saved model (default pipeline), made once and reused."""
    out = Path(args.out) / "run"
    if (out / "models" / "LATEST").exists():
        return out
    from mediacluster.workflow import cluster_folder

    t = time.perf_counter()
    cluster_folder(data, out, save_model=True, progress=False)
    print(f"run built in {time.perf_counter() - t:.0f} s: {out}", flush=True)
    return out


def multipart(path: Path) -> bytes:
    data = path.read_bytes()
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{path.name}\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def answered(status: int, body: bytes) -> bool:
    """A request whose every item was placed: 200 and no item with an ``error`` (the service
    answers an unreadable item in its place: a 200 is not enough; a byte search, not a JSON
    parse, to cost the client little)."""
    return status == 200 and b'"error":{' not in body


class Client:
    """One keep-alive connection; ``post`` returns (status, seconds, body)."""

    def __init__(self, url: str):
        host, port = url.removeprefix("http://").rstrip("/").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=120)

    def post(self, body: bytes, ctype: str, path: str = "/v1/assign") -> tuple[int, float, bytes]:
        t = time.perf_counter()
        self.conn.request("POST", path, body=body, headers={"Content-Type": ctype})
        r = self.conn.getresponse()
        out = r.read()
        return r.status, time.perf_counter() - t, out

    def get(self, path: str) -> bytes:
        self.conn.request("GET", path)
        return self.conn.getresponse().read()


class Server:
    def __init__(self, run: Path, *flags: str, log: Path):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.log = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "mediacluster", "serve", str(run), "--port", "0",
                                      *flags], stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        self.url = None
        for line in self.proc.stdout:
            if "listening on " in line:
                self.url = line.split("listening on ", 1)[1].strip().rstrip("/")
                break
        if self.url is None:
            raise RuntimeError(f"server did not start; see {log}")
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        Client(self.url).get("/readyz")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def batch_stats(server: Server) -> tuple[float, float]:
    """(encoder calls, items encoded) so far, from the server's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = Client(server.url).get("/metrics").decode()
    for fam in text_string_to_metric_families(text):
        if fam.name == "mediacluster_encode_batch_size":
            got = {x.name.rsplit("_", 1)[1]: x.value for x in fam.samples if "le" not in x.labels}
            return got.get("count", 0.0), got.get("sum", 0.0)
    return 0.0, 0.0


def percentile(xs, q) -> float:
    return float(np.percentile(np.asarray(xs), q))


def one_client(server: Server, bodies: list[bytes], n: int, budget_s: float) -> dict:
    c = Client(server.url)
    ctype = f"multipart/form-data; boundary={BOUNDARY}"
    for b in bodies[:20]:  # warm-up
        c.post(b, ctype)
    lat, fails = [], 0
    cpu0, t0 = proc_cpu(server.pid), time.perf_counter()
    for i in range(n):
        status, s, out = c.post(bodies[i % len(bodies)], ctype)
        fails += not answered(status, out)
        lat.append(s)
        if time.perf_counter() - t0 > budget_s:
            break
    wall = time.perf_counter() - t0
    cpu = proc_cpu(server.pid) - cpu0
    return {"requests": len(lat), "failed": fails, "p50_ms": percentile(lat, 50) * 1e3,
            "p95_ms": percentile(lat, 95) * 1e3, "p99_ms": percentile(lat, 99) * 1e3,
            "mean_ms": statistics.fmean(lat) * 1e3, "server_cpu_ms": cpu / len(lat) * 1e3,
            "wall_s": wall}


def many_clients(server: Server, bodies: list[bytes], n: int, clients: int, budget_s: float,
                 ctype: str | None = None, on_progress=None) -> dict:
    ctype = ctype or f"multipart/form-data; boundary={BOUNDARY}"
    lock = threading.Lock()
    state = {"next": 0, "done": 0, "failed": 0}
    lat: list[float] = []
    t0 = time.perf_counter()

    def work(k: int):
        c = Client(server.url)
        while True:
            with lock:
                i = state["next"]
                if i >= n or time.perf_counter() - t0 > budget_s:
                    return
                state["next"] += 1
            status, s, out = c.post(bodies[(i * 7 + k) % len(bodies)], ctype)
            with lock:
                state["done"] += 1
                state["failed"] += not answered(status, out)
                lat.append(s)
                done = state["done"]
            if on_progress is not None and done % 1000 == 0:
                on_progress(done)

    calls0, items0 = batch_stats(server)
    cpu0 = proc_cpu(server.pid)
    threads = [threading.Thread(target=work, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    cpu = proc_cpu(server.pid) - cpu0
    calls1, items1 = batch_stats(server)
    done = state["done"]
    return {"requests": done, "failed": state["failed"], "wall_s": wall, "per_s": done / wall,
            "p50_ms": percentile(lat, 50) * 1e3, "p99_ms": percentile(lat, 99) * 1e3,
            "server_cpu_ms": cpu / max(done, 1) * 1e3,
            "mean_batch": (items1 - items0) / max(calls1 - calls0, 1)}


class EncoderAlone:
    """The default encoder in this process, for its batch rate next to each service figure."""

    def __init__(self, files: list[Path]):
        from mediacluster.encoders import DEFAULT_IMAGE_ENCODER, get_encoder

        self.enc = get_encoder(DEFAULT_IMAGE_ENCODER)
        self.crops = [self.enc.prepare(str(p)) for p in files]
        self.enc.encode(self.crops[:32])

    def rate(self, n: int | None = None) -> dict:
        """``encode`` on prepared crops, batches of 32, the encoder's ``concurrency`` threads
        (what ``embed`` does): img/s and CPU ms per image."""
        from concurrent.futures import ThreadPoolExecutor

        crops = self.crops[:n] if n else self.crops
        batches = [crops[i:i + 32] for i in range(0, len(crops), 32)]
        t, c = time.perf_counter(), time.process_time()
        with ThreadPoolExecutor(self.enc.concurrency) as pool:
            list(pool.map(lambda b: self.enc.encode(b), batches))
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        return {"encode_per_s": len(crops) / wall, "encode_cpu_ms": cpu / len(crops) * 1e3,
                "concurrency": self.enc.concurrency}


def encoder_rates(alone: EncoderAlone, files: list[Path], out: Path) -> dict:
    """The encoder's own batch rate (encode only) and decode + encode through embed_collection."""
    from mediacluster.embed import embed_collection
    from mediacluster.ingest import collect

    enc = alone.enc
    res = alone.rate()
    sub = out / "embed-input"
    shutil.rmtree(sub, ignore_errors=True)
    sub.mkdir(parents=True)
    for p in files:
        os.symlink(p, sub / p.name)
    cache = Path(tempfile.mkdtemp(prefix="serve-bench-cache-"))
    try:
        coll = collect(sub)
        t, c = time.perf_counter(), time.process_time()
        emb = embed_collection(coll, encoder=enc, cache_dir=cache, progress=False)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    res.update({"embed_per_s": len(emb) / wall, "embed_cpu_ms": cpu / len(emb) * 1e3})
    return res


def assign_per_call(run: Path, files: list[Path], calls: int) -> dict:
    times = []
    for p in files[:calls]:
        cache = tempfile.mkdtemp(prefix="serve-bench-assign-")
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "mediacluster", "assign", str(run), str(p), "--quiet",
                            "--cache-dir", cache], capture_output=True, text=True)
        times.append(time.perf_counter() - t)
        shutil.rmtree(cache, ignore_errors=True)
        if r.returncode != 0:
            raise RuntimeError(f"assign failed: {r.stderr[-500:]}")
    return {"calls": len(times), "median_s": statistics.median(times), "min_s": min(times)}


def vectors_rate(server: Server, run: Path, per_request: int, n: int, budget_s: float) -> dict:
    from mediacluster.rundir import RunDir

    X = np.asarray(RunDir.open(run).read_embeddings().vectors, dtype=np.float32)
    rng = np.random.default_rng(0)
    bodies = [json.dumps({"vectors": X[rng.choice(len(X), per_request)].tolist()}).encode()
              for _ in range(4)]
    c = Client(server.url)
    c.post(bodies[0], "application/json")
    r = many_clients(server, bodies, n, 2, budget_s, ctype="application/json")
    r["vectors_per_s"] = r["per_s"] * per_request
    r["server_cpu_ms_per_vector"] = r["server_cpu_ms"] / per_request
    r["body_mb"] = len(bodies[0]) / 1e6
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "serve"))
    ap.add_argument("--data", default=None, help="folder of 224 px JPEGs (default: Imagenette val)")
    ap.add_argument("--windows", default="0,2,5", help="batching windows to compare, ms")
    ap.add_argument("--window", type=float, default=None, help="window for the long runs (default: "
                    "the best 8-client throughput among --windows)")
    ap.add_argument("--latency-requests", type=int, default=400)
    ap.add_argument("--burst-requests", type=int, default=1500, help="8-client requests per window")
    ap.add_argument("--requests", type=int, default=20000, help="requests of the memory run")
    ap.add_argument("--vector-requests", type=int, default=60)
    ap.add_argument("--assign-calls", type=int, default=3)
    ap.add_argument("--budget", type=float, default=600, help="time budget of each phase, s")
    _results.add_common_args(ap)
    ap.add_argument("--nice", type=int, default=0, help="run this benchmark and its servers at this "
                    "niceness (negative: ahead of the machine's other work, to approximate a quiet "
                    "machine on a shared one; stated with the figures)")
    args = ap.parse_args()
    if args.nice:
        os.nice(args.nice)  # inherited by the server and assign processes
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load_start = _results.loadavg()
    data = images_dir(args)
    files = sorted(p for p in data.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg"))
    rng = np.random.default_rng(0)
    pick = [files[i] for i in rng.choice(len(files), 256, replace=False)]
    run = build_run(args, data)
    res: dict = {"load_start": load_start, "cores": len(os.sched_getaffinity(0)), "nice": args.nice}
    print("encoder batch rate ...", flush=True)
    alone = EncoderAlone(pick)
    res["encoder"] = encoder_rates(alone, pick, out)
    print(res["encoder"], flush=True)
    print("mediacluster assign per call ...", flush=True)
    res["assign"] = assign_per_call(run, pick, args.assign_calls)
    print(res["assign"], flush=True)
    bodies = [multipart(p) for p in pick]
    res["windows"] = {}
    for w in [float(x) for x in args.windows.split(",")]:
        s = Server(run, "--batch-window-ms", str(w), log=out / f"server-w{w:g}.log")
        try:
            one = one_client(s, bodies, args.latency_requests, args.budget)
            before = alone.rate(128)  # the encoder alone, in the same minute, the server idle
            eight = many_clients(s, bodies, args.burst_requests, 8, args.budget)
        finally:
            s.stop()
        res["windows"][f"{w:g}"] = {"one": one, "eight": eight, "encoder": before, "load": _results.loadavg()}
        print(f"window {w:g} ms: 1 client {one}\n  8 clients {eight}", flush=True)
    window = args.window if args.window is not None else float(max(
        res["windows"], key=lambda k: res["windows"][k]["eight"]["per_s"]))
    res["window"] = window
    s = Server(run, "--batch-window-ms", f"{window:g}", log=out / "server-long.log")
    try:
        res["vectors"] = {str(k): vectors_rate(s, run, k, args.vector_requests, args.budget)
                          for k in (256, 1024)}
        print("vectors", res["vectors"], flush=True)
        rss = [(0, proc_rss_mb(s.pid))]

        def sample(done):
            rss.append((done, proc_rss_mb(s.pid)))
            print(f"  {done} requests, RSS {rss[-1][1]:.0f} MB", flush=True)

        res["long_encoder"] = alone.rate(128)
        res["long"] = many_clients(s, bodies, args.requests, 8, args.budget * 3, on_progress=sample)
        rss.append((res["long"]["requests"], proc_rss_mb(s.pid)))
        res["rss"] = rss
        print("long run", res["long"], flush=True)
    finally:
        s.stop()
    res["load_end"] = _results.loadavg()
    (out / "serve.json").write_text(json.dumps(res, indent=1))
    _results.publish(SECTION, report(res, " ".join(sys.argv[1:])), args.write)


def report(res: dict, argv: str) -> str:
    enc, asg = res["encoder"], res["assign"]
    lines = [SECTION, "",
             f"`flock /tmp/mc-bench.lock python benchmarks/serve.py {argv}`".replace(" `", "`"), "",
             f"Loopback, {res['cores']} cores, load average at start {res['load_start']}, "
             f"at end {res['load_end']}"
             + (f"; benchmark and servers at nice {res['nice']}" if res.get("nice") else "") + ". Imagenette val (3,925 photos), default pipeline, all items kept as "
             "the model's reference; one 224 px JPEG per request unless stated. Server CPU "
             "= user + system time of the server process per request (/proc), which a loaded "
             "machine does not inflate the way it inflates wall time.", "",
             "| what | figure |", "|---|---|",
             f"| `mediacluster assign RUN one.jpg`, per call (new process) | {asg['median_s']:.2f} s median of {asg['calls']} |",
             f"| encoder alone, batches of 32, {enc['concurrency']} threads | {enc['encode_per_s']:.0f} img/s, {enc['encode_cpu_ms']:.1f} ms CPU/img |",
             f"| decode + encode through `embed_collection` (empty cache) | {enc['embed_per_s']:.0f} img/s, {enc['embed_cpu_ms']:.1f} ms CPU/img |",
             ""]
    lines += ["| window | 1 client p50 / p95 / p99 | server CPU per request | 8 clients img/s | "
              "encoder alone just before, img/s | 8 clients as a share of it | mean encoder batch | "
              "8 clients server CPU/img (encoder alone's CPU/img as a share of it) | load |",
              "|---|---|---|---|---|---|---|---|---|"]
    for w, r in res["windows"].items():
        o, e, a = r["one"], r["eight"], r["encoder"]
        lines.append(f"| {w} ms | {o['p50_ms']:.1f} / {o['p95_ms']:.1f} / {o['p99_ms']:.1f} ms | "
                     f"{o['server_cpu_ms']:.1f} ms | {e['per_s']:.1f} | {a['encode_per_s']:.1f} | "
                     f"{e['per_s'] / a['encode_per_s']:.0%} | {e['mean_batch']:.1f} | "
                     f"{e['server_cpu_ms']:.1f} ms ({a['encode_cpu_ms'] / e['server_cpu_ms']:.0%}) | "
                     f"{r['load']} |")
    lines.append("")
    v = res["vectors"]
    lines += ["| JSON vectors per request | vectors/s (2 clients) | server CPU per vector | body |",
              "|---|---|---|---|"]
    for k, r in v.items():
        lines.append(f"| {k} | {r['vectors_per_s']:.0f} | {r['server_cpu_ms_per_vector'] * 1e3:.0f} µs | "
                     f"{r['body_mb']:.1f} MB |")
    lines.append("")
    long, rss = res["long"], res["rss"]
    warm = next((m for n, m in rss if n >= 2000), rss[-1][1])
    peak_after = max(m for n, m in rss if n >= 2000) if any(n >= 2000 for n, _ in rss) else rss[-1][1]
    lines += [f"Memory, window {res['window']:g} ms: {long['requests']:,} one-image requests from 8 "
              f"clients ({long['failed']} failed) in {long['wall_s']:.0f} s ({long['per_s']:.1f} img/s; "
              f"the encoder alone just before: {res['long_encoder']['encode_per_s']:.1f} img/s; "
              f"server CPU {long['server_cpu_ms']:.1f} ms/img, mean encoder batch "
              f"{long['mean_batch']:.1f}). Resident memory: start "
              f"{rss[0][1]:.0f} MB, after 2,000 requests {warm:.0f} MB, highest after that "
              f"{peak_after:.0f} MB (+{(peak_after - warm) / warm:.1%}), end {rss[-1][1]:.0f} MB.", ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
