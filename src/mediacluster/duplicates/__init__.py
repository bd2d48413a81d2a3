"""Reposts and near-duplicates: find them and group them.

Three kinds of evidence, one grouping (see ``finder`` for the rule and ``grouping`` for the
guard against chaining):

>>> from mediacluster.duplicates import DuplicateFinder
>>> finder = DuplicateFinder().fit(paths, vectors)           # doctest: +SKIP
>>> finder.labels_, finder.duplicate_of_                     # doctest: +SKIP
>>> finder.table()                                           # doctest: +SKIP
>>> index = finder.index(); index.save("dups")               # doctest: +SKIP
>>> DuplicateIndex.load("dups").query(path="new.jpg", vector=v)  # doctest: +SKIP
near-duplicate of photos/a.jpg (perceptual, distance 2 bits)

Modules: ``hashing`` (content hash, perceptual hashes, thumbnails), ``search`` (faiss candidate
search), ``verify`` (photometric and keypoint checks), ``fingerprint`` (the audio check:
spectrograms aligned in time; ``DuplicateFinder(media="audio")``), ``grouping`` (components with a diameter
guard), ``finder`` (the estimator), ``index`` (new-item queries, save/load), ``reposts``
(simulated reposts for benchmarks and tests).
"""

from .finder import KINDS, DuplicateFinder
from .hashing import HASHES, Signatures, compute_signatures
from .index import DuplicateIndex, DuplicateMatch

__all__ = ["DuplicateFinder", "DuplicateIndex", "DuplicateMatch", "Signatures", "compute_signatures",
           "KINDS", "HASHES"]
