"""Names from a CLIP-like encoder: zero-shot classification of cluster centres against a vocabulary.

Each vocabulary entry is embedded through several prompt templates; the normalised text vectors
are averaged (prompt ensembling, as in the CLIP paper) and re-normalised. The templates and the
default vocabulary follow the encoder's media (:func:`templates_for`, :func:`default_vocabulary`):
an image encoder (CLIP) reads "a photo of {}.", "a meme about {}.", ... against the shipped
social-media topics; an audio encoder (CLAP) reads "this is a sound of {}." (the caption form
LAION-CLAP's zero-shot evaluation uses), "the sound of {}.", ... against the shipped everyday
sound topics (``data/sound_topics.txt``): a sound named "a photo of dogs" or "memes" would be a
name from the wrong modality. A cluster's score for a topic is the mean over its members of the cosine
similarity between the (normalised) image embedding and the topic vector; the best topic names
the cluster and the next ones are kept as alternatives.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from ..data import l2_normalize
from ..errors import InputError

IMAGE_TEMPLATES = [
    "a photo of {}.",
    "a picture of {}.",
    "an image of {}.",
    "a social media post about {}.",
    "a close-up photo of {}.",
    "a low resolution photo of {}.",
    "a meme about {}.",
    "an illustration of {}.",
]
TEMPLATES = IMAGE_TEMPLATES  # the name earlier releases exported
AUDIO_TEMPLATES = [
    "this is a sound of {}.",
    "the sound of {}.",
    "a recording of {}.",
    "an audio clip of {}.",
    "{} can be heard.",
]
_VOCABULARY_FILE = {"image": "social_topics.txt", "audio": "sound_topics.txt"}


def media_of(encoder) -> str:
    """``"audio"`` for an audio encoder (CLAP), ``"image"`` otherwise."""
    return "audio" if getattr(encoder, "media", "image") == "audio" else "image"


def templates_for(encoder) -> list[str]:
    """The prompt templates for ``encoder``'s media."""
    return AUDIO_TEMPLATES if media_of(encoder) == "audio" else IMAGE_TEMPLATES


def default_vocabulary(media: str = "image") -> list[str]:
    """The shipped topics for ``media`` (``"image"``: social-media topics; ``"audio"``: sounds)."""
    name = _VOCABULARY_FILE.get(media)
    if name is None:
        raise ValueError(f"media must be one of {sorted(_VOCABULARY_FILE)}, got {media!r}")
    text = resources.files("mediacluster.naming").joinpath("data", name).read_text("utf-8")
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


def topic_vectors(encoder, vocabulary: list[str], templates: list[str] | None = None) -> np.ndarray:
    """(n_topics, d) prompt-ensembled, normalised text vectors (``templates``: those of the
    encoder's media unless given)."""
    templates = templates_for(encoder) if templates is None else templates
    prompts = [t.format(v) for v in vocabulary for t in templates]
    T = _unit(encoder.encode_text(prompts)).reshape(len(vocabulary), len(templates), -1)
    return _unit(T.mean(axis=1))


def name_clusters_zeroshot(vectors: np.ndarray, labels: np.ndarray, encoder, vocabulary: list[str] | None = None,
                           templates: list[str] | None = None, k: int = 4, with_support: bool = False):
    """Cluster id -> up to ``k`` ranked topics ``{"name", "score", "share"}``.

    ``score`` is the mean cosine similarity; ``share`` the fraction of members whose own best
    topic is this one (a readable confidence). ``with_support``: also return cluster id -> how
    sure the name is (:func:`support.zeroshot_support`: the share against the whole
    collection's share and against random groups of the same size).
    """
    vocab = list(vocabulary) if vocabulary is not None else default_vocabulary(media_of(encoder))
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
