"""Where training examples come from: labelled files, or clusters a person tagged.

* ``examples_from_source(source)``: a folder with one sub-folder per tag, a CSV/Parquet manifest
  with ``path`` and ``label`` columns, or precomputed vectors (``.npz`` with ``vectors`` and
  ``labels``). Files are embedded through ``mediacluster.run.embed_collection`` (cached).
* ``examples_from_run(run_dir, cluster_tags)``: the embeddings a clustering run saved, each
  clustered item labelled with the tag its cluster was given in ``cluster_tags`` (YAML or CSV:
  cluster id -> tag, ``other``, or ``ignore``/empty). Without a file the names a person gave
  (the run's ``names.yaml``, the studio) are the tags and every other cluster is ``other``: the
  tagger learns what none of the tags looks like and abstains there, rather than being certified
  on the named clusters alone and then putting one of their tags on anything. Noise and outliers
  are never used.

A fine-label -> tag mapping (``mediacluster tags map``) can be applied to either with
``apply_mapping``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..embed import embed_collection
from ..errors import InputError, yaml_problem
from ..fileio import read_yaml
from ..ingest import collect
from ..naming import load_names
from ..rundir import RunDir
from .mapping import OTHER

IGNORE = {"", "ignore", "-", "none", "null", "skip"}


@dataclass
class Examples:
    vectors: np.ndarray
    labels: list[str]
    ids: list[str]
    encoder: str
    encoder_id: str = ""
    skipped: list = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, int]:
        tags, n = np.unique(np.asarray(self.labels), return_counts=True)
        return {str(t): int(c) for t, c in zip(tags, n)}


def read_mapping(path: str | Path, is_key=None) -> dict[str, str]:
    """A ``key -> tag`` mapping from YAML (``mapping:`` section or top level) or 2-column CSV.
    The CSV's header row is optional when ``is_key`` (a test of a first cell) is given: a first
    row whose first cell is a key is the first entry (pandas took it for the header, and that
    entry was lost), anything else the header (e.g. ``cluster,tag``). Cluster ids: ``_is_number``;
    fine labels: membership in the source's labels (``examples_from_source``). Without it the
    first row is the header."""
    path = Path(path)
    try:
        return _read_mapping(path, is_key)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:  # a folder, no permission
        raise InputError(f"cannot read {path}: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - YAML / CSV syntax: name the file and where
        import yaml

        if isinstance(e, yaml.YAMLError):
            raise InputError(f"{path} is not valid YAML: {yaml_problem(e)}") from None
        import pandas as pd

        if isinstance(e, pd.errors.ParserError | pd.errors.EmptyDataError):
            raise InputError(f"{path}: cannot read as CSV: {str(e).strip()}") from None
        raise


def _read_mapping(path: Path, is_key) -> dict[str, str]:
    if path.suffix.lower() in (".csv", ".tsv"):
        import pandas as pd

        df = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", dtype=str,
                         keep_default_na=False, header=None if is_key else "infer")
        if df.shape[1] < 2:
            raise InputError(f"{path}: need two columns (key, tag)")
        if is_key and len(df) and not is_key(str(df.iloc[0, 0]).strip()):
            df = df.iloc[1:]  # the header row
        first = 1 if is_key else 2  # the file's line of the frame's row 0
        return _one_tag_each(path, ((str(k).strip(), str(v).strip(), row + first)
                                    for row, k, v in zip(df.index, df.iloc[:, 0], df.iloc[:, 1])))

    with open(path, encoding="utf-8") as f:
        d = read_yaml(f) or {}
    if isinstance(d, dict) and isinstance(d.get("mapping"), dict):
        d = d["mapping"]
    if not isinstance(d, dict):
        raise InputError(f"{path}: expected a mapping 'key: tag'")
    for k, v in d.items():
        if isinstance(v, list | dict):  # [cat, pet] was the one tag "['cat', 'pet']"
            raise InputError(f"{path}: {str(k).strip()!r} must have one tag (plain text), got {v!r}")
    # YAML keys 0 and '0' are one key here
    return _one_tag_each(path, ((str(k).strip(), "" if v is None else str(v).strip(), None) for k, v in d.items()))


def _one_tag_each(path: Path, entries) -> dict[str, str]:
    """``{key: tag}`` of ``(key, tag, row)`` entries (``row``: the CSV's line; None in YAML). A
    key given two different tags is refused naming both (the last would win, silently); the
    same tag twice is read once."""
    out: dict[str, str] = {}
    line: dict[str, int | None] = {}
    for k, v, row in entries:
        if k in out and out[k] != v:
            if row is None:
                raise InputError(f"{path}: {k!r} is given the tag {v!r} and {out[k]!r}; give each key one tag")
            raise InputError(f"{path}: row {row} gives {k!r} the tag {v!r}, row {line[k]} gave it "
                             f"{out[k]!r}; give each key one tag")
        out[k] = v
        line.setdefault(k, row)
    return out


def _is_number(text: str) -> bool:
    try:
        float(str(text).strip())
    except ValueError:
        return False
    return True


def apply_mapping(labels: list, mapping: dict[str, str], unmapped: str = "other") -> list[str | None]:
    """Map each label; labels missing from ``mapping`` become ``unmapped`` (None drops them),
    labels mapped to ignore/empty become None (dropped)."""
    out: list[str | None] = []
    for lab in labels:
        if lab is None:
            out.append(None)
            continue
        t = mapping.get(str(lab), unmapped)
        out.append(None if t is None or t.lower() in IGNORE else t)
    return out


def _drop_none(vectors: np.ndarray, labels: list, ids: list) -> tuple[np.ndarray, list[str], list[str]]:
    keep = np.array([lab is not None for lab in labels], dtype=bool)
    idx = np.flatnonzero(keep)
    return vectors[idx], [str(labels[i]) for i in idx], [str(ids[i]) for i in idx]


def examples_from_source(source: str | Path, encoder: str | None = None, cache_dir=None,
                         mapping: dict[str, str] | str | Path | None = None, progress: bool = True) -> Examples:
    """Labelled examples from a folder (one sub-folder per tag), a manifest or vectors. Images
    or audio clips, whichever the source holds most of (``collect(media="auto")``); ``encoder``
    None: that media's default encoder (a folder of clips read as images held no items, and
    was refused as having "no labels"). ``mapping``: fine label -> tag, or its file (read before
    any embedding; a CSV's header row told by its first cell being none of the labels)."""
    p = Path(source)
    if RunDir.is_run(p):  # its report's thumbnails and exports would be read as tagged media
        raise InputError(f"{source} is a run folder (mediacluster cluster), not labelled examples: its "
                         f"clusters are learned with 'tags train --run {source}' (--cluster-tags FILE, or the "
                         "names a person gave)")
    coll = collect(p, media="auto", labels_from_folders=p.is_dir())
    if not coll.has_labels:
        raise InputError(f"{source}: no labels (use a folder with one sub-folder per tag, a manifest "
                         f"with a 'label' column, or an .npz with 'labels')")
    if mapping is not None and not isinstance(mapping, dict):
        known = {str(lab) for lab in coll.labels if lab is not None}
        mapping = read_mapping(mapping, is_key=known.__contains__)
    emb = embed_collection(coll, encoder=encoder, cache_dir=cache_dir, progress=progress)
    labels = list(emb.labels)
    if mapping is not None:
        labels = apply_mapping(labels, mapping)
    X, y, ids = _drop_none(emb.vectors, labels, emb.ids)
    return Examples(vectors=X, labels=y, ids=ids, encoder=emb.encoder,
                    encoder_id=emb.encoder_version or emb.encoder, skipped=list(emb.skipped), source=str(source))


def examples_from_run(run_dir: str | Path, cluster_tags: str | Path | dict | None = None) -> Examples:
    """Training examples from a run: each clustered item tagged with its cluster's tag. The
    curated clusters (``curated_cluster``, from the studio) are used when the run has them, without
    the items a person marked as junk."""
    run = RunDir.open(run_dir)
    emb = run.read_embeddings()
    asg = run.read_assignments()
    col = "curated_cluster" if "curated_cluster" in asg.columns else "cluster"
    clusters = asg[col].to_numpy(dtype=np.int64)
    if "curated_status" in asg.columns:  # what a person marked as junk teaches no tag
        clusters = np.where(asg["curated_status"].to_numpy() == "junk", -1, clusters)
    if cluster_tags is None:
        tags = {str(k): v for k, v in load_names(run, automatic=False).items()}
        if not tags:
            raise InputError(f"{run_dir}: no cluster tags given and no hand-given names (names.yaml or the "
                             "studio); pass a YAML/CSV mapping cluster id -> tag, 'other' or 'ignore' "
                             "(tags train --cluster-tags FILE)")
        # the clusters nobody named are what none of the tags is (the abstain label, never suggested)
        tags.update({str(int(c)): OTHER for c in np.unique(clusters[clusters >= 0]) if str(int(c)) not in tags})
    else:
        if isinstance(cluster_tags, dict):
            tags = {str(k): "" if v is None else str(v) for k, v in cluster_tags.items()}
        else:
            tags = read_mapping(cluster_tags, is_key=_is_number)
        # an entry for no cluster (a typo, '1.0', another run's file) would teach nothing, silently
        known = {str(int(c)) for c in np.unique(asg[col].to_numpy(dtype=np.int64)) if c >= 0}
        for k in tags:
            if k not in known:
                raise InputError(f"{cluster_tags if not isinstance(cluster_tags, dict) else 'cluster tags'}: "
                                 f"{k!r} is not a cluster of this run (clusters: {', '.join(sorted(known, key=int))})")
    labels: list[str | None] = []
    for c in clusters:
        t = tags.get(str(int(c))) if c >= 0 else None
        labels.append(None if t is None or t.lower() in IGNORE else t)
    X, y, ids = _drop_none(emb.vectors, labels, emb.ids)
    if not y:
        raise InputError(f"{run_dir}: no clustered item has a tag (cluster ids in the mapping: "
                         f"{sorted(tags)[:10]})")
    enc = run.info.get("encoder", {})
    return Examples(vectors=X, labels=y, ids=ids, encoder=enc.get("name") or emb.encoder or "precomputed",
                    encoder_id=enc.get("id", ""), source=str(run_dir))
