"""``mediacluster assign MODEL PATHS...``: put new items into a saved model's clusters (no refit).

Each PATH is what ``mediacluster cluster`` accepts (a folder, an image, a manifest, or
precomputed vectors). Items are embedded with the model's encoder (cached), then reduced,
checked for outliers and assigned a cluster with a membership probability by the saved model
(``mediacluster.load``; never unpickles). Prints one line per item, or writes CSV/Parquet.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from ..duplicates.index import read_from_model
from ..embed import embed_collection
from ..encoders import DEFAULT_IMAGE_ENCODER, get_encoder
from ..errors import ModelFormatError, OutputError, ParameterError
from ..fileio import json_text, text_series, write_table
from ..ingest import collect, join_files
from ..ingest.sources import MEDIA_EXTENSIONS
from ..model_items import neighbour_records
from ..naming import level_names, level_names_sure, pipeline_names, pipeline_names_sure
from ..pipeline import Pipeline
from . import SUMMARIES, add_collection_root, add_retry_bad, printable
from .cluster import _parsed, level_arg, positive_int


def add_parser(sub):
    p = sub.add_parser("assign", help=SUMMARIES["assign"])
    p.add_argument("model", help="model folder, or a run folder / models folder (its latest model "
                                 "version), written by `cluster --save-model`, `tune` or the studio")
    p.add_argument("paths", nargs="+", help="folders, image or audio files (as the model's encoder reads), manifests or embedding files")
    p.add_argument("--level", type=level_arg, default=None, metavar="N|auto",
                   help="with a model whose clusterer has levels (hierarchy, evoc): answer at this level "
                        "(0 = coarsest; 'auto' = the clusterer's own choice) instead of the level the model "
                        "was saved with; the cluster, name and probability columns follow it (every level's "
                        "columns level_<k> are written either way)")
    add_collection_root(p, "with a model saved with --dedup: the geometric near-duplicate check reads its "
                           "training files")
    p.add_argument("--similar", type=similar_k, default=None, metavar="K",
                   help="also find each item's K most similar items of the model's collection (1..1000; "
                        "Pipeline.similar): a column 'similar' of JSON [{id, path, row, similarity, "
                        "cluster, name, name_sure}, ...] nearest first (id/path null for a model fitted on bare vectors "
                        "or saved before it kept its items' ids, items.json)")
    p.add_argument("--same-cluster", action="store_true",
                   help="with --similar: only items of the item's own cluster (at --level, if given)")
    p.add_argument("--per-cluster", type=positive_int, default=None, metavar="N",
                   help="with --similar: at most N neighbours of one cluster (at --level, if given; noise "
                        "counts as one): a diverse list, as /v1/similar's per_cluster")
    p.add_argument("--similar-offset", type=non_negative_int, default=0, metavar="N",
                   help="with --similar: skip the first N neighbours (the next page), as /v1/similar's offset")
    p.add_argument("--exclude", action="append", default=None, metavar="ID",
                   help="with --similar: never answer this item of the model's collection (its id, as the "
                        "'similar' column names it; repeatable; ids the model does not hold are ignored)")
    p.add_argument("--out", default=None, help="write assignments to this .csv or .parquet file")
    p.add_argument("--encoder", default=None, help="encoder (default: the one recorded in the model)")
    add_retry_bad(p)
    p.add_argument("--cache-dir", default=None, help="embedding cache directory")
    p.add_argument("--batch-size", type=positive_int, default=16, help="files per encoder call (default 16)")
    p.add_argument("--workers", type=positive_int, default=None, help="decoding threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def non_negative_int(text: str) -> int:
    """A whole number >= 0."""
    import argparse

    n = _parsed(text, int, "a whole number >= 0")
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, not {text!r}")
    return n


def similar_k(text: str) -> int:
    """``--similar K``: a whole number 1..1000."""
    import argparse

    k = _parsed(text, int, "a whole number from 1 to 1000")
    if not 1 <= k <= 1000:
        raise argparse.ArgumentTypeError(f"--similar must be a whole number from 1 to 1000, not {text!r}")
    return k


def pick_level(model: Pipeline, level) -> None:
    """``--level``: answer at ``level`` (``Pipeline.set_level``; the names switch with it). A
    number for a model without levels, or past its last level, is an error naming ``--level``;
    ``auto`` on a flat model is its only answer (as ``cluster --level auto`` with a flat clusterer)."""
    if getattr(model, "levels_", None) is None:
        if level == "auto":
            return
        raise ParameterError(f"--level {level}: the model {model.model_path_} has no levels (its clusterer is "
                             "flat); fit it with clusterer hierarchy or evoc, or leave --level out", "level")
    try:
        model.set_level(level)
    except ParameterError as e:
        raise ParameterError(f"--level {level}: {e} (model {model.model_path_})", "level") from None


def check_out(out) -> None:
    """``--out`` names the table file to write: a folder (an existing one, or a name ending in a
    slash) is refused before any file is embedded (it was written as a file named like the folder,
    or failed only after the work)."""
    if out is None:
        return
    text = os.fspath(out)
    if text.endswith(("/", os.sep)) or Path(text).is_dir():
        raise OutputError(f"--out {text} is a folder; give the file to write, e.g. "
                          f"{Path(text) / 'assignments.csv'} (or .parquet)")


def run(args) -> int:
    import pandas as pd

    check_out(args.out)
    given = [f for f, v in (("--same-cluster", args.same_cluster), ("--per-cluster", args.per_cluster),
                            ("--similar-offset", args.similar_offset), ("--exclude", args.exclude)) if v]
    if given and not args.similar:  # said before the model is loaded or anything embedded
        raise ParameterError(f"{', '.join(given)} shape{'s' if len(given) == 1 else ''} the --similar list: "
                             "give --similar K too", given[0].lstrip("-").replace("-", "_"))
    model = Pipeline.load(args.model)
    if args.level is not None:
        pick_level(model, args.level)
    encoder = args.encoder or model.model_info_.get("metadata", {}).get("encoder") or DEFAULT_IMAGE_ENCODER
    try:
        encoder = get_encoder(encoder) if isinstance(encoder, str) else encoder
    except ParameterError as e:
        if args.encoder:
            raise
        raise ModelFormatError(f"{model.model_path_}: the model records encoder {encoder!r}, which "
                               f"this mediacluster cannot load ({e}); pass --encoder") from None
    ids, paths, vecs, skipped = [], [], [], []
    # every input found before any is embedded: a mistyped last path fails at once
    # (audio models read audio files; files given one by one are embedded in one pass)
    colls = join_files([collect(src, media=encoder.media) for src in args.paths])
    for coll in colls:
        emb = embed_collection(coll, encoder=encoder, cache_dir=args.cache_dir, batch_size=args.batch_size,
                               workers=args.workers, progress=not args.quiet)
        skipped += list(emb.skipped)
        if len(emb):
            ids += list(emb.ids)
            paths += list(emb.paths) if emb.paths is not None else [None] * len(emb)
            vecs.append(np.asarray(emb.vectors, dtype=np.float32))
    if not vecs:
        # files of the other media kind are listed too, with what this model reads (their reason
        # from collect() advises --media, a flag of `cluster`: the model decides it here)
        own = MEDIA_EXTENSIONS[encoder.media]
        ours = [Path(str(s.path)).suffix.lower() in own for s in skipped]
        print(f"error: nothing could be embedded (this model reads {encoder.media} files"
              f"{'' if any(ours) else ', and none were found'})", file=sys.stderr)
        for s, mine in zip(skipped, ours):
            why = s.reason if mine else f"not an {encoder.media} file (this model reads {encoder.media} files)"
            print(f"  skipped {printable(s.path)}: {printable(why)}", file=sys.stderr)
        return 2
    if encoder.media == "audio":  # a file over 300 s was placed by its excerpts: say so, as cluster does
        from ..ingest.audio import long_recordings
        from .cluster import print_long_recordings

        print_long_recordings(long_recordings(paths), None)
    X = np.vstack(vecs)
    res = model.predict_details(X)
    df = pd.DataFrame({
        "id": text_series(ids), "path": text_series(paths), "cluster": res["labels"], "status": res["status"],
        "probability": np.round(res["probabilities"], 6),
        "assigned_cluster": res["cluster"], "confidence": np.round(res["confidence"], 6),
        "novel": res["novel"], "novelty": np.round(res["novelty"], 6),  # NaN from an older model
    })
    # the run's automatic names, the names the model was published with, a hand-given names.yaml
    path = res.get("path")
    names = pipeline_names(model)
    by_level = level_names(model, names)
    if path is not None:  # the model has levels: each item's cluster at every level, coarse to fine
        for lv in range(len(path["labels"])):
            df[f"level_{lv}"] = path["labels"][lv]
            df[f"level_{lv}_probability"] = np.round(path["probabilities"][lv], 6)
            if by_level.get(lv):
                df[f"level_{lv}_name"] = [by_level[lv].get(int(c)) for c in path["labels"][lv]]
    if names:
        # how sure each name is: a person's is sure, an automatic one as measured when the model was
        # saved; empty (null) where not measured, as for every name of a model saved before
        sure = {c: r["name_sure"] for c, r in pipeline_names_sure(model, names).items()}
        df["name"] = [names.get(int(c)) for c in df["cluster"]]
        df["name_sure"] = pd.array([sure.get(int(c)) for c in df["cluster"]], dtype="boolean")
        df["assigned_name"] = [names.get(int(c)) for c in df["assigned_cluster"]]
        df["assigned_name_sure"] = pd.array([sure.get(int(c)) for c in df["assigned_cluster"]], dtype="boolean")
    # a model saved with `cluster --dedup` carries a duplicate index: is each item a repost?
    index = read_from_model(model.model_path_, root=args.collection_root)
    if index is not None and index.files_found is False:
        print(f"note: the model's training files are not under {printable(index.root)}; near-duplicates "
              "are checked by hashes and vectors only (pass --collection-root DIR)", file=sys.stderr)
    matches = index.query_many(paths, X) if index is not None else None
    if matches is not None:
        df["duplicate_of"] = [m.id if m else None for m in matches]
        df["duplicate_group"] = [m.group if m else -1 for m in matches]
        df["duplicate_kind"] = [m.kind if m else None for m in matches]
        df["duplicate_distance"] = [m.distance if m else None for m in matches]
    if args.similar:  # "more like this": the items nearest to each new one (same details, same cluster)
        sim = model.similar(X, k=args.similar, same_cluster=args.same_cluster, details=res,
                            collection_root=args.collection_root, exclude=args.exclude,
                            offset=args.similar_offset, per_cluster=args.per_cluster)
        lv = sim["level"]
        # how sure each neighbour's name is at that level, by the service's rule (/v1/similar)
        recs = pipeline_names_sure(model, names) if lv is None else level_names_sure(model, by_level).get(lv, {})
        near = neighbour_records(sim, names if lv is None else by_level.get(lv, {}),
                                 {int(c): r.get("name_sure") for c, r in recs.items()})
        df["similar"] = [json_text([{k: n[k] for k in ("id", "path", "row", "similarity", "cluster", "name",
                                                       "name_sure")}
                                    for n in r], indent=None) for r in near]
    if args.out:
        write_table(args.out, df)
        print(f"wrote {len(df)} assignments to {printable(args.out)}")
    else:
        w = sys.stdout.write
        tree = path is not None
        named = "assigned_name" in df.columns
        w("cluster\tstatus\tprobability\tassigned_cluster\tconfidence\tnovelty\t" + ("name\t" if named else "")
          + ("levels\t" if tree else "") + "path\n")
        for i, r in enumerate(df.itertuples(index=False)):
            levels = "/".join(str(int(c)) for c in path["labels"][:, i]) + "\t" if tree else ""
            # an unsure name, marked as the report does (the column is pandas' nullable boolean: a numpy
            # bool or NA per row, never the object False, so compare by value)
            sure = r.assigned_name_sure if named else None
            guess = "?" if sure is not None and not pd.isna(sure) and not sure else ""
            name = f"{printable(r.assigned_name or '-')}{guess}\t" if named else ""
            # novelty: "-" from a model saved before it was kept (NaN)
            nov = "-" if np.isnan(r.novelty) else f"{r.novelty:.3f}"
            w(f"{r.cluster}\t{r.status}\t{r.probability:.3f}\t{r.assigned_cluster}\t{r.confidence:.3f}\t{nov}\t"
              f"{name}{levels}{printable(r.path if r.path is not None else r.id)}"
              + (f"\t{printable(matches[i])}" if matches is not None and matches[i] else "") + "\n")
            if args.similar:
                for n in json.loads(df["similar"].iloc[i]):
                    sim_text = "-" if n["similarity"] is None else f"{n['similarity']:.3f}"
                    where = n["path"] or n["id"] or f"row {n['row']}"
                    w(f"  similar {sim_text}\t{n['cluster']}\t{printable(where)}\n")
    for s in skipped:
        print(f"skipped {printable(s.path)}: {printable(s.reason)}", file=sys.stderr)
    return 3 if skipped else 0
