"""Version numbers: the package, the formats it writes, and the libraries a result depends on."""

import platform
from importlib import metadata

__version__ = "0.1.0"

# Bumped whenever a saved model's layout changes incompatibly; see mediacluster.persist.
MODEL_FORMAT_VERSION = 1

VERSIONED_PACKAGES = [
    "numpy", "scipy", "scikit-learn", "umap-learn", "pynndescent", "hdbscan", "fast_hdbscan",
    "numba", "torch", "onnxruntime", "optuna", "pillow", "transformers", "faiss-cpu",
]


def versions() -> dict[str, str]:
    """Versions of mediacluster, Python and every library a result depends on (for run.json)."""
    out = {"mediacluster": __version__, "python": platform.python_version()}
    for pkg in VERSIONED_PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out
