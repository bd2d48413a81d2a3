"""``mediacluster cluster PATH --out DIR``: folder / manifest / vectors -> clusters."""

from __future__ import annotations

import sys


def add_parser(sub):
    p = sub.add_parser("cluster", help="embed and cluster a folder, manifest or embeddings file")
    p.add_argument("input", help="folder of images, CSV/Parquet manifest, or .npy/.npz/Parquet vectors")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--encoder", default=None,
                   help="encoder name; images: efficientnet-lite0 (default), efficientnet-lite0-int8 "
                        "(int8 copy, about half the CPU per image, made once on first use) or "
                        "clip:openai/clip-vit-base-patch32 or clip:/path/to/local/model; audio: mfcc "
                        "(default, MFCC statistics), resemblyzer (speaker), clap:laion/clap-htsat-unfused "
                        "or clap:/local/dir, birdnet (BirdNET v2.4, model licence CC BY-NC-SA 4.0: "
                        "NON-COMMERCIAL use only)")
    p.add_argument("--media", choices=("auto", "image", "audio"), default="auto",
                   help="which files to cluster: auto (default) takes the majority kind of a mixed "
                        "folder and lists the other kind as skipped; one run embeds one kind")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--labels-from-folders", action="store_true",
                   help="take ground-truth labels from sub-folder names (evaluation only, never fitting)")
    p.add_argument("--cache-dir", default=None, help="embedding cache (default: OUT/cache)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=None, help="decoding threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_pipeline_args(p)
    from .report import add_report_argument

    add_report_argument(p)
    return p


def add_pipeline_args(p) -> None:
    """Stage selection flags (shared with other commands that fit a pipeline)."""
    g = p.add_argument_group("pipeline stages (see mediacluster.pipeline; a --config file sets the same)")
    g.add_argument("--config", default=None, help="YAML/JSON pipeline config: reducer/outliers/clusterer "
                   "as {name: ..., params: {...}}, assign_noise, reference_size, ...")
    for kind, names, example in (
            ("reducer", "auto|umap|pca|ipca|kernel_pca|none", "n_components=10"),
            ("outliers", "none|lof|isolation_forest", "n_neighbors=20"),
            ("clusterer", "auto|hdbscan|kmeans|kmeans_auto|agglomerative|dbscan|meanshift",
             "min_cluster_size=100")):
        g.add_argument(f"--{kind}", default=None, help=f"{kind} stage: {names}")
        g.add_argument(f"--{kind}-param", action="append", default=[], metavar="NAME=VALUE",
                       help=f"{kind} parameter, repeatable, e.g. {example}")
    g.add_argument("--no-assign-noise", dest="assign_noise", action="store_false", default=None,
                   help="leave noise/outliers unassigned (default: give each its nearest cluster + confidence)")
    g.add_argument("--save-model", action="store_true",
                   help="also save the fitted pipeline to OUT/model (for `mediacluster assign`)")


def build_pipeline(args):
    """Pipeline from --config plus command-line overrides (flags win)."""
    from ..pipeline import load_config, parse_param, pipeline_from_config

    cfg = load_config(args.config) if args.config else {}
    for kind in ("reducer", "outliers", "clusterer"):
        name = getattr(args, kind)
        params = dict(parse_param(t) for t in getattr(args, f"{kind}_param"))
        if name is None and not params:
            continue
        base = cfg.get(kind)
        if isinstance(base, dict):
            base_name, base_params = base.get("name"), dict(base.get("params") or {})
        else:
            base_name, base_params = base, {}
        if name is not None and name != base_name:
            base_params = {}
        cfg[kind] = {"name": name or base_name or "auto", "params": {**base_params, **params}}
    cfg.setdefault("random_state", args.seed)
    return pipeline_from_config(cfg, assign_noise=args.assign_noise)


def run(args) -> int:
    from ..run import cluster_folder

    pipe = build_pipeline(args)
    res = cluster_folder(
        args.input, args.out, encoder=args.encoder, seed=args.seed, pipeline=pipe, media=args.media,
        labels_from_folders=args.labels_from_folders, cache_dir=args.cache_dir,
        batch_size=args.batch_size, workers=args.workers, progress=not args.quiet,
        params={k: v for k, v in vars(args).items() if not k.startswith("_")},
    )
    print_summary(res.summary, res.embeddings.skipped, res.out)
    if args.save_model:
        info = res.pipeline.save(res.out / "model", overwrite=True,
                                 metadata={"encoder": _encoder_spec(args, res.out)})
        print(f"model: {info['path']} ({info['bytes'] / 1e6:.1f} MB)")
    from .report import report_after

    report_after(args, res.out)
    # exit code 0 when everything was used, 3 when some files were skipped (the run still finished)
    return 3 if res.embeddings.skipped else 0


def _encoder_spec(args, out) -> str | None:
    """The encoder spec the run used (``--encoder`` or the default for the media it found)."""
    if args.encoder:
        return args.encoder
    from ..io import read_json

    return read_json(out / "run.json").get("encoder", {}).get("name")


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
