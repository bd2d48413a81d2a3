"""``mediacluster tags {train,suggest,map,evaluate}``: tag suggestions with abstention."""

from __future__ import annotations

import sys
import time

from ..errors import ParameterError
from ..fileio import json_text
from . import SUMMARIES, add_retry_bad, printable


def add_parser(sub):
    p = sub.add_parser("tags", help=SUMMARIES["tags"])
    tsub = p.add_subparsers(dest="tags_command", metavar="TAGS_COMMAND")

    t = tsub.add_parser("train", help="train a tag model from labelled examples or a tagged clustering run")
    t.add_argument("source", nargs="?", help="folder with one sub-folder per tag, CSV/Parquet manifest "
                   "(path,label), or .npz vectors with labels")
    t.add_argument("--out", required=True, help="model folder (model.json + weights.npz)")
    t.add_argument("--run", help="a clustering run folder whose clusters were tagged (instead of SOURCE)")
    t.add_argument("--cluster-tags", help="YAML/CSV: cluster id -> tag, 'other' or 'ignore' (CSV: columns cluster,tag; "
                   "the header row is optional) "
                   "(default: the names a person gave, names.yaml or the studio, are the tags and every "
                   "other cluster is 'other', learned so that the tagger abstains there, never suggested)")
    t.add_argument("--mapping", help="YAML from 'tags map': fine label -> tag (unlisted labels -> other)")
    t.add_argument("--precision", type=float, default=0.9, help="target precision of suggestions")
    t.add_argument("--confidence", type=float, default=0.95, help="confidence of the lower bound on precision")
    t.add_argument("--thresholds", choices=["auto", "per-tag", "global"], default="auto",
                   help="per-tag: each tag certified on its own (a tag that cannot be is never suggested); "
                        "global: one threshold over all tags; auto: whichever covers more (default)")
    t.add_argument("--model", choices=["auto", "logreg", "mlp"], default="auto",
                   help="auto: MLP from 20,000 labelled items on (it won the CIFAR-10 benchmark), else "
                        "the logistic regression")
    t.add_argument("--C", type=float, default=0.1, help="inverse regularisation of the logistic regression")
    t.add_argument("--val-size", type=float, default=0.25,
                   help="share of the labelled items held out to certify the precision (when not cross-fitted)")
    t.add_argument("--seed", type=int, default=0, help="seed of the split and the model")
    t.add_argument("--encoder", default=None,
                   help="encoder of SOURCE's files (default: efficientnet-lite0 for images, mfcc for audio)")
    add_retry_bad(t)
    t.add_argument("--cache-dir", default=None, help="embedding cache (default: the user cache)")
    t.add_argument("--eval", dest="eval_source", help="labelled data to evaluate on after training "
                   "(writes OUT/eval/)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")

    s = tsub.add_parser("suggest", help="suggest tags for files (or say nothing when unsure)")
    s.add_argument("model", help="model folder")
    s.add_argument("paths", nargs="+", help="image or audio files, or folders / manifests of them (the tag model's "
                   "encoder reads them), or vectors files (.npy, .npz, a table with a vector column; the only "
                   "input of a model trained on vectors)")
    s.add_argument("--top-k", type=int, default=1, help="at most this many tags per file (each above its threshold)")
    s.add_argument("--tta", action="store_true", help="average with the horizontally flipped image")
    s.add_argument("--json", action="store_true", help="one JSON object per line")

    m = tsub.add_parser("map", help="propose fine label -> tag mapping through WordNet hypernyms")
    m.add_argument("labels", help="text file (one label per line), folder (sub-folder names), "
                   "'imagenet', or comma-separated labels")
    m.add_argument("--tags", required=True, help="comma-separated tags, e.g. 'animal,food,vehicle,"
                   "plant=n00017222' (tag=wnid picks the sense)")
    m.add_argument("--out", required=True, help="YAML file to write (edit it, then train with --mapping)")

    e = tsub.add_parser("evaluate", help="accuracy, balanced accuracy, confusion, precision-coverage")
    e.add_argument("model", help="model folder")
    e.add_argument("data", help="labelled folder / manifest / .npz vectors")
    e.add_argument("--mapping", help="YAML fine label -> tag (as for training)")
    e.add_argument("--out", required=True, help="folder for metrics.json and the PNGs")
    add_retry_bad(e)
    e.add_argument("--cache-dir", default=None, help="embedding cache (default: the user cache)")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(_tags_parser=p)
    return p


def run(args) -> int:
    cmd = getattr(args, "tags_command", None)
    if cmd is None:
        args._tags_parser.print_help()
        return 2
    return {"train": _train, "suggest": _suggest, "map": _map, "evaluate": _evaluate}[cmd](args)


def _load_examples(source, mapping, encoder, cache_dir, quiet):
    from ..tags.data import examples_from_source

    return examples_from_source(source, encoder=encoder, cache_dir=cache_dir, mapping=mapping or None,
                                progress=not quiet)


def _train(args) -> int:
    from ..tags import train_tagger
    from ..tags.data import examples_from_run
    from ..tags.model import check_settings

    if bool(args.run) == bool(args.source):
        raise ParameterError("give either SOURCE (labelled examples) or --run RUN_DIR (tagged clusters)")
    if args.cluster_tags and not args.run:  # each went unused in silence before
        raise ParameterError("--cluster-tags tags the clusters of --run RUN_DIR; with SOURCE the labels are the "
                             "tags (or --mapping maps them)", "cluster_tags")
    if args.mapping and args.run and not args.eval_source:
        raise ParameterError("--mapping maps the labels of SOURCE (and of --eval) to tags; with --run the tags "
                             "come from --cluster-tags", "mapping")
    check_settings(args.precision, args.confidence, args.C, args.val_size)  # before the examples are embedded
    t0 = time.perf_counter()
    if args.run:
        ex = examples_from_run(args.run, args.cluster_tags)
    else:
        ex = _load_examples(args.source, args.mapping, args.encoder, args.cache_dir, args.quiet)
    t_emb = time.perf_counter() - t0
    tagger = train_tagger(ex, model=args.model, C=args.C, precision=args.precision,
                          confidence=args.confidence, thresholds=args.thresholds,
                          val_size=args.val_size, random_state=args.seed)
    tagger.info.update({"command": "tags train", "params": {k: v for k, v in vars(args).items()
                                                             if not k.startswith("_")},
                        "timings_s": {"examples": round(t_emb, 3),
                                      "fit": round(tagger.classifier.fit_seconds_, 3)}})
    tagger.save(args.out)
    clf = tagger.classifier
    v, cal = clf.validation_, clf.calibration_
    w = sys.stdout.write
    w(f"trained {clf.model_} on {v['n_train']} items ({len(clf.classes_)} labels: "
      f"{', '.join(f'{printable(k)} {n}' for k, n in ex.counts().items())}), validated on {v['n_validation']}"
      + (" (out of fold: each scored by a model fitted without it)" if v.get("mode") == "cv" else "") + "\n")
    w(f"validation accuracy {v['accuracy']:.3f}; calibration: temperature {cal['temperature']:.2f}, "
      f"ECE {cal['ece_before']:.3f} -> {cal['ece_after']:.3f}\n")
    prec = "n/a" if v["precision"] is None else f"{v['precision']:.3f}"
    w(f"thresholds ({clf.threshold_mode_}) for precision >= {clf.precision} at {clf.confidence:.0%} "
      f"confidence: validation coverage {v['coverage']:.3f}, precision {prec} "
      f"(95% CI {v['precision_ci'][0]:.3f}-{v['precision_ci'][1]:.3f})\n")
    for tag, th in clf.tag_thresholds_.items():
        t = "never (not enough evidence)" if th["threshold"] is None else f"{th['threshold']:.3f}"
        w(f"  {printable(tag)}: threshold {t}\n")
    if ex.skipped:
        w(f"skipped {len(ex.skipped)} file(s), e.g. {printable(ex.skipped[0].path)}: "
          f"{printable(ex.skipped[0].reason)}\n")
    w(f"model: {args.out}\n")
    if args.eval_source:
        from pathlib import Path

        from ..tags.evaluate import evaluate_tagger, write_evaluation

        ev = _load_examples(args.eval_source, args.mapping, tagger.encoder_name, args.cache_dir, args.quiet)
        res = evaluate_tagger(clf, ev.vectors, ev.labels)
        write_evaluation(res, Path(args.out) / "eval")
        _print_eval(res, Path(args.out) / "eval")
    return 0


def _suggest(args) -> int:
    from ..tags import Tagger

    tagger = Tagger.load(args.model)
    t = time.perf_counter()
    res = tagger.suggest(args.paths, top_k=args.top_k, tta=args.tta)
    abstain = set(tagger.classifier.abstain_labels or ())
    dt = time.perf_counter() - t
    bad = 0
    for r in res:
        if args.json:
            print(json_text(r, indent=None))
            bad += "skipped" in r
            continue
        if "skipped" in r:
            bad += 1
            print(f"{printable(r['item'])}\tskipped: {printable(r['skipped'])}")
        elif r["tags"]:
            print(f"{printable(r['item'])}\t" + ", ".join(f"#{printable(x['tag'])} ({x['confidence']:.2f})"
                                                   for x in r["tags"]))
        else:
            best = r["top"][0]
            if best["label"] in abstain:  # "other": learned so as to say no tag fits, never a tag itself
                why = f"most like none of the tags ({printable(best['label'])} {best['probability']:.2f})"
            else:
                why = f"best guess {printable(best['label'])} {best['probability']:.2f} is below its threshold"
            print(f"{printable(r['item'])}\t(no suggestion; {why})")
    print(f"{len(res)} item(s) in {dt:.2f}s", file=sys.stderr)
    return 3 if bad else 0


def _map(args) -> int:
    from ..tags.mapping import propose_mapping, read_labels, write_mapping_yaml

    labels = read_labels(args.labels)
    tags = [t for t in args.tags.split(",") if t.strip()]
    ms = propose_mapping(labels, tags)
    write_mapping_yaml(args.out, ms, tags)
    counts: dict[str, int] = {}
    for m in ms:
        counts[m.tag] = counts.get(m.tag, 0) + 1
    print(f"{len(labels)} labels -> " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for m in ms[:20]:
        print(f"  {m.label} -> {m.tag}   ({m.reason})")
    if len(ms) > 20:
        print(f"  ... see {args.out}")
    print(f"mapping written to {args.out} (edit it, then: mediacluster tags train DATA --mapping {args.out})")
    return 0


def _metric(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _print_eval(res: dict, out) -> None:
    a = res["abstention"]
    w = sys.stdout.write
    w(f"accuracy {res['accuracy']:.3f}, balanced accuracy {res['balanced_accuracy']:.3f} (n={res['n']}, "
      f"chance {res['chance_balanced_accuracy']:.3f})\n")
    prec = "n/a" if a["precision"] is None else f"{a['precision']:.3f}"
    w(f"at the model's thresholds (target {a['target_precision']}): coverage {a['coverage']:.3f}, "
      f"precision {prec} (95% CI {a['precision_ci'][0]:.3f}-{a['precision_ci'][1]:.3f})\n")
    for lab, d in res["per_label"].items():
        w(f"  {printable(lab)}: precision {_metric(d['precision'])} recall {_metric(d['recall'])} "
          f"(n={d['support']})\n")
    w(f"written: {out}/metrics.json, confusion.png, precision_coverage.png\n")


def _evaluate(args) -> int:
    from pathlib import Path

    from ..tags import Tagger
    from ..tags.evaluate import evaluate_tagger, write_evaluation

    tagger = Tagger.load(args.model)
    ex = _load_examples(args.data, args.mapping, tagger.encoder_name or "efficientnet-lite0",
                        args.cache_dir, args.quiet)
    res = evaluate_tagger(tagger.classifier, ex.vectors, ex.labels)
    write_evaluation(res, args.out)
    _print_eval(res, Path(args.out))
    return 0
