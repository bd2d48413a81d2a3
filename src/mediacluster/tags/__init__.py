"""Tags: train a tagger on embeddings, suggest tags for new items at a target precision or stay
silent, map fine labels to a tag vocabulary through WordNet, evaluate.

>>> from mediacluster.tags import TagClassifier, Tagger
>>> clf = TagClassifier(precision=0.9).fit(vectors, tags)            # doctest: +SKIP
>>> Tagger(clf, encoder="efficientnet-lite0").suggest(["a.jpg"])      # doctest: +SKIP
"""

from __future__ import annotations

from .model import TagClassifier
from .tagger import Tagger

__all__ = ["TagClassifier", "Tagger", "train_tagger"]


def train_tagger(examples, **params) -> Tagger:
    """Fit a ``TagClassifier`` on ``mediacluster.tags.data.Examples`` and wrap it as a ``Tagger``."""
    clf = TagClassifier(**params).fit(examples.vectors, examples.labels)
    return Tagger(clf, encoder=examples.encoder, encoder_id=examples.encoder_id,
                  info={"source": examples.source, "counts": examples.counts(), "n": len(examples)})
