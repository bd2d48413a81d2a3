"""int8 EfficientNet-Lite0 (``efficientnet-lite0-int8``) against the float default.

Parts (each saves ``benchmarks/out/quantize/<part>.json``; ``--write`` rebuilds the
"Quantized encoder" section of RESULTS.md from whatever parts are saved):

* ``variants``: every recipe (QDQ / QOperator x per-channel / per-tensor x u8 / s8 activations,
  built-in calibration, batch-mean ranges), then the default recipe with whole-set MinMax ranges
  and with 320 other CIFAR-10 train images as a user calibration slice; model only: CPU ms and wall ms per image, one intra-op thread, batch 16, on real 224x224
  crops; and its fidelity on a development slice that no evaluation uses: 500 CIFAR-10 *train*
  images (50 per class, seed 0): cosine between its and the float model's embedding, and ImageNet
  top-1 agreement. Making each model (export + calibration) is not timed.
* ``threads``: the float and the default int8 model under the thread settings the package can
  use (1 thread, 2 threads, 2 concurrent single-thread calls), model only, batch 16.
* ``speed``: end to end through the package's own path (``embed_collection_cached``: hashing,
  parallel decoding, inference, SQLite writes, reading back), cold cache in a temporary folder,
  whole Imagenette val and CIFAR-10 test, float then int8 then float again (the machine is
  shared: the two float runs bracket the int8 one).
* ``quality``: every shared image set (Imagenette val, CIFAR-10 test, MNIST test, Sports-100,
  OpenMoji), embedded through the package with both encoders (``run.embed_collection``, the user
  embedding cache), then the same clusterings on both: ``Pipeline()`` (the default, not told k)
  and UMAP (the default's: 10 dims, 30 neighbours, min_dist 0, cosine, seed 0) + K-means told k.
  NMI over all items (``metrics.external_scores``); also ImageNet top-1 agreement and cosine
  with the float vectors, per set. ``--seeds`` adds the same clusterings with other seeds on
  the float vectors: the NMI spread that comes from the clustering alone, to read the
  float/int8 differences against.

Usage (timed parts under the shared benchmark lock)::

    flock /tmp/mc-bench.lock python benchmarks/quantize.py variants threads speed
    python benchmarks/quantize.py quality --seeds 1 2
    python benchmarks/quantize.py --write

Data: the archives in ``../shared/datasets`` extracted into ``benchmarks/out/quantize/data``
(gitignored), or ``--data DIR`` with the same sets already extracted (``DIR/imagenette/val``,
``DIR/cifar10/test``, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import _results
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = _results.SHARED
OUT = ROOT / "benchmarks" / "out" / "quantize"
SECTION = "## Quantized encoder (quant helper)"
FLOAT, INT8 = "efficientnet-lite0", "efficientnet-lite0-int8"
# name: (archive, folder inside it, label)
SETS = {
    "imagenette-val": ("imagenette-val.tar.gz", "imagenette/val", "Imagenette val"),
    "cifar10-test": ("cifar10-test.tar.gz", "cifar10/test", "CIFAR-10 test"),
    "mnist-test": ("mnist-test.tar.gz", "mnist/test", "MNIST test"),
    "sports100": ("sports100.tar.gz", "sports100/all", "Sports-100"),
    "openmoji": ("openmoji.tar.gz", "openmoji/groups", "OpenMoji"),
}
VARIANTS = [dict(quant_format=f, per_channel=pc, activation=a)
            for f in ("qdq", "qoperator") for pc in (True, False) for a in ("u8", "s8")]
# the default recipe with the other calibration choices
CALIBRATIONS = [dict(method="minmax"), dict(calibration="cifar10-train-slice")]


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def set_dir(name: str, data: Path | None) -> Path:
    archive, inner, _ = SETS[name]
    if data is not None:
        return data / inner
    from mediacluster.datasets import extract_slice

    dest = OUT / "data" / name
    if not (dest / ".extracted").exists():
        extract_slice(SHARED / archive, dest)
        (dest / ".extracted").write_text("ok\n")
    return dest


def dev_paths() -> list[str]:
    """500 CIFAR-10 train images (50 per class, seed 0): development only, never evaluated on."""
    from mediacluster.datasets import extract_slice

    dest = OUT / "data" / "cifar10-train-dev"
    got = extract_slice(SHARED / "cifar10-train.tar.gz", dest, per_class=50, seed=0)
    return sorted(p for p, _ in got)


def calibration_slice(exclude: list[str]) -> list[str]:
    """320 CIFAR-10 train images outside the development slice: a user-provided calibration slice."""
    from mediacluster.datasets import extract_slice

    got = extract_slice(SHARED / "cifar10-train.tar.gz", OUT / "data" / "cifar10-train-calib", per_class=40, seed=1)
    ex = {Path(p).name for p in exclude}
    return sorted(p for p, _ in got if Path(p).name not in ex)[:320]


def save(part: str, obj) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{part}.json").write_text(json.dumps(obj, indent=1))


def load(part: str):
    p = OUT / f"{part}.json"
    return json.loads(p.read_text()) if p.exists() else None


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def time_model(enc, x: np.ndarray, reps: int) -> dict:
    enc.encode(list(x))  # load + warm up
    c, t = time.process_time(), time.perf_counter()
    for _ in range(reps):
        enc.encode(list(x))
    n = reps * len(x)
    cpu, wall = (time.process_time() - c) / n * 1000, (time.perf_counter() - t) / n * 1000
    return {"cpu_ms": cpu, "wall_ms": wall, "img_s": 1000 / wall, "load1": os.getloadavg()[0]}


def time_concurrent(enc, x: np.ndarray, calls: int, secs: float = 6.0) -> dict:
    enc.encode(list(x))
    stop = time.perf_counter() + secs
    counts = [0] * calls

    def work(i):
        while time.perf_counter() < stop:
            enc.encode(list(x))
            counts[i] += len(x)

    c, t = time.process_time(), time.perf_counter()
    ths = [threading.Thread(target=work, args=(i,)) for i in range(calls)]
    [h.start() for h in ths]
    [h.join() for h in ths]
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    return {"img_s": sum(counts) / wall, "cpu_ms": 1000 * cpu / sum(counts), "load1": os.getloadavg()[0]}


def crops(paths: list[str]) -> np.ndarray:
    from mediacluster.encoders import get_encoder

    enc = get_encoder(FLOAT)
    return np.stack([enc.prepare(p) for p in paths])


def encode_all(enc, x: np.ndarray, bs: int = 16) -> dict[str, np.ndarray]:
    outs = [enc.encode(list(x[i:i + bs])) for i in range(0, len(x), bs)]
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


# -- parts ---------------------------------------------------------------------------------

def part_variants(args) -> None:
    from mediacluster.encoders import get_encoder

    dev = crops(dev_paths())
    timing = dev[:16]
    ref = encode_all(get_encoder(FLOAT, backend="onnx", threads=1), dev)
    rows = [{"variant": "float", "id": get_encoder(FLOAT).id,
             **time_model(get_encoder(FLOAT, backend="onnx", threads=1), timing, args.reps),
             "cos_mean": 1.0, "cos_min": 1.0, "top1_agree": 1.0}]
    print(rows[-1], flush=True)
    dev_files = dev_paths()
    for v in VARIANTS + CALIBRATIONS:
        kw = dict(v)
        if kw.get("calibration") == "cifar10-train-slice":
            kw["calibration"] = calibration_slice(dev_files)
        enc = get_encoder(INT8, threads=1, **kw)
        t = time.perf_counter()
        enc.encode(list(timing[:1]))  # makes the model once (not timed)
        made = time.perf_counter() - t
        out = encode_all(enc, dev)
        cos = cosine(ref["embedding"], out["embedding"])
        agree = float((ref["imagenet_probs"].argmax(1) == out["imagenet_probs"].argmax(1)).mean())
        rows.append({"variant": f"{enc.quant_format} {'per-channel' if enc.per_channel else 'per-tensor'} "
                                f"{enc.activation} {enc.method}, calibration {v.get('calibration', 'builtin')}",
                     **v, "id": enc.id, "load_s": made,
                     **time_model(enc, timing, args.reps),
                     "cos_mean": float(cos.mean()), "cos_min": float(cos.min()), "top1_agree": agree})
        print(rows[-1], flush=True)
    save("variants", {"rows": rows, "dev_images": len(dev), "finished": _results.finished(),
                      "cmd": " ".join(sys.argv[1:])})


def part_threads(args) -> None:
    from mediacluster.encoders import get_encoder

    x = crops(dev_paths()[:16])
    rows = []
    for name in (FLOAT, INT8):
        r = {"encoder": name}
        for th in (1, 2):
            r[f"{th} thread(s)"] = time_model(get_encoder(name, threads=th, backend="onnx"), x, args.reps)
        r["2 concurrent calls x 1 thread"] = time_concurrent(get_encoder(name, threads=1, backend="onnx"), x, 2)
        rows.append(r)
        print(r, flush=True)
    save("threads", {"rows": rows, "finished": _results.finished()})


def embed_timed(paths: list[str], name: str, cache: Path) -> dict:
    from mediacluster.data import Collection
    from mediacluster.embed import embed_collection_cached
    from mediacluster.encoders import get_encoder

    enc = get_encoder(name)
    enc.encode([np.zeros((224, 224, 3), np.uint8)])  # load the model (not timed)
    coll = Collection(ids=list(paths), paths=list(paths))
    la = os.getloadavg()[0]
    c, t = time.process_time(), time.perf_counter()
    emb = embed_collection_cached(coll, enc, cache_dir=cache, progress=False)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    assert emb.cache_stats["encoded"] == len(paths)
    return {"encoder": name, "n": len(paths), "seconds": wall, "img_s": len(paths) / wall,
            "cpu_ms": 1000 * cpu / len(paths), "load1_before": la, "load1_after": os.getloadavg()[0],
            "timings": {k: round(v, 2) for k, v in emb.timings.items()}}


def part_speed(args) -> None:
    from mediacluster.ingest import collect

    rows = []
    for name in ("imagenette-val", "cifar10-test"):
        paths = [str(p) for p in collect(set_dir(name, args.data)).paths]
        runs = []
        with tempfile.TemporaryDirectory(prefix="mc-quant-") as tmp:
            for i, enc in enumerate((FLOAT, INT8, FLOAT)):
                runs.append(embed_timed(paths, enc, Path(tmp) / f"cache{i}"))
                print(name, runs[-1], flush=True)
        rows.append({"set": name, "runs": runs})
    save("speed", {"rows": rows, "finished": _results.finished(),
                   "load_after": loadavg()})


def cluster_both(X: np.ndarray, y: list[str], seed: int) -> dict:
    from mediacluster.metrics import external_scores
    from mediacluster.pipeline import Pipeline
    from mediacluster.stages.cluster import KMeansClusterer

    k = len(set(y))
    c, t = time.process_time(), time.perf_counter()
    p = Pipeline(random_state=seed).fit(X)
    labels = p.cluster_ if getattr(p, "cluster_", None) is not None else p.labels_
    Z = p.embedding_ if getattr(p, "embedding_", None) is not None else p.reducer_.transform(X)
    default = external_scores(y, labels)
    km = KMeansClusterer(n_clusters=k, random_state=seed).fit(Z)  # same UMAP space
    told = external_scores(y, km.labels_)
    return {"default_nmi": default["all"]["nmi"], "default_k": default["n_clusters"],
            "told_k_nmi": told["all"]["nmi"], "cpu_s": time.process_time() - c,
            "wall_s": time.perf_counter() - t, "load1": os.getloadavg()[0]}


def part_quality(args) -> None:
    from mediacluster.embed import embed_collection
    from mediacluster.ingest import collect

    res = load("quality") or {"sets": {}}
    for name in args.sets:
        coll = collect(set_dir(name, args.data), labels_from_folders=True)
        embs = {e: embed_collection(coll, encoder=e, progress=False) for e in (FLOAT, INT8)}
        f, q = embs[FLOAT], embs[INT8]
        assert f.ids == q.ids, "both encoders must keep the same items"
        y = [str(v) for v in f.labels]
        cos = cosine(f.vectors, q.vectors)
        agree = float((f.extras["imagenet_probs"].argmax(1) == q.extras["imagenet_probs"].argmax(1)).mean())
        row = {"n": len(y), "k": len(set(y)), "skipped": len(f.skipped), "cos_mean": float(cos.mean()),
               "cos_p01": float(np.quantile(cos, 0.01)), "top1_agree": agree,
               "float": cluster_both(f.vectors, y, 0), "int8": cluster_both(q.vectors, y, 0)}
        for s in args.seeds:
            row[f"float_seed{s}"] = cluster_both(f.vectors, y, s)
            row[f"int8_seed{s}"] = cluster_both(q.vectors, y, s)
        res["sets"][name] = row
        print(name, json.dumps(row), flush=True)
        res["finished"] = _results.finished()
        res["int8_id"] = q.encoder_version
        save("quality", res)


# -- RESULTS.md -----------------------------------------------------------------------------

def markdown() -> str:
    lines = [SECTION, ""]
    v, th, sp, qu = load("variants"), load("threads"), load("speed"), load("quality")
    if v:
        lines += [f"Recipes, model only (`flock /tmp/mc-bench.lock python benchmarks/quantize.py variants`, "
                  f"finished {v['finished']}): one intra-op thread, batch 16 of real crops; fidelity on "
                  f"{v['dev_images']} CIFAR-10 *train* images (development slice, not an evaluation set). Wall rates are "
                  "the share of the 2 shared cores each row got (other agents' jobs ran); compare CPU ms per image.", "",
                  "| recipe | CPU ms / img | wall img/s | load | cosine with float: mean / min | ImageNet top-1 agreement |",
                  "|---|---|---|---|---|---|"]
        for r in v["rows"]:
            lines.append(f"| {r['variant']} | {r['cpu_ms']:.2f} | {r['img_s']:.1f} | {r['load1']:.1f} | "
                         f"{r['cos_mean']:.4f} / {r['cos_min']:.4f} | {r['top1_agree']:.3f} |")
        lines.append("")
    if th:
        lines += [f"Thread settings, model only, batch 16 (`... quantize.py threads`, finished {th['finished']}): "
                  "img/s (CPU ms / img, load).", "",
                  "| encoder | 1 thread | 2 threads | 2 concurrent calls x 1 thread (the package's default) |",
                  "|---|---|---|---|"]
        for r in th["rows"]:
            cells = [f"{r[k]['img_s']:.1f} ({r[k]['cpu_ms']:.2f}, {r[k]['load1']:.1f})"
                     for k in ("1 thread(s)", "2 thread(s)", "2 concurrent calls x 1 thread")]
            lines.append(f"| {r['encoder']} | " + " | ".join(cells) + " |")
        lines.append("")
    if sp:
        lines += [f"End to end through `embed_collection_cached` (hash, decode, encode, cache writes, read back), "
                  f"cold cache, default settings (`... quantize.py speed`, finished {sp['finished']}); float, "
                  "int8, float again in that order:", "",
                  "| set | images | float img/s (CPU ms/img) | int8 img/s (CPU ms/img) | float again | speed-up wall / CPU | load before each |",
                  "|---|---|---|---|---|---|---|"]
        for r in sp["rows"]:
            a, b, c = r["runs"]
            fl_wall = (a["img_s"] + c["img_s"]) / 2
            fl_cpu = (a["cpu_ms"] + c["cpu_ms"]) / 2
            lines.append(f"| {SETS[r['set']][2]} | {a['n']} | {a['img_s']:.1f} ({a['cpu_ms']:.2f}) | "
                         f"**{b['img_s']:.1f}** ({b['cpu_ms']:.2f}) | {c['img_s']:.1f} ({c['cpu_ms']:.2f}) | "
                         f"{b['img_s'] / fl_wall:.2f}x / {fl_cpu / b['cpu_ms']:.2f}x | "
                         f"{a['load1_before']:.1f}, {b['load1_before']:.1f}, {c['load1_before']:.1f} |")
        lines.append("")
    if qu:
        int8_id = qu.get("int8_id", "")
        if "@" not in int8_id:  # runs before the id was recorded: the default recipe's id
            from mediacluster.encoders import get_encoder

            int8_id = get_encoder(INT8).id
        seeds = sorted({int(k.split("seed")[1]) for r in qu["sets"].values() for k in r if k.startswith("float_seed")})
        lines += [f"Quality, every shared image set, same clusterings on both (`python benchmarks/quantize.py "
                  f"quality --seeds {' '.join(map(str, seeds))}`, finished {qu['finished']}; not timed); int8 id "
                  f"`{int8_id}`. NMI over all items; default = `Pipeline(random_state=s)` (not "
                  "told k), told k = K-means with the true k (same seed) on that pipeline's UMAP space. Seed 0 is "
                  "the package default; the mean over seeds 0, " + ", ".join(map(str, seeds)) + " and the float "
                  "spread (max - min over the seeds) show how much of a change the clustering's own randomness "
                  "makes.", "",
                  "| set | n | ImageNet top-1 agreement | cosine mean / 1st percentile | default NMI seed 0: float / int8 (k) | change | "
                  "3-seed mean: float / int8 | change | float spread | told-k NMI seed 0: float / int8 | change | "
                  "3-seed mean change | float spread |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

        def runs(r, enc, key):
            return [r[enc][key]] + [r[f"{enc}_seed{s}"][key] for s in seeds if f"{enc}_seed{s}" in r]

        for name, r in qu["sets"].items():
            f, q = r["float"], r["int8"]
            fd, qd = runs(r, "float", "default_nmi"), runs(r, "int8", "default_nmi")
            ft, qt = runs(r, "float", "told_k_nmi"), runs(r, "int8", "told_k_nmi")
            cells = [SETS[name][2], str(r["n"]), f"{r['top1_agree']:.3f}", f"{r['cos_mean']:.4f} / {r['cos_p01']:.4f}",
                     f"{f['default_nmi']:.3f} ({f['default_k']}) / {q['default_nmi']:.3f} ({q['default_k']})",
                     f"{q['default_nmi'] - f['default_nmi']:+.3f}",
                     f"{np.mean(fd):.3f} / {np.mean(qd):.3f}", f"{np.mean(qd) - np.mean(fd):+.3f}",
                     f"{max(fd) - min(fd):.3f}",
                     f"{f['told_k_nmi']:.3f} / {q['told_k_nmi']:.3f}", f"{q['told_k_nmi'] - f['told_k_nmi']:+.3f}",
                     f"{np.mean(qt) - np.mean(ft):+.3f}", f"{max(ft) - min(ft):.3f}"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if sp and qu:
        lines += decision(sp, qu)
    lines += NOTES
    return "\n".join(lines)


def decision(sp: dict, qu: dict) -> list[str]:
    """The issue's rule: default if >= 1.5x faster end to end and NMI loss <= 0.005 on every set."""
    speed = [r["runs"][1]["img_s"] / ((r["runs"][0]["img_s"] + r["runs"][2]["img_s"]) / 2) for r in sp["rows"]]
    cpu = [((r["runs"][0]["cpu_ms"] + r["runs"][2]["cpu_ms"]) / 2) / r["runs"][1]["cpu_ms"] for r in sp["rows"]]
    losses = []
    for name, r in qu["sets"].items():
        for key, what in (("default_nmi", "default"), ("told_k_nmi", "told k")):
            d = r["float"][key] - r["int8"][key]
            if d > 0.005:
                losses.append(f"{SETS[name][2]} {what} -{d:.3f}")
    fast = min(min(speed), min(cpu)) >= 1.5
    ok = fast and not losses
    return [f"**Rule (issue 15, item 2): default if >= 1.5x faster end to end and NMI loss <= 0.005 on every "
            f"set. Speed-up end to end {min(speed):.2f}-{max(speed):.2f}x wall, {min(cpu):.2f}-{max(cpu):.2f}x CPU "
            f"({'met' if fast else 'missed'}); NMI losses over 0.005 at seed 0: "
            f"{'; '.join(losses) if losses else 'none'}. -> "
            f"{'made the default' if ok else 'kept as an option (`--encoder efficientnet-lite0-int8`), not the default'}.**",
            ""]


NOTES = [
    "Reading:",
    "",
    "- The int8 model is made once per machine (about 20-60 s on the shared 2 cores: quantization "
    "pre-processing, calibration on the 320 built-in images, quantization) next to the float export in "
    "`~/.cache/mediacluster/onnx/` and loads in under a second afterwards; 8.9 MB (the 1280x1000 "
    "classifier stays float, 5 MB of it) against 18.6 MB.",
    "- QDQ and QOperator give the same numbers and the same speed with uint8 activations; QDQ is kept "
    "(ONNX Runtime fuses it into the same int8 kernels, and other runtimes read it). int8 (s8) activations "
    "have no fast x86 kernel here: QDQ 1.9x the CPU time of u8, QOperator 13x. Per-tensor weight scales "
    "ruin the model (cosine 0.65, top-1 agreement 0.16): depthwise-convolution channels differ by orders "
    "of magnitude in range, so per-channel weights are required.",
    "- Calibration images matter less than the range rule: 320 CIFAR-10 train images (a user slice of "
    "the kind the tested collections hold) beat the built-in set by 0.002 in mean cosine on CIFAR "
    "images; taking each tensor's range as the mean of per-batch extremes instead of the whole set's "
    "extremes gains 0.003. The built-in set needs nothing but the installed packages and is the same on "
    "every machine; `calibration=FOLDER` (Python API) calibrates on the user's own images instead.",
    "- The losses are largest where the images are furthest from ImageNet photos (MNIST: top-1 agreement "
    "0.69, CIFAR-10's 32 px images 0.75, against 0.96 on Imagenette photos; mean cosine 0.977-0.980 "
    "against 0.991-0.994 on the photo and emoji sets).",
    "- Thread settings keep their float ranking with int8 kernels: one intra-op thread per call, two "
    "calls at once on 2 cores; two threads per call cost 12% (int8) to 20% (float) more CPU per image "
    "(the threads wait for each other at every operator) and were not faster in wall time.",
    "- Numbers depend on the CPU: this VM has AVX512-VNNI. On x86 CPUs without VNNI, ONNX Runtime's "
    "u8 x s8 kernels use VPMADDUBSW, which can saturate (ONNX Runtime's own `reduce_range` advice); the "
    "encoder id records the ONNX Runtime version and recipe, not the CPU, so such a machine's int8 vectors "
    "can differ slightly from these under the same id.",
    "",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("parts", nargs="*", help="variants, threads, speed, quality (none: only --write)")
    ap.add_argument("--data", type=Path, default=None, help="folder with the sets already extracted")
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    ap.add_argument("--seeds", nargs="*", type=int, default=[], help="extra clustering seeds on float vectors")
    ap.add_argument("--reps", type=int, default=8)
    _results.add_common_args(ap)
    args = ap.parse_args()
    bad = set(args.parts) - {"variants", "threads", "speed", "quality"}
    if bad:
        ap.error(f"unknown parts {sorted(bad)}")
    for part in args.parts:
        print(f"== {part} (load {loadavg()})", flush=True)
        globals()[f"part_{part}"](args)
    if args.write:
        extra = (Path(OUT / "notes.md").read_text() if (OUT / "notes.md").exists() else "")
        _results.write_section(SECTION, markdown() + ("\n" + extra if extra else ""))


if __name__ == "__main__":
    main()
