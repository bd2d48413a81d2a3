"""Pipeline configurations: YAML/JSON files and ``name=value`` flags -> a checked Pipeline.

A config names each stage from the stage registry with its parameters::

    reducer: {name: umap, params: {n_components: 10, n_neighbors: 30}}
    outliers: {name: lof, params: {n_neighbors: 20, contamination: 0.02}}
    clusterer: {name: hdbscan, params: {min_cluster_size: 100, cluster_selection_method: leaf}}
    assign_noise: true

A stage may also be a bare name (``reducer: pca``), ``auto`` or ``none``, and its parameters
may be given as scikit-learn's nested names beside it, as in a tuning space
(``clusterer: hdbscan`` + ``clusterer__min_cluster_size: 100``). Unknown keys, stage
names or parameters, and out-of-range values are refused with a message naming them (and the
file), before any work starts. ``describe(pipeline)`` is the inverse, for ``run.json``.
"""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError, MediaclusterError, ParameterError, yaml_problem
from .fileio import read_yaml
from .pipeline import PIPELINE_PARAMS, STAGES, Pipeline
from .stages import registry
from .stages.hierarchy import ENGINE_REDUCER


def parse_param(text: str) -> tuple[str, object]:
    """``"n_components=10"`` -> ``("n_components", 10)``; values parsed as YAML scalars
    (numbers, true/false, null, strings)."""
    import yaml

    if "=" not in text:
        raise ParameterError(f"stage parameter {text!r} must look like name=value", text)
    k, v = text.split("=", 1)
    try:
        value = yaml.safe_load(v) if v.strip() else None
    except yaml.YAMLError:
        value = v
    return k.strip(), value


def load_config(path) -> dict:
    """Read a YAML or JSON pipeline config (safe loader: no Python objects)."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {p} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {p}: {e.strerror or e}") from None
    try:
        cfg = read_yaml(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML/JSON: {yaml_problem(e)}") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{p}: a pipeline config must be a mapping, e.g. 'reducer: {{name: umap}}'")
    try:
        return fold_stage_params(cfg)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}", e.param) from None


def fold_stage_params(cfg: dict) -> dict:
    """A copy of ``cfg`` with nested names (``clusterer__min_cluster_size: 20``) moved into
    their stage's ``{name, params}`` form, the one form the rest of the code reads."""
    cfg = dict(cfg)
    for key in [k for k in cfg if isinstance(k, str) and "__" in k and k.split("__", 1)[0] in STAGES]:
        kind, name = key.split("__", 1)
        spec = cfg.get(kind, None if kind == "outliers" else "auto")
        if isinstance(spec, dict):
            params = spec.get("params") or {}
            if not isinstance(params, dict):
                raise ConfigError(f"{kind}: params must be a mapping, got {params!r}", kind)
            if name in params:
                raise ConfigError(f"{key} is given twice (also in {kind}'s params)", key)
            spec = {**spec, "params": {**params, name: cfg.pop(key)}}
        else:
            spec = {"name": spec, "params": {name: cfg.pop(key)}}
        cfg[kind] = spec
    return cfg


def pipeline_from_config(cfg: dict, source: str | None = None, **overrides) -> Pipeline:
    """A checked :class:`Pipeline` from a config mapping (see the module docstring).

    ``source`` (the file name) is put in front of error messages."""
    try:
        return _build(cfg, overrides)
    except MediaclusterError as e:
        if not source or str(e).startswith(f"{source}:"):
            raise
        raise ConfigError(f"{source}: {e}", getattr(e, "param", None)) from None


def _auto_reducer_hint(params: dict) -> str:
    """Why the default reducer takes no parameters, and how to get it with one changed: naming
    ``umap`` alone starts from umap-learn's own defaults, not from the default pipeline's UMAP."""
    given = ", ".join(f"reducer__{p}" for p in sorted(params))
    engine = ", ".join(f"{k}={v}" for k, v in ENGINE_REDUCER.items() if k not in params)
    return (f"reducer 'auto' takes no parameters; name the stage to set {given} (reducer: umap, "
            f"--reducer umap). The default reducer is umap with {engine}: give those too to change only "
            f"{given}; umap alone has umap-learn's own defaults (a spectral start, up to 500 epochs), "
            "several times slower")


def _build(cfg: dict, overrides: dict) -> Pipeline:
    cfg = fold_stage_params(cfg)
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    known = {*STAGES, *PIPELINE_PARAMS}
    bad = sorted(set(map(str, cfg)) - known)
    if bad:
        raise ConfigError(f"unknown pipeline config key(s) {bad}; valid: {sorted(known)}, or a stage's "
                          "parameter as STAGE__NAME (e.g. clusterer__min_cluster_size)", bad[0])
    stages = {}
    for kind in STAGES:
        spec = cfg.get(kind, None if kind == "outliers" else "auto")
        params = {}
        if isinstance(spec, dict):
            extra = sorted(set(spec) - {"name", "params"})
            if extra or "name" not in spec:
                raise ConfigError(f"{kind}: expected {{name: ..., params: {{...}}}}, got keys {sorted(spec)}", kind)
            spec, params = spec["name"], spec.get("params") or {}
            if not isinstance(params, dict):
                raise ConfigError(f"{kind}: params must be a mapping, got {params!r}", kind)
        elif spec is not None and not isinstance(spec, str):
            raise ConfigError(f"{kind}: expected a stage name or {{name, params}}, got {spec!r}", kind)
        if kind == "reducer" and params and isinstance(spec, str) and spec.strip().lower() == "auto":
            raise ParameterError(_auto_reducer_hint(params), kind)
        stages[kind] = registry.build(kind, spec, params)
    rest = {k: PIPELINE_PARAMS[k].check(cfg[k], k) for k in PIPELINE_PARAMS if k in cfg}
    pipe = Pipeline(**stages, **rest)
    pipe.check_params()
    return pipe


def describe(est) -> dict | None:
    """JSON-able description of an estimator and its nested stages (class + params), with the
    stages an ``"auto"`` resolved to after fitting."""
    from sklearn.base import BaseEstimator

    if not isinstance(est, BaseEstimator):
        return {"class": type(est).__name__} if est is not None else None
    params = {}
    for k, v in est.get_params(deep=False).items():
        params[k] = describe(v) if isinstance(v, BaseEstimator) else (
            v if isinstance(v, str | int | float | bool | type(None) | list | dict) else repr(v))
    for attr in ("reducer_", "outliers_", "clusterer_"):
        if hasattr(est, attr):
            params[attr] = describe(getattr(est, attr))
    return {"class": type(est).__name__, "params": params}
