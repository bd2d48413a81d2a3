"""``mediacluster report RUN_DIR``: name the clusters and write an offline HTML report."""

from __future__ import annotations

import sys


def add_parser(sub):
    p = sub.add_parser("report", help="write a self-contained HTML report (map, cluster cards, names) of a run")
    p.add_argument("run_dir", help="output folder of `mediacluster cluster` / `tune`")
    p.add_argument("--out", default=None, help="report folder (default: RUN_DIR/report)")
    p.add_argument("--vocabulary", default=None,
                   help="text file of topics (one per line) for CLIP zero-shot names "
                        "(default: a shipped list of common social-media topics)")
    p.add_argument("--rename", action="store_true",
                   help="recompute automatic names even when the run already has some")
    p.add_argument("--names-template", action="store_true",
                   help="also write RUN_DIR/names.yaml (if absent) listing every cluster, for renaming by hand")
    p.add_argument("--thumb-size", type=int, default=96, help="thumbnail size in pixels")
    p.add_argument("--map", dest="map_method", choices=["umap", "pca"], default="umap",
                   help="2-D map projection (computed once, cached as RUN_DIR/map2d.npy)")
    p.add_argument("--workers", type=int, default=None, help="thumbnail threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def make_report(run_dir, out=None, vocabulary=None, rename=False, names_template=False, thumb_size=96,
                map_method="umap", workers=None, progress=True):
    """What ``mediacluster report`` does, callable from ``cluster --report`` / ``tune --report``."""
    from pathlib import Path

    from ..naming.names import name_run
    from ..naming.overrides import save_names_template
    from ..report import build_report

    run_dir = Path(run_dir)
    if rename or vocabulary is not None or not (run_dir / "names.json").exists():
        try:
            named = name_run(run_dir, vocabulary=vocabulary)
            if vocabulary is not None and named and named[0]["method"] != "clip-zeroshot":
                sys.stderr.write("mediacluster report: --vocabulary is used with CLIP runs only; this run's "
                                 f"encoder has no text tower, names come from {named[0]['method']}\n")
        except Exception as e:  # noqa: BLE001 - the report is still useful without names
            sys.stderr.write(f"mediacluster report: automatic naming failed: {e}\n")
    if names_template:
        save_names_template(run_dir)
    return build_report(run_dir, out_dir=out, thumb_size=thumb_size, map_method=map_method, workers=workers,
                        progress=progress, name=False)


def run(args) -> int:
    from pathlib import Path

    run_dir = Path(args.run_dir)
    if not (run_dir / "assignments.parquet").exists():
        sys.stderr.write(f"mediacluster report: {run_dir} is not a run folder (no assignments.parquet)\n")
        return 2
    path = make_report(run_dir, out=args.out, vocabulary=args.vocabulary, rename=args.rename,
                       names_template=args.names_template, thumb_size=args.thumb_size,
                       map_method=args.map_method, workers=args.workers, progress=not args.quiet)
    size = path.stat().st_size
    sys.stdout.write(f"report: {path} ({size / 1e6:.1f} MB; thumbnails in {path.parent / 'thumbs'})\n"
                     f"open it in a browser: file://{path.resolve()}\n")
    return 0


# -- `--report` on other commands (cluster, tune) ----------------------------------------------
def add_report_argument(p) -> None:
    """Add ``--report`` (and ``--vocabulary``) to another sub-command's parser."""
    p.add_argument("--report", action="store_true",
                   help="also name the clusters and write the HTML report (OUT/report/index.html)")
    if not any("--vocabulary" in a.option_strings for a in p._actions):
        p.add_argument("--vocabulary", default=None,
                       help="topics file for CLIP zero-shot names (with --report)")


def report_after(args, run_dir) -> None:
    """Write the report of ``run_dir`` when ``--report`` was given (a failure is reported, not
    raised: the run itself has finished)."""
    if not getattr(args, "report", False):
        return
    try:
        path = make_report(run_dir, vocabulary=getattr(args, "vocabulary", None),
                           progress=not getattr(args, "quiet", False))
        sys.stdout.write(f"report: {path}\n")
    except Exception as e:  # noqa: BLE001
        sys.stderr.write(f"mediacluster: the report could not be written: {e}\n")


def report_after_tune(args, out, emb, pipeline) -> None:
    """``tune --report``: write the refit best pipeline's run files into the study folder
    (embeddings, assignments, clusters.json, run.json if absent), then the report, which then
    also shows the study's plots (``study.db`` is there)."""
    if not getattr(args, "report", False):
        return
    if pipeline is None or getattr(pipeline, "labels_", None) is None:
        sys.stderr.write("mediacluster: --report needs the refit best pipeline (drop --no-refit)\n")
        return
    try:
        from pathlib import Path

        from ..io import write_json
        from ..run import (
            cluster_cmd_summary,
            cluster_summaries,
            describe,
            save_embeddings,
            versions,
            write_assignments,
        )

        out = Path(out)
        save_embeddings(out, emb)
        write_assignments(out, emb, pipeline)
        write_json(out / "clusters.json", {"clusters": cluster_summaries(emb, pipeline.labels_)})
        for stale in ("names.json", "map2d.npy", "map2d.json"):  # a new best pipeline: recompute these
            (out / stale).unlink(missing_ok=True)
        if not (out / "run.json").exists():
            write_json(out / "run.json", {
                "command": "tune", "pipeline": describe(pipeline),
                "encoder": {"name": getattr(args, "encoder", None), "id": emb.encoder_version or emb.encoder},
                "params": {k: v for k, v in vars(args).items() if not k.startswith("_")},
                "summary": cluster_cmd_summary(emb, pipeline.labels_, getattr(pipeline, "timings_", {})),
                "versions": versions(),
            })
        path = make_report(out, vocabulary=getattr(args, "vocabulary", None),
                           progress=not getattr(args, "quiet", False))
        sys.stdout.write(f"report: {path}\n")
    except Exception as e:  # noqa: BLE001 - the study itself has finished
        sys.stderr.write(f"mediacluster: the report could not be written: {e}\n")
