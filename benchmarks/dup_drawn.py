"""False reposts among drawn originals: which distinct emoji does ``DuplicateFinder`` join, and why?

Every OpenMoji emoji is a distinct original (after dropping pictures whose decoded pixels are
identical to another's: OpenMoji ships some variants as the same picture), so every link the
finder makes among them is false. This script fits the finder on all of them
(``/work/data/openmoji/groups/<group>/*.png``, or ``--openmoji DIR``) and counts

* false links and the groups holding more than one emoji, per OpenMoji group and per link kind;
* for each perceptual link, which branch of the photometric check let it through (the colours
  agree, or one image counts as colourless so colour was not compared), and for each geometric
  link the verifier's figures (inliers, overlap, ncc, chroma, saturation).

With ``--reposts`` it also scores the OpenMoji part of the repost benchmark
(``benchmarks/duplicates.py``'s items in ``benchmarks/out/duplicates``, built there first): recall
per repost kind and false pairs, so a stricter check can be seen to keep the true reposts.
``--social DIR`` counts the groups of the social-media loop's collection
(``benchmarks/social_loop.py --work DIR``) that hold more than one original.

``--param name=value`` sets finder parameters (repeatable), to compare variants.

Usage::

    flock /tmp/mc-bench.lock python benchmarks/dup_drawn.py --reposts --social /tmp/socialday
    flock /tmp/mc-bench.lock python benchmarks/dup_drawn.py --resolution   # 16/32/64 px, photos too

Needs ``MEDIACLUSTER_SHARED`` pointing at the shared folder when the repo is not beside it (for
``--reposts`` / ``--resolution``, which build the repost benchmark's items).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OPENMOJI = Path("/work/data/openmoji/groups")
KIND_NAMES = ("exact", "perceptual", "geometric", "semantic")


def _embed(paths: list[str]) -> np.ndarray:
    from mediacluster.data import Collection
    from mediacluster.embed import embed_collection

    emb = embed_collection(Collection(ids=paths, paths=paths), progress=True)
    if emb.ids != paths:
        raise SystemExit(f"embedding skipped {len(paths) - len(emb.ids)} files")
    return np.asarray(emb.vectors, np.float32)


def openmoji_originals(root: Path) -> tuple[list[str], list[str]]:
    from mediacluster.ingest import load_image

    paths, groups, seen = [], [], set()
    for g in sorted(os.listdir(root)):
        for f in sorted(os.listdir(root / g)):
            p = str(root / g / f)
            key = hashlib.blake2b(load_image(p).tobytes(), digest_size=16).hexdigest()
            if key in seen:
                continue
            seen.add(key)
            paths.append(p)
            groups.append(g)
    return paths, groups


def link_figures(f, links) -> list[dict]:
    """Per false link: kind, which check passed it and its figures."""
    from mediacluster.duplicates.verify import GeometricVerifier, thumb_pairs

    out = []
    sig = f.signatures_
    per = links[links["kind"] == 1]
    if len(per):
        ncc, chroma, sat, mir = thumb_pairs(sig.thumbs, per["i"], per["j"])
        for (i, j, _, d), n, c, s, m in zip(per.tolist(), ncc, chroma, sat, mir):
            out.append({"i": i, "j": j, "kind": "perceptual", "bits": float(d), "ncc": float(n),
                        "chroma": float(c), "sat": float(s), "mirrored": bool(m),
                        "passed_by": "colour agrees" if c <= f.max_chroma else "one image colourless"})
    geo = links[links["kind"] == 2]
    if len(geo):
        v = GeometricVerifier(f.geometric_check(), f.photometric_check())
        for i, j, _, d in geo.tolist():
            ok, info = v.verify(f.paths_[i], f.paths_[j])
            c, s = info.get("chroma", np.nan), info.get("sat", np.nan)
            out.append({"i": i, "j": j, "kind": "geometric", "cos": 1 - float(d), **info,
                        "passed_by": "colour agrees" if c <= f.max_chroma else "one image colourless"})
    return out


def false_links(paths: list[str], groups: list[str], X: np.ndarray, params: dict) -> dict:
    from mediacluster.duplicates import DuplicateFinder

    f = DuplicateFinder(progress=True, **params)
    t, cpu = time.perf_counter(), time.process_time()
    f.fit(paths, X)
    dt, dcpu = time.perf_counter() - t, time.process_time() - cpu
    L = f.links_
    by_kind = Counter(KIND_NAMES[k] for k in L["kind"].tolist())
    by_group: dict[str, Counter] = defaultdict(Counter)
    for i, j, k, _ in L.tolist():
        g = groups[i] if groups[i] == groups[j] else f"{groups[i]} / {groups[j]}"
        by_group[g][KIND_NAMES[k]] += 1
    sizes = Counter(f.labels_[f.labels_ >= 0].tolist())
    grp_by_og: dict[str, list[int]] = defaultdict(list)
    for lab, size in sizes.items():
        members = np.flatnonzero(f.labels_ == lab)
        og = Counter(groups[m] for m in members).most_common(1)[0][0]
        grp_by_og[og].append(size)
    figs = link_figures(f, L)
    passed = Counter((x["kind"], x["passed_by"]) for x in figs)
    return {"params": params, "n": len(paths), "links": len(L), "by_kind": dict(by_kind),
            "by_group": {g: dict(c) for g, c in sorted(by_group.items())},
            "groups": len(sizes), "items_in_groups": int(sum(sizes.values())),
            "largest": max(sizes.values()) if sizes else 0,
            "groups_by_og": {g: [len(v), int(sum(v))] for g, v in sorted(grp_by_og.items())},
            "passed_by": {f"{k} / {p}": c for (k, p), c in sorted(passed.items())},
            "figures": [{**x, "a": os.path.relpath(paths[x["i"]], OPENMOJI),
                         "b": os.path.relpath(paths[x["j"]], OPENMOJI)} for x in figs],
            "seconds": dt, "cpu": dcpu}


def repost_scores(params: dict) -> dict:
    """The repost benchmark's OpenMoji items alone: recall per kind, false pairs."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import duplicates as bench

    from mediacluster.duplicates import DuplicateFinder

    items = bench.build(bench.OUT, 1.0)
    items = [it for it in items if it["set"] == "openmoji"]
    paths = [it["path"] for it in items]
    X = _embed(paths)
    f = DuplicateFinder(progress=True, **params).fit(paths, X)
    P = bench.Pairs(items)
    H = P.hist(bench.labels_rows(f.labels_), 2)
    r = P.scores(H, 0, P.last_cls)
    return {k: r[k] for k in ("precision", "recall", "fp", "tp", "recall_pairs")} | {
        k[2:]: r[k] for k in r if k.startswith("R_")}


def social_groups(work: Path, params: dict) -> dict:
    """Groups of the social loop's collection that hold more than one original."""
    from mediacluster.duplicates import DuplicateFinder

    rows = list(csv.DictReader(open(work / "collection.csv")))
    paths = [r["path"] for r in rows]
    X = _embed(paths)
    f = DuplicateFinder(progress=True, **params).fit(paths, X)
    orig_of = {}
    for k, r in enumerate(rows):
        orig_of[k] = k if r["role"] == "original" else paths.index(r["of"]) if r["of"] in paths else int(r["of"])
    multi, by_kind = 0, Counter()
    for lab in set(f.labels_[f.labels_ >= 0].tolist()):
        members = np.flatnonzero(f.labels_ == lab)
        origs = {orig_of[m] for m in members}
        if len(origs) > 1:
            multi += 1
            by_kind[rows[members[0]]["kind"]] += 1
    reposts = [k for k, r in enumerate(rows) if r["role"] != "original"]
    found = sum(1 for k in reposts if f.labels_[k] >= 0 and f.labels_[k] == f.labels_[orig_of[k]])
    return {"groups": f.n_groups_, "multi_original_groups": multi, "multi_by_kind": dict(by_kind),
            "reposts_with_original": f"{found}/{len(reposts)}"}


def _thumb(path: str, side: int, mirror: bool = False) -> np.ndarray:
    from PIL import Image, ImageOps

    from mediacluster.ingest import load_image

    im = load_image(path)
    if mirror:
        im = ImageOps.mirror(im)
    return np.asarray(im.convert("RGB").resize((side, side), Image.Resampling.BOX), np.float32)


def resolution(false_figs: list[dict], sides=(16, 32, 64), source: str = "openmoji") -> dict:
    """The thumbnail check at other sides than the finder's 16 px, read from the files: the false
    perceptual links among originals vs the reposts of ``source`` (a set of the repost
    benchmark) the perceptual rule is for."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import duplicates as bench

    from mediacluster.duplicates.verify import compare_thumbs

    items = [it for it in bench.build(bench.OUT, 1.0) if it["set"] == source]
    orig = {it["group"]: it["path"] for it in items if it["kind"] == "original"}
    pairs = [(orig[it["group"]], it["path"], it["kind"]) for it in items
             if it["group"] and it["kind"] in ("jpeg", "resize", "watermark", "flip", "brightness", "grey", "gif")]
    if source == "openmoji":
        pairs += [(str(OPENMOJI / x["a"]), str(OPENMOJI / x["b"]), "false") for x in false_figs
                  if x["kind"] == "perceptual"]
    out: dict = {}
    for side in sides:
        rows = []
        for a, b, kind in pairs:
            ta = _thumb(a, side)
            best = None
            for m in (False, True):
                tb = _thumb(b, side, m)
                ncc, chroma, _ = compare_thumbs(ta, tb)
                if best is None or ncc > best[0]:
                    best = (float(ncc), float(chroma), _local_residual(ta, tb))
            rows.append((kind, *best))
        out[side] = rows
    return out


def _local_residual(a: np.ndarray, b: np.ndarray, block: int = 4) -> float:
    """Largest mean |difference| of the standardised grey levels over ``block`` x ``block``
    tiles: a differing detail (an emblem, a hand) is local, re-encoding noise is spread."""
    from mediacluster.duplicates.verify import _Y

    ya, yb = a @ _Y, b @ _Y
    za = (ya - ya.mean()) / max(float(ya.std()), 1e-3)
    zb = (yb - yb.mean()) / max(float(yb.std()), 1e-3)
    s = za.shape[0] // block
    return float(np.abs(za - zb)[:s * block, :s * block].reshape(s, block, s, block).mean((1, 3)).max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--openmoji", default=str(OPENMOJI))
    ap.add_argument("--param", action="append", default=[], help="finder parameter name=value")
    ap.add_argument("--reposts", action="store_true")
    ap.add_argument("--social", default=None)
    ap.add_argument("--resolution", action="store_true",
                    help="the thumbnail check at 16/32/64 px: false perceptual links vs OpenMoji reposts")
    ap.add_argument("--json", default=None, help="write every figure here")
    args = ap.parse_args()
    from mediacluster.config import parse_param

    params = dict(parse_param(p) for p in args.param)
    load0 = " ".join(f"{x:.2f}" for x in os.getloadavg())
    paths, groups = openmoji_originals(Path(args.openmoji))
    X = _embed(paths)
    res = {"load_start": load0, "false": false_links(paths, groups, X, params)}
    if args.reposts:
        res["reposts"] = repost_scores(params)
    if args.social:
        res["social"] = social_groups(Path(args.social), params)
    if args.resolution:
        res["resolution"] = resolution(res["false"]["figures"])
        for source in ("imagenette", "sports100"):  # photos: does a finer check keep their reposts?
            res[f"resolution_{source}"] = resolution([], sides=(32,), source=source)
    res["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=float))
    short = {k: v for k, v in res["false"].items() if k != "figures"}
    print(json.dumps({**res, "false": short}, indent=1, default=float))


if __name__ == "__main__":
    main()
