"""More items than one fit should see: fit the pipeline on a sample, assign the rest in batches.

A pipeline fit (UMAP + the clusterer) costs far more than linear time and memory in the number
of items; assigning an item with the fitted pipeline's predictor (``Pipeline.predict_details``:
a neighbour search among the fitted items and a vote) costs the same for every item and needs
only the batch in memory. So a large collection is clustered by

1. drawing a uniform random sample of ``fit_sample`` rows (:func:`sample_rows`),
2. fitting the pipeline on those rows only,
3. streaming every row through :func:`assign_batch`: rows of the sample keep what the fit gave
   them (exactly), all others get the predictor's answer.

How big the sample must be was measured on the 60,000 CIFAR-10 vectors (NMI of
sample-fit-then-assign against a fit on everything, ``benchmarks/scale.py quality``; the table
is in benchmarks/RESULTS.md, section "Scale"): :data:`AUTO_FULL_FIT_MAX` and
:data:`AUTO_SAMPLE` come from there.
"""

from __future__ import annotations

import numpy as np

from .data import status_of
from .errors import ParameterError

#: with ``fit_sample="auto"``, collections up to this size are fitted whole
AUTO_FULL_FIT_MAX = 60_000
#: with ``fit_sample="auto"``, larger collections are fitted on a sample of this many items
AUTO_SAMPLE = 40_000
#: the fewest items a fit may see
MIN_SAMPLE = 3


def fit_sample_size(spec, n: int) -> int:
    """How many of ``n`` items to fit on: ``spec`` is ``"auto"`` (None), ``"all"`` or a count."""
    if spec is None or spec == "auto":
        return n if n <= AUTO_FULL_FIT_MAX else AUTO_SAMPLE
    if spec == "all":
        return n
    try:
        k = int(spec)
    except (TypeError, ValueError):
        raise ParameterError(f"fit_sample: expected 'auto', 'all' or a number of items, got {spec!r}",
                             "fit_sample") from None
    if k < MIN_SAMPLE:
        raise ParameterError(f"fit_sample: at least {MIN_SAMPLE} items are needed to fit, got {k}",
                             "fit_sample")
    return min(k, n)


def sample_rows(n: int, size: int, random_state=0) -> np.ndarray:
    """Sorted row numbers of a uniform random sample of ``size`` of ``n`` rows (all if size >= n)."""
    if size >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(random_state)
    return np.sort(rng.choice(n, size=size, replace=False)).astype(np.int64)


#: the columns :func:`assign_batch` returns (one value per row)
ASSIGN_KEYS = ("labels", "probabilities", "cluster", "confidence", "embedding")


def assign_batch(pipe, sample: np.ndarray, start: int, X: np.ndarray, ref_xy: np.ndarray | None = None
                 ) -> dict:
    """The pipeline's answer for rows ``start .. start+len(X)``: ``labels``, ``probabilities``,
    ``cluster``, ``confidence``, ``embedding`` (reduced coordinates) and ``status``; with
    ``ref_xy`` (a 2-D map position per fitted item) also ``xy``, carried over by the predictor's
    neighbour weights.

    ``sample`` holds the (sorted) row numbers the pipeline was fitted on, in fit order; those
    rows take the fitted values, the others the predictor's."""
    return assign_rows(pipe, sample, np.arange(start, start + len(X), dtype=np.int64), X, ref_xy)


def assign_rows(pipe, sample: np.ndarray, rows: np.ndarray, X: np.ndarray, ref_xy: np.ndarray | None = None
                ) -> dict:
    """:func:`assign_batch` for any rows: ``X[i]`` is row ``rows[i]`` of the collection (``rows``
    need not be contiguous, e.g. the representatives of duplicate groups). The one rule: rows
    the pipeline was fitted on keep the fit's values, the others get the predictor's."""
    n = len(X)
    keys = (*ASSIGN_KEYS, "status") + (("xy",) if ref_xy is not None else ())
    if n == 0:
        return {k: np.zeros(0) for k in keys}
    rows = np.asarray(rows, dtype=np.int64)
    pos = np.searchsorted(sample, rows)  # where each row would be in the (sorted) fitted rows
    hit = pos < len(sample)
    hit[hit] = sample[pos[hit]] == rows[hit]
    fitted = np.flatnonzero(hit)  # positions in X of rows that were fitted
    rest = ~hit
    out = {
        "labels": np.empty(n, np.int64), "probabilities": np.empty(n, np.float64),
        "cluster": np.empty(n, np.int64), "confidence": np.empty(n, np.float64),
        "embedding": np.empty((n, pipe.embedding_.shape[1]), np.float32),
    }
    if ref_xy is not None:
        out["xy"] = np.empty((n, 2), np.float32)
    levels = getattr(pipe, "levels_", None)
    if levels is not None:  # each item's cluster at every level, coarse to fine
        out["levels"] = np.empty((n, len(levels)), np.int64)
    if rest.any():
        # a collection's own rows: an all-zero one is placed, as the full fit would cluster it
        d = pipe.predict_details(X[rest], zero_vectors="place")
        for k in ASSIGN_KEYS:
            out[k][rest] = d[k]
        if levels is not None:
            out["levels"][rest] = d["path"]["labels"].T
        if ref_xy is not None:
            out["xy"][rest] = np.einsum("qk,qkd->qd", d["weights"], ref_xy[d["neighbors"]])
    if len(fitted):
        j = pos[fitted]  # their places in the fit
        for k, attr in (("labels", "labels_"), ("probabilities", "probabilities_"),
                        ("cluster", "cluster_"), ("confidence", "confidence_"), ("embedding", "embedding_")):
            out[k][fitted] = getattr(pipe, attr)[j]
        if ref_xy is not None:
            out["xy"][fitted] = ref_xy[j]
        if levels is not None:
            out["levels"][fitted] = levels[:, j].T
    out["status"] = status_of(out["labels"])
    return out


class Tally:
    """Per-cluster counts (and optional sums of per-item extras) gathered batch by batch."""

    def __init__(self):
        self.labels: dict[int, int] = {}
        self.cluster: dict[int, int] = {}
        self.n = 0
        self.mass: dict[str, dict[int, np.ndarray]] = {}

    def add(self, out: dict, extras: dict[str, np.ndarray] | None = None) -> None:
        for key, counts in (("labels", self.labels), ("cluster", self.cluster)):
            vals, cnt = np.unique(out[key], return_counts=True)
            for v, c in zip(vals.tolist(), cnt.tolist()):
                counts[v] = counts.get(v, 0) + c
        for name, values in (extras or {}).items():
            acc = self.mass.setdefault(name, {})
            lab = out["labels"]
            for c in np.unique(lab[lab >= 0]).tolist():
                s = values[lab == c].astype(np.float64).sum(axis=0)
                acc[c] = s if c not in acc else acc[c] + s
        self.n += len(out["labels"])

    def summary_counts(self) -> dict:
        lab = self.labels
        n = self.n
        clustered = sum(v for k, v in lab.items() if k >= 0)
        return {
            "items": n,
            "clusters": sum(1 for k in lab if k >= 0),
            "noise": lab.get(-1, 0),
            "outliers": lab.get(-2, 0),
            "noise_share": float((n - clustered) / n) if n else 0.0,
            "coverage": float(clustered / n) if n else 0.0,
        }


def _vm_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class StageMeter:
    """Wall seconds and peak resident memory of each stage of a job.

    A stage's peak is the largest of the resident sizes sampled every 20 ms while it runs and,
    when the process's high-water mark (``VmHWM``, Linux) rose during the stage, that mark. The
    high-water mark itself is never reset, so ``/usr/bin/time`` and a parent's ``wait4`` still
    see the process's true peak. Elsewhere only ``getrusage`` is read (the peak so far)."""

    INTERVAL = 0.02

    def __init__(self, timings: dict | None = None):
        self.timings = timings if timings is not None else {}
        self.peak_mb: dict[str, float] = {}

    def stage(self, name: str):
        import contextlib
        import resource
        import threading
        import time

        @contextlib.contextmanager
        def run():
            hwm0 = _vm_kb("VmHWM")
            top = [_vm_kb("VmRSS") or 0]
            done = threading.Event()

            def sample():
                while not done.wait(self.INTERVAL):
                    kb = _vm_kb("VmRSS")
                    if kb and kb > top[0]:
                        top[0] = kb

            th = threading.Thread(target=sample, daemon=True, name=f"rss-{name}")
            th.start()
            t = time.perf_counter()
            try:
                yield
            finally:
                self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t
                done.set()
                th.join()
                hwm1 = _vm_kb("VmHWM")
                kb = max(top[0], _vm_kb("VmRSS") or 0)
                if hwm0 is None or hwm1 is None:
                    kb = max(kb, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
                elif hwm1 > hwm0:  # this stage set a new peak for the process
                    kb = max(kb, hwm1)
                self.peak_mb[name] = max(self.peak_mb.get(name, 0.0), round(kb / 1024, 1))

        return run()
