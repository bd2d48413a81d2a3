"""Automatic cluster names: pick the method from what the run holds (a CLIP text tower, or
ImageNet probabilities), make the names unique and readable, keep three alternatives.

``name_clusters`` works on arrays (the ``cluster`` job calls it before publishing a run);
``name_run`` re-names a published run and writes ``names.json`` and the ``name`` keys of
``clusters.json`` through its ``RunDir``. Hand-given names (``names.yaml``) are applied on top by
:func:`mediacluster.naming.load_names`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ..rundir import RunDir


def unique_names(candidates: dict[int, list[dict]], extra: dict[int, list[str]] | None = None,
                 qualify=None) -> dict[int, str]:
    """First-choice names, with duplicates disambiguated.

    Clusters sharing a name keep it and get a distinguishing qualifier: the first of their own
    alternatives that the other clusters with that name don't have ("dog (terrier)", "dog
    (toy dog)"); else a numeral ("dog 2").
    """
    first = {c: (cands[0]["name"] if cands else f"cluster {c}") for c, cands in candidates.items()}
    counts = Counter(first.values())
    out = dict(first)
    for nm, n in counts.items():
        if n < 2:
            continue
        group = [c for c in candidates if first[c] == nm]
        used: set[str] = set()
        if qualify is not None:  # method-specific contrast (ImageNet: concept enriched in this cluster)
            for c, q in qualify(group, candidates[group[0]][0] if candidates[group[0]] else None).items():
                if q != nm and q not in used:
                    used.add(q)
                    out[c] = f"{nm} ({q})"
        for c in group:
            if out[c] != nm:
                continue
            alts = [a["name"] for a in candidates[c][1:]] + list((extra or {}).get(c, []))
            others = {a["name"] for g in group if g != c for a in candidates[g][:2]}
            q = next((a for a in alts if a != nm and a not in others and a not in used), None)
            if q is not None:
                used.add(q)
                out[c] = f"{nm} ({q})"
    # still duplicated (no qualifier found): number them
    counts = Counter(out.values())
    seen: Counter = Counter()
    for c in sorted(out):
        if counts[out[c]] > 1:
            seen[out[c]] += 1
            if seen[out[c]] > 1:
                out[c] = f"{out[c]} {seen[out[c]]}"
    return out


def name_clusters(vectors: np.ndarray | None, labels: np.ndarray, imagenet_probs: np.ndarray | None = None,
                  encoder=None, vocabulary: list[str] | None = None, item_top=None) -> list[dict]:
    """Names for every cluster id >= 0 of ``labels``.

    With a text-capable ``encoder`` (CLIP) and ``vectors`` from it: zero-shot against the
    vocabulary. Otherwise with ``imagenet_probs``: WordNet lifting. Returns a list of
    ``{"cluster", "name", "alternatives": [3 names], "method", "candidates": [...]}``.
    """
    labels = np.asarray(labels)
    if encoder is not None and getattr(encoder, "has_text", False) and vectors is not None:
        from .zeroshot import name_clusters_zeroshot

        cands = name_clusters_zeroshot(vectors, labels, encoder, vocabulary)
        method = "clip-zeroshot"
        qualify = None
    elif imagenet_probs is not None:
        from .imagenet import cluster_masses, contrast_qualifiers, name_clusters_imagenet

        masses = cluster_masses(imagenet_probs, labels, item_top=item_top)
        cands = name_clusters_imagenet(imagenet_probs, labels, item_top=item_top, masses=masses)
        method = "imagenet-wordnet"

        def qualify(group, top):
            return contrast_qualifiers(masses, group, base=(top or {}).get("synset"))
    else:
        ids = sorted(set(labels[labels >= 0].tolist()))
        cands = {int(c): [] for c in ids}
        method = "none"
        qualify = None
    names = unique_names(cands, qualify=qualify)
    out = []
    for c in sorted(cands):
        alts = [a["name"] for a in cands[c] if a["name"] != names[c]][:3]
        out.append({"cluster": int(c), "name": names[c], "alternatives": alts, "method": method,
                    "candidates": cands[c]})
    return out


def encoder_for_names(spec: str | None):
    """The encoder whose text tower names a run's clusters (CLIP runs), else None."""
    if spec and spec.startswith("clip"):
        from ..encoders import get_encoder

        return get_encoder(spec)
    return None


def name_run(run: str | Path | RunDir, vocabulary: str | Path | None = None, encoder=None,
             write: bool = True) -> list[dict]:
    """Name the clusters of a published run and (by default) write ``names.json`` and the
    ``name`` / ``alternatives`` keys of ``clusters.json``; a run with levels also gets every
    level's names (``level_names.json``, see :func:`name_levels`).

    The encoder is taken from ``run.json``: a CLIP run (``has_text``) is named zero-shot (the
    text tower is loaded), otherwise the ImageNet probabilities are lifted through WordNet.
    """
    run = run if isinstance(run, RunDir) else RunDir.open(run)
    labels = run.read_assignments(["cluster"])["cluster"].to_numpy()
    vocab = None
    if vocabulary is not None:
        from .zeroshot import load_vocabulary

        vocab = load_vocabulary(vocabulary)
    hier = run.read_hierarchy() or {}
    levels = hier.get("levels")
    if levels is not None and (np.ndim(levels) != 2 or np.shape(levels)[1] != len(labels)):
        levels = None
    # a run with levels: every level is named too, from the items its flat answer clusters
    # (the level in use is that answer: named once)
    in_use = int(hier["level"]) if levels is not None and "level" in hier else None
    todo = [k for k in range(len(levels)) if k != in_use] if levels is not None else []
    results = name_labels(run, [labels] + [np.where(labels >= 0, levels[k], -1) for k in todo],
                          encoder=encoder, vocabulary=vocab)
    named = results[0]
    by_level = dict(zip(todo, results[1:]))
    if levels is not None and in_use is not None and 0 <= in_use < len(levels):
        by_level = dict(sorted({**by_level, in_use: named}.items()))
    if write:
        method = named[0]["method"] if named else None
        with run.writing("naming"):
            run.write_names(named, method=method)
            if by_level:
                run.write_level_names(by_level, method=method)
            run.write_clusters(merge_names(run.read_clusters(), named))
    return named


def name_labels(run: str | Path | RunDir, labellings: list, encoder=None,
                vocabulary: list[str] | None = None) -> list[list[dict]]:
    """The automatic naming rule of :func:`name_run` applied to other labellings of the run's
    items (e.g. each level of a hierarchy of an older run without ``level_names.json``): one
    :func:`name_clusters` result per labelling, nothing written. The run's probabilities,
    vectors and encoder are read once for all of them."""
    run = run if isinstance(run, RunDir) else RunDir.open(run)
    probs = run.read_extra("imagenet_probs", mmap=True)
    if encoder is None and probs is None:
        encoder = encoder_for_names((run.info.get("encoder") or {}).get("name"))
    vectors = run.read_embeddings().vectors if getattr(encoder, "has_text", False) else None
    return name_labellings(vectors, labellings, imagenet_probs=probs, encoder=encoder, vocabulary=vocabulary)


def item_top(probs, encoder=None):
    """Each item's top ImageNet classes (``imagenet.top_classes``), computed once for naming
    several labellings of the same items (each labelling's sums are then one bincount); None
    where the names come from a text tower or there are no probabilities. Read in row blocks:
    through a memory map a million items' probabilities are never all in memory."""
    if probs is None or getattr(encoder, "has_text", False):
        return None
    from .imagenet import TOP_K, top_classes

    k = int(min(TOP_K, probs.shape[1]))
    idx, w = np.empty((len(probs), k), np.int16), np.empty((len(probs), k), np.float32)
    for s in range(0, len(probs), 65_536):
        idx[s:s + 65_536], w[s:s + 65_536] = top_classes(np.asarray(probs[s:s + 65_536], np.float32), k)
    return idx, w


def name_labellings(vectors, labellings: list, imagenet_probs=None, encoder=None,
                    vocabulary: list[str] | None = None) -> list[list[dict]]:
    """:func:`name_clusters` of several labellings of the same items (one result each), the
    per-item work done once."""
    top = item_top(imagenet_probs, encoder) if len(labellings) > 1 else None
    return [name_clusters(vectors, np.asarray(lab), imagenet_probs=imagenet_probs, encoder=encoder,
                          vocabulary=vocabulary, item_top=top) for lab in labellings]


def name_levels(vectors, levels, clustered=None, imagenet_probs=None, encoder=None,
                vocabulary: list[str] | None = None, named: tuple[int, list[dict]] | None = None
                ) -> dict[int, list[dict]]:
    """Names for every level of a hierarchy (``levels`` (n_levels, n), row 0 coarsest) by the
    one automatic rule (:func:`name_clusters`), as the flat answer is named: level ``k``'s
    clusters are named from the items the fit clustered (``clustered``: a mask; the others,
    noise and outliers, and with ``--dedup`` all but one item per duplicate group, count for
    no level), so a level's names are the names a fit with ``--level k`` would give.
    ``named``: ``(level, names)`` of a level named already (the flat answer): reused as is.
    Returns level -> :func:`name_clusters` result."""
    levels = np.asarray(levels)
    keep = np.ones(levels.shape[1], bool) if clustered is None else np.asarray(clustered, bool)
    todo = [k for k in range(len(levels)) if named is None or k != named[0]]
    out = {} if named is None else {int(named[0]): list(named[1])}
    labellings = [np.where(keep, levels[k], -1) for k in todo]
    out.update(zip(todo, name_labellings(vectors, labellings, imagenet_probs=imagenet_probs,
                                         encoder=encoder, vocabulary=vocabulary)))
    return dict(sorted(out.items()))


def level_names_map(by_level: dict[int, list[dict]]) -> dict[str, dict[str, str]]:
    """``{level: {cluster id: name}}`` with text keys (JSON: a saved model's ``names_by_level``)."""
    return {str(k): {str(e["cluster"]): e["name"] for e in named if e.get("name")}
            for k, named in by_level.items()}


def merge_names(clusters: list[dict], named: list[dict]) -> list[dict]:
    """``clusters.json`` entries with the ``name`` / ``alternatives`` of ``named``."""
    by_id = {e["cluster"]: e for e in named}
    out = []
    for e in clusters:
        e = dict(e)
        n = by_id.get(int(e["cluster"]))
        if n:
            e["name"] = n["name"]
            e["alternatives"] = n["alternatives"]
        out.append(e)
    return out
