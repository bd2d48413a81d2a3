"""What a user waits for outside the clustering (benchmarks/RESULTS.md, "What a user waits for").

Run every mode under the bench lock and note the load, e.g.
``flock /tmp/mc-bench.lock python benchmarks/feel.py cli --model RUN --image IMG --evaluate RUN``.

- ``cli``: wall / CPU seconds and peak memory of cold ``mediacluster --help``, ``assign MODEL
  IMAGE`` and ``evaluate RUN`` processes (each ``--repeat`` times, default 2, through
  ``/usr/bin/time``; with 3 or more the median too);
- ``cmd ARGS...``: the same for any one command line, e.g. ``cmd --repeat 3 -- dups DIR --out OUT``
  or ``cmd -- cluster DIR --out RUN`` (the embedding cache warm after the first run);
- ``server studio|serve RUN``: seconds from the command to "listening" (studio) or ``/readyz``
  (serve), then the first requests: the studio's map, labels, clusters, one merge, undo; the
  service's ``/v1/assign`` with one vector (``--dim``) and ``/v1/clusters``;
- ``report-page HTML``: a report opened in headless Chromium: seconds to the map drawn;
- ``studio-page RUN``: the studio started and its page opened in headless Chromium: seconds
  to the page loaded (first paint, nothing pending).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from _browser import chromium
from _results import loadavg as load

PY = [sys.executable, "-m", "mediacluster"]


def timed(cmd: list[str], label: str) -> float:
    out = subprocess.run(["/usr/bin/time", "-f", "%e %U %S %M", *cmd], capture_output=True, text=True)
    wall, user, sys_, kb = out.stderr.strip().splitlines()[-1].split()
    print(f"{label}: {float(wall):.2f} s wall, {float(user) + float(sys_):.2f} s CPU, {int(kb) // 1024} MB "
          f"(rc {out.returncode}; load {load().split()[0]})")
    return float(wall)


def repeated(cmd: list[str], label: str, n: int) -> None:
    walls = [timed(cmd, label) for _ in range(n)]
    if n >= 3:
        print(f"{label}: median {statistics.median(walls):.2f} s wall of {n}")


def cli(args) -> None:
    print("load", load())
    repeated([*PY, "--help"], "mediacluster --help", args.repeat)
    if args.model and args.image:
        repeated([*PY, "assign", args.model, args.image], "assign MODEL IMAGE", args.repeat)
    if args.evaluate:
        out = Path(tempfile.mkdtemp()) / "evaluation.json"
        repeated([*PY, "evaluate", args.evaluate, "--out", str(out)], "evaluate RUN", args.repeat)
    print("load", load())


def cmd(args) -> None:
    print("load", load())
    argv = [a for a in args.argv if a != "--"]
    repeated([*PY, *argv], "mediacluster " + " ".join(argv), args.repeat)
    print("load", load())


class Proc:
    """A server process, stopped with Ctrl+C when done (also on error)."""

    def __init__(self, cmd: list[str]):
        self.t0 = time.time()
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def wait_line(self, pattern: str, timeout: float = 600) -> re.Match:
        lines = []
        while time.time() - self.t0 < timeout:
            if select.select([self.p.stdout], [], [], 1.0)[0]:
                line = self.p.stdout.readline()
                lines.append(line)
                m = re.search(pattern, line)
                if m:
                    return m
            if self.p.poll() is not None:
                break
        raise SystemExit("the server did not start:\n" + "".join(lines))

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
            self.p.wait(60)


def request(base: str, path: str, data: bytes | None = None, headers: dict | None = None,
            method: str | None = None) -> tuple[float, bytes]:
    t = time.time()
    req = urllib.request.Request(base + path, data=data, headers=headers or {}, method=method)
    with urllib.request.urlopen(req, timeout=600) as r:
        body = r.read()
    return time.time() - t, body


def show(what: str, dt: float, body: bytes) -> bytes:
    print(f"{what}: {dt * 1000:.0f} ms, {len(body)} B")
    return body


def server(args) -> None:
    print("load", load())
    if args.kind == "studio":
        proc = Proc([*PY, "studio", args.run, "--port", "0", "--no-browser"])
        try:
            url = proc.wait_line(r"studio: listening on (\S+)").group(1)
            print(f"listening after {time.time() - proc.t0:.2f} s")
            base = url.split("?", 1)[0].rstrip("/")
            tok = re.search(r"token=([^&\s]+)", url)
            h = {"Authorization": f"Bearer {tok.group(1)}"} if tok else {}
            post = {**h, "Content-Type": "application/json", "X-Mediacluster": "1"}
            for path in ("/", "/api/info", "/api/map", "/api/labels", "/api/clusters", "/api/clusters"):
                show(f"GET {path}", *request(base, path, headers=h))
            ids = [c["id"] for c in json.loads(request(base, "/api/clusters", headers=h)[1])["clusters"]][:2]
            body = json.dumps({"kind": "merge", "clusters": ids, "into": ids[0]}).encode()
            show("POST merge", *request(base, "/api/edits", body, post))
            show("GET /api/clusters after it", *request(base, "/api/clusters", headers=h))
            show("POST undo", *request(base, "/api/undo", b"{}", post))
            show("GET /api/clusters after it", *request(base, "/api/clusters", headers=h))
        finally:
            proc.stop()
    else:
        proc = Proc([*PY, "serve", args.run, "--port", str(args.port)])
        base = f"http://127.0.0.1:{args.port}"
        try:
            while True:
                try:
                    request(base, "/readyz")
                    break
                except (urllib.error.URLError, ConnectionError):
                    if proc.p.poll() is not None:
                        raise SystemExit(proc.p.stdout.read()) from None
                    time.sleep(0.05)
            print(f"ready after {time.time() - proc.t0:.2f} s")
            body = json.dumps({"vectors": [[0.01 * (i % 7) for i in range(args.dim)]]}).encode()
            for k in range(3):
                show(f"POST /v1/assign #{k}", *request(base, "/v1/assign", body, {"Content-Type": "application/json"}))
            show("GET /v1/clusters", *request(base, "/v1/clusters"))
        finally:
            proc.stop()
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"server CPU {ru.ru_utime + ru.ru_stime:.1f} s, peak RSS {ru.ru_maxrss // 1024} MB; load {load()}")


def until(drv, script: str, t0: float, timeout: float = 300) -> float:
    while not drv.execute_script(script) and time.time() - t0 < timeout:
        time.sleep(0.05)
    return time.time() - t0


def report_page(args) -> None:
    print("load", load())
    drv = chromium()
    try:
        for k in range(2):
            t0 = time.time()
            drv.get(Path(args.html).resolve().as_uri())
            dt = until(drv, "return window.mcReport && window.mcReport.firstPaintMs", t0)
            fp, heap = drv.execute_script("return [window.mcReport.firstPaintMs, "
                                          "performance.memory ? performance.memory.usedJSHeapSize : 0]")
            print(f"open #{k}: map drawn after {dt:.2f} s (page's firstPaintMs {fp:.0f}), JS heap {heap / 1e6:.0f} MB")
    finally:
        drv.quit()
    print("load", load())


def studio_page(args) -> None:
    print("load", load())
    proc = Proc([*PY, "studio", args.run, "--port", "0", "--no-browser"])
    drv = None
    try:
        url = proc.wait_line(r"studio: listening on (\S+)").group(1)
        print(f"listening after {time.time() - proc.t0:.2f} s")
        drv = chromium()
        for k in range(2):
            t0 = time.time()
            drv.get(url)
            dt = until(drv, "const s = window.mcStudio; return s && s.firstPaint !== null && s.busy === 0 && s.L !== null", t0)
            print(f"page #{k} loaded after {dt:.2f} s (firstPaint {drv.execute_script('return window.mcStudio.firstPaint'):.0f} ms)")
    finally:
        if drv is not None:
            drv.quit()
        proc.stop()
    print("load", load())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("cli")
    p.add_argument("--model", help="a run or model folder for assign")
    p.add_argument("--image", help="an image file for assign")
    p.add_argument("--evaluate", help="a run folder for evaluate")
    p.add_argument("--repeat", type=int, default=2, help="runs of each command (default 2)")
    p.set_defaults(fn=cli)
    p = sub.add_parser("cmd")
    p.add_argument("--repeat", type=int, default=3, help="runs (default 3)")
    p.add_argument("argv", nargs=argparse.REMAINDER, help="the mediacluster command line, after --")
    p.set_defaults(fn=cmd)
    p = sub.add_parser("server")
    p.add_argument("kind", choices=["studio", "serve"])
    p.add_argument("run")
    p.add_argument("--dim", type=int, default=1280, help="the model's vector dimension (serve)")
    p.add_argument("--port", type=int, default=8766)
    p.set_defaults(fn=server)
    p = sub.add_parser("report-page")
    p.add_argument("html")
    p.set_defaults(fn=report_page)
    p = sub.add_parser("studio-page")
    p.add_argument("run")
    p.set_defaults(fn=studio_page)
    args = ap.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
