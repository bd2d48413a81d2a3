"""Hyperparameter tuning (Optuna) over reduce -> outliers -> cluster, with shared work reused.

>>> from mediacluster.tune import tune
>>> res = tune(vectors, out="study", sampler="tpe", n_trials=50)     # doctest: +SKIP
>>> res.best_params, res.pipeline.labels_                             # doctest: +SKIP

See ``study.tune`` for the options, ``space`` for search spaces and presets, ``objectives`` for
what is maximised, ``workspace`` for the work shared between trials.
"""

from .objectives import DEFAULT_OBJECTIVE, OBJECTIVES
from .space import PRESETS, SearchSpace, SpaceError, load_space, preset
from .study import SAMPLERS, TuneResult, recover_interrupted, tune

__all__ = ["tune", "TuneResult", "SearchSpace", "SpaceError", "load_space", "preset", "PRESETS",
           "SAMPLERS", "OBJECTIVES", "DEFAULT_OBJECTIVE", "recover_interrupted"]
