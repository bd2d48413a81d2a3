"""``mediacluster report RUN_DIR``: name the clusters (a run without names yet, or ``--rename``)
and write an offline HTML report."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import MediaclusterError, ParameterError
from ..report import METHODS, make_report, missing_thumbnails
from ..rundir import RunDir
from ..workflow import publish_tuned_run
from . import SUMMARIES, add_collection_root, note_missing_root, printable


def add_parser(sub):
    p = sub.add_parser("report", help=SUMMARIES["report"])
    p.add_argument("run_dir", help="output folder of `mediacluster cluster` / `tune`")
    p.add_argument("--out", default=None, help="report folder (default: RUN_DIR/report)")
    p.add_argument("--vocabulary", default=None,
                   help="text file of topics (one per line) for CLIP zero-shot names "
                        "(default: a shipped list of common social-media topics; for an audio (CLAP) run, of everyday sounds)")
    p.add_argument("--rename", action="store_true",
                   help="recompute automatic names even when the run already has some")
    p.add_argument("--names-template", action="store_true",
                   help="also write RUN_DIR/names.yaml (if absent) listing every cluster, and under 'levels:' every cluster of the coarser levels, for renaming by hand")
    p.add_argument("--thumb-size", type=int, default=96, help="thumbnail size in pixels")
    p.add_argument("--map", dest="map_method", choices=["umap", "pca"], default="umap",
                   help="2-D map projection (computed once, cached as RUN_DIR/map2d.npy)")
    p.add_argument("--workers", type=int, default=None, help="thumbnail threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--figure", default=None, metavar="FILE",
                   help="also write the 2-D map as a static figure for a paper (FILE ending in .png, .pdf or "
                        ".svg): coloured by the clusters of --figure-level, the 20 largest labelled with their names")
    p.add_argument("--figure-level", type=int, default=None, metavar="N",
                   help="with --figure: the hierarchy level the figure shows (0 = coarsest; default: the level "
                        "in use, the assignments' cluster column)")
    add_collection_root(p, "the report's thumbnails are made from the files")
    return p


def run(args) -> int:
    if args.figure_level is not None and args.figure is None:
        raise ParameterError("--figure-level is the level of the figure: add --figure FILE", "figure-level")
    if args.figure is not None:
        from ..report.figure import FORMATS

        if Path(args.figure).suffix.lower().lstrip(".") not in FORMATS:  # refused before any work
            raise ParameterError(f"--figure {args.figure}: the name must end in "
                                 + ", ".join("." + f for f in FORMATS), "figure")
    run_dir = RunDir.open(args.run_dir, collection_root=args.collection_root)
    if args.figure_level is not None:
        n_levels = len(run_dir.read_levels()) or 1  # a flat run: level 0 only
        if not 0 <= args.figure_level < n_levels:
            raise ParameterError(f"--figure-level {args.figure_level}: {printable(run_dir.path)} has levels "
                                 f"0..{n_levels - 1}", "figure-level")
    path = make_report(run_dir, out=args.out, vocabulary=args.vocabulary, rename=args.rename,
                       names_template=args.names_template, thumb_size=args.thumb_size,
                       map_method=args.map_method, workers=args.workers, progress=not args.quiet)
    size = path.stat().st_size
    sys.stdout.write(f"report: {printable(path)} ({size / 1e6:.1f} MB; thumbnails in "
                     f"{printable(path.parent / 'thumbs')})\n"
                     f"open it in a browser: file://{printable(path.resolve())}\n"
                     f"methods paragraph (parameters, versions, seed, fingerprint): {printable(path.parent / METHODS)}\n")
    if args.figure is not None:
        from ..report.figure import map_figure

        fig = map_figure(run_dir, args.figure, level=args.figure_level, map_method=args.map_method)
        sys.stdout.write(f"figure: {printable(fig)}\n")
    missing = missing_thumbnails(path)
    if missing:
        print_missing(missing)
        note_missing_root(run_dir)
        return 3  # done, but some items are shown without a picture
    return 0


def print_missing(missing: list[dict]) -> None:
    sys.stderr.write(f"{len(missing)} item(s) have no thumbnail in the report:\n")
    for m in missing[:10]:
        sys.stderr.write(f"  {printable(m['path'])}: {printable(m['reason'])}\n")
    if len(missing) > 10:
        sys.stderr.write(f"  ... and {len(missing) - 10} more (see report.json)\n")


# -- `--report` on other commands (cluster, tune) ----------------------------------------------
def add_report_argument(p, names_run: bool = False) -> None:
    """Add ``--report`` (and ``--vocabulary``) to another sub-command's parser. ``names_run``:
    the command names its run's clusters against ``--vocabulary`` itself (``cluster``: the run,
    its saved model and the report alike), so it needs no ``--report``."""
    p.add_argument("--report", action="store_true",
                   help="also name the clusters and write the HTML report (OUT/report/index.html)")
    if not any("--vocabulary" in a.option_strings for a in p._actions):
        p.add_argument("--vocabulary", default=None,
                       help="topics file (one per line, '#' comments) for CLIP / CLAP zero-shot names: the "
                            "run's, its saved model's and the report's" if names_run else
                            "topics file for CLIP zero-shot names (with --report)")


def check_report_arguments(args, names_run: bool = False) -> list[str] | None:
    """Before any work: ``--vocabulary`` is read by the report only (unless the command
    ``names_run``), so without ``--report`` it would be ignored in silence; a file that cannot
    be read is refused then too. Returns the topics read (None without ``--vocabulary``)."""
    if getattr(args, "vocabulary", None) and not names_run and not getattr(args, "report", False):
        raise ParameterError("--vocabulary names the clusters in the report; add --report (or run "
                             "'mediacluster report RUN --vocabulary FILE' afterwards)", "vocabulary")
    if getattr(args, "vocabulary", None):  # read before the run, not after it
        from ..naming.zeroshot import load_vocabulary

        return load_vocabulary(args.vocabulary)
    return None


def report_after(args, run_dir, rename: bool = True) -> int:
    """Write the report of ``run_dir`` when ``--report`` was given. Returns 0 when written (or
    not asked), 3 when some items have no thumbnail, 2 when it could not be written (said, not
    raised: the run itself has finished and is kept). ``rename``: name the clusters against
    ``--vocabulary`` (False: the run was named against it already)."""
    if not getattr(args, "report", False):
        return 0
    return _report(args, f"the run in {printable(run_dir)} is complete, but its report could not be "
                   "written", lambda: run_dir, rename=rename)


def report_after_tune(args, out, emb, res) -> int:
    """``tune --report``: publish the refit best pipeline as a run folder ``OUT/best`` (its
    report also shows the study's plots: ``OUT/study.db``), then write its report."""
    if not getattr(args, "report", False):
        return 0
    pipeline = res.pipeline  # refit: `tune --report --no-refit` is refused before the study
    return _report(args, "the study is complete, but the report could not be written",
                   lambda: publish_tuned_run(Path(out) / "best", emb, pipeline, res.summary,
                                             params={k: v for k, v in vars(args).items() if not k.startswith("_")}))


def _report(args, failed: str, run_dir, rename: bool = True) -> int:
    """Write the report of the run folder ``run_dir()`` returns (it may publish one first) and
    say where: 0, 3 when some items have no thumbnail, 2 when it could not be written (said
    with ``failed``, not raised: what the command did before has finished and is kept)."""
    try:
        path = make_report(run_dir(), vocabulary=getattr(args, "vocabulary", None) if rename else None,
                           progress=not getattr(args, "quiet", False))
    except MediaclusterError as e:
        sys.stderr.write(f"error: {failed}: {printable(e)}\n")
        return 2
    sys.stdout.write(f"report: {printable(path)}\nopen it in a browser: file://{printable(path.resolve())}\n"
                     f"methods paragraph (parameters, versions, seed, fingerprint): "
                     f"{printable(path.parent / METHODS)}\n")
    missing = missing_thumbnails(path)
    if missing:
        print_missing(missing)
        return 3
    return 0
