"""``build_report(run_dir)``: one self-contained HTML page for a clustering run.

Everything the page needs is inside it (styles, script, data) except the thumbnails, which are
small JPEG files next to it in ``report/thumbs/`` loaded lazily by the browser; the page works
from disk with no network. The 2-D map is a UMAP of the run's embeddings, computed once and cached
in the run folder as ``map2d.npy``.
"""

from __future__ import annotations

import base64
import colorsys
import html
import json
import logging
import math
import numbers
import time
from importlib import resources
from pathlib import Path

import numpy as np

from ..curated_tree import curated_tree
from ..data import nearest_to_centre
from ..errors import OutputError, ParameterError, RunDirError
from ..fileio import atomic_path, display_text, json_text, output_error, read_json, write_json
from ..ingest.stream import NpyVectors
from ..metrics import labelled
from ..naming import load_names
from ..naming.overrides import automatic_names, hand_names, run_level_names
from ..naming.support import BY_HAND, mostly_unsure, with_hand_names
from ..naming.support import note as unsure_note
from ..naming.support import of_records as support_of_records
from ..rundir import RunDir, RunLevels
from ..stages.reduce import UMAPReducer
from ..stages.registry import Int
from .reposts import gallery_rows, most_reposted, reposts_section
from .thumbs import make_thumbnails

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- data gathering
#: above this many items the map is laid out on a sample (see :func:`map_2d`)
MAP_FULL_MAX = 60_000
#: up to this many items the page holds every item's name and thumbnail; above, names live in
#: chunk files (``report/paths/NNNN.js``, loaded when the map first needs one) and only the
#: items the page shows get thumbnails
INLINE_MAX = 50_000
PATHS_DIR = "paths"
LEVELS_DIR = "levels"
PATH_CHUNK = 65_536
#: a cluster's typical members are chosen among at most this many of its members
CENTRE_SAMPLE = 5_000
#: a level of the run's hierarchy with more clusters gets cards for its largest ones only (its
#: map colours and legend show them all)
LEVEL_CARDS_MAX = 100
#: the other levels' cards show half the representatives and borderline members of the run's
#: (measured: 17 levels of CIFAR-10 test with full cards made the page 6.7 MB instead of 1.4)
#: the other levels' cards find their typical members among at most this many of each cluster's
#: members (every level of a million-item run would otherwise read the vectors once more)
LEVEL_CENTRE_SAMPLE = 1_000
#: a run whose vectors take at most this many bytes has them read whole, once, for the cards;
#: a larger one row by row (see :func:`card_rows`)
WHOLE_READ_MAX = 512 * 2**20


def run_levels(levels: RunLevels, labels: np.ndarray) -> tuple[list[np.ndarray], int | None]:
    """The run's hierarchy, coarse to fine (``RunDir.read_levels``: the assignment columns
    ``level_<k>``, else the ``levels`` of ``hierarchy.npz``); ``[]`` for a flat run. Also the
    index of the level the run's clusters (``labels``, noise < 0 ignored) are, up to
    renumbering: the level named in ``hierarchy.npz`` when it matches, else the first that
    matches, else None."""
    out = [lv for lv in levels.labels if len(lv) == len(labels)]
    if len(out) < 2:  # one level is the flat answer itself: nothing to switch between
        return [], None
    ok = labels >= 0

    def same_partition(lv):
        pairs = np.unique(np.stack([labels[ok], lv[ok]]), axis=1)
        return pairs.shape[1] == len(np.unique(labels[ok])) == len(np.unique(lv[ok]))

    named = levels.level
    if named is not None and 0 <= named < len(out) and same_partition(out[named]):
        return out, named
    return out, next((k for k, lv in enumerate(out) if same_partition(lv)), None)


def _coords(xy: np.ndarray, labels: np.ndarray, big: bool) -> dict:
    """The map's arrays for the page. A large run's positions go as 16-bit steps of the map's
    extent (1/65,535 of it: far finer than the points' spacing at a million) and its labels as
    16-bit integers when they fit: half the page, so half the time to read and parse it."""
    x, y = xy[:, 0].astype(np.float64), xy[:, 1].astype(np.float64)
    if not big or len(x) == 0:
        return {"x": _b64(x.astype(np.float32)), "y": _b64(y.astype(np.float32)),
                "c": _b64(labels.astype(np.int32))}
    out = {}
    for k, v in (("x", x), ("y", y)):
        lo, hi = float(v.min()), float(v.max())
        step = (hi - lo) / 65535 or 1.0
        out[f"{k}q"] = _b64(np.round((v - lo) / step).astype(np.uint16))
        out[f"{k}0"], out[f"{k}s"] = lo, step
    out.update(_labels_b64(labels, big))
    return out


def _labels_b64(labels: np.ndarray, big: bool) -> dict:
    """A labelling for the page: ``{"c": int32}``, or ``{"c16": int16}`` for a large run when
    the labels fit."""
    if big and labels.min(initial=0) >= -32768 and labels.max(initial=0) <= 32767:
        return {"c16": _b64(labels.astype(np.int16))}
    return {"c": _b64(labels.astype(np.int32))}


def _write_path_chunks(out_dir: Path, names: list) -> dict:
    """Item names as ``paths/NNNN.js`` scripts (``mcPaths(k, [...])``): the page loads one when
    the map first shows an item of it (script elements work from file://, fetch does not)."""
    folder = out_dir / PATHS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for k, s in enumerate(range(0, len(names), PATH_CHUNK)):
        body = (json.dumps([str(x) for x in names[s:s + PATH_CHUNK]], separators=(",", ":"))
                .replace("<", "\\u003c").replace(">", "\\u003e"))
        name = f"{PATHS_DIR}/{k:04d}.js"
        with atomic_path(out_dir / name) as tmp:
            Path(tmp).write_text(f"mcPaths({k},{body});\n", encoding="utf-8")
        files.append(name)
    return {"size": PATH_CHUNK, "files": files}


def _write_level_file(out_dir: Path, k: int, labels: np.ndarray) -> dict:
    """One level's labels as ``levels/KK.js`` (``mcLevel(k, {...})``, a script element: works
    from file://); returns the page's reference to it."""
    folder = out_dir / LEVELS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{LEVELS_DIR}/{k:02d}.js"
    with atomic_path(out_dir / name) as tmp:
        Path(tmp).write_text(f"mcLevel({k},{json.dumps(_labels_b64(labels, True))});\n", encoding="utf-8")
    return {"file": name}


def layout_2d(vectors: np.ndarray, method: str = "umap", random_state: int = 0,
              metric: str = "cosine") -> tuple[np.ndarray, str]:
    """2-D coordinates of ``vectors`` (in memory): UMAP (``metric``, 30 neighbours, min_dist
    0.1), or PCA when asked or when there are too few items for UMAP. Returns (xy, method used).

    The UMAP is laid out the engine's way (``stages.hierarchy``): the kNN graph from
    ``stages.neighbors.knn_graph`` (faiss, exact up to 10,000 items) handed to umap-learn, and
    200 epochs. On Imagenette val in a fresh process with an empty numba cache: 22 s instead of
    50 s (umap-learn's own NN-descent, which compiles its kernels, and 500 epochs), with the same
    picture (silhouette of the classes on the map 0.748 vs 0.753)."""
    X = np.asarray(vectors, dtype=np.float32)
    if method == "umap" and len(X) >= 10:
        from ..stages.neighbors import METRICS, knn_graph

        nn = int(min(30, max(2, len(X) - 1)))
        knn = knn_graph(X, nn, metric=metric) if metric in METRICS and len(X) > nn + 1 else None
        xy = UMAPReducer(n_neighbors=nn, n_components=2, min_dist=0.1, metric=metric, n_epochs=200,
                         random_state=random_state).fit(X, precomputed_knn=knn).embedding_
        return np.asarray(xy, dtype=np.float32), "umap"
    from sklearn.decomposition import PCA

    Xc = X - X.mean(axis=0)
    k = min(2, Xc.shape[0], Xc.shape[1])
    xy = PCA(n_components=k, random_state=random_state).fit_transform(Xc) if k else np.zeros((len(X), 0))
    if xy.shape[1] < 2:
        xy = np.hstack([xy, np.zeros((len(X), 2 - xy.shape[1]))])
    return np.asarray(xy, dtype=np.float32), "pca"


class RowsInMemory:
    """Vectors held in memory, taken as :meth:`NpyVectors.take` takes them from the file."""

    def __init__(self, X: np.ndarray):
        self.X = X

    def take(self, index) -> np.ndarray:
        return self.X[np.asarray(index, dtype=np.int64)]


def card_rows(run: RunDir):
    """Where the cards read the rows of their clusters: the run's vectors read whole in one pass
    when they take at most :data:`WHOLE_READ_MAX` bytes, else the file read window by window.
    Every level's cards read most rows again: at 50,000 x 1,280 that was 440,000 reads of one
    row and 3.4 s of a 12 s report, against 0.1 s for one read of the 256 MB; at a million
    rows the file is read row by row, never held whole (plain reads, not the memory map: the
    kernel's fault-around would map ~64 KB around every scattered row, 4.8 GB at 1M x 1280)."""
    src = NpyVectors(run.embeddings_path)
    if src.n * src.dim * 4 <= WHOLE_READ_MAX:
        return RowsInMemory(src.read(0, src.n))
    return src


def map_2d(run: RunDir, vectors: np.ndarray, method: str = "umap", random_state: int = 0,
           recompute: bool = False) -> np.ndarray:
    """2-D coordinates of every item, cached in the run folder (``map2d.npy``, stamped with the
    run id; recomputed when the run, the number of items or the method changed).

    A run clustered on a sample (``--fit-sample``) writes its map while it assigns the items
    (UMAP of the fitted items, the others placed by the predictor's neighbours), and that map
    is used whatever ``method`` says. Without one, the map is :func:`run_map`'s."""
    cached = None if recompute else run.read_map(len(vectors))
    if cached is not None and (cached[1].get("method") == method or cached[1].get("fit_sample")):
        return cached[0]
    # said: the report's silent minute on a large run (57 s for 50,000 items), cached after
    log.info("2-D map: laying out %s items (%s; kept in the run folder for the report and the studio) ...",
             f"{len(vectors):,}", method if len(vectors) <= MAP_FULL_MAX else "pca")
    xy, meta = run_map(run, vectors, method, random_state)
    try:
        run.write_map(xy, meta)
    except OutputError as e:  # a read-only run folder (a report --out elsewhere): used, not kept
        log.warning("2-D map: not kept in the run folder (%s); laid out again next time", e)
    log.info("2-D map: done in %.1f s", meta["seconds"])
    return xy


def run_map(run: RunDir, vectors: np.ndarray, method: str = "umap",
            random_state: int = 0) -> tuple[np.ndarray, dict]:
    """Lay out the run's 2-D map, not yet written: (xy, the metadata ``RunDir.write_map`` stores
    with it). The one rule for a run's map, :func:`map_2d`'s and the studio's, which lays out
    the UMAP map in the background and holds the run folder's lock only to write it. More than
    :data:`MAP_FULL_MAX` items get a PCA map (fitted on a sample, applied batch by batch): a
    UMAP of every item would take hours."""
    t = time.perf_counter()
    if len(vectors) > MAP_FULL_MAX:
        from sklearn.decomposition import PCA

        rng = np.random.default_rng(random_state)
        src = NpyVectors(run.embeddings_path)  # plain reads, not the memory map (see build_report)
        rows = np.sort(rng.choice(src.n, MAP_FULL_MAX, replace=False))
        pca = PCA(n_components=2, random_state=random_state).fit(src.take(rows))
        xy = np.empty((src.n, 2), np.float32)
        for s, X in src.batches():
            xy[s:s + len(X)] = pca.transform(X)
        method = "pca"
    else:
        xy, method = layout_2d(vectors, method, random_state)
    return xy, {"method": method, "seconds": round(time.perf_counter() - t, 2)}


def cluster_colors(ids: list[int]) -> dict[int, str]:
    """Distinct colours: golden-angle hues, alternating lightness."""
    out = {}
    for k, c in enumerate(sorted(ids)):
        h = (k * 0.61803398875) % 1.0
        light = 0.45 if k % 2 == 0 else 0.58
        r, g, b = colorsys.hls_to_rgb(h, light, 0.75)
        out[c] = f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"
    return out


def nested_colors(lab: np.ndarray, ref: np.ndarray, ref_colors: dict[int, str]) -> dict[int, str]:
    """Colours for another level of the same items that follow the run's own clusters (``ref``,
    coloured ``ref_colors``), so the map keeps its colour regions when the level changes: each
    cluster of ``lab`` takes the hue of the ``ref`` cluster holding most of its items; clusters
    sharing one (the children of a run cluster) are told apart by small hue steps and alternating
    lightness, the largest keeping the run cluster's colour."""
    ok = (lab >= 0) & (ref >= 0)
    ids = sorted(set(lab[lab >= 0].tolist()))
    anchor: dict[int, int | None] = {}
    if ok.any():
        pairs, cnt = np.unique(np.stack([lab[ok], ref[ok]]), axis=1, return_counts=True)
        for j in np.argsort(-cnt, kind="stable"):
            anchor.setdefault(int(pairs[0, j]), int(pairs[1, j]))
    sizes = dict(zip(*np.unique(lab[lab >= 0], return_counts=True)))
    fallback = cluster_colors(ids)
    groups: dict[int, list[int]] = {}
    out = {}
    for c in ids:
        a = anchor.get(c)
        if a is None or a not in ref_colors:
            out[c] = fallback[c]
        else:
            groups.setdefault(a, []).append(c)
    for a, members in groups.items():
        v = int(ref_colors[a][1:], 16)
        h, light, sat = colorsys.rgb_to_hls(((v >> 16) & 255) / 255, ((v >> 8) & 255) / 255, (v & 255) / 255)
        members.sort(key=lambda c: (-sizes[c], c))
        step = min(0.035, 0.25 / len(members))
        for j, c in enumerate(members):
            shift = ((j + 1) // 2) * step * (1 if j % 2 else -1)
            lj = light if j == 0 else (0.36, 0.52, 0.66)[j % 3]
            r, g, b = colorsys.hls_to_rgb((h + shift) % 1.0, lj, sat)
            out[c] = f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"
    return out


NOISE_COLOR = "#b9bcc2"
OUTLIER_COLOR = "#111111"


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def read_study(path: Path) -> dict | None:
    """Trials of the Optuna study (or studies) in ``path``: number, value(s), coverage if recorded."""
    try:
        import optuna
    except ImportError:  # pragma: no cover
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{path}"
    try:
        names = optuna.study.get_all_study_names(storage=storage)
    except Exception as e:  # noqa: BLE001 - a broken study must not break the report
        log.warning("could not read tuning study %s: %s", path, e)
        return None
    studies = []
    for name in names:
        try:
            st = optuna.load_study(study_name=name, storage=storage)
        except Exception as e:  # noqa: BLE001
            log.warning("could not load study %s: %s", name, e)
            continue
        directions = [d.name.lower() for d in st.directions]
        trials = []
        for t in st.trials:
            vals = t.values
            attrs = {k: v for k, v in t.user_attrs.items() if isinstance(v, int | float) and math.isfinite(v)}
            cov = next((attrs[k] for k in ("coverage", "clustered_share", "coverage_all") if k in attrs), None)
            if cov is None:
                cov = next((v for k, v in attrs.items() if "coverage" in k), None)
            qkey = next((k for k in ("quality", "silhouette", "score", "dbcv") if k in attrs), None)
            quality = attrs[qkey] if qkey else None
            trials.append({
                "n": t.number, "state": t.state.name.lower(),
                "value": None if not vals else (float(vals[0]) if math.isfinite(vals[0]) else None),
                "values": None if not vals else [float(v) if math.isfinite(v) else None for v in vals],
                "coverage": cov, "quality": quality, "quality_key": qkey,
                "params": {k: (v if isinstance(v, int | float | str | bool) else str(v)) for k, v in t.params.items()},
            })
        studies.append({"name": name, "directions": directions, "trials": trials})
    return {"studies": studies} if studies else None


def _flatten(d, prefix="", out=None, depth=0):
    out = {} if out is None else out
    if isinstance(d, dict) and depth < 6:
        for k, v in d.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out, depth + 1)
    elif isinstance(d, list) and len(d) > 12:
        out[prefix] = f"[{len(d)} items]"
    else:
        out[prefix] = d if isinstance(d, int | float | str | bool) or d is None else json.dumps(d, default=str)
    return out


# --------------------------------------------------------------------------- page
def _asset(name: str) -> str:
    return resources.files("mediacluster.report").joinpath("assets", name).read_text("utf-8")


def _img(thumbs: dict, i: int, paths: list, cls: str = "") -> str:
    t = thumbs.get(i)
    title = html.escape(str(paths[i]) if paths[i] is not None else "")
    if t is None:
        return f'<span class="noimg {cls}" title="{title}" data-i="{i}">?</span>'
    return f'<img loading="lazy" decoding="async" class="{cls}" src="thumbs/{t}" title="{title}" data-i="{i}" alt="">'


def build_report(run_dir: str | Path, out_dir: str | Path | None = None, thumb_size: int = 96,
                 n_representatives: int = 12, n_borderline: int = 6, gallery_size: int = 60,
                 map_method: str = "umap", workers: int | None = None, progress: bool = True,
                 title: str | None = None, name: bool = True) -> Path:
    """Write ``out_dir/index.html`` (default ``run_dir/report``) and its thumbnails; return the
    HTML path. ``name=True`` computes automatic names first when the run has none."""
    if isinstance(thumb_size, bool) or not isinstance(thumb_size, numbers.Integral) or thumb_size < 1:
        raise ParameterError(f"thumb_size must be at least 1 pixel, got {thumb_size}", "thumb_size")
    Int(1, none_ok=True).check(workers, "workers")  # -1 stopped the thread pool after the map
    run = run_dir if isinstance(run_dir, RunDir) else RunDir.open(run_dir)
    run_dir = run.path
    out_dir = Path(out_dir) if out_dir else run.file("report")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file in the way, a read-only folder: the user's to fix (exit 2)
        raise output_error(e, out_dir) from e
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    assign = run.read_assignments()
    curated = run.read_curated()
    # the studio's curated clusters, when a person has worked on the run, are what it shows
    label_col = "curated_cluster" if curated is not None and "curated_cluster" in assign else "cluster"
    labels = assign[label_col].to_numpy().astype(np.int64)
    probs = assign["probability"].to_numpy().astype(np.float64) if "probability" in assign else np.ones(len(labels))
    paths = [p if isinstance(p, str) else None for p in assign["path"].tolist()] if "path" in assign else [None] * len(labels)
    ids = [str(x) for x in assign["id"].tolist()] if "id" in assign else [str(i) for i in range(len(labels))]
    # shown to people: a file name that is not UTF-8 in its escaped form (see fileio)
    shown_paths = [display_text(p if p is not None else i) for p, i in zip(paths, ids)]
    true_labels = assign["label"].tolist() if "label" in assign else None
    has_label = labelled(true_labels) if true_labels is not None else None  # metrics' rule: None / NaN are none
    vectors = run.read_embeddings(mmap=True).vectors
    n = len(labels)
    if len(vectors) != n:
        raise RunDirError(f"{run_dir}: {len(vectors)} embeddings but {n} assignments; the folder is "
                          "damaged, re-run cluster")
    info = run.info
    clusters_list = run.read_clusters()
    evaluation = run.read_evaluation()

    cluster_ids = sorted(set(labels[labels >= 0].tolist()))
    if name and cluster_ids and not any(e.get("name") for e in clusters_list) \
            and not run.read_automatic_names():
        try:
            from ..naming.names import name_run

            name_run(run)
            clusters_list = run.read_clusters()
        except Exception as e:  # noqa: BLE001 - naming is optional for the page
            log.warning("automatic naming failed: %s", e)
    timings["load"] = time.perf_counter() - t0

    t = time.perf_counter()
    xy = map_2d(run, vectors, method=map_method)
    timings["map2d"] = time.perf_counter() - t

    audio = info.get("encoder", {}).get("media") == "audio"
    t = time.perf_counter()
    rows = card_rows(run)  # each cluster's rows are taken and normalised on their own
    names = load_names(run)
    hand = hand_names(run)
    auto = automatic_names(run)
    meta_by_id = {int(e["cluster"]): e for e in clusters_list}
    if label_col == "curated_cluster":  # clusters the studio made (split, new) have their own
        meta_by_id.update({int(e["id"]): e for e in curated.get("clusters", [])
                           if int(e["id"]) not in meta_by_id or e.get("top_classes")})
    # clusters a person marked as junk in the studio: shown, and said to be junk
    junk_ids = ({int(e["id"]) for e in curated.get("clusters", []) if e.get("junk")}
                if label_col == "curated_cluster" else set())
    auto_records = run.read_automatic_names()
    alts_by_id = {int(e["cluster"]): e.get("alternatives", []) for e in auto_records}
    # how sure each automatic name is (naming.support); a person's names are sure
    sure_by_id = support_of_records(auto_records) or support_of_records(clusters_list)
    big = n > INLINE_MAX

    def cards_for(lab, ids_, names_, auto_, hand_, meta_, alts_, colors_, limit=None, probs_=probs,
                  sample=CENTRE_SAMPLE, n_reps=n_representatives, n_border=n_borderline, junk_=frozenset(),
                  sure_=None):
        """One card entry per cluster of ``lab`` (largest first; ``limit``: the largest only);
        without membership probabilities (``probs_`` None) no borderline members; ``junk_``
        the clusters shown as junk; ``sure_``: cluster id -> how sure its automatic name is
        (``naming.support`` fields; a hand-given name is sure)."""
        rng_c = np.random.default_rng(0)
        sizes = {c: int(v) for c, v in zip(*np.unique(lab[lab >= 0], return_counts=True))}
        chosen = set(sorted(ids_, key=lambda c: (-sizes.get(c, 0), c))[:limit])
        out = []
        for c in sorted(chosen):
            idx = np.flatnonzero(lab == c)
            # a large cluster's typical members are found among a random sample of its members
            cand = np.sort(rng_c.choice(idx, sample, replace=False)) if len(idx) > sample else idx
            reps = cand[nearest_to_centre(rows.take(cand), np.arange(len(cand)), n_reps)]
            border = idx[np.argsort(probs_[idx], kind="stable")[:n_border]] if probs_ is not None else []
            border = np.array([i for i in border if i not in set(reps.tolist())], dtype=np.int64)
            m = meta_.get(c, {})
            entry = {
                "id": c, "name": names_.get(c, f"cluster {c}"), "auto_name": auto_.get(c), "hand": c in hand_,
                "junk": c in junk_,
                "alternatives": alts_.get(c) or m.get("alternatives", []),
                "size": int(len(idx)), "share": float(len(idx) / n), "color": colors_[c],
                "reps": reps.tolist(), "border": border.tolist(),
                "mean_probability": float(probs_[idx].mean()) if probs_ is not None else None,
                "top_classes": m.get("top_classes", [])[:5],
            }
            if c in hand_:
                entry.update(name_sure=True, name_why=BY_HAND)
            elif (sure_ or {}).get(c):
                entry.update(sure_[c])
            known = idx[has_label[idx]] if true_labels is not None else idx[:0]
            if len(known):  # shares of the labelled members: an unlabelled one is no label "nan"
                vals, cnt = np.unique(np.array([str(true_labels[i]) for i in known]), return_counts=True)
                o = np.argsort(-cnt)[:3]
                entry["true_labels"] = [{"label": display_text(vals[j]), "share": float(cnt[j] / len(known))} for j in o]
            out.append(entry)
        out.sort(key=lambda e: -e["size"])
        return out

    run_colors = cluster_colors(cluster_ids)
    clusters = cards_for(labels, cluster_ids, names, auto, hand, meta_by_id, alts_by_id, run_colors, junk_=junk_ids,
                         sure_=sure_by_id)
    # the run's hierarchy: one view per level (its labels, names, colours and cards); the level
    # the run's clusters come from shows the run's own names. A curated run shows the tree the
    # published model serves (curated_tree): the person's clusters as the finest level under the
    # run's coarser levels, those named as the run named the clusters they come from
    run_levels_ = run.read_levels(assign)
    tree = curated_tree(run_levels_, labels, sorted(junk_ids)) if label_col == "curated_cluster" else None
    if label_col == "curated_cluster":
        levels, run_level = ([], None) if tree is None else (list(tree.rows), len(tree.rows) - 1)
    else:
        levels, run_level = run_levels(run_levels_, labels)
    views = []
    if levels:
        if run_level is None:
            views.append({"label": "the run's clusters", "run": True, "n_clusters": len(cluster_ids)})
        todo = [k for k in range(len(levels)) if k != run_level]
        level_probs = run_levels_.probabilities if tree is None else None  # per level and item, when kept
        # every level's names as the cluster job stored them (level_names.json); a run made
        # before that (or with --no-names) gets the missing levels named here by the same rule
        # (the names of level L: run_level_names, automatic < names.yaml's levels: < the studio's)
        stored = run.read_level_names()
        named_by = run_level_names(run)
        if tree is None:
            named_levels = {k: with_hand_names(stored[run_levels_.index[k]], named_by.get(run_levels_.index[k], {}))
                            for k in todo if run_levels_.index[k] in stored}
        else:  # the tree's clusters are the run's (their names), the junk branch the junk's
            by_level = tree.names_by_level(named_by, {}, [names.get(c, f"cluster {c}") for c in sorted(junk_ids)])
            named_levels = {}
            for k in todo:
                if tree.index[k] in stored:
                    alts = tree.alternatives(k, stored)  # the level's, read once
                    named_levels[k] = [{"cluster": int(c), "name": nm, "alternatives": alts.get(int(c), [])}
                                       for c, nm in by_level[str(k)].items()]
        missing = [k for k in todo if k not in named_levels]
        if missing:
            try:
                from ..naming.names import name_levels_of_run
                from ..stages.cluster import single_blas_thread

                # many small products: one BLAS thread is 4x faster on a busy machine (measured)
                with single_blas_thread():
                    every = name_levels_of_run(run, levels, level=run_level)  # nested down to the level in use
                    named_levels.update({k: every[k] if tree is not None else
                                         with_hand_names(every[k], named_by.get(run_levels_.index[k], {})) for k in missing})
            except Exception as e:  # noqa: BLE001 - names are optional for the page
                log.warning("naming the hierarchy's levels failed: %s", e)
        for k, lab in enumerate(levels):
            ids_k = sorted(set(lab[lab >= 0].tolist()))
            label = f"level {k}: {len(ids_k)} clusters"
            if k == run_level:
                views.append({"label": label + (" (the run's)" if tree is None else " (curated)"), "run": True,
                              "n_clusters": len(ids_k)})
                continue
            named = named_levels.get(k, [])
            names_k = {int(e["cluster"]): e["name"] for e in named if e.get("name")}
            alts_k = {int(e["cluster"]): e.get("alternatives", []) for e in named}
            colors_k = nested_colors(lab, labels, run_colors)
            junk_k = {len(tree.sources[k]["clusters"]) - 1} if tree is not None and tree.sources[k]["clusters"][-1] < 0 else set()
            sure_k = support_of_records(named)
            hand_k = {int(e["cluster"]) for e in named if e.get("name_why") == BY_HAND}  # a person's (the mark)
            cards_k = cards_for(lab, ids_k, names_k, {}, hand_k, {}, alts_k, colors_k, limit=LEVEL_CARDS_MAX,
                                probs_=level_probs[k] if level_probs is not None else None,
                                sample=LEVEL_CENTRE_SAMPLE, n_reps=max(1, n_representatives // 2),
                                n_border=n_borderline // 2, junk_=junk_k, sure_=sure_k)
            unsure_k = {c: r.get("name_why", "unsure") for c, r in sure_k.items() if r.get("name_sure") is False
                        and c in names_k}  # the legend marks them as the cards do
            views.append({"label": label, "run": False, "n_clusters": len(ids_k), "labels": lab,
                          "cards": cards_k, "legend": [{"id": c, "name": names_k.get(c, f"cluster {c}"),
                                                        "color": colors_k[c], "size": int((lab == c).sum()),
                                                        **({"name_sure": False, "name_why": unsure_k[c]}
                                                           if c in unsure_k else {})}
                                                       for c in sorted(ids_k, key=lambda c: -(lab == c).sum())]})
    clips: dict[int, str | None] = {}
    if audio:  # players for the cards' representatives only
        from .audio import make_audio_clips

        rep_idx = sorted({i for e in clusters + [c for v in views for c in v.get("cards", [])] for i in e["reps"]})
        clips = dict(zip(rep_idx, make_audio_clips([paths[i] for i in rep_idx], out_dir / "audio",
                                                    workers=workers, progress=progress)))
    rng = np.random.default_rng(0)
    noise_idx = np.flatnonzero(labels == -1)
    out_idx = np.flatnonzero(labels == -2)
    noise_show = np.sort(rng.choice(noise_idx, min(gallery_size, len(noise_idx)), replace=False)) if len(noise_idx) else noise_idx
    out_show = np.sort(rng.choice(out_idx, min(gallery_size, len(out_idx)), replace=False)) if len(out_idx) else out_idx
    timings["clusters"] = time.perf_counter() - t  # cards, and every level's names and cards
    study_db = _study_of(run)
    study = read_study(study_db) if study_db is not None else None
    t = time.perf_counter()
    # every item's thumbnail for a run of up to INLINE_MAX items; above, only those the page shows
    # (cards, galleries): the map's hover loads the original file when it is first pointed at
    need = (range(n) if not big else
            sorted({i for e in clusters + [c for v in views for c in v.get("cards", [])]
                    for i in e["reps"] + e["border"]} | set(noise_show.tolist()) | set(out_show.tolist())))
    reposted = most_reposted(run)  # the "Most reposted" gallery (runs made with --dedup)
    need = sorted(set(need) | set(gallery_rows(reposted))) if big else list(need)
    failed: dict[int, str] = {}  # position in ``need`` -> reason
    if audio:  # spectrograms stand in for thumbnails (mediacluster.report.audio)
        from .audio import make_spectrogram_thumbnails  # librosa: loaded for audio runs only

        made = make_spectrogram_thumbnails([paths[i] for i in need], out_dir / "thumbs", size=thumb_size,
                                           workers=workers, progress=progress, failures=failed)
    else:
        made = make_thumbnails([paths[i] for i in need], out_dir / "thumbs", size=thumb_size, workers=workers,
                               progress=progress, failures=failed)
    thumbs = dict(zip(need, made))
    failures = {need[j]: r for j, r in failed.items()}
    timings["thumbnails"] = time.perf_counter() - t
    if failures:  # said, not swallowed: the page shows "?" for these
        first = next(iter(failures))
        log.warning("%d of %d items have no thumbnail in the report, e.g. %s: %s (all listed in %s)",
                    len(failures), len(need), display_text(paths[first]), failures[first], out_dir / "report.json")

    # thumbnails are referenced by index into a table of distinct names (compact at 100k items)
    tnames = sorted({t for t in made if t})
    tpos = {t: i for i, t in enumerate(tnames)}
    data = {
        "n": n, **_coords(xy, labels, big), "thumbs": [t[:-len(".jpg")] for t in tnames],
        "clusters": [{**{k: e[k] for k in ("id", "name", "color", "size", "junk")},  # the legend
                      **({"name_sure": False, "name_why": e.get("name_why", "unsure")}
                         if e.get("name_sure") is False else {})} for e in clusters],
        "noise_color": NOISE_COLOR, "outlier_color": OUTLIER_COLOR,
        "originals": bool(not audio and any(p is not None for p in paths[:1000])),
        "study": study,
    }
    if views:
        # a large run's level labels are script files loaded when the level is first shown
        # (2-4 bytes per item and level would otherwise multiply the page's size)
        data["levels"] = {"current": next(k for k, v in enumerate(views) if v["run"]), "views": [
            {"label": v["label"], "n_clusters": v["n_clusters"]} if v["run"] else
            {"label": v["label"], "n_clusters": v["n_clusters"], "clusters": v["legend"],
             **(_write_level_file(out_dir, k, v["labels"]) if big else _labels_b64(v["labels"], big))}
            for k, v in enumerate(views)]}
    if big:
        data["tmap"] = {str(i): tpos[t] for i, t in thumbs.items() if t}
        data["path_chunks"] = _write_path_chunks(out_dir, shown_paths)
    else:
        data["t"] = _b64(np.array([tpos[thumbs[i]] if thumbs[i] else -1 for i in range(n)], dtype=np.int32))
        data["paths"] = [str(p) for p in shown_paths]
    summary = info.get("summary", {})
    t = time.perf_counter()
    page = _render(
        title=title or f"mediacluster report - {display_text(run_dir.name)}", run_dir=display_text(run_dir), n=n, clusters=clusters,
        thumbs=thumbs, paths=shown_paths, noise_show=noise_show, n_noise=len(noise_idx), out_show=out_show,
        n_out=len(out_idx), info=info, summary=summary, evaluation=evaluation, study=study, data=data,
        names_method=next((e.get("method") for e in auto_records if e.get("method")), None),
        hand_names=bool(hand), clips=clips, views=views,
    )
    anchor = '<section id="noise">' if '<section id="noise">' in page else "</body>"  # before the noise gallery
    page = page.replace(anchor, reposts_section(
        reposted, lambda i: _img(thumbs, i, shown_paths), labels, names) + anchor, 1)
    html_path = out_dir / "index.html"
    with atomic_path(html_path) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    timings["html"] = time.perf_counter() - t
    size = html_path.stat().st_size
    chunk_bytes = sum(p.stat().st_size for p in (out_dir / PATHS_DIR).glob("*.js")) if big else 0
    write_json(out_dir / "report.json", {
        "run_id": run.run_id, "items": n, "clusters": len(clusters), "html_bytes": size,
        "path_chunk_bytes": chunk_bytes, "thumbnails": len(tnames), "timings_s": timings,
        "missing_thumbnails": [{"path": paths[i], "reason": r} for i, r in sorted(failures.items())]})
    log.debug("report: %s (%.1f MB)", html_path, size / 1e6)  # the command prints it (cli.report)
    return html_path


def missing_thumbnails(html_path) -> list[dict]:
    """The items a written report shows without a thumbnail, with reasons (its ``report.json``)."""
    try:
        return list(read_json(Path(html_path).parent / "report.json").get("missing_thumbnails") or [])
    except (OSError, ValueError):
        return []


def _study_of(run: RunDir) -> Path | None:
    """The tuning study a run came from: ``study.db`` beside a tuning run's ``best/`` folder."""
    for p in (run.file("study.db"), run.path.parent / "study.db"):
        if p.exists() and (p.parent == run.path or run.info.get("command") == "tune"):
            return p
    return None


SKIPPED_SHOWN = 200  # files listed on the page; run.json has them all


def _skipped_html(skipped: list) -> str:
    """The files the run skipped, with why, so that a count in the header is never all one sees."""
    if not skipped:
        return ""
    rows = "".join(f"<li><code>{html.escape(str(e.get('path')))}</code>: {html.escape(str(e.get('reason')))}</li>"
                   for e in skipped[:SKIPPED_SHOWN])
    more = (f"<li class='muted'>and {len(skipped) - SKIPPED_SHOWN:,} more (run.json <code>skipped</code>)</li>"
            if len(skipped) > SKIPPED_SHOWN else "")
    return f"<h3 id='skipped'>Skipped files ({len(skipped):,})</h3><ul class='skipped'>{rows}{more}</ul>"


def _table(d: dict) -> str:
    rows = []
    for k, v in d.items():
        if isinstance(v, float):
            v = f"{v:.4g}"
        rows.append(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>")
    return "<table class='kv'>" + "".join(rows) + "</table>"


def _render(*, title, run_dir, n, clusters, thumbs, paths, noise_show, n_noise, out_show, n_out, info, summary,
            evaluation, study, data, hand_names, clips=None, views=(), names_method=None) -> str:
    esc = html.escape

    def card(e) -> str:
        if clips:  # audio: spectrogram + a player that plays only when pressed
            from .audio import audio_player_html

            reps = "".join(f'<figure class="aclip">{_img(thumbs, i, paths)}{audio_player_html(clips.get(i))}</figure>'
                           for i in e["reps"])
        else:
            reps = "".join(_img(thumbs, i, paths) for i in e["reps"])
        border = "".join(_img(thumbs, i, paths, "border") for i in e["border"])
        tc = ", ".join(f"{esc(str(x['class']))} {100 * x['share']:.0f}%" for x in e["top_classes"])
        tl = ", ".join(f"{esc(x['label'])} {100 * x['share']:.0f}%" for x in e.get("true_labels", []))
        alts = ", ".join(esc(a) for a in e["alternatives"][:3])
        auto = ""
        if e["hand"] and e["auto_name"]:
            auto = f"<div class='meta'>automatic name: {esc(e['auto_name'])}</div>"
        unsure = e.get("name_sure") is False  # marked, muted and explained; the name is unchanged
        title = f"{e['name']}: {e.get('name_why', 'unsure')}" if unsure else e["name"]
        mark = (f'<span class="unsure-mark" title="{esc(e.get("name_why", "unsure"))}">?</span>' if unsure else "")
        return f"""
<section class="card" data-cluster="{e['id']}" data-name-sure="{'no' if unsure else 'yes'}" tabindex="0" title="click to show only this cluster on the map">
  <header><span class="swatch" style="background:{e['color']}"></span>
    <h3{' class="unsure"' if unsure else ''} title="{esc(title)}">{esc(e['name'])}{mark}{' <span class="hand" title="named by hand (names.yaml or the studio)">&#9998;</span>' if e['hand'] else ''}{' <span class="junk" title="marked as junk in the studio">junk</span>' if e.get('junk') else ''}</h3>
    <span class="cid">#{e['id']}</span></header>
  <div class="meta"><b>{e['size']:,}</b> items &middot; {100 * e['share']:.1f}%{f" &middot; mean membership {e['mean_probability']:.2f}" if e['mean_probability'] is not None else ''}</div>
  {f"<div class='meta'>also: {alts}</div>" if alts else ''}{auto}
  {f"<div class='meta'>top classes: {tc}</div>" if tc else ''}
  {f"<div class='meta'>true labels: {tl}</div>" if tl else ''}
  <div class="grid{' audio' if clips else ''}">{reps}</div>
  {f'<div class="sub">borderline (lowest membership)</div><div class="grid small">{border}</div>' if border else ''}
</section>"""
    run_cards = "".join(card(e) for e in clusters)
    level_select = ""
    if views:  # one container of cards per level; the page shows the selected one
        boxes = []
        for k, v in enumerate(views):
            if v["run"]:
                boxes.append(f'<div class="cards" data-view="{k}">{run_cards}</div>')
                continue
            more = v["n_clusters"] - len(v["cards"])
            note = (f'<p class="muted">the {len(v["cards"])} largest of {v["n_clusters"]} clusters; '
                    'the map and the legend show them all</p>' if more > 0 else "")
            boxes.append(f'<div class="cards" data-view="{k}" hidden>{note}{"".join(card(e) for e in v["cards"])}</div>')
        cards_html = "".join(boxes)
        current = next(k for k, v in enumerate(views) if v["run"])
        opts = "".join(f'<option value="{k}"{" selected" if k == current else ""}>{esc(v["label"])}</option>'
                       for k, v in enumerate(views))
        level_select = (f'<label class="levels" title="the run\'s hierarchy, coarse to fine: the map, the legend '
                        f'and the cards show the clusters of the chosen level">level '
                        f'<select class="level-select">{opts}</select></label>')
    else:
        cards_html = f'<div class="cards">{run_cards}</div>'
    noise_gal = "".join(_img(thumbs, int(i), paths) for i in noise_show)
    out_gal = "".join(_img(thumbs, int(i), paths) for i in out_show)
    params = {}
    for key in ("command", "source", "seed", "finished"):
        if key in info:
            params[key] = info[key]
    params.update({f"encoder.{k}": v for k, v in (info.get("encoder") or {}).items()})
    params.update(_flatten(info.get("pipeline") or {}, "pipeline"))
    scores = _flatten({k: v for k, v in summary.items() if k != "timings_s"})  # no Python dict reprs
    skipped = info.get("skipped") or []  # the files the run could not use, each with its reason
    timings = summary.get("timings_s") or info.get("timings_s") or {}
    eval_html = _table(_flatten(evaluation)) if evaluation else "<p class='muted'>no evaluation.json in the run folder (run <code>mediacluster evaluate</code>)</p>"
    study_html = ("<div id='study-plots'></div>" if study else
                  "<p class='muted'>no tuning study (study.db) in the run folder</p>")
    # inside <script> the HTML parser still reacts to "</script", "<!--" and "<script": with
    # every <, > and & written as a JSON escape no file name can end or re-open the element
    payload = (json_text(data, indent=None, separators=(",", ":"))
               .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))
    n_clusters = len(clusters)
    # most automatic names of the run unsure: say so once, above the cards
    names_note = ""
    if mostly_unsure([e.get("name_sure") for e in clusters if not e["hand"]]):
        n_uns = sum(e.get("name_sure") is False for e in clusters)
        names_note = (f'<p class="note names-unsure">{n_uns} of {n_clusters} names are unsure (marked ?): '
                      f'{esc(unsure_note(names_method))}.</p>')
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>{_asset('report.css')}</style>
</head><body>
<header class="top"><h1>{esc(title)}</h1>
<div class="stats"><b>{n:,}</b> items &middot; <b id="n-clusters">{n_clusters}</b> clusters &middot;
noise <b>{n_noise:,}</b> ({100 * n_noise / max(n, 1):.1f}%) &middot; outliers <b>{n_out:,}</b> ({100 * n_out / max(n, 1):.1f}%)
{f'&middot; <a href="#skipped">{len(skipped):,} file(s) skipped</a> ' if skipped else ''}&middot; <span class="muted">{esc(str(run_dir))}</span></div>
<nav><a href="#map-section">map</a> <a href="#clusters">clusters</a> <a href="#noise">noise</a> <a href="#outliers">outliers</a> <a href="#run">run</a> <a href="#tuning">tuning</a></nav>
</header>
<main>
<section id="map-section">
  <div class="maphead"><h2>Map</h2>
   <span class="muted">2-D UMAP of the embeddings &middot; wheel: zoom &middot; drag: pan &middot; hover: preview &middot; click a cluster card or legend entry to filter</span>
   <button id="reset">show all</button> <span id="filter-label" class="muted"></span></div>
  <div id="mapwrap"><canvas id="map" width="900" height="620" data-filter="all"></canvas>
   <div id="tip" hidden><img id="tipimg" alt=""><div id="tiptext"></div></div></div>
  {level_select}<div id="legend"></div>
</section>
<section id="clusters"><h2>Clusters</h2>
<p class="muted">Cards are sorted by size. Representative images are the members nearest the cluster centre; borderline ones have the lowest membership probability.
{'Names marked &#9998; were given by a person (names.yaml or the studio).' if hand_names else 'Rename, merge and split clusters in the studio (<code>mediacluster studio RUN_DIR</code>), or write <code>names.yaml</code> (cluster id: name) in the run folder, and re-run <code>mediacluster report</code>.'}</p>
{names_note}{level_select}{cards_html}</section>
<section id="noise"><h2>Noise <span class="muted">({n_noise:,} items, label -1{', a random sample' if n_noise > len(noise_show) else ''})</span></h2>
<div class="grid gallery">{noise_gal or '<span class="muted">none</span>'}</div></section>
<section id="outliers"><h2>Outliers <span class="muted">({n_out:,} items, label -2{', a random sample' if n_out > len(out_show) else ''})</span></h2>
<div class="grid gallery">{out_gal or '<span class="muted">none</span>'}</div></section>
<section id="run"><h2>Run</h2>
<div class="cols"><div><h3>Parameters</h3>{_table(params)}</div>
<div><h3>Summary</h3>{_table(scores)}<h3>Time per stage (s)</h3>{_table(timings)}{_skipped_html(skipped)}</div>
<div><h3>Scores (evaluation.json)</h3>{eval_html}</div></div></section>
<section id="tuning"><h2>Tuning</h2>{study_html}</section>
</main>
<script id="mc-data" type="application/json">{payload}</script>
<script>{_asset('pointmap.js')}</script>
<script>{_asset('report.js')}</script>
</body></html>
"""
