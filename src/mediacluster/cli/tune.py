"""``mediacluster tune INPUT --out DIR``: search reduce/outlier/cluster parameters with Optuna.

INPUT is a run folder written by ``mediacluster cluster`` (its ``embeddings.npy`` is reused), a
folder of media, a manifest, or a vectors file. The study lives in ``DIR/study.db`` (open it
with ``optuna-dashboard sqlite:///DIR/study.db``); re-running the same command continues it
(``--trials`` is the total to reach). The best trial is refitted and published as a model
version in ``DIR/models`` (for ``assign`` and ``serve``), its parameters to
``DIR/best_params.json``; every trial's scores are in ``DIR/trials.csv``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..embed import embed_collection
from ..errors import InputError, OutputError, ParameterError
from ..ingest import collect
from ..pipeline import Pipeline
from ..rundir import RunDir
from ..tune import tune
from ..tune.study import LEADER_MARGIN, PROMOTE_FULL, UMAP_INITS
from ..tune.workspace import KNN_METHODS
from ..workflow import check_vector_input, model_metadata, resolve_encoder
from . import SUMMARIES, add_folder_labels, add_retry_bad, folder_labels, printable
from .cluster import non_negative_float, positive_int
from .report import add_report_argument, check_report_arguments, report_after_tune


def add_parser(sub):
    from ..tune.objectives import OBJECTIVES
    from ..tune.space import PRESETS
    from ..tune.study import SAMPLERS

    p = sub.add_parser("tune", help=SUMMARIES["tune"],
                       description=__doc__.split("\n\n", 1)[1])
    p.add_argument("input", help="run folder (embeddings.npy), media folder, manifest or vectors file")
    p.add_argument("--out", required=True, help="output folder (study.db, models/, best_params.json)")
    p.add_argument("--sampler", default="tpe", choices=SAMPLERS,
                   help="tpe / gp (Bayesian), random, grid, cmaes (evolutionary), nsga2 (genetic, Pareto)")
    p.add_argument("--trials", type=positive_int, default=50, help="total finished trials the study should hold")
    p.add_argument("--timeout", type=float, default=None, help="stop starting trials after this many seconds")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler and of every trial's fit (a study keeps its own: a resume "
                        "with another --seed or --sampler is refused)")
    p.add_argument("--space", default="default",
                   help=f"preset ({', '.join(PRESETS)}) or a YAML/JSON file, e.g. "
                        "'reducer__n_components: {int: [2, 50]}'")
    p.add_argument("--objective", default="default", choices=list(OBJECTIVES),
                   help="what the search maximises (default = silhouette-input-k: input-space silhouette x "
                        "coverage x (1 - 1/k); the others: mediacluster.tune.objectives)")
    p.add_argument("--pareto", action="store_true",
                   help="maximise (quality, coverage) and print the Pareto front (default with nsga2)")
    p.add_argument("--pick", type=int, default=None,
                   help="Pareto mode: trial number from the printed front to refit and save")
    p.add_argument("--fidelity", default="auto",
                   help="multi-fidelity rungs: 'auto' (>= 8000 items: subsamples of n/25 and n/5 "
                        "items, each >= 2000, before the full set), sizes such as '2000,10000', "
                        "or 'off'")
    p.add_argument("--prune-keep", type=float, default=0.2,
                   help="share of the trials at a rung promoted to the next (successive halving)")
    p.add_argument("--jobs", type=positive_int, default=1,
                   help="worker processes sharing the study, one core each (the 50k benchmark with 2 "
                        "kept 1.9 cores busy; which trial runs where then depends on timing, so the "
                        "study is no longer exactly reproducible from --seed)")
    p.add_argument("--grid-points", type=int, default=5, help="points per range for --sampler grid")
    add_folder_labels(p, "record NMI against folder labels per trial (evaluation only)")
    p.add_argument("--encoder", default=None,
                   help="encoder when INPUT is media (default: efficientnet-lite0 for images, mfcc for audio)")
    p.add_argument("--media", choices=("auto", "image", "audio"), default="auto",
                   help="which files to embed when INPUT is a folder/manifest (auto: the majority kind)")
    add_retry_bad(p)
    p.add_argument("--cache-dir", default=None,
                   help="embedding cache folder (default: the user cache, shared by every run)")
    p.add_argument("--layout-epochs", default="default", type=_epochs,
                   help="UMAP layout epochs of every trial (and of the refitted model) whose space "
                        "leaves n_epochs open; 'umap' = umap-learn's own count (default: the tuner's)")
    p.add_argument("--promote-full", choices=PROMOTE_FULL, default="leader",
                   help="with subsample rungs: which trials of the last rung go on to the full size; "
                        "leader = only one that beats every trial sent before it (default), halving = "
                        "the best --prune-keep share seen so far")
    p.add_argument("--leader-margin", type=non_negative_float, default=LEADER_MARGIN,
                   help="with --promote-full leader: how many standard errors of its objective a new "
                        "leader must be ahead to go on to the full size (0: any new leader; default "
                        "%(default)s)")
    p.add_argument("--knn-method", choices=KNN_METHODS, default="auto",
                   help="the input neighbour graph's search: auto = approximate (svd: the vectors "
                        "projected on their top 256 singular directions) above 10,000 items, exact below")
    p.add_argument("--umap-init", choices=(*UMAP_INITS, "stage"),
                   default="stage", help="UMAP layout start of every trial whose space does not set "
                                         "reducer__init (default: the stage's own, spectral)")
    p.add_argument("--no-refit", action="store_true", help="do not refit/save the best pipeline")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_report_argument(p)
    return p


def load_input(src: str, encoder: str | None, cache_dir, labels_from_folders: bool | str, progress: bool,
               media: str = "auto"):
    """Embeddings of INPUT: a run folder's (no re-embedding), or embedded through the cache."""
    if RunDir.is_run(src):
        return RunDir.open(src).read_embeddings()
    check_vector_input(src, encoder, labels_from_folders)
    coll = collect(src, media=media, labels_from_folders=labels_from_folders)
    if len(coll) == 0:
        raise InputError(f"no usable items found in {src}")
    emb = embed_collection(coll, encoder=resolve_encoder(encoder, coll, src), cache_dir=cache_dir,
                           progress=progress)
    if len(emb) < 10 and emb.skipped:  # said as "got shape (0, 1280)", no word of the files' reasons
        first = emb.skipped[0]
        raise InputError(f"only {len(emb)} items could be embedded; at least 10 are needed to tune "
                         f"({len(emb.skipped)} skipped; the first, {first.path}: {first.reason})")
    return emb


def run(args) -> int:
    check_report_arguments(args)
    if getattr(args, "report", False) and args.no_refit:  # said after the whole study before
        raise ParameterError("--report shows the refit best pipeline (a run folder OUT/best): drop --no-refit, "
                             "or run `mediacluster tune` again with --report (the study resumes)", "report")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file; give a folder")
    emb = load_input(args.input, args.encoder, args.cache_dir, folder_labels(args),
                     not args.quiet, media=getattr(args, "media", "auto"))
    fidelity = parse_fidelity(args.fidelity)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create --out {out}: {e.strerror or e}") from None
    res = tune(
        emb, Pipeline(random_state=args.seed), out=out, space=args.space, sampler=args.sampler,
        objective=args.objective,
        n_trials=args.trials, timeout=args.timeout, seed=args.seed,
        multi_objective=True if args.pareto else None, pick=args.pick, fidelity=fidelity,
        prune_keep=args.prune_keep, n_jobs=args.jobs, grid_points=args.grid_points,
        refit=not args.no_refit, progress=not args.quiet,
        **({} if args.layout_epochs == "default" else {"layout_epochs": args.layout_epochs}),
        promote_full=args.promote_full, leader_margin=args.leader_margin, knn_method=args.knn_method,
        umap_init=None if args.umap_init == "stage" else args.umap_init,
        model_metadata=lambda pipe: model_metadata(emb, pipe),  # encoder + names, as `cluster` saves
    )
    print_result(res, out)
    return report_after_tune(args, out, emb, res)


def _metric(v, fmt: str = ".3f") -> str:
    return "n/a" if v is None else format(v, fmt)


def _epochs(text: str):
    """'default' | 'umap' (umap-learn decides: None) | a positive whole number."""
    if text in ("default", "umap"):
        return None if text == "umap" else text
    return positive_int(text)


def parse_fidelity(text: str):
    """'auto' | 'off' | '3000' | '3000,12000' -> what ``tune(fidelity=...)`` takes."""
    if text in ("auto", "off"):
        return text
    try:
        sizes = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ParameterError(f"--fidelity: expected 'auto', 'off' or item counts like 3000,12000; "
                             f"got {text!r}", "fidelity") from None
    return sizes if sizes else "off"


def print_result(res, out: Path) -> None:
    w = sys.stdout.write
    s = res.summary
    st = s["states"]
    w(f"\nstudy {printable(out / 'study.db')}: {s['n_trials']} trials ({st.get('COMPLETE', 0)} complete, "
      f"{st.get('PRUNED', 0)} pruned, {st.get('FAIL', 0)} failed); "
      f"{s['timing']['trials_this_run']} run now in {s['timing']['wall_s']:.0f} s\n")
    w(f"objective: {s['objective_description']}\n")
    if s.get("trials_per_level"):
        w("multi-fidelity (trials that reached each level): "
          + ", ".join(f"{k}: {v}" for k, v in s["trials_per_level"].items()) + "\n")
    for note in s.get("space_notes", []):
        w(f"note: {note}\n")
    if res.pareto:
        w("Pareto front (quality vs coverage); refit another with --pick TRIAL:\n")
        w(f"  {'trial':>5} {'quality':>8} {'coverage':>8} {'clusters':>8}\n")
        for r in res.pareto:
            mark = " <- picked" if r["trial"] == res.best_trial else ""
            q, c = r["values"]
            w(f"  {r['trial']:>5} {q:>8.3f} {c:>8.3f} {r.get('n_clusters', '?'):>8}{mark}\n")
    m = s["best_metrics"]
    bv = res.best_value
    val = " / ".join(_metric(v, ".4f") for v in bv) if isinstance(bv, list | tuple) else _metric(bv, ".4f")
    # the two silhouettes differ widely (a 1,280-d input space against a UMAP layout's): name each
    sils = ", ".join(f"{_metric(m.get(k))} {where}" for k, where in
                     (("silhouette_input", "in the input space"), ("silhouette", "in the reduced space"))
                     if m.get(k) is not None)
    w(f"best trial {res.best_trial}: objective {val}, clusters {m.get('n_clusters')}, "
      f"coverage {m.get('coverage', 0):.3f}" + (f", silhouette {sils}" if sils else "") + "\n")
    w("best parameters:\n")
    for k, v in sorted(res.best_params.items()):
        w(f"  {k}: {v}\n")
    if s.get("published_meanwhile"):
        w(f"model: already published by another tune on this --out: {Path(s['model']).name} "
          f"({printable(s['model'])}; no new version)\n")
    elif s.get("model_unchanged"):
        w(f"model: best unchanged: {Path(s['model']).name} ({printable(s['model'])}; no new version)\n")
    elif "model" in s:
        w(f"model: {printable(s['model'])}\n")
    w(f"files: {printable(out)}/best_params.json, tune.json, trials.csv; dashboard: "
      f"optuna-dashboard sqlite:///{printable((out / 'study.db').resolve())}\n")
