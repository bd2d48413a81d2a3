"""``mediacluster cluster PATH --out DIR``: folder / manifest / vectors -> clusters."""

from __future__ import annotations

import sys


def add_parser(sub):
    p = sub.add_parser("cluster", help="embed and cluster a folder, manifest or embeddings file")
    p.add_argument("input", help="folder of images, CSV/Parquet manifest, or .npy/.npz/Parquet vectors")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--encoder", default="efficientnet-lite0",
                   help="encoder name, e.g. efficientnet-lite0 or clip:openai/clip-vit-base-patch32 "
                        "or clip:/path/to/local/model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--labels-from-folders", action="store_true",
                   help="take ground-truth labels from sub-folder names (evaluation only, never fitting)")
    p.add_argument("--cache-dir", default=None, help="embedding cache (default: OUT/cache)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=None, help="decoding threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def run(args) -> int:
    from ..run import cluster_folder

    res = cluster_folder(
        args.input, args.out, encoder=args.encoder, seed=args.seed,
        labels_from_folders=args.labels_from_folders, cache_dir=args.cache_dir,
        batch_size=args.batch_size, workers=args.workers, progress=not args.quiet,
        params={k: v for k, v in vars(args).items() if not k.startswith("_")},
    )
    print_summary(res.summary, res.embeddings.skipped, res.out)
    # exit code 0 when everything was used, 3 when some files were skipped (the run still finished)
    return 3 if res.embeddings.skipped else 0


def print_summary(s: dict, skipped, out) -> None:
    w = sys.stdout.write
    w(f"\nmediacluster: {s['items']} items -> {s['clusters']} clusters, "
      f"noise {s['noise']} ({100 * s['noise_share']:.1f}%), outliers {s['outliers']}, "
      f"coverage {100 * s['coverage']:.1f}%\n")
    w(f"skipped: {s['skipped']} file(s)\n")
    for item in skipped[:10]:
        w(f"  {item.path}: {item.reason}\n")
    if len(skipped) > 10:
        w(f"  ... and {len(skipped) - 10} more (see run.json)\n")
    w("time per stage: " + ", ".join(f"{k} {v:.1f}s" for k, v in s["timings_s"].items()) + "\n")
    w(f"results: {out}/assignments.parquet, clusters.json, run.json\n")
