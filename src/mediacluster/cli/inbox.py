"""``mediacluster inbox DIR``: the uploads a service kept (``serve --keep-uploads DIR``), as a
person works through them: how many are pending, reviewed, or taken by a clustering; the list
of one state (``--list``), each with the uploader's name and ids, its stored file, how often it
came and the last answer; ``--mark-reviewed`` takes contents out of the pending set (``all``,
or hashes / stored files / the uploaders' ids); ``--purge DAYS`` removes the reviewed ones (``--purge-also``: other states) last
uploaded DAYS or more ago, rows and files. Safe while the service writes (one SQLite
transaction each; see ``mediacluster.inbox``)."""

from __future__ import annotations

import json
import sys

from . import SUMMARIES, printable
from .cluster import non_negative_float


def add_parser(sub):
    from ..inbox import CLUSTERED, PENDING, REVIEWED, STATES

    p = sub.add_parser("inbox", help=SUMMARIES["inbox"], description=__doc__.split("\n\n")[0])
    p.add_argument("inbox", help="the folder given to `serve --keep-uploads`")
    p.add_argument("--list", dest="state", choices=(*STATES, "all"), default=PENDING,
                   help="which contents to list (default: pending, the review queue)")
    p.add_argument("--limit", type=int, default=50, metavar="N",
                   help="list at most N contents (default 50; 0: counts only)")
    p.add_argument("--mark-reviewed", nargs="+", default=None, metavar="ITEM",
                   help=f"take these contents out of the pending set ({REVIEWED}): `all` (every pending "
                        "one), or content hashes (8+ leading hex digits do), stored files (files/NAME) or "
                        "the uploaders' own ids (/v1/assign's item_ids)")
    p.add_argument("--purge", type=non_negative_float, default=None, metavar="DAYS",
                   help=f"remove the {REVIEWED} contents last uploaded DAYS or more ago (rows and "
                        "files; 0: all of them)")
    p.add_argument("--purge-also", action="append", choices=(PENDING, CLUSTERED), default=[],
                   help=f"with --purge, also contents in this state (repeatable). {CLUSTERED}: their files "
                        "leave the collections that read them through a link")
    p.add_argument("--json", action="store_true", help="print the counts and the list as JSON")
    return p


def run(args) -> int:
    """:func:`_run`, a table SQLite cannot read (cut short, overwritten, locked past the wait)
    refused naming the file, as ``serve --keep-uploads`` refuses it, not an internal error."""
    import sqlite3
    from pathlib import Path

    from ..errors import InputError
    from ..inbox import DB_NAME

    try:
        return _run(args)
    except sqlite3.Error as e:
        db = printable(str(Path(args.inbox) / DB_NAME))
        if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
            raise InputError(f"{db} is locked: another process held it for over 30 s ({e}); "
                             "try again") from e
        raise InputError(f"{db} cannot be read ({e}): the inbox's table is damaged; move inbox.sqlite "
                         "aside (a service started with --keep-uploads on this folder starts a new "
                         "one) and keep files/ for the uploads") from e


def _run(args) -> int:
    from pathlib import Path

    from ..errors import ParameterError
    from ..inbox import FILES, REVIEWED, listing, mark, purge, summary

    if args.limit < 0:
        raise ParameterError(f"--limit must be >= 0, got {args.limit}")
    if args.purge_also and args.purge is None:
        raise ParameterError("--purge-also needs --purge DAYS")
    done = {}
    if args.mark_reviewed:
        keys = None if [k.strip().lower() for k in args.mark_reviewed] == ["all"] else args.mark_reviewed
        done["marked"] = mark(args.inbox, keys, how=REVIEWED)
    if args.purge is not None:
        done["purged"] = purge(args.inbox, args.purge, states=(REVIEWED, *args.purge_also))
    counts = summary(args.inbox)
    items = listing(args.inbox, args.state, limit=args.limit) if args.limit else []
    if args.json:
        json.dump({**done, **counts, "state": args.state, "items": items}, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 2 if done.get("marked", {}).get("unknown") or done.get("purged", {}).get("not_removed") else 0
    out = sys.stdout
    if "marked" in done:
        m = done["marked"]
        out.write(f"marked reviewed: {m['marked']}\n")
        for k in m["unknown"]:
            out.write(f"  not in the inbox (no content has this hash or stored file): {printable(k)}\n")
    if "purged" in done:
        g = done["purged"]
        out.write(f"purged: {g['contents']} contents ({g['uploads']} uploads, {g['bytes'] / 2**20:.1f} MiB) "
                  f"{'/'.join(g['states'])}, last uploaded at or before {g['older_than']}\n")
        for k in g["not_removed"]:
            sys.stderr.write(f"  not purged (its file cannot be removed, it stays in the inbox): "
                             f"{printable(k['file'])}: {printable(k['error'])}\n")
    c = counts["contents"]
    out.write(f"{printable(args.inbox)}: {c['pending']} pending, {c['reviewed']} reviewed, {c['clustered']} "
              f"clustered ({counts['uploads']} uploads, {counts['bytes'] / 2**20:.1f} MiB)"
              + (f"; oldest pending upload {counts['oldest_pending']}" if counts["oldest_pending"] else "") + "\n")
    for it in items:
        a = it["answer"]
        shown = it["file"] or f"(a vector, {it['hash'][:12]})"
        answer = (f"{a.get('name') or a.get('status')} p={a['probability']:.2f}" if a.get("probability") is not None
                  else a.get("status") or "")
        if a.get("novelty") is not None:
            answer += f" novelty={a['novelty']:.2f}"
        ids = f"  id {printable(', '.join(it['ids']))}" if it["ids"] else ""
        if it["missing"]:
            shown += " (FILE MISSING)"
        out.write(f"  {it['state']:9s} {printable(it['name'] or '-')}{ids}  {printable(shown)}  x{it['count']}  "
                  f"{it['reason']}: {printable(answer)}  last {it['last_seen']}"
                  + (f"  run {it['run']}" if it["run"] else "") + "\n")
    gone = sum(it["missing"] for it in items)
    if gone:
        out.write(f"{gone} of the {len(items)} listed contents have lost their stored file (removed from "
                  f"{printable(str(Path(args.inbox) / FILES))} by hand?): their bytes cannot be shown or "
                  "clustered; --mark-reviewed and --purge them, or put the files back\n")
    return 2 if done.get("marked", {}).get("unknown") or done.get("purged", {}).get("not_removed") else 0
