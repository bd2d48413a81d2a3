"""Exports of the curated state: one folder per cluster, tables, a Label Studio import file.

Everything is written under ``RUN/exports/<kind>-<time>-e<edit number>/`` (a new folder each
time, never over an earlier export):

* ``folders``: one sub-folder per curated cluster named ``<id> <name>`` (made safe for every file
  system: no separators, control characters or leading dots), holding a symbolic link to (or a
  copy of) each member's file; unassigned items go to ``unassigned``, junk clusters keep their
  name and get a ``junk`` prefix.
* ``classes``: the clean, corrected dataset as a class tree (torchvision's ``ImageFolder``,
  FiftyOne's ``ImageClassificationDirectoryTree``): one sub-folder per curated *name* (clusters
  that share a name share it), holding a link to (or copy of) each kept file; left out, and
  listed with why in ``dropped.csv`` (``id``, ``path``, ``curated_cluster``, ``curated_name``,
  ``reason``: junk / unassigned / outlier / duplicate, ``kept``: the copy kept in a duplicate's
  place): junk, items in no cluster, and with ``--dedup`` all but one member of each duplicate
  group (the largest picture: most pixels, colour, then bytes; or one under the folders a person prefers, ``prefer=["train/"]``:
  see :func:`dropped`);
  ``manifest.csv`` (``id``, ``path``: the original file, ``label``; on a run with levels then
  ``level_<k>`` / ``level_<k>_name`` as in the tables below) lists the kept files as a manifest
  ``cluster``, ``evaluate --labels`` and ``tags train`` read. ``split="top"`` keeps the
  collection's splits (``train/<name>/file``, ``test/<name>/file``; both tables gain ``split``):
  of a duplicate group across splits one copy is kept and the others are dropped as ``leak``.
* ``csv`` / ``parquet``: the curated assignments (one row per item; a run clustered with
  ``--dedup`` keeps ``duplicate_group`` and ``duplicate_of``). A run with levels has, coarse to
  fine, ``level_<k>`` and ``level_<k>_name`` for every level the curated tree keeps above the
  curated clusters (:func:`level_columns`: the group as the run's cluster id at level ``k``, the
  ids of the run's ``level_<k>`` column and of ``names.yaml``'s ``levels:``, -1 for the junk
  branch and unassigned items, and its name by ``naming.run_level_names``), then
  ``curated_cluster`` / ``curated_name``, the finest level.
* ``labelstudio``: ``tasks.json`` in Label Studio's import format with each item's curated
  cluster as a pre-annotation (a ``choices`` prediction), ``label_config.xml`` (an image, or
  for an audio run an audio, classification config listing the clusters) and ``README.txt`` saying how to serve the
  files (Label Studio's local-files storage, document root = the collection's folder).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
import time
import unicodedata
from pathlib import Path

import numpy as np

from ..errors import InputError, OutputError
from ..fileio import (
    atomic_path,
    path_from_text,
    pid_alive,
    text_series,
    write_json,
    write_table,
    write_text,
)
from ..locations import under
from ..rundir import LEVEL_COLUMN, path_to_text, texts

KINDS = ("folders", "classes", "csv", "parquet", "labelstudio")
NAME_MAX = 255  # bytes of one file name (ext4, XFS, Btrfs, tmpfs)
#: format characters that are part of words and emoji (ZWNJ, ZWJ), kept in folder names
JOINERS = "\u200c\u200d"


def safe_name(text: str, limit: int = 80) -> str:
    """A folder name from a cluster name: no path separators, control or reserved characters
    (format characters but the joiners, :data:`JOINERS`: no bidi override), no leading dot, at
    most ``limit`` characters and ``NAME_MAX`` bytes in UTF-8 (70 emoji are 280 bytes, which no
    file system takes as one name), and only characters the file-system encoding can write
    (under an ASCII one, ``PYTHONUTF8=0 LC_ALL=C``: "café" is "cafe", "·" is "_"; "animal ·
    device" was a UnicodeEncodeError in ``mkdir``)."""
    t = unicodedata.normalize("NFC", path_to_text(str(text)))
    t = "".join("_" if ((unicodedata.category(c).startswith("C") and c not in JOINERS) or c in '/\\:*?"<>|')
                else c for c in t)
    t = _encodable(t, sys.getfilesystemencoding())
    t = re.sub(r"\s+", " ", t).strip(" .")
    t = t[:limit].encode("utf-8")[:NAME_MAX].decode("utf-8", "ignore")  # a character cut in two is left out
    return t.rstrip(" .") or "cluster"


def _encodable(text: str, encoding: str) -> str:
    """``text`` with each character ``encoding`` cannot write replaced: by its letters without
    their accents where those can be written (NFKD), else by "_"."""
    try:
        text.encode(encoding)
        return text
    except UnicodeEncodeError:
        pass

    def writable(t: str) -> bool:
        try:
            t.encode(encoding)
        except UnicodeEncodeError:
            return False
        return True

    def one(c: str) -> str:
        if writable(c):
            return c
        base = "".join(b for b in unicodedata.normalize("NFKD", c) if not unicodedata.combining(b))
        return base if base and writable(base) else "_"

    return "".join(one(c) for c in text)


def class_folders(labels) -> dict[str, str]:
    """One folder name per class label (:func:`safe_name`), distinct even where two labels give
    one safe name ('a/b' and 'a_b'; names alike in their first 80 characters) or differ only in
    case ('Cat', 'cat': one folder on macOS and Windows): the later ones get " (2)", " (3)", ...
    A label whose safe name is itself keeps it; otherwise in label order (the same folders
    whatever the items' order)."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for label in sorted(set(labels), key=lambda t: (safe_name(t) != t, t)):
        name, n = safe_name(label), 1
        while name.casefold() in taken:
            n += 1
            tail = f" ({n})"
            cut = safe_name(label).encode("utf-8")[:NAME_MAX - len(tail)].decode("utf-8", "ignore")
            name = cut.rstrip(" .") + tail
        taken.add(name.casefold())
        out[label] = name
    return out


def level_columns(tree, named: dict[int, dict[int, str]], junk_names: list[str]) -> list[tuple]:
    """``[(key, ids, names)]`` coarse to fine: for each level the curated ``tree`` keeps above the
    curated clusters (:class:`~mediacluster.curated_tree.CuratedTree`; [] without one), every
    item's group as the run's cluster id at that level (``CuratedTree.run_ids``) and its name
    (``named``: ``naming.run_level_names``' level key -> cluster id -> name; the junk branch the
    junk cluster's name, ``junk`` for several; None for unassigned items)."""
    if tree is None:
        return []
    import pandas as pd

    junk_name = junk_names[0] if len(junk_names) == 1 else "junk"
    out = []
    for j, key in enumerate(tree.index):
        ids = tree.run_ids(j)
        names = pd.Series(ids).map(named.get(int(key), {})).astype(object)  # one lookup per item, in pandas
        names[(tree.rows[j] >= 0) & (ids < 0)] = junk_name
        out.append((int(key), ids, names.where(names.notna(), None).tolist()))
    return out


def curated_table(ids, paths, fitted, curated, names: dict[int, str], status, probability,
                  item_tags: dict[int, list[str]], truth=None, duplicates=None, levels=None):
    """The curated assignments as a DataFrame (file names escaped like the run's tables).
    ``duplicates``: a run's ``(duplicate_group, duplicate_of)`` (``--dedup``), kept as those
    columns, so the export says which files are copies of which (the representative's id).
    ``levels``: :func:`level_columns`, as ``level_<k>`` / ``level_<k>_name`` columns (coarse to
    fine) before ``curated_cluster``."""
    import json

    import pandas as pd

    n = len(ids)
    id_t, e1 = texts(ids)
    path_t, e2 = texts(paths)
    cols = {"id": id_t, "path": path_t}
    for key, lids, lnames in levels or []:
        cols[f"level_{key}"] = np.asarray(lids, dtype=np.int64)
        cols[f"level_{key}_name"] = list(lnames)
    df = pd.DataFrame({
        **cols,
        "curated_cluster": np.asarray(curated, dtype=np.int64),
        "curated_name": [names.get(int(c)) for c in curated],
        "curated_status": list(status),
        "curated_tags": [json.dumps(item_tags[i], ensure_ascii=False) if i in item_tags else None
                         for i in range(n)],
        "cluster": np.asarray(fitted, dtype=np.int64),
        "probability": np.asarray(probability, dtype=np.float64),
    })
    if truth is not None:
        df["label"] = [None if v is None else str(v) for v in truth]
    if duplicates is not None:
        group, of = duplicates
        df["duplicate_group"] = np.asarray(group, dtype=np.int64)
        of_t, e3 = texts(of if of is not None else [None] * n)
        df["duplicate_of"] = of_t
        e2 = np.logical_or(e2, e3)
    esc = np.logical_or(e1, e2)
    if esc.any():
        df["escaped"] = esc
    return df


def export(kind: str, out_root: Path, *, paths, table, clusters: list[dict], seq: int,
           mode: str = "symlink", root: str | None = None, media: str = "image", prefer=None,
           collection_root: str | None = None, split: str | None = None, chosen: dict | None = None) -> dict:
    """Write one export; returns ``{"kind", "path", "files", "items"}`` (and for ``classes``
    ``dropped``: the count of items left out by reason). ``media``: the run's
    ("image" or "audio"; Label Studio shows the one with an ``<Image>``, the other with an
    ``<Audio>`` player). ``prefer``: ``classes`` only, which copy of a duplicate group is kept
    (folder prefixes under ``collection_root``, first preferred: :func:`dropped`). ``split``:
    ``classes`` only, ``"top"`` keeps each file's split folder above its class folder
    (``train/<name>/file``, ``test/<name>/file``: :func:`split_of`); a duplicate group across
    splits keeps one copy, the others are dropped as ``leak``. ``chosen``: ``classes`` only, the
    copy a person keeps of a duplicate group (group -> item row; the studio's ``keep`` edits),
    kept over the rule (``kept_by_person`` in the answer: how many groups)."""
    if kind not in KINDS:
        raise InputError(f"unknown export {kind!r}; choose one of {', '.join(KINDS)}")
    prefer = check_prefer(prefer)
    if prefer is not None and kind != "classes":
        raise InputError(f"prefer chooses the copy a 'classes' export keeps; the {kind!r} export keeps every item")
    split = check_split(split)
    if split is not None and kind != "classes":
        raise InputError(f"split keeps the splits of a 'classes' export; the {kind!r} export has no class tree")
    if split is not None and collection_root is None:
        raise InputError("split needs the collection's folder (the run has none: it was made from vectors "
                         "or a manifest of files in no common folder)")
    if mode not in ("symlink", "copy"):
        raise InputError(f"mode must be 'symlink' or 'copy', got {mode!r}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    final, out = Path(out_root) / f"{kind}-{stamp}-e{seq}", None
    try:
        _drop_killed(final.parent)
        # built in a hidden folder named after this process and renamed whole: an export killed
        # half-way (no ``finally`` runs) left a folder named as a finished one, part of the files
        # in it; the next export removes what a process no longer running left (``_drop_killed``).
        # A name is taken while another export builds it too (another thread of this process:
        # the studio's requests are not serialised; or another process)
        final, out = _claim(Path(out_root), f"{kind}-{stamp}-e{seq}")
        if kind == "folders":
            files, missing = _folders(out, paths, table, clusters, mode)
        elif kind == "classes":
            files, gone, by_person = _classes(out, paths, table, clusters, mode, prefer, collection_root, split,
                                              chosen)
        elif kind in ("csv", "parquet"):
            p = out / f"curated_assignments.{kind}"
            write_table(p, table)
            files = [p.name]
        else:
            files = _labelstudio(out, paths, table, clusters, root, media)
        os.rename(out, final)
    except OSError as e:
        if out is not None:
            shutil.rmtree(out, ignore_errors=True)
        raise OutputError(f"cannot write the export to {final}: {e.strerror or e}") from e
    except BaseException:  # any other failure (a bug, Ctrl+C) leaves no half-written export either
        if out is not None:
            shutil.rmtree(out, ignore_errors=True)
        raise
    res = {"kind": kind, "path": str(final), "files": files, "items": int(len(table))}
    if kind == "classes":
        res["dropped"] = gone
        res["kept_by_person"] = by_person
        missing = gone.get("missing", 0)
    if kind in ("folders", "classes"):
        res["missing"] = missing  # files gone since the run: left out (classes: in dropped.csv)
    return res


#: an export being written: ``.NAME`` + this + the writer's pid, renamed to NAME when whole
BUILDING = ".building-"


def _claim(exports: Path, name: str) -> tuple[Path, Path]:
    """``(final, building)``: the first of ``name``, ``name-2``, ... that is neither an export
    nor being built, and this process's hidden folder for it, made (``mkdir``: a thread of this
    process building the same name makes it first and this one takes the next name)."""
    exports.mkdir(parents=True, exist_ok=True)
    k = 1
    while True:
        final = exports / (name if k == 1 else f"{name}-{k}")
        k += 1
        if final.exists() or any(exports.glob(f".{final.name}{BUILDING}*")):
            continue
        out = exports / f".{final.name}{BUILDING}{os.getpid()}"
        try:
            out.mkdir()
        except FileExistsError:
            continue
        return final, out


def _drop_killed(exports: Path) -> None:
    """Remove the exports being built by a process that no longer runs (killed half-way)."""
    if not exports.is_dir():
        return
    for p in exports.iterdir():
        pid = p.name.rpartition(BUILDING)[2]
        if p.name.startswith(".") and BUILDING in p.name and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def _folders(out: Path, paths, table, clusters: list[dict], mode: str) -> tuple[list[str], int]:
    """The folders written, and how many files were left out because they are gone since the run."""
    by_id = {int(c["id"]): c for c in clusters}
    folder_of: dict[int, Path] = {}
    used: dict[Path, set[str]] = {}
    made = []
    missing = 0
    cur = table["curated_cluster"].to_numpy()
    for i, (p, c) in enumerate(zip(paths, cur)):
        if not p:
            continue
        if gone(p):
            missing += 1
            continue
        c = int(c)
        if c not in folder_of:
            if c < 0:
                d = out / ("unassigned" if c == -1 else "outliers")
            else:
                e = by_id.get(c, {"name": f"cluster {c}"})
                d = out / safe_name(f"{'junk ' if e.get('junk') else ''}{c:03d} {e.get('name') or ''}")
            d.mkdir(exist_ok=True)
            folder_of[c] = d
            used[d] = set()
            made.append(d.name)
        d = folder_of[c]
        _place(p, i, d, used[d], mode)
    return made, missing


def _place(p, i: int, d: Path, names: set[str], mode: str) -> str:
    """Item ``i``'s file ``p`` linked (or copied) into folder ``d`` under its own name, or
    ``i-name`` when ``names`` (the folder's names so far, updated) already holds it (the name's
    stem cut so the whole fits ``NAME_MAX`` bytes: :func:`_prefixed`); returns the file's
    absolute path."""
    base = os.path.basename(p) or f"item-{i}"
    name, k = base, 1
    while name in names:
        name = _prefixed(f"{i}-" if k == 1 else f"{i}-{k}-", base)
        k += 1
    names.add(name)
    src = os.path.abspath(p)
    if mode == "symlink":
        os.symlink(src, d / name)
    else:
        shutil.copy2(src, d / name)
    return src


def _prefixed(prefix: str, base: str) -> str:
    """``prefix + base`` within ``NAME_MAX`` bytes, counted as the file system counts them (a
    name that is not UTF-8 as the bytes it is): ``base``'s stem cut, its extension kept."""
    stem, ext = os.path.splitext(base)
    if len(os.fsencode(ext)) > NAME_MAX // 2:  # no real extension: cut the whole name
        stem, ext = base, ""
    raw = os.fsencode(stem)
    room = NAME_MAX - len(os.fsencode(prefix)) - len(os.fsencode(ext))
    if len(raw) > room:
        try:  # a character cut in two is left out
            raw.decode("utf-8")
            stem = raw[:room].decode("utf-8", "ignore")
        except UnicodeDecodeError:  # not UTF-8: its bytes as they are
            stem = os.fsdecode(raw[:room])
    return prefix + stem + ext


def _size(p) -> int:
    try:
        return os.stat(p).st_size if p else -1
    except OSError:
        return -1


#: modes of a greyscale picture (a grey scan of a colour print is not its original)
_GREY = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


def _picture(p) -> tuple[int, int] | None:
    """``(pixels, colour)`` of the image file ``p`` from its header (nothing decoded); None for a
    file that is not an image Pillow opens (a sound, a broken file)."""
    from PIL import Image

    from ..ingest import IMAGE_EXTENSIONS

    if not p or os.path.splitext(str(p))[1].lower() not in IMAGE_EXTENSIONS:
        return None
    try:
        with Image.open(p) as im:
            return im.width * im.height, int(im.mode not in _GREY)
    except Image.DecompressionBombError:  # past Pillow's limit: larger than any it opens
        return 2 * (Image.MAX_IMAGE_PIXELS or 0) + 1, 1
    except Exception:  # noqa: BLE001 - not an image after all: its bytes decide
        return None


def _extent(p) -> tuple[int, int, int]:
    """How much of the picture a copy holds, for :func:`keep_copy`: its pixels (a resized or
    cropped copy has fewer), colour before greyscale (a grey scan of a colour print), then its
    bytes (a re-compressed copy is smaller). Bytes alone compared an uncompressed greyscale TIFF
    with the colour JPEG it was scanned from and kept the TIFF. Not an image: its bytes."""
    pic = _picture(p)
    return (*(pic or (-1, -1)), _size(p))


def check_prefer(prefer) -> list[str] | None:
    """``prefer`` as a list of folder prefixes (one string: a list of one); None / empty: none.
    Each a folder under the collection (``train``, ``train/``, ``a/b``) or an absolute folder."""
    if prefer is None:
        return None
    if isinstance(prefer, str):
        prefer = [prefer]
    if not isinstance(prefer, list | tuple):
        raise InputError(f"prefer must be a list of folder prefixes, got {type(prefer).__name__}")
    out = []
    for k, p in enumerate(prefer):
        if not isinstance(p, str) or not p.strip("/\\ "):
            raise InputError(f"prefer[{k}] must be a folder (such as 'train/'), got {p!r}")
        out.append(p.replace("\\", "/").rstrip("/") + "/")
    return out or None


def _preference(path, prefer: list[str] | None, root: str | None) -> int:
    """The place in ``prefer`` of the first prefix ``path`` lies under (relative to ``root``, the
    collection's folder, or absolute); ``len(prefer)`` for none (0 without ``prefer``)."""
    if not prefer:
        return 0
    if not path:
        return len(prefer)
    a = os.path.abspath(path)
    rel = os.path.relpath(a, root) if root is not None and under(a, root) else None
    forms = [a.replace(os.sep, "/")] + ([rel.replace(os.sep, "/")] if rel is not None else [])
    for k, p in enumerate(prefer):
        if any(f.startswith(p) for f in forms):
            return k
    return len(prefer)


#: how :func:`keep_copy` chose a group's kept copy: a preferred folder, the largest file, the
#: representative (files as large), the first in the collection's order (all else equal), the
#: only member not dropped otherwise (junk, in no cluster, no split), a person's choice (the
#: studio's ``keep`` edit)
KEPT_BY = ("prefer", "size", "representative", "order", "only", "person")
#: the splits a ``classes`` export can keep above its class folders (:func:`split_of`)
SPLITS = ("top",)


def check_split(split) -> str | None:
    """``split`` (None, or one of :data:`SPLITS`), else an :class:`InputError` naming it."""
    if split is None or split in SPLITS:
        return split
    raise InputError(f"split must be one of {', '.join(map(repr, SPLITS))} (or none), got {split!r}")


def split_of(path, root: str | None) -> str | None:
    """The split a file lies in: the first folder of its path under ``root``, the collection's
    folder (``train`` of ``train/cat/x.jpg``, where ``--folder-label path`` starts; the duplicates'
    rule, :func:`.duplicates.collection.top_folder`); None for a file directly in ``root``,
    outside it, or without a path."""
    from ..duplicates.collection import top_folder

    if not path or root is None:
        return None
    top = top_folder(path, root)
    return None if top == "." else top


def keep_copy(members: list[int], paths=None, rep=None, prefer: list[str] | None = None,
              root: str | None = None, chosen: int | None = None) -> tuple[int, str]:
    """Which of a duplicate group's ``members`` (item rows, none dropped otherwise) a clean dataset
    keeps, and by which rule (:data:`KEPT_BY`): with ``prefer`` one under the earliest preferred
    folder (:func:`check_prefer`); then the largest file (``paths``: :func:`_extent`, the most
    pixels, colour, then bytes: the original of a resized, greyscale, re-compressed or cropped
    copy); of files as large the representative (``rep[i]``
    true), then the first. ``chosen``: the copy a person keeps (``person``), when it is among
    ``members``; one dropped otherwise (junk, in no cluster) is not kept: the rules decide."""
    if chosen is not None and chosen in members and len(members) > 1:
        return chosen, "person"
    if len(members) == 1:
        return members[0], "only"
    def key(i):
        return (-_preference(paths[i] if paths is not None else None, prefer, root),
                _extent(paths[i]) if paths is not None else (-1, -1, -1), bool(rep[i]) if rep is not None else False, -i)
    ranked = sorted(members, key=key, reverse=True)
    a, b = key(ranked[0]), key(ranked[1])
    by = next(k for k, (x, y) in enumerate(zip(a, b)) if x != y)
    return ranked[0], KEPT_BY[by]


def kept_words(path, by: str | None, prefer: list[str] | None = None, root: str | None = None) -> str:
    """Why :func:`keep_copy` kept the file at ``path`` (by the rule ``by``), in words for a person."""
    if by is None:
        return "none kept: every member is junk or in no cluster"
    if by == "prefer":
        return f"under the preferred folder {prefer[_preference(path, prefer, root)]}"
    if by == "size":
        pic = _picture(path)
        if pic is None:
            return f"the largest file ({_size(path):,} bytes; a resized, re-compressed or cropped copy is smaller)"
        return (f"the largest picture ({pic[0]:,} pixels, {'colour' if pic[1] else 'greyscale'}, {_size(path):,} "
                "bytes; a resized or cropped copy has fewer pixels, a greyscale scan no colour)")
    if by == "representative":
        return "the group's representative (its centre); the files are as large"
    if by == "order":
        return "the first in the collection's order; the files are as large"
    if by == "person":
        return "chosen by a person in the studio (\"keep this copy\"), over the export's rule"
    return "the only member not junk or in no cluster"


def left_out(cluster, junk: set[int]) -> str | None:
    """Why an item in curated ``cluster`` is left out of a clean dataset whatever its copies:
    ``junk`` (a cluster in ``junk``), ``unassigned`` (noise), ``outlier``; None: it may be kept."""
    c = int(cluster)
    return "junk" if c in junk else "unassigned" if c == -1 else "outlier" if c < 0 else None


def gone(path) -> str | None:
    """``"missing"`` when the file at ``path`` is gone since the run (no copy to make, a link to
    nothing: left out of an export); None when it is there or the item has no file."""
    return "missing" if path and not os.path.isfile(path) else None


def dropped(table, clusters: list[dict], paths=None, prefer: list[str] | None = None,
            root: str | None = None, splits: list | None = None, chosen: dict | None = None) -> tuple[list, list]:
    """Why each item is left out of a clean dataset (``None``: kept), and for a dropped copy the
    id of the copy kept in its place: ``junk`` (a junk cluster), ``unassigned`` / ``outlier`` (in
    no cluster), ``missing`` (its file is gone since the run), with ``splits`` (each item's split, :func:`split_of`) ``no_split`` (a file in no
    split folder), ``duplicate`` (with ``--dedup``: of a duplicate group's members not dropped
    otherwise, one is kept (:func:`keep_copy`: with ``prefer`` (folder prefixes, first preferred;
    relative to ``root``, the collection's folder, or absolute: :func:`check_prefer`) a member
    under the earliest of them; then the largest file, of files as large the group's
    representative, then the first); the others are dropped), and with ``splits`` ``leak``: a
    copy in another split than the kept one (one copy of an image in all the splits together, so
    no test image has its copy in train). So ``prefer=["train/"]`` keeps the ``train/`` copy of a
    leak between ``train/`` and ``test/`` even when its ``test/`` copy is larger. ``chosen``
    (group -> item): the copy a person keeps, over the rule (:func:`keep_copy`)."""
    junk = {int(c["id"]) for c in clusters if c.get("junk")}
    why: list = [left_out(c, junk) for c in table["curated_cluster"].to_numpy()]
    if paths is not None:  # a file gone since the run: no copy to make, a link to nothing
        why = [w if w is not None else gone(p) for w, p in zip(why, paths)]
    if splits is not None:
        why = [w if w is not None or s is not None else "no_split" for w, s in zip(why, splits)]
    kept: list = [None] * len(why)
    if "duplicate_group" in table.columns:
        groups: dict[int, list[int]] = {}
        for i, g in enumerate(table["duplicate_group"].tolist()):
            if g >= 0 and why[i] is None:
                groups.setdefault(int(g), []).append(i)
        rep = table["duplicate_of"].isna().to_numpy() if "duplicate_of" in table.columns else np.zeros(len(why), bool)
        ids = table["id"].tolist()
        for g, members in groups.items():
            if len(members) < 2:
                continue
            keep, _ = keep_copy(members, paths, rep, prefer, root, (chosen or {}).get(g))
            for i in members:
                if i != keep:
                    leak = splits is not None and splits[i] != splits[keep]
                    why[i], kept[i] = ("leak" if leak else "duplicate"), ids[keep]
    return why, kept


def _classes(out: Path, paths, table, clusters: list[dict], mode: str, prefer=None,
             root: str | None = None, split: str | None = None,
             chosen: dict | None = None) -> tuple[list[str], dict[str, int], int]:
    """The class tree (``split``: under each file's split folder, :func:`split_of`); the files and
    folders written, the count of items dropped by reason, and of the groups whose kept copy is
    a person's (``chosen``, when it was kept)."""
    import pandas as pd

    splits = [split_of(p, root) for p in paths] if split is not None else None
    why, kept = dropped(table, clusters, paths, prefer, root, splits, chosen)
    in_place = set(kept) - {None}  # the ids kept in a dropped copy's place
    all_ids = table["id"].tolist()
    by_person = sum(1 for i in (chosen or {}).values() if 0 <= i < len(why) and why[i] is None
                    and all_ids[i] in in_place)
    used: dict[str, set[str]] = {}
    kept_row, kept_path, kept_label = [], [], []
    labels = [str(name) if name is not None else f"cluster {int(c)}"
              for name, c in zip(table["curated_name"], table["curated_cluster"])]
    # one folder per class, never two classes in one folder ('a/b' and 'a_b' shared 'a_b')
    folder_of = class_folders(lab for i, lab in enumerate(labels) if paths[i] and why[i] is None)
    for i, p in enumerate(paths):
        if not p or why[i] is not None:
            continue
        label = labels[i]
        folder = folder_of[label] if splits is None else f"{safe_name(splits[i])}/{folder_of[label]}"
        d = out / folder
        if folder not in used:
            d.mkdir(parents=True)
            used[folder] = set()
        src = _place(p, i, d, used[folder], mode)
        kept_row.append(i)
        kept_path.append(src)  # the file's own name: write_table escapes it where it must
        kept_label.append(label)
    gone = np.array([w is not None for w in why], bool)
    cols = ["id", "path", "curated_cluster", "curated_name"] + (["escaped"] if "escaped" in table.columns else [])
    drop = table.loc[gone, cols].copy()  # text cells as the curated table holds them (escaped form)
    drop.insert(4, "reason", [w for w in why if w is not None])
    drop.insert(5, "kept", [k for k, w in zip(kept, why) if w is not None])
    if splits is not None:
        drop.insert(6, "split", text_series((s for s, w in zip(splits, why) if w is not None), index=drop.index))
    write_table(out / "dropped.csv", drop)
    ids = table["id"].iloc[kept_row].tolist()
    if "escaped" in table.columns:  # the ids as the run has them (the table holds escaped text)
        esc = table["escaped"].iloc[kept_row].tolist()
        ids = [path_from_text(v) if e else v for v, e in zip(ids, esc)]
    # object columns: a name that is not UTF-8 (surrogate escapes) is no Arrow-backed string
    man = {"id": text_series(ids), "path": text_series(kept_path), "label": text_series(kept_label)}
    if splits is not None:
        man["split"] = text_series(splits[i] for i in kept_row)
    for c in table.columns:  # each level's group and name (level_columns), coarse to fine
        if isinstance(c, str) and LEVEL_COLUMN.fullmatch(c.removesuffix("_name")):
            man[c] = table[c].iloc[kept_row].tolist()
    write_table(out / "manifest.csv", pd.DataFrame(man))
    counts: dict[str, int] = {}
    for w in why:
        if w is not None:
            counts[w] = counts.get(w, 0) + 1
    return sorted(used) + ["dropped.csv", "manifest.csv"], counts, by_person


def _labelstudio(out: Path, paths, table, clusters: list[dict], root: str | None,
                 media: str = "image") -> list[str]:
    import json
    from xml.sax.saxutils import quoteattr

    key, tag = ("audio", "Audio") if media == "audio" else ("image", "Image")  # Label Studio's object tags
    valid = [p for p in paths if p]
    if root is None:
        try:
            root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in valid]) if valid else "/"
        except ValueError:
            root = "/"
    names = {int(c["id"]): c.get("name") or f"cluster {c['id']}" for c in clusters}
    choice = {cid: f"{nm} (#{cid})" for cid, nm in names.items()}  # unique even when names repeat
    tasks = []
    cur = table["curated_cluster"].to_numpy()
    prob = table["probability"].to_numpy()
    ids = table["id"].tolist()
    for i, p in enumerate(paths):
        if not p:
            continue
        rel = os.path.relpath(os.path.abspath(p), root)
        c = int(cur[i])
        task = {"data": {key: "/data/local-files/?d=" + _quote(path_to_text(rel)),
                         "path": path_to_text(os.path.abspath(p)), "id": ids[i], "cluster": c,
                         "cluster_name": names.get(c)}}
        if c >= 0:
            task["predictions"] = [{
                "model_version": "mediacluster-studio", "score": round(float(prob[i]), 4),
                "result": [{"from_name": "cluster", "to_name": key, "type": "choices",
                            "value": {"choices": [choice[c]]}}]}]
        tasks.append(task)
    with atomic_path(out / "tasks.json") as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(tasks, f, ensure_ascii=False)
    opts = "\n".join(f"    <Choice value={quoteattr(choice[c])}/>" for c in sorted(choice))
    write_text(out / "label_config.xml",
        f"<View>\n  <{tag} name=\"{key}\" value=\"${key}\"/>\n"
        f"  <Choices name=\"cluster\" toName=\"{key}\" choice=\"single\" showInline=\"false\">\n"
        f"{opts}\n  </Choices>\n</View>\n")
    shell_root = shlex.quote(path_to_text(root))  # pasted into a shell: "My Photos" is one word
    write_text(out / "README.txt",
        "Label Studio import of a mediacluster studio session\n\n"
        "1. Start Label Studio with local files served from the collection's folder:\n"
        "     LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true \\\n"
        f"     LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={shell_root} label-studio\n"
        "2. Create a project; Settings > Labeling Interface > Code: paste label_config.xml.\n"
        "3. Settings > Cloud Storage > Add Source Storage > Local files, absolute path\n"
        f"   {path_to_text(root)} (tick 'treat every file as a source file' off).\n"
        f"4. Import tasks.json: every {'clip' if media == 'audio' else 'image'} arrives with its curated "
        "cluster as a prediction\n"
        "   (a pre-annotation to accept or correct).\n")
    write_json(out / "choices.json", [{"id": c, "name": names[c], "choice": choice[c]} for c in sorted(names)])
    return ["tasks.json", "label_config.xml", "README.txt", "choices.json"]


def _quote(rel: str) -> str:
    from urllib.parse import quote

    return quote(rel, safe="/")
