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
    ``name`` / ``alternatives`` keys of ``clusters.json``.

    The encoder is taken from ``run.json``: a CLIP run (``has_text``) is named zero-shot (the
    text tower is loaded), otherwise the ImageNet probabilities are lifted through WordNet.
    """
    run = run if isinstance(run, RunDir) else RunDir.open(run)
    labels = run.read_assignments(["cluster"])["cluster"].to_numpy()
    vocab = None
    if vocabulary is not None:
        from .zeroshot import load_vocabulary

        vocab = load_vocabulary(vocabulary)
    named = name_labels(run, [labels], encoder=encoder, vocabulary=vocab)[0]
    if write:
        with run.writing("naming"):
            run.write_names(named, method=named[0]["method"] if named else None)
            run.write_clusters(merge_names(run.read_clusters(), named))
    return named


def name_labels(run: str | Path | RunDir, labellings: list, encoder=None,
                vocabulary: list[str] | None = None) -> list[list[dict]]:
    """The automatic naming rule of :func:`name_run` applied to other labellings of the run's
    items (e.g. each level of a hierarchy, named by the report): one :func:`name_clusters`
    result per labelling, nothing written. The run's probabilities, vectors and encoder are read
    once for all of them."""
    run = run if isinstance(run, RunDir) else RunDir.open(run)
    probs = run.read_extra("imagenet_probs", mmap=True)
    if encoder is None and probs is None:
        encoder = encoder_for_names((run.info.get("encoder") or {}).get("name"))
    vectors = run.read_embeddings().vectors if getattr(encoder, "has_text", False) else None
    item_top = None
    if probs is not None and not getattr(encoder, "has_text", False):
        # each item's top classes once, read in row blocks (a memory map: a million items'
        # probabilities are never all in memory); each labelling's sums are then one bincount
        from .imagenet import TOP_K, top_classes

        k = int(min(TOP_K, probs.shape[1]))
        idx, w = np.empty((len(probs), k), np.int16), np.empty((len(probs), k), np.float32)
        for s in range(0, len(probs), 65_536):
            idx[s:s + 65_536], w[s:s + 65_536] = top_classes(np.asarray(probs[s:s + 65_536], np.float32), k)
        item_top = (idx, w)
    return [name_clusters(vectors, np.asarray(lab), imagenet_probs=probs, encoder=encoder,
                          vocabulary=vocabulary, item_top=item_top) for lab in labellings]


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
