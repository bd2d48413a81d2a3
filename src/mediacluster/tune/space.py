"""Search spaces over stage parameters: parsing, validation, presets, grids.

A space maps ``"stage.parameter"`` to a specification::

    reduce.n_components: {int: [2, 50]}
    reduce.n_neighbors: {int: [100, 2000], log: true}
    reduce.min_dist: {float: [0.0, 0.25]}
    outliers.method: {choice: [lof, none]}
    outliers.n_neighbors: {int: [10, 1000], log: true}
    cluster.min_cluster_size: {int: [50, 1500], log: true}
    cluster.cluster_selection_method: {choice: [eom, leaf]}
    reduce.metric: cosine              # a plain value fixes the parameter

(nested form ``{reduce: {n_components: {int: [2, 50]}}}`` is accepted too). ``int`` / ``float``
take optional ``log: true``, ``step: S`` and ``grid: [values]`` (points used by the grid
sampler; by default ``grid_points`` points spread over the range, geometric when ``log``).
Stages: ``reduce`` (UMAP), ``outliers`` (``method`` lof | none, LOF parameters), ``cluster``
(HDBSCAN). Anything else is refused with a message naming the problem.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

# parameter -> (kind, lower bound, upper bound, allowed choices); bounds are inclusive limits
# of what the stage accepts, None = unbounded.
PARAMS: dict[str, dict] = {
    "reduce.n_neighbors": {"kind": "int", "min": 2},
    "reduce.n_components": {"kind": "int", "min": 1},
    "reduce.min_dist": {"kind": "float", "min": 0.0},
    "reduce.spread": {"kind": "float", "min": 1e-6},
    "reduce.n_epochs": {"kind": "int", "min": 1},
    "reduce.metric": {"kind": "choice", "choices": ["cosine", "euclidean", "correlation", "manhattan"]},
    "outliers.method": {"kind": "choice", "choices": ["lof", "none"]},
    "outliers.n_neighbors": {"kind": "int", "min": 1},
    "outliers.contamination": {"kind": "float", "min": 1e-6, "max": 0.5, "extra": ["auto"]},
    "cluster.min_cluster_size": {"kind": "int", "min": 2},
    "cluster.min_samples": {"kind": "int", "min": 1},
    "cluster.cluster_selection_method": {"kind": "choice", "choices": ["eom", "leaf"]},
    "cluster.cluster_selection_epsilon": {"kind": "float", "min": 0.0},
    "cluster.alpha": {"kind": "float", "min": 1e-6},
}

# parameters whose sensible value scales with the number of items (multi-fidelity rescales them
# on a subsample; clamped to the data size)
NEIGHBOURHOOD_PARAMS = ("reduce.n_neighbors", "outliers.n_neighbors", "cluster.min_cluster_size",
                        "cluster.min_samples")

DEFAULTS = {
    "reduce.n_neighbors": 30, "reduce.n_components": 10, "reduce.min_dist": 0.0,
    "reduce.spread": 1.0, "reduce.n_epochs": None, "reduce.metric": "cosine",
    "outliers.method": "none", "outliers.n_neighbors": 20, "outliers.contamination": "auto",
    "cluster.min_cluster_size": None, "cluster.min_samples": None,
    "cluster.cluster_selection_method": "eom", "cluster.cluster_selection_epsilon": 0.0,
    "cluster.alpha": 1.0,
}


class SpaceError(ValueError):
    """An invalid search space (the message names the parameter and the problem)."""


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


@dataclass
class SearchSpace:
    """Validated dimensions, by ``stage.parameter`` name."""

    dims: dict[str, Dim]
    name: str = "custom"
    notes: list[str] = field(default_factory=list)

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, spec: dict, name: str = "custom") -> SearchSpace:
        if not isinstance(spec, dict) or not spec:
            raise SpaceError("search space must be a non-empty mapping of 'stage.parameter' to a range")
        flat: dict[str, object] = {}
        for key, val in spec.items():
            if not isinstance(key, str):
                raise SpaceError(f"parameter name {key!r} must be a string like 'reduce.n_neighbors'")
            if "." not in key and isinstance(val, dict) and key in {"reduce", "outliers", "cluster"}:
                for sub, v in val.items():
                    flat[f"{key}.{sub}"] = v
            else:
                flat[key] = val
        dims = {k: _parse_dim(k, v) for k, v in flat.items()}
        if not any(d.kind != "fixed" for d in dims.values()):
            raise SpaceError("search space has no free parameter (every entry is a fixed value)")
        return cls(dims=dims, name=name)

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
            nums = [c for c in d.choices if isinstance(c, int | float)]
            return max(nums) if nums else default
        return d.high if d.grid is None else max(d.grid)

    def clamp_to(self, n: int) -> SearchSpace:
        """Limit neighbourhood-size ranges to what ``n`` items allow (noted in ``notes``)."""
        limits = {"reduce.n_neighbors": n - 1, "outliers.n_neighbors": n - 1,
                  "cluster.min_cluster_size": max(2, n // 2), "cluster.min_samples": n - 1,
                  "reduce.n_components": max(1, n - 2)}
        dims = dict(self.dims)
        notes = list(self.notes)
        for k, lim in limits.items():
            d = dims.get(k)
            if d is None or d.kind not in ("int",) or d.high <= lim:
                continue
            lo = min(d.low, lim)
            grid = tuple(sorted({min(int(g), lim) for g in d.grid})) if d.grid is not None else None
            dims[k] = Dim(k, "int", lo, lim, d.log and lo > 0, d.step, grid=grid)
            notes.append(f"{k}: range [{d.low}, {d.high}] clamped to [{lo}, {lim}] for {n} items")
        return SearchSpace(dims=dims, name=self.name, notes=notes)

    def grid(self, points: int = 5) -> dict[str, list]:
        """Discretised grid for Optuna's GridSampler (free parameters only)."""
        return {k: d.grid_values(points) for k, d in self.free.items()}

    # -- sampling --------------------------------------------------------------------------
    def suggest(self, trial) -> dict:
        """Ask an Optuna trial for every free parameter; returns the full parameter dict."""
        params = {}
        for k, d in self.dims.items():
            if d.kind == "fixed":
                params[k] = d.value
            elif d.kind == "choice":
                params[k] = trial.suggest_categorical(k, list(d.choices))
            elif d.kind == "int":
                params[k] = trial.suggest_int(k, int(d.low), int(d.high), log=d.log,
                                              step=int(d.step) if d.step else 1)
            else:
                params[k] = trial.suggest_float(k, float(d.low), float(d.high), log=d.log,
                                                step=d.step)
        return params


def _parse_dim(name: str, val) -> Dim:
    if name not in PARAMS:
        stage = name.split(".", 1)[0]
        known = sorted(p for p in PARAMS if p.startswith(stage + "."))
        hint = f"; known {stage} parameters: {', '.join(known)}" if known else (
            "; stages are reduce, outliers, cluster")
        raise SpaceError(f"unknown parameter {name!r}{hint}")
    info = PARAMS[name]
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
    kind = kinds.pop()
    if kind == "fixed":
        _check_value(name, info, val["fixed"])
        return Dim(name, "fixed", value=val["fixed"])
    if kind == "choice":
        choices = val["choice"]
        if not isinstance(choices, list | tuple) or len(choices) == 0:
            raise SpaceError(f"{name}: choice needs a non-empty list, got {choices!r}")
        for c in choices:
            _check_value(name, info, c)
        return Dim(name, "choice", choices=tuple(choices))
    if info["kind"] == "choice":
        raise SpaceError(f"{name}: takes one of {info['choices']}, so use {{choice: [...]}}, not {kind}")
    if kind == "float" and info["kind"] == "int":
        raise SpaceError(f"{name}: is an integer parameter; use {{int: [lo, hi]}}")
    rng = val[kind]
    if not isinstance(rng, list | tuple) or len(rng) != 2:
        raise SpaceError(f"{name}: {kind} range must be [low, high], got {rng!r}")
    lo, hi = rng
    for v in (lo, hi):
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise SpaceError(f"{name}: range bounds must be numbers, got {v!r}")
        if kind == "int" and not float(v).is_integer():
            raise SpaceError(f"{name}: int range bounds must be whole numbers, got {v!r}")
    if lo > hi:
        raise SpaceError(f"{name}: empty range, min {lo} > max {hi}")
    if kind == "float" and lo == hi:
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
    if kind == "int":
        lo, hi = int(lo), int(hi)
    else:
        lo, hi = float(lo), float(hi)
    return Dim(name, kind, lo, hi, log, step, grid=grid)


def _check_value(name: str, info: dict, v) -> None:
    if v is None:
        if DEFAULTS.get(name, 0) is None:
            return
        raise SpaceError(f"{name}: None is not allowed")
    if info["kind"] == "choice":
        if v not in info["choices"]:
            raise SpaceError(f"{name}: {v!r} is not one of {info['choices']}")
        return
    if v in info.get("extra", []):
        return
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise SpaceError(f"{name}: expected a number, got {v!r} ({type(v).__name__})")
    if info["kind"] == "int" and not float(v).is_integer():
        raise SpaceError(f"{name}: expected an integer, got {v!r}")
    if "min" in info and v < info["min"]:
        raise SpaceError(f"{name}: {v} is below the smallest allowed value {info['min']}")
    if "max" in info and v > info["max"]:
        raise SpaceError(f"{name}: {v} is above the largest allowed value {info['max']}")


# ------------------------------------------------------------------------------------------
# presets
# ------------------------------------------------------------------------------------------
def _mcs_range(n: int) -> tuple[int, int]:
    """HDBSCAN min_cluster_size range: 0.1% .. 5% of the items (the study used 1% at 50k)."""
    return max(5, int(round(0.001 * n))), max(10, int(round(0.05 * n)))


def preset(name: str, n: int) -> SearchSpace:
    """Named spaces. ``seed-study``: the source study's ranges; ``default``: ours (see
    ``benchmarks/RESULTS.md``, section tuning, for the experiment that chose it)."""
    lo, hi = _mcs_range(n)
    if name == "seed-study":
        # the source study (seed 000): UMAP n_components 2-50, n_neighbors 100-2000, min_dist
        # 0-0.25 in steps of 0.01 (random / Bayesian / evolutionary), LOF n_neighbors 10-1000,
        # HDBSCAN min_cluster_size fixed at 500 for 50k items (1 % of the items here); its grid
        # search used the ``grid`` values below. The step is 0.005 so that both the 0.01 steps
        # and the grid's 0.025 are on it.
        spec = {
            "reduce.n_components": {"int": [2, 50], "grid": [2, 5, 10, 15, 20, 35, 50]},
            "reduce.n_neighbors": {"int": [100, 2000], "grid": [100, 250, 500, 1000, 1500, 2000]},
            "reduce.min_dist": {"float": [0.0, 0.25], "step": 0.005, "grid": [0.0, 0.025, 0.1, 0.25]},
            "reduce.metric": "cosine",
            "outliers.method": "lof",
            "outliers.n_neighbors": {"int": [10, 1000], "grid": [10, 100, 250, 500, 1000]},
            "cluster.min_cluster_size": max(5, int(round(0.01 * n))),
        }
    elif name == "default":
        # reducer settings are a few discrete choices: at most 6 UMAP fits per study, every
        # other trial reuses a cached embedding; the clustering parameters stay continuous.
        spec = {
            "reduce.n_components": {"choice": [5, 10]},
            "reduce.n_neighbors": {"choice": [15, 30, 60]},
            "reduce.min_dist": 0.0,
            "reduce.metric": "cosine",
            "outliers.method": "none",
            "cluster.min_cluster_size": {"int": [lo, hi], "log": True},
            "cluster.min_samples": {"int": [1, 50], "log": True},
            "cluster.cluster_selection_method": {"choice": ["eom", "leaf"]},
        }
    else:
        raise SpaceError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return SearchSpace.from_dict(spec, name=name).clamp_to(n)


PRESETS = ("default", "seed-study")


def load_space(spec, n: int) -> SearchSpace:
    """A preset name, a path to a YAML/JSON file, a dict, or a SearchSpace -> SearchSpace."""
    if isinstance(spec, SearchSpace):
        return spec.clamp_to(n)
    if spec is None:
        return preset("default", n)
    if isinstance(spec, dict):
        return SearchSpace.from_dict(spec).clamp_to(n)
    s = str(spec)
    if s in PRESETS:
        return preset(s, n)
    p = Path(s)
    if not p.exists():
        raise SpaceError(f"search space {s!r} is neither a preset ({', '.join(PRESETS)}) nor a file")
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpaceError(f"{p}: not valid JSON: {e}") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise SpaceError(f"{p}: not valid YAML: {e}") from None
    return SearchSpace.from_dict(data, name=p.stem).clamp_to(n)


def split_params(params: dict) -> dict[str, dict]:
    """``{"reduce.n_neighbors": 30, ...}`` -> ``{"reduce": {"n_neighbors": 30}, ...}``."""
    out: dict[str, dict] = {"reduce": {}, "outliers": {}, "cluster": {}}
    for k, v in params.items():
        stage, p = k.split(".", 1)
        out[stage][p] = v
    return out


def full_params(params: dict, n: int) -> dict:
    """Fill unspecified parameters with the defaults (min_cluster_size from ``n``)."""
    from ..pipeline import default_min_cluster_size

    out = dict(DEFAULTS)
    out["cluster.min_cluster_size"] = default_min_cluster_size(n)
    out.update(params)
    if out.get("outliers.contamination") is not None and out["outliers.contamination"] != "auto":
        out["outliers.contamination"] = float(out["outliers.contamination"])
    return out


def isclose(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
