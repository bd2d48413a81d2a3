"""``tune``: an Optuna study over reduce -> outliers -> cluster, resumable, fast by design.

Storage: with ``out`` the study lives in ``out/study.db`` (Optuna's SQLite storage, opens in
``optuna-dashboard sqlite:///out/study.db``); re-running the same call continues it. ``n_trials``
is the **total** the study should reach, so an interrupted run re-run unchanged finishes the
job, with trial numbers continuing where they stopped. Trials left ``RUNNING`` by a killed
process are marked ``FAIL`` on resume (user attr ``failed_reason="interrupted"``) and their
parameters are enqueued again, so nothing the sampler proposed is lost. A trial that fails on
its parameters keeps its error (``failed_reason``); failed trials do not count towards
``n_trials``, but a run stops after as many failures, and a study none of whose trials finished
ends with the first failure's parameters and error.

Speed (see ``workspace``): one input neighbour graph per study, reduced embeddings cached by
reducer parameters, LOF on a cached reduced-space graph, sampled silhouette, multi-fidelity
(successive halving over nested subsamples: every trial first runs on n/25 items, Optuna's
``SuccessiveHalvingPruner`` promotes the best fifth to n/5 items and the best fifth of those to
the full set), ``n_jobs`` worker processes sharing the study and the on-disk caches.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data import Embeddings, as_vectors, check_finite, check_magnitude
from ..errors import InputError, MediaclusterError, OutputError, ParameterError, interrupted
from ..fileio import (
    DISK_FULL_HINT,
    json_text,
    read_json,
    setup_numba_cache,
    sqlite_refused,
    write_json,
    write_npy,
    write_table,
)
from ..metrics import labelled
from ..persist import MODEL_JSON, ModelStore
from ..stages.cluster import single_blas_thread
from .objectives import DESCRIPTIONS, get_objective, objective_se, quality_for_pareto
from .space import SearchSpace, load_space
from .workspace import KNN_METHODS, Workspace, flat_params

log = logging.getLogger(__name__)

SAMPLERS = ("tpe", "random", "grid", "gp", "cmaes", "nsga2")
STUDY_NAME = "mediacluster"


@dataclass
class TuneResult:
    """What :func:`tune` returns."""

    study: object
    best_params: dict
    best_value: float | list | None
    best_trial: int | None
    pipeline: object | None
    pareto: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)


def make_sampler(name: str, seed: int, space: SearchSpace, grid_points: int = 5,
                 n_directions: int = 1):
    """Optuna's sampler ``name``. ``seed`` is wrapped into numpy's seed range (0 .. 2**32 - 1):
    the tuner derives it as the study's seed plus the trials already held (a resume) plus 7919
    per worker, which passes the range's end when ``--seed`` is near it."""
    import optuna

    seed = int(seed) % 2**32
    s = optuna.samplers
    if name == "tpe":
        return s.TPESampler(seed=seed, multivariate=True, n_startup_trials=10)
    if name == "random":
        return s.RandomSampler(seed=seed)
    if name == "grid":
        return s.GridSampler(space.grid(grid_points), seed=seed)
    if name == "gp":
        return s.GPSampler(seed=seed, n_startup_trials=10, warn_independent_sampling=False)
    if name == "cmaes":
        if n_directions > 1:
            raise ParameterError("cmaes handles one objective; use nsga2 (or tpe/random) for the Pareto mode")
        return s.CmaEsSampler(seed=seed, n_startup_trials=5, warn_independent_sampling=False,
                              independent_sampler=s.RandomSampler(seed=seed))
    if name == "nsga2":
        return s.NSGAIISampler(seed=seed, population_size=min(50, 20))
    raise ParameterError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}")


# Layout epochs of a tuning trial's UMAP (when the stage leaves n_epochs to umap-learn, which
# would train 200 epochs above 10,000 items and 500 below). The layout is 75-85 % of a trial's
# CPU time and linear in the epochs. 100 epochs cut a 10,000-item trial's CPU by 40-45 % and
# left its cluster count unchanged in 4 of 4 seed-study settings (objective within 0.001, NMI
# within 0.014); 50 epochs changed one of the four (3 -> 2 clusters). See benchmarks/RESULTS.md,
# "50,000 vectors after the engine landed".
LAYOUT_EPOCHS: int | None = 100

# Layout start of a tuning trial's UMAP (when the space does not set ``reducer__init``); None keeps
# the stage's own (umap-learn's spectral start). "pca" (the engine's start) saves 9 of 68 CPU s of
# one 50,000-item trial at n_neighbors 1,500 and nothing measurable at 10,000 items; on the same
# 100 trials at the 2,000-item rung it moved the default objective's pick from the best NMI
# (gap 0.000) to 0.036 below it (top-5 mean NMI 0.356 vs 0.359). A later study with the
# spectral start missed by 0.044 there too, so that is noise more than the start. The PCA start
# saves too little to change what a trial computes, so it is not the default. See
# benchmarks/RESULTS.md, Tuning, "session 5".
UMAP_INIT: str | None = None
UMAP_INITS = ("spectral", "pca", "tswspectral", "random")  # umap-learn's named starts

# The input neighbour graph's search: "auto" = approximate ("svd": exact search among the
# vectors projected on their top 256 singular directions) for cosine above 10,000 items, exact
# below. At 50,000 x 1,280 and k = 2,000 the exact search is a 50,000^2 x 1,280 matrix product.
# See benchmarks/RESULTS.md, "session 5".
KNN_METHOD = "auto"

MIN_RUNG = 2000  # "auto" never makes a rung smaller than this many items


def _fidelity_sizes(n: int, fidelity, rf: int) -> list[int]:
    """Subsample sizes of the low-fidelity rungs, smallest first ([] = every trial at full size).

    ``"auto"``: for n >= 8,000 items, n / rf**2 and n / rf, keeping those >= 2,000 (50,000
    items, rf 5: 2,000 and 10,000; 10,000 items: 2,000); an int or a list gives sizes."""
    if fidelity in (None, False, "off", 0):
        return []
    if fidelity == "auto" or fidelity is True:
        if n < 8000:
            return []
        return [m for m in (n // rf ** 2, n // rf) if MIN_RUNG <= m < n]
    sizes = [fidelity] if isinstance(fidelity, int | np.integer | str) else list(fidelity)
    out = sorted({int(m) for m in sizes})
    if any(m < 10 for m in out):
        raise ParameterError(f"fidelity sizes must be at least 10 items, got {out}")
    return [m for m in out if m < n]


def reduction_factor(prune_keep: float) -> int:
    """Successive-halving reduction factor from the share of trials promoted per rung."""
    if not 0.0 < prune_keep <= 1.0:
        raise ParameterError(f"prune_keep must be in (0, 1], got {prune_keep}")
    return max(2, int(round(1.0 / prune_keep)))


def _attrs_safe(d: dict) -> dict:
    """Optuna user_attrs must be JSON-able; drop NaN/inf."""
    out = {}
    for k, v in d.items():
        if isinstance(v, float | np.floating):
            v = float(v)
            if not math.isfinite(v):
                v = None
        elif isinstance(v, np.integer):
            v = int(v)
        elif isinstance(v, dict):
            v = _attrs_safe(v)
        elif isinstance(v, list | tuple):
            v = [None if isinstance(x, float) and not math.isfinite(x) else x for x in v]
        out[k] = v
    return out


def _external(y, labels) -> dict:
    if y is None:
        return {}
    from .. import metrics as M

    e = M.external_scores(y, labels)
    return {"ext_nmi": e["all"]["nmi"], "ext_ari": e["all"]["ari"], "ext_acc": e["all"].get("acc"),
            "ext_nmi_clustered": e["clustered"]["nmi"]}


# ------------------------------------------------------------------------------------------
# the objective function Optuna calls
# ------------------------------------------------------------------------------------------
@contextmanager
def one_thread():
    """One trial per core: BLAS / OpenMP pools (numpy, scikit-learn, faiss) and numba's parallel
    loops (fast_hdbscan, pynndescent) limited to one thread. With ``n_jobs`` processes on as many
    cores, letting each also spawn a thread per core oversubscribes them (load 2.2-3 on 2 cores
    in the 50k study) and they wait on each other."""
    import numba  # heavy (LLVM); only the tuner's worker processes need it here

    old = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        with single_blas_thread():
            yield
    finally:
        numba.set_num_threads(old)


class _Objective:
    def __init__(self, ws: Workspace, space: SearchSpace, objective: str | Callable,
                 multi: bool, rf: int = 4, y=None, single_thread: bool = False):
        self.ws, self.space, self.multi, self.rf, self.y = ws, space, multi, rf, y
        self.single_thread = single_thread
        self.rungs = [lev for lev in ws.levels if lev != "full"] if not multi else []
        self.name, self.fn = get_objective(objective)
        self.quality = quality_for_pareto(self.name) if multi and isinstance(objective, str) else self.fn

    def params_of(self, trial) -> dict:
        return self.space.suggest(trial)

    def values(self, m: dict):
        if self.multi:
            return [self.quality(m), float(m.get("coverage", 0.0))]
        return self.fn(m)

    def __call__(self, trial):
        try:
            with one_thread() if self.single_thread else nullcontext():
                return self._run(trial)
        except TRIAL_ERRORS as e:  # optuna only logs it: kept for the study's last word (_finish)
            trial.set_user_attr(FAILED_REASON, f"{type(e).__name__}: {e}")
            raise

    def _run(self, trial):
        import optuna

        params = self.params_of(trial)
        t0 = time.perf_counter()
        c0 = time.process_time()  # CPU seconds of this process: robust to a shared, loaded CPU
        # successive halving: rung r runs on a subsample and reports at step rf**r (the step
        # at which Optuna's SuccessiveHalvingPruner with min_resource=1 judges rung r); a trial
        # enqueued by promote_best_pruned was judged on its rungs already and goes to full size
        rungs = [] if trial.user_attrs.get(FINAL_OF) is not None else self.rungs
        for r, level in enumerate(rungs):
            low = self.ws.run(params, level)
            v = self.values(low.metrics)
            m = {k: val for k, val in low.metrics.items() if k != "params_used"}
            if r == len(self.rungs) - 1 and not self.multi and _may_lead(trial.study, v, self.rf ** r):
                # the leader rule reads the objective's SE; only a trial ahead of every trial
                # sent on to the full size can need it
                se = self.ws.input_silhouette_se(low.labels, level)
                m["objective_se"] = objective_se(self.fn, low.metrics | {"silhouette_input_se": se})
            if self.y is not None:
                idx = self.ws.index(level)
                m.update(_external([self.y[i] for i in idx], low.labels))
            trial.set_user_attr(f"rung{r}", _attrs_safe(m | {"objective": v}))
            trial.report(v, self.rf ** r)
            if trial.should_prune():
                trial.set_user_attr("fidelity", f"{level} (pruned)")
                trial.set_user_attr("pid", os.getpid())
                trial.set_user_attr("time_s", time.perf_counter() - t0)
                trial.set_user_attr("cpu_s", time.process_time() - c0)
                raise optuna.TrialPruned()
        if rungs:
            trial.set_user_attr(PROMOTED, True)
        out = self.ws.run(params, "full")
        m = {k: v for k, v in out.metrics.items() if k != "params_used"}
        m.update(_external(self.y, out.labels))
        val = self.values(m)
        for k, v in _attrs_safe(m).items():
            trial.set_user_attr(k, v)
        trial.set_user_attr("fidelity", "full")
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("objective_name", self.name)
        trial.set_user_attr("time_s", time.perf_counter() - t0)
        trial.set_user_attr("cpu_s", time.process_time() - c0)
        return val


# ------------------------------------------------------------------------------------------
# resume
# ------------------------------------------------------------------------------------------
def recover_interrupted(study) -> list[int]:
    """Mark trials a killed process left RUNNING as FAIL and enqueue their parameters again.

    Only call when no other process works on the study (``tune`` does it at start-up)."""
    from optuna.trial import TrialState

    redo = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(t._trial_id, FAILED_REASON, "interrupted")
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        if t.params:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
        redo.append(t.number)
    return redo


def _done(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _storage_url(out: Path) -> str:
    return f"sqlite:///{(out / 'study.db').resolve()}"


def _probe_study(out: Path | None, storage, name: str):
    """The study ``name`` already in ``out/study.db`` (a resume), else None. A ``study.db`` that
    is not a readable SQLite database (cut short, overwritten) is refused naming it, before any
    work: SQLAlchemy's DatabaseError ("database disk image is malformed") was an internal error."""
    import optuna

    db = out / "study.db" if out is not None else None
    if db is None or not db.exists():
        return None
    from sqlalchemy.exc import SQLAlchemyError

    try:
        if name not in [s.study_name for s in optuna.get_all_study_summaries(storage)]:
            return None
        return optuna.load_study(study_name=name, storage=storage)
    except SQLAlchemyError as e:
        why = str(getattr(e, "orig", None) or e).splitlines()[0]
        raise InputError(f"{db} cannot be read as a study ({why}): move it away to start a new study, "
                         "or give another --out") from None


def _refused_write(e: BaseException) -> str | None:
    """SQLite's words when ``e`` (optuna's StorageInternalError, SQLAlchemy's OperationalError)
    comes from a write the disk refused (full, a file-size quota, read-only); else None."""
    import sqlite3

    cause, seen = e, set()
    while cause is not None and not isinstance(cause, sqlite3.OperationalError) and id(cause) not in seen:
        seen.add(id(cause))
        cause = getattr(cause, "orig", None) or cause.__cause__ or cause.__context__
    why = str(cause) if isinstance(cause, sqlite3.OperationalError) else ""
    return why if sqlite_refused(why) else None


@contextmanager
def _study_writes(storage, study):
    """(``study``: the study as far as it is kept, None for a new one.) A write to the study's SQLite file that the disk refuses (full, a file-size quota,
    read-only now) as the user's problem it is: exit 2 naming the file and saying that the
    finished trials are kept and the same command resumes (optuna's StorageInternalError was an
    internal error with its traceback). Anything else passes as it is."""
    try:
        yield
    except Exception as e:
        why = _refused_write(e)
        if why is None:
            raise
        if sqlite_refused(why) == "full":
            why += f" ({DISK_FULL_HINT})"
        where = storage.removeprefix("sqlite:///") if isinstance(storage, str) else "the study"
        if study is None:  # a new study: nothing to keep
            raise OutputError(f"cannot write {where}: {why}") from e
        try:
            from optuna.trial import TrialState

            kept = f"the {len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))} trials finished"
        except Exception:  # noqa: BLE001 - the count is a courtesy
            kept = "the trials finished"
        raise OutputError(f"cannot write {where}: {why}; {kept} are kept in it: the same command "
                          "resumes the study") from e


def _open_study(storage, directions, sampler, pruner, meta: dict, name: str = STUDY_NAME):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "Using an existing study" on a resume
    study = optuna.create_study(storage=storage, study_name=name, directions=directions,
                                sampler=sampler, pruner=pruner, load_if_exists=True)
    old = study.user_attrs
    if old:
        # the seed fits every trial (and the refit of the best): a resume with another seed
        # scored its new trials under it and refitted the best trial with it, so the published
        # model was not the one the trial scored; the sampler is what tune.json reports
        for k in ("seed", "sampler"):
            if k in old and old[k] != meta[k]:
                where = storage.removeprefix("sqlite:///") if isinstance(storage, str) else "memory"
                raise ParameterError(
                    f"the study in {where} was run with {k} {old[k]!r} (--{k} {old[k]}), not {meta[k]!r}: "
                    f"resume it with --{k} {old[k]}, or give another --out for a study with {k} {meta[k]!r}", k)
        for k in ("data", "space", "objective", "directions", "multi_fidelity", "layout_epochs",
                  "umap_init", "promote_full", "leader_margin", "knn_method"):
            if k in old and old[k] != meta[k]:
                raise ParameterError(
                    f"the study in {storage} was started with a different {k} "
                    f"({old[k]!r} vs now {meta[k]!r}); use another --out folder or the same settings")
    else:
        for k, v in meta.items():
            study.set_user_attr(k, v)
    return study


# ------------------------------------------------------------------------------------------
# worker processes (n_jobs > 1)
# ------------------------------------------------------------------------------------------
def _worker(cfg: dict) -> None:  # pragma: no cover - runs in a child process
    """A worker's trials. A Ctrl-C reaches every process of the terminal's group: a worker ends
    quietly on it (multiprocessing printed its KeyboardInterrupt's whole traceback above the
    main process's "interrupted"); its running trial is marked failed and enqueued again on the
    next run, as the main process's is. Whatever a Ctrl-C sets off after it counts as the
    Ctrl-C: optuna marking the stopped trial failed can meet the main process's write on the
    study's SQLite file ("database is locked"), and its StorageInternalError no longer carries
    the KeyboardInterrupt as a cause (that traceback was printed, ~60 lines)."""
    import signal

    got = []

    def on_interrupt(signum, frame):
        got.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_interrupt)
    try:
        _worker_trials(cfg)
    except BaseException as e:  # noqa: BLE001 - a Ctrl-C, also as numba's SystemError around one
        if not (got or interrupted(e)):
            raise
        raise SystemExit(130) from None


def _worker_trials(cfg: dict) -> None:  # pragma: no cover - runs in a child process
    if cfg.get("numba_cache"):
        os.environ.setdefault("NUMBA_CACHE_DIR", cfg["numba_cache"])
    setup_numba_cache()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    X = np.load(cfg["x_path"], mmap_mode="r")
    space = cfg["space_obj"]
    ws = Workspace(np.asarray(X), space, cfg["pipeline"], seed=cfg["seed"], cache_dir=cfg["cache_dir"],
                   subsample=cfg["subsample"], silhouette_sample=cfg["silhouette_sample"],
                   layout_epochs=cfg["layout_epochs"], umap_init=cfg["umap_init"],
                   knn_method=cfg["knn_method"])
    y = np.load(cfg["y_path"], allow_pickle=False).tolist() if cfg.get("y_path") else None
    y = None if y is None else [v or None for v in y]  # written "" for unlabelled: no class ""
    sampler = make_sampler(cfg["sampler"], cfg["seed"] + 7919 * cfg["worker"], space,
                           cfg["grid_points"], len(cfg["directions"]))
    pruner = _pruner(bool(cfg["subsample"]), len(cfg["directions"]) > 1, cfg["rf"],
                     len(cfg["subsample"]), cfg["promote_full"], cfg["leader_margin"])
    study = optuna.load_study(study_name=STUDY_NAME, storage=cfg["storage"], sampler=sampler,
                              pruner=pruner)
    obj = _Objective(ws, space, cfg["objective"], len(cfg["directions"]) > 1,
                     cfg["rf"], y, single_thread=True)
    _optimize(study, obj, cfg["n_trials"], cfg["deadline"])


WORKER_GRACE_S = 10.0  # seconds a stopped tune waits for its worker processes to end
PROMOTE_FULL = ("leader", "halving")
# a trial fails on what its parameters cause (a MediaclusterError from a stage, a numerical
# breakdown): optuna marks it FAIL and goes on; anything else is a bug and stops the study
TRIAL_ERRORS = (MediaclusterError, FloatingPointError, np.linalg.LinAlgError)
FAILED_REASON = "failed_reason"  # user attr of a failed trial: its error ("interrupted": a killed run)
PROMOTED = "promoted_full"  # user attr of a trial sent on to the full size
FINAL_OF = "final_of"  # user attr: the pruned trial whose parameters promote_best_pruned ran at full size


def _pruner(fidelity: bool, multi: bool, rf: int, n_rungs: int = 0, promote_full: str = "leader",
            leader_margin: float = 1.0):
    """Successive halving (asynchronous, Li et al. 2020): a trial goes on to the next rung only
    if its value is in the best 1/rf of all values reported at its rung so far, and only once
    at least rf values are there (``bootstrap_count``: the first rf - 1 trials at a rung stop
    there, so an early, mediocre trial cannot walk up to the full size unopposed). Unlike a
    percentile pruner it needs no finished trials to start pruning.

    ``promote_full="leader"`` adds one rule at the last rung (see :class:`_LeaderPruner`): only a
    new leader there, by more than ``leader_margin`` standard errors, goes on to the full size."""
    import optuna

    if not fidelity or multi:
        return optuna.pruners.NopPruner()
    sh = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=rf,
                                                min_early_stopping_rate=0, bootstrap_count=rf - 1)
    if promote_full == "halving" or n_rungs < 1:
        return sh
    return _leader_pruner_class()(sh, last_step=rf ** (n_rungs - 1), rung=n_rungs - 1,
                                  margin=leader_margin)


def _leader_pruner_class():
    """:class:`_LeaderPruner` as an Optuna pruner (optuna is imported only when tuning)."""
    import optuna

    global _LEADER_PRUNER
    if _LEADER_PRUNER is None:
        _LEADER_PRUNER = type("LeaderPruner", (_LeaderPruner, optuna.pruners.BasePruner), {})
    return _LEADER_PRUNER


_LEADER_PRUNER = None


# How far a new leader of the last rung must be ahead before it goes on to the full size, in
# standard errors of its objective (``objectives.objective_se``: the sampled silhouette's
# jackknife SE carried through the objective). The default objective's value at the 10,000-item
# rung of the 50,000-item study moves by 0.0010-0.0013 (SD) when only the silhouette's sample of
# 3,000 items is redrawn, 1.7-2 % of the value, and its SE estimates that (0.0012-0.0015); in one
# study the rung's best crept 0.0617 -> 0.0621 -> 0.0626, each step inside that noise and each
# sent on to a 73-second full-size trial that confirmed nothing (full-size values 0.0592, 0.0588,
# 0.0591; seed means 0.0577-0.0580). See benchmarks/RESULTS.md, Tuning, "session 6".
LEADER_MARGIN = 1.0


def _promoted_best(study, step: int, exclude: int | None = None) -> float | None:
    """The best value at ``step`` of the trials sent on to the full size (None: none yet)."""
    from optuna.trial import TrialState

    values = [t.intermediate_values.get(step)
              for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
              if t.number != exclude and t.user_attrs.get(PROMOTED)]
    values = [v for v in values if v is not None]
    return max(values) if values else None


def _may_lead(study, value: float, step: int) -> bool:
    """Whether ``value`` at ``step`` beats that of every trial sent on to the full size."""
    best = _promoted_best(study, step)
    return best is None or value > best


class _LeaderPruner:
    """Successive halving, and at the last rung before the full size one more condition: the
    trial's value there must beat the value there of every trial already sent on to the full
    size, by more than ``margin`` times its standard error (recorded at that rung as
    ``objective_se``; no margin where the objective has none, e.g. DBCV). A full-size trial costs
    5-10x a trial at the last rung (50,000 vs 10,000 items); plain successive halving sends
    every trial in the best fifth seen so far, this sends only a clear new leader, so the full
    size confirms the best candidate so far instead of re-ranking the top fifth (in the
    50,000-item benchmark 4 trials of 100 reached the full size and took half of the study's
    compute; the rung's best was the full size's best or 0.001 NMI from it).

    Trials sent on carry the user attr ``promoted_full``; with several worker processes two
    trials judged at the same moment may both go on."""

    def __init__(self, halving, last_step: int, rung: int = 0, margin: float = LEADER_MARGIN):
        self.halving = halving
        self.last_step = int(last_step)
        self.rung_attr = f"rung{int(rung)}"
        self.margin = float(margin)

    def prune(self, study, trial) -> bool:
        if self.halving.prune(study, trial):
            return True
        step = trial.last_step
        if step != self.last_step:
            return False
        value = trial.intermediate_values[step]
        se = (trial.user_attrs.get(self.rung_attr) or {}).get("objective_se") or 0.0
        best = _promoted_best(study, step, exclude=trial.number)
        return best is not None and value <= best + self.margin * float(se)


def promote_best_pruned(study, obj) -> int | None:
    """When successive halving pruned every trial of a single-objective study (a small budget:
    the first trial at each rung stops there and later ones must beat it, so 12 trials on 300
    items could all stop at a subsample), run the parameters of the trial that got furthest, and
    was best at its last rung, once at full size, so the study has an answer to pick instead of
    none. Returns that new trial's number (None when a trial finished already, or none was judged).
    The new trial carries ``final_of`` (the pruned trial's number)."""
    from optuna.trial import TrialState

    if obj.multi or study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    pruned = [t for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)) if t.intermediate_values]
    if not pruned:
        return None
    sign = 1.0 if study.direction.name == "MAXIMIZE" else -1.0

    def reach(t):
        step = max(t.intermediate_values)
        return step, sign * t.intermediate_values[step]

    best = max(pruned, key=reach)
    before = {t.number for t in study.get_trials(deepcopy=False)}
    study.enqueue_trial(best.params, user_attrs={FINAL_OF: best.number})
    study.optimize(obj, n_trials=1, catch=TRIAL_ERRORS)
    new = [t.number for t in study.get_trials(deepcopy=False) if t.number not in before]
    return new[0] if new else None


class _TrialLogFilter(logging.Filter):
    """Optuna's word on a failed trial, kept to its reason. Optuna logs every failed trial as a
    warning with the exception's traceback, then "Trial N failed with value None.": a Ctrl-C
    during ``tune`` printed ~30 lines of traceback above the CLI's "interrupted" line. A trial
    stopped by a Ctrl-C is not a failure to report (both lines dropped); a trial failed by its
    parameters (:data:`TRIAL_ERRORS`) keeps its one line, which names the error and its
    message, without the traceback (kept with ``--verbose``); any other error, a bug, keeps
    optuna's traceback. A trial whose study write the disk refused is not reported either: the
    command stops on it, saying so (:func:`_study_writes`)."""

    _TRIAL = re.compile(r"Trial (\d+) failed with ")

    def __init__(self):
        super().__init__()
        self.stopped: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        m = self._TRIAL.match(str(record.msg))
        if m is None:
            return True
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and (interrupted(exc) or _refused_write(exc) is not None):
            self.stopped.add(m.group(1))  # a refused write: the command's error says it (_study_writes)
            return False
        if exc is None:  # "Trial N failed with value None.": the line before said why
            return not (m.group(1) in self.stopped or str(record.msg).endswith("with value None."))
        if isinstance(exc, TRIAL_ERRORS) and not log.isEnabledFor(logging.DEBUG):
            record.exc_info, record.exc_text = None, None
        return True


@contextmanager
def _trial_log_kept_short():
    """:class:`_TrialLogFilter` on the logger optuna reports failed trials with, while a study runs."""
    logger = logging.getLogger("optuna.study._optimize")
    f = _TrialLogFilter()
    logger.addFilter(f)
    try:
        yield
    finally:
        logger.removeFilter(f)


def _optimize(study, obj, n_total: int, deadline: float | None, progress=None) -> None:
    """Run trials until the study holds ``n_total`` finished trials, the deadline passes, or
    ``n_total`` trials failed since this call began (a failed trial does not count towards the
    total: without that bound a study whose every trial fails, e.g. a space no parameters of
    which suit the data, ran for ever)."""
    from optuna.trial import TrialState

    def failed():
        return len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))

    failed_before = failed()
    while True:
        n_done = len(study.get_trials(deepcopy=False, states=(
            TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)))
        if n_done >= n_total:
            return
        if deadline is not None and time.time() >= deadline:
            return
        if hasattr(study.sampler, "is_exhausted") and study.sampler.is_exhausted(study):
            return  # the grid sampler has visited every point
        if failed() - failed_before >= n_total:
            return  # _finish names the first failure when none finished
        with _trial_log_kept_short():
            study.optimize(obj, n_trials=1, catch=TRIAL_ERRORS)
        if progress is not None:
            progress(study)


# ------------------------------------------------------------------------------------------
# the entry point
# ------------------------------------------------------------------------------------------
def tune(
    X,
    pipeline,
    out: str | os.PathLike | None = None,
    space=None,
    sampler: str = "tpe",
    objective: str | Callable[[dict], float] = "default",
    n_trials: int = 50,
    timeout: float | None = None,
    seed: int | None = None,
    multi_objective: bool | None = None,
    pick: int | Callable | None = None,
    fidelity="auto",
    prune_keep: float = 0.2,
    n_jobs: int = 1,
    grid_points: int = 5,
    silhouette_sample: int = 5000,
    labels=None,
    refit: bool = True,
    progress: bool = True,
    study_name: str = STUDY_NAME,
    model_metadata: Callable | None = None,
    cache_dir: str | os.PathLike | None = None,
    layout_epochs: int | list | None = LAYOUT_EPOCHS,
    umap_init: str | None = UMAP_INIT,
    promote_full: str = "leader",
    knn_method: str = KNN_METHOD,
    leader_margin: float = LEADER_MARGIN,
) -> TuneResult:
    """Search a pipeline's parameters with Optuna; returns the study, the best parameters and
    the best pipeline refitted on all of ``X`` (a resumed study whose best is the model version
    it already published in ``out/models``: that version, loaded instead of fitted again).
    ``Pipeline.tune(X, ...)`` calls this.

    Parameters
    ----------
    X : (n, d) vectors (or an ``Embeddings``; its labels, if any, are only *recorded*).
    pipeline : the starting Pipeline: every trial is this pipeline with the trial's stage
        choices and parameters (see ``space``); its random_state is the seed, its other settings
        are kept in the refitted model.
    out : folder for ``study.db``, caches, ``best_params.json``, ``trials.csv`` and ``models/``;
        None keeps everything in memory (no resume).
    space : None (every tunable parameter of the pipeline's own stages, from the stage
        registry), a preset name (``default``, ``seed-study``: these name their stages), a
        YAML/JSON path, a dict or a SearchSpace (see ``mediacluster.tune.space``).
    sampler : tpe | random | grid | gp | cmaes | nsga2 (all Optuna).
    objective : a name from ``mediacluster.tune.objectives.OBJECTIVES`` or ``f(metrics) -> float``.
    n_trials : total number of finished trials the study should hold (resume-friendly).
    multi_objective : maximise (quality, coverage) and return the Pareto front; default True
        for nsga2. ``pick``: trial number from the front, or ``f(front) -> FrozenTrial``;
        default picks the front trial with the largest quality x coverage.
    fidelity : "auto" (for n >= 8,000: rungs of n/rf**2 and n/rf items before the full set,
        each >= 2,000 items; rf = 1/prune_keep), an int or a list of subsample sizes, or "off".
    prune_keep : share of the trials at a rung promoted to the next (successive halving with
        reduction factor 1/prune_keep).
    promote_full : "leader" (default): from the last rung, only a trial that beats every trial
        already sent on goes on to the full size; "halving": plain successive halving there too
        (the best ``prune_keep`` share seen so far goes on).
    leader_margin : with ``promote_full="leader"``, how many standard errors of its objective
        (the sampled silhouette's, carried through the objective) a new leader must be ahead;
        0 sends on every new leader. Default ``LEADER_MARGIN``; see its comment.
    knn_method : the input neighbour graph's search: "exact", "svd" (approximate, see
        ``stages.neighbors``; cosine only, above 4,096 items) or "auto" (svd above 10,000
        items). Default ``KNN_METHOD``; see its comment.
    n_jobs : worker processes (needs ``out``: they share the SQLite study and disk caches).
    cache_dir : where the input graph and reduced embeddings are cached (default ``out/cache``).
    labels : ground truth, recorded as ``ext_*`` per trial for evaluation; never optimised.
    model_metadata : ``f(refit pipeline) -> dict`` of extra metadata for the model published
        in ``out/models`` (the CLI passes ``workflow.model_metadata``: encoder and names).
    layout_epochs : layout epochs of every trial's UMAP (and of the refitted best pipeline) whose
        ``n_epochs`` is left to umap-learn; None keeps umap-learn's count (200 above 10,000
        items, 500 below; a subsample rung trains as many as the full set). A UMAP stage with
        its own ``n_epochs`` keeps it. A list gives one count per level, cheapest first and the
        full set last (e.g. ``[100, 50, 100]`` for rungs of 2,000 and 10,000 items and 50,000).
        Default ``LAYOUT_EPOCHS``; see its comment.
    umap_init : layout start (umap-learn's ``init``) of every trial's UMAP, and of the refitted
        best pipeline, when the space does not set ``reducer__init``; None keeps the stage's
        own. Default ``UMAP_INIT`` (None); see its comment.
    """
    import optuna  # heavy: loaded only when tuning

    if pipeline is None or not hasattr(pipeline, "with_params"):
        raise ParameterError("tune needs the starting pipeline, e.g. tune(X, Pipeline()) or "
                             "Pipeline().tune(X)", "pipeline")
    if not (isinstance(n_trials, int | np.integer) and not isinstance(n_trials, bool) and n_trials >= 1):
        raise ParameterError(f"n_trials must be a whole number >= 1 (the total the study should hold), "
                             f"got {n_trials!r}", "n_trials")
    if not (isinstance(n_jobs, int | np.integer) and not isinstance(n_jobs, bool) and n_jobs >= 1):
        raise ParameterError(f"n_jobs must be a whole number >= 1 (worker processes; there is no -1 for "
                             f"every core), got {n_jobs!r}", "n_jobs")
    items = None  # the refit model's item ids / paths (``Pipeline.similar``): an Embeddings' own
    if isinstance(X, Embeddings):
        if labels is None and X.labels is not None:
            labels = X.labels
        items = {"ids": X.ids, "paths": X.paths, "root": X.root}
        X = X.vectors
    X = np.ascontiguousarray(as_vectors(X), dtype=np.float32)
    if X.ndim != 2 or len(X) < 10:
        raise InputError(f"tuning needs a 2-D array of at least 10 vectors, got shape {X.shape}")
    check_magnitude(check_finite(X))  # what every trial's fit would refuse, refused once, before any work
    if seed is None:
        seed = int(getattr(pipeline, "random_state", 0) or 0)
    n = len(X)
    out = Path(out) if out is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if cache_dir is None:
            cache_dir = out / "cache"
    if cache_dir is not None:
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
    setup_numba_cache()
    pipeline.check_params()
    sp = load_space(space, n, pipeline)
    obj_name = objective if isinstance(objective, str) else getattr(objective, "__name__", "custom")
    get_objective(objective)  # validate the name early
    multi = (sampler == "nsga2") if multi_objective is None else bool(multi_objective)
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float | np.number)
                                or not timeout > 0):  # -5 started no trial, 0 and NaN set no limit
        raise ParameterError(f"timeout must be a number of seconds above 0 (None: no limit), got {timeout!r}",
                             "timeout")
    if pick is not None and not multi:  # it was ignored: the best trial was refitted, silently
        raise ParameterError("pick chooses a trial from the Pareto front of a multi-objective study (--pareto, "
                             "or --sampler nsga2); a single-objective study refits its best trial", "pick")
    directions = ["maximize", "maximize"] if multi else ["maximize"]
    rf = reduction_factor(prune_keep)
    sub = [] if multi else _fidelity_sizes(n, fidelity, rf)
    # unlabelled (None, NaN) stays None: not a class "nan" (metrics.labelled, every score's rule)
    y = None if labels is None else [str(v) if known else None for v, known in zip(labels, labelled(labels))]

    counts = layout_epochs if isinstance(layout_epochs, list | tuple) else [layout_epochs]
    if layout_epochs is not None and not all(
            isinstance(e, int | np.integer | float) and int(e) == e and e >= 1 for e in counts):
        raise ParameterError(f"layout_epochs must be a positive whole number, one per level, or None, "
                             f"got {layout_epochs!r}", "layout_epochs")
    if umap_init is not None and umap_init not in UMAP_INITS:
        raise ParameterError(f"umap_init must be {', '.join(UMAP_INITS)} or None, got {umap_init!r}",
                             "umap_init")
    if knn_method not in KNN_METHODS:
        raise ParameterError(f"knn_method must be one of {', '.join(KNN_METHODS)}, got {knn_method!r}",
                             "knn_method")
    if not (isinstance(leader_margin, int | float) and math.isfinite(leader_margin) and leader_margin >= 0):
        raise ParameterError(f"leader_margin must be a number >= 0 (standard errors), got {leader_margin!r}",
                             "leader_margin")
    if promote_full not in PROMOTE_FULL:
        raise ParameterError(f"promote_full must be one of {', '.join(PROMOTE_FULL)}, got {promote_full!r}",
                             "promote_full")
    ws = Workspace(X, sp, pipeline, seed=seed, cache_dir=cache_dir, subsample=sub,
                   silhouette_sample=silhouette_sample, layout_epochs=layout_epochs,
                   umap_init=umap_init, knn_method=knn_method)
    ws.epochs_at("full")  # a per-level list must match the levels
    meta = {
        "data": f"{n}x{X.shape[1]}:{ws.fingerprint}", "space": sp.to_dict(), "space_name": sp.name,
        "objective": obj_name, "directions": directions, "multi_fidelity": sub,
        "reduction_factor": rf if sub else None, "layout_epochs": ws.layout_epochs,
        "umap_init": ws.umap_init, "promote_full": promote_full if sub else None,
        "leader_margin": float(leader_margin) if sub and promote_full == "leader" else None,
        "knn_method": knn_method,
        "sampler": sampler, "seed": seed, "space_notes": sp.notes,
        "objective_description": DESCRIPTIONS.get(obj_name, obj_name),
    }
    storage = _storage_url(out) if out is not None else optuna.storages.InMemoryStorage()
    # reseed per (re)start so a resumed study does not replay its first random proposals
    t_start = time.time()
    probe = _probe_study(out, storage, study_name)
    prior = len(probe.trials) if probe is not None else 0
    smp = make_sampler(sampler, seed + prior, sp, grid_points, len(directions))
    with _study_writes(storage, probe):
        study = _open_study(storage, directions, smp, _pruner(bool(sub), multi, rf, len(sub), promote_full,
                                                                   leader_margin),
                            meta, study_name)
        recovered = recover_interrupted(study)
    if recovered:
        log.warning("trials %s were left running by an interrupted run: marked FAIL, parameters "
                    "enqueued again", recovered)

    # shared work up front (workers load it from disk): the input graph, when the reducer uses one
    t = time.perf_counter()
    fixed = {k: d.value for k, d in sp.dims.items() if d.kind == "fixed"}
    probe_pipe = ws.trial_pipeline({k: v for k, v in fixed.items() if k in ("reducer",) or k.startswith("reducer__")})
    rp = probe_pipe.reducer.get_params() if probe_pipe.reducer is not None else {}
    if {"n_neighbors", "metric"} <= set(rp):
        # said: minutes without a line before the trials' bar on 50,000 items
        log.info("neighbour graph of the inputs (%s items, shared by every trial; cached in %s) ...",
                 f"{n:,}", ws.cache_dir or "memory")
        for level in ws.levels:
            ws.graph(level, rp["metric"])
        log.info("neighbour graph: %.1f s", time.perf_counter() - t)
    t_graph = time.perf_counter() - t

    obj = _Objective(ws, sp, objective, multi, rf, y, single_thread=n_jobs > 1)
    deadline = time.time() + timeout if timeout else None
    before = _done(study)
    bar = None
    if progress:
        from ..progress import progress_bar

        bar = progress_bar(total=n_trials, desc=f"tune ({sampler})", unit="trial")
        bar.update(min(before, n_trials))

    def _tick(st):
        if bar is not None:
            bar.n = min(_done(st), n_trials)
            bar.refresh()

    procs = []
    if n_jobs > 1:
        if out is None:
            raise ParameterError("n_jobs > 1 needs an output folder (workers share out/study.db)", "n_jobs")
        if not callable(objective):
            procs = _start_workers(n_jobs - 1, X, y, sp, pipeline, cache_dir, storage, sampler, seed + prior,
                                   grid_points, directions, rf, obj_name, n_trials,
                                   deadline, sub, silhouette_sample, ws.layout_epochs, ws.umap_init,
                                   promote_full, knn_method, leader_margin, ws.fingerprint)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with _study_writes(storage, study):
            _optimize(study, obj, n_trials, deadline, _tick)
    finally:
        # stopped (a Ctrl-C, an error): a worker that has not ended WORKER_GRACE_S later is
        # terminated, so the command never waits on one that missed the signal (its running
        # trial is recovered as interrupted on the next run, as a killed run's is)
        grace = WORKER_GRACE_S if sys.exc_info()[0] is not None else None
        for p in procs:
            p.join(grace)
            if p.is_alive():
                p.terminate()
                p.join()
        if bar is not None:
            _tick(study)
            bar.close()
    final = promote_best_pruned(study, obj)
    if final is not None:
        log.info("every trial was pruned on a subsample: trial %d runs the best of them at full size", final)
    wall = time.time() - t_start
    return _finish(study, X, sp, seed, multi, pick, out, refit, pipeline, ws, y, obj,
                   {"wall_s": wall, "graph_s": t_graph, "trials_this_run": _done(study) - before,
                    "recovered_trials": recovered, "n_jobs": n_jobs, "final_of_pruned": final},
                   model_metadata, items)


def _start_workers(k, X, y, sp, pipeline, cache_dir, storage, sampler, seed, grid_points, directions,
                   rf, obj_name, n_trials, deadline, sub, silhouette_sample, layout_epochs, umap_init,
                   promote_full, knn_method, leader_margin=LEADER_MARGIN, fingerprint=""):
    import multiprocessing as mp

    # named by the data, as the cached graphs beside it: a cache folder shared by studies of
    # other data (or an --out whose study.db was removed) gave the workers the earlier data
    x_path = cache_dir / f"X-{fingerprint}.npy"
    if not x_path.exists():
        write_npy(x_path, X)
    y_path = None
    if y is not None:
        y_path = cache_dir / "y.npy"
        np.save(y_path, np.asarray(["" if v is None else v for v in y]), allow_pickle=False)
    ctx = mp.get_context("spawn")
    procs = []
    for w in range(1, k + 1):
        cfg = {"x_path": str(x_path), "y_path": str(y_path) if y_path else None,
               "space_obj": sp, "pipeline": pipeline, "seed": seed, "worker": w,
               "cache_dir": str(cache_dir), "storage": storage, "sampler": sampler,
               "grid_points": grid_points, "directions": directions, "rf": rf,
               "objective": obj_name, "n_trials": n_trials, "deadline": deadline,
               "subsample": sub, "silhouette_sample": silhouette_sample, "layout_epochs": layout_epochs,
               "umap_init": umap_init, "promote_full": promote_full, "knn_method": knn_method,
               "leader_margin": leader_margin,
               "numba_cache": os.environ.get("NUMBA_CACHE_DIR")}
        p = ctx.Process(target=_worker, args=(cfg,), daemon=True)
        p.start()
        procs.append(p)
    return procs


def _trial_row(t) -> dict:
    keys = ("n_clusters", "coverage", "silhouette", "silhouette_input", "dbcv", "ext_nmi",
            "time_s", "fidelity")
    row = {"trial": t.number, "values": t.values, "params": t.params}
    row.update({k: t.user_attrs.get(k) for k in keys if k in t.user_attrs})
    return row


def published_best(store: Path, tuned: dict) -> Path | None:
    """The latest model version in ``store`` when tune published it from the same best trial of
    the same study with the same refit settings (``tuned``: trial, value, study, seed, params,
    as in its metadata), else None: a resumed study whose best did not change publishes nothing.

    A version published before its metadata recorded ``seed`` and ``params`` is compared on
    what it holds: trial, value and study, and the seed its refit used (the model's own
    ``random_state``); its parameters are those of the same trial of the same study (a resume
    with another space or layout settings is refused), so they are not compared."""
    latest = ModelStore(store).latest()
    return latest if _same_best(latest, tuned) else None


def _same_best(latest: Path | None, tuned: dict) -> bool:
    """Whether model version ``latest`` is tune's refit of the best trial ``tuned`` (see
    :func:`published_best`)."""
    if latest is None:
        return False
    try:
        doc = read_json(latest / MODEL_JSON)
        old = (doc.get("metadata") or {}).get("tuned")
        seed = (doc.get("pipeline") or {}).get("random_state")
    except (OSError, ValueError, AttributeError):
        return False  # unreadable: a new version is published, as before
    if not isinstance(old, dict) or not {"trial", "value", "study"} <= set(old):
        return False
    # compared as the metadata stores it: written by the same JSON conversion (numpy values, paths)
    new = json.loads(json_text(tuned))
    old = {"seed": seed, **old}
    old.setdefault("params", new.get("params"))
    return old == new


def _finish(study, X, sp, seed, multi, pick, out, refit, pipeline, ws, y, obj, timing, model_metadata=None,
            items=None):
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        failed = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                  if t.user_attrs.get(FAILED_REASON, "interrupted") != "interrupted"]
        if failed:
            first = failed[0]
            params = ", ".join(f"{k}={v!r}" for k, v in first.params.items())
            raise InputError(f"no trial finished: the {len(failed)} trials of this study failed; the first "
                             f"(trial {first.number}, {params}): {first.user_attrs[FAILED_REASON]}")
        raise InputError("no trial finished; nothing to pick (give more --trials or --timeout)")
    pareto = []
    if multi:
        front = sorted(study.best_trials, key=lambda t: (-t.values[1], -t.values[0]))
        pareto = [_trial_row(t) for t in front]
        if callable(pick):
            best = pick(front)
        elif pick is not None:
            chosen = [t for t in front if t.number == int(pick)]
            if not chosen:
                raise ParameterError(f"--pick {pick}: not a trial on the Pareto front "
                                 f"({[t.number for t in front]})")
            best = chosen[0]
        else:
            best = max(front, key=lambda t: (t.values[0] if t.values[0] is not None else -1) * t.values[1])
        best_value = list(best.values)
    else:
        best = study.best_trial
        best_value = best.value
    chosen = {k: d.value for k, d in sp.dims.items() if d.kind == "fixed"} | dict(best.params)
    best_pipe = ws.trial_pipeline(chosen)
    params = flat_params(best_pipe)
    pipe = None
    summary = {
        "best_trial": best.number, "best_value": best_value, "best_params": params,
        "best_metrics": {k: v for k, v in best.user_attrs.items() if not k.startswith("rung")},
        "n_trials": len(study.trials),
        "states": {s.name: len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState},
        "timing": timing, "workspace": {"timings_s": ws.timings, **ws.stats},
        "space": sp.to_dict(), "space_name": sp.name, "space_notes": sp.notes,
        "objective": obj.name, "objective_description": DESCRIPTIONS.get(obj.name, obj.name),
        "multi_objective": multi, "seed": seed,
        "fidelity_levels": {lev: ws.size(lev) for lev in ws.levels},
    }
    if len(ws.levels) > 1:  # how far successive halving let trials go
        summary["trials_per_level"] = {
            f"{lev} ({ws.size(lev)} items)": sum(1 for t in study.trials if f"rung{r}" in t.user_attrs)
            for r, lev in enumerate(ws.levels[:-1])} | {f"full ({ws.n} items)": len(complete)}
    if pareto:
        summary["pareto_front"] = pareto
    tuned = same = damaged = None
    if refit and out is not None:
        tuned = {"trial": best.number, "value": best_value, "study": str((out / "study.db").resolve()), "seed": seed,
                 "params": params}
        same = published_best(out / "models", tuned)
    if refit:
        t = time.perf_counter()
        if same is not None:  # a resumed study whose best is the one published: that version is
            try:              # this refit already, so it is loaded, not fitted again
                pipe = type(best_pipe).load(same)
                summary["refit_loaded"] = str(same)
            except MediaclusterError as e:  # damaged: refit, and publish the refit as a new version
                log.warning("could not load %s (%s): refitting the best pipeline", same, e)
                damaged, same = same, None
        if pipe is None:
            pipe = best_pipe
            rp = pipe.reducer.get_params() if pipe.reducer is not None else {}
            knn = ws.graph("full", rp["metric"]) if {"n_neighbors", "metric"} <= set(rp) else None
            pipe.fit(X, precomputed_knn=knn)
        summary["refit_s"] = time.perf_counter() - t
        summary["refit_n_clusters"] = pipe.n_clusters_
        summary["refit_coverage"] = float((pipe.labels_ >= 0).mean())
    if out is not None:
        if pipe is not None:  # first, so that tune.json names the model version
            if same is not None:  # no copy of the published best
                summary["model"], summary["model_unchanged"] = str(same), True
            else:
                extra = model_metadata(pipe) if model_metadata is not None else {}
                # checked again under the store's lock: another tune on this --out (the same
                # study) may have published this best since the check above
                found = []

                def published(latest):
                    if latest != damaged and _same_best(latest, tuned):
                        found.append(latest)
                    return bool(found)

                summary["model"] = pipe.publish(out / "models", source="tune", metadata={**extra, "tuned": tuned},
                                                items=items, unless=published)
                if found:
                    summary["model_unchanged"] = summary["published_meanwhile"] = True
        write_json(out / "best_params.json", {"trial": best.number, "value": best_value,
                                              "params": params})
        write_json(out / "tune.json", summary)
        try:
            df = study.trials_dataframe()
            write_table(out / "trials.csv", df)
        except Exception as e:  # a dataframe quirk must not lose the study
            log.warning("could not write trials.csv: %s", e)
    return TuneResult(study=study, best_params=params, best_value=best_value,
                      best_trial=best.number, pipeline=pipe, pareto=pareto, summary=summary)
