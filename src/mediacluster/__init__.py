"""mediacluster: embed, reduce, remove outliers, cluster, tune, evaluate, name and predict.

>>> from mediacluster import Pipeline
>>> pipe = Pipeline().fit(vectors)          # doctest: +SKIP
>>> pipe.labels_                            # doctest: +SKIP
"""

from ._version import __version__

__all__ = ["__version__", "Pipeline", "load"]


def __getattr__(name):  # keep `import mediacluster` light: torch/umap load on first use
    if name == "Pipeline":
        from .pipeline import Pipeline

        return Pipeline
    if name == "load":
        from .persist import load

        return load
    raise AttributeError(name)
