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
import _results  # noqa: E402
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


NOTE = """Reading (namesure helper). The measure (`naming/support.py`) uses only what the naming already has, the items' ImageNet probabilities. Several label-free statistics were compared first on every level of Imagenette, CIFAR-10 test, OpenMoji and MNIST (acceptable names of the two labelled sets against the unacceptable ones and every OpenMoji / MNIST name, 5,160 names; ROC AUC, a development check, not committed): the encoder's full-softmax probability of the name on the cluster's items (the posterior of the concept's node, as hierarchical classifiers that "hedge their bets" report it) 0.85; the same minus the collection's 0.88; its ratio to the collection's 0.80; the mean maximum softmax probability of the items (Hendrycks & Gimpel's out-of-distribution baseline) 0.83 (it calls CIFAR-10's 32-px photos as unknown as emoji: mean 0.25 vs 0.22, yet "mammal" is right there); the share of items whose top class is under the name 0.67; **the chance-corrected form `(p_cluster - p_collection) / (1 - p_collection)` 0.91**, adopted as `name_support`. The reason it works: out of domain, the rule's concept is a fallback the encoder gives every item ("device" holds 47% of the probability of an average emoji, and 48% of a cluster of flags), so it sets no cluster apart; in domain the named concept is the cluster's and not the collection's ("tench" 80% against 8%).

The decision is stated, not fitted: sure = support at least 1/2 (the rule's `MIN_COVER`: the name is wrong, by the encoder's own probabilities, for at most half as many of the cluster's items as for the collection's) and above the 95th percentile of the same statistic for 40 random groups of the same size from the same collection, each named by the same rule (the `null` column: it is what a cluster of 1-8 items reaches by chance, since a single item supports its own top guess: 0.98 on Imagenette; above ~32 items it is far below 1/2 and the first condition decides). On the labelled sets sure names are acceptable more often than unsure ones at every level together (Imagenette 1.00 vs 0.94, CIFAR-10 0.86 vs 0.60) and at the level in use (CIFAR-10 1.00 vs 0.80; Imagenette's 3 unsure names, "springer spaniel" 0.47, "tool" 0.38 and a composite, are right but below 1/2: the encoder splits them over neighbouring classes). On the drawn sets almost every name is unsure: OpenMoji 25 of 26 at the level in use (the one sure, "tool · hook" 0.51 over 60 People & Body emoji, is a guess the measure lets through) and 98% of all levels; MNIST every name. The cost is the conservative side: CIFAR-10's level in use is 3 of 8 sure although 7 of 8 are acceptable, since 32-px images spread the encoder's probability ("wheeled vehicle" 0.33), and Sports-100 43%. Measuring every level's names from scratch costs 0.2-7.8 s per set in the run above (load average 7.5-8.8 on 2 cores; 0.4-3.4 s in an earlier run at load 6), mostly the null's lifts for names that reach 1/2 (Imagenette, Sports-100); in a development check at load 5-6, naming every level as the cluster job does took 0.1-1.9 s longer with the measure than without (Imagenette 0.5 -> 1.4-2.3 s, MNIST 2.4-2.9 -> 2.8-3.7 s). The statistic was picked on these same sets (no held-out set); the threshold was not tuned: in the development check a lower one would have called more of CIFAR-10 sure (1/3: 5 of 8 at its level in use, all acceptable; Imagenette all 14) at the cost of more guesses let through (OpenMoji 3 of 26), and 1/2 was kept because it is the rule's own constant. CLIP zero-shot names get the same fields on votes (not measured here: no CLIP model on the shared sets)."""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", nargs="+", default=[s for s in SETS if s != "cifar10-train"], choices=list(SETS))
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("MEDIACLUSTER_DATA", "/work/data")))
    ap.add_argument("--vectors-from", type=Path, default=None)
    _results.add_common_args(ap)
    args = ap.parse_args()
    load0 = _results.loadavg()
    results = [run_set(s, args) for s in args.sets]
    load1 = _results.loadavg()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(results, indent=1))
    text = table(results)
    print(text)
    if args.write:
        cmd = "python benchmarks/name_support.py" + (" --vectors-from DIR" if args.vectors_from else "")
        block = (f"{SECTION}\n\nCommand: `{cmd} --write` (default encoder, "
                 f"default `Pipeline()`, every level named by `workflow.name_fit` as the cluster job "
                 f"does; vectors: {results[0]['source'] if results else '-'}; 2 shared CPU cores; load "
                 f"average {load0} before, {load1} after).\n\n{text}\n\n{NOTE}\n")
        _results.write_section(SECTION, block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
