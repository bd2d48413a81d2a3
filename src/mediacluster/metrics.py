"""Internal and external clustering scores, as plain functions over arrays.

Label convention (as everywhere in mediacluster): ``-2`` = removed as an outlier (LOF),
``-1`` = clustering noise (HDBSCAN), ``>= 0`` = a cluster id.

Noise policy, stated once and reported with every score:

* internal scores (silhouette, DBCV, Calinski-Harabasz, Davies-Bouldin) are computed on the
  **clustered items only** (label >= 0) unless said otherwise. ``silhouette(...,
  exclude_noise=False)`` instead puts every unclustered item (-1 and -2 together) into one extra
  group, which is what a "noise counts against you" silhouette means. DBCV follows its
  definition (Moulavi et al. 2014): noise takes no part in the per-cluster terms but stays in the
  denominator, so throwing items away lowers the score.
* external scores are reported twice: ``all`` = every labelled item, with all unclustered items
  (-1 noise and -2 outliers together) forming **one extra group** (so ARI/NMI see the noise as a
  cluster; in Hungarian accuracy that group may be matched to a class like any cluster); and
  ``clustered`` = only the labelled items with label >= 0. ``coverage`` is always reported next to
  them. Items whose true label is None / NaN are unlabelled and excluded from external scores.

The libraries do the work: scikit-learn for silhouette / CH / DB / NMI / AMI / ARI, scipy's
``linear_sum_assignment`` for the matching, ``hdbscan.validity.validity_index`` for DBCV; the
silhouette's Euclidean distances between float32 vectors are float32 dot products with float64
norms (scikit-learn up-casts them to float64, 3x the time; see ``_silhouette_parts``).
Silhouette and DBCV are O(N^2), so both run on a seeded random sample for large N and say so
(``n_used``); the silhouette carries a bootstrap percentile confidence interval.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .errors import InputError

NOISE_POLICY_INTERNAL = "clustered items only (labels -1 noise and -2 outliers excluded)"
NOISE_POLICY_EXTERNAL = (
    "all: every labelled item, unclustered items (-1 noise and -2 outliers) form one extra group; "
    "clustered: labelled items with label >= 0 only"
)
#: float64 distances held at once by the silhouette of float32 vectors (8 M: 64 MB)
DISTANCE_BLOCK = 1 << 23
_UNCLUSTERED = -1  # the single group that -1 and -2 are merged into for 'all items' scores


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------
def _labels(labels) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.ndim != 1:
        raise InputError(f"labels must be 1-d, got shape {lab.shape}")
    if lab.size and not np.issubdtype(lab.dtype, np.integer):
        if np.issubdtype(lab.dtype, np.floating) and np.all(np.mod(lab, 1) == 0):
            lab = lab.astype(np.int64)
        else:
            raise InputError("cluster labels must be integers (-2 outlier, -1 noise, >= 0 cluster)")
    return lab.astype(np.int64, copy=False)


def _finite(x) -> float | None:
    """float, or None when undefined (NaN / inf) so results stay JSON-safe."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def coverage(labels) -> float:
    """Share of items in a cluster (label >= 0). 0.0 for an empty array."""
    lab = _labels(labels)
    return float((lab >= 0).mean()) if lab.size else 0.0


def n_clusters(labels) -> int:
    """Number of distinct cluster ids >= 0."""
    lab = _labels(labels)
    return int(np.unique(lab[lab >= 0]).size)


def _sample(idx: np.ndarray, sample_size: int | None, random_state) -> np.ndarray:
    if sample_size is None or len(idx) <= sample_size:
        return idx
    rng = np.random.default_rng(random_state)
    return np.sort(rng.choice(idx, size=int(sample_size), replace=False))


# --------------------------------------------------------------------------------------------
# internal scores
# --------------------------------------------------------------------------------------------
def _silhouette_blocks(X, codes: np.ndarray, k: int, metric: str, part_of: np.ndarray, G: int):
    """Per-item silhouettes and the jackknife's replicate means, by row blocks.

    ``part_of[i]`` is item i's jackknife group (0 .. G-1). Returns ``(s, reps)``: ``s`` the
    per-item silhouettes of all items, ``reps`` the mean silhouette of each replicate that drops
    group g both as scored items and as reference points (NaN where fewer than 2 clusters
    remain; None when G is 1). Each row block's distances to every item are summed per (group,
    cluster) pair that has items (at most m pairs) by one product with a sparse one-hot matrix,
    and those sums per cluster by another: the cost is the m x m distances whatever the number
    of clusters (a dense (items x clusters) one-hot product was m x m x k: 10,000 items in 5,000
    clusters took 31 s, RESULTS "Slow corners at scale"), and a block holds at most m sums a row.
    """
    from scipy import sparse
    from sklearn.metrics import pairwise_distances

    m = len(codes)
    sizes = np.bincount(codes, minlength=k).astype(np.float64)
    pairs, pair_of = np.unique(part_of * k + codes, return_inverse=True)  # sorted: by group, then cluster
    P = len(pairs)
    to_pairs = sparse.csr_matrix((np.ones(m), (np.arange(m), pair_of)), shape=(m, P))
    to_clusters = sparse.csr_matrix((np.ones(P), (np.arange(P), pairs % k)), shape=(P, k))
    if G > 1:
        bounds = np.searchsorted(pairs, np.arange(G + 1) * k)  # group g's pairs: bounds[g]:bounds[g + 1]
        sz = sizes[None, :] - np.bincount(pairs, weights=np.bincount(pair_of, minlength=P),
                                          minlength=G * k).reshape(G, k)
        live = (sz > 0).sum(axis=1) >= 2
        rep_sum, rep_n = np.zeros(G), np.zeros(G)
    s = np.empty(m, dtype=np.float64)
    # Euclidean on float32 vectors (every encoder's): the dot products in float32, the squared
    # norms and the rest in float64. scikit-learn up-casts float32 block by block to float64 for
    # them, 3x the time (10,000 x 500 distances of 1,280-d vectors: 0.6 -> 0.2 s); the value moved
    # by 3e-11 on CIFAR-10 test, its interval's half-width is 1.5e-3 (benchmarks/RESULTS.md, "What
    # a user waits for, part two"). An item's distance to itself is set to 0, as scikit-learn does.
    fast = metric == "euclidean" and X.dtype == np.float32
    if fast:
        sq = np.einsum("ij,ij->i", X, X, dtype=np.float64)
    step = max(1, DISTANCE_BLOCK // m)  # ~64 MB of float64 distances (and of sums: pairs, clusters <= m)
    for r0 in range(0, m, step):
        r1 = min(m, r0 + step)
        if fast:
            D = X[r0:r1] @ X.T
            D = sq[r0:r1, None] + sq[None, :] - 2.0 * D.astype(np.float64)
            np.maximum(D, 0.0, out=D)
            D[np.arange(r1 - r0), np.arange(r0, r1)] = 0.0
            np.sqrt(D, out=D)
        else:
            D = pairwise_distances(X[r0:r1], X, metric=metric)
            D[np.arange(r1 - r0), np.arange(r0, r1)] = 0.0
        T = np.asarray(D @ to_pairs)  # (rows, pairs)
        del D
        S = np.asarray(T @ to_clusters)  # (rows, clusters)
        cb = codes[r0:r1]
        s[r0:r1], other = _silhouette_from_sums(S, cb, sizes, with_other=True)
        if G > 1:
            gb = part_of[r0:r1]
            near = np.argmin(other, axis=1)  # each item's nearest other cluster (all items in)
            nearest = other[np.arange(r1 - r0), near]
            for g in np.flatnonzero(live):
                keep = np.flatnonzero(gb != g)
                if len(keep):
                    lo, hi = bounds[g], bounds[g + 1]
                    rep_sum[g] += _replicate_sum(keep, S, T[keep, lo:hi], pairs[lo:hi] % k, cb, sz[g], other,
                                                 near, nearest)
                    rep_n[g] += len(keep)
    if G == 1:
        return s, None
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = np.where(live & (rep_n > 0), rep_sum / np.maximum(rep_n, 1), np.nan)
    return s, reps


def _silhouette_from_sums(S: np.ndarray, codes: np.ndarray, sizes: np.ndarray, with_other: bool = False):
    """Per-item silhouette from distance sums (scikit-learn's conventions: 0 for singletons);
    ``with_other``: also the mean distances to every other cluster (inf for the item's own and
    for empty clusters)."""
    m = len(codes)
    own = sizes[codes]
    a = S[np.arange(m), codes] / np.maximum(own - 1, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        other = S / np.where(sizes > 0, sizes, np.nan)[None, :]
    other[np.arange(m), codes] = np.inf
    other[:, sizes == 0] = np.inf
    s = _from_a_b(a, np.min(other, axis=1), own)
    return (s, other) if with_other else s


def _from_a_b(a: np.ndarray, b: np.ndarray, own: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (b - a) / np.maximum(a, b)
    s = np.nan_to_num(s, nan=0.0, posinf=0.0, neginf=0.0)
    s[own <= 1] = 0.0
    return s


def _replicate_sum(rows, S, Tg, changed, codes, sz, other, near, nearest) -> float:
    """The summed silhouettes of the items ``rows`` of a block (``S`` its distance sums per
    cluster, ``codes`` its items' clusters) once the items of a jackknife group are dropped:
    ``Tg`` (one row per item of ``rows``) the group's part of the sums of the clusters
    ``changed`` (the clusters the group has members in, sorted), ``sz`` the cluster sizes without
    it, ``other`` / ``near`` / ``nearest`` the block's mean distances to the other clusters with
    all items in, the nearest cluster and its mean distance. Only the changed clusters' columns
    are recomputed (and, for an item whose nearest cluster is one of them, its nearest among the
    others): the cost follows the group's clusters, not all clusters. Equal to the sum of
    :func:`_silhouette_from_sums` over ``S[rows]`` less the group's part (tested)."""
    m = len(rows)
    r = np.arange(m)
    cr = codes[rows]
    own = sz[cr]
    col = np.full(len(sz), -1)
    col[changed] = np.arange(len(changed))
    mine = col[cr]
    a = (S[rows, cr] - np.where(mine >= 0, Tg[r, np.maximum(mine, 0)], 0.0)) / np.maximum(own - 1, 1)
    hit = col >= 0
    # the clusters the group did not touch keep their mean distances
    nr, nd = near[rows], nearest[rows]
    b = np.where(hit[nr], np.inf, nd)
    redo = np.flatnonzero(hit[nr] & np.isfinite(nd))
    if len(redo) and not hit[sz > 0].all():
        b[redo] = np.where(hit[None, :], np.inf, other[rows[redo]]).min(axis=1)
    if len(changed):
        with np.errstate(divide="ignore", invalid="ignore"):
            oc = (S[np.ix_(rows, changed)] - Tg) / np.where(sz[changed] > 0, sz[changed], np.nan)[None, :]
        oc[~np.isfinite(oc)] = np.inf
        oc[r[mine >= 0], mine[mine >= 0]] = np.inf
        b = np.minimum(b, oc.min(axis=1))
    return float(_from_a_b(a, b, own).sum())


def silhouette(
    X,
    labels,
    sample_size: int | None = 10000,
    random_state=0,
    exclude_noise: bool = True,
    metric: str = "euclidean",
    n_boot: int = 200,
    ci: float = 0.95,
    n_groups: int = 20,
) -> dict:
    """Mean silhouette coefficient with a confidence interval.

    ``exclude_noise=True`` scores only the clustered items (label >= 0); ``False`` merges all
    unclustered items (-1 and -2) into one extra group and scores everything. When more than
    ``sample_size`` items take part, a seeded uniform random sample of that size is scored
    (distances within the sample, as ``sklearn.metrics.silhouette_score(sample_size=...)``;
    the value equals scikit-learn's on the same sample).

    Confidence interval: a delete-a-group jackknife over ``n_groups`` random groups of the
    scored items. Each replicate drops a group both as scored items AND as reference points, so
    the interval covers the variability of the sample as reference set too (a bootstrap of the
    per-item values alone misses that and is ~1.6x too narrow). Normal interval
    ``value +- z * se``. ``n_boot=0`` (or ``ci=None``) skips the interval; ``n_boot`` is
    otherwise unused (kept for the agreed signature).

    Returns ``dict(value, ci_low, ci_high, se, n_used, n_eligible, exclude_noise, metric,
    sampled, ci_method)``; ``value`` is None when the silhouette is undefined (fewer than 2 groups
    or every item its own group) and then ``reason`` says why.
    """
    from scipy.stats import norm

    lab = _labels(labels)
    X = np.asarray(X)
    if len(X) != len(lab):
        raise InputError(f"X has {len(X)} rows but labels has {len(lab)}")
    if exclude_noise:
        idx = np.flatnonzero(lab >= 0)
        groups = lab
    else:
        idx = np.arange(len(lab))
        groups = np.where(lab >= 0, lab, _UNCLUSTERED)
    want_ci = bool(n_boot) and ci is not None
    out = {
        "value": None, "ci_low": None, "ci_high": None, "se": None, "n_used": 0,
        "n_eligible": int(len(idx)), "exclude_noise": bool(exclude_noise), "metric": metric,
        "sampled": bool(sample_size is not None and len(idx) > sample_size),
        "ci_method": f"delete-a-group jackknife ({n_groups} groups), normal {ci}" if want_ci else None,
    }
    sel = _sample(idx, sample_size, random_state)
    _, codes = np.unique(groups[sel], return_inverse=True)
    k = int(codes.max()) + 1 if len(codes) else 0
    if k < 2 or k > len(sel) - 1:
        out["reason"] = f"silhouette needs 2 <= groups <= n-1, got {k} group(s) over {len(sel)} items"
        return out
    Xs = np.asarray(X[sel], dtype=np.float64 if X.dtype == np.float64 else np.float32)
    m = len(sel)
    G = int(min(n_groups, m)) if want_ci else 1
    part_of = np.zeros(m, dtype=np.int64)
    if G > 1:
        perm = np.random.default_rng(random_state).permutation(m)
        for g, rows in enumerate(np.array_split(perm, G)):
            part_of[rows] = g
    s, reps = _silhouette_blocks(Xs, codes, k, metric, part_of, G)
    out["value"] = float(s.mean())
    out["n_used"] = int(m)
    if reps is not None:
        reps = reps[np.isfinite(reps)]
        if len(reps) >= 2:
            se = float(np.sqrt((len(reps) - 1) / len(reps) * np.sum((reps - reps.mean()) ** 2)))
            z = float(norm.ppf(0.5 + ci / 2.0))
            out["se"] = se
            out["ci_low"], out["ci_high"] = out["value"] - z * se, out["value"] + z * se
    return out


def dbcv_details(
    X, labels, sample_size: int | None = 2000, random_state=0, metric: str = "euclidean",
    min_points: int = 3,
) -> dict:
    """DBCV (density-based clustering validation) with what was done to compute it.

    Calls ``hdbscan.validity.validity_index`` (O(n^2) memory and time) on a seeded uniform
    random sample of ``sample_size`` items (all items, noise included, so the share of noise is
    kept: noise counts in the denominator as in the definition). Clusters with fewer than
    ``min_points`` items in the sample are treated as noise in that sample. The data are scaled
    by a constant first (DBCV is scale invariant) to keep the all-points core distance
    ``(mean (1/d)^dim)^(-1/dim)`` inside float64; in high dimension (e.g. 1280-d embeddings) that
    term still overflows, and then the core distances are dropped (``mst_raw_dist=True``, the
    variant hdbscan offers for this) and ``variant`` says ``"raw-distance"``.

    Returns ``dict(value, n_used, n_clusters_used, variant, sampled)``; value is NaN when fewer
    than 2 clusters remain.
    """
    from hdbscan.validity import validity_index

    lab = _labels(labels)
    X = np.asarray(X, dtype=np.float64)
    if len(X) != len(lab):
        raise InputError(f"X has {len(X)} rows but labels has {len(lab)}")
    sel = _sample(np.arange(len(lab)), sample_size, random_state)
    Xs, ls = X[sel], lab[sel].copy()
    ids, counts = np.unique(ls[ls >= 0], return_counts=True)
    small = ids[counts < min_points]
    ls[np.isin(ls, small)] = -1
    ls[ls < -1] = -1
    kept = np.unique(ls[ls >= 0])
    out = {"value": float("nan"), "n_used": int(len(sel)), "n_clusters_used": int(kept.size),
           "variant": "core-distance", "sampled": bool(sample_size is not None and len(lab) > sample_size)}
    if kept.size < 2:
        out["reason"] = f"DBCV needs >= 2 clusters (with >= {min_points} sampled items), got {kept.size}"
        return out
    # contiguous ids 0..k-1 (validity_index iterates over range(max id + 1))
    ls = np.where(ls >= 0, np.searchsorted(kept, ls), -1)
    # scale so the median distance to a few random partners is ~1 (DBCV is scale invariant)
    rng = np.random.default_rng(random_state)
    a = rng.integers(0, len(Xs), 512)
    b = rng.integers(0, len(Xs), 512)
    if metric == "euclidean":
        dd = np.linalg.norm(Xs[a] - Xs[b], axis=1)
        if (dd > 0).any():
            Xs = Xs / np.median(dd[dd > 0])
    try:
        with np.errstate(over="raise", divide="raise", invalid="ignore", under="ignore"):
            val = validity_index(Xs, ls, metric=metric)
    except FloatingPointError:
        out["variant"] = "raw-distance"
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            val = validity_index(Xs, ls, metric=metric, mst_raw_dist=True)
    out["value"] = float(val)
    return out


def dbcv(X, labels, sample_size: int | None = 2000, random_state=0, metric: str = "euclidean") -> float:
    """DBCV score in [-1, 1] (higher is better); NaN when fewer than 2 clusters.

    See :func:`dbcv_details` for the sampling and the numerical fallback.
    """
    return dbcv_details(X, labels, sample_size=sample_size, random_state=random_state,
                        metric=metric)["value"]


def internal_scores(
    X,
    labels,
    space: str = "reduced",
    sample_size: int | None = 10000,
    random_state=0,
    dbcv_sample_size: int | None = 2000,
    metric: str = "euclidean",
    n_boot: int = 200,
    with_noise_silhouette: bool = True,
) -> dict:
    """All label-free scores of one clustering of ``X`` (whose space is named by ``space``).

    Keys: ``space``, ``n_items``, ``n_clusters``, ``coverage``, ``noise``, ``outliers``,
    ``noise_policy``, ``silhouette`` (dict with CI, clustered items only), ``silhouette_all``
    (unclustered items as one extra group; only when there are any and ``with_noise_silhouette``),
    ``dbcv`` (float or None), ``dbcv_details``, ``calinski_harabasz`` and ``davies_bouldin``
    (clustered items only; None when fewer than 2 clusters).
    """
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score

    lab = _labels(labels)
    X = np.asarray(X)
    if len(X) != len(lab):
        raise InputError(f"X has {len(X)} rows but labels has {len(lab)}")
    k = n_clusters(lab)
    res = {
        "space": space,
        "dims": int(X.shape[1]) if X.ndim == 2 else None,
        "n_items": int(len(lab)),
        "n_clusters": k,
        "coverage": coverage(lab),
        "noise": int((lab == -1).sum()),
        "outliers": int((lab == -2).sum()),
        "noise_policy": NOISE_POLICY_INTERNAL,
    }
    res["silhouette"] = silhouette(X, lab, sample_size=sample_size, random_state=random_state,
                                   exclude_noise=True, metric=metric, n_boot=n_boot)
    if with_noise_silhouette and (lab < 0).any():
        res["silhouette_all"] = silhouette(X, lab, sample_size=sample_size, random_state=random_state,
                                           exclude_noise=False, metric=metric, n_boot=n_boot)
    det = dbcv_details(X, lab, sample_size=dbcv_sample_size, random_state=random_state, metric=metric)
    res["dbcv"] = _finite(det.pop("value"))
    res["dbcv_details"] = det
    m = lab >= 0
    if k >= 2 and k < m.sum():
        Xc = np.asarray(X[m], dtype=np.float64)
        res["calinski_harabasz"] = _finite(calinski_harabasz_score(Xc, lab[m]))
        res["davies_bouldin"] = _finite(davies_bouldin_score(Xc, lab[m]))
    else:
        res["calinski_harabasz"] = None
        res["davies_bouldin"] = None
    return res


# --------------------------------------------------------------------------------------------
# external scores
# --------------------------------------------------------------------------------------------
def _is_missing(v) -> bool:
    if v is None:
        return True
    try:
        return bool(isinstance(v, float | np.floating) and math.isnan(v))
    except TypeError:
        return False


def labelled(y_true) -> np.ndarray:
    """Boolean mask of the items that carry a true label (None / NaN: unlabelled), the rule of
    every score against true labels (``external_scores``, ``evaluation.label_issues``)."""
    return np.array([not _is_missing(v) for v in y_true], dtype=bool)


def _encode_truth(y_true) -> tuple[np.ndarray, np.ndarray]:
    """(labelled mask, integer codes of the labelled items). Works for str / int / mixed."""
    arr = np.asarray(y_true, dtype=object) if not isinstance(y_true, np.ndarray) else y_true
    if arr.dtype != object and not np.issubdtype(arr.dtype, np.floating):
        mask = np.ones(len(arr), dtype=bool)
        _, codes = np.unique(arr, return_inverse=True)
        return mask, codes.astype(np.int64)
    mask = labelled(arr)
    vals = [str(v) if not isinstance(v, str) else v for v in arr[mask]]
    _, codes = np.unique(np.asarray(vals, dtype=object).astype(str), return_inverse=True)
    return mask, codes.astype(np.int64)


def hungarian_accuracy(y_true, y_pred) -> float:
    """Accuracy after the best one-to-one matching of predicted groups to true classes.

    Uses ``scipy.optimize.linear_sum_assignment`` on the contingency table (rectangular when
    #clusters != #classes: surplus clusters, or surplus classes, stay unmatched and their items
    count as errors). Labels may be any hashable values; 0.0 for empty input.
    """
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics.cluster import contingency_matrix

    yt = np.asarray(y_true)
    yp = np.asarray(y_pred)
    if len(yt) != len(yp):
        raise InputError(f"y_true has {len(yt)} items but y_pred has {len(yp)}")
    if len(yt) == 0:
        return 0.0
    _, yt = np.unique(yt.astype(str) if yt.dtype == object else yt, return_inverse=True)
    _, yp = np.unique(yp.astype(str) if yp.dtype == object else yp, return_inverse=True)
    c = contingency_matrix(yt, yp)
    r, k = linear_sum_assignment(c, maximize=True)
    return float(c[r, k].sum() / len(yt))


def _scores(t: np.ndarray, p: np.ndarray) -> dict:
    from sklearn.metrics import (
        adjusted_mutual_info_score,
        adjusted_rand_score,
        normalized_mutual_info_score,
    )

    if len(t) == 0:
        return {"nmi": None, "ami": None, "ari": None, "acc": None, "n": 0}
    return {
        "nmi": _finite(normalized_mutual_info_score(t, p)),
        "ami": _finite(adjusted_mutual_info_score(t, p)),
        "ari": _finite(adjusted_rand_score(t, p)),
        "acc": hungarian_accuracy(t, p),
        "n": int(len(t)),
    }


def external_scores(y_true, y_pred) -> dict:
    """NMI, AMI, ARI and Hungarian accuracy against true labels, for all and clustered items.

    ``y_true``: class per item (str / int; None or NaN = unlabelled, excluded). ``y_pred``:
    cluster ids (-2 / -1 / >= 0). Returns ``{"all": {...}, "clustered": {...}, "coverage",
    "n_clusters", "n_classes", "n_labelled", "n_unlabelled", "noise_policy"}`` where each inner
    dict has ``nmi, ami, ari, acc, n``. ``coverage`` and ``n_clusters`` are over the labelled
    items. NMI uses arithmetic averaging (scikit-learn's default).
    """
    yp = _labels(y_pred)
    if len(y_true) != len(yp):
        raise InputError(f"y_true has {len(y_true)} items but y_pred has {len(yp)}")
    mask, t = _encode_truth(y_true)
    p = yp[mask]
    p_all = np.where(p >= 0, p, _UNCLUSTERED)
    c = p >= 0
    return {
        "all": _scores(t, p_all),
        "clustered": _scores(t[c], p[c]),
        "coverage": coverage(p),
        "n_clusters": n_clusters(p),
        "n_classes": int(np.unique(t).size),
        "n_labelled": int(mask.sum()),
        "n_unlabelled": int((~mask).sum()),
        "noise_policy": NOISE_POLICY_EXTERNAL,
    }


__all__ = [
    "coverage", "n_clusters", "hungarian_accuracy", "silhouette", "dbcv", "dbcv_details",
    "internal_scores", "external_scores", "labelled", "NOISE_POLICY_INTERNAL", "NOISE_POLICY_EXTERNAL",
]
