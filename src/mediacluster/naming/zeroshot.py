"""Names from a CLIP-like encoder: zero-shot classification of cluster centres against a vocabulary.

Each vocabulary entry is embedded through several prompt templates ("a photo of {}.", "a meme
about {}.", ...); the normalised text vectors are averaged (prompt ensembling, as in the CLIP
paper) and re-normalised. A cluster's score for a topic is the mean over its members of the cosine
similarity between the (normalised) image embedding and the topic vector; the best topic names
the cluster and the next ones are kept as alternatives.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from ..data import l2_normalize
from ..errors import InputError

TEMPLATES = [
    "a photo of {}.",
    "a picture of {}.",
    "an image of {}.",
    "a social media post about {}.",
    "a close-up photo of {}.",
    "a low resolution photo of {}.",
    "a meme about {}.",
    "an illustration of {}.",
]


def default_vocabulary() -> list[str]:
    text = resources.files("mediacluster.naming").joinpath("data", "social_topics.txt").read_text("utf-8")
    return parse_vocabulary(text)


def parse_vocabulary(text: str) -> list[str]:
    out, seen = [], set()
    for line in text.splitlines():
        w = line.split("#", 1)[0].strip()
        if w and w.lower() not in seen:
            seen.add(w.lower())
            out.append(w)
    return out


def load_vocabulary(path: str | Path | None) -> list[str]:
    """Vocabulary from a text file (one topic per line, '#' comments), or the default list."""
    if path is None:
        return default_vocabulary()
    try:
        vocab = parse_vocabulary(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:  # a typo in --vocabulary: said, not a naming failure
        raise InputError(f"vocabulary file {path} cannot be read: {getattr(e, 'strerror', None) or e}") from None
    if not vocab:
        raise InputError(f"vocabulary file {path} has no entries")
    return vocab


_unit = l2_normalize


def topic_vectors(encoder, vocabulary: list[str], templates: list[str] = TEMPLATES) -> np.ndarray:
    """(n_topics, d) prompt-ensembled, normalised text vectors."""
    prompts = [t.format(v) for v in vocabulary for t in templates]
    T = _unit(encoder.encode_text(prompts)).reshape(len(vocabulary), len(templates), -1)
    return _unit(T.mean(axis=1))


def name_clusters_zeroshot(vectors: np.ndarray, labels: np.ndarray, encoder, vocabulary: list[str] | None = None,
                           templates: list[str] = TEMPLATES, k: int = 4, with_support: bool = False):
    """Cluster id -> up to ``k`` ranked topics ``{"name", "score", "share"}``.

    ``score`` is the mean cosine similarity; ``share`` the fraction of members whose own best
    topic is this one (a readable confidence). ``with_support``: also return cluster id -> how
    sure the name is (:func:`support.zeroshot_support`: the share against the whole
    collection's share and against random groups of the same size).
    """
    vocab = list(vocabulary) if vocabulary is not None else default_vocabulary()
    T = topic_vectors(encoder, vocab, templates)
    X = _unit(vectors)
    labels = np.asarray(labels)
    out: dict[int, list[dict]] = {}
    best = {}
    for c in sorted(set(labels[labels >= 0].tolist())):
        idx = np.flatnonzero(labels == c)
        S = X[idx] @ T.T  # (n_members, n_topics)
        mean = S.mean(axis=0)
        votes = np.bincount(S.argmax(axis=1), minlength=len(vocab)) / len(idx)
        order = np.argsort(-mean)[:k]
        best[int(c)] = int(order[0])
        out[int(c)] = [{"name": vocab[j], "score": round(float(mean[j]), 4),
                        "share": round(float(votes[j]), 4)} for j in order]
    if not with_support:
        return out
    from .support import zeroshot_support

    S_all = X @ T.T  # every item's similarities (n x topics; the vocabulary is small)
    sup = zeroshot_support(S_all.argmax(axis=1), labels, best, len(vocab),
                           group_name=lambda g: int(np.argmax(S_all[g].mean(axis=0))))
    return out, sup
