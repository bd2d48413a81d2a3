"""Label issues by neighbour vote: does the vote find flipped labels better than the cluster rule?

A seeded sample of ``--n`` items of a labelled set (default Imagenette val, 1,000 items), a
share ``--flip`` (5%) of them given another class at random (the known wrong labels), the
default ``Pipeline`` fitted on the vectors (the labels never seen), then
``evaluation.label_issues`` of the assigned labelling (what ``evaluate`` lists) with the
``evaluation.neighbour_vote`` of the noisy labels. Two rankings of the items, scored against the
flipped ones:

* ``cluster``: the items whose label is not their cluster's label (``cluster_disagrees``), in the
  rule's own order (least supported label first); the rest unranked (after them);
* ``vote``: every labelled item by ``neighbour_disagreement`` (share of its k nearest labelled
  items, cosine, carrying another label), highest first, ties by the cluster rule.

Precision / recall of each ranking's top N (N = half, once and twice the number flipped), and of
each rule's own flags (``cluster_disagrees``; outvoted: the neighbours' most voted label is not
the item's), mean over ``--seeds`` (each seed: another sample, other flips, another fit); and
``clearing``: of the items the cluster rule flags whose label is right (clustering mistakes), the
share the vote does not outvote.

    flock /tmp/mc-bench.lock python benchmarks/labelvote.py --vectors /work/vec/imagenette.npz \\
        /work/vec/cifar10-test.npz --seeds 0 1 2 3 4 --write-results
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402

SECTION = "## Label issues by neighbour vote (labelvote helper)"


def one(X, y, n, flip, k, seed) -> dict:
    from mediacluster.evaluation import label_issues, neighbour_vote
    from mediacluster.pipeline import Pipeline

    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(X), size=min(n, len(X)), replace=False))
    Xs, truth = X[rows], [str(v) for v in y[rows]]
    classes = sorted(set(truth))
    noisy = list(truth)
    flipped = rng.choice(len(rows), size=int(round(flip * len(rows))), replace=False)
    for i in flipped:
        noisy[i] = rng.choice([c for c in classes if c != truth[i]])
    wrong = np.zeros(len(rows), bool)
    wrong[flipped] = True
    (pipe, fit) = _results.timed(lambda: Pipeline(random_state=seed).fit(Xs))
    clusters = np.asarray(pipe.cluster_)
    (vote, tv) = _results.timed(lambda: neighbour_vote(Xs, noisy, k))
    table, _ = label_issues(noisy, clusters)  # the cluster rule alone, in its own order
    cl_rank = table["item"].to_numpy()
    cl_flag = np.zeros(len(rows), bool)
    cl_flag[cl_rank] = True
    # the vote ranks every item: highest disagreement first, the cluster rule's flag breaking ties
    order = np.lexsort((np.arange(len(rows)), ~cl_flag, -vote["disagreement"]))
    outvoted = np.array([vote["label"][i] != noisy[i] for i in range(len(rows))])
    m = int(wrong.sum())
    out = {"seed": seed, "n": len(rows), "flipped": m, "clusters": int(clusters.max()) + 1,
           "fit_s": round(fit["wall_s"], 1), "vote_s": round(tv["wall_s"], 3)}
    for N in (m // 2, m, 2 * m):
        for name, rank in (("cluster", cl_rank), ("vote", order)):
            hit = int(wrong[rank[:N]].sum())
            out[f"{name}@{N // max(m, 1) if N >= m else 'half'}"] = (hit / N, hit / m)
    for name, flag in (("cluster_flag", cl_flag), ("vote_flag", outvoted)):
        out[name] = (float(wrong[flag].mean()) if flag.any() else 0.0, float(flag[wrong].mean()),
                     int(flag.sum()))
    mistakes = cl_flag & ~wrong
    out["cluster_mistakes"] = int(mistakes.sum())
    out["clearing"] = float((~outvoted[mistakes]).mean()) if mistakes.any() else float("nan")
    return out


def markdown(res: dict) -> str:
    m = res["sets"][0]["rows"][0]["flipped"]
    lines = [SECTION, "", f"`{res['command']}` (1-min load average before: {res['loadavg']}, after: "
             f"{res['loadavg_after']}; 2 cores shared; {res['finished']}; vectors: the default encoder's, "
             "/work/vec (the sets' labels in the file)).", "",
             f"Protocol in benchmarks/labelvote.py's docstring: {res['n']} items per set, {100 * res['flip']:.0f}% "
             f"labels flipped ({m} items), default `Pipeline` on the vectors, assigned labelling, vote k = "
             f"{res['k']}; seeds {res['seeds']}, means over them (per seed below). P / R: precision / recall "
             "against the flipped items.", "",
             f"| set | ranking | P / R top {m // 2} | P / R top {m} | P / R top {2 * m} | its own flags: P / R (count) |",
             "|---|---|---|---|---|---|"]
    for st in res["sets"]:
        rows = st["rows"]

        def mean(key, j, rows=rows):
            return float(np.mean([r[key][j] for r in rows]))

        for name, flag in (("cluster disagreement (`cluster_disagrees`)", "cluster"),
                           ("neighbour vote (`neighbour_disagreement`)", "vote")):
            cells = [f"{mean(f'{flag}@{t}', 0):.2f} / {mean(f'{flag}@{t}', 1):.2f}" for t in ("half", 1, 2)]
            fk = "cluster_flag" if flag == "cluster" else "vote_flag"
            cells.append(f"{mean(fk, 0):.2f} / {mean(fk, 1):.2f} ({np.mean([r[fk][2] for r in rows]):.0f})")
            lines.append(f"| {st['name']} | {name} | " + " | ".join(cells) + " |")
    for st in res["sets"]:
        rows = st["rows"]
        lines += ["", f"{st['name']} ({st['source']}): clustering mistakes (flagged by the cluster rule, label "
                  "right) and the share the vote does not outvote: "
                  + ", ".join(f"seed {r['seed']}: {r['cluster_mistakes']}, {100 * r['clearing']:.0f}%"
                              for r in rows)
                  + f". Per seed (top {m} precision cluster / vote; clusters; fit s; vote s): "
                  + "; ".join(f"{r['seed']}: {r['cluster@1'][0]:.2f} / {r['vote@1'][0]:.2f}, {r['clusters']}, "
                              f"{r['fit_s']}, {r['vote_s']}" for r in rows) + "."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vectors", type=Path, nargs="+", required=True,
                    help="an .npz with 'vectors' and 'labels' (the default encoder's vectors of a labelled set)")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--flip", type=float, default=0.05)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--write-results", action="store_true", help="write the section into benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    res = {**_results.started("labelvote.py", argv), "n": args.n, "flip": args.flip, "k": args.k,
           "seeds": args.seeds, "sets": []}
    for path in args.vectors:
        d = np.load(path, allow_pickle=False)
        X, y = d["vectors"].astype(np.float32), np.asarray(d["labels"]).astype(str)
        st = {"name": path.stem, "source": f"{path}, {len(X)} items, {X.shape[1]}-d", "rows": []}
        for s in args.seeds:
            st["rows"].append(one(X, y, args.n, args.flip, args.k, s))
            print(path.stem, st["rows"][-1], file=sys.stderr)
        res["sets"].append(st)
    _results.finish(res, SECTION, markdown, args.write_results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
