"""Duplicates of a whole collection: the ``cluster --dedup`` step and the ``dups`` job.

``find_in_embeddings(emb)`` runs a :class:`DuplicateFinder` on an embedded collection: the
embedding cache already hashed every file, so exact copies cost nothing more; images are
also checked perceptually and geometrically (their files), audio clips by their vectors'
nearest neighbours confirmed by an audio fingerprint (their files; ``fingerprint``), precomputed
vectors by their vectors alone (``semantic_only_threshold``).

``duplicate_columns`` gives the two columns the run's ``assignments`` gain with ``--dedup``
(``duplicate_group``: -1 for an item without duplicates; ``duplicate_of``: the id of the
group's representative, empty for the representative itself and for unique items);
``cluster_duplicates`` the per-cluster counts ``clusters.json`` carries.

``find_duplicates_in(source, out)`` is ``mediacluster dups SOURCE --out DIR``: one row per item
in ``dups.parquet`` / ``dups.csv``, a page of the largest groups, ``dups.html`` (thumbnails copied
into ``DIR/thumbs``), and ``dups.json``: the counts and the collection root. As in a run folder
(``mediacluster.locations``), ``path`` is stored relative to the collection root (the folder
given, a manifest's folder; absolute for a file outside it) and the root is recorded as it was
and relative to ``DIR``; ``read_dups(DIR, collection_root=)`` gives the table with absolute
paths, found again after the collection and ``DIR`` moved together, or where ``collection_root``
says. ``id`` stays what it was (a file's absolute path when ``dups`` ran): the column to join on.
"""

from __future__ import annotations

import html
import os
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..data import Skipped
from ..embed.store import STALE_IDLE_DAYS  # the store's rule for every stale kind (re-exported)
from ..errors import InputError, ParameterError
from ..fileio import path_to_text, text_series
from ..locations import ROOT_RECORDED_BESIDE, under
from .finder import DuplicateFinder
from .fingerprint import AudioCheck
from .grouping import KINDS

#: Files ``find_duplicates_in`` writes into its output folder.
TABLE = "dups.parquet"
TABLE_CSV = "dups.csv"
PAGE = "dups.html"
AUDIO = "audio"  # the page's audio excerpts (players), beside its thumbnails
INFO = "dups.json"
THUMBS = "thumbs"
#: ``dups.json``'s format: 1 records the collection root; outputs without it hold absolute paths.
INFO_FORMAT = "mediacluster.dups/1"
#: its keys of the collection root (as it was, relative to the output): the rule
#: ``locations.ROOT_RECORDED_BESIDE`` names, so the table read back as a manifest finds its files
_, ROOT_KEY, ROOT_FROM_OUT_KEY = ROOT_RECORDED_BESIDE[TABLE]
#: what duplicates of audio clips are (``find_in_rows``), said by ``cluster --dedup`` and ``dups``
_CHECK = AudioCheck()
AUDIO_RULE = ("duplicates of audio clips: exact copies (the same bytes), and copies re-encoded, resampled, "
              "trimmed, padded with silence, louder or quieter, noisier or in stereo, found among each clip's nearest "
              "vectors and nearest spectrum profiles (level- and silence-free) and confirmed by an audio fingerprint (spectrograms aligned in time); another recording of the "
              "same sound is not a duplicate, and the vectors alone never decide; a recording over "
              f"{_CHECK.excerpt_seconds:.0f} s is compared by its middle {_CHECK.excerpt_seconds:.0f} s and "
              f"{_CHECK.probes} pieces of {_CHECK.probe_seconds:g} s spread over it (never decoded whole), so "
              "an excerpt cut from anywhere in it is found when it is longer than the pieces' spacing plus a "
              f"piece (the recording's length / {_CHECK.probes - 1} + {_CHECK.probe_seconds:g} s), a shorter one "
              "by chance (see README, Duplicates and reposts)")


#: candidates per audio clip (its nearest vectors) sent to the fingerprint check, unless
#: ``n_neighbors`` is given: in 3,000 FSDD clips (MFCC) the original was among a repost's 10
#: nearest for 339 of 360 reposts, 30 nearest for 352, 100 for 357 (benchmarks/audio_reposts.py)
AUDIO_NEIGHBORS = 30


def audio_rule(media: str, params: dict | None) -> str | None:
    """:data:`AUDIO_RULE` when ``media`` is audio and no vector threshold was given, else None."""
    return AUDIO_RULE if media == "audio" and "semantic_only_threshold" not in (params or {}) else None


def vectors_rule(counts: dict | None, flag: str = "--dedup-param") -> str | None:
    """What a duplicate was when the vectors alone decided (``summary``'s ``semantic_only_cutoff``),
    for ``cluster --dedup`` and ``dups`` (``flag="--param"``) to print; None otherwise."""
    cutoff = (counts or {}).get("semantic_only_cutoff")
    if cutoff is None:
        return None
    nd = counts.get("neighbour_distance")
    scale = ("" if nd is None else
             f" (the larger of semantic_only_threshold and 1 - semantic_only_relative x this collection's "
             f"neighbour distance, {nd:.4g})")
    return (f"duplicates by their vectors alone: cosine >= {cutoff:.4f}{scale}; set the rule with "
            f"{flag} semantic_only_threshold=COSINE or semantic_only_relative=null")


def make_finder(params: dict | None = None, progress: bool = True, workers: int | None = None) -> DuplicateFinder:
    """A finder with ``params`` (its constructor's names; unknown names are refused)."""
    params = dict(params or {})
    known = set(DuplicateFinder().get_params())
    bad = sorted(set(params) - known)
    if bad:
        raise ParameterError(f"unknown duplicate finder parameter(s) {bad}; known: {sorted(known)}", bad[0])
    # a ``workers`` / ``progress`` among ``params`` (``dups --param workers=2``) wins over the arguments
    return DuplicateFinder(**{"progress": progress, "workers": workers, **params})


def find_in_embeddings(emb, media: str = "image", params: dict | None = None, progress: bool = True,
                       workers: int | None = None, vectors=None, store=None) -> DuplicateFinder:
    """Fit a finder on an embedded collection (``data.Embeddings``): files (images and audio clips),
    vectors, and the content hashes the embedding cache computed. ``vectors``: the same rows
    read from elsewhere (a run's memory-mapped ``embeddings.npy``) instead of ``emb.vectors``.
    ``store``: the embedding cache, which keeps the images' signatures and pair verdicts
    (``DuplicateFinder.fit``)."""
    content = getattr(emb, "content_hashes", None)
    return find_in_rows(emb.vectors if vectors is None else vectors, emb.ids, emb.paths, media=media,
                        content_hashes=content, params=params, progress=progress, workers=workers,
                        store=store)


def find_in_rows(vectors, ids, paths=None, media: str = "vector", content_hashes=None,
                 params: dict | None = None, progress: bool = True, workers: int | None = None,
                 store=None) -> DuplicateFinder:
    """Fit a finder on a collection's rows: ``vectors`` (an array, or a ``.npy`` memory map that
    the search reads block by block, never whole), ``ids``, and for images their files
    (``paths``: perceptual hashes and the geometric check) and known content hashes (exact
    copies). Precomputed vectors are compared by their vectors alone. Audio clips: exact copies,
    then each clip's :data:`AUDIO_NEIGHBORS` nearest vectors confirmed by the fingerprint check
    of their files (finder ``media="audio"``); never by the vectors alone unless ``params`` sets
    ``semantic_only_threshold``: the audio encoders' vectors of different recordings are as
    close as a copy's (MFCC: the median FSDD clip has another recording within cosine 0.9985,
    far above the vectors-only threshold of 0.97, so groups swallowed whole collections;
    louder or re-sampled copies fall to 0.9965 / 0.994; benchmarks/RESULTS.md, "End to end: an
    audio collection" and "Duplicates: audio reposts")."""
    if audio_rule(media, params):
        params = {**(params or {}), "semantic_only_threshold": None}
    files = paths is not None and all(p is not None for p in paths)
    if media == "audio" and files:
        params = {"n_neighbors": AUDIO_NEIGHBORS, **(params or {}), "media": "audio"}
    finder = make_finder(params, progress, workers)
    with_files = media in ("image", "audio") and files
    if content_hashes is not None and len(content_hashes) != len(vectors):
        content_hashes = None
    if not isinstance(vectors, np.ndarray) or vectors.dtype != np.float32:
        vectors = np.asarray(vectors, np.float32)  # a float32 array or memory map is used as it is
    return finder.fit(list(paths) if with_files else None, vectors, content_hashes=content_hashes,
                      ids=[str(i) for i in ids], store=store if with_files else None)


def duplicate_columns(finder: DuplicateFinder, rows: slice | None = None, index=None) -> dict:
    """``duplicate_group`` (int, -1: none) and ``duplicate_of`` (representative's id, None for
    representatives and unique items), one value per fitted item (``rows``: those items only,
    for a table written batch by batch), for ``DataFrame.assign`` on a table with ``index``
    (``duplicate_of`` is an object column: an id that is not UTF-8 stays as it is)."""
    ids = finder.ids_
    rows = rows if rows is not None else slice(None)
    return {"duplicate_group": finder.labels_[rows].astype(np.int64),
            "duplicate_of": text_series((ids[r] if r >= 0 else None for r in finder.duplicate_of_[rows].tolist()),
                                        index=index)}


def groups_table(finder: DuplicateFinder, paths: list | None = None):
    """One row per item: ``id``, ``path``, then ``DuplicateFinder.table``'s columns
    (``duplicate_group``, ``duplicate_of`` as the representative's id or empty, ...)."""
    df = finder.table()
    df.insert(1, "path", text_series(paths if paths is not None else (finder.paths_ or [None] * len(df))))
    return df


def cluster_duplicates(finder: DuplicateFinder, labels: np.ndarray, ids: list | None = None) -> dict[int, dict]:
    """Per cluster: ``groups`` (duplicate groups whose representative is in it), ``items`` (their
    members), ``largest`` (the largest group's size) and ``largest_representative`` (its id)."""
    labels = np.asarray(labels)
    ids = ids if ids is not None else finder.ids_
    out: dict[int, dict] = {}
    for g in finder.groups():
        r = g["representative"]
        c = int(labels[r])
        e = out.setdefault(c, {"groups": 0, "items": 0, "largest": 0, "largest_representative": None})
        e["groups"] += 1
        e["items"] += g["size"]
        if g["size"] > e["largest"]:
            e["largest"], e["largest_representative"] = g["size"], str(ids[r])
    return out


def summary(finder: DuplicateFinder) -> dict:
    """Counts for run.json and printing; when the vectors alone decided, also the cosine a link
    needed (``semantic_only_cutoff``) and the collection's ``neighbour_distance`` it came from."""
    sizes = np.bincount(finder.labels_[finder.labels_ >= 0]) if finder.n_groups_ else np.zeros(0, int)
    names = KINDS if finder.media == "audio" else KINDS[:4]  # an image run's counts as they were
    kinds = np.bincount(finder.links_["kind"], minlength=len(KINDS)).tolist() if len(finder.links_) else [0] * len(KINDS)
    out = {"items": int(finder.n_items_), "groups": int(finder.n_groups_),
           "items_in_groups": int(sizes.sum()), "duplicates": int(sizes.sum() - len(sizes)),
           "largest": int(sizes.max()) if len(sizes) else 0,
           "links": dict(zip(names, map(int, kinds))),
           "skipped": len(finder.skipped_),
           # the finder's parameters, defaults included (a study says how its groups were found:
           # report/methods.md); progress and workers change no result
           "params": {k: v for k, v in finder.get_params().items() if k not in ("progress", "workers")}}
    cutoff = getattr(finder, "semantic_only_cutoff_", None)
    if cutoff is not None:  # the vectors alone decided: the cosine a link needed, and why
        out["semantic_only_cutoff"] = round(float(cutoff), 6)
        nd = getattr(finder, "neighbour_distance_", None)
        out["neighbour_distance"] = None if nd is None else round(float(nd), 6)
    return out


def top_folder(path, root: str | None = None) -> str:
    """The top-level folder of the collection a file lies in (``train`` of ``train/cat/x.jpg``):
    ``path`` as stored (relative to the collection's folder), or, with ``root`` (the collection's
    folder), any path, made relative to it; ``.`` for a file directly in the collection's folder,
    outside it, or without a path. The one rule of ``dups``' ``groups_across_folders``, the
    studio's duplicate groups and the ``classes`` export's splits."""
    if not path:
        return "."
    rel = os.fspath(path)
    if root is not None:
        a = os.path.abspath(rel)
        if not under(a, root):
            return "."
        rel = os.path.relpath(a, root).replace(os.sep, "/")
    elif os.path.isabs(rel):
        return "."
    return rel.split("/", 1)[0] if "/" in rel else "."


def group_folders(groups, paths, root: str | None = None) -> dict[int, list[str]]:
    """Each duplicate group's top-level folders (:func:`top_folder`, sorted), by group number;
    ``groups``: each item's group (-1: none); {} without paths."""
    if paths is None or all(p is None for p in paths):
        return {}
    tops: dict[int, set] = {}
    for g, p in zip(np.asarray(groups).tolist(), paths):
        if g >= 0:
            tops.setdefault(g, set()).add(top_folder(p, root))
    return {g: sorted(t) for g, t in tops.items()}


def folder_counts(folders) -> dict[str, int]:
    """How many groups span each combination of more than one folder (``folders``: each
    group's sorted top-level folders, :func:`group_folders`' values), most first; the keys JSON
    text (a name that is not UTF-8 escaped)."""
    out: dict[str, int] = {}
    for t in folders:
        if len(t) > 1:
            key = " + ".join(path_to_text(x) for x in t)
            out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def across_folders(groups, paths, root: str | None = None) -> dict[str, int]:
    """How many duplicate groups have members in more than one top-level folder of the
    collection, by those folders (``{"test + train": 8}``): copies across splits such as
    ``train/`` and ``test/``, the leak a curator looks for first. ``paths`` as stored (relative
    to the collection root), or any paths with ``root``, the collection's folder (a file directly
    in the root, or outside it, counts as the folder ``.``: :func:`top_folder`); {} without paths."""
    return folder_counts(group_folders(groups, paths, root).values())


# -- the ``dups`` job ---------------------------------------------------------------------------
def _why(skipped) -> str:
    """`` (N skipped; the first, PATH: REASON)`` for a collection none of whose files is usable."""
    return f" ({len(skipped)} skipped; the first, {skipped[0].path}: {skipped[0].reason})" if skipped else ""


def find_duplicates_in(source, out, media: str = "auto", encoder: str | None = None, embed: bool = True,
                       params: dict | None = None, cache_dir=None, workers: int | None = None,
                       progress: bool = True, page: bool = True, page_groups: int = 100,
                       columns: dict[str, str] | None = None) -> dict:
    """Find the duplicate groups of a folder / manifest / vector file and write ``out``
    (``columns``: a manifest's own names of its path / id / label columns, as ``collect``):
    ``dups.parquet`` and ``dups.csv`` (one row per item: id, path, duplicate_group, duplicate_of,
    is_representative, link_kind, link_distance, group_size, group_diameter, skipped) and
    ``dups.html`` (the largest groups with thumbnails). ``embed=False``: images by their bytes
    and perceptual hashes only (no encoder; crops and caption bars are then missed). Returns
    the :func:`summary` plus the files written and ``skipped_files`` (``Skipped``: the files
    that could not be read, then those read but not decoded, which were compared as bytes only;
    also in ``dups.json``)."""
    from ..embed import embed_collection
    from ..encoders import DEFAULT_ENCODERS, get_encoder
    from ..ingest import collect

    t0 = time.perf_counter()
    out = Path(out)
    make_finder(params, progress, workers)._validate()  # before any work: a typo costs nothing (as cluster --dedup)
    mapped = _mapped_npy(source) if media in ("auto", "vector") else None
    if mapped is not None:  # a float32 .npy is read where it lies, block by block (search.UnitRows)
        finder = _fit_vectors(make_finder(params, progress, workers), mapped, range(len(mapped)), source)
        return _write_found(out, finder, None, [], t0, page, page_groups, progress)
    coll = collect(source, media=media, columns=columns)
    if len(coll) == 0:  # why, as `cluster` says it: a manifest of moved files, a folder of none
        raise InputError(f"no usable files found in {source}{_why(coll.skipped)}")
    skipped = list(coll.skipped)
    root = getattr(coll, "root", None)  # the folder given, a manifest's folder: paths are stored relative to it
    if coll.vectors is not None:
        finder = _fit_vectors(make_finder(params, progress, workers), coll.vectors, coll.ids, source)
        paths = None
    elif embed:
        enc = get_encoder(encoder or DEFAULT_ENCODERS[coll.media])
        emb = embed_collection(coll, encoder=enc, cache_dir=cache_dir, workers=workers, progress=progress)
        skipped = list(emb.skipped)
        if len(emb) == 0:
            raise InputError(f"no file of {source} could be read{_why(emb.skipped)}")
        with signature_cache(cache_dir) as store:  # the one embed_collection used
            finder = find_in_embeddings(emb, media=coll.media, params=params, progress=progress,
                                        workers=workers, store=store)
        paths = emb.paths
        extra = None
        if coll.media == "audio":
            from ..ingest.audio import long_recordings

            longs = long_recordings(paths)  # the parts of each long recording embedded
            extra = {"long_recordings": longs} if longs else None
        return _write_found(out, finder, paths, skipped, t0, page, page_groups, progress, root=root,
                            note=audio_rule(coll.media, params), extra=extra)
    else:
        if coll.media != "image":
            raise ParameterError("without embeddings only images can be compared (perceptual hashes)", "embed")
        from .hashing import compute_signatures

        paths, ids = [str(p) for p in coll.paths], [str(i) for i in coll.ids]
        finder = make_finder(params, progress, workers)
        with signature_cache(cache_dir) as store:  # content hashes by its fast path, signatures by content
            sig = compute_signatures(paths, kind=finder.hash, hash_size=finder.hash_size, workers=finder.workers,
                                     progress=progress, store=store)
            # a file that does not decode is left out of the table, as the embedding check leaves it
            # (two copies of one broken file were a group here, not there); listed with its reason
            skipped += [Skipped(paths[i], why) for i, why in sorted(sig.skipped.items())]
            ok = np.flatnonzero(sig.usable())
            if not len(ok):  # none decodes: refused, as the embedding check refuses it
                raise InputError(f"no file of {source} could be read{_why(skipped)}")
            paths = [paths[i] for i in ok]
            finder.fit(paths, ids=[ids[i] for i in ok], signatures=sig.take(ok), store=store)
    return _write_found(out, finder, paths, skipped, t0, page, page_groups, progress, root=root)


def stale_kind(kind: str) -> bool:
    """Whether ``kind`` is a store kind of the duplicate finder (``dups.``) that no current code
    reads: signatures or verdicts of an older version, hashing or OpenCV (another package's
    kinds are left alone)."""
    if kind.startswith("dups.signature/"):
        from .hashing import is_current_signature_kind

        return not is_current_signature_kind(kind)
    if kind.startswith("dups.geometric/"):
        from .verify import GeometricVerifier

        return not GeometricVerifier.is_current_kind(kind)
    return kind.startswith("dups.")


def prune_cache(store, idle_days: float = STALE_IDLE_DAYS) -> dict[str, int]:
    """Drop the duplicate finder's stale kinds (:func:`stale_kind`) that nobody used for
    ``idle_days`` from ``store`` (``EmbeddingStore.prune_derived``), and give the space back;
    {kind: entries deleted}."""
    return store.prune_derived(stale_kind, idle_s=idle_days * 86400.0)


@contextmanager
def signature_cache(cache_dir):
    """The embedding cache at ``cache_dir`` (None: the user cache) opened as the duplicate
    finder's store of signatures and pair verdicts (``DuplicateFinder.fit(store=)``), closed
    after; every run that finds duplicates among files (``dups``, ``cluster --dedup`` with a
    full fit, a fit sample or Ray) opens it here. On open, the kinds of signatures and verdicts
    no current code reads, unused for :data:`STALE_IDLE_DAYS`, are deleted and their space given
    back (:func:`prune_cache`: an older hashing or check version would otherwise stay in the
    cache forever). Yields None, with a warning, when it cannot be
    opened: the run then decodes every file, as it did without a cache."""
    import warnings

    from ..embed import EmbeddingStore
    from ..errors import OutputError

    try:
        store = EmbeddingStore(cache_dir, timeout=10.0)
    except OutputError as e:
        warnings.warn(f"{e}; hashing every image without the cache", RuntimeWarning, stacklevel=3)
        store = None
    if store is not None:
        from .hashing import store_call

        store_call(store, lambda: prune_cache(store), None)  # a locked or read-only cache: kept as it is
    try:
        yield store
    finally:
        if store is not None:
            store.close()


def _fit_vectors(finder: DuplicateFinder, vectors, ids, source) -> DuplicateFinder:
    """``finder`` fitted on a vector file's rows; a bad row is named with the file, as ``cluster``
    names it (the finder alone knows them only as "vectors")."""
    try:
        return finder.fit(vectors=vectors, ids=[str(i) for i in ids])
    except InputError as e:
        msg = str(e)
        if not msg.startswith("vectors"):
            raise
        raise InputError(f"{source}: {msg.removeprefix('vectors: ')}") from None


def _mapped_npy(source):
    """A little-endian float32 C-order ``.npy`` file as a read-only memory map (None for any other
    input, which ``collect`` reads): its vectors are searched without being loaded."""
    from ..ingest.stream import NpyVectors

    if not (os.path.isfile(source) and str(source).lower().endswith(".npy")):
        return None
    f = NpyVectors(source).npy_float32_file  # checks the header: 2-D, numeric, not empty
    return None if f is None else np.load(f, mmap_mode="r")


def _write_found(out: Path, finder, paths, skipped, t0: float, page: bool, page_groups: int, progress: bool,
                 root=None, note: str | None = None, extra: dict | None = None) -> dict:
    """Write the table, ``dups.json`` (with ``note``: what the search could find, e.g. what an
    audio duplicate is, and ``extra``, e.g. ``long_recordings``) and the page; the summary."""
    from ..fileio import write_json, write_table
    from ..locations import Root, common_folder

    # as a run folder stores them: relative to the root, absolute for a file outside it
    top = (os.path.abspath(root) if root is not None else common_folder(paths)) if paths is not None else None
    loc = Root(path=top, recorded=top)
    df = groups_table(finder, None if paths is None else loc.store_all([str(p) for p in paths]))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        from ..fileio import output_error

        raise output_error(e, out) from e
    write_table(out / TABLE, df)
    write_table(out / TABLE_CSV, df)
    # every file not fully used, with its reason, as `cluster` lists them: those that could not
    # be read at all (not in the table), then those read but not decoded (exact copies only)
    listed = list(skipped) + ([Skipped(str(paths[i]), f"{why} (checked for exact copies only)")
                               for i, why in sorted(finder.skipped_.items())] if paths is not None else [])
    res = {**summary(finder), "unreadable": len(skipped),
           "groups_across_folders": across_folders(df["duplicate_group"].to_numpy(), df["path"].tolist()),
           "seconds": round(time.perf_counter() - t0, 2),
           "table": str(out / TABLE), "csv": str(out / TABLE_CSV), "skipped_files": listed,
           **({"note": note} if note else {}), **(extra or {})}
    where = loc.record(out)
    write_json(out / INFO, {"format": INFO_FORMAT, **({ROOT_KEY: where["root"], ROOT_FROM_OUT_KEY: where["root_from_store"]}
                                                      if where else {}),
                            **{k: v for k, v in res.items() if k not in ("table", "csv", "skipped_files")},
                            "skipped_files": [x.to_dict() for x in listed]})
    if page:
        res["page"] = str(write_groups_page(out, finder, paths, res, n_groups=page_groups, progress=progress,
                                            shown_paths=None if paths is None else df["path"].tolist()))
    return res


def read_dups(out: str | os.PathLike, collection_root: str | os.PathLike | None = None, columns=None):
    """The table ``mediacluster dups`` wrote into ``out`` (``dups.parquet``), ``path`` absolute:
    resolved against the recorded collection root (``locations.find``: ``collection_root`` when
    given, else the recorded one while it exists, else the one at the same place relative to
    ``out``). An output written before roots were recorded holds absolute paths; a given
    ``collection_root`` moves them from their common folder."""
    from ..fileio import read_json, read_table
    from ..locations import find, legacy

    out = Path(out)
    if not (out / TABLE).is_file():
        raise InputError(f"{out}: no {TABLE} (the output folder of `mediacluster dups`)")
    df = read_table(out / TABLE, columns=columns)
    if "path" not in df:
        return df
    info = {}
    if (out / INFO).is_file():
        try:
            info = read_json(out / INFO)
        except (OSError, ValueError) as e:
            raise InputError(f"{out / INFO}: cannot read it: {e}") from e
    stored = df["path"].tolist()
    if isinstance(info, dict) and isinstance(info.get(ROOT_KEY), str):
        loc = find(info[ROOT_KEY], info.get(ROOT_FROM_OUT_KEY), out, given=collection_root)
    else:
        loc = legacy([p for p in stored if isinstance(p, str)], given=collection_root)
    return df.assign(path=text_series(loc.resolve_all(stored), index=df.index))


def write_groups_page(out: Path, finder: DuplicateFinder, paths: list | None, info: dict,
                      n_groups: int = 100, per_group: int = 12, thumb_size: int = 96,
                      progress: bool = True, shown_paths: list | None = None) -> Path:
    """``out/dups.html``: the ``n_groups`` largest groups, representative first, with thumbnails
    (copied into ``out/thumbs`` from ``paths``, so the page moves with ``out``) for image files;
    for audio clips a spectrogram and a player of a short excerpt (``out/audio``, as the report's
    cards), so a person hears whether two clips are one; ``shown_paths``: the names to print
    (default ``paths``; ``dups`` gives them relative to the collection root, as the table holds them)."""
    from ..fileio import atomic_path, display_text
    from ..ingest import AUDIO_EXTENSIONS
    from ..report.audio import audio_player_html, make_audio_clips, make_spectrogram_thumbnails
    from ..report.thumbs import make_thumbnails

    groups = sorted(finder.groups(), key=lambda g: (-g["size"], g["group"]))[:n_groups]
    shown: list[int] = []
    for g in groups:
        r = g["representative"]
        shown += [r] + [m for m in g["members"] if m != r][: per_group - 1]
    thumbs: dict[int, str | None] = {}
    players: dict[int, str | None] = {}
    if paths is not None and shown:
        files = [paths[i] for i in shown]
        if all(os.path.splitext(str(f))[1].lower() in AUDIO_EXTENSIONS for f in files):
            thumb_size = max(thumb_size, 160)  # room for the player's play button (Chromium hides it below)
            made = make_spectrogram_thumbnails(files, out / THUMBS, size=thumb_size, progress=progress)
            players = dict(zip(shown, make_audio_clips(files, out / AUDIO, progress=progress)))
        else:
            made = make_thumbnails(files, out / THUMBS, size=thumb_size, progress=progress)
        thumbs = dict(zip(shown, made))
    kinds = finder.link_kind_
    dist = finder.link_distance_

    names = shown_paths if shown_paths is not None else paths

    def cell(i: int, rep: bool) -> str:
        name = display_text(names[i] if names is not None else finder.ids_[i])
        how = "representative" if rep else (
            f"{KINDS[kinds[i]]}, d={dist[i]:.3g}" if kinds[i] >= 0 else "")
        t = thumbs.get(i)
        img = (f'<img loading="lazy" src="{THUMBS}/{html.escape(t)}" alt="">' if t else
               '<span class="noimg">?</span>')
        return (f'<figure title="{html.escape(name)}">{img}{audio_player_html(players.get(i), AUDIO)}'
                f'<figcaption>{html.escape(os.path.basename(name))}'
                f'<br><small>{html.escape(how)}</small></figcaption></figure>')

    rows = []
    for g in groups:
        r = g["representative"]
        cells = [cell(r, True)] + [cell(m, False) for m in g["members"] if m != r][: per_group - 1]
        more = g["size"] - len(cells)
        rows.append(f'<section><h2>group {g["group"]} <small>{g["size"]} items, diameter '
                    f'{g["diameter"]:.2f}{f", {more} more not shown" if more > 0 else ""}</small></h2>'
                    f'<div class="row">{"".join(cells)}</div></section>')
    links = ", ".join(f"{k} {v}" for k, v in info["links"].items())
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>duplicates</title><style>
body{{font:14px system-ui,sans-serif;margin:1.5em}} .row{{display:flex;flex-wrap:wrap;gap:8px}}
figure{{margin:0;width:{thumb_size + 8}px}} figure img,.noimg{{width:{thumb_size}px;height:{thumb_size}px;object-fit:cover;display:block;background:#eee}}
figure audio{{width:{thumb_size}px;height:28px}} figcaption{{font-size:11px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}} small{{color:#666}}
</style></head><body><h1>Duplicate groups</h1>
<p>{info['items']:,} items, {info['groups']:,} groups holding {info['items_in_groups']:,} items
({info['duplicates']:,} duplicates beyond one per group); largest group {info['largest']:,}. Links: {links}.
The table of every item is <a href="{TABLE_CSV}">{TABLE_CSV}</a> ({TABLE}). Showing the {len(groups)} largest groups.</p>
{''.join(rows) or '<p>No duplicates found.</p>'}
</body></html>"""
    p = out / PAGE
    with atomic_path(p) as tmp:
        Path(tmp).write_text(doc, encoding="utf-8")
    return p


__all__ = ["find_in_embeddings", "find_in_rows", "duplicate_columns", "groups_table", "cluster_duplicates", "summary",
           "find_duplicates_in", "read_dups", "write_groups_page", "make_finder", "signature_cache",
           "prune_cache", "stale_kind", "STALE_IDLE_DAYS"]
