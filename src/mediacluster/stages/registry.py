"""The stage registry: every stage class registered once, with the parameters it accepts.

Pipeline configs, command-line flags (``--reducer umap --reducer-param n_neighbors=30``), tuning
search spaces, ``run.json`` and saved models all name stages and parameters through this table,
with scikit-learn's nested naming everywhere: ``reducer__n_neighbors``,
``outliers__contamination``, ``clusterer__min_cluster_size``.

Each parameter has a :class:`Param`: what values the stage accepts (checked before any work,
with a message naming the parameter) and, for tunable parameters, a default search range
(``tune``) used when a pipeline is tuned without an explicit space. Only registered names can be
built from a config or a saved model, so neither can import arbitrary code.

Adding a stage: write the estimator in the module of its kind (``stages/reduce.py``,
``stages/outliers.py``, ``stages/cluster.py``) and decorate it::

    @register("clusterer", "my_method", params={"k": Int(1, tune={"int": [2, 50]})})
    class MyClusterer(BaseEstimator, ClusterMixin): ...
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

from ..errors import ParameterError

KINDS = ("reducer", "outliers", "clusterer")


@dataclass(frozen=True)
class Param:
    """What one parameter accepts. ``kind``: int | float | bool | choice | str.

    ``low`` / ``high`` are inclusive bounds unless ``low_open``; ``none_ok`` allows None;
    ``extra`` lists special values accepted as they are (e.g. ``"auto"``); ``tune`` is the
    default search range in the space syntax (``{"int": [5, 200], "log": True}``); ``scale``
    marks a neighbourhood size (a count of items) that a tuner scales with the share of the data
    when it fits on a subsample."""

    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple = ()
    none_ok: bool = False
    extra: tuple = ()
    low_open: bool = False
    tune: dict | None = None
    scale: bool = False
    doc: str = ""

    def check(self, value, name: str):
        """``value`` checked (ints given for a float accepted); raises ParameterError naming it."""
        if value is None:
            if self.none_ok:
                return None
            raise ParameterError(f"{name}: None is not allowed", name)
        if isinstance(value, str) and value in self.extra:
            return value
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            raise ParameterError(f"{name}: expected true or false, got {value!r}", name)
        if self.kind == "choice":
            if value in self.choices:
                return value
            raise ParameterError(f"{name}: {value!r} is not one of {list(self.choices)}", name)
        if self.kind == "str":
            if isinstance(value, str):
                return value
            raise ParameterError(f"{name}: expected a string, got {value!r}", name)
        # numbers.Real: numpy integers too (a grid from np.arange, a level from np.argmax)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or (
                hasattr(value, "dtype") and value.dtype.kind not in "iuf"):
            want = "an integer" if self.kind == "int" else "a number"
            extra = f" or one of {list(self.extra)}" if self.extra else ""
            raise ParameterError(f"{name}: expected {want}{extra}, got {value!r}", name)
        if self.kind == "int" and not float(value).is_integer():
            raise ParameterError(f"{name}: expected an integer, got {value!r}", name)
        if not math.isfinite(float(value)):
            raise ParameterError(f"{name}: must be finite, got {value!r}", name)
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            op = ">" if self.low_open else ">="
            raise ParameterError(f"{name}: must be {op} {self.low}, got {value!r}", name)
        if self.high is not None and value > self.high:
            raise ParameterError(f"{name}: must be <= {self.high}, got {value!r}", name)
        return int(value) if self.kind == "int" else value


def Int(low=None, high=None, **kw) -> Param:  # noqa: N802 - reads like a type in the tables
    return Param("int", low, high, **kw)


def Float(low=None, high=None, **kw) -> Param:  # noqa: N802
    return Param("float", low, high, **kw)


def Choice(*choices, **kw) -> Param:  # noqa: N802
    return Param("choice", choices=tuple(choices), **kw)


def Bool(**kw) -> Param:  # noqa: N802
    return Param("bool", **kw)


SEED = Int(0, 2**32 - 1, none_ok=True, doc="random seed (None: not reproducible; numpy takes 0 .. 2**32 - 1)")


@dataclass(frozen=True)
class StageInfo:
    kind: str
    name: str
    cls: type
    aliases: tuple = ()
    params: dict = field(default_factory=dict)

    @property
    def summary(self) -> str:
        doc = (self.cls.__doc__ or "").strip().splitlines()
        return doc[0] if doc else self.name

    def tunable(self) -> dict[str, dict]:
        return {k: p.tune for k, p in self.params.items() if p.tune is not None}


_REGISTRY: dict[str, dict[str, StageInfo]] = {k: {} for k in KINDS}
_ALIASES: dict[str, dict[str, str]] = {k: {} for k in KINDS}


def _key(name: str) -> str:
    return str(name).strip().lower().replace("-", "_")


def register(kind: str, name: str, aliases: tuple = (), params: dict | None = None):
    """Class decorator: register a stage under ``kind`` / ``name`` with its parameter table."""
    if kind not in KINDS:
        raise ValueError(f"unknown stage kind {kind!r}")

    def deco(cls):
        info = StageInfo(kind, name, cls, tuple(aliases), dict(params or {}))
        sig = set(cls().get_params(deep=False))
        if set(info.params) != sig:
            raise TypeError(f"{cls.__name__}: parameter table {sorted(info.params)} does not match "
                            f"its constructor {sorted(sig)}")
        _REGISTRY[kind][name] = info
        for a in (name, *aliases):
            _ALIASES[kind][_key(a)] = name
        cls._stage_info = info
        return cls

    return deco


def names(kind: str) -> list[str]:
    return sorted(_REGISTRY[kind])


def get(kind: str, name: str) -> StageInfo:
    """The registered stage ``name`` of ``kind`` (aliases and ``-``/``_`` spellings accepted)."""
    if kind not in KINDS:
        raise ParameterError(f"unknown stage kind {kind!r}; kinds: {', '.join(KINDS)}", kind)
    real = _ALIASES[kind].get(_key(name))
    if real is None:
        raise ParameterError(f"unknown {kind} {name!r}; choose one of {', '.join(names(kind))}", kind)
    return _REGISTRY[kind][real]


def of(stage) -> StageInfo | None:
    """The registry entry of a stage instance (None for an unregistered estimator)."""
    info = getattr(type(stage), "_stage_info", None)
    return info if info is not None and info.cls is type(stage) else None


def by_class(kind: str, class_name: str) -> StageInfo:
    for info in _REGISTRY[kind].values():
        if info.cls.__name__ == class_name:
            return info
    raise KeyError(class_name)


def check_params(stage, prefix: str | None = None) -> None:
    """Check every constructor parameter of a registered stage against its table.

    ``prefix`` (``"reducer"``) makes messages name ``reducer__n_neighbors``."""
    info = of(stage)
    if info is None:
        return
    for k, v in stage.get_params(deep=False).items():
        info.params[k].check(v, f"{prefix}__{k}" if prefix else f"{type(stage).__name__}.{k}")
    extra = getattr(stage, "_check_params", None)
    if extra is not None:
        extra(prefix)


def build(kind: str, spec, params: dict | None = None):
    """A stage from a registry name (or an estimator, returned with ``params`` applied).

    ``None`` -> None (no stage); ``"none"`` -> the kind's do-nothing stage; ``"auto"`` stays ``"auto"`` (the pipeline resolves it at fit
    time). Unknown names or parameters are refused naming them; values are checked."""
    from sklearn.base import clone

    params = dict(params or {})
    if spec is None:
        if params:
            raise ParameterError(f"{kind} 'none' takes no parameters, got {sorted(params)}", kind)
        return None
    if isinstance(spec, str) and _key(spec) == "auto":
        if params:
            raise ParameterError(f"{kind} 'auto' takes no parameters; name the stage to set "
                                 f"{', '.join(f'{kind}__{p}' for p in sorted(params))}", kind)
        return "auto"
    if isinstance(spec, str):
        info = get(kind, spec)
        bad = sorted(set(params) - set(info.params))
        if bad:
            raise ParameterError(f"{kind} {info.name!r} has no parameter(s) {bad}; valid: "
                                 f"{sorted(info.params)}", f"{kind}__{bad[0]}")
        checked = {k: info.params[k].check(v, f"{kind}__{k}") for k, v in params.items()}
        stage = info.cls(**checked)
        check_params(stage, kind)
        return stage
    if params:
        spec = clone(spec).set_params(**params)
    check_params(spec, kind)
    return spec
