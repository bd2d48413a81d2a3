"""``mediacluster cache [--cache-dir DIR]``: what the cache on this machine holds and what it
costs on disk (the embedding cache: vectors per encoder, duplicate signatures and verdicts,
remembered decode failures, file records; beside it compiled code, ONNX exports, thumbnails,
crash logs), and, with the ``--forget-*`` options, deleting a part of it. Everything there is a
cache: deleting it only costs recomputing it."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from . import SUMMARIES, printable

#: what the folders beside the embedding cache hold (the user cache, ``fileio.cache_root``)
FOLDERS = {
    "numba": "compiled code of umap-learn, pynndescent and librosa (deleted: the next command compiles "
             "it again, 10-30 s)",
    "onnx": "the encoders' ONNX exports (deleted: exported again on the next use, a few seconds)",
    "thumbs": "the studio's thumbnails (deleted: drawn again when shown)",
    "logs": "crash logs a failing command wrote (its message named the file)",
}


def add_parser(sub):
    p = sub.add_parser("cache", help=SUMMARIES["cache"], description=__doc__.split("\n\n")[0])
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="the embedding cache folder (or its .sqlite file) the other commands were given "
                        "with --cache-dir (default: the user cache, $MEDIACLUSTER_CACHE or "
                        "~/.cache/mediacluster)")
    p.add_argument("input", nargs="?", default=None, metavar="INPUT",
                   help="also say how much of this folder (or manifest, or file) the cache already holds: "
                        "files a run would not hash again, and per encoder the files it would not embed "
                        "again; no file is read")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--forget-encoder", action="append", default=[], metavar="ID",
                   help="delete the vectors of this encoder (an id as listed, or the start of one that "
                        "matches only one, e.g. 'mfcc'); repeat for several. The next run with it embeds "
                        "its files again. An encoder the cache no longer holds is nothing to forget (exit 0)")
    p.add_argument("--forget-stale", action="store_true",
                   help="delete the vectors of every encoder version this mediacluster no longer writes "
                        "(listed as stale, e.g. mfcc's v2 after v3): no run reads them again")
    p.add_argument("--forget-failures", action="store_true",
                   help="forget every remembered decode failure: the next run tries those files again "
                        "(--retry-bad does it for one command's files only)")
    p.add_argument("--forget-missing-files", action="store_true",
                   help="delete the records of files that are no longer where they were (the vectors "
                        "stay: they are kept by content; a file on a disk not mounted now is only hashed "
                        "again)")
    return p


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _when(t) -> str:
    return "never recorded" if t is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def _store_path(arg) -> Path:
    from ..embed.store import DB_NAME, default_store_path

    if arg is None:
        return default_store_path()
    p = Path(arg).expanduser()
    return p if p.suffix in (".sqlite", ".db", ".sqlite3") else p / DB_NAME


def _marked(enc: str) -> str:
    """An encoder id with what ``encoders.writes_id`` says of it: "(current)", "(stale)" or nothing."""
    from ..encoders import writes_id

    now = writes_id(enc)
    return enc if now is None else f"{enc} ({'current' if now else 'stale'})"


def _of_a_family(given: str) -> bool:
    """Whether ``given`` names ids an encoder family registered here writes: a whole id
    (``family@version``) of one, or the start of a family's name."""
    from ..encoders import available

    family, sep, _ = given.partition("@")
    return family in available() if sep else any(f.startswith(given) for f in available())


def _encoder_id(store, given: str, ids: list[str]) -> str | None:
    """The one id in the cache's ``ids`` that ``given`` names; None (said on stderr) when it
    holds none but ``given`` is a registered family's: already forgotten, nothing to do (like
    ``rm -f``; a re-run after a completed or killed forget). A name of no family is an error."""
    from ..encoders import writes_id
    from ..errors import ConfigError

    if given in ids:
        return given
    hits = [e for e in ids if e.startswith(given)]
    if len(hits) == 1:
        return hits[0]
    listed = ", ".join(ids) or "none"
    if not hits and _of_a_family(given):
        sys.stderr.write(f"--forget-encoder {printable(given)}: the cache holds no vectors of it (any more): "
                         f"nothing to forget (it holds: {printable(listed)})\n")
        return None
    if not hits:
        raise ConfigError(f"--forget-encoder {given!r}: the cache {store.path} holds no vectors of such an "
                          f"encoder (it holds: {listed})")
    stale = any(writes_id(e) is False for e in hits)
    raise ConfigError(f"--forget-encoder {given!r} matches {len(hits)} encoders ({', '.join(map(_marked, hits))}): "
                      "give the whole id" + (", or --forget-stale for every stale one (versions this "
                                             "mediacluster no longer writes)" if stale else ""))


def _held_for(store, source, encoders: list[str]) -> dict:
    from ..ingest import collect

    coll = collect(source)
    if coll.paths is None or coll.vectors is not None:  # a vectors file's paths are never hashed
        from ..errors import ConfigError

        raise ConfigError(f"{source} holds precomputed vectors, not media files: nothing is cached for it")
    return {"source": str(source), "media": coll.media, **store.held_for(coll.paths, encoders)}


def _open_store(path: Path, writes: list[str]):
    """The embedding cache at ``path``, opened to write; where it cannot be written (a read-only
    folder, file or file system), opened read-only for a listing (it only reads: a listing of a
    shared or read-only cache was exit 2, "unable to open database file"), and for the options
    in ``writes`` an error that says why nothing can be forgotten."""
    import os

    from ..embed.store import EmbeddingStore, cannot_write
    from ..errors import OutputError

    try:
        return EmbeddingStore(path)
    except OutputError as e:
        if not cannot_write(e):
            raise
        if not writes:
            return EmbeddingStore(path, read_only=True)
        try:
            ro_fs = bool(os.statvfs(path.parent).f_flag & os.ST_RDONLY)
        except OSError:
            ro_fs = False
        why = ("it is on a read-only file system" if ro_fs else
               "its folder is read-only" if not os.access(path.parent, os.W_OK) else
               "the file is read-only" if not os.access(path, os.W_OK) else str(e.__cause__ or e))
        raise OutputError(f"{', '.join(writes)}: the embedding cache {printable(path)} cannot be written "
                          f"({why}): nothing was forgotten (without --forget-* it is listed)") from e


def run(args) -> int:
    from ..embed.store import DB_NAME, check_place
    from ..encoders import writes_id
    from ..errors import ConfigError
    from ..fileio import folder_usage

    path = _store_path(args.cache_dir)
    check_place(path)  # "no cache yet, the first command makes it" would be untrue: that command cannot
    if not path.is_file():
        if args.forget_encoder or args.forget_stale or args.forget_failures or args.forget_missing_files:
            raise ConfigError(f"no embedding cache at {path}: nothing to forget")
        info = {"path": str(path), "exists": False}
    else:
        writes = ([f"--forget-encoder {e}" for e in args.forget_encoder] + ["--forget-stale"] * args.forget_stale
                  + ["--forget-failures"] * args.forget_failures
                  + ["--forget-missing-files"] * args.forget_missing_files)
        with _open_store(path, writes) as store:
            # the encoders, to resolve each --forget-encoder (the summary below is of what is left)
            ids = [r["encoder"] for r in store.summary()["encoders"]] if args.forget_encoder or args.forget_stale else []
            chosen = [e for e in (_encoder_id(store, given, ids) for given in args.forget_encoder) if e is not None]
            if args.forget_stale:
                stale = [e for e in ids if writes_id(e) is False]
                if not stale:
                    sys.stderr.write("no stale encoder version in the cache (none this mediacluster no longer "
                                     "writes)\n")
                chosen += [e for e in stale if e not in chosen]
            for enc in chosen:
                n = store.forget_encoder(enc)
                sys.stderr.write(f"forgot {n['vectors']} vectors of {printable(_marked(enc))} "
                                 f"({n['failures']} remembered failures with them)\n")
            if args.forget_failures:
                sys.stderr.write(f"forgot {store.forget_failures()} remembered decode failures\n")
            if args.forget_missing_files:
                sys.stderr.write(f"forgot the records of {store.forget_missing_files()} files no longer "
                                 "where they were\n")
            info = {**store.summary(), "exists": True}
            for r in info["encoders"]:  # True: what a run writes today; False: stale; None: not known
                r["current"] = writes_id(r["encoder"])
            if args.input is not None:
                info["input"] = _held_for(store, args.input, [r["encoder"] for r in info["encoders"]])
    # what lies beside it: the user cache's other folders, or those of the folder given (a
    # .sqlite file given by name may sit among anything: nothing listed)
    beside = [] if args.cache_dir is not None and path.name != DB_NAME else [
        {**f, "holds": FOLDERS.get(f["name"])}
        for f in folder_usage(path.parent) if not f["name"].startswith(path.name)]
    info["beside"] = beside
    if args.json:
        sys.stdout.write(json.dumps(info, indent=2) + "\n")
        return 0
    out = sys.stdout.write
    if not info["exists"]:
        out(f"no embedding cache at {printable(path)} yet (the first command that embeds files makes it)\n")
    else:
        out(f"embedding cache {printable(path)}: {_size(info['bytes'])}"
            + (f" ({_size(info['free_bytes'])} of it free pages, given back by the next --forget-*)"
               if info["free_bytes"] else "") + "\n")
        if not info["encoders"]:
            out("  no vectors\n")
        for r in info["encoders"]:
            extra = f", with {', '.join(r['extras'])}" if r["extras"] else ""
            now = {True: ", current", False: ", stale: this mediacluster no longer writes it; "
                   "--forget-stale drops it"}.get(r["current"], "")
            out(f"  {r['vectors']:>10,} vectors   {_size(r['bytes']):>9}  {printable(r['encoder'])} "
                f"({r['dim']} dimensions{extra}{now})\n")
        for r in info["derived"]:
            what = "failures" if r["failures"] else "entries"
            out(f"  {r['entries']:>10,} {what:<9} {_size(r['bytes']):>9}  {printable(r['kind'])} "
                f"(last used {_when(r['used'])})\n")
        out(f"  {info['files']:>10,} file records (path, size and time -> content: an unchanged file is not "
            "hashed again)\n")
        got = info.get("input")
        if got is not None:
            out(f"{printable(got['source'])}: {got['files']:,} {got['media']} files; {got['known']:,} known and "
                f"unchanged, {got['to_hash']:,} to hash ({_size(got['to_hash_bytes'])} to read)"
                + (f", {got['unreadable']:,} unreadable" if got["unreadable"] else "") + "\n")
            for enc, n in got["encoders"].items():
                out(f"  {n:>10,} of the known files have vectors of {printable(enc)}\n")
    for f in beside:
        holds = f" - {f['holds']}" if f["holds"] else ""
        out(f"{printable(f['name'])}{'/' if f['folder'] else ''}: {_size(f['bytes'])}, {f['files']:,} files{holds}\n")
    return 0
