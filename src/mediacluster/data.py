"""The data that flows between stages: what was found, what was skipped, the vectors, and the
label convention.

Everything here is a plain container. Stages take and return plain numpy arrays; these classes
only keep ids, paths, labels and skip reasons aligned with those arrays.

Labels follow the source study: ``OUTLIER`` (-2) = removed by the outlier stage, ``NOISE`` (-1)
= left unclustered by the clusterer, ``>= 0`` = a cluster id.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError

OUTLIER = -2
NOISE = -1


def status_of(labels) -> np.ndarray:
    """``"clustered"`` / ``"noise"`` / ``"outlier"`` per label."""
    labels = np.asarray(labels)
    return np.where(labels >= 0, "clustered", np.where(labels == OUTLIER, "outlier", "noise"))


def as_vectors(X, what: str = "vectors") -> np.ndarray:
    """``X`` (an array, a memory map, a DataFrame, nested lists) as a float32 numpy array, not
    copied when it is one; what is not dense real numbers is refused with an ``InputError``
    (numpy's own messages, "setting an array element with a sequence" for a sparse matrix, do
    not say what is wrong, and complex numbers would silently lose their imaginary part)."""
    if isinstance(X, np.ndarray) and X.dtype == np.float32:
        return X
    if hasattr(X, "toarray") and hasattr(X, "nnz"):  # scipy.sparse, without importing scipy
        raise InputError(f"{what}: a sparse matrix is not supported; pass dense vectors (X.toarray())")
    try:
        A = np.asarray(X)
    except ValueError as e:  # rows of different lengths
        raise InputError(f"{what} must be rows of numbers of one length: {e}") from None
    if A.dtype.kind == "c":
        raise InputError(f"{what}: Complex data not supported (complex numbers would lose their imaginary "
                         "part; give real vectors, e.g. abs(X))")
    if A.dtype.kind == "O" and A.size:  # numbers held as Python objects (an object DataFrame column)
        bad = next((i for i, v in enumerate(A.flat) if not isinstance(v, numbers.Real)), None)
        if bad is not None:
            v = A.flat[bad]
            raise InputError(f"{what} must be numbers, got {v!r} (a {type(v).__name__}) at "
                             f"{'row ' if A.ndim > 1 else 'index '}{np.unravel_index(bad, A.shape)[0]}")
        A = A.astype(np.float64)
    if A.dtype.kind not in "biuf":
        raise InputError(f"{what} must be numbers, got values of type {A.dtype} (e.g. {A.flat[0]!r})"
                         if A.size else f"{what} must be numbers, got values of type {A.dtype}")
    return A.astype(np.float32, copy=False)


def nonfinite_rows(X) -> np.ndarray:
    """Positions of the rows of ``X`` (n, ...) that hold NaN or infinity (none for integers);
    read by blocks of rows, so a memory-mapped file is checked in bounded memory."""
    X = np.asarray(X)
    if X.dtype.kind not in "fc" or X.size == 0:
        return np.empty(0, np.intp)
    X = X.reshape(len(X), -1)
    step = max(1, (1 << 24) // max(1, X.shape[1]))  # 16 M values (16 MB of flags) a block
    return np.concatenate([s + np.flatnonzero(~np.isfinite(X[s:s + step]).all(axis=1))
                           for s in range(0, len(X), step)])


def nonfinite_message(bad, n: int, source=None, row: str = "vector {}", numbers=None,
                      problem: str = "contains NaN or infinity") -> str:
    """The one message for non-finite input: the first bad row named (``row`` formats its
    number: ``"vector {}"``, ``"row {}"``, ``"vectors[{}]"``), how many of the ``n`` rows are
    bad and the first few when more than one, ``source`` (a file) first when known.
    ``numbers``: each row's number as the user counts it (a file's rows read in windows), else
    its position."""
    bad = np.asarray(bad)
    nums = (bad if numbers is None else np.asarray(numbers)[bad]).tolist()
    msg = f"{row.format(nums[0])} {problem}"
    if len(nums) > 1:
        msg += f" (rows {nums[:5]}{' ...' if len(nums) > 5 else ''}: {len(nums)} of {n})"
    return f"{source}: {msg}" if source is not None else msg


def check_finite(X, source=None, row: str = "vector {}", numbers=None,
                 problem: str = "contains NaN or infinity"):
    """``X`` when every value is finite, else an ``InputError`` (:func:`nonfinite_message`)."""
    bad = nonfinite_rows(X)
    if len(bad):
        raise InputError(nonfinite_message(bad, len(X), source, row, numbers, problem))
    return X


def validate_rows(est, X, reset: bool = True, dtype=np.float32, order=None, first_row: int = 0):
    """A stage's input: scikit-learn's ``validate_data`` (a 2-D array of numbers, dense,
    ``n_features_in_`` / ``feature_names_in_`` set at ``reset`` or checked), with NaN and
    infinity refused by :func:`check_finite` naming the first bad row (``row 17 contains NaN or
    infinity``; scikit-learn's own message names no row). ``first_row``: the number of ``X``'s
    first row when it is one batch of a larger input."""
    from sklearn.utils.validation import validate_data

    X = validate_data(est, X, reset=reset, dtype=dtype, order=order, ensure_all_finite=False)
    numbers = np.arange(first_row, first_row + len(X)) if first_row else None
    return check_finite(X, row="row {}", numbers=numbers)


# The largest row norm a fit accepts: half the square root of float32's largest number, so that the
# squared distance between any two rows (at most twice the norm) is still a float32.
MAX_NORM = float(np.sqrt(np.finfo(np.float32).max)) / 2  # ~9.2e18


def check_magnitude(X, source=None, row: str = "vector {}", numbers=None):
    """``X`` (finite, checked first) when every row's length fits the float32 computations of a
    fit (:data:`MAX_NORM`), else an ``InputError`` (:func:`nonfinite_message`) naming the first
    such row, its largest value, and what to do. Values above ~1e19 overflow every squared
    distance and norm: a fit then stopped with a plain ``ValueError`` ("array must not contain
    infs or NaNs", the bug path) or named the wrong rows ("vector 0 ... 700 such vectors"), and
    a cosine neighbour graph made the row all zeros (benchmarks/RESULTS.md, "One metric for
    neighbours")."""
    X = np.asarray(X)
    if X.dtype.kind not in "fc" or X.size == 0:
        return X
    with np.errstate(over="ignore"):
        norm = np.linalg.norm(X.reshape(len(X), -1).astype(np.float64, copy=False), axis=1)
    bad = np.flatnonzero(norm > MAX_NORM)
    if len(bad):
        big = float(np.abs(np.asarray(X[bad[0]], dtype=np.float64)).max())
        raise InputError(nonfinite_message(
            bad, len(X), source, row, numbers,
            f"has values too large (up to {big:.3g}; a vector's length must stay under {MAX_NORM:.2g}): their "
            "squares overflow float32 distances; rescale the vectors"))
    return X


def l2_normalize(X, eps: float = 1e-12) -> np.ndarray:
    """Rows (or one vector) scaled to unit length (float32; zero rows stay zero).

    A norm float32 cannot hold (values above ~1e19, whose squares overflow: the row became all
    zeros; or below ~1e-19 but not zero, whose squares underflow: not unit length) is taken in
    float64 for those rows only."""
    X = np.asarray(X, dtype=np.float32)
    with np.errstate(over="ignore", under="ignore"):
        norm = np.linalg.norm(X, axis=-1, keepdims=True)
    odd = ~np.isfinite(norm) | ((norm < 1e-18) & (np.abs(X) > 0).any(axis=-1, keepdims=True))
    if odd.any():
        rows = odd[..., 0]
        norm = norm.astype(np.float64)
        norm[rows] = np.linalg.norm(X[rows].astype(np.float64), axis=-1, keepdims=True)
        norm[rows] = np.where(norm[rows] > 0, norm[rows], eps)  # tiny rows too: to unit length
        return (X / np.maximum(norm, np.where(odd, 0.0, eps))).astype(np.float32)
    return X / np.maximum(norm, eps)


def nearest_to_centre(X, idx: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` of the items ``idx`` nearest (cosine) to their mean direction: a cluster's most
    typical members, in order."""
    Xi = l2_normalize(X[idx])
    centre = l2_normalize(Xi.mean(axis=0))
    return np.asarray(idx)[np.argsort(1.0 - Xi @ centre, kind="stable")[:k]]


@dataclass(frozen=True)
class Skipped:
    """A file that was not used, and why (shown to the user and written to run.json)."""

    path: str
    reason: str
    #: the file's content is the cause (``ingest.SkipItem.lasting``): the embedding cache
    #: remembers it; not part of what is shown, written or compared
    lasting: bool = field(default=False, compare=False, repr=False)

    def to_dict(self) -> dict:
        """For JSON: a name that is not UTF-8 in escaped form, marked ``"escaped": true``
        (see ``mediacluster.fileio``)."""
        from .fileio import needs_escape, path_to_text

        if needs_escape(self.path):
            return {"path": path_to_text(self.path), "reason": path_to_text(self.reason), "escaped": True}
        return {"path": self.path, "reason": self.reason}


@dataclass
class Collection:
    """What ingest found.

    ``ids`` are stable strings naming each item (the path for files, the given id for
    precomputed vectors). ``paths`` is None for precomputed vectors without a path column (a row
    whose path is empty is None in it: an item without a path). ``labels`` are ground-truth
    labels used only for evaluation, never for fitting. ``vectors`` is set when the input was
    precomputed embeddings, in which case no encoder runs. ``root`` is the collection root (the
    folder given, a manifest's folder, a single file's folder; None for vectors): a run stores
    its items' paths relative to it (see ``mediacluster.locations``). ``metadata``: a manifest's
    own columns other than ``path``, ``id`` and ``label`` (a post's time, author, likes, ...),
    one row per item in ``ids``' order with ``id`` first, or None; a run keeps it
    (``RunDir.read_metadata``) and its tables carry it.
    """

    ids: list[str]
    paths: list[str] | None = None
    labels: list[str | None] | None = None
    vectors: np.ndarray | None = None
    media: str = "image"
    skipped: list[Skipped] = field(default_factory=list)
    source: str = ""
    root: str | None = None
    metadata: object = None  # pandas.DataFrame | None (pandas is imported lazily)
    # a manifest's: the files of its kind under its folder that no row names (never read;
    # ingest.sources.unlisted_files), None when none
    unlisted: dict | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:  # a summary: the dataclass's would print every id (a notebook freezes)
        kind = "vectors" if self.vectors is not None else self.media
        return (f"Collection({len(self)} {kind} items, labels={'yes' if self.has_labels else 'no'}, "
                f"skipped={len(self.skipped)}, source={self.source!r}, root={self.root!r})")

    @property
    def has_labels(self) -> bool:
        return self.labels is not None and any(lab is not None for lab in self.labels)


@dataclass
class Embeddings:
    """Vectors for the items of a collection that could be embedded.

    ``vectors`` is (n, d) float32, row i belongs to ``ids[i]``. ``extras`` holds other per-item
    outputs of the encoder, aligned with ``vectors`` (e.g. ``imagenet_probs``, (n, 1000)).
    ``skipped`` lists items of the collection that could not be embedded, with the reason.
    """

    ids: list[str]
    vectors: np.ndarray
    encoder: str
    encoder_version: str = ""
    paths: list[str] | None = None
    labels: list[str | None] | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    root: str | None = None  # the collection root of ``paths`` (Collection.root; a run's)

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:  # a summary: the dataclass's would print every id and vector
        shape = "x".join(str(d) for d in np.shape(self.vectors))
        labels = self.labels is not None and any(lab is not None for lab in self.labels)
        return (f"Embeddings({len(self)} items, vectors {shape} {getattr(self.vectors, 'dtype', '')}, "
                f"encoder={self.encoder!r}, extras={sorted(self.extras)}, labels={'yes' if labels else 'no'}, "
                f"skipped={len(self.skipped)}, root={self.root!r})")

    def subset(self, index: np.ndarray) -> Embeddings:
        index = np.asarray(index)
        return Embeddings(
            ids=[self.ids[i] for i in index],
            vectors=self.vectors[index],
            encoder=self.encoder,
            encoder_version=self.encoder_version,
            paths=None if self.paths is None else [self.paths[i] for i in index],
            labels=None if self.labels is None else [self.labels[i] for i in index],
            extras={k: v[index] for k, v in self.extras.items()},
            skipped=list(self.skipped),
            timings=dict(self.timings),
            root=self.root,
        )
