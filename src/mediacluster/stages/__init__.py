"""The stages of the flow and their registry: reduce -> outliers -> cluster.

``stages.build("reducer", "umap", {"n_neighbors": 30})`` makes a stage from its registered name;
``stages.registry`` holds every stage class with the parameters it accepts (see there). Stages
are scikit-learn estimators that take and return plain arrays and know nothing of files, the
command line or each other.
"""

from . import cluster, evoc, hierarchy, outliers, reduce  # noqa: F401 - importing registers the stages
from .registry import KINDS, Param, StageInfo, build, check_params, get, names

__all__ = ["KINDS", "Param", "StageInfo", "build", "check_params", "get", "names"]
