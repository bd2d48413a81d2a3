"""``mediacluster evaluate RUN_OR_MODEL``: internal and external scores of a clustering.

Reads a run folder written by ``mediacluster cluster`` (``embeddings.npy``, ``items.parquet``,
``assignments.parquet``, optionally ``model/``) or a saved model directory, and prints and writes
``evaluation.json`` (atomically) with, for each labelling (``fitted``: the clustering as found,
-1 noise / -2 outliers kept; ``assigned``: after noise assignment, when the run has one):

* internal scores in the original embedding space and in the reduced space (when a model with
  its reduced coordinates is available), see :func:`mediacluster.metrics.internal_scores`;
* external scores against true labels when there are any (``items.parquet`` ``label`` column or
  ``--labels FILE``), see :func:`mediacluster.metrics.external_scores`;
* coverage, always.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np


def add_parser(sub):
    p = sub.add_parser(
        "evaluate", help="score a run folder or saved model (silhouette, DBCV, NMI/ARI/ACC, coverage)",
        description=__doc__.split("\n\n")[0])
    p.add_argument("source", metavar="RUN_OR_MODEL", help="run folder (mediacluster cluster --out) or model folder")
    p.add_argument("--labels", default=None,
                   help="CSV/Parquet manifest with an 'id' or 'path' column and a 'label' column "
                        "(overrides labels stored in the run)")
    p.add_argument("--out", default=None, help="where to write evaluation.json (default: inside RUN_OR_MODEL)")
    p.add_argument("--sample-size", type=int, default=10000,
                   help="silhouette on a seeded random sample of this many items (default 10000)")
    p.add_argument("--dbcv-sample-size", type=int, default=2000, help="DBCV sample size (O(n^2); default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples")
    p.add_argument("--labeling", choices=["fitted", "assigned", "both"], default="both",
                   help="score the clustering as fitted (noise kept), after noise assignment, or both")
    p.add_argument("--no-original", action="store_true",
                   help="skip internal scores in the original (embedding) space (the slow part for large d)")
    return p


# --------------------------------------------------------------------------------------------
# reading a run or a model
# --------------------------------------------------------------------------------------------
def _read_table(path: Path):
    import pandas as pd

    return pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)


def _find_assignments(run: Path) -> Path | None:
    for name in ("assignments.parquet", "assignments.csv"):
        if (run / name).exists():
            return run / name
    return None


def _load_model(path: Path):
    try:
        from .. import load
    except (ImportError, AttributeError) as e:  # pipeline helper's persistence not present
        raise ValueError(f"cannot read model {path}: this mediacluster has no model loader ({e})") from e
    return load(path)


def load_source(path: Path) -> dict:
    """Everything evaluate needs: ids, original vectors, reduced coords, labellings, truth."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"not found: {path}")
    if not path.is_dir():
        raise ValueError(f"{path} is not a folder; expected a run folder (from 'mediacluster cluster') "
                         f"or a model folder (with model.json)")
    src: dict = {"path": str(path), "notes": []}
    model_dir = None
    run_dir = None
    if (path / "model.json").exists():
        model_dir = path
        if (path.parent / "embeddings.npy").exists() and (path.parent / "items.parquet").exists():
            run_dir = path.parent  # a model saved inside its run folder: use the run's items
        src["kind"] = "model"
    elif (path / "embeddings.npy").exists() or _find_assignments(path) is not None:
        run_dir = path
        src["kind"] = "run"
        if (path / "model" / "model.json").exists():
            model_dir = path / "model"
    else:
        raise ValueError(f"{path} is neither a run folder (embeddings.npy, items.parquet, "
                         f"assignments.parquet) nor a model folder (model.json)")

    pipe = None
    if model_dir is not None:
        try:
            pipe = _load_model(model_dir)
            src["model"] = str(model_dir)
        except ValueError as e:
            if src["kind"] == "model":
                raise
            src["notes"].append(f"model {model_dir} not used: {e}")

    if run_dir is not None:
        from ..run import load_embeddings

        emb = load_embeddings(run_dir)
        src["ids"] = list(emb.ids)
        src["paths"] = emb.paths
        src["truth"] = emb.labels
        src["X"] = emb.vectors
        src["encoder"] = emb.encoder
        a_path = _find_assignments(run_dir)
        if a_path is None:
            if pipe is None:
                raise ValueError(f"{run_dir} has no assignments.parquet/csv and no model: nothing to evaluate")
        else:
            a = _read_table(a_path)
            if "id" in a.columns and list(a["id"].astype(str)) != [str(i) for i in src["ids"]]:
                pos = {str(i): k for k, i in enumerate(a["id"].astype(str))}
                missing = [i for i in src["ids"] if str(i) not in pos]
                if missing:
                    raise ValueError(f"{a_path} lacks {len(missing)} item(s) of items.parquet, e.g. {missing[0]}")
                a = a.iloc[[pos[str(i)] for i in src["ids"]]].reset_index(drop=True)
            if len(a) != len(src["ids"]):
                raise ValueError(f"{a_path} has {len(a)} rows but the run has {len(src['ids'])} items")
            src["fitted"] = a["cluster"].to_numpy(np.int64)
            if "assigned_cluster" in a.columns:
                src["assigned"] = a["assigned_cluster"].to_numpy(np.int64)
        if pipe is not None:
            if len(pipe.labels_) == len(src["ids"]):
                src["Z"] = np.asarray(pipe.embedding_)
                if "fitted" not in src:
                    src["fitted"] = np.asarray(pipe.labels_, np.int64)
                    if getattr(pipe, "cluster_", None) is not None:
                        src["assigned"] = np.asarray(pipe.cluster_, np.int64)
                elif not np.array_equal(np.asarray(pipe.labels_), src["fitted"]):
                    src["notes"].append("model labels differ from assignments; reduced-space scores "
                                        "use the model's reduced coordinates with the run's labels")
            else:
                src["notes"].append(f"model has {len(pipe.labels_)} items, run has {len(src['ids'])}; "
                                    "reduced space not used")
    else:  # a bare model folder
        src["ids"] = None
        src["paths"] = None
        src["truth"] = None
        src["X"] = None
        src["Z"] = np.asarray(pipe.embedding_)
        src["fitted"] = np.asarray(pipe.labels_, np.int64)
        if getattr(pipe, "cluster_", None) is not None:
            src["assigned"] = np.asarray(pipe.cluster_, np.int64)
        src["notes"].append("a model keeps no original vectors (only reduced coordinates and a "
                            "compressed reference set): internal scores in the reduced space only")
    if "Z" not in src and src["kind"] == "run":
        src["notes"].append("reduced space not available (no model/ in the run folder; "
                            "run 'mediacluster cluster --save-model' to keep it)")
    if "assigned" in src and np.array_equal(src["assigned"], src["fitted"]):
        del src["assigned"]  # nothing was assigned: one labelling
    return src


def read_labels(path: Path, ids, paths, n: int) -> tuple[list, str]:
    """Truth labels from a manifest, aligned with the items; returns (labels, how matched)."""
    df = _read_table(Path(path))
    if "label" not in df.columns:
        raise ValueError(f"{path} needs a 'label' column (and 'id' or 'path'); has {list(df.columns)}")
    lab = [None if (v is None or (isinstance(v, float) and np.isnan(v))) else v for v in df["label"]]
    for key, keys in (("id", ids), ("path", paths)):
        if key in df.columns and keys is not None:
            m = {str(k): v for k, v in zip(df[key], lab)}
            hits = sum(str(k) in m for k in keys)
            if hits:
                return [m.get(str(k)) for k in keys], f"matched by {key}: {hits} of {len(keys)} items"
    if ids is None and len(df) == n:
        return lab, f"matched by position ({n} rows; the model stores no item ids)"
    raise ValueError(f"{path}: no row matches the items by 'id' or 'path'")


# --------------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------------
def evaluate(src: dict, sample_size=10000, dbcv_sample_size=2000, seed=0, labeling="both",
             original=True, labels_file=None) -> dict:
    from .. import metrics as M
    from ..run import versions

    res = {"source": src["path"], "kind": src["kind"], "n_items": int(len(src["fitted"])),
           "seed": seed, "sample_size": sample_size, "dbcv_sample_size": dbcv_sample_size,
           "noise_policy": {"internal": M.NOISE_POLICY_INTERNAL, "external": M.NOISE_POLICY_EXTERNAL},
           "notes": list(src["notes"]), "labelings": {}}
    truth = src.get("truth")
    if labels_file is not None:
        truth, how = read_labels(labels_file, src.get("ids"), src.get("paths"), len(src["fitted"]))
        res["labels_file"] = str(labels_file)
        res["labels_matched"] = how
    has_truth = truth is not None and any(t is not None for t in truth)
    names = ["fitted", "assigned"] if labeling == "both" else [labeling]
    names = [k for k in names if k in src]
    if not names:
        raise ValueError(f"labelling {labeling!r} not available in {src['path']} (has: fitted only)")
    t0 = time.perf_counter()
    for name in names:
        lab = src[name]
        entry = {"coverage": M.coverage(lab), "n_clusters": M.n_clusters(lab),
                 "noise": int((lab == -1).sum()), "outliers": int((lab == -2).sum()), "internal": {}}
        kw = dict(sample_size=sample_size, random_state=seed, dbcv_sample_size=dbcv_sample_size)
        if original and src.get("X") is not None:
            entry["internal"]["original"] = M.internal_scores(src["X"], lab, space="original", **kw)
        if src.get("Z") is not None:
            entry["internal"]["reduced"] = M.internal_scores(src["Z"], lab, space="reduced", **kw)
        if has_truth:
            entry["external"] = M.external_scores(truth, lab)
        res["labelings"][name] = entry
    res["seconds"] = round(time.perf_counter() - t0, 2)
    res["versions"] = versions()
    res["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if not has_truth:
        res["notes"].append("no true labels (items.parquet label column empty, no --labels): "
                            "external scores skipped")
    return res


def _f(v, fmt=".3f"):
    return "n/a" if v is None else format(v, fmt)


def print_report(res: dict, out=None) -> None:
    w = (out or sys.stdout).write
    w(f"evaluation of {res['source']} ({res['kind']}, {res['n_items']} items)\n")
    if res.get("labels_file"):
        w(f"true labels: {res['labels_file']} ({res['labels_matched']})\n")
    for name, e in res["labelings"].items():
        desc = ("as fitted: -1 noise / -2 outliers kept" if name == "fitted"
                else "after noise assignment")
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
    for note in res["notes"]:
        w(f"note: {note}\n")


def run(args) -> int:
    from ..io import write_json

    src = load_source(Path(args.source))
    res = evaluate(src, sample_size=args.sample_size, dbcv_sample_size=args.dbcv_sample_size,
                   seed=args.seed, labeling=args.labeling, original=not args.no_original,
                   labels_file=args.labels)
    print_report(res)
    out = Path(args.out) if args.out else Path(args.source) / "evaluation.json"
    write_json(out, res)
    print(f"written: {out}")
    return 0
