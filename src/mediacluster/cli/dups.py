"""``mediacluster dups INPUT --out DIR``: list the duplicate groups of a collection on their own."""

from __future__ import annotations

from ..config import parse_param
from ..duplicates.collection import INFO, find_duplicates_in, vectors_rule
from . import SUMMARIES, add_manifest_columns, add_retry_bad, manifest_columns, printable
from .cluster import positive_int, print_long_recordings, print_skipped


def add_parser(sub):
    p = sub.add_parser("dups", help=SUMMARIES["dups"])
    p.add_argument("input", help="folder of images or audio clips, CSV/Parquet manifest, or .npy/.npz/Parquet vectors")
    p.add_argument("--out", required=True,
                   help="output folder: dups.parquet and dups.csv (one row per item: id, path relative "
                        "to the collection root, duplicate_group (-1: none), duplicate_of, link kind and "
                        "distance, group size and diameter), dups.json (counts and the collection root) and "
                        "dups.html (the largest groups)")
    p.add_argument("--media", choices=("auto", "image", "audio"), default="auto",
                   help="images or audio clips: auto (default) takes the majority kind of a mixed folder "
                        "and lists the other kind as skipped; audio duplicates are exact copies and "
                        "re-encoded, resampled, trimmed or louder copies confirmed by an audio fingerprint")
    p.add_argument("--encoder", default=None, help="encoder for the embedding check (default: the media's default)")
    p.add_argument("--no-embed", dest="embed", action="store_false",
                   help="images by bytes and perceptual hash only: no encoder, faster, but crops, caption "
                        "bars and borders are missed")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="duplicate finder parameter, repeatable, e.g. hash_radius=5 (see DuplicateFinder)")
    p.add_argument("--groups", type=positive_int, default=100, help="groups shown on the page (largest first)")
    add_retry_bad(p)
    p.add_argument("--cache-dir", default=None, help="embedding cache folder (default: the user cache); it also "
                   "keeps the images' perceptual signatures and pair checks, so a re-run decodes only new files")
    p.add_argument("--workers", type=positive_int, default=None, help="decoding threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_manifest_columns(p)
    return p


def run(args) -> int:
    res = find_duplicates_in(args.input, args.out, media=args.media, encoder=args.encoder, embed=args.embed,
                             params=dict(parse_param(t) for t in args.param), cache_dir=args.cache_dir,
                             workers=args.workers, progress=not args.quiet, page_groups=args.groups,
                             columns=manifest_columns(args))
    print(f"mediacluster dups: {res['items']} items -> {res['groups']} duplicate groups holding "
          f"{res['items_in_groups']} items (largest {res['largest']}); links "
          + ", ".join(f"{k} {v}" for k, v in res["links"].items()))
    across = res.get("groups_across_folders")
    if across:
        print("groups with copies in more than one top-level folder (across splits such as train/ and test/?): "
              + ", ".join(f"{printable(k)} {v}" for k, v in across.items()))
    if res.get("note"):
        print(res["note"])
    if vectors_rule(res, "--param"):
        print(vectors_rule(res, "--param"))
    skipped = res["skipped_files"]
    print(f"skipped: {len(skipped)} file(s)")
    print_skipped(skipped, INFO)
    print_long_recordings(res.get("long_recordings"), INFO)
    print(f"table: {printable(res['table'])} (and .csv)")
    if res.get("page"):
        print(f"page: {printable(res['page'])}")
    # as `cluster`: 0 when every file was used, 3 when some were skipped (the job still finished)
    return 3 if skipped else 0
