"""Map fine labels (ImageNet / CIFAR / SUN class names) to a small tag vocabulary via WordNet.

Seed 004's recipe: a label goes to a tag when the tag's synset is among the label synset's
hypernyms (or is the label synset itself). Uses the WordNet 3.0 noun graph shipped with the
package (``mediacluster.naming.wordnet``), no corpus download.

* Label senses: a wnid (``n02123045``) is taken as is; an exact ImageNet-1k class name
  (``"tabby cat"``, ``"crane bird"``) gives that class's synset; otherwise the WordNet noun senses
  of the words, most frequent first. The first sense that reaches any tag decides.
* Tag senses: every noun sense of the tag word (``"#animals"`` -> ``animal``), or explicit
  synsets with ``tag=wnid[+wnid...]`` (e.g. ``plant=n00017222`` for flora, not factories).
* Ties: when a sense reaches several tags, the deepest (most specific) tag synset wins, then the
  tag listed first.
* Labels that reach no tag map to ``"other"``.

``write_mapping_yaml`` writes the proposal as an editable YAML file with the WordNet path of
each decision and the alternatives in comments; ``mediacluster tags train --mapping`` reads it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

OTHER = "other"
_WNID = re.compile(r"^n\d{8}$")


@dataclass
class LabelMapping:
    label: str
    tag: str
    label_synset: str | None = None
    tag_synset: str | None = None
    reason: str = ""
    alternatives: list[str] = field(default_factory=list)


def _wn():
    from ..naming import wordnet

    return wordnet


def parse_tag(spec: str) -> tuple[str, list[str]]:
    """``"#animals"`` -> ("animals", senses of "animals"); ``"plant=n00017222"`` -> explicit."""
    wn = _wn()
    spec = spec.strip()
    name, _, syns = spec.partition("=")
    name = name.strip().lstrip("#").strip()
    if not name:
        raise InputError(f"empty tag in {spec!r}")
    if syns:
        ids = [s.strip() for s in syns.replace(",", "+").split("+") if s.strip()]
        for s in ids:
            try:
                wn.lemmas(s)
            except KeyError:  # a word where an id goes ('plant=tree'), or an unknown id
                raise InputError(f"tag {spec!r}: unknown WordNet noun synset id {s!r} (give tag=wnid, e.g. "
                                 "plant=n00017222, or the tag word alone)") from None
        return name, ids
    return name, wn.synsets_for(name)


def label_senses(label: str) -> list[str]:
    """Candidate synsets of a label, most plausible first (see module docs)."""
    wn = _wn()
    lab = label.strip()
    if _WNID.match(lab):
        return [lab]
    names = _imagenet_index()
    if lab.lower() in names:
        return [names[lab.lower()]]
    senses = wn.synsets_for(lab)
    if not senses and ("_" in lab or " " in lab or "-" in lab):
        # "sea lion" style compounds not in WordNet: fall back to the head word (last word)
        head = re.split(r"[\s_\-]+", lab)[-1]
        senses = wn.synsets_for(head)
    return senses


_IMAGENET: dict[str, str] | None = None


def _imagenet_index() -> dict[str, str]:
    global _IMAGENET
    if _IMAGENET is None:
        wn = _wn()
        _IMAGENET = {}
        for wnid, nm in zip(wn.imagenet_synsets(), wn.imagenet_names()):
            _IMAGENET.setdefault(nm.lower(), wnid)
    return _IMAGENET


def map_label(label: str, tags: list[tuple[str, list[str]]]) -> LabelMapping:
    """Map one label to one of ``tags`` (as returned by ``parse_tag``) or to "other"."""
    wn = _wn()
    senses = label_senses(label)
    if not senses:
        return LabelMapping(label, OTHER, reason="no WordNet noun sense")
    decided: LabelMapping | None = None
    alts: list[str] = []
    for s in senses:
        anc = wn.hypernym_closure(s) | {s}
        hits = []
        for order, (tag, tsyns) in enumerate(tags):
            for ts in tsyns:
                if ts in anc:
                    hits.append((-wn.depth(ts), order, tag, ts))
        if not hits:
            continue
        hits.sort()
        if decided is None:
            _, _, tag, ts = hits[0]
            decided = LabelMapping(label, tag, s, ts,
                                   reason=f"{s} {wn.name(s)} -> {ts} {wn.name(ts)} (depth {wn.depth(ts)})")
            alts += [f"{h[2]} via {h[3]}" for h in hits[1:] if h[2] != tag]
        else:
            alts += [f"{h[2]} via sense {s} {wn.name(s)}" for h in hits if h[2] != decided.tag]
    if decided is None:
        return LabelMapping(label, OTHER, senses[0], reason=f"{senses[0]} {wn.name(senses[0])}: no tag among hypernyms")
    seen: set[str] = set()
    decided.alternatives = [a for a in alts if not (a in seen or seen.add(a))][:4]
    return decided


def propose_mapping(labels: list[str], tags: list[str]) -> list[LabelMapping]:
    """Map every label; ``tags`` are tag specs (``"animal"``, ``"#food"``, ``"plant=n00017222"``)."""
    parsed = [parse_tag(t) for t in tags]
    missing = [n for n, s in parsed if not s]
    if missing:
        raise InputError(f"tags with no WordNet noun sense (give one as tag=wnid): {missing}")
    return [map_label(lab, parsed) for lab in labels]


def write_mapping_yaml(path: str | Path, mappings: list[LabelMapping], tags: list[str]) -> Path:
    """Write the proposal as YAML (``tags:`` list, ``mapping:`` label -> tag) with comments."""
    import yaml

    from ..fileio import atomic_path

    def q(s: str) -> str:
        return yaml.safe_dump(s, default_style=None, width=10_000).strip().removesuffix("...").strip()

    names = [parse_tag(t)[0] for t in tags]
    lines = [
        "# Fine label -> tag, proposed through WordNet hypernyms (mediacluster tags map).",
        "# Edit freely: change a tag, write 'other' to keep a label as a never-suggested class,",
        "# or 'ignore' to drop its examples. Comments show the WordNet path and alternatives.",
        "tags: [" + ", ".join(q(n) for n in names) + "]",
        "mapping:",
    ]
    for m in mappings:
        comment = m.reason + (f"; also: {', '.join(m.alternatives)}" if m.alternatives else "")
        lines.append(f"  {q(m.label)}: {q(m.tag)}" + (f"   # {comment}" if comment else ""))
    path = Path(path)
    with atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_labels(spec: str) -> list[str]:
    """Labels from a text file (one per line), a folder (its sub-folder names), ``imagenet``
    (the 1000 ImageNet class names), or a comma-separated list."""
    p = Path(spec)
    if not p.exists() and "," not in spec and (p.suffix.lower() in (".txt", ".csv", ".tsv", ".list")
                                               or spec.startswith(("/", "./", "../", "~"))):
        raise InputError(f"{spec}: no such file or folder (labels: a text file, a folder, 'imagenet' or a "
                         "comma-separated list)")  # a typo, not the one label of a list
    if p.is_dir():
        return sorted(d.name for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))
    if p.is_file():
        return [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()
                if ln.strip() and not ln.lstrip().startswith("#")]
    if spec.strip().lower() == "imagenet":
        return _wn().imagenet_names()
    return [s.strip() for s in spec.split(",") if s.strip()]
