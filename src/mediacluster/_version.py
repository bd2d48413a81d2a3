__version__ = "0.1.0"

# Bumped whenever a saved model's layout changes incompatibly; see mediacluster.persist.
MODEL_FORMAT_VERSION = 1
