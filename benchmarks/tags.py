"""Tags benchmark: CIFAR-10 train (50,000) -> test (10,000) with the default encoder.

Data: the whole CIFAR-10 train and test splits, read from ``../shared/datasets`` with
``mediacluster.datasets.extract_slice`` and embedded through the package
(``mediacluster.embed.embed_collection``, default encoder, through the shared embedding cache,
so a rerun does not touch the encoder); the images are extracted once under
``benchmarks/out/tags/``.

For each model (``logreg``: the calibrated linear baseline; ``mlp``: one hidden layer) and target
precision (0.9, 0.95): fit ``TagClassifier`` on train (holdout validation 25%, seed 0, thresholds
chosen on it with a 95% Clopper-Pearson margin), then on the 10,000 test images report
accuracy, balanced accuracy, coverage at the validation thresholds and the precision measured
there (with its 95% interval), and the oracle coverage a threshold tuned on test itself would
reach. Then the suggestion latency of one image end to end (decode + preprocess + encoder +
classifier), warm process, ``--latency-n`` single-image calls: p50 / p95.

Usage::

    python benchmarks/tags.py --write-results

(the latency part takes ``/tmp/mc-bench.lock`` itself, so that the long model fits do not hold
the shared lock that other timed benchmarks wait on).

``--embed-only`` extracts and embeds, then stops. ``--vectors-from DIR`` (development only, NOT
used for the committed table) reads ``DIR/cifar10-{train,test}.npz`` instead of embedding.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import _results
import numpy as np
import quality  # a shared set's vectors as the quality benchmark gets them

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Tags benchmark (tags helper)"
LOCK = "/tmp/mc-bench.lock"
SPLITS = {"cifar10-train": "cifar10-train.tar.gz", "cifar10-test": "cifar10-test.tar.gz"}


def load_split(name: str, out: Path, shared: Path, vectors_from: Path | None, progress: bool):
    if vectors_from is not None:
        d = np.load(vectors_from / f"{name}.npz", allow_pickle=False)
        return d["vectors"].astype(np.float32), [str(v) for v in d["labels"]], [str(v) for v in d["ids"]], "dev"
    emb = quality.embedded(name, shared / SPLITS[name], out / "tags" / "data" / name, progress)
    return emb.vectors, list(emb.labels), list(emb.paths), f"embedded by {emb.encoder_version}"


def fit_eval(model: str, targets: list[float], Xtr, ytr, Xte, yte, seed: int, C: float) -> list[dict]:
    """Fit once (holdout validation), then choose thresholds and evaluate for each target."""
    from mediacluster.tags import TagClassifier
    from mediacluster.tags.evaluate import evaluate_tagger

    t = time.perf_counter()
    clf = TagClassifier(model=model, C=C, precision=targets[0], validation="holdout", random_state=seed)
    clf.fit(Xtr, ytr)
    fit_s = time.perf_counter() - t
    proba = clf.predict_proba(Xte)
    rows = []
    for target in targets:
        clf.set_precision(target)
        res = evaluate_tagger(clf, Xte, yte, proba=proba)
        a = res["abstention"]
        rows.append({
            "model": model, "C": C if model == "logreg" else None, "target": target, "fit_s": fit_s,
            "accuracy": res["accuracy"], "balanced_accuracy": res["balanced_accuracy"],
            "val_coverage": clf.validation_["coverage"], "val_precision": clf.validation_["precision"],
            "coverage": a["coverage"], "precision": a["precision"], "precision_ci": a["precision_ci"],
            "oracle_coverage": res["oracle_coverage_at_precision"][str(target)]["coverage"],
            "threshold_mode": clf.threshold_mode_, "temperature": clf.temperature_,
            "ece_before": clf.calibration_["ece_before"], "ece_after": clf.calibration_["ece_after"],
            "_clf": clf, "_res": res,
        })
    clf.set_precision(targets[0])
    return rows


def latency(model_dir: Path, paths: list[str], n: int, tta: bool = False, lock_wait: float = 600) -> dict:
    """Single-image suggestion latency in a warm process (decode included)."""
    import fcntl

    from mediacluster.tags import Tagger

    tagger = Tagger.load(model_dir).warm_up()
    for p in paths[:5]:  # warm caches, first calls
        tagger.suggest([p], tta=tta)
    times, cpu = [], []
    # only the timed part holds the shared benchmark lock (one timed benchmark at a time)
    with open(LOCK, "a") as lock:
        t_wait = time.perf_counter()
        locked = False
        while time.perf_counter() - t_wait < lock_wait:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
                break
            except BlockingIOError:
                time.sleep(0.5)
        waited = time.perf_counter() - t_wait
        load = os.getloadavg()
        for p in paths[:n]:
            t, c = time.perf_counter(), time.process_time()
            tagger.suggest([p], tta=tta)
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    ms = np.asarray(times) * 1000
    enc = tagger.encoder
    return {"n": len(ms), "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "mean_ms": float(ms.mean()), "cpu_p50_ms": float(np.percentile(np.asarray(cpu) * 1000, 50)),
            "cpu_p95_ms": float(np.percentile(np.asarray(cpu) * 1000, 95)), "tta": tta, "encoder": enc.info(),
            "loadavg": [round(x, 1) for x in load], "lock_wait_s": round(waited, 1),
            "locked": locked}


def fmt(x, d=3):
    return "-" if x is None else f"{x:.{d}f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out"))
    _results.add_data_args(ap, out=False)
    ap.add_argument("--vectors-from", default=None)
    ap.add_argument("--embed-only", action="store_true")
    ap.add_argument("--models", default="logreg,mlp")
    ap.add_argument("--C", type=float, default=0.1)
    ap.add_argument("--targets", default="0.9,0.95")
    ap.add_argument("--latency-n", type=int, default=200)
    ap.add_argument("--lock-wait", type=float, default=600,
                    help="seconds to wait for /tmp/mc-bench.lock before timing anyway (reported)")
    ap.add_argument("--write-results", action="store_true")
    ap.add_argument("--merge", action="store_true", help="keep rows of models not re-run from the last summary")
    _results.add_data_args(ap, out=False, shared=False, seed=True, quiet=True)
    args = ap.parse_args(argv)
    out, shared = Path(args.out), Path(args.shared)
    vf = Path(args.vectors_from) if args.vectors_from else None
    load0 = os.getloadavg()
    Xtr, ytr, _, src_tr = load_split("cifar10-train", out, shared, vf, not args.quiet)
    Xte, yte, pte, src_te = load_split("cifar10-test", out, shared, vf, not args.quiet)
    print(f"train {Xtr.shape} ({src_tr}), test {Xte.shape} ({src_te})", file=sys.stderr)
    if args.embed_only:
        return 0
    targets = [float(t) for t in args.targets.split(",")]
    rows = []
    for model in args.models.split(","):
        for r in fit_eval(model, targets, Xtr, ytr, Xte, yte, args.seed, args.C):
            rows.append(r)
            print(f"{model} target {r['target']}: acc {r['accuracy']:.4f} bal {r['balanced_accuracy']:.4f} "
                  f"coverage {r['coverage']:.3f} precision {fmt(r['precision'], 4)} "
                  f"(val cov {r['val_coverage']:.3f}) oracle cov {r['oracle_coverage']:.3f} "
                  f"fit {r['fit_s']:.0f}s", file=sys.stderr, flush=True)
    summary_path = out / "tags" / "summary.json"
    previous = json.loads(summary_path.read_text()) if args.merge and summary_path.exists() else {}
    if previous:  # rows of models not re-run this time
        done = {r["model"] for r in rows}
        rows = [r for r in previous["rows"] if r["model"] not in done] + rows
    # keep the stronger model only if it wins on balanced accuracy AND coverage at 0.9
    by = {(r["model"], r["target"]): r for r in rows}
    best = "logreg"
    if ("mlp", 0.9) in by and ("logreg", 0.9) in by:
        m, lr = by[("mlp", 0.9)], by[("logreg", 0.9)]
        if m["balanced_accuracy"] > lr["balanced_accuracy"] and m["coverage"] > lr["coverage"]:
            best = "mlp"
    first = next((r for r in rows if r["model"] == best and "_clf" in r), None)
    first = first or next(r for r in rows if "_clf" in r)
    model_dir = out / "tags" / "model"
    from mediacluster.tags import Tagger
    from mediacluster.tags.evaluate import write_evaluation

    enc_id = None
    try:
        from mediacluster.encoders import get_encoder

        enc_id = get_encoder("efficientnet-lite0").id
    except Exception:
        pass
    Tagger(first["_clf"], encoder="efficientnet-lite0", encoder_id=enc_id).save(model_dir)
    write_evaluation(first["_res"], out / "tags" / "eval")
    load1 = os.getloadavg()
    lat = None
    if vf is None and args.latency_n > 0:
        lat = latency(model_dir, pte, args.latency_n, lock_wait=args.lock_wait)
        lat_tta = latency(model_dir, pte, max(20, args.latency_n // 4), tta=True, lock_wait=args.lock_wait)
        print(f"latency: p50 {lat['p50_ms']:.1f} ms p95 {lat['p95_ms']:.1f} ms; with flip TTA "
              f"p50 {lat_tta['p50_ms']:.1f} ms ({lat['encoder']}), load {lat['loadavg']}", file=sys.stderr)
    load2 = os.getloadavg()
    if lat is None and previous.get("latency"):
        lat, lat_tta = previous["latency"], previous["latency_tta"]
    summary = {
        "rows": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows],
        "chosen": best, "latency": lat, "latency_tta": lat_tta if lat else None,
        "loadavg": {"start": load0, "before_latency": load1, "end": load2},
        "cpus": os.cpu_count(), "python": platform.python_version(),
    }
    (out / "tags").mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps(summary, indent=2))
    table = ["| model | target precision | accuracy | balanced acc. | coverage (test) | precision (test, 95% CI) "
             "| val. coverage | oracle coverage | ECE before -> after | fit s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ci = r["precision_ci"]
        table.append(f"| {r['model']} | {r['target']} | {r['accuracy']:.4f} | {r['balanced_accuracy']:.4f} | "
                     f"{r['coverage']:.3f} | {fmt(r['precision'], 4)} ({ci[0]:.3f}-{ci[1]:.3f}) | "
                     f"{r['val_coverage']:.3f} | {r['oracle_coverage']:.3f} | "
                     f"{r['ece_before']:.3f} -> {r['ece_after']:.3f} | {r['fit_s']:.0f} |")
    text = "\n".join(table)
    if lat:
        text += (f"\n\nSuggestion latency, one image end to end (decode + preprocess + encoder + classifier), "
                 f"warm process, {lat['n']} CIFAR test files: p50 {lat['p50_ms']:.1f} ms, p95 "
                 f"{lat['p95_ms']:.1f} ms (mean {lat['mean_ms']:.1f}); CPU time per call (process_time, "
                 f"all threads) p50 {lat['cpu_p50_ms']:.1f} ms, p95 {lat['cpu_p95_ms']:.1f} ms; with flip TTA p50 "
                 f"{lat_tta['p50_ms']:.1f} ms, p95 {lat_tta['p95_ms']:.1f} ms. Encoder: {lat['encoder']}. "
                 f"Load average while timing: {lat['loadavg']} (TTA: {lat_tta['loadavg']}); "
                 f"benchmark lock held while timing: {lat['locked']} (waited {lat['lock_wait_s']} s).")
    text += (f"\n\nKept model: {best}. Load average (1/5/15 min) at start {tuple(round(x, 1) for x in load0)}, "
             f"before latency {tuple(round(x, 1) for x in load1)}, end {tuple(round(x, 1) for x in load2)}; "
             f"{os.cpu_count()} CPUs.")
    _results.publish(SECTION, section_block(text), args.write_results and vf is None, show=False)
    print(text)
    return 0


NOTES = """How to read it: *coverage* is the share of test images that get a tag at the thresholds
chosen on the validation part (25% of train, never trained on) so that the 95% Clopper-Pearson
lower bound of validation precision reaches the target; *precision (test)* is what those
suggestions scored on the 10,000 unseen test images, with its 95% interval. *Oracle coverage* is
what a threshold tuned on the test set itself would reach at the same precision (an upper bound
the certified thresholds pay a margin against). ECE = expected calibration error of the top
confidence on validation, before -> after temperature scaling.

Test slice (the one `tests/test_tags.py` uses: 60/class CIFAR-10 train, seed 0 -> 50/class
test, seed 1; `mediacluster tags train TRAIN --eval TEST`): with 600 items the tagger cross-fits
(5 folds) instead of holding out, because a 150-item holdout certified no threshold at 0.9.
Accuracy = balanced accuracy 0.686 (chance 0.1); target 0.9 -> coverage 0.280 at measured
precision 0.936 (95% CI 0.881-0.970); oracle coverage 0.444. Validation ECE 0.075 -> 0.042.

Reading the rows: every certified operating point landed within its 95% interval of the target
on test (logreg at 0.9 measured 0.8975, CI 0.890-0.904: the target is inside, so "precision >=
target minus its statistical margin" holds, not "precision >= target" on every draw; the
validation set is a random 25% of CIFAR-10 *train*, and the bound is at 95% confidence). The
certified coverage is within 1.5 points of the oracle's. The MLP (one hidden layer of 256,
early stopping) beat the logistic baseline on balanced accuracy (0.805 vs 0.777) and on
coverage at both targets, so `TagClassifier(model="auto")` (the CLI default) uses it from
20,000 labelled items on; below that the logistic regression stays (on the 600-item test
slice the MLP covered 0.244 vs 0.280 at the same accuracy). Latency was measured with the
logistic model (the classifier is < 0.1 ms either way); one image end to end is ~9 ms wall,
~7 ms CPU, far under the 100 ms goal; flip TTA doubles the encoder work."""


def section_block(body: str) -> str:
    """Our ``## `` section of RESULTS.md around the table ``body``."""
    cmd = "python benchmarks/tags.py --write-results"
    return (f"{SECTION}\n\nCIFAR-10 train (50,000) -> test (10,000), default encoder, embedded through the "
            f"package. Command: `{cmd}` (MLP row: `{cmd} --models mlp --merge --latency-n 0`)\n\n"
            f"{body}\n\n{NOTES}\n\n")


if __name__ == "__main__":
    sys.exit(main())
