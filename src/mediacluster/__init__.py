"""mediacluster: embed, reduce, remove outliers, cluster, tune, evaluate, name and predict.

>>> from mediacluster import Pipeline, RunDir, load
>>> pipe = Pipeline().fit(vectors)          # doctest: +SKIP
>>> pipe.labels_                            # doctest: +SKIP
>>> run = RunDir.open("runs/demo")          # doctest: +SKIP

Attributes load on first use, so ``import mediacluster`` stays light (torch, umap and faiss
are imported only by what needs them).
"""

from ._version import __version__

__all__ = ["__version__", "Pipeline", "load", "RunDir", "cluster_folder", "errors"]

_LAZY = {"Pipeline": ("pipeline", "Pipeline"), "load": ("pipeline", "load"),
         "RunDir": ("rundir", "RunDir"), "cluster_folder": ("workflow", "cluster_folder")}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(f"{__name__}.{mod}"), attr)
    if name == "errors":
        import importlib

        return importlib.import_module(f"{__name__}.errors")
    raise AttributeError(name)
