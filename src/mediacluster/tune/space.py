"""Search spaces over a pipeline's parameters: parsing, validation, presets, grids.

Names are the pipeline's own (scikit-learn's nested naming, from the stage registry): a stage
is chosen by its kind, its parameters are ``kind__parameter``::

    reducer: umap                                  # a plain value fixes a parameter
    reducer__n_components: {int: [2, 50]}
    reducer__n_neighbors: {int: [100, 2000], log: true}
    reducer__min_dist: {float: [0.0, 0.25]}
    outliers: {choice: [lof, none]}                # the stage itself can be searched
    outliers__n_neighbors: {int: [10, 1000], log: true}
    clusterer: hdbscan
    clusterer__min_cluster_size: {int: [50, 1500], log: true}
    clusterer__cluster_selection_method: {choice: [eom, leaf]}

(the nested form ``{reducer: {name: umap, n_components: {int: [2, 50]}}}`` and the older
spelling ``reduce.n_neighbors`` / ``outliers.method`` / ``cluster.min_cluster_size`` are read
too). A stage not named in the space is the starting pipeline's. Every parameter is checked
against the registry entry of its stage: unknown names and out-of-range bounds are refused
with a message naming them. ``int`` / ``float`` take optional ``log: true``, ``step: S`` and
``grid: [values]`` (points used by the grid sampler; by default ``grid_points`` points spread
over the range, geometric when ``log``). A stage parameter is only proposed in trials whose
stage has it (define-by-run), so ``outliers: {choice: [lof, none]}`` with LOF parameters works.

With no space, :func:`space_for` searches every tunable parameter the registry declares for the
pipeline's own stages: ``Pipeline().tune(X)`` tunes the pipeline it is called on.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ParameterError, SpaceError, yaml_problem
from ..fileio import read_yaml
from ..stages import registry

KINDS = registry.KINDS
_OLD_STAGE = {"reduce": "reducer", "cluster": "clusterer", "outliers": "outliers"}


def canonical(name: str) -> str:
    """``reduce.n_neighbors`` -> ``reducer__n_neighbors``, ``outliers.method`` -> ``outliers``."""
    if "." in name and "__" not in name:
        stage, p = name.split(".", 1)
        kind = _OLD_STAGE.get(stage)
        if kind is not None:
            return kind if p in ("method", "name") else f"{kind}__{p}"
    return name


@dataclass(frozen=True)
class Dim:
    name: str
    kind: str                      # "int" | "float" | "choice" | "fixed"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()
    value: object = None
    grid: tuple | None = None

    def to_dict(self) -> dict:
        if self.kind == "fixed":
            return {"fixed": self.value}
        if self.kind == "choice":
            return {"choice": list(self.choices)}
        d = {self.kind: [self.low, self.high]}
        if self.log:
            d["log"] = True
        if self.step is not None:
            d["step"] = self.step
        if self.grid is not None:
            d["grid"] = list(self.grid)
        return d

    def grid_values(self, points: int) -> list:
        if self.kind == "fixed":
            return [self.value]
        if self.kind == "choice":
            return list(self.choices)
        if self.grid is not None:
            return list(self.grid)
        lo, hi = self.low, self.high
        if self.step is not None:  # the points on the step, as Optuna proposes them (never with log)
            last = int(math.floor((hi - lo) / self.step + 1e-9))
            ks = (range(last + 1) if last + 1 <= points else
                  sorted({int(math.floor(last * i / (points - 1) + 0.5)) for i in range(points)}))
            vals = [lo + k * self.step for k in ks]
            return [int(round(v)) for v in vals] if self.kind == "int" else [float(round(v, 12)) for v in vals]
        if self.kind == "int":
            if hi - lo + 1 <= points:
                return list(range(int(lo), int(hi) + 1))
            if self.log:
                vals = [lo * (hi / lo) ** (i / (points - 1)) for i in range(points)]
            else:
                vals = [lo + (hi - lo) * i / (points - 1) for i in range(points)]
            return sorted({int(round(v)) for v in vals})
        if lo == hi:
            return [float(lo)]
        if self.log:
            return [float(lo * (hi / lo) ** (i / (points - 1))) for i in range(points)]
        return [float(lo + (hi - lo) * i / (points - 1)) for i in range(points)]

    def values(self) -> list:
        """Every value a stage-choice dimension can take."""
        return [self.value] if self.kind == "fixed" else list(self.choices)


@dataclass
class SearchSpace:
    """Validated dimensions by pipeline parameter name, plus the starting stages (``base``:
    kind -> registry name) that parameters of stages not chosen in the space belong to."""

    dims: dict[str, Dim]
    name: str = "custom"
    notes: list[str] = field(default_factory=list)
    base: dict[str, str | None] = field(default_factory=dict)

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, spec: dict, name: str = "custom", base: dict | None = None) -> SearchSpace:
        if not isinstance(spec, dict) or not spec:
            raise SpaceError("search space must be a non-empty mapping of parameter names to ranges, "
                             "e.g. 'reducer__n_neighbors: {int: [10, 100]}'")
        base = {k: v for k, v in (base or {}).items() if k in KINDS}
        flat: dict[str, object] = {}
        for key, val in spec.items():
            if not isinstance(key, str):
                raise SpaceError(f"parameter name {key!r} must be a string like 'reducer__n_neighbors'")
            kind = _OLD_STAGE.get(key, key)
            if kind in KINDS and isinstance(val, dict) and not (set(val) & {"choice", "fixed"}):
                for sub, v in val.items():  # nested form
                    flat[kind if sub in ("name", "method") else f"{kind}__{sub}"] = v
            else:
                flat[canonical(key)] = val
        stage_dims = {k: _parse_stage(k, flat[k]) for k in KINDS if k in flat}
        stages = {k: (stage_dims[k].values() if k in stage_dims else [base.get(k)]) for k in KINDS}
        dims = dict(stage_dims)
        for k, v in flat.items():
            if k not in KINDS:
                dims[k] = _parse_dim(k, v, stages)
        if not any(d.kind != "fixed" for d in dims.values()):
            raise SpaceError("search space has no free parameter (every entry is a fixed value)")
        ordered = {k: dims[k] for k in flat if k in dims}  # the user's order: proposals depend on it
        return cls(dims=ordered, name=name, base=base)

    @property
    def free(self) -> dict[str, Dim]:
        return {k: d for k, d in self.dims.items() if d.kind != "fixed"}

    def to_dict(self) -> dict:
        return {k: d.to_dict() for k, d in self.dims.items()}

    def max_of(self, name: str, default=None):
        d = self.dims.get(name)
        if d is None:
            return default
        if d.kind == "fixed":
            return d.value
        if d.kind == "choice":
            nums = [c for c in d.choices if isinstance(c, int | float) and not isinstance(c, bool)]
            return max(nums) if nums else default
        return d.high if d.grid is None else max(d.grid)

    def stage_names(self, kind: str) -> list:
        d = self.dims.get(kind)
        return d.values() if d is not None else [self.base.get(kind)]

    def clamp_to(self, n: int) -> SearchSpace:
        """Limit neighbourhood-size ranges to what ``n`` items allow (noted in ``notes``)."""
        dims = dict(self.dims)
        notes = list(self.notes)
        for k, d in self.dims.items():
            if d.kind != "int" or "__" not in k:
                continue
            kind, p = k.split("__", 1)
            lim = _limit(kind, p, n)
            if lim is None or d.high <= lim:
                continue
            lo = min(d.low, lim)
            grid = tuple(sorted({min(int(g), lim) for g in d.grid})) if d.grid is not None else None
            dims[k] = Dim(k, "int", lo, lim, d.log and lo > 0, d.step, grid=grid)
            notes.append(f"{k}: range [{d.low}, {d.high}] clamped to [{lo}, {lim}] for {n} items")
        return SearchSpace(dims=dims, name=self.name, notes=notes, base=dict(self.base))

    def grid(self, points: int = 5) -> dict[str, list]:
        """Discretised grid for Optuna's GridSampler (free parameters only)."""
        if isinstance(points, bool) or not isinstance(points, int) or points < 2:
            raise ParameterError(f"grid_points must be at least 2, got {points} (a range's grid holds its two ends)",
                                 "grid_points")
        return {k: d.grid_values(points) for k, d in self.free.items()}

    # -- sampling --------------------------------------------------------------------------
    def suggest(self, trial) -> dict:
        """Ask an Optuna trial for every free parameter of the chosen stages; returns the
        parameter dict (fixed values included)."""
        params: dict = {}
        for k, d in self.dims.items():  # stages first: their parameters depend on the choice
            if k in KINDS:
                params[k] = _ask(trial, k, d)
        for k, d in self.dims.items():
            if k in KINDS:
                continue
            kind, p = k.split("__", 1)
            stage = params.get(kind, self.base.get(kind))
            if stage is None or p not in _params_of(kind, stage):
                continue  # e.g. LOF's n_neighbors in a trial without LOF
            params[k] = _ask(trial, k, d)
        return params


def _ask(trial, k: str, d: Dim):
    if d.kind == "fixed":
        return d.value
    if d.kind == "choice":
        return trial.suggest_categorical(k, list(d.choices))
    if d.kind == "int":
        return trial.suggest_int(k, int(d.low), int(d.high), log=d.log,
                                 step=int(d.step) if d.step else 1)
    return trial.suggest_float(k, float(d.low), float(d.high), log=d.log, step=d.step)


def _params_of(kind: str, stage) -> dict:
    if stage is None:
        return {}
    try:
        return registry.get(kind, stage).params
    except Exception:  # noqa: BLE001 - validated when the space was parsed
        return {}


def _limit(kind: str, p: str, n: int) -> int | None:
    """Largest value of a count parameter that ``n`` items allow (None: no such limit)."""
    if p == "n_components":
        return max(1, n - 2)
    if p in ("n_neighbors", "min_samples"):
        return n - 1
    if p == "min_cluster_size":
        return max(2, n // 2)
    if p in ("n_clusters", "k_max"):
        return max(2, n // 2)
    return None


def _parse_stage(kind: str, val) -> Dim:
    names = []
    if isinstance(val, dict):
        if set(val) == {"choice"} and isinstance(val["choice"], list | tuple) and val["choice"]:
            names = list(val["choice"])
            out = "choice"
        elif set(val) == {"fixed"}:
            names = [val["fixed"]]
            out = "fixed"
        else:
            raise SpaceError(f"{kind}: give a stage name or {{choice: [names]}}, got {val!r}")
    else:
        names, out = [val], "fixed"
    resolved = []
    for nm in names:
        if nm is None:
            resolved.append(None)
            continue
        try:
            resolved.append(registry.get(kind, nm).name)
        except Exception as e:  # noqa: BLE001 - ParameterError from the registry: say it as a space error
            raise SpaceError(f"{kind}: {e}") from None
    return Dim(kind, "fixed", value=resolved[0]) if out == "fixed" else Dim(kind, "choice", choices=tuple(resolved))


def _parse_dim(name: str, val, stages: dict[str, list]) -> Dim:
    if "__" not in name or name.split("__", 1)[0] not in KINDS:
        raise SpaceError(f"unknown parameter {name!r}; parameters are named like "
                         f"'reducer__n_neighbors' (kinds: {', '.join(KINDS)})")
    kind, p = name.split("__", 1)
    owners = [s for s in stages[kind] if s is not None and p in _params_of(kind, s)]
    if not owners:
        known = sorted({q for s in stages[kind] for q in _params_of(kind, s)})
        which = "/".join(str(s) for s in stages[kind])
        hint = f"; known {kind} ({which}) parameters: {', '.join(known)}" if known else (
            f"; the {kind} stage is {which!r}: name one with '{kind}: NAME' in the space")
        raise SpaceError(f"unknown parameter {name!r}{hint}")
    info = _params_of(kind, owners[0])[p]
    if not isinstance(val, dict):
        _check_value(name, info, val)
        return Dim(name, "fixed", value=val)
    keys = set(val)
    kinds = keys & {"int", "float", "choice", "fixed"}
    if len(kinds) != 1:
        raise SpaceError(f"{name}: give exactly one of int / float / choice / fixed, got {sorted(keys)}")
    unknown = keys - {"int", "float", "choice", "fixed", "log", "step", "grid"}
    if unknown:
        raise SpaceError(f"{name}: unknown option(s) {sorted(unknown)} (allowed: log, step, grid)")
    kind_ = kinds.pop()
    if kind_ == "fixed":
        _check_value(name, info, val["fixed"])
        return Dim(name, "fixed", value=val["fixed"])
    if kind_ == "choice":
        choices = val["choice"]
        if not isinstance(choices, list | tuple) or len(choices) == 0:
            raise SpaceError(f"{name}: choice needs a non-empty list, got {choices!r}")
        for c in choices:
            _check_value(name, info, c)
        return Dim(name, "choice", choices=tuple(choices))
    if info.kind in ("choice", "bool", "str"):
        opts = list(info.choices) if info.kind == "choice" else [True, False]
        raise SpaceError(f"{name}: takes one of {opts}, so use {{choice: [...]}}, not {kind_}")
    if kind_ == "float" and info.kind == "int":
        raise SpaceError(f"{name}: is an integer parameter; use {{int: [lo, hi]}}")
    rng = val[kind_]
    if not isinstance(rng, list | tuple) or len(rng) != 2:
        raise SpaceError(f"{name}: {kind_} range must be [low, high], got {rng!r}")
    lo, hi = rng
    for v in (lo, hi):
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise SpaceError(f"{name}: range bounds must be numbers, got {v!r}")
        if kind_ == "int" and not float(v).is_integer():
            raise SpaceError(f"{name}: int range bounds must be whole numbers, got {v!r}")
    if lo > hi:
        raise SpaceError(f"{name}: empty range, min {lo} > max {hi}")
    if kind_ == "float" and lo == hi:
        raise SpaceError(f"{name}: empty range [{lo}, {hi}]; give a fixed value instead")
    _check_value(name, info, lo)
    _check_value(name, info, hi)
    log = bool(val.get("log", False))
    if log and lo <= 0:
        raise SpaceError(f"{name}: log scale needs a positive lower bound, got {lo}")
    step = val.get("step")
    if step is not None:
        if not isinstance(step, int | float) or step <= 0:
            raise SpaceError(f"{name}: step must be a positive number, got {step!r}")
        if log:
            raise SpaceError(f"{name}: step and log cannot be combined (Optuna does not allow it)")
    grid = val.get("grid")
    if grid is not None:
        if not isinstance(grid, list | tuple) or not grid:
            raise SpaceError(f"{name}: grid must be a non-empty list")
        for g in grid:
            _check_value(name, info, g)
            if not lo <= g <= hi:
                raise SpaceError(f"{name}: grid value {g} outside the range [{lo}, {hi}]")
            if step is not None and not math.isclose((g - lo) / step, round((g - lo) / step),
                                                     abs_tol=1e-6):
                raise SpaceError(f"{name}: grid value {g} is not on the step {step} from {lo}")
        grid = tuple(grid)
    if kind_ == "int":
        lo, hi = int(lo), int(hi)
    else:
        lo, hi = float(lo), float(hi)
    return Dim(name, kind_, lo, hi, log, step, grid=grid)


def _check_value(name: str, info: registry.Param, v) -> None:
    try:
        info.check(v, name)
    except Exception as e:  # noqa: BLE001 - ParameterError: say it as a space error
        raise SpaceError(str(e).replace("must be >=", "below the smallest allowed value; must be >=")) from None


# ------------------------------------------------------------------------------------------
# presets and the pipeline's own space
# ------------------------------------------------------------------------------------------
def _mcs_range(n: int) -> tuple[int, int]:
    """HDBSCAN min_cluster_size range: 0.1% .. 5% of the items (the study used 1% at 50k)."""
    return max(5, int(round(0.001 * n))), max(10, int(round(0.05 * n)))


def preset(name: str, n: int) -> SearchSpace:
    """Named spaces. ``seed-study``: the source study's ranges; ``default``: ours (see
    ``benchmarks/RESULTS.md``, section tuning, for the experiment that chose it). Both name
    their stages (UMAP, optional LOF, HDBSCAN), whatever the starting pipeline's are."""
    lo, hi = _mcs_range(n)
    if name == "seed-study":
        # the source study (seed 000): UMAP n_components 2-50, n_neighbors 100-2000, min_dist
        # 0-0.25 in steps of 0.01 (random / Bayesian / evolutionary), LOF n_neighbors 10-1000,
        # HDBSCAN min_cluster_size fixed at 500 for 50k items (1 % of the items here); its grid
        # search used the ``grid`` values below. The step is 0.005 so that both the 0.01 steps
        # and the grid's 0.025 are on it.
        spec = {
            "reducer": "umap",
            "reducer__n_components": {"int": [2, 50], "grid": [2, 5, 10, 15, 20, 35, 50]},
            "reducer__n_neighbors": {"int": [100, 2000], "grid": [100, 250, 500, 1000, 1500, 2000]},
            "reducer__min_dist": {"float": [0.0, 0.25], "step": 0.005, "grid": [0.0, 0.025, 0.1, 0.25]},
            "reducer__metric": "cosine",
            "outliers": "lof",
            "outliers__n_neighbors": {"int": [10, 1000], "grid": [10, 100, 250, 500, 1000]},
            "clusterer": "hdbscan",
            "clusterer__min_cluster_size": max(5, int(round(0.01 * n))),
        }
    elif name == "default":
        # reducer settings are a few discrete choices: at most 6 UMAP fits per study, every
        # other trial reuses a cached embedding; the clustering parameters stay continuous.
        spec = {
            "reducer": "umap",
            "reducer__n_components": {"choice": [5, 10]},
            "reducer__n_neighbors": {"choice": [15, 30, 60]},
            "reducer__min_dist": 0.0,
            "reducer__metric": "cosine",
            "outliers": None,
            "clusterer": "hdbscan",
            "clusterer__min_cluster_size": {"int": [lo, hi], "log": True},
            "clusterer__min_samples": {"int": [1, 50], "log": True},
            "clusterer__cluster_selection_method": {"choice": ["eom", "leaf"]},
        }
    else:
        raise SpaceError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return SearchSpace.from_dict(spec, name=name).clamp_to(n)


PRESETS = ("default", "seed-study")


def stage_names(pipeline, n: int) -> dict[str, str | None]:
    """kind -> registry name of each stage of ``pipeline`` ("auto" resolved to its default)."""
    out: dict[str, str | None] = {}
    if pipeline is None:
        return out
    for kind, stage in pipeline.concrete(n).stages().items():
        info = registry.of(stage) if stage is not None else None
        out[kind] = info.name if info is not None else None
    return out


def space_for(pipeline, n: int) -> SearchSpace:
    """Every tunable parameter the registry declares for the pipeline's own stages."""
    base = stage_names(pipeline, n)
    spec: dict = {}
    for kind, name in base.items():
        if name is None:
            continue
        for p, rng in registry.get(kind, name).tunable().items():
            spec[f"{kind}__{p}"] = rng
    if not spec:
        raise SpaceError("the pipeline's stages declare no tunable parameters; give a space")
    return SearchSpace.from_dict(spec, name="pipeline", base=base).clamp_to(n)


def load_space(spec, n: int, pipeline=None) -> SearchSpace:
    """A preset name, a path to a YAML/JSON file, a dict, a SearchSpace, or None (the
    pipeline's own space, :func:`space_for`) -> SearchSpace for ``n`` items."""
    base = stage_names(pipeline, n)
    if isinstance(spec, SearchSpace):
        return spec.clamp_to(n)
    if spec is None:
        if pipeline is None:
            return preset("default", n)
        return space_for(pipeline, n)
    if isinstance(spec, dict):
        return SearchSpace.from_dict(spec, base=base).clamp_to(n)
    s = str(spec)
    if s in PRESETS:
        return preset(s, n)
    p = Path(s)
    if not p.exists():
        raise SpaceError(f"search space {s!r} is neither a preset ({', '.join(PRESETS)}) nor a file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SpaceError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise SpaceError(f"{p}: cannot read: {e.strerror or e}") from None
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpaceError(f"{p}: not valid JSON: {e}") from None
    else:
        import yaml

        try:
            data = read_yaml(text)
        except yaml.YAMLError as e:
            raise SpaceError(f"{p}: not valid YAML: {yaml_problem(e)}") from None
    try:
        return SearchSpace.from_dict(data, name=p.stem, base=base).clamp_to(n)
    except SpaceError as e:
        raise SpaceError(f"{p}: {e}") from None
