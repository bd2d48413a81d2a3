"""Scores of a tag model on labelled data, and the two pictures that explain it.

``evaluate_tagger(clf, X, y)`` returns accuracy and class-balanced accuracy of the top label
(no abstention), per-label precision/recall/F1 and support, the confusion matrix, and the
abstention result at the model's own thresholds: coverage, precision with its 95%
Clopper-Pearson interval, per-tag precision/coverage, plus the precision-coverage curve and the
coverage an oracle threshold on this very data would reach at precision 0.9 / 0.95.

``write_evaluation(result, out)`` writes ``metrics.json``, ``confusion.json``,
``confusion.png``, ``precision_coverage.json`` and ``precision_coverage.png``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..fileio import atomic_path, display_text, write_json
from .thresholds import clopper_pearson, coverage_at_precision, precision_coverage_curve


def evaluate_tagger(clf, X: np.ndarray, y, proba: np.ndarray | None = None) -> dict:
    from sklearn.metrics import (
        balanced_accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
    )

    # compared in text form: a saved model holds a tag named by a non-UTF-8 folder ('cl\udce9ss')
    # in escaped form ('cl\\xe9ss', fileio.json_text), the data read now holds it raw: every such
    # item was "a label the model does not know"
    y = np.asarray([display_text(v) for v in y])
    classes = [display_text(c) for c in clf.classes_]
    unknown = sorted({str(v) for v in y} - set(classes))  # str: numpy's repr read "np.str_('cat')"
    if unknown:
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise InputError(f"labels the model does not know: {', '.join(unknown[:10])}{more} (map them with "
                         f"--mapping; model labels: {', '.join(classes)})")
    proba = clf.predict_proba(X) if proba is None else proba
    pred_idx, conf, suggested = clf.decide(proba)
    pred = np.asarray(classes)[pred_idx]
    right = pred == y
    labels_present = [c for c in classes if c in set(y) or c in set(pred)]
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=classes, zero_division=0)
    cm = confusion_matrix(y, pred, labels=classes)
    alpha = 1.0 - float(getattr(clf, "confidence", 0.95))
    n_sug, k_sug = int(suggested.sum()), int((suggested & right).sum())
    lo, hi = clopper_pearson(k_sug, n_sug, alpha, side="two")
    per_tag_abst = {}
    for j, c in enumerate(classes):
        m = suggested & (pred_idx == j)
        truth = y == c
        per_tag_abst[c] = {
            "suggested": int(m.sum()),
            "precision": float(right[m].mean()) if m.any() else None,
            "recall_with_abstention": float((m & right).sum() / truth.sum()) if truth.any() else None,
            "threshold": None if not np.isfinite(clf.threshold_vector_[j]) else float(clf.threshold_vector_[j]),
        }
    can = clf._suggestable()[pred_idx]
    curve = precision_coverage_curve(conf[can], right[can], n_total=len(y))
    return {
        "n": int(len(y)),
        "classes": classes,
        "accuracy": float(right.mean()),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "chance_balanced_accuracy": 1.0 / max(len(set(y)), 1),
        # undefined is None, not scikit-learn's zero_division 0: a tag no item of the data holds
        # printed "precision 0.000 recall 0.000 (n=0)", as if the model got every one wrong
        "per_label": {c: {"precision": float(p[j]) if (pred == c).any() else None,
                          "recall": float(r[j]) if s[j] else None,
                          "f1": float(f[j]) if s[j] and (pred == c).any() else None,
                          "support": int(s[j])} for j, c in enumerate(classes)},
        "confusion": {"labels": classes, "matrix": cm.tolist(), "rows": "true", "columns": "predicted"},
        "labels_present": labels_present,
        "abstention": {
            "target_precision": float(getattr(clf, "precision", np.nan)),
            "threshold_mode": getattr(clf, "threshold_mode_", None),
            "coverage": float(n_sug / max(len(y), 1)),
            "suggested": n_sug, "right": k_sug,
            "precision": float(k_sug / n_sug) if n_sug else None,
            "precision_ci": [float(lo), float(hi)], "ci_level": 1.0 - alpha,
            "per_tag": per_tag_abst,
        },
        "oracle_coverage_at_precision": {str(t): coverage_at_precision(curve, t) for t in (0.9, 0.95)},
        "precision_coverage": curve,
    }


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(result: dict, path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (recall per true label) with counts in the cells."""
    plt = _plt()
    labels = result["confusion"]["labels"]
    cm = np.asarray(result["confusion"]["matrix"], dtype=np.float64)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    k = len(labels)
    size = max(4.5, 0.55 * k + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), labels, rotation=45, ha="right")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 25:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7 if k > 12 else 9,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of true label")
    ax.set_title(title or f"accuracy {result['accuracy']:.3f}, balanced {result['balanced_accuracy']:.3f} "
                          f"(n={result['n']})", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_precision_coverage(result: dict, path: str | Path, title: str = "") -> Path:
    """Precision of the most confident suggestions against coverage, with the model's point."""
    plt = _plt()
    c = result["precision_coverage"]
    a = result["abstention"]
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    cov = np.asarray(c["coverage"])
    ax.fill_between(cov, c["precision_low"], c["precision_high"], color="tab:blue", alpha=0.15,
                    label="95% interval")
    ax.plot(cov, c["precision"], color="tab:blue", label="precision of the top-confidence share")
    tgt = a.get("target_precision")
    if tgt is not None and np.isfinite(tgt):
        ax.axhline(tgt, color="tab:red", ls="--", lw=1, label=f"target {tgt:g}")
    if a.get("precision") is not None:
        ax.plot([a["coverage"]], [a["precision"]], "o", color="tab:red",
                label=f"model thresholds: coverage {a['coverage']:.3f}, precision {a['precision']:.3f}")
    ax.set_xlabel("coverage (share of items given a tag)")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    lo = min(0.5, float(np.min(c["precision"])) if c["precision"] else 0.5)
    ax.set_ylim(max(0.0, lo - 0.02), 1.005)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(title or "precision vs coverage (abstain below a confidence threshold)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    plt = _plt()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def write_evaluation(result: dict, out: str | Path, title: str = "") -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    metrics = {k: v for k, v in result.items() if k not in ("precision_coverage", "confusion")}
    files["metrics"] = out / "metrics.json"
    write_json(files["metrics"], metrics)
    files["confusion_json"] = out / "confusion.json"
    write_json(files["confusion_json"], result["confusion"])
    files["curve_json"] = out / "precision_coverage.json"
    write_json(files["curve_json"], result["precision_coverage"])
    try:
        files["confusion_png"] = plot_confusion(result, out / "confusion.png", title=title)
        files["curve_png"] = plot_precision_coverage(result, out / "precision_coverage.png")
    except ImportError:  # matplotlib is a dependency; keep the numbers if it is broken
        pass
    return files
