"""How sure are the automatic names, and does "sure" separate right names from wrong ones?

For every shared image set: the default ``Pipeline()`` is fitted on the default encoder's vectors
and every level is named as the cluster job names it (``workflow.name_fit``), each name carrying
its support (``naming.support``: the chance-corrected probability the encoder gives the name on
the cluster's items against the whole collection, and the null of random groups of the same
size). Per set, for the level in use and for all levels together:

* ``sure``       the share of names judged sure;
* ``acceptable`` (Imagenette, CIFAR-10: classes are WordNet synsets) the share of acceptable
                 names among the sure ones and among the unsure ones (acceptable: the name's
                 synset, or one of a composite name's parts, is the cluster's majority class or a
                 hypernym of it: ``benchmarks/level_names.py``'s measure). A measure that
                 separates them has the first well above the second;
* OpenMoji and MNIST (no ImageNet concept is right for drawn emoji or digits): the share judged
  unsure should be high; Sports-100 is reported as is;
* ``null``       the 95th percentile of the support random groups of 1, 2, 4, ..., 64 items of
                 the set earn (what a name must exceed besides ``SURE``);
* ``support s``  the time to measure every level's names (a fresh measure: collection means,
                 null draws, per-cluster sums).

Usage::

    python benchmarks/name_support.py [--sets imagenette ...] [--write]
    python benchmarks/name_support.py --vectors-from /work/vec   # development: DIR/<set>.npz
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from level_names import SETS, head_synset, load, truth_of  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "name_support"
SECTION = "## How sure a name is (namesure helper)"


def acceptable(entry: dict, items: np.ndarray, labels: np.ndarray, truth: dict[str, str]) -> bool | None:
    from mediacluster.naming import wordnet as wn

    v, cnt = np.unique(labels[items], return_counts=True)
    cls = truth.get(str(v[np.argmax(cnt)]))
    if cls is None:
        return None
    c0 = (entry.get("candidates") or [{}])[0]
    syns = [p["synset"] for p in c0.get("parts", [])] if c0.get("composite") else [head_synset(entry)]
    up = wn.hypernym_closure(cls) | {cls}
    return any(s in up for s in syns if s)


def run_set(name: str, args) -> dict:
    from mediacluster.naming.support import NULL_MAX_SIZE, ImagenetSupport
    from mediacluster.pipeline import Pipeline
    from mediacluster.stages.cluster import single_blas_thread
    from mediacluster.workflow import name_fit

    X, P, labels, source = load(name, args.data, args.vectors_from)
    pipe = Pipeline().fit(X)
    flat = np.asarray(pipe.labels_)
    with single_blas_thread():  # as the cluster job names
        named, by_level = name_fit(pipe, X, flat, P)
        t = time.perf_counter()
        m = ImagenetSupport(P)
        for k in by_level:
            m.of({e["cluster"]: e["candidates"] for e in by_level[k]}, np.where(flat >= 0, pipe.levels_[k], -1))
        t_support = time.perf_counter() - t
        null = {b: round(m.null_quantile(b), 3) for b in [1 << i for i in range(NULL_MAX_SIZE.bit_length())]}
    truth = truth_of(name, labels)
    levels, use = np.asarray(pipe.levels_), int(pipe.level_)
    rows = []
    for k, es in by_level.items():
        for e in es:
            items = (levels[k] == e["cluster"]) & (flat >= 0)
            rows.append({"level": k, "in_use": k == use, "cluster": e["cluster"], "name": e["name"],
                         "n": int(items.sum()), "support": e.get("name_support"), "sure": e.get("name_sure"),
                         "ok": acceptable(e, items, labels, truth) if truth else None})
    res = {"set": name, "n": len(X), "levels": len(levels), "level": use, "source": source,
           "support_s": round(t_support, 2), "null": null, "rows": rows,
           "in_use_names": [(e["name"], e.get("name_support"), e.get("name_sure")) for e in named]}
    print(f"[{name}] {summary_line(res)}", file=sys.stderr, flush=True)
    return res


def _stats(rows: list[dict]) -> dict:
    sure = [r for r in rows if r["sure"]]
    uns = [r for r in rows if r["sure"] is False]
    out = {"names": len(rows), "sure": len(sure), "unsure": len(uns)}
    if rows and rows[0]["ok"] is not None:
        for key, rs in (("ok_sure", sure), ("ok_unsure", uns)):
            known = [r["ok"] for r in rs if r["ok"] is not None]
            out[key] = (sum(known), len(known))
    return out


def summary_line(res: dict) -> str:
    use = _stats([r for r in res["rows"] if r["in_use"]])
    return f"level in use: {use['sure']} of {use['names']} sure; support measured in {res['support_s']} s"


def _frac(x) -> str:
    if not x or not x[1]:
        return "-"
    return f"{x[0] / x[1]:.2f} ({x[0]}/{x[1]})"


def table(results: list[dict]) -> str:
    head = ("| set | items | level in use: names / sure share | level in use: acceptable among sure / unsure "
            "| all levels: names / sure share | all levels: acceptable among sure / unsure "
            "| null q95 at 1, 2, 4, ... 64 items | support s |")
    out = [head, "|" + "---|" * 8]
    for r in results:
        u = _stats([x for x in r["rows"] if x["in_use"]])
        a = _stats(r["rows"])
        out.append(
            f"| {r['set']} | {r['n']} | {u['names']} / {u['sure'] / max(u['names'], 1):.2f} "
            f"| {_frac(u.get('ok_sure'))} / {_frac(u.get('ok_unsure'))} "
            f"| {a['names']} / {a['sure'] / max(a['names'], 1):.2f} "
            f"| {_frac(a.get('ok_sure'))} / {_frac(a.get('ok_unsure'))} "
            f"| {', '.join(f'{v:.2f}' for v in r['null'].values())} | {r['support_s']} |")
    lines = []
    for r in results:
        shown = ", ".join(f"{n!r} {s:.2f}{'' if ok else '?'}" for n, s, ok in r["in_use_names"][:8] if s is not None)
        lines.append(f"- {r['set']} (level {r['level']} of {r['levels']}, largest first: name, support, ? = unsure): "
                     f"{shown}{' …' if len(r['in_use_names']) > 8 else ''}")
    return "\n".join(out) + "\n\n" + "\n".join(lines)


NOTE = """Reading: see the paragraph below the table (kept in this script's NOTE)."""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", nargs="+", default=[s for s in SETS if s != "cifar10-train"], choices=list(SETS))
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("MEDIACLUSTER_DATA", "/work/data")))
    ap.add_argument("--vectors-from", type=Path, default=None)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    load0 = open("/proc/loadavg").read().split()[:3]
    results = [run_set(s, args) for s in args.sets]
    load1 = open("/proc/loadavg").read().split()[:3]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(results, indent=1))
    text = table(results)
    print(text)
    if args.write:
        from _results import write_section

        cmd = "python benchmarks/name_support.py" + (" --vectors-from DIR" if args.vectors_from else "")
        block = (f"{SECTION}\n\nCommand: `flock /tmp/mc-bench.lock {cmd} --write` (default encoder, "
                 f"default `Pipeline()`, every level named by `workflow.name_fit` as the cluster job "
                 f"does; vectors: {results[0]['source'] if results else '-'}; 2 shared CPU cores; load "
                 f"average {' '.join(load0)} before, {' '.join(load1)} after).\n\n{text}\n\n{NOTE}\n")
        write_section(SECTION, block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
