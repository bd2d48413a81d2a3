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
    ``{"cluster", "name", "alternatives": [3 names], "method", "candidates": [...]}`` and, where
    the name could be measured, how sure it is (:mod:`.support`: ``name_support``,
    ``name_sure``, ``name_why``).
    """
    return _entries(*_candidates(vectors, labels, imagenet_probs, encoder, vocabulary, item_top))


def _candidates(vectors, labels, imagenet_probs=None, encoder=None, vocabulary=None, item_top=None,
                measure=None):
    """``(cluster id -> ranked candidates, method, qualify, support)`` of :func:`name_clusters`;
    ``support(cands)`` -> cluster id -> :func:`support.record` of the first candidates (called
    after nesting may have reordered them). ``measure``: the collection's
    :class:`support.ImagenetSupport`, shared by several labellings."""
    labels = np.asarray(labels)
    if encoder is not None and getattr(encoder, "has_text", False) and vectors is not None:
        from .zeroshot import name_clusters_zeroshot

        cands, sup = name_clusters_zeroshot(vectors, labels, encoder, vocabulary, with_support=True)
        return cands, "clip-zeroshot", None, lambda _cands: sup
    if imagenet_probs is not None:
        from .imagenet import cluster_masses, contrast_qualifiers, name_clusters_imagenet
        from .support import ImagenetSupport

        masses = cluster_masses(imagenet_probs, labels, item_top=item_top)
        cands = name_clusters_imagenet(imagenet_probs, labels, item_top=item_top, masses=masses)
        measure = measure if measure is not None else ImagenetSupport(imagenet_probs, item_top)

        def qualify(group, top):
            return contrast_qualifiers(masses, group, base=(top or {}).get("synset"))
        return cands, "imagenet-wordnet", qualify, lambda cs: measure.of(cs, labels)
    ids = sorted(set(labels[labels >= 0].tolist()))
    return {int(c): [] for c in ids}, "none", None, None


def _entries(cands: dict[int, list[dict]], method: str, qualify, support=None) -> list[dict]:
    """:func:`name_clusters`'s result from ranked candidates: the first made unique, with how
    sure each is where ``support`` measures it."""
    names = unique_names(cands, qualify=qualify)
    sure = support(cands) if support is not None else {}
    out = []
    for c in sorted(cands):
        alts = [a["name"] for a in cands[c] if a["name"] != names[c]][:3]
        out.append({"cluster": int(c), "name": names[c], "alternatives": alts, "method": method,
                    "candidates": cands[c], **sure.get(c, {})})
    return out


def nest_candidates(labellings: list, cands: list[dict[int, list[dict]]]) -> None:
    """Reorder each level's ranked candidates (in place) so that no cluster's first candidate
    is a strict WordNet hypernym of its parent's (a child named more generally than its
    parent), down the hierarchy ``labellings`` (coarse to fine; a child's parent is the cluster
    of the next coarser level holding most of its items).

    The finer names stand: from the finest level up, a parent named more specifically than
    one of its children takes the most specific concept above its own that none of its
    children's concepts is above (an informative one, not in ``imagenet.TOO_ABSTRACT``, where
    there is one): a frog cluster of CIFAR-10 (named "animal") under a parent named
    "squirrel" makes the parent "animal". Measured in ``benchmarks/level_names.py`` (RESULTS.md,
    "Names down the hierarchy"): making the children more specific instead (their parent's
    concept, or their first candidate that is not above it) made the finest names less often
    right on CIFAR-10; lifting the parents keeps the finest level's names as they were and
    makes coarse names more often right, at the cost of more general coarse names.
    Candidates without a WordNet ``synset`` (a CLIP vocabulary word WordNet lacks) count for
    nothing here."""
    from . import wordnet as wn
    from .imagenet import TOO_ABSTRACT, readable, tree

    up: dict[str, set[str]] = {}

    def above(s: str) -> set[str]:  # the synset and its hypernyms
        if s not in up:
            try:
                up[s] = wn.hypernym_closure(s) | {s}
            except KeyError:
                up[s] = {s}
        return up[s]

    def head(k: int, c: int) -> str | None:
        cs = cands[k].get(c) or []
        return cs[0].get("synset") if cs else None

    gen = dict(zip(tree().ids, tree().generality.tolist()))
    labs = [np.asarray(lab) for lab in labellings]
    for k in range(len(labs) - 1, 0, -1):
        ok = (labs[k] >= 0) & (labs[k - 1] >= 0)
        if not ok.any():
            continue
        pairs, n = np.unique(np.stack([labs[k][ok], labs[k - 1][ok]], axis=1), axis=0, return_counts=True)
        parent: dict[int, tuple[int, int]] = {}  # child -> (its parent, items shared)
        for (c, p), m in zip(pairs.tolist(), n.tolist()):
            if c not in parent or m > parent[c][1]:
                parent[c] = (p, m)
        children: dict[int, list[str]] = {}  # parent -> its children's concepts
        for c, (p, _) in parent.items():
            if (sc := head(k, c)) is not None:
                children.setdefault(p, []).append(sc)

        def fits(x: str, concepts: list[str]) -> bool:  # no child named more generally than x
            return not any(t != x and t in above(x) for t in concepts)

        for p, concepts in children.items():
            sp = head(k - 1, p)
            if sp is None or fits(sp, concepts):
                continue
            # the most specific concept above the parent's that no child's is above: an
            # informative one where there is one
            ok = [x for x in above(sp) if fits(x, concepts)]
            ok = [x for x in ok if x not in TOO_ABSTRACT] or ok or list(above(sp))
            s = min(ok, key=lambda s: (-wn.depth(s), gen.get(s, 1.0), s))
            cs = cands[k - 1][p]
            i = next((i for i, e in enumerate(cs) if e.get("synset") == s), None)
            cs.insert(0, cs.pop(i) if i is not None else
                      {"synset": s, "name": readable(s), "depth": int(wn.depth(s))})


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
    # a run with levels: every level is named from the items its flat answer clusters, the
    # names made to nest; the flat answer is the level in use (its names)
    in_use = int(hier["level"]) if "level" in hier else None
    by_level: dict[int, list[dict]] = {}
    named = None
    if levels is not None:
        by_level = name_levels_of_run(run, levels, labels >= 0, encoder=encoder, vocabulary=vocab, level=in_use)
        named = names_of_level(labels, levels, in_use, by_level)
    if named is None:  # no levels, or a flat answer that is not one of them (named by itself)
        named = name_labels(run, [labels], encoder=encoder, vocabulary=vocab)[0]
        if levels is not None and in_use is not None and 0 <= in_use < len(levels):
            by_level[in_use] = named
    if write:
        method = named[0]["method"] if named else None
        with run.writing("naming"):
            run.write_names(named, method=method)
            if by_level:
                run.write_level_names(by_level, method=method)
            run.write_clusters(merge_names(run.read_clusters(), named))
    return named


def _naming_inputs(run: RunDir, encoder=None):
    """What naming a run's items reads, once: (its ImageNet probabilities (memory-mapped), the
    encoder whose text tower names them (``encoder``, else a CLIP run's from run.json when
    there are no probabilities), the vectors where that text tower names them, else None)."""
    probs = run.read_extra("imagenet_probs", mmap=True)
    if encoder is None and probs is None:
        encoder = encoder_for_names((run.info.get("encoder") or {}).get("name"))
    vectors = run.read_embeddings().vectors if getattr(encoder, "has_text", False) else None
    return probs, encoder, vectors


def name_labels(run: str | Path | RunDir, labellings: list, encoder=None,
                vocabulary: list[str] | None = None) -> list[list[dict]]:
    """The automatic naming rule of :func:`name_run` applied to other labellings of the run's
    items (e.g. each level of a hierarchy of an older run without ``level_names.json``): one
    :func:`name_clusters` result per labelling, nothing written. The run's probabilities,
    vectors and encoder are read once for all of them."""
    run = run if isinstance(run, RunDir) else RunDir.open(run)
    probs, encoder, vectors = _naming_inputs(run, encoder)
    return name_labellings(vectors, labellings, imagenet_probs=probs, encoder=encoder, vocabulary=vocabulary)


def name_levels_of_run(run: str | Path | RunDir, levels, clustered=None, encoder=None,
                       vocabulary: list[str] | None = None, level: int | None = None) -> dict[int, list[dict]]:
    """:func:`name_levels` of a published run's ``levels`` (e.g. its ``hierarchy``'s, for a
    run made before ``level_names.json``): the run's probabilities, vectors and encoder read
    once, nothing written."""
    run = run if isinstance(run, RunDir) else RunDir.open(run)
    probs, encoder, vectors = _naming_inputs(run, encoder)
    return name_levels(vectors, levels, clustered=clustered, imagenet_probs=probs, encoder=encoder,
                       vocabulary=vocabulary, level=level)


def item_top(probs, encoder=None):
    """Each item's top ImageNet classes (``imagenet.top_classes``), computed once for naming
    several labellings of the same items (each labelling's sums are then one bincount); None
    where the names come from a text tower or there are no probabilities. Read in row blocks:
    through a memory map a million items' probabilities are never all in memory."""
    if probs is None or getattr(encoder, "has_text", False):
        return None
    from .imagenet import top_classes_blocked

    return top_classes_blocked(probs)


def name_labellings(vectors, labellings: list, imagenet_probs=None, encoder=None,
                    vocabulary: list[str] | None = None, nested: bool = False,
                    nest_to: int | None = None) -> list[list[dict]]:
    """:func:`name_clusters` of several labellings of the same items (one result each), the
    per-item work done once. ``nested``: the labellings are a hierarchy's levels, coarse to
    fine, and the names of levels ``0..nest_to`` (None: all) are made to nest
    (:func:`nest_candidates`); finer levels keep their own names."""
    top = item_top(imagenet_probs, encoder) if len(labellings) > 1 else None
    measure = None
    if imagenet_probs is not None and not getattr(encoder, "has_text", False):
        from .support import ImagenetSupport

        measure = ImagenetSupport(imagenet_probs, top)  # the collection's, for every labelling
    found = [_candidates(vectors, np.asarray(lab), imagenet_probs, encoder, vocabulary, top, measure)
             for lab in labellings]
    upto = len(found) if nest_to is None else max(0, min(int(nest_to) + 1, len(found)))
    if nested and upto > 1:
        nest_candidates(labellings[:upto], [f[0] for f in found[:upto]])
    return [_entries(*f) for f in found]


def name_levels(vectors, levels, clustered=None, imagenet_probs=None, encoder=None,
                vocabulary: list[str] | None = None, level: int | None = None) -> dict[int, list[dict]]:
    """Names for every level of a hierarchy (``levels`` (n_levels, n), row 0 coarsest) by the
    one automatic rule (:func:`name_clusters`), made to nest from the root down to ``level``,
    the level in use (:func:`nest_candidates`: no cluster there or above named more generally
    than its parent, a parent's name covering most of its children's); the level in use and
    the finer levels keep their own names (None: every level nests). Nesting all the way down
    made the level in use far less specific (Imagenette: 12 of 13 names, "tench" -> "animal"),
    because one small diffuse cluster deep in a branch lifts every ancestor (RESULTS, "Names
    down the hierarchy"). Level ``k``'s clusters are named from the items the fit
    clustered (``clustered``: a mask; the others, noise and outliers, and with ``--dedup`` all
    but one item per duplicate group, count for no level). The flat answer of a fit at level
    ``k`` takes level ``k``'s names (:func:`names_of_level`). Returns level ->
    :func:`name_clusters` result."""
    levels = np.asarray(levels)
    keep = np.ones(levels.shape[1], bool) if clustered is None else np.asarray(clustered, bool)
    labellings = [np.where(keep, levels[k], -1) for k in range(len(levels))]
    return dict(enumerate(name_labellings(vectors, labellings, imagenet_probs=imagenet_probs,
                                          encoder=encoder, vocabulary=vocabulary, nested=True,
                                          nest_to=level)))


def names_of_level(labels, levels, level: int | None, by_level: dict[int, list[dict]]) -> list[dict] | None:
    """The names of the flat answer ``labels`` when it is level ``level`` of ``levels`` (where
    it clusters an item, that level's cluster): that level's names from ``by_level``; None
    when it is not (then it is named by itself)."""
    labels = np.asarray(labels)
    if level is None or level not in by_level or not 0 <= level < len(levels):
        return None
    ok = labels >= 0
    return list(by_level[level]) if np.array_equal(labels[ok], np.asarray(levels[level])[ok]) else None


def level_names_map(by_level: dict[int, list[dict]]) -> dict[str, dict[str, str]]:
    """``{level: {cluster id: name}}`` with text keys (JSON: a saved model's ``names_by_level``)."""
    return {str(k): {str(e["cluster"]): e["name"] for e in named if e.get("name")}
            for k, named in by_level.items()}


def merge_names(clusters: list[dict], named: list[dict]) -> list[dict]:
    """``clusters.json`` entries with the ``name`` / ``alternatives`` of ``named`` and how sure
    the name is (``name_support``, ``name_sure``, ``name_why``, where measured)."""
    from .support import FIELDS

    by_id = {e["cluster"]: e for e in named}
    out = []
    for e in clusters:
        e = dict(e)
        n = by_id.get(int(e["cluster"]))
        if n:
            e["name"] = n["name"]
            e["alternatives"] = n["alternatives"]
            for f in FIELDS:  # how sure the name is, where it was measured
                if f in n:
                    e[f] = n[f]
        out.append(e)
    return out
