"""``mediacluster studio RUN_DIR``: review, fix and name a run's clusters in a browser.

Serves the studio on 127.0.0.1 (a free port unless ``--port``), prints its URL and opens it in
the browser. Every edit is kept in ``RUN_DIR/edits.sqlite``; the curated clusters are written
back into the run (``assignments.curated_cluster``, names in ``curated.json``) for ``report``,
``assign``, ``tags train --run`` and the service. ``--publish`` and ``--export KIND`` do the
same as the page's buttons without starting a server.
"""

from __future__ import annotations

import sys
import threading

from ..rundir import RunDir
from ..studio.session import Studio
from . import SUMMARIES, add_collection_root, note_missing_root, printable

DEFAULT_PORT = 8765


def add_parser(sub):
    p = sub.add_parser("studio", help=SUMMARIES["studio"])
    p.add_argument("run_dir", help="output folder of `mediacluster cluster` / `tune`")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; any other needs an access token, "
                        "made and printed when not given)")
    p.add_argument("--port", type=int, default=None,
                   help=f"port (default {DEFAULT_PORT}, or a free one when that is taken; 0 = a free one)")
    p.add_argument("--token", default=None, help="access token (required off loopback; default: random)")
    p.add_argument("--read-token", default=None, help="a second token that may only look: pages, "
                   "clusters, items and downloads (GET); an edit or publish with it is a 403 (an access "
                   "--token is made and printed when none is given)")
    p.add_argument("--user", default=None, metavar="NAME",
                   help="your name, kept with each edit and said to other pages when their edit "
                        "conflicts with yours (a single-user start; a page's own \"your name\" box wins)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.add_argument("--map", dest="map_method", choices=["auto", "umap", "pca"], default="auto",
                   help="2-D map: the run's cached one (auto), else a UMAP computed once and cached")
    p.add_argument("--publish", action="store_true",
                   help="publish the curated clusters as a new model version and exit (no server)")
    p.add_argument("--export", choices=["folders", "classes", "csv", "parquet", "labelstudio"], default=None,
                   help="write an export of the curated clusters into RUN_DIR/exports and exit: folders (one per "
                        "cluster), classes (the clean dataset: one folder per name, junk, unclustered items and "
                        "duplicate copies left out and listed with why in dropped.csv), csv / parquet (the curated "
                        "assignments), labelstudio")
    p.add_argument("--export-prefer", action="append", default=None, metavar="FOLDER",
                   help="classes export: of a duplicate group keep the copy under this folder of the collection "
                        "(such as train/; repeat for an order of preference; default: the largest file)")
    p.add_argument("--export-split", choices=["top"], default=None,
                   help="classes export: keep the collection's splits above the class folders: top, each "
                        "file's top-level folder under the collection (train/<name>/file, test/<name>/file; "
                        "the folder --folder-label path starts with); of a duplicate group across splits one "
                        "copy is kept (see --export-prefer) and the others are listed in dropped.csv as leak")
    p.add_argument("--export-mode", choices=["symlink", "copy"], default=None,
                   help="folders and classes exports: symbolic links (default) or copies")
    p.add_argument("--carry-from", default=None, metavar="OLD_RUN",
                   help="first carry what a person did on a previous run of (part of) the same "
                        "collection to this run's matching clusters (see `cluster --carry-from`); "
                        "the clusters with no ancestor are marked new")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="with --carry-from: the embedding cache that knows the files' content hashes "
                        "(default: the user cache, $MEDIACLUSTER_CACHE or ~/.cache/mediacluster)")
    add_collection_root(p, "the studio shows the files and exports link to them")
    return p


def print_carry(s: dict) -> None:
    """The summary of :func:`mediacluster.studio.carry.carry_curation`, briefly."""
    w = sys.stdout.write
    if s.get("already"):
        w(f"carry: {printable(s['message'])}\n")
        return
    prev = s["previous_clusters"]
    w(f"carry from run {s['from']['run_id']} ({s['shared_items']:,} shared items by {s['identity']}, "
      f"{s['items_new_to_the_collection']:,} new, {s['items_gone']:,} gone): previous curated clusters "
      + ", ".join(f"{prev.get(k, 0)} {k}" for k in ("kept", "split", "merged", "gone")) + "\n")
    for r in s["previous"]:
        if r["status"] == "kept" and r["named_by"] != "person" and not (r["junk"] or r["tags"]):
            continue
        to = r.get("to")
        where = (f" -> {', '.join(map(str, to))}" if isinstance(to, list) else f" -> {to}" if to is not None else "")
        also = f" (with {', '.join(map(str, r['with']))})" if r.get("with") else ""
        marks = "".join([" [junk]" if r["junk"] else ""] + [f" #{printable(t)}" for t in r["tags"]])
        w(f"  {r['cluster']} {printable(r['name'])}{marks}: {r['status']}{where}{also}"
          + (f", carried to {r['carried_to']}" if r.get("carried_to") is not None else "")
          + (f" ({r['reason']}" + (f"; the most, {100 * r['largest_share']:.0f}%, in {r['largest']}"
                                    if r.get("largest") is not None else "") + ")" if r.get("reason") else "") + "\n")
    new = s["new_clusters"]
    w(f"new clusters (no ancestor, to review): {', '.join(map(str, new)) if new else 'none'}\n")
    c = s["carried"]
    w(f"carried: {c['names']} names, {c['junk']} junk marks, {c['cluster_tags']} cluster tags, "
      f"{c['item_tags']} item tags, {c['moves']} moves ({s['carried_items_moved']} items)"
      + (f", {c['keeps']} kept copies" if c.get("keeps") else "")
      + (f", {c['merges']} merge{'' if c['merges'] == 1 else 's'}" if c.get("merges") else "")
      + (f", {c['splits']} split part{'' if c['splits'] == 1 else 's'}" if c.get("splits") else "")
      + f", {c.get('level_names', 0)} level names"
      + f" in {s['seconds']:.2f} s; {printable(s['message'])}\n")
    for r in s.get("not_carried") or []:
        where = (f" {printable(r['name'])!r} of level_{r['level']} (group {r.get('previous_cluster')})"
                 if r.get("level") is not None else
                 f" to cluster {r['cluster']}" if r.get("cluster") is not None else
                 f" of {r['items']} item(s)" if r.get("items") is not None else "")
        w(f"  not carried: {printable(r.get('what'))}{where}: {printable(r.get('reason'))}\n")


def run(args) -> int:
    from ..errors import ParameterError
    from ..web.app import port_free, resolve_token, run_server, token_query

    # a flag that only shapes an export or a carry is refused without it, not passed over (the
    # server would start, the person's --export-prefer unused)
    for flag, value, needs in (("--export-prefer", args.export_prefer, args.export),
                               ("--export-split", args.export_split, args.export),
                               ("--export-mode", args.export_mode, args.export),
                               ("--cache-dir", args.cache_dir, args.carry_from)):
        if value is not None and needs is None:
            what = "--export KIND" if flag.startswith("--export") else "--carry-from OLD_RUN"
            raise ParameterError(f"{flag} goes with {what} (it shapes that step), which is not given", flag[2:])
    run_dir = RunDir.open(args.run_dir, collection_root=args.collection_root)
    note_missing_root(run_dir)
    if args.carry_from is not None:
        from ..studio.carry import carry_curation

        print_carry(carry_curation(args.carry_from, run_dir, cache_dir=args.cache_dir, progress=True))
    one_shot = bool(args.publish or args.export)  # no page: no map or search made unless used
    studio = Studio(run_dir, map_method=args.map_method, progress=True, warm=not one_shot,
                    lazy_map=one_shot)
    if one_shot:
        try:
            if args.export:
                res = studio.export(args.export, args.export_mode or "symlink", client="cli", user=args.user or "",
                                    prefer=args.export_prefer, split=args.export_split)
                sys.stdout.write(f"export: {printable(res['path'])} ({res['items']} items; "
                                 f"{', '.join(map(printable, res['files'][:5]))}"
                                 f"{' ...' if len(res['files']) > 5 else ''})\n")
                if res.get("dropped"):
                    sys.stdout.write("left out (dropped.csv): " + ", ".join(
                        f"{v} {k}" for k, v in sorted(res["dropped"].items())) + "\n")
                elif res.get("missing"):
                    sys.stdout.write(f"left out: {res['missing']} file(s) gone since the run\n")
                if res.get("kept_by_person"):
                    sys.stdout.write(f"copies kept as a person chose in the studio: {res['kept_by_person']} "
                                     "duplicate group(s)\n")
            if args.publish:
                res = studio.publish(client="cli", user=args.user or "")
                sys.stdout.write(f"published model {res['version']}: {printable(res['path'])}\n"
                                 f"it predicts the curated cluster of {100 * res['agreement']:.2f}% of "
                                 f"{res['checked']} curated items ({res['clusters']} clusters, edit "
                                 f"{res['edits_seq']})"
                                 + ("; it carries the run's duplicate index (duplicate_of)" if res.get("duplicates") else "")
                                 + ("; it keeps the run's levels above them (clusters per level "
                                    + " -> ".join(map(str, res["levels"])) + ")" if res.get("levels") else "")
                                 + "\n")
        finally:
            studio.close()
        return 0

    from ..studio.app import create_studio_app

    token = resolve_token(args.host, args.token)
    if args.read_token and not token:  # the edits need a token of their own
        import secrets

        token = secrets.token_urlsafe(24)
    if args.read_token and args.read_token == token:
        raise ParameterError("--read-token must differ from --token", "read-token")
    port = args.port
    if port is None:
        port = DEFAULT_PORT if port_free(args.host, DEFAULT_PORT) else 0
    app = create_studio_app(studio, token=token, host=args.host, user=args.user, read_token=args.read_token)
    state = studio.state
    sys.stdout.write(f"studio: {studio.n:,} items, {len(state.alive())} clusters, {state.seq} edits "
                     f"so far (loaded in {studio.load_seconds:.1f} s)\n")

    def opened(url):
        if not args.no_browser:
            import webbrowser

            full = url + (token_query(token) if token else "")
            threading.Timer(0.5, lambda: webbrowser.open(full)).start()

    run_server(app, host=args.host, port=port, name="studio", on_listen=opened, show_token=not args.token)
    return 0

