"""``mediacluster evaluate RUN_OR_MODEL``: internal and external scores of a clustering.

Reads a run folder written by ``mediacluster cluster`` or a saved model folder
(``mediacluster.evaluation``), and prints and writes ``evaluation.json`` (atomically; into the
run or model folder, or ``--out``, which a published model version needs: it is never changed) with, for
each labelling (``fitted``: the clustering as found, -1 noise / -2 outliers kept; ``assigned``:
after noise assignment, when the run has one; ``curated``: after a person's edits in the studio):

* internal scores in the original embedding space and in the reduced space (when a model with
  its reduced coordinates is available), see :func:`mediacluster.metrics.internal_scores`;
* external scores against true labels when there are any (``items.parquet`` ``label`` column or
  ``--labels FILE``), see :func:`mediacluster.metrics.external_scores`;
* coverage, always;
* with true labels, the items whose label disagrees with their cluster (an item whose label is
  not the label of most of its cluster's items), counted per labelling and listed, for the last
  labelling scored (curated, else assigned, else fitted), in ``label_issues.csv`` beside
  evaluation.json (``--out FILE``: ``FILE``'s name with ``.label_issues.csv``), with the
  suggested label and the item number the studio's API takes, and each labelled item's
  neighbour vote (``--vote-k`` nearest labelled items, cosine, the clustering aside: the share
  carrying another label, the file's order, highest first; items it alone flags listed too; an
  item whose label no other labelled item carries is not judged by it, only counted); see
  :func:`mediacluster.evaluation.label_issues` and :func:`mediacluster.evaluation.neighbour_vote`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import OutputError, ParameterError
from ..evaluation import VOTE_K, evaluate, load_source
from ..fileio import check_writable, output_error, write_json, write_table
from ..persist import version_store
from ..rundir import EVALUATION, LABEL_ISSUES, RunDir, find_run
from . import SUMMARIES, printable


def add_parser(sub):
    p = sub.add_parser(
        "evaluate", help=SUMMARIES["evaluate"],
        description=__doc__.split("\n\n")[0])
    p.add_argument("source", metavar="RUN_OR_MODEL", help="run folder (mediacluster cluster --out; its models/ folder means the run) or model folder")
    p.add_argument("--labels", default=None,
                   help="CSV/Parquet manifest with an 'id' or 'path' column (absolute, or relative to the "
                        "run's collection root) and a 'label' column (overrides labels stored in the run)")
    p.add_argument("--out", default=None, help="where to write evaluation.json (a folder: FOLDER/evaluation.json; default: "
                        "inside RUN_OR_MODEL; needed for a published model version such as RUN/models/v0001, which is "
                        "never changed)")
    p.add_argument("--sample-size", type=int, default=10000,
                   help="silhouette on a seeded random sample of this many items (default 10000)")
    p.add_argument("--dbcv-sample-size", type=int, default=2000, help="DBCV sample size (O(n^2); default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples")
    p.add_argument("--labeling", choices=["fitted", "assigned", "curated", "both"], default="both",
                   help="score the clustering as fitted (noise kept), after noise assignment, as curated in "
                   "the studio, or 'both': each of these the run has")
    p.add_argument("--no-original", action="store_true",
                   help="skip internal scores in the original (embedding) space (the slow part for large d)")
    p.add_argument("--vote-k", type=int, default=VOTE_K,
                   help=f"label issues: each labelled item's label is voted on by its this many nearest labelled "
                        f"items (cosine on the run's vectors; default {VOTE_K}; 0: no vote)")
    p.add_argument("--label-depth", type=int, default=None, metavar="N",
                   help="score against the first N folders of each label only: with folder labels such as "
                        "'drawn/Flags' and 'photo/archery', --label-depth 1 scores against drawn / photo (a coarser "
                        "labelling, to compare with the coarse levels); default: the whole label")
    return p


LABELINGS = {"fitted": "as fitted: -1 noise / -2 outliers kept", "assigned": "after noise assignment",
             "curated": "as curated in the studio (curated_cluster)"}


def _f(v, fmt=".3f"):
    return "n/a" if v is None else format(v, fmt)


def print_report(res: dict, out=None) -> None:
    w = (out or sys.stdout).write
    w(f"evaluation of {printable(res['source'])} ({res['kind']}, {res['n_items']} items)\n")
    if res.get("labels_file"):
        w(f"true labels: {printable(res['labels_file'])} ({res['labels_matched']})\n")
    if res.get("label_depth"):
        w(f"labels cut to their first {res['label_depth']} folder(s)\n")
    for name, e in res["labelings"].items():
        desc = LABELINGS.get(name, name)
        w(f"\n[{name}] {desc}: {e['n_clusters']} clusters, coverage {100 * e['coverage']:.1f}% "
          f"(noise {e['noise']}, outliers {e['outliers']})\n")
        for space, s in e["internal"].items():
            sil = s["silhouette"]
            ci = f" [{_f(sil['ci_low'])}, {_f(sil['ci_high'])}]" if sil.get("ci_low") is not None else ""
            samp = f"sample {sil['n_used']}" if sil["sampled"] else f"all {sil['n_used']}"
            w(f"  internal, {space} space ({s['dims']}-d), clustered items only: "
              f"silhouette {_f(sil['value'])}{ci} ({samp}), DBCV {_f(s['dbcv'])} "
              f"(sample {s['dbcv_details']['n_used']}), Calinski-Harabasz {_f(s['calinski_harabasz'], '.1f')}, "
              f"Davies-Bouldin {_f(s['davies_bouldin'])}\n")
            if "silhouette_all" in s:
                w(f"    silhouette of all items, noise+outliers as one extra group: "
                  f"{_f(s['silhouette_all']['value'])}\n")
        x = e.get("external")
        if x:
            w(f"  external vs {x['n_classes']} classes ({x['n_labelled']} labelled items, "
              f"coverage {100 * x['coverage']:.1f}%):\n")
            for part, label in (("all", "all items (noise = one group)"), ("clustered", "clustered items only")):
                p = x[part]
                w(f"    {label:<31} NMI {_f(p['nmi'])}  AMI {_f(p['ami'])}  ARI {_f(p['ari'])}  "
                  f"ACC {_f(p['acc'])}  (n={p['n']})\n")
        li = e.get("label_issues")
        if li is not None:
            mixed = li["clusters_mixed"]
            w(f"  label issues: {li['items']} of {li['labelled']} labelled items do not have the label of "
              f"most of their cluster" + (f"; {mixed} cluster(s) with no label held by more than half: "
                                          + ", ".join(str(m["cluster"]) for m in li["mixed"])
                                          + (" ..." if mixed > len(li["mixed"]) else "") if mixed else "")
              + "\n")
            nv = li.get("neighbour_vote")
            if nv is not None:
                w(f"  neighbour vote: {nv['items']} of {nv['labelled']} labelled items are outvoted by their "
                  f"{nv['k']} nearest labelled items (another label has the most votes, counted against the share "
                  f"of them its own label could hold)"
                  + (f"; {nv['alone']} not judged: no other labelled item has their label" if nv.get("alone") else "")
                  + "\n")
    levels = res.get("levels")
    if levels:
        # AMI: NMI rises with the number of clusters by chance alone, and would favour the finest levels
        best = max(levels, key=lambda e: e["ami"] if e["ami"] is not None else -1.0)
        w(f"\nevery level against the {levels[0]['n_classes']} classes (as fitted, every item clustered; "
          f"best AMI: level {best['level']}):\n")
        for e in levels:
            w(f"  level {e['level']:>2} ({e['n_clusters']:>4} clusters)  NMI {_f(e['nmi'])}  AMI {_f(e['ami'])}  "
              f"ARI {_f(e['ari'])}  ACC {_f(e['acc'])}"
              + ("  <- best" if e is best else "") + ("  <- in use" if e["level"] == res.get("level_in_use") else "")
              + "\n")
    for note in res["notes"]:
        w(f"note: {printable(note)}\n")


def print_issues(table, labeling: str, out=None, show: int = 10) -> None:
    """The first ``show`` items of the label-issues table, one line each."""
    w = (out or sys.stdout).write
    if not len(table):
        return
    voted = table["neighbour_disagreement"].notna().any()
    w(f"\nlabel issues [{labeling}], most doubtful first (item: path: label -> "
      + ("its neighbours' label, its cluster's" if voted else "its cluster's label") + "):\n")
    for r in table.head(show).itertuples():
        head = f"  {r.item}: {printable(r.path if r.path is not None else r.id)}: {printable(r.label)}"
        if voted:
            against = f"{100 * r.neighbour_disagreement:.0f}% of its neighbours vote against its label"
            head += (f" -> {printable(r.neighbour_label)} ({against})" if r.neighbour_label != r.label
                     else f": its neighbours carry its label ({100 * r.neighbour_label_share:.0f}% of them; {against})")
            if r.cluster_disagrees:
                head += f"; cluster {r.cluster}: {printable(r.cluster_label)} {100 * r.cluster_label_share:.0f}%"
                head += ": a clustering mistake?" if r.neighbour_label == r.label else ""
            else:
                head += "; in no cluster" if r.cluster < 0 else f"; its cluster ({r.cluster}) does not flag it"
            w(head + "\n")
            continue
        w(head + f" -> {printable(r.cluster_label)} (cluster {r.cluster}: {100 * r.cluster_label_share:.0f}% "
          f"{printable(r.cluster_label)}, {100 * r.label_share:.0f}% {printable(r.label)})\n")
    if len(table) > show:
        w(f"  ... {len(table) - show} more\n")


def run(args) -> int:
    store = None if args.out else version_store(args.source)
    if store is not None:  # refused before any work: the scores would have nowhere to go
        run_dir = find_run(store.root.parent)
        raise ParameterError(f"{args.source} is a published model version, kept as it was published "
                             "(assign and serve read it): give --out FILE for evaluation.json"
                             + (f", or evaluate the run folder {run_dir.path}" if run_dir is not None else ""),
                             "--out")
    out_dir = bool(args.out) and (Path(args.out).is_dir() or args.out.endswith(("/", os.sep)))
    if out_dir:  # made before the work, so that a folder that cannot be made costs none
        try:
            Path(args.out).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise output_error(e, Path(args.out)) from e
    if args.label_depth is not None and args.label_depth < 1:
        raise ParameterError(f"--label-depth must be >= 1, got {args.label_depth}", "label-depth")
    src = load_source(Path(args.source))
    # where evaluation.json goes, checked before the scores (minutes on a large run) are computed
    if args.out:
        check_writable(Path(args.out) / EVALUATION if out_dir else Path(args.out))
    else:
        try:
            check_writable((RunDir.open(src["path"]).path if src["kind"] == "run" else Path(args.source))
                           / EVALUATION)
        except OutputError as e:
            raise OutputError(f"{e}; or give --out FILE for evaluation.json") from e
    tables: dict = {}
    res = evaluate(src, sample_size=args.sample_size, dbcv_sample_size=args.dbcv_sample_size,
                   seed=args.seed, labeling=args.labeling, original=not args.no_original,
                   labels_file=args.labels, tables=tables, vote_k=args.vote_k or None,
                   label_depth=args.label_depth)
    print_report(res)
    issues = tables.get("label_issues")
    if issues is not None:
        print_issues(issues, res["label_issues_of"])
    written = []
    if args.out:  # a folder (existing, or 'new/'): its evaluation.json, as in a run folder
        out = Path(args.out) / EVALUATION if out_dir else Path(args.out)
        write_json(out, res)
        if issues is not None:
            written.append(out.with_name(LABEL_ISSUES if out_dir else out.stem + "." + LABEL_ISSUES))
            write_table(written[-1], issues)
    elif src["kind"] == "run":
        run_dir = RunDir.open(src["path"])  # RUN for RUN/models
        with run_dir.writing("evaluate"):
            out = run_dir.write_evaluation(res)
            if issues is not None:
                written.append(run_dir.write_label_issues(issues))
    else:  # a model folder saved on its own (not a published version: refused above)
        out = Path(args.source) / EVALUATION
        write_json(out, res)
        if issues is not None:
            written.append(out.with_name(LABEL_ISSUES))
            write_table(written[-1], issues)
    print(f"written: {printable(out)}" + "".join(f", {printable(p)}" for p in written))
    return 0
