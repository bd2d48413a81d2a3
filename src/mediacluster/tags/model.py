"""A tag classifier on embeddings that abstains below per-tag confidence thresholds.

``TagClassifier`` (scikit-learn style) splits the labelled vectors into train and validation
parts (stratified, seeded), fits a classifier on L2-normalised, standardised vectors, fits a
softmax temperature on the validation part (calibration; expected calibration error before and
after is kept in ``calibration_``), then chooses per-tag confidence thresholds on the validation
part so that suggestions reach ``precision`` with a Clopper-Pearson margin
(``mediacluster.tags.thresholds``). A tag with too few validation predictions to certify its own
threshold falls back to the global threshold (chosen the same way over all tags pooled).

Labels listed in ``abstain_labels`` (default ``"other"``) are learned as classes, so that items
looking like them pull probability away from real tags, but are never suggested.

Saved as ``model.json`` (parameters, classes, thresholds, metrics) + ``weights.npz`` (arrays,
loaded with ``allow_pickle=False``): no pickle anywhere.
"""

from __future__ import annotations

import json
import os
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from ..data import check_finite, l2_normalize
from ..errors import InputError, ParameterError
from ..fileio import atomic_path, write_json
from ..stages.registry import SEED, Int
from .thresholds import choose_threshold, clopper_pearson, min_support

FORMAT = "mediacluster.tags/1"
#: the key in ``weights.npz`` of the stamp its ``model.json`` carries too (``weights_stamp``)
STAMP = "_stamp"
MODELS = ("auto", "logreg", "mlp")
TOP_K = Int(1, doc="at most this many suggested tags per item")
#: "auto" picks the MLP from this many labelled items on (benchmarks/RESULTS.md, tags: on 50k
#: CIFAR-10 it beat the logistic baseline on balanced accuracy and coverage; on 600 items it
#: covered less than the logistic regression)
MLP_FROM = 20000


def check_settings(precision, confidence, C=0.1, val_size=0.25) -> None:
    """``precision``, ``confidence`` and ``val_size`` each strictly between 0 and 1, ``C`` above 0
    (a ``ParameterError`` naming it), before any work: at confidence 1 the margin is infinite
    (``log(0)``), at 0 every lower bound is 1.0 (one right answer certifies any precision), no
    threshold can reach precision 1, and scikit-learn refuses C 0 (an internal error after the
    examples were embedded)."""
    for name, v in (("precision", precision), ("confidence", confidence), ("val_size", val_size)):
        if isinstance(v, bool) or not isinstance(v, int | float | np.number) or not 0.0 < float(v) < 1.0:
            raise ParameterError(f"{name} must be above 0 and below 1, got {v!r}", name)
    if isinstance(C, bool) or not isinstance(C, int | float | np.number) or not 0.0 < float(C) < np.inf:
        raise ParameterError(f"C must be a number above 0 (inverse regularisation), got {C!r}", "C")


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def expected_calibration_error(proba: np.ndarray, y_idx: np.ndarray, n_bins: int = 15) -> float:
    """ECE of the top-class confidence (equal-width bins), the usual calibration summary."""
    conf = proba.max(axis=1)
    right = proba.argmax(axis=1) == y_idx
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            ece += m.mean() * abs(right[m].mean() - conf[m].mean())
    return float(ece)


def _fit_temperature(logits: np.ndarray, y_idx: np.ndarray) -> float:
    """Softmax temperature minimising validation NLL (Guo et al. 2017), searched on log T."""
    from scipy.optimize import minimize_scalar

    def nll(log_t: float) -> float:
        z = logits / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=1))
        return float((lse - z[np.arange(len(z)), y_idx]).mean())

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))


class TagClassifier(ClassifierMixin, BaseEstimator):
    """Classifier on embeddings with calibrated confidences and abstention thresholds.

    Parameters
    ----------
    model : "logreg" (multinomial logistic regression, the baseline), "mlp" (one hidden layer), or
        "auto" (mlp from ``MLP_FROM`` labelled items on, else logreg).
    C : inverse L2 strength of the logistic regression.
    hidden, alpha : MLP hidden width and L2 penalty.
    precision : target precision of the suggestions.
    confidence : confidence level of the lower bound on precision (1 - alpha of the test).
    thresholds : "per-tag" (each tag certified on its own validation predictions; tags that cannot
        be certified are never suggested), "global" (one threshold over all tags pooled) or
        "auto" (whichever of the two covers more of the validation set; both are certified).
    validation : how the confidences that calibration and thresholds rest on are obtained:
        "holdout" (a stratified ``val_size`` share is held out; the model never sees it),
        "cv" (``n_folds``-fold cross-fitting: out-of-fold scores for every item, then the final
        model is fitted on all items), or "auto" (cv below ``cv_below`` items, where a holdout
        would be too small to certify a precision, else holdout).
    val_size : share of the labelled items held out in "holdout" mode.
    calibrate : fit a softmax temperature on the validation part.
    abstain_labels : labels learned but never suggested.
    random_state : seed of the split and of the MLP.

    >>> clf = TagClassifier(precision=0.9).fit(X, y)          # doctest: +SKIP
    >>> clf.suggest(X_new)                                    # doctest: +SKIP
    [[("animal", 0.97)], [], ...]
    """

    def __init__(self, model: str = "auto", C: float = 0.1, hidden: int = 256, alpha: float = 1e-3,
                 precision: float = 0.9, confidence: float = 0.95, thresholds: str = "auto",
                 validation: str = "auto", val_size: float = 0.25, n_folds: int = 5,
                 cv_below: int = 20000, calibrate: bool = True, abstain_labels=("other",),
                 max_iter: int = 500, random_state: int = 0):
        self.model = model
        self.C = C
        self.hidden = hidden
        self.alpha = alpha
        self.precision = precision
        self.confidence = confidence
        self.thresholds = thresholds
        self.validation = validation
        self.val_size = val_size
        self.n_folds = n_folds
        self.cv_below = cv_below
        self.calibrate = calibrate
        self.abstain_labels = abstain_labels
        self.max_iter = max_iter
        self.random_state = random_state

    # -- features -------------------------------------------------------------------------
    @staticmethod
    def _l2(X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        return l2_normalize(X[None] if X.ndim == 1 else X)

    def _features(self, X: np.ndarray) -> np.ndarray:
        return (self._l2(X) - self.mean_) / self.scale_

    # -- fitting --------------------------------------------------------------------------
    def fit(self, X, y):
        from sklearn.model_selection import train_test_split

        if self.model not in MODELS:
            raise InputError(f"model must be one of {MODELS}, not {self.model!r}")
        if self.thresholds not in ("per-tag", "global", "auto"):
            raise InputError("thresholds must be 'per-tag', 'global' or 'auto'")
        SEED.check(self.random_state, "random_state")  # numpy's range, before the work
        check_settings(self.precision, self.confidence, self.C, self.val_size)
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray([str(v) for v in y])
        if len(X) != len(y):
            raise InputError(f"{len(X)} vectors but {len(y)} labels")
        classes, counts = np.unique(y, return_counts=True)
        if len(classes) < 2:
            raise InputError(f"need at least 2 different tags to train, got {classes.tolist()}")
        if counts.min() < 2:
            few = classes[counts < 2].tolist()
            raise InputError(f"tags with fewer than 2 examples cannot be split for validation: {few}")
        t0 = time.perf_counter()
        self.model_ = self.model if self.model != "auto" else ("mlp" if len(y) >= MLP_FROM else "logreg")
        self.classes_ = classes
        self.n_features_in_ = X.shape[1]
        y_idx = np.searchsorted(classes, y)
        Xl = self._l2(X)
        # standardisation statistics are label-free, so all items may contribute
        self.mean_ = Xl.mean(axis=0)
        self.scale_ = Xl.std(axis=0) + 1e-6
        F = (Xl - self.mean_) / self.scale_
        mode = self.validation
        if mode == "auto":
            mode = "cv" if len(y) < self.cv_below else "holdout"
        if mode not in ("cv", "holdout"):
            raise InputError("validation must be 'auto', 'cv' or 'holdout'")
        self.validation_mode_ = mode
        if mode == "holdout":
            idx = np.arange(len(y))
            tr, va = train_test_split(idx, test_size=self.val_size, stratify=y,
                                      random_state=self.random_state)
            self._fit_model(F[tr], y_idx[tr])
            logits_va = self._logits(F[va])
            n_train = len(tr)
        else:
            # cross-fitting: every item is scored by a model that did not see it (out-of-fold),
            # so thresholds rest on all items; the final model is then fitted on everything
            from sklearn.model_selection import StratifiedKFold

            k = int(min(self.n_folds, counts.min()))
            skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=self.random_state)
            logits_va = np.zeros((len(y), len(classes)), dtype=np.float64)
            for tr_f, va_f in skf.split(F, y_idx):
                self._fit_model(F[tr_f], y_idx[tr_f])
                logits_va[va_f] = self._logits(F[va_f])
            self._fit_model(F, y_idx)
            va = np.arange(len(y))
            n_train = len(y)
        self.temperature_ = 1.0
        p_raw = _softmax(logits_va.copy())
        if self.calibrate:
            self.temperature_ = _fit_temperature(logits_va, y_idx[va])
        p_va = _softmax(logits_va / self.temperature_)
        self.calibration_ = {
            "temperature": self.temperature_,
            "ece_before": expected_calibration_error(p_raw, y_idx[va]),
            "ece_after": expected_calibration_error(p_va, y_idx[va]),
            "n_validation": int(len(va)),
        }
        self._val_scores = (p_va, y_idx[va])  # in memory only: lets set_precision re-choose
        self._choose_thresholds(p_va, y_idx[va])
        pred_va = p_va.argmax(axis=1)
        self.validation_ = {
            "mode": mode, "n_train": int(n_train), "n_validation": int(len(va)),
            "accuracy": float((pred_va == y_idx[va]).mean()),
            **self._abstention_summary(p_va, y_idx[va]),
        }
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def set_precision(self, precision: float) -> TagClassifier:
        """Re-choose the thresholds for another target precision without refitting (uses the
        validation scores kept in memory since ``fit``; not available on a loaded model)."""
        if getattr(self, "_val_scores", None) is None:
            raise InputError("set_precision needs the validation scores of fit(); refit the model")
        self.precision = float(precision)
        p_va, y_va = self._val_scores
        self._choose_thresholds(p_va, y_va)
        self.validation_.update(self._abstention_summary(p_va, y_va))
        return self

    def _fit_model(self, F: np.ndarray, y_idx: np.ndarray) -> None:
        if self.model_ == "logreg":
            from sklearn.linear_model import LogisticRegression

            lr = LogisticRegression(C=self.C, max_iter=self.max_iter, tol=1e-4)
            lr.fit(F, y_idx)
            coef, icpt = lr.coef_, lr.intercept_
            if len(self.classes_) == 2:  # sklearn keeps one row for 2 classes: expand to softmax
                coef = np.vstack([-coef / 2, coef / 2])
                icpt = np.array([-icpt[0] / 2, icpt[0] / 2])
            self.weights_ = {"coef": coef.astype(np.float32), "intercept": icpt.astype(np.float32)}
            self.n_iter_ = int(np.max(lr.n_iter_))
        else:
            from sklearn.neural_network import MLPClassifier

            mlp = MLPClassifier(hidden_layer_sizes=(self.hidden,), alpha=self.alpha, early_stopping=True,
                                max_iter=self.max_iter, random_state=self.random_state)
            mlp.fit(F, y_idx)
            if len(mlp.classes_) != len(self.classes_):
                raise InputError("every tag must appear in the training part")
            W1, W2 = mlp.coefs_
            b1, b2 = mlp.intercepts_
            if W2.shape[1] == 1:  # binary: logistic output -> two-logit softmax
                W2 = np.hstack([-W2 / 2, W2 / 2])
                b2 = np.array([-b2[0] / 2, b2[0] / 2])
            self.weights_ = {"W1": W1.astype(np.float32), "b1": b1.astype(np.float32),
                             "W2": W2.astype(np.float32), "b2": b2.astype(np.float32)}
            self.n_iter_ = int(mlp.n_iter_)

    def _logits(self, F: np.ndarray) -> np.ndarray:
        w = self.weights_
        if "coef" in w:
            return F @ w["coef"].T + w["intercept"]
        h = np.maximum(F @ w["W1"] + w["b1"], 0.0)
        return h @ w["W2"] + w["b2"]

    def _suggestable(self) -> np.ndarray:
        ab = {str(a) for a in (self.abstain_labels or ())}
        return np.array([c not in ab for c in self.classes_])

    def _choose_thresholds(self, p: np.ndarray, y_idx: np.ndarray) -> None:
        alpha = 1.0 - self.confidence
        pred = p.argmax(axis=1)
        conf = p.max(axis=1)
        right = pred == y_idx
        can = self._suggestable()
        ok = can[pred]
        self.global_threshold_ = choose_threshold(conf[ok], right[ok], self.precision, alpha)
        g = self.global_threshold_["threshold"]
        per_tag: dict[str, dict] = {}
        glob: dict[str, dict] = {}
        for j, tag in enumerate(self.classes_):
            if not can[j]:
                continue
            m = pred == j
            per_tag[str(tag)] = {**choose_threshold(conf[m], right[m], self.precision, alpha),
                                 "source": "tag"}
            sel = m & (conf >= (np.inf if g is None else g))
            glob[str(tag)] = {"threshold": g, "n": int(sel.sum()), "correct": int((sel & right).sum()),
                              "support": int(m.sum()), "source": "global"}

        def covered(th: dict[str, dict]) -> int:
            return sum(v["n"] if v["threshold"] is not None else 0 for v in th.values())

        mode = self.thresholds
        if mode == "auto":
            mode = "per-tag" if covered(per_tag) > covered(glob) else "global"
        self.threshold_mode_ = mode
        chosen = per_tag if mode == "per-tag" else glob
        self.tag_thresholds_ = chosen
        self.threshold_vector_ = self._vector(chosen)
        self.min_support_ = min_support(self.precision, alpha)

    def _vector(self, th: dict[str, dict]) -> np.ndarray:
        return np.array([np.inf if th.get(str(c), {}).get("threshold") is None else th[str(c)]["threshold"]
                         for c in self.classes_], dtype=np.float64)

    def _abstention_summary(self, p: np.ndarray, y_idx: np.ndarray) -> dict:
        pred = p.argmax(axis=1)
        conf = p.max(axis=1)
        sug = conf >= self.threshold_vector_[pred]
        n, k = int(sug.sum()), int((sug & (pred == y_idx)).sum())
        lo, hi = clopper_pearson(k, n, 1.0 - self.confidence, side="two")
        return {"coverage": float(n / max(len(p), 1)), "suggested": n, "right": k,
                "precision": float(k / n) if n else None,
                "precision_ci": [float(lo), float(hi)], "target_precision": self.precision}

    # -- prediction -----------------------------------------------------------------------
    def predict_proba(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise InputError(f"this tag model expects {self.n_features_in_}-d vectors, got "
                             f"{'shape ' + str(X.shape) if X.ndim != 2 else str(X.shape[1]) + '-d'} "
                             "(vectors of another encoder?)")
        check_finite(X)
        return _softmax(self._logits(self._features(X)) / self.temperature_)

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def decide(self, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per row: (top class index, its confidence, whether it is suggested)."""
        pred = proba.argmax(axis=1)
        conf = proba[np.arange(len(proba)), pred]
        return pred, conf, conf >= self.threshold_vector_[pred]

    def suggest_proba(self, proba: np.ndarray, top_k: int = 1) -> list[list[tuple[str, float]]]:
        """Tags whose confidence clears their threshold, best first (at most ``top_k``, >= 1)."""
        top_k = TOP_K.check(top_k, "top_k")  # 0 answered nothing, -1 all but the last (a slice)
        out = []
        passed = proba >= self.threshold_vector_[None, :]
        for row, ok in zip(proba, passed):
            idx = np.flatnonzero(ok)
            idx = idx[np.argsort(-row[idx])][:top_k]
            out.append([(str(self.classes_[j]), float(row[j])) for j in idx])
        return out

    def suggest(self, X, top_k: int = 1) -> list[list[tuple[str, float]]]:
        return self.suggest_proba(self.predict_proba(X), top_k=top_k)

    # -- persistence ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        params = self.get_params()
        params["abstain_labels"] = list(params["abstain_labels"] or ())
        return {
            "format": FORMAT,
            "params": params,
            "classes": [str(c) for c in self.classes_],
            "n_features_in": int(self.n_features_in_),
            "temperature": float(self.temperature_),
            "tag_thresholds": self.tag_thresholds_,
            "global_threshold": self.global_threshold_,
            "threshold_mode": self.threshold_mode_,
            "model": self.model_,
            "calibration": self.calibration_,
            "validation": self.validation_,
            "fit_seconds": float(self.fit_seconds_),
        }

    def save(self, folder: str | Path, extra: dict | None = None) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {"mean": self.mean_, "scale": self.scale_, **self.weights_}
        # the two files are replaced one after the other: a save killed between them left the new
        # weights under the old model.json (its classes, thresholds), read back as a model that
        # tags wrongly without a word; the stamp both carry tells such a pair (``_load``)
        stamp = os.urandom(8).hex()
        with atomic_path(folder / "weights.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **{k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()},
                         **{STAMP: np.asarray(stamp)})
        write_json(folder / "model.json", {**self.to_dict(), **(extra or {}), "weights_stamp": stamp})
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> TagClassifier:
        """The tag model saved in ``folder``; an InputError naming it when the folder is missing,
        of another format, or incomplete (no weights, a model.json that is not JSON or lacks a
        field)."""
        folder = Path(folder)
        try:
            return cls._load(folder)
        except InputError:
            raise
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            what = e.strerror if isinstance(e, OSError) and e.strerror else e
            raise InputError(f"{folder}: not a readable mediacluster tag model ({type(e).__name__}: "
                             f"{what}{f' {e.filename}' if getattr(e, 'filename', None) else ''}); give the "
                             "folder `mediacluster tags train` wrote") from e

    @classmethod
    def _load(cls, folder: Path) -> TagClassifier:
        with open(folder / "model.json", encoding="utf-8") as f:
            d = json.load(f)
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            fmt = d.get("format") if isinstance(d, dict) else None
            raise InputError(f"{folder}: not a mediacluster tag model (format {fmt!r})")
        params = dict(d["params"])
        params["abstain_labels"] = tuple(params.get("abstain_labels") or ())
        clf = cls(**params)
        with np.load(folder / "weights.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        stamp = arrays.pop(STAMP, None)
        if d.get("weights_stamp") is not None and (stamp is None or str(stamp) != d["weights_stamp"]):
            raise InputError(f"{folder}: model.json and weights.npz are from two different saves (a save "
                             "was interrupted between its two files); train the model again")
        clf.mean_ = arrays.pop("mean")
        clf.scale_ = arrays.pop("scale")
        clf.weights_ = arrays
        clf.classes_ = np.asarray(d["classes"])
        clf.n_features_in_ = int(d["n_features_in"])
        clf.temperature_ = float(d["temperature"])
        clf.tag_thresholds_ = d["tag_thresholds"]
        clf.global_threshold_ = d["global_threshold"]
        clf.calibration_ = d.get("calibration", {})
        clf.validation_ = d.get("validation", {})
        clf.fit_seconds_ = float(d.get("fit_seconds", 0.0))
        clf.threshold_mode_ = d.get("threshold_mode", "per-tag")
        clf.model_ = d.get("model", "logreg" if "coef" in arrays else "mlp")
        clf.threshold_vector_ = clf._vector(clf.tag_thresholds_)
        return clf
