"""How sure an automatic name is: a label-free measure of how well a cluster's items support it.

A name made from ImageNet probabilities (:mod:`.imagenet`) is always *some* WordNet concept, also
for a collection the encoder never saw (drawn emoji are "device (web site)", digits "opener ·
nematode"). Whether to trust it is read from the same probabilities, without labels:

* ``p_cluster``: the encoder's probability that an item of the cluster is an instance of the
  name, averaged over the cluster's items: the full softmax mass on the ImageNet classes under
  the name's concept (for a composite name, under any of its parts). This is the posterior of a
  node of the class hierarchy, the quantity hierarchical classifiers that "hedge their bets"
  (Deng et al., CVPR 2012) report as the confidence of a general label. The full softmax, not
  the top-5 cut the naming uses: an out-of-domain item's prediction is flat (its maximum softmax
  probability is low, Hendrycks & Gimpel, ICLR 2017), so its tail keeps much of its mass away
  from any one concept.
* ``p_collection``: the same probability for an item of the whole collection.
* ``support`` = ``(p_cluster - p_collection) / (1 - p_collection)``: the chance-corrected
  agreement of the name with the cluster (Cohen's kappa form): 0 when the cluster's items are no
  more the name than any item of the collection, 1 when the encoder is certain of it for every
  item. A fallback concept that the encoder gives every item of an unknown domain ("device" on
  drawn emoji: 0.48 in a cluster of flags, 0.475 over all emoji) has support ~0; "tench" on
  Imagenette's tench photos (0.80 against 0.08) has 0.78.

A name is **sure** when both hold (no constant is fitted to any collection):

1. ``support >= SURE`` (1/2, the naming rule's own "most", ``imagenet.MIN_COVER``): the name is
   wrong, by the encoder's own probabilities, for at most half as many of the cluster's items as
   it would be for items drawn from the whole collection;
2. ``support`` exceeds the ``NULL_QUANTILE`` (95th percentile) of a null distribution: the
   support the same rule earns for ``NULL_DRAWS`` random groups of the same size drawn from the
   same collection (each named by :func:`imagenet.lift`, against the same background). This is
   what keeps a cluster of one or two items from being sure because it is small: a single
   item is named by its own top guess and supports it by construction. Groups are drawn at the
   largest power of two not above the cluster's size (capped at ``NULL_MAX_SIZE`` = 64; smaller
   groups earn more by chance, so this is conservative), drawn only for names that meet 1., once
   per size and collection.

CLIP zero-shot names (:mod:`.zeroshot`) are measured the same way on the members' votes (each
member's best topic): ``p_cluster`` = the share of the cluster voting for the name (the
``share`` the zero-shot namer already reported), ``p_collection`` = the share of the whole
collection voting for it; the null draws random groups and names each by its mean similarity.

A person's own names (``names.yaml``, the studio) are always sure; they are never measured.
"""

from __future__ import annotations

import numpy as np

#: the least support for a sure name: the naming rule's "most" (imagenet.MIN_COVER)
SURE = 0.5
#: random groups per size for the null distribution, and the quantile a sure name must exceed
NULL_DRAWS = 40
NULL_QUANTILE = 0.95
#: null groups are at most this large (larger clusters are compared to groups of this size,
#: which earn more by chance than larger ones: conservative; naming random groups costs ~1 s)
NULL_MAX_SIZE = 64
#: fields every measured name record carries
FIELDS = ("name_support", "name_sure", "name_why")
#: what a report and the CLI say when most of a run's automatic names are unsure
MOSTLY_UNSURE_NOTE = ("the encoder's ImageNet classes do not describe this collection; names are guesses: "
                      "rename them in the studio, or use a CLIP encoder")
MOSTLY_UNSURE_NOTE_CLIP = ("the vocabulary's topics do not describe this collection; names are guesses: "
                           "rename them in the studio, or name them against your own topics (--vocabulary)")
#: why a person's name is sure
BY_HAND = "sure: named by a person"


def with_hand_names(records: list[dict], names: dict[int, str]) -> list[dict]:
    """A level's name records (``level_names.json``) with ``names`` (cluster id -> name, e.g. one
    level of ``naming.run_level_names``) laid over them: a name that is not the record's
    (a person's: ``names.yaml``, the studio) replaces it, sure by hand (the automatic name's
    support is not its); a named cluster without a record gets one. The one rule the report's
    level switch, ``naming.tables`` and the studio's publish apply."""
    out, seen = [], set()
    for e in records:
        c = int(e["cluster"])
        seen.add(c)
        nm = names.get(c)
        out.append(e if nm is None or nm == e.get("name") else
                   {**e, "name": nm, "name_sure": True, "name_support": None, "name_why": BY_HAND})
    out += [{"cluster": c, "name": nm, "alternatives": [], "name_sure": True, "name_support": None, "name_why": BY_HAND}
            for c, nm in sorted(names.items()) if c not in seen]
    return out


def of_records(named: list[dict] | None) -> dict[int, dict]:
    """Cluster id -> the support fields of name records (``names.json``, ``level_names.json``,
    ``clusters.json``) that carry them; names never measured (a run made before, no
    probabilities) are absent."""
    return {int(e["cluster"]): {f: e[f] for f in FIELDS if f in e} for e in named or []
            if isinstance(e, dict) and "name_sure" in e and isinstance(e.get("cluster"), int)}


#: the fields a service answer or ``assign`` row carries for a name nobody measured (an older
#: model, a name without a concept): null, not an error
NOT_MEASURED = {"name_sure": None, "name_support": None, "name_why": None}
#: why the automatic name of a cluster the studio changed is not measured
CHANGED = ("not measured: the cluster's items changed (a merge, a move or a split) since its automatic "
           "name was measured; rename it to make it yours")


#: why the name of a part a studio split made is not measured
SPLIT_UNMEASURED = ("not measured: this part's automatic name could not be measured (a run without ImageNet "
                    "probabilities or a CLIP encoder), or its name was typed at a split recorded before the "
                    "studio kept who named a part; rename it to make it yours")


def model_records(named: list[dict] | None) -> dict[str, dict]:
    """A saved model's ``names_support`` (``{"id": {"name", "name_support", "name_sure",
    "name_why"}}``) from name records that were measured; the name is kept so that a name
    changed later (``names.yaml``, the studio) is never given the support of the one it
    replaced."""
    return {str(int(e["cluster"])): {"name": e.get("name"), **{f: e[f] for f in FIELDS if f in e}}
            for e in named or [] if isinstance(e, dict) and "name_sure" in e and e.get("name")}


def of_names(names: dict[int, str], measured: dict | None, hand: dict[int, str] | None = None) -> dict[int, dict]:
    """Cluster id -> ``name_sure`` / ``name_support`` / ``name_why`` for the ``names`` a model
    answers with: a person's name (``hand``: id -> the name a person gave) is sure; an
    automatic one carries its measured record (``measured``: a model's ``names_support``, keys
    text or int) while the name is the one measured; anything else was not measured
    (:data:`NOT_MEASURED`)."""
    rec = {int(k): v for k, v in (measured or {}).items() if isinstance(v, dict)}
    out = {}
    for c, name in names.items():
        r = rec.get(int(c))
        if hand and hand.get(int(c)) == name:
            out[int(c)] = {"name_sure": True, "name_support": None, "name_why": BY_HAND}
        elif r is not None and r.get("name") == name and isinstance(r.get("name_sure"), bool):
            out[int(c)] = {f: r.get(f) for f in FIELDS}
        else:
            out[int(c)] = dict(NOT_MEASURED)
    return out


def mostly_unsure(sure: list[bool | None]) -> bool:
    """More than half of the measured names are unsure (None: not measured, not counted)."""
    known = [s for s in sure if s is not None]
    return bool(known) and sum(not s for s in known) * 2 > len(known)


def note(method: str | None) -> str:
    """The one line said when most names are unsure, for the naming ``method``."""
    return MOSTLY_UNSURE_NOTE_CLIP if method == "clip-zeroshot" else MOSTLY_UNSURE_NOTE


def summary(named: list[dict] | None) -> dict | None:
    """How many of a run's automatic names were measured and how many are sure (run.json's
    ``summary.names``, the CLI's summary line, with the ``note`` to print when most are unsure);
    None when none was measured."""
    sure = [e.get("name_sure") for e in named or [] if "name_sure" in e]
    if not sure:
        return None
    out = {"measured": len(sure), "sure": int(sum(bool(x) for x in sure)), "mostly_unsure": mostly_unsure(sure)}
    if out["mostly_unsure"]:
        out["note"] = note(next((e.get("method") for e in named if e.get("method")), None))
    return out


def bucket(size: int) -> int:
    """The null's group size for a cluster of ``size`` items: the largest power of two <= size,
    at most :data:`NULL_MAX_SIZE`."""
    size = max(1, int(size))
    return int(min(NULL_MAX_SIZE, 1 << (size.bit_length() - 1)))


def kappa(p_cluster: float, p_collection: float) -> float:
    """``(p_cluster - p_collection) / (1 - p_collection)`` (0 when the collection is certain)."""
    den = 1.0 - float(p_collection)
    return float((float(p_cluster) - float(p_collection)) / den) if den > 1e-12 else 0.0


def decide(support: float, null_q: float | None) -> bool:
    """The stated criterion: ``support >= SURE`` and above the null's quantile."""
    return bool(support >= SURE and (null_q is None or support > null_q))


def why(sure: bool, p_cluster: float, p_collection: float, support: float, null_q: float | None,
        votes: bool = False) -> str:
    """One sentence saying what the decision rests on (for a tooltip or an API reader)."""
    shown = round(float(support), 2) + 0.0  # never "-0.00"
    if votes:
        base = (f"{p_cluster:.0%} of these items have this name as their best topic, "
                f"{p_collection:.0%} of the whole collection (support {shown:.2f}")
    else:
        base = (f"the encoder gives this name {p_cluster:.0%} of its probability on these items, "
                f"{p_collection:.0%} on the whole collection (support {shown:.2f}")
    base += f"; random groups of its size reach {null_q:.2f})" if null_q is not None else ")"
    if sure:
        return "sure: " + base
    if support < SURE:
        return (f"unsure: {base}; a sure name needs {SURE:.2f}: the encoder's "
                + ("topics" if votes else "ImageNet classes") + " do not set these items apart")
    return f"unsure: {base}; no more than chance for a cluster this small"


def record(support: float, p_cluster: float, p_collection: float, null_q: float | None,
           votes: bool = False) -> dict:
    """The fields a name record carries: ``name_support`` (rounded), ``name_sure``, ``name_why``."""
    sure = decide(support, null_q)
    return {"name_support": round(float(support), 3), "name_sure": sure,
            "name_why": why(sure, p_cluster, p_collection, support, null_q, votes)}


_ROWS: dict[str, int] = {}


def _row(synset: str) -> int:
    """The synset's row in ``imagenet.tree()``'s coverage matrix."""
    if not _ROWS:
        from .imagenet import tree

        _ROWS.update({s: r for r, s in enumerate(tree().ids)})
    return _ROWS[synset]


class ImagenetSupport:
    """The support of ImageNet/WordNet names over one collection (``probs``: every item's full
    ImageNet softmax, ``(n, 1000)``, possibly a memory map). The collection's mean
    probabilities, the rule's background and the null are computed once and shared by every
    labelling of the collection (a hierarchy's levels)."""

    def __init__(self, probs, item_top=None, seed: int = 0) -> None:
        self.probs = probs
        self.item_top = item_top
        self.seed = seed
        self._mean: np.ndarray | None = None
        self._null: dict[int, float] = {}

    # -- the collection -------------------------------------------------------------------------
    def mean(self) -> np.ndarray:
        """The collection's mean (full) probabilities, read in row blocks."""
        if self._mean is None:
            P = self.probs
            tot = np.zeros(P.shape[1], np.float64)
            for s in range(0, len(P), 65_536):
                tot += np.asarray(P[s:s + 65_536], np.float64).sum(axis=0)
            self._mean = tot / max(len(P), 1)
        return self._mean

    def cluster_means(self, labels, rows=None) -> dict[int, np.ndarray]:
        """Cluster id -> mean (full) probabilities of its items (ids >= 0), one pass in blocks.
        ``rows``: the collection's items ``labels`` label (default all of them, in order)."""
        from scipy import sparse

        lab = np.asarray(labels).ravel()
        ok = lab >= 0
        if not ok.any():
            return {}
        K = int(lab[ok].max()) + 1
        P = self.probs if rows is None else np.asarray(self.probs[np.asarray(rows)])
        tot = np.zeros((K, P.shape[1]), np.float64)
        for s in range(0, len(P), 65_536):
            lb = lab[s:s + 65_536]
            k = lb >= 0
            if not k.any():
                continue
            S = sparse.csr_matrix((np.ones(int(k.sum()), np.float32), (lb[k], np.flatnonzero(k))),
                                  shape=(K, len(lb)))
            tot += S @ np.asarray(P[s:s + 65_536], np.float32)
        n = np.bincount(lab[ok].astype(np.int64), minlength=K)
        return {int(c): tot[c] / n[c] for c in np.flatnonzero(n)}

    # -- the name -------------------------------------------------------------------------------
    @staticmethod
    def classes(candidate: dict | None) -> np.ndarray | None:
        """Mask of the ImageNet classes a name claims: under its concept, or for a composite
        name under any of its parts; None when it has no WordNet concept."""
        from .imagenet import tree

        if not candidate:
            return None
        t = tree()
        syns = [p.get("synset") for p in candidate.get("parts") or []] if candidate.get("composite") \
            else [candidate.get("synset")]
        rows = [_row(s) for s in syns if s in t.nodes]
        if not rows:
            return None
        return t.cover[rows].max(axis=0) > 0

    def null_quantile(self, size: int) -> float:
        """The :data:`NULL_QUANTILE` of the support the naming rule earns on random groups of
        ``bucket(size)`` items of the collection (computed once per group size)."""
        m = bucket(size)
        if m in self._null:
            return self._null[m]
        from .imagenet import MAX_PARTS, lift, top_classes_blocked

        P = self.probs
        n = len(P)
        if self.item_top is None:
            self.item_top = top_classes_blocked(P)
        bg = self._background()
        rng = np.random.default_rng([self.seed, m])
        mean = self.mean()
        vals = []
        for _ in range(NULL_DRAWS):
            idx = np.sort(rng.choice(n, size=min(m, n), replace=False))
            cand = lift(self._group_mass(idx), background=bg, k=1, max_parts=min(MAX_PARTS, len(idx)))
            mask = self.classes(cand[0] if cand else None)
            if mask is None:
                continue
            pc = float(np.asarray(P[idx], np.float64)[:, mask].sum(axis=1).mean())
            vals.append(kappa(pc, float(mean[mask].sum())))
        q = float(np.quantile(vals, NULL_QUANTILE)) if vals else 0.0
        self._null[m] = q
        return q

    def _background(self) -> np.ndarray:
        """The naming rule's background: the collection's summed top-k masses."""
        idx, w = self.item_top
        return np.bincount(np.asarray(idx).ravel().astype(np.int64),
                           weights=np.asarray(w, np.float64).ravel(), minlength=self.probs.shape[1])

    def _group_mass(self, idx: np.ndarray) -> np.ndarray:
        i, w = self.item_top
        return np.bincount(np.asarray(i)[idx].ravel().astype(np.int64),
                           weights=np.asarray(w, np.float64)[idx].ravel(), minlength=self.probs.shape[1])

    def of(self, cands: dict[int, list[dict]], labels, rows=None) -> dict[int, dict]:
        """Cluster id -> :func:`record` of its first candidate (the name's concept, the one
        nesting may have put first), always against the whole collection. ``rows``: the items
        ``labels`` label (default the whole collection; e.g. a cluster's members, labelled by
        the parts of a split)."""
        lab = np.asarray(labels).ravel()
        means = self.cluster_means(lab, rows)
        sizes = np.bincount(lab[lab >= 0].astype(np.int64)) if (lab >= 0).any() else np.zeros(0, np.int64)
        coll = self.mean()
        out = {}
        for c, cs in cands.items():
            mask = self.classes(cs[0] if cs else None)
            if mask is None or c not in means:
                continue
            pc, pa = float(means[c][mask].sum()), float(coll[mask].sum())
            k = kappa(pc, pa)
            # the null matters only to a name that meets SURE (drawn lazily, once per size)
            out[c] = record(k, pc, pa, self.null_quantile(int(sizes[c])) if k >= SURE else None)
        return out


def zeroshot_support(S_best: np.ndarray, labels, names: dict[int, int], n_topics: int,
                     group_name=None, seed: int = 0) -> dict[int, dict]:
    """The same measure for CLIP zero-shot names, on votes.

    ``S_best``: every item's best topic (index); ``names``: cluster id -> the named topic;
    ``group_name(idx)``: the topic the namer would give a group of items (for the null; None:
    no null). Returns cluster id -> :func:`record`."""
    lab = np.asarray(labels).ravel()
    votes = np.asarray(S_best)
    coll = np.bincount(votes, minlength=n_topics) / max(len(votes), 1)
    rng = np.random.default_rng(seed)
    null: dict[int, float] = {}
    out = {}
    for c, j in names.items():
        idx = np.flatnonzero(lab == c)
        if not len(idx):
            continue
        pc = float((votes[idx] == j).mean())
        q = None
        if group_name is not None:
            m = bucket(len(idx))
            if m not in null and kappa(pc, float(coll[j])) >= SURE:
                vals = []
                for _ in range(NULL_DRAWS):
                    g = rng.choice(len(votes), size=min(m, len(votes)), replace=False)
                    t = int(group_name(g))
                    vals.append(kappa(float((votes[g] == t).mean()), float(coll[t])))
                null[m] = float(np.quantile(vals, NULL_QUANTILE))
            q = null.get(m)
        out[c] = record(kappa(pc, float(coll[j])), pc, float(coll[j]), q, votes=True)
    return out
