"""``mediacluster cluster PATH --out DIR``: folder / manifest / vectors -> clusters."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from .. import stages
from ..config import load_config, parse_param, pipeline_from_config
from ..duplicates.collection import audio_rule, vectors_rule
from ..naming.support import MOSTLY_UNSURE_NOTE
from ..rundir import RUN_JSON
from ..workflow import cluster_folder
from . import (
    SUMMARIES,
    add_folder_labels,
    add_manifest_columns,
    add_retry_bad,
    folder_labels,
    manifest_columns,
    printable,
)
from .report import add_report_argument, check_report_arguments, report_after


def add_parser(sub):
    p = sub.add_parser("cluster", help=SUMMARIES["cluster"])
    p.add_argument("input", help="folder of images, CSV/Parquet manifest, or .npy/.npz/Parquet vectors")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--encoder", default=None,
                   help="encoder name; images: efficientnet-lite0 (default), efficientnet-lite0-int8 "
                        "(int8 copy, about half the CPU per image, made once on first use) or "
                        "clip:openai/clip-vit-base-patch32 or clip:/path/to/local/model; audio: mfcc "
                        "(default, MFCC statistics), resemblyzer (speaker), clap:laion/clap-htsat-unfused "
                        "or clap:/local/dir, birdnet (BirdNET v2.4, model licence CC BY-NC-SA 4.0: "
                        "NON-COMMERCIAL use only)")
    p.add_argument("--media", choices=("auto", "image", "audio"), default="auto",
                   help="which files to cluster: auto (default) takes the majority kind of a mixed "
                        "folder and lists the other kind as skipped; one run embeds one kind")
    p.add_argument("--seed", type=int, default=0, help="seed of every random step (the run is reproducible from it)")
    add_folder_labels(p, "take ground-truth labels from sub-folder names (evaluation only, never fitting)")
    add_manifest_columns(p)
    add_retry_bad(p)
    p.add_argument("--cache-dir", default=None,
                   help="embedding cache folder (default: the user cache, $MEDIACLUSTER_CACHE or "
                        "~/.cache/mediacluster, shared by every run on the machine)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="files per encoder call (default 16)")
    p.add_argument("--workers", type=positive_int, default=None, help="decoding threads")
    p.add_argument("--no-names", dest="names", action="store_false",
                   help="do not name the clusters (names come from WordNet or CLIP zero-shot)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    g = p.add_argument_group("large collections (see mediacluster.scale and mediacluster.executors)")
    g.add_argument("--fit-sample", type=fit_sample_arg, default="auto", metavar="N|auto|all",
                   help="fit the pipeline on a random sample of N items and assign every other item "
                        "with the fitted model, batch by batch; 'auto' (default) fits on everything up "
                        "to 60,000 items and on a 40,000-item sample above (chosen by measurement, "
                        "benchmarks/RESULTS.md 'Scale'); 'all' always fits on everything. A .npy or "
                        "Parquet vector input is then streamed from disk, never loaded whole")
    g.add_argument("--batch-rows", type=positive_int, default=65_536,
                   help="rows per assignment batch (memory: about rows x dim x 4 bytes x 3)")
    g.add_argument("--no-csv", dest="csv", action="store_false",
                   help="write assignments.parquet only (the CSV copy of a million-row run is ~100 MB)")
    g.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="where embedding and assignment run: this process (default) or a Ray cluster "
                        "(needs the optional extra: pip install 'mediacluster[ray]')")
    g.add_argument("--ray-address", default=None,
                   help="Ray cluster to join (e.g. ray://head:10001 or auto); default: start a local one")
    g.add_argument("--ray-workers", type=positive_int, default=None,
                   help="Ray actors for embedding / assignment (default: one per CPU of the cluster)")
    g = p.add_argument_group("duplicates (see mediacluster.duplicates)")
    g.add_argument("--dedup", action="store_true",
                   help="find reposts and near-duplicates first (exact copies, perceptual hash + "
                        "colour check, embedding neighbours confirmed by keypoint alignment), fit on one "
                        "representative per group and give every member its representative's cluster; "
                        "assignments gain duplicate_group and duplicate_of, OUT gets duplicates.parquet, "
                        "and --save-model stores the duplicate index for assign/serve; with --fit-sample or "
                        "--executor ray the groups are found over every item and the sample is drawn among "
                        "their representatives; audio clips: exact copies, and embedding neighbours confirmed "
                        "by an audio fingerprint (spectrograms aligned in time)")
    g.add_argument("--dedup-param", action="append", default=[], metavar="NAME=VALUE",
                   help="duplicate finder parameter, repeatable, e.g. hash_radius=5 (see DuplicateFinder)")
    g = p.add_argument_group("curation (see mediacluster.studio.carry)")
    g.add_argument("--carry-from", default=None, metavar="OLD_RUN",
                   help="carry what a person did in the studio on a previous run (names, junk marks, "
                        "tags, moved items) to the new run's matching clusters (a mutual majority of "
                        "shared items), as edits in OUT/edits.sqlite; what was kept, split, merged or "
                        "is new is printed and written to OUT/carry.json. OLD_RUN may be OUT itself. "
                        "With --save-model, a carry that carried something is published at once as "
                        "the next model version (the studio's publish), so a service watching OUT "
                        "serves the curation")
    add_pipeline_args(p)
    add_report_argument(p, names_run=True)
    return p


def add_pipeline_args(p) -> None:
    """Stage selection flags (shared with other commands that fit a pipeline)."""
    g = p.add_argument_group("pipeline stages (see mediacluster.pipeline; a --config file sets the same)")
    g.add_argument("--config", default=None, help="YAML/JSON pipeline config: reducer/outliers/clusterer "
                   "as {name: ..., params: {...}}, assign_noise, reference_size, ...")
    for kind, example in (("reducer", "n_components=10"), ("outliers", "n_neighbors=20"),
                          ("clusterer", "min_cluster_size=100")):
        names = "|".join((["auto"] if kind != "outliers" else []) + stages.names(kind))
        g.add_argument(f"--{kind}", default=None, help=f"{kind} stage: {names}")
        g.add_argument(f"--{kind}-param", action="append", default=[], metavar="NAME=VALUE",
                       help=f"{kind} parameter, repeatable, e.g. {example}")
    g.add_argument("--level", type=level_arg, default=None, metavar="N|auto",
                   help="with a clusterer that has levels (hierarchy: the default; evoc): which level "
                        "is the flat answer in assignments' cluster column; 0 = coarsest, 'auto' "
                        "(default) = the clusterer's own choice. Every level is written as the columns "
                        "level_0 .. level_<L-1> and in hierarchy.npz")
    g.add_argument("--max-unclustered", type=share_arg, default=None, metavar="SHARE",
                   help="at most this share of the items (0 <= SHARE < 1, e.g. 0.1) stays noise or "
                        "outlier before noise is assigned; the weakest members are kept unclustered. "
                        "Default: whatever the clusterer says (the hierarchy assigns every item)")
    g.add_argument("--no-assign-noise", dest="assign_noise", action="store_false", default=None,
                   help="leave noise/outliers unassigned (default: give each its nearest cluster + confidence)")
    g.add_argument("--save-model", action="store_true",
                   help="also save the fitted pipeline as a model version in OUT/models (for "
                        "`mediacluster assign OUT` and `mediacluster serve OUT`)")


def _parsed(text: str, convert, expected: str):
    """``convert(text)``, or argparse's usage error saying what was expected (before any work)."""
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a bad value is refused before any work)."""
    v = _parsed(text, int, "a positive integer")
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    v = _parsed(text, float, "a number")
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return v


def level_arg(text: str):
    """argparse type for --level: 'auto' or a level index >= 0."""
    if text.strip().lower() == "auto":
        return "auto"
    v = _parsed(text, int, "a level number (0 = coarsest) or 'auto'")
    if v < 0:
        raise argparse.ArgumentTypeError(f"levels are numbered from 0 (the coarsest), got {v}")
    return v


def share_arg(text: str) -> float:
    """argparse type for --max-unclustered: a share in [0, 1)."""
    v = _parsed(text, float, "a share between 0 and 1 such as 0.1")
    if not math.isfinite(v) or not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"must be a share in [0, 1) (0.1 = at most 10% unclustered), got {text}")
    return v


def fit_sample_arg(text: str):
    """argparse type for --fit-sample: 'auto', 'all' or a count >= 3."""
    if text in ("auto", "all"):
        return text
    v = _parsed(text, int, "a number of items, 'auto' or 'all'")
    if v < 3:
        raise argparse.ArgumentTypeError(f"at least 3 items are needed to fit, got {v}")
    return v


def build_pipeline(args):
    """Pipeline from --config plus command-line overrides (flags win)."""
    cfg = load_config(args.config) if args.config else {}
    for kind in ("reducer", "outliers", "clusterer"):
        name = getattr(args, kind)
        params = dict(parse_param(t) for t in getattr(args, f"{kind}_param"))
        if name is None and not params:
            continue
        base = cfg.get(kind)
        if isinstance(base, dict):
            base_name, base_params = base.get("name"), dict(base.get("params") or {})
        else:
            base_name, base_params = base, {}
        if name is not None and name != base_name:
            base_params = {}
        cfg[kind] = {"name": name or base_name or "auto", "params": {**base_params, **params}}
    cfg.setdefault("random_state", args.seed)
    return pipeline_from_config(cfg, source=args.config, assign_noise=args.assign_noise,
                                level=getattr(args, "level", None),
                                max_unclustered=getattr(args, "max_unclustered", None))


def run(args) -> int:
    vocabulary = check_report_arguments(args, names_run=True)
    if vocabulary is not None:  # before any work: without a text tower it would be ignored in silence
        from ..encoders import get_encoder
        from ..errors import ParameterError

        if not args.encoder or not get_encoder(args.encoder).has_text:
            raise ParameterError("--vocabulary names the clusters zero-shot through an encoder's text tower: "
                                 "give --encoder clip:MODEL (images) or clap:MODEL (audio); "
                                 f"{args.encoder or 'the default encoder'} names by ImageNet classes or not at all",
                                 "vocabulary")
    if args.dedup_param and not args.dedup:  # the finder's parameters, with no finder run: said, not passed over
        from ..errors import ParameterError

        raise ParameterError("--dedup-param sets the duplicate finder of --dedup: give --dedup too", "dedup_param")
    pipe = build_pipeline(args)
    before = None
    if args.carry_from is not None:  # refused before any work when it is not a run
        from ..studio.carry import check_previous

        before = check_previous(args.carry_from)
    res = cluster_folder(
        args.input, args.out, encoder=args.encoder, seed=args.seed, pipeline=pipe, media=args.media,
        labels_from_folders=folder_labels(args), cache_dir=args.cache_dir,
        batch_size=args.batch_size, workers=args.workers, progress=not args.quiet,
        params={k: v for k, v in vars(args).items() if not k.startswith("_")},
        save_model=args.save_model, name=args.names, fit_sample=args.fit_sample,
        executor=args.executor, ray_address=args.ray_address, ray_workers=args.ray_workers,
        batch_rows=args.batch_rows, csv=args.csv,
        dedup=args.dedup, dedup_params=dict(parse_param(t) for t in args.dedup_param),
        hold_model=args.carry_from is not None,  # served only once the carry is published (below)
        vocabulary=vocabulary, columns=manifest_columns(args),
    )
    published = False  # the bare fit was published held with --carry-from (see publish_carried)
    try:
        print_summary(res.summary, res.embeddings.skipped, res.out)
        print_long_recordings(res.run.info.get("long_recordings") if res.run is not None else None, RUN_JSON)
        unlisted = res.run.info.get("unlisted_files") if res.run is not None else None
        if unlisted:
            print(f"not in the manifest: {'' if unlisted['complete'] else 'at least '}{unlisted['count']} "
                  f"file(s) under {printable(unlisted['folder'])} that no row names, not read (e.g. "
                  f"{', '.join(printable(os.path.relpath(x, unlisted['folder'])) for x in unlisted['examples'])}; "
                  f"{RUN_JSON} unlisted_files); cluster the folder to read every file")
        pathless = res.run.info.get("items_without_path") if res.run is not None else None
        if pathless:
            print(f"items without a path: {pathless['count']} (their path column is empty; e.g. "
                  f"{', '.join(printable(i) for i in pathless['ids'])}); the others keep theirs")
        dups = res.run.info.get("duplicates") if res.run is not None else None
        if dups:
            print(f"duplicates: {dups['groups']} groups holding {dups['items_in_groups']} items "
                  f"(largest {dups['largest']}); each group fitted as one item; see duplicates.parquet")
            note = audio_rule((res.run.info.get("encoder") or {}).get("media"),
                              dict(parse_param(t) for t in args.dedup_param))
            if note:
                print(note)
            if vectors_rule(dups):
                print(vectors_rule(dups))
            note = few_fitted(dups, res.summary.get("levels"))
            if note:
                print(note)
        note = small_one(res.summary.get("levels"))
        if note and not dups:
            print(note)
        if res.model:
            print(f"model: {printable(res.model)}")
        for box, n in res.inbox_taken.items():
            print(f"inbox: {n} kept uploads of {printable(box)} are in this run: no longer pending "
                  "(`mediacluster inbox` lists them)")
        if res.kept_previous is not None:
            print(f"the run this one replaced held hand-given names or studio edits: kept as "
                  f"{printable(res.kept_previous)}")
        if args.carry_from is not None:
            from ..studio.carry import carry_curation, resolve_previous
            from .studio import print_carry

            prev = resolve_previous(args.carry_from, res.out, before, res.kept_previous)
            if prev is None:
                print(f"carry: the run {before} that {printable(args.out)} held had no edits or hand-given "
                      "names (it was not kept): nothing to carry")
            else:
                carried = carry_curation(prev, res.out, cache_dir=args.cache_dir, progress=not args.quiet)
                print_carry(carried)
                if res.model and any((carried.get("carried") or {}).values()):
                    publish_carried(res.out)
                    published = True
    finally:
        if res.model and args.carry_from is not None and not published:  # nothing carried, or a failure
            res.run.models.use(Path(res.model).name, load=None)  # serve the fit (just written)
    rep = report_after(args, res.out, rename=False)  # named against --vocabulary by the run
    if res.level_refused:
        print_level_refused(res.level_refused, res.summary.get("levels"))
        return 2  # what was asked for (a level) could not be given; the run is kept
    if rep == 2:
        return 2  # the report asked for could not be written (said above; the run is kept)
    # exit code 0 when everything was used, 3 when some files were skipped (the run still finished)
    return 3 if res.embeddings.skipped or rep == 3 else 0


def publish_carried(out) -> None:
    """``--save-model`` with a carry that carried something: publish the curated model (the
    studio's publish) at once, so that a service watching OUT serves the carried names, junk
    marks and tags within its poll, not the bare fit until someone publishes by hand. The bare
    fit was published held (``persist.ModelStore.hold``): the service never switched to it (it
    showed the carried names, read from the run, without the junk marks and tags)."""
    from ..studio.session import Studio

    st = Studio(out, lazy_map=True, warm=False)
    try:
        res = st.publish(client="cluster --carry-from", note="the carried curation, before review")
    finally:
        st.close()
    print(f"model: {printable(res['path'])} (the carried curation, published: it predicts the curated "
          f"cluster of {100 * res['agreement']:.2f}% of {res['checked']} items)")


def print_skipped(skipped, where: str, shown: int = 10) -> None:
    """The first ``shown`` skipped files with their reasons (the rest are in ``where``)."""
    for item in skipped[:shown]:
        sys.stdout.write(f"  {printable(item.path)}: {printable(item.reason)}\n")
    if len(skipped) > shown:
        sys.stdout.write(f"  ... and {len(skipped) - shown} more (see {where})\n")


def print_level_refused(refused: dict, levels: dict | None) -> None:
    """``--level N`` past the fitted tree's last level (known only after the fit): say which
    levels there are; the run was written at the automatic level, not thrown away."""
    if not levels:
        sys.stderr.write(f"error: --level {refused['level']}: {refused['message']}\n")
        return
    counts = levels["n_clusters"]
    last = len(counts) - 1
    sys.stderr.write(
        f"error: --level {refused['level']}: this fit has {len(counts)} levels, 0..{last} (clusters per "
        f"level, coarse to fine: {', '.join(str(k) for k in counts)})\n"
        f"the run is written at the automatic level {levels['level']} ({counts[levels['level']]} clusters); "
        f"every level is in its columns level_0 .. level_{last}; re-run with --level N (0..{last}) "
        "to put another in the cluster column\n")


def print_long_recordings(longs, where: str | None) -> None:
    """One line saying that the audio files over 300 s were embedded from excerpts (listed in
    ``where``; None: named on the line, at most 5, as ``assign`` has no file to list them in)."""
    if not longs:
        return
    from ..ingest.audio import EXCERPTS, READ_SECONDS

    if where is None:
        named = ", ".join(f"{printable(os.path.basename(x['path']))} ({x['duration_s']:.0f} s)" for x in longs[:5])
        which = f": {named}" + (f" and {len(longs) - 5} more" if len(longs) > 5 else "")
    else:
        which = f" (which ones: {where} long_recordings)"
    sys.stdout.write(f"long recordings: {len(longs)} file(s) over {READ_SECONDS:.0f} s embedded from "
                     f"{EXCERPTS} excerpts of {READ_SECONDS / EXCERPTS:.0f} s spread over each{which}\n")


def small_one(levels: dict | None) -> str | None:
    """Why a small collection's automatic level, in use, is one cluster: too few items for the
    graph's criterion, and no split of them stood out from one homogeneous group
    (``stages.hierarchy.small_collection_cut``); the finer levels are there."""
    if not levels or not levels.get("small_collection") or len(levels["n_clusters"]) < 2 \
            or levels["level"] != levels.get("auto_level") or levels["n_clusters"][levels["level"]] != 1:
        return None
    return ("note: the automatic level is one cluster: the collection is small, and no split of its items "
            "stands out from what one homogeneous group gives (a significance test at 1%); the finer "
            f"levels split it (--level 1: {levels['n_clusters'][1]} clusters, ..., --level "
            f"{len(levels['n_clusters']) - 1}: {levels['n_clusters'][-1]})")


def few_fitted(dups: dict, levels: dict | None) -> str | None:
    """What to say when ``--dedup`` left the fit so few items that its automatic level is one
    cluster: the duplicate groups may be the groups the person is after (a meme template's
    captioned variants and reposts are near-duplicates of one another), so the answer is in
    ``duplicate_group`` or the finer levels, not in the one cluster shown."""
    if not levels or len(levels["n_clusters"]) < 2 or levels["level"] != levels.get("auto_level") \
            or levels["n_clusters"][levels["level"]] != 1:
        return None
    fitted = dups["items"] - dups["duplicates"]  # one item per group, and the items in none
    return (f"note: the fit saw {fitted} distinct items ({dups['items_in_groups']} of {dups['items']} items are in "
            f"{dups['groups']} duplicate groups, each fitted once), and its automatic level is one cluster. "
            "Where the groups are the kinds you are after (a meme template's captioned variants are "
            "near-duplicates of it), duplicate_group holds them and the finest levels split them "
            f"(--level {len(levels['n_clusters']) - 1}: {levels['n_clusters'][-1]} clusters); without --dedup "
            "every item counts in the fit")


def print_summary(s: dict, skipped, out) -> None:
    w = sys.stdout.write

    def plural(k: int, word: str) -> str:
        return f"{k} {word}" + ("" if k == 1 else "s")

    def share(k: int) -> str:
        return f"{100 * k / s['items']:.1f}%" if s["items"] else "0.0%"

    w(f"\nmediacluster: {plural(s['items'], 'item')} -> {plural(s['clusters'], 'cluster')}, "
      f"noise {s['noise']} ({share(s['noise'])}), outliers {s['outliers']} ({share(s['outliers'])}), "
      f"coverage {100 * s['coverage']:.1f}%\n")
    lv = s.get("levels")
    if lv:
        counts = lv["n_clusters"]
        w(f"levels: {len(counts)} (clusters per level, coarse to fine: "
          f"{', '.join(str(k) for k in counts)}); in use: level {lv['level']} ({plural(counts[lv['level']], 'cluster')}"
          f"{', the automatic choice' if lv['level'] == lv['auto_level'] else ''}; --level N to pick another)\n")
    nm = s.get("names")
    if nm:  # how sure the automatic names are (naming.support)
        w(f"names: {nm['sure']} of {nm['measured']} sure"
          + (f", {nm['measured'] - nm['sure']} unsure (marked ? in the report)" if nm["sure"] < nm["measured"] else "")
          + "\n")
        if nm.get("mostly_unsure"):
            w(f"  {nm.get('note') or MOSTLY_UNSURE_NOTE}\n")
    w(f"skipped: {s['skipped']} file(s)\n")
    print_skipped(skipped, RUN_JSON)
    w("time per stage: " + ", ".join(f"{k} {v:.1f}s" for k, v in s["timings_s"].items()) + "\n")
    w(f"results: {printable(out)}/assignments.parquet, clusters.json, run.json\n")
