"""Turn what the user points at into a ``Collection`` (media-generic: images or audio).

Accepted inputs (``collect`` picks by what ``source`` is):

Paths in the collection are absolute (not symlink-resolved), so a run's outputs stay usable
from any working folder.

* **a folder**, scanned recursively for files whose extension (case-insensitive) belongs to the
  media kind (``IMAGE_EXTENSIONS`` / ``AUDIO_EXTENSIONS``). Hidden files and hidden folders
  (name starting with ``.``) and NAS / archive metadata folders (``@eaDir``, ``__MACOSX``) are
  ignored silently, and so are a mediacluster run folder inside the input (an ``--out`` there:
  its report thumbnails are not part of the collection) and the thumbnail folders of a ``dups``
  or ``report`` output there (``fileio.MADE_HERE``). Symbolic links to files and folders are followed, but every real folder is
  visited once, so link loops (``a/loop -> ..``) terminate and a linked folder is not listed
  twice. Broken links and non-regular files (FIFOs, devices) with a media extension, files of
  the media kind in a format that is not read (``UNSUPPORTED_EXTENSIONS``: HEIC, RAW, M4A, ...)
  and unreadable folders are listed as skipped with a reason. Order: sorted names, depth first, so
  the same folder always gives the same order. Image files over the loader's byte cap
  (``images.MAX_FILE_BYTES``) are skipped here already, from ``stat``, so nothing reads them. With ``labels_from_folders`` an item's label is
  its folder relative to the root (``"cat"``, or ``"animals/cat"`` when nested); with
  ``labels_from_folders="name"`` the file's own folder name (``"cat"`` for ``train/cat/x.jpg``
  and ``test/cat/y.jpg`` alike: splits that hold the same classes); files directly in the root
  get no label. Labels are for evaluation only, never for fitting.
* **a manifest**, CSV/TSV or Parquet, with a ``path`` column and optional ``label`` and ``id``
  columns (header names are matched case-insensitively). Relative paths are resolved against
  the manifest's folder. Rows whose file does not exist are skipped with the reason
  ``"file not found"``, empty paths with ``"empty path in manifest"``, and a path listed again
  (without distinct ids) with ``"duplicate of manifest line N"`` (``row N`` for Parquet);
  non-regular and over-cap files as for folders. An explicit id is one item: a later row with
  an id already given (a post scraped twice) is skipped with ``"id 'X' already on manifest line
  N"``, the first row kept.
  ``labels_from_folders`` (``True``, ``"path"`` or ``"name"``) takes each file's parent folder
  name as its label. The manifest's other columns (a post's time, platform, likes, ...) are the
  items' metadata (``Collection.metadata``, the kept rows; a column of numbers as numbers): a
  run keeps them and its tables carry them, so they need no join.
* **precomputed embeddings**, so the rest of the pipeline runs on vectors made elsewhere:
  ``.npy`` (one 2-D numeric array, ids are row numbers), ``.npz`` (an array named ``vectors`` /
  ``embeddings`` / ... or the only array, optional ``ids`` and ``labels``), or a Parquet/CSV
  table with an id column and a vector column (list/array values; in CSV a ``"[0.1, 0.2]"`` or
  space-separated string) or one numeric column per dimension. Wrong shapes, ragged rows,
  missing values, NaN/infinity and duplicate ids are refused with a message naming the rows.

**Duplicate files** (same bytes under different paths) are kept as separate items: every path
the user gave gets its own row in the assignments, which is what people look up. They cost
nothing extra to embed (the embedding cache is keyed by content hash) and, having identical
vectors, land in the same cluster. ``find_duplicates(paths)`` lists the groups for anyone who
wants to drop or report them; it compares sizes first and hashes only same-size files.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import numpy as np

from ..data import Collection, Skipped, check_finite
from ..errors import InputError, ParameterError
from ..fileio import ESCAPED, MADE_HERE, hash_file, numeric_columns, read_table, text_series
from ..locations import table_root
from ..rundir import RunDir
from .stream import check_float32_range


def _pillow_reads(feature: str) -> bool:
    """Whether the installed Pillow was built with ``feature`` (e.g. "avif")."""
    try:
        from PIL import features

        return bool(features.check(feature))
    except Exception:  # noqa: BLE001 - an unknown feature name on an older Pillow
        return False


#: formats read only where the installed Pillow has their codec (listed as not read otherwise);
#: JPEG 2000 is the archival master format of many libraries and museums
_OPTIONAL_IMAGE = frozenset(e for e, f in ((".avif", "avif"), (".jp2", "jpg_2000"), (".j2k", "jpg_2000"),
                                           (".jpx", "jpg_2000")) if _pillow_reads(f))
#: ``.jfif`` / ``.jpe``: JPEG under the names browsers give saved images (Pillow reads them as JPEG);
#: ``.psd`` (the flattened composite Photoshop stores), ``.pcx``, ``.tga``, ``.ico``, ``.dib`` and
#: the Netpbm formats: the older files of an archive or a scanner's folder, all read by Pillow
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jfif", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif",
                              ".tiff", ".psd", ".pcx", ".tga", ".ico", ".dib", ".ppm", ".pgm", ".pbm",
                              ".pnm"}) | _OPTIONAL_IMAGE
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".mp3", ".oga", ".opus", ".aiff", ".aif"})
MEDIA_EXTENSIONS = {"image": IMAGE_EXTENSIONS, "audio": AUDIO_EXTENSIONS}
#: the content type of each extension read (the one table: the service's stored uploads,
#: ``GET /v1/inbox/files``; the report's and the studio's audio excerpts, ``extension_of``)
CONTENT_TYPES = {
    ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".jfif": "image/jpeg", ".jpe": "image/jpeg",
    ".png": "image/png", ".webp": "image/webp", ".bmp": "image/bmp", ".dib": "image/bmp",
    ".gif": "image/gif", ".tif": "image/tiff", ".tiff": "image/tiff", ".avif": "image/avif",
    ".jp2": "image/jp2", ".j2k": "image/jp2", ".jpx": "image/jpx", ".psd": "image/vnd.adobe.photoshop",
    ".pcx": "image/x-pcx", ".tga": "image/x-tga", ".ico": "image/vnd.microsoft.icon",
    ".ppm": "image/x-portable-pixmap", ".pgm": "image/x-portable-graymap",
    ".pbm": "image/x-portable-bitmap", ".pnm": "image/x-portable-anymap",
    ".mp3": "audio/mpeg", ".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg",
    ".oga": "audio/ogg", ".opus": "audio/ogg", ".aiff": "audio/aiff", ".aif": "audio/aiff",
}


def content_type(name: str) -> str:
    """The content type of a media file by its extension (``application/octet-stream`` for one
    not read)."""
    return CONTENT_TYPES.get(os.path.splitext(name)[1].lower(), "application/octet-stream")


def extension_of(kind: str) -> str:
    """The extension a file of content type ``kind`` is written with (the first in the table)."""
    return next(e for e, k in CONTENT_TYPES.items() if k == kind)
#: Formats of the kind that are not read: listed as skipped with this advice, not passed over
#: in silence (a phone's folder of HEIC photos would otherwise come out as a handful of items).
UNSUPPORTED_EXTENSIONS = {
    "image": {e: "convert it to JPEG or PNG" for e in (
        ".heic", ".heif", ".avif", ".jp2", ".j2k", ".jpx", ".jxl", ".svg", ".raw", ".dng", ".cr2", ".cr3", ".nef", ".arw",
        ".orf", ".rw2", ".raf") if e not in _OPTIONAL_IMAGE},
    "audio": {e: "convert it to WAV or FLAC" for e in (".m4a", ".aac", ".wma", ".amr", ".ape", ".mka")},
}


def unsupported_reason(path: str, media: str) -> str | None:
    """Why a file of a format of ``media`` that mediacluster does not read is skipped (None when
    its extension is not such a format)."""
    ext = os.path.splitext(path)[1].lower()
    advice = UNSUPPORTED_EXTENSIONS.get(media, {}).get(ext)
    if advice is None:
        return None
    readable = ", ".join(sorted(MEDIA_EXTENSIONS[media]))
    return f"{ext[1:].upper()} {media} files are not read (read: {readable}); {advice}"

#: Folders that hold metadata or thumbnails rather than the user's media.
SKIP_FOLDERS = frozenset({"@eaDir", "__MACOSX", "$RECYCLE.BIN", "System Volume Information"})

_VECTOR_COLUMNS = ("vector", "vectors", "embedding", "embeddings", "features", "feature")
_ID_COLUMNS = ("id", "ids", "path", "name", "key", "filename", "file")
_TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")


FOLDER_LABELS = ("path", "name")  # labels_from_folders: the folder path under the root, or its own name


def collect(
    source: str | os.PathLike,
    media: str = "auto",
    labels_from_folders: bool | str = False,
    columns: dict[str, str] | None = None,
) -> Collection:
    """Find the items of ``source``: a folder, a manifest, an embeddings file or one media file.

    ``media="auto"`` (the default, as the CLI's ``--media``) picks ``"image"`` or ``"audio"`` by
    the majority of media file extensions (``detect_media``; a manifest is read once); in a
    folder holding both, files of the other kind are listed as skipped with the reason and the
    ``--media`` switch that clusters them (one run embeds one media kind: images and sounds have
    no shared embedding space). ``"image"`` / ``"audio"`` read only that kind.

    ``labels_from_folders``: ``False`` (no labels), ``True`` or ``"path"`` (a file's folder
    path under the root: ``"train/cat"``), ``"name"`` (its own folder's name: ``"cat"``).
    ``columns``: a manifest's own names of its ``path`` / ``id`` / ``label`` columns
    (``{"path": "file_name", "id": "post_id"}``, as the CLI's ``--path-column`` / ``--id-column``
    / ``--label-column``); a name the manifest lacks is refused naming its columns.
    """
    if not isinstance(labels_from_folders, bool) and labels_from_folders not in FOLDER_LABELS:
        raise ParameterError(f"labels_from_folders must be True, False, 'path' or 'name', not {labels_from_folders!r}")
    if media == "auto" and Path(source).suffix.lower() not in _TABLE_SUFFIXES:
        media, counts = detect_media(source)
        if media == "vector":  # precomputed embeddings: the media kind plays no part
            return collect(source, media="image", labels_from_folders=labels_from_folders, columns=columns)
        coll = collect(source, media=media, labels_from_folders=labels_from_folders, columns=columns)
        other = next((k for k in counts if k != media and counts[k]), None)
        if other is not None and Path(source).is_dir():
            for path in _media_files(Path(os.path.abspath(source)), MEDIA_EXTENSIONS[other]):
                coll.skipped.append(Skipped(path, (
                    f"{other} file in a mixed folder: this run clusters the {counts[media]} {media} "
                    f"files; cluster the {counts[other]} {other} files with --media {other}")))
        return coll
    if media not in MEDIA_EXTENSIONS and media != "auto":  # auto here: a table, resolved once read
        raise ParameterError(f"unknown media kind {media!r}; expected one of {sorted(MEDIA_EXTENSIONS)} or 'auto'")
    if _URL.match(os.fspath(source)):
        raise InputError(f"{source}: {URL_REASON}")
    p = Path(source)
    if not p.exists():
        raise InputError(f"input not found: {p}")
    if p.is_dir():
        coll = scan_folder(p, media=media, labels_from_folders=labels_from_folders)
        if len(coll) == 0:  # none of this kind: files of another kind are said, not passed over
            for other in sorted(set(MEDIA_EXTENSIONS) - {media}):
                for path in _media_files(Path(os.path.abspath(p)), MEDIA_EXTENSIONS[other]):
                    coll.skipped.append(Skipped(path, (
                        f"{other} file: this collection reads {media} files; read the {other} files with "
                        f"media={other!r} or 'auto' (--media {other})")))
        return coll
    suffix = p.suffix.lower()
    if suffix in (".npy", ".npz"):
        return read_vectors(p)
    if suffix in _TABLE_SUFFIXES:
        df = named_columns(_read_table(p), columns, p)
        if _vector_column(df) is None and "path" in df.columns:
            if media == "auto":
                media, _ = _majority_media(df["path"].tolist())
            return read_manifest(p, df, media=media, labels_from_folders=labels_from_folders)
        return read_vectors(p, df)
    if suffix in MEDIA_EXTENSIONS[media]:  # a single file
        full = os.path.abspath(p)
        label = [p.parent.name] if labels_from_folders else None
        return Collection(ids=[full], paths=[full], labels=label, media=media, source=str(p),
                          root=os.path.dirname(full))
    reason = unsupported_reason(str(p), media)
    if reason is not None:
        raise InputError(f"{p}: {reason}")
    other = next((k for k, exts in MEDIA_EXTENSIONS.items() if k != media and suffix in exts), None)
    if other is not None:  # e.g. a photo given to an audio model
        raise InputError(f"{p} is an {other} file; this reads {media} files")
    raise InputError(
        f"don't know how to read {p}: expected a folder, a CSV/Parquet manifest with a 'path' "
        f"column, or embeddings (.npy, .npz, Parquet with an id and a vector column)"
    )


def join_files(colls: list[Collection]) -> list[Collection]:
    """Consecutive collections of files of one media kind as one collection, in order (the
    others, such as precomputed vectors, as they are): ``assign a.jpg b.jpg ...`` (a shell
    glob) is then embedded in one pass, in batches, as a folder is, not one file at a time."""
    runs: list[list[Collection]] = []
    for c in colls:
        prev = runs[-1][-1] if runs else None
        if (prev is not None and c.vectors is None and prev.vectors is None and c.paths is not None
                and prev.paths is not None and c.media == prev.media):
            runs[-1].append(c)
        else:
            runs.append([c])
    out = []
    for run in runs:
        if len(run) == 1:
            out.append(run[0])
            continue
        labelled = any(c.labels is not None for c in run)
        roots = {c.root for c in run}
        out.append(Collection(
            ids=[i for c in run for i in c.ids], paths=[p for c in run for p in c.paths],
            labels=[x for c in run for x in (c.labels or [None] * len(c))] if labelled else None,
            media=run[0].media, skipped=[s for c in run for s in c.skipped], source=run[0].source,
            root=roots.pop() if len(roots) == 1 else None))
    return out


def _made_here(folder: str) -> bool:
    """Whether ``folder`` is mediacluster's own output: a run folder, or thumbnails (of a ``dups``
    page, a report) marked with ``fileio.MADE_HERE``; a folder scan passes over it."""
    return RunDir.is_run(folder) or os.path.isfile(os.path.join(folder, MADE_HERE))


def _media_walk(root: str | os.PathLike, exts):
    """Per folder under ``root`` (sorted, hidden / system / run folders passed over):
    ``(entries listed there, its files with an extension in exts, sorted, hidden ones left out)``."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not _hidden(d) and d not in SKIP_FOLDERS
                             and not _made_here(os.path.join(dirpath, d)))
        yield len(dirnames) + len(filenames), [os.path.join(dirpath, f) for f in sorted(filenames)
                                               if not _hidden(f) and os.path.splitext(f)[1].lower() in exts]


def _media_files(root: Path, exts) -> list[str]:
    return [f for _, files in _media_walk(root, exts) for f in files]


def detect_media(source: str | os.PathLike) -> tuple[str, dict[str, int]]:
    """``("image" | "audio" | "vector", {kind: number of files})`` for what ``source`` holds.

    Folders and manifests count media extensions; the majority wins, ties and empty inputs give
    ``"image"``. Embedding files give ``"vector"``.
    """
    p = Path(source)
    counts = dict.fromkeys(MEDIA_EXTENSIONS, 0)
    suffix = p.suffix.lower()
    if p.is_dir():
        names = _media_files(p, set().union(*MEDIA_EXTENSIONS.values()))
    elif suffix in (".npy", ".npz"):
        return "vector", counts
    elif suffix in _TABLE_SUFFIXES:
        df = _read_table(p)
        if _vector_column(df) is not None or "path" not in df.columns:
            return "vector", counts
        return _majority_media(df["path"].tolist())
    else:
        names = [p.name]
    return _majority_media(names)


def _majority_media(names) -> tuple[str, dict[str, int]]:
    """``detect_media``'s answer for file names: the kind most of them are."""
    exts = [os.path.splitext(str(x))[1].lower() for x in names]
    counts = {kind: sum(1 for e in exts if e in kinds) for kind, kinds in MEDIA_EXTENSIONS.items()}
    return ("audio" if counts["audio"] > counts["image"] else "image"), counts


# -- folders ----------------------------------------------------------------------------------


def _hidden(name: str) -> bool:
    return name.startswith(".")


def scan_folder(root: str | os.PathLike, media: str = "image", labels_from_folders: bool | str = False) -> Collection:
    """Recursively list the media files under ``root`` (see the module doc for the rules)."""
    root = Path(os.path.abspath(root))  # absolute: later stages may run from another folder
    exts = MEDIA_EXTENSIONS[media]
    paths: list[str] = []
    labels: list[str | None] = []
    skipped: list[Skipped] = []
    try:
        rst = os.stat(root)
    except OSError as e:
        raise InputError(f"cannot read folder {root}: {e.strerror or e}") from None
    visited = {(rst.st_dev, rst.st_ino)}
    # depth-first with an explicit stack: (folder path, label relative to root)
    stack: list[tuple[str, str | None]] = [(str(root), None)]
    while stack:
        folder, rel = stack.pop()
        name_of_folder = None if rel is None else rel.rsplit("/", 1)[-1]
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            skipped.append(Skipped(folder, f"cannot read folder: {e.strerror or e}"))
            continue
        subdirs: list[tuple[str, str | None]] = []
        for entry in entries:
            name = entry.name
            if _hidden(name):
                continue
            try:
                is_dir = entry.is_dir()  # follows symlinks
            except OSError:
                is_dir = False
            if is_dir:
                if name in SKIP_FOLDERS or _made_here(entry.path):
                    continue  # a run folder or thumbnails (an --out inside the input): our own pictures
                try:
                    st = entry.stat()
                except OSError as e:
                    skipped.append(Skipped(entry.path, f"cannot read folder: {e.strerror or e}"))
                    continue
                key = (st.st_dev, st.st_ino)
                if key in visited:  # link loop or a second link to a folder already listed
                    continue
                visited.add(key)
                subdirs.append((entry.path, name if rel is None else f"{rel}/{name}"))
                continue
            if os.path.splitext(name)[1].lower() not in exts:
                reason = unsupported_reason(name, media)
                if reason is not None:
                    skipped.append(Skipped(entry.path, reason))
                continue
            try:
                st = entry.stat()  # follows symlinks
            except FileNotFoundError:  # a link to nothing, or a file removed since the listing
                skipped.append(Skipped(entry.path, "broken symbolic link" if entry.is_symlink()
                                       else "file not found (removed while the folder was read)"))
                continue
            except OSError as e:
                skipped.append(Skipped(entry.path, f"cannot read file: {e.strerror or e}"))
                continue
            reason = _precheck(st, media)
            if reason is not None:
                skipped.append(Skipped(entry.path, reason))
                continue
            paths.append(entry.path)
            labels.append(rel if rel is None or labels_from_folders != "name" else name_of_folder)
        stack.extend(reversed(subdirs))  # pop in sorted order
    return Collection(
        ids=list(paths),
        paths=paths,
        labels=labels if labels_from_folders else None,
        media=media,
        skipped=skipped,
        source=str(root),
        root=str(root),
    )


def _precheck(st: os.stat_result, media: str) -> str | None:
    """Reasons to skip a file from its ``stat`` alone, before anything reads it.

    Done at ingest so that the embedding cache never hashes a FIFO (it would block) or reads a
    multi-gigabyte file that the image loader would refuse anyway. Wording as in the loader.
    """
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if media == "image":
        from . import images

        if st.st_size > images.MAX_FILE_BYTES:
            return images.file_too_large_reason(st.st_size, images.MAX_FILE_BYTES)
    return None


def find_duplicates(paths: list[str]) -> list[list[str]]:
    """Groups (2+ paths each) of files with identical content, in input order.

    Only files sharing a byte size are hashed (``fileio.hash_file``), so a collection without duplicates
    costs one ``stat`` per file.
    """
    by_size: dict[int, list[str]] = {}
    for p in paths:
        try:
            by_size.setdefault(os.path.getsize(p), []).append(p)
        except OSError:
            continue
    groups: list[list[str]] = []
    for same in by_size.values():
        if len(same) < 2:
            continue
        by_hash: dict[str, list[str]] = {}
        for p in same:
            try:
                by_hash.setdefault(hash_file(p), []).append(p)
            except OSError:
                continue
        groups.extend(g for g in by_hash.values() if len(g) > 1)
    order = {p: i for i, p in enumerate(paths)}
    return sorted(groups, key=lambda g: order[g[0]])


# -- manifests ----------------------------------------------------------------------------------


def _read_table(p: Path):
    """A manifest or vectors table. CSV bytes that are not UTF-8 are kept as surrogate escapes
    (they are file names: the same bytes name the same file), and a table written by
    mediacluster with an ``escaped`` column is read back exactly (see ``fileio``)."""
    try:
        df = read_table(p, dtype=object, keep_default_na=False, na_values=[""],
                        encoding_errors="surrogateescape")
        df = df.drop(columns=ESCAPED) if ESCAPED in df else df
    except Exception as e:  # pandas/pyarrow raise many types for unreadable tables
        raise InputError(f"{p}: cannot read table: {e}") from None
    df.columns = [str(c).strip().lower() for c in df.columns]
    return df


MANIFEST_ROLES = ("path", "id", "label")


def named_columns(df, columns: dict[str, str] | None, p):
    """``df`` with the manifest's own column names for the ``path`` / ``id`` / ``label`` roles
    (``columns``: role -> its name, matched case-insensitively as every header) renamed to the
    roles; a name the table lacks, a role the table already has under its own name, or an
    unknown role is refused naming it."""
    if not columns:
        return df
    renames = {}
    for role, name in columns.items():
        if role not in MANIFEST_ROLES:
            raise ParameterError(f"unknown manifest column role {role!r}; expected one of {', '.join(MANIFEST_ROLES)}")
        key = str(name).strip().lower()
        if key not in df.columns:
            raise InputError(f"{p}: no column {name!r} (given as its {role} column); columns are {list(df.columns)}")
        if key != role and role in df.columns:
            raise InputError(f"{p}: {name!r} is given as the {role} column, but the table has a {role!r} column "
                             "too; rename one of them")
        renames[key] = role
    return df.rename(columns=renames)


def _str_or_none(x) -> str | None:
    if _isna(x):
        return None
    if isinstance(x, bytes):
        x = x.decode("utf-8", "replace")
    if isinstance(x, float) and x.is_integer():
        x = int(x)
    s = str(x).strip()
    return s or None


def read_manifest(p: str | os.PathLike, df=None, media: str = "image",
                  labels_from_folders: bool | str = False) -> Collection:
    """A CSV/Parquet manifest with a ``path`` column (see the module doc)."""
    p = Path(p)
    df = _read_table(p) if df is None else df
    if "path" not in df.columns:
        raise InputError(f"{p}: a manifest needs a 'path' column; columns are {list(df.columns)}")
    # relative paths: to the manifest's folder, or to the root its writer recorded (a dups
    # table, a run's items.parquet / assignments)
    base = Path(table_root(p) or RunDir.table_root(p) or os.path.abspath(p.parent))
    has_ids = "id" in df.columns
    has_labels = "label" in df.columns and not labels_from_folders
    ids: list[str] = []
    paths: list[str] = []
    labels: list[str | None] = []
    skipped: list[Skipped] = []
    seen_path: dict[str, str] = {}
    seen_id: dict[str, str] = {}
    raw_ids = df["id"].tolist() if has_ids else None
    raw_labels = df["label"].tolist() if has_labels else None
    csv = p.suffix.lower() in (".csv", ".tsv")
    rows: list[int] = []  # the manifest row of each kept item
    named: set[str] = set()  # every row's file, kept or not: the folder's other files are unlisted
    for row, raw in enumerate(df["path"].tolist()):
        where = f"line {row + 2}" if csv else f"row {row}"  # CSV: header is line 1
        s = _str_or_none(raw)
        if s is None:
            skipped.append(Skipped(f"{p} ({where})", "empty path in manifest"))
            continue
        if _URL.match(s):
            skipped.append(Skipped(s, f"{URL_REASON} ({p}, {where})"))
            continue
        s = os.path.expanduser(s)
        full = os.path.normpath(s if os.path.isabs(s) else base / s)
        named.add(full)
        item_id = full
        if has_ids:
            item_id = _str_or_none(raw_ids[row])
            if item_id is None:
                raise InputError(f"{p}: {where} has an empty id")
            if item_id in seen_id:
                # a re-scraped row: the first row with the id is the item, the later one is
                # listed as skipped (as a path listed again is) instead of costing the run
                skipped.append(Skipped(f"{p} ({where})",
                                       f"id {item_id!r} already on manifest {seen_id[item_id]}"))
                continue
            seen_id[item_id] = where
        elif full in seen_path:
            skipped.append(Skipped(full, f"duplicate of manifest {seen_path[full]}"))
            continue
        seen_path.setdefault(full, where)
        try:
            st = os.stat(full)
        except FileNotFoundError:
            skipped.append(Skipped(full, "file not found"))
            continue
        except OSError as e:
            skipped.append(Skipped(full, f"cannot read file: {e.strerror or e}"))
            continue
        reason = _precheck(st, media)
        if reason is not None:
            skipped.append(Skipped(full, reason))
            continue
        ids.append(item_id)
        paths.append(full)
        rows.append(row)
        if labels_from_folders:
            labels.append(os.path.basename(os.path.dirname(full)) or None)
        elif has_labels:
            labels.append(_str_or_none(raw_labels[row]))
    return Collection(
        ids=ids, paths=paths, labels=labels if (has_labels or labels_from_folders) else None,
        media=media, skipped=skipped, source=str(p), root=str(base),
        metadata=_metadata(df, ids, rows, {"path", "id"} | ({"label"} if has_labels else set())),
        unlisted=unlisted_files(base, named, MEDIA_EXTENSIONS.get(media, ())),
    )


#: How many folder entries :func:`unlisted_files` looks at before it stops (a manifest kept in a
#: home folder or a disk's root is not walked whole); past it the count is a lower bound.
UNLISTED_SCAN_LIMIT = 200_000


def unlisted_files(base: str | os.PathLike, named: set[str], exts, show: int = 5,
                   limit: int = UNLISTED_SCAN_LIMIT) -> dict | None:
    """The files of the manifest's kind (``exts``) under its folder ``base`` that no row names
    (``named``: every row's full path): listed by name, never read (the manifest is the
    collection; a file it leaves out may be one the scrape missed). ``{"folder", "count",
    "examples" (the first ``show``, sorted), "complete"}`` (False: the walk stopped after
    ``limit`` entries and ``count`` is a lower bound); None when there are none. Hidden files
    and folders, run folders and the system folders a folder scan passes over are passed over."""
    count, examples, seen, complete = 0, [], 0, True
    for entries, files in _media_walk(base, exts):
        seen += entries
        for full in files:
            if full not in named:
                count += 1
                if len(examples) < show:
                    examples.append(full)
        if seen >= limit:
            complete = False
            break
    if not count:
        return None
    return {"folder": str(base), "count": count, "examples": examples, "complete": complete}


def _metadata(df, ids: list[str], rows: list[int], used: set[str]):
    """The manifest's other columns for the kept rows, ``id`` first (None without any)."""
    other = [c for c in df.columns if c not in used]
    if not other:
        return None
    meta = numeric_columns(df.iloc[rows][other].reset_index(drop=True))
    meta.insert(0, "id", text_series(ids))  # ids may be file names holding undecodable bytes
    return meta


# -- precomputed vectors -----------------------------------------------------------------------


def _vector_column(df) -> str | None:
    return next((c for c in _VECTOR_COLUMNS if c in df.columns), None)


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
URL_REASON = ("a URL, not a local file: mediacluster reads local files only and never downloads "
              "anything; download it and give its local path")

_NUM_SPLIT = re.compile(r"[\s,;]+")


def _parse_vector(v, row: int, p: Path) -> np.ndarray:
    if isinstance(v, str):
        s = v.strip().strip("[]()")
        try:
            return np.array([float(x) for x in _NUM_SPLIT.split(s) if x], dtype=np.float64)
        except ValueError:
            raise InputError(f"{p}: row {row}: cannot parse vector {v[:60]!r}") from None
    if v is None or (np.isscalar(v) and _isna(v)):
        raise InputError(f"{p}: row {row}: vector is missing")
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{p}: row {row}: vector has non-numeric values") from None
    if a.ndim != 1:
        raise InputError(f"{p}: row {row}: expected a flat vector, got shape {a.shape}")
    return a


def _stack_rows(values, p: Path) -> np.ndarray:
    rows = [_parse_vector(v, i, p) for i, v in enumerate(values)]
    if not rows:
        raise InputError(f"{p}: no vectors")
    d = len(rows[0])
    for i, r in enumerate(rows):
        if len(r) != d:
            raise InputError(f"{p}: vectors have different lengths: row 0 has {d} values, row {i} has {len(r)}")
    return np.stack(rows)


def _check_ids(ids: list[str], p: Path) -> None:
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = [i for i in ids if i in seen or seen.add(i)]
        raise InputError(f"{p}: ids are not unique (e.g. {dup[:3]})")


def read_vectors(p: str | os.PathLike, df=None) -> Collection:
    """Precomputed embeddings (see the module doc); raises ``ValueError`` with a clear message."""
    p = Path(p)
    suffix = p.suffix.lower()
    labels = None
    paths = None
    if suffix == ".npy":
        vectors = _load_npy(p)
        ids = [str(i) for i in range(len(vectors))] if vectors.ndim >= 1 else []
    elif suffix == ".npz":
        try:
            z = np.load(p, allow_pickle=False)
        except Exception as e:
            raise InputError(f"{p}: cannot read .npz: {e}") from None
        with z:
            key = next((k for k in _VECTOR_COLUMNS if k in z.files), None)
            if key is None:
                arrays = [k for k in z.files if k not in ("ids", "labels", "paths")]
                if len(arrays) != 1:
                    raise InputError(
                        f"{p}: no array named one of {_VECTOR_COLUMNS} (arrays: {z.files})")
                key = arrays[0]
            try:
                vectors = z[key]
                ids = [str(x) for x in z["ids"]] if "ids" in z.files else None
                if "labels" in z.files:
                    labels = [_str_or_none(x) for x in z["labels"].tolist()]
                if "paths" in z.files:
                    paths = [_str_or_none(x) for x in z["paths"].tolist()]  # "": an item without a path
            except ValueError as e:
                raise InputError(f"{p}: {e} (save ids/labels as string arrays, not objects)") from None
        if ids is None:
            ids = [str(i) for i in range(len(vectors))] if vectors.ndim >= 1 else []
    else:
        df = _read_table(p) if df is None else df
        vcol = _vector_column(df)
        icol = next((c for c in _ID_COLUMNS if c in df.columns), None)
        if vcol is not None:
            vectors = _stack_rows(df[vcol].tolist(), p)
        else:
            num = [c for c in df.columns if c not in (icol, "label", "path")]
            try:
                vectors = df[num].to_numpy(dtype=np.float64) if num else None
            except (TypeError, ValueError):
                vectors = None
            if vectors is None or vectors.shape[1] < 2:
                raise InputError(
                    f"{p}: need a 'path' column (manifest), a vector column named one of "
                    f"{_VECTOR_COLUMNS}, or one numeric column per dimension; columns are {list(df.columns)}"
                )
            check_finite(vectors, p, row="row {}", problem="has missing values, NaN or infinity")
        ids = [_str_or_none(x) or "" for x in df[icol]] if icol else [str(i) for i in range(len(df))]
        if icol and any(i == "" for i in ids):
            raise InputError(f"{p}: column {icol!r} has empty ids (row {ids.index('')})")
        if "label" in df.columns:
            labels = [_str_or_none(x) for x in df["label"].tolist()]
        if "path" in df.columns:
            paths = [_str_or_none(x) for x in df["path"].tolist()]
    vectors = _check_vectors(vectors, p)
    if len(ids) != len(vectors):
        raise InputError(f"{p}: {len(ids)} ids for {len(vectors)} vectors")
    if labels is not None and len(labels) != len(vectors):
        raise InputError(f"{p}: {len(labels)} labels for {len(vectors)} vectors")
    if paths is not None and (len(paths) != len(vectors) or all(x is None for x in paths)):
        paths = None  # a row without a path is an item without one: the others keep theirs
    _check_ids(ids, p)
    return Collection(ids=ids, paths=paths, labels=labels, vectors=vectors, media="vector", source=str(p))


def _load_npy(p: Path) -> np.ndarray:
    try:
        return np.load(p, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e) or "Object arrays" in str(e):
            raise InputError(
                f"{p}: the array holds Python objects, which are never unpickled; "
                "save a numeric (n_items, dim) array") from None
        raise InputError(f"{p}: cannot read .npy: {e}") from None
    except (OSError, EOFError) as e:  # EOFError: an empty file ("No data left in file")
        raise InputError(f"{p}: cannot read .npy: {e}") from None


def _check_vectors(vectors: np.ndarray, p: Path) -> np.ndarray:
    vectors = np.asarray(vectors)
    if vectors.dtype.kind not in "fiub":
        raise InputError(f"{p}: vectors must be numbers, got dtype {vectors.dtype}")
    if vectors.ndim != 2:
        hint = " (a single vector? reshape it to (1, dim))" if vectors.ndim == 1 else ""
        raise InputError(f"{p}: expected a 2-D array (n_items, dim), got shape {vectors.shape}{hint}")
    n, d = vectors.shape
    if n == 0 or d == 0:
        raise InputError(f"{p}: no vectors (shape {vectors.shape})")
    if vectors.dtype.kind == "f":  # NaN / infinity as given, before any conversion
        check_finite(vectors, p, row="row {}")
    check_float32_range(vectors, 0, p)
    return vectors.astype(np.float32, copy=False)


def _isna(x) -> bool:
    import pandas as pd

    if x is None:
        return True
    if np.isscalar(x) or x is pd.NA:
        try:
            return bool(pd.isna(x))
        except (TypeError, ValueError):
            return False
    return False
