"""``mediacluster models RUN_OR_MODELS [--use VERSION]``: the model versions of a run (or its
``models/`` folder), which one ``LATEST`` names (the one ``assign`` and a watching service use),
and, with ``--use``, a rollback: ``LATEST`` pointed at an earlier version (or back to a later
one). A service watching the folder switches to it within its ``--poll``, without a failed
request, as it does for a new version (``persist.ModelStore.use``). A run re-clustered in place
keeps its earlier runs' versions (numbering goes on), so ``--use`` reaches last week's model;
each version's id (``RUN_ID/vNNNN``) is unique across runs."""

from __future__ import annotations

import sys

from . import SUMMARIES, printable


def add_parser(sub):
    p = sub.add_parser("models", help=SUMMARIES["models"], description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a run folder or its models/ folder")
    p.add_argument("--use", default=None, metavar="VERSION",
                   help="point LATEST at this version (e.g. v0002, v2 or 2, or its id RUN_ID/v0002; also an "
                        "earlier run's, kept when the folder was re-clustered in place): `assign` and "
                        "a service watching the folder switch to it (a rollback); the next publish "
                        "becomes the latest again")
    return p


def run(args) -> int:
    from pathlib import Path

    from ..errors import ModelFormatError
    from ..persist import LATEST, model_store_of

    store = model_store_of(args.run)
    if store is None:
        if not Path(args.run).exists():
            raise ModelFormatError(f"{args.run} does not exist")
        raise ModelFormatError(f"{args.run} holds no model versions: give a run folder written with "
                               "`cluster --save-model` (or the studio's publish), or its models/ folder")
    if args.use:
        from ..pipeline import Pipeline

        ptr = store.use(args.use, load=Pipeline.load)  # loaded as the service would, before LATEST moves
        sys.stdout.write(f"LATEST -> {ptr['version']} in {printable(store.root)}: `assign` uses it; a "
                         "service watching this folder switches to it within its --poll\n")
    listed = store.describe()
    ptr, newest = store.pointer(), (listed[-1]["version"] if listed else None)
    if (store.root / LATEST).exists() and (ptr is None or ptr["version"] not in store.versions()):
        # a LATEST hand-edited, cut short, or naming a version deleted since: the newest is used
        said = f"names {ptr['version']!r}, which is not here" if ptr else "cannot be read as a pointer"
        sys.stderr.write(f"warning: {printable(store.root / LATEST)} {said}: `assign` and a service use the "
                         f"newest version, {newest}; `--use VERSION` points it again\n")
    for v in listed:
        sys.stdout.write(f"{'*' if v['latest'] else ' '} {v['version']}  {v['source'] or '?':8s} "
                         f"{v['n_clusters'] if v['n_clusters'] is not None else '?':>4} clusters  "
                         f"id {v['id']}  {v['created'] or ''}"
                         f"{'  (' + printable(str(v['note'])) + ')' if v.get('note') else ''}"
                         f"{'  (held: a watching service keeps its version until the next publish or --use)' if v['held'] else ''}"
                         f"{'  DAMAGED, does not load: ' + printable(v['damaged']) if v['damaged'] else ''}\n")
    return 0
