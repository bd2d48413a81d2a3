"""Command line: thin sub-commands over the Python API.

Each sub-command lives in its own module exposing ``add_parser(subparsers)`` and ``run(args)``
(returning the exit code), so adding one touches this module's lists only (``COMMANDS``, and
``SUMMARIES``: its line in ``mediacluster --help``).

Exit codes: 0 done; 3 done, but some input files were skipped (listed with reasons); 2 a
problem with what was given (a :class:`~mediacluster.errors.MediaclusterError`: the message
names the file, parameter or row); 1 a bug (a short hint on stderr, the traceback in the log
file it names); 130 interrupted; 141 the reader of the output went away (``... | head -1``),
quietly.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import logging
import sys
import time
import traceback

from .._version import __version__
from ..errors import MediaclusterError, interrupted
from ..fileio import cache_root, full_disk, setup_numba_cache

COMMANDS = ["cluster", "assign", "evaluate", "tune", "report", "tags", "serve", "studio", "dups",
            "models", "inbox", "cache"]

#: each sub-command's line in ``mediacluster --help``. Kept here so that the top-level help and a
#: usage error import no sub-command module: those import the library (scikit-learn alone ~1 s),
#: and ``--help`` took 1.5 s for it (benchmarks/RESULTS.md, "What a user waits for")
SUMMARIES = {
    "cluster": "embed and cluster a folder, manifest or embeddings file",
    "assign": "assign new files or vectors to the clusters of a saved model (--similar: and find the "
              "collection's items most like each)",
    "evaluate": "score a run folder or saved model (silhouette, DBCV, NMI/ARI/ACC, coverage)",
    "tune": "tune pipeline parameters with Optuna (resumable study)",
    "report": "write a self-contained HTML report (map, cluster cards, names) of a run",
    "tags": "train a tagger, suggest tags (or nothing), map labels to tags, evaluate",
    "serve": "HTTP service: assign new images, audio clips or vectors to a saved model's clusters "
             "and find the items most like them, with zero-downtime model switches (--keep-uploads: "
             "keep what it could not place)",
    "studio": "review, rename, merge, split and fix clusters in a browser; every edit is kept",
    "dups": "find reposts and near-duplicates of images or audio clips: a table of groups and a page",
    "models": "list a run's model versions and which one is served; --use VERSION: roll back (or "
              "forward) to it",
    "inbox": "the uploads a service kept (serve --keep-uploads): list what is pending, mark it "
             "reviewed, purge old ones",
    "cache": "what the cache on this machine holds (vectors per encoder, duplicate signatures, "
             "remembered failures) and its size; --forget-*: delete a part of it",
}
EVERY = "every"  # build_parser(): every sub-command's full parser


def printable(text) -> str:
    """A file name or message safe to print on a terminal: control characters (escape
    sequences that could clear or recolour it) shown as ``\\xNN``, undecodable bytes too, and
    the bidirectional-text controls (U+202A-U+202E, U+2066-U+2069, U+200E/U+200F, U+061C) as
    ``\\uNNNN``: a right-to-left override in an uploader's id or a file name would otherwise
    reorder the rest of the line as the terminal shows it ("Trojan Source")."""
    out = []
    for ch in str(text):
        o = ord(ch)
        if (o < 32 or o == 127 or 0x80 <= o < 0xA0 or 0xD800 <= o <= 0xDFFF or 0x202A <= o <= 0x202E
                or 0x2066 <= o <= 0x2069 or o in (0x200E, 0x200F, 0x061C)):
            out.append(f"\\x{o & 0xFF:02x}" if o < 0x100 or 0xDC80 <= o <= 0xDCFF else f"\\u{o:04x}")
        else:
            out.append(ch)
    return "".join(out)


def add_collection_root(p, reads: str) -> None:
    """``--collection-root DIR``: where the collection's files are now, for a command that opens
    files a run or model recorded (``reads``: what it does with them). One meaning everywhere:
    the root item paths are resolved against (``mediacluster.locations``)."""
    p.add_argument("--collection-root", default=None, metavar="DIR",
                   help=f"the folder that holds the collection's files now, when it moved since the run was "
                        f"made (default: where it was, else the same place relative to the run, as when a "
                        f"project folder with the photos and the run was moved whole); {reads}")


def add_folder_labels(p, what: str) -> None:
    """``--labels-from-folders`` and ``--folder-label``, on the commands that read folder labels."""
    p.add_argument("--labels-from-folders", action="store_true", help=what)
    p.add_argument("--folder-label", choices=("path", "name"), default=None,
                   help="which folder is the label (implies --labels-from-folders): path (default), the "
                        "folder path under INPUT ('train/cat'), or name, the file's own folder name ('cat'), "
                        "for train/ and test/ folders holding the same classes")


def add_manifest_columns(p) -> None:
    """``--path-column`` / ``--id-column`` / ``--label-column``: a manifest's own column names."""
    g = p.add_argument_group("a manifest with its own column names (a scrape's post table)")
    g.add_argument("--path-column", default=None, metavar="NAME",
                   help="the manifest's column of file paths, when it is not called 'path' (e.g. file_name)")
    g.add_argument("--id-column", default=None, metavar="NAME",
                   help="the manifest's column of item ids, when it is not called 'id' (e.g. post_id): a file "
                        "named by several rows is one item per id")
    g.add_argument("--label-column", default=None, metavar="NAME",
                   help="the manifest's column of true labels (evaluation only), when it is not called 'label'")


def manifest_columns(args) -> dict[str, str] | None:
    """What ``collect(columns=)`` takes from :func:`add_manifest_columns`' flags."""
    cols = {role: getattr(args, f"{role}_column", None) for role in ("path", "id", "label")}
    return {k: v for k, v in cols.items() if v} or None


def folder_labels(args) -> bool | str:
    """What ``collect(labels_from_folders=)`` takes from ``--labels-from-folders`` / ``--folder-label``."""
    if args.folder_label is not None:
        return args.folder_label
    return bool(args.labels_from_folders)


def add_retry_bad(p) -> None:
    """``--retry-bad``, on every command that decodes files through the embedding cache."""
    p.add_argument("--retry-bad", action="store_true",
                   help="decode again this command's files that an earlier run could not use (truncated, not an "
                        "image, empty, a decompression bomb, ...): the cache remembers them and, unless "
                        "they changed, lists them as skipped with the same reason without reading them; "
                        "other folders' stay remembered")


@contextlib.contextmanager
def retry_bad(args):
    """With ``--retry-bad``: the command runs within ``embed.store.retrying_failures``, so the
    failures the embedding cache remembers of the files it reads are forgotten and those files
    decoded again; those of other files (another folder sharing the cache) stay remembered.
    Says how many were forgotten when the command ends."""
    if not getattr(args, "retry_bad", False):
        yield
        return
    from ..embed.store import retrying_failures

    with retrying_failures() as retry:
        try:
            yield
        finally:
            n = retry.forgotten
            print(f"--retry-bad: {n} remembered failure{'' if n == 1 else 's'} of this command's files "
                  "forgotten and decoded again", file=sys.stderr)


def note_missing_root(run) -> None:
    """On stderr: the run's collection root is not where it was recorded (nor beside the run),
    with the flag that says where it is now."""
    loc = run.collection_root
    if loc.path is not None and not loc.given and not loc.found:
        sys.stderr.write(f"note: the collection root {printable(loc.path)} recorded in the run is not there "
                         "(moved?); pass --collection-root DIR, the folder that holds the files now\n")


class _PrintableFormatter(logging.Formatter):
    """Log lines safe on a terminal: every line of a message through :func:`printable`."""

    def format(self, record):
        return "\n".join(printable(line) for line in super().format(record).split("\n"))


def _safe_streams() -> None:
    """A name that is not UTF-8 never crashes a print (``printable`` escapes the names we print;
    this covers anything else, e.g. a terminal whose locale makes Python's stdout strict)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):  # a replaced or closed stream: leave it
            pass


def command_of(argv: list[str]) -> str | None:
    """The sub-command an argument list runs (the first word that is not an option: the
    top-level options take no value), or None."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(command: str | None = EVERY) -> argparse.ArgumentParser:
    """The command line. ``command``: only that sub-command's module is imported and its full
    parser built, the others listed by their ``SUMMARIES`` line (``None``: no module, for
    ``mediacluster --help`` and the usage line); the default builds every one (e.g. to list every
    option)."""
    parser = argparse.ArgumentParser(
        prog="mediacluster",
        description="Cluster, tune, evaluate, name and tag large media collections.",
    )
    parser.add_argument("--version", action="version", version=f"mediacluster {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        if command == EVERY or name == command:
            mod = importlib.import_module(f"mediacluster.cli.{name}")
            p = mod.add_parser(sub)
            p.set_defaults(_run=mod.run)
        else:  # never parses anything: main builds the parser for the command it runs
            sub.add_parser(name, help=SUMMARIES[name])
    return parser


def _log_bug(argv) -> str:
    """Write the current exception's traceback to a log file; return its path."""
    d = cache_root() / "logs"
    text = (f"mediacluster {__version__}, {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n"
            f"argv: {argv!r}\n\n{traceback.format_exc()}")
    try:
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"crash-{time.strftime('%Y%m%d-%H%M%S')}.log"
        p.write_text(text, encoding="utf-8", errors="backslashreplace")
        return str(p)
    except OSError:
        sys.stderr.write(text)
        return "(could not write a log file; the traceback is above)"


@contextlib.contextmanager
def _imports_kept(entry: bool):
    """Around the command module's import: when ``main`` is this process's command (``argv``
    None: the ``mediacluster`` script, ``python -m mediacluster``), the cyclic garbage collector
    is off while the libraries are imported, and what they made is then frozen (``gc.freeze``).
    Those objects live as long as the process, yet every full collection, and the one at exit,
    walked them all (~200,000 after ``assign``'s imports: scikit-learn, SciPy, pandas, faiss):
    ~0.1 s of collections during the imports and 0.15-0.25 s at exit of every command
    (benchmarks/RESULTS.md, "What a user waits for, part two"). What the command itself makes is
    collected as before. Called in-process (``entry`` False: tests) it changes nothing."""
    if not entry or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def _stdout_gone() -> bool:
    """Whether standard output's reader is gone (a closed pipe); if so, later writes (the
    interpreter's flush at exit) go to /dev/null instead of failing again."""
    import os
    import select

    try:
        fd = sys.stdout.fileno()
        poll = select.poll()
        poll.register(fd, select.POLLOUT)
        if not any(ev & select.POLLERR for _, ev in poll.poll(0)):  # a pipe without a reader
            return False
        os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
    except (OSError, ValueError, AttributeError):  # no real stdout (captured): not this case
        return False
    return True


def _quiet_pillow() -> None:
    """Pillow's warnings name no file and come mid-progress-bar: "DecompressionBombWarning: Image
    size (99000000 pixels) ... could be decompression bomb DOS attack" for a 99-megapixel museum
    scan that ``ingest.images`` reads within its own limits (``MAX_PIXELS``, the pixel budget),
    "Corrupt EXIF data" for a file that is then read or listed as skipped with its reason. Shown
    again with ``--verbose``. Filtered by the module that warns (``PIL.Image``,
    ``PIL.TiffImagePlugin``, ...; ``DecompressionBombWarning`` is a ``RuntimeWarning``), so no
    command imports Pillow to say so (``mediacluster --help`` imports no library)."""
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
    warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"PIL\.")


_SIGINT_SEEN: list[int] = []


def _watch_interrupts():
    """Record a Ctrl-C as well as raising it (the handler Python installs raises
    KeyboardInterrupt and nothing else): what the interrupt sets off can lose it. optuna catches
    a trial's KeyboardInterrupt, records the trial failed, and when that commit meets a worker's
    write on the study's SQLite file ("database is locked") raises a StorageInternalError, then
    "AssertionError: Should not reach." with no KeyboardInterrupt in the chain: `tune --jobs 2`
    stopped by Ctrl-C said "internal error" and wrote a crash log. An error after a recorded
    Ctrl-C is the Ctrl-C's. Returns the handler to put back (None: left as it was, e.g. not the
    main thread, or someone else's handler)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return None
    _SIGINT_SEEN.clear()

    def on_interrupt(signum, frame):
        _SIGINT_SEEN.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_interrupt)
    return signal.default_int_handler


def main(argv: list[str] | None = None) -> int:
    _SIGINT_SEEN.clear()
    previous = _watch_interrupts()
    try:
        return _main(argv)
    except KeyboardInterrupt:  # before the command runs: while its modules load (the parser's)
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            import signal

            signal.signal(signal.SIGINT, previous)


def _main(argv: list[str] | None) -> int:
    setup_numba_cache()  # before umap / pynndescent are imported: no command pays the JIT twice
    with _imports_kept(argv is None):
        parser = build_parser(command_of(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)
    _safe_streams()
    handler = logging.StreamHandler()
    handler.setFormatter(_PrintableFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler])
    if not args.verbose:  # faiss announces which CPU build it loaded at INFO on every import
        logging.getLogger("faiss").setLevel(logging.WARNING)
        _quiet_pillow()
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        with retry_bad(args):
            return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("\ninterrupted; finished work is kept, re-run the same command to resume", file=sys.stderr)
        return 130
    except MediaclusterError as e:
        print(f"error: {printable(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - anything else is a bug: say so, keep the traceback
        if interrupted(e) or _SIGINT_SEEN:
            print("\ninterrupted; finished work is kept, re-run the same command to resume", file=sys.stderr)
            return 130
        if isinstance(e, BrokenPipeError) and _stdout_gone():
            return 141  # the reader went away (`mediacluster models RUN | head -1`): quietly, as ls
        full = full_disk(e)
        if full is not None:  # a full disk is not a bug (numba's code cache, a library's own file)
            print(f"error: {printable(full)}", file=sys.stderr)
            return 2
        if args.verbose:
            traceback.print_exc()
        log = _log_bug(sys.argv if argv is None else argv)
        print(f"mediacluster: internal error (a bug, not your input): {type(e).__name__}: "
              f"{printable(e)}\nthe traceback is in {log}; please report it", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
