"""The whole loop as a social-media team runs it, end to end, through the product's interfaces.

A collection that looks like our users' is drawn from the shared labelled sets (seeded):
skewed kinds (a dominant kind of dog photos, OpenMoji emoji of three groups as "stickers",
two sports, garbage trucks, a few MNIST digits as "screenshots"), plus reposts of some
originals made with Pillow (low-quality JPEG, resize, crop 10-20%, a caption bar, a mirror,
a phone-screenshot frame). A held-out set of *new uploads* holds unseen originals of the same
kinds and fresh reposts of collection items.

Then, as a team would, through the CLI and real HTTP only:

1. ``mediacluster cluster COLL --out RUN --dedup --report --save-model``
2. ``mediacluster serve RUN`` (the automatic model, v0001) and every new upload posted as
   image bytes, one request each: the "before curation" answers
3. ``mediacluster studio RUN`` driven through its HTTP API as the page drives it: split the
   mixed clusters, merge the clusters of one kind, mark the screenshots as junk, rename every
   cluster after its kind (the kinds stand in for what a person sees), publish (v0002)
4. the running service hot-switched (``POST /v1/reload``; the LATEST watch would do it within
   ``--poll`` s) and every upload posted again: the "after curation" answers, ``/v1/clusters``
5. a second curated version (a rename, one more junk cluster) published (v0003), the service
   switched again and the uploads posted a third time: the answers follow

and measured: sizes, NMI of the automatic level against the kinds, curation steps, the service's
accuracy on unseen originals and on reposts before and after curation, repost recall and
precision of ``duplicate_of``, per-request latency, each step's time.

    python benchmarks/social_loop.py --work /tmp/socialday [--write]

``--scale 0.1`` draws a tenth of every kind (a quick look). The collection is built outside
the repository (``--work``); ``--write`` replaces this script's section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402  (RESULTS.md's sections, the commit measured)
from _loop import (  # noqa: E402  (what the loops share: building, processes, uploads, curation)
    Server,
    check_clusters,
    cli,
    curate,
    edit,
    fresh_folders,
    kind_home,
    latency_summary,
    majority,
    post_uploads,
    reposts,
    start,
    stop_service,
    upload_reposts,
    write_truth,
)

SECTION = "## End to end: a social-media collection (socialday helper)"

#: kind -> (source folder under the data root, items in the collection, unseen new uploads)
KINDS = {
    "dog photos": ("imagenette/val/n02102040", 350, 15),
    "flag stickers": ("openmoji/groups/Flags", 200, 15),
    "smiley stickers": ("openmoji/groups/Smileys & Emotion", 100, 15),
    "food stickers": ("openmoji/groups/Food & Drink", 50, 10),
    "garbage trucks": ("imagenette/val/n03417042", 50, 10),
    "surfing": ("sports100/all/surfing", 25, 5),
    "formula 1": ("sports100/all/formula 1 racing", 20, 5),
    "screenshots": ("mnist/test/7", 10, 3),
}
JUNK_KIND = "screenshots"


def medium(kind: str) -> str:
    """The coarse grouping a team reads off the hierarchy's top: stickers, photos, screenshots."""
    return "stickers" if "sticker" in kind else kind if kind == JUNK_KIND else "photos"
#: kinds the collection lacks, posted as new uploads: does the service call them ``novel``?
NEW_KINDS = {
    "church photos": ("imagenette/val/n03028079", 5),
    "bowling": ("sports100/all/bowling", 5),
    "animal stickers": ("openmoji/groups/Animals & Nature", 5),
}
#: the repost edits a platform puts an image through
EDITS = ("jpeg-low", "resize", "crop", "caption", "flip", "border")
IMAGE_EXT = {".png", ".jpg", ".jpeg"}


# ----------------------------------------------------------------------------- the collection
def _repost(src: Path, dst_stem: Path, edit: str, rng: np.random.Generator) -> Path:
    """A repost of ``src`` (decoded by the package's safe loader, as the product sees it)."""
    from mediacluster.duplicates.reposts import TRANSFORMS
    from mediacluster.ingest import load_image

    im = load_image(src)
    if edit == "jpeg-low":
        out, q = im, int(rng.integers(15, 41))
    elif edit == "crop":  # 10-20% of each side's length cut away, split at random between the sides
        w, h = im.size
        fx, fy = rng.uniform(0.10, 0.20, size=2)
        cw, ch = round(w * fx), round(h * fy)
        left, top = int(rng.integers(0, cw + 1)), int(rng.integers(0, ch + 1))
        out, q = im.crop((left, top, w - (cw - left), h - (ch - top))), 90
    else:
        out, save, _ = TRANSFORMS[edit](im, rng)
        q = int(save.get("quality", 90))
    dst = dst_stem.with_suffix(".jpg")
    out.convert("RGB").save(dst, format="JPEG", quality=q)
    return dst


def build(data: Path, work: Path, scale: float, seed: int) -> dict:
    """Write the collection and the new uploads under ``work``; return the truth tables."""
    rng = np.random.default_rng(seed)
    coll, up = fresh_folders(work)
    originals, unseen = [], []  # (src path, kind)
    for kind, (folder, n, n_new) in KINDS.items():
        n, n_new = max(3, round(n * scale)), max(1, round(n_new * scale))
        files = sorted(p for p in (data / folder).iterdir() if p.suffix.lower() in IMAGE_EXT)
        if len(files) < n + n_new:
            raise SystemExit(f"{data / folder}: {len(files)} images, {n + n_new} needed")
        pick = rng.permutation(len(files))[: n + n_new]
        originals += [(files[i], kind) for i in pick[:n]]
        unseen += [(files[i], kind) for i in pick[n:]]
    # the collection: originals (bytes as they are: the embedding cache knows them) + reposts
    items = []
    order = rng.permutation(len(originals))
    for j, i in enumerate(order):
        src, kind = originals[i]
        dst = coll / f"post_{j:05d}{src.suffix.lower()}"
        shutil.copyfile(src, dst)
        items.append({"path": str(dst), "kind": kind, "role": "original", "of": "", "edit": ""})
    orig_items = list(items)
    items += reposts(rng, orig_items, coll, EDITS, _repost, per=(1, 4))  # 6% of the originals, 1-3 times
    # the new uploads: unseen originals + fresh reposts of collection originals
    uploads = []
    for j, (src, kind) in enumerate(unseen):
        dst = up / f"new_{j:04d}{src.suffix.lower()}"
        shutil.copyfile(src, dst)
        uploads.append({"path": str(dst), "kind": kind, "role": "original", "of": "", "edit": ""})
    for kind, (folder, n) in NEW_KINDS.items():
        files = sorted(p for p in (data / folder).iterdir() if p.suffix.lower() in IMAGE_EXT)
        for j, i in enumerate(rng.permutation(len(files))[: max(1, round(n * max(scale, 0.2)))]):
            dst = up / f"other_{kind.replace(' ', '_')}_{j:02d}{files[i].suffix.lower()}"
            shutil.copyfile(files[i], dst)
            uploads.append({"path": str(dst), "kind": kind, "role": "new kind", "of": "", "edit": ""})
    uploads += upload_reposts(rng, orig_items, up, EDITS, _repost)
    return write_truth(work, items, uploads)


def score(answers: list[dict], uploads: list[dict], item_cluster: dict[str, int], item_group: dict[str, int],
          by_cluster: dict[int, tuple[str, float]], home: dict[str, int], junk: set[int] | None = None,
          names: dict[str, str] | None = None) -> dict:
    """Accuracy on unseen originals and reposts, and duplicate_of recall / precision.

    ``item_cluster``: collection item path -> the served model's cluster for it; ``by_cluster``
    the majority kind of each served cluster; ``home`` each kind's cluster; ``names`` (after
    curation) kind -> the name a person gave its cluster."""
    orig_ok = orig_home = orig_name = orig_noise = n_orig = 0
    rep_ok = n_rep = 0
    tp = fp = fn = 0
    per_edit = defaultdict(lambda: [0, 0])
    missed, false = [], []
    junk = junk or set()
    novel_new, n_new, novel_known = 0, 0, 0
    # the continuous novelty (null from a model saved before it): at 0.95, and the medians
    nov = {role: [a.get("novelty") for a, u in zip(answers, uploads) if a and u["role"] == role
                  and a.get("novelty") is not None] for role in ("original", "repost", "new kind")}
    nov95 = {"new kind": f"{sum(v >= 0.95 for v in nov['new kind'])}/{len(nov['new kind'])}",
             "known": f"{sum(v >= 0.95 for v in nov['original'] + nov['repost'])}/"
                      f"{len(nov['original']) + len(nov['repost'])}"}
    nov_median = {role: float(np.median(v)) if v else None for role, v in nov.items()}
    prob = {role: float(np.median([a["probability"] for a, u in zip(answers, uploads) if a and u["role"] == role] or [np.nan]))
            for role in ("original", "new kind")}
    from sklearn.metrics import normalized_mutual_info_score as nmi

    # the served hierarchy: levels per answer, and the coarsest level against the medium
    orig = [(a, u) for a, u in zip(answers, uploads) if a and u["role"] == "original"]
    path_levels = int(np.median([len(a.get("path") or []) for a, _ in orig])) if orig else 0
    coarse_nmi = (float(nmi([medium(u["kind"]) for _, u in orig], [a["path"][0]["cluster"] for a, _ in orig]))
                  if orig and path_levels else None)
    for a, u in zip(answers, uploads):
        if u["role"] == "new kind":
            n_new += 1
            novel_new += bool(a and a.get("novel"))
            if a and a.get("duplicate_of") is not None:
                fp += 1
                false.append(f"{u['kind']} ({a['duplicate_of'].get('kind')})")
            continue
        novel_known += bool(a and a.get("novel"))
        if not a:
            if u["role"] == "repost":
                n_rep += 1
                fn += 1
            else:
                n_orig += 1
            continue
        got = int(a["assigned_cluster"])
        dup = a.get("duplicate_of")
        if u["role"] == "original":
            n_orig += 1
            orig_noise += int(a["cluster"] < 0)
            if u["kind"] == JUNK_KIND and junk:
                ok = a["status"] == "junk"
                orig_ok += ok
                orig_home += ok
                orig_name += ok
            else:
                orig_ok += by_cluster.get(got, ("?", 0))[0] == u["kind"]
                orig_home += got == home.get(u["kind"], -99)
                if names:
                    orig_name += a.get("assigned_name") == names.get(u["kind"])
            fp += dup is not None
            if dup is not None:
                false.append(f"{u['kind']} ({dup.get('kind')}, distance {float(dup.get('distance') or 0):.3g})")
        else:
            n_rep += 1
            rep_ok += got == item_cluster.get(u["of"], -99)
            want = item_group.get(u["of"])
            hit = dup is not None and (dup.get("id") == u["of"] or (want is not None and want >= 0
                                                                      and dup.get("group") == want))
            tp += hit
            fn += not hit
            fp += dup is not None and not hit
            if not hit:
                missed.append(f"{u['edit']} of a {u['kind']} item" + ("" if dup is None else f" (matched {dup.get('kind')} elsewhere)"))
            per_edit[u["edit"]][0] += hit
            per_edit[u["edit"]][1] += 1
    return {
        "originals": n_orig, "reposts": n_rep,
        "orig_majority_acc": orig_ok / max(n_orig, 1), "orig_home_acc": orig_home / max(n_orig, 1),
        "orig_name_acc": (orig_name / max(n_orig, 1)) if names else None,
        "orig_noise": orig_noise / max(n_orig, 1),
        "repost_cluster_acc": rep_ok / max(n_rep, 1),
        "dup_recall": tp / max(tp + fn, 1), "dup_precision": tp / max(tp + fp, 1) if tp + fp else None,
        "dup_per_edit": {k: f"{v[0]}/{v[1]}" for k, v in sorted(per_edit.items())},
        "dup_missed": missed, "dup_false": false,
        "novel_new_kinds": f"{novel_new}/{n_new}", "novel_known": f"{novel_known}/{n_orig + n_rep}",
        "probability_median": prob, "path_levels": path_levels, "coarse_nmi": coarse_nmi,
        "novelty95": nov95, "novelty_median": nov_median,
    }


# ----------------------------------------------------------------------------- the loop
def loop(work: Path, truth: dict, seed: int, cold: bool = True) -> dict:
    import httpx
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from mediacluster.rundir import RunDir

    res: dict = {"steps": {}, "problems": []}
    run_dir = work / "run"
    coll = truth["collection"]
    uploads = truth["uploads"]
    kind_of = {r["path"]: r["kind"] for r in coll}
    res["sizes"] = {"collection": len(coll), "originals": sum(r["role"] == "original" for r in coll),
                    "uploads_new_kinds": sum(u["role"] == "new kind" for u in uploads),
                    "reposts": sum(r["role"] == "repost" for r in coll),
                    "uploads_unseen": sum(u["role"] == "original" for u in uploads),
                    "uploads_reposts": sum(u["role"] == "repost" for u in uploads),
                    "kinds": {k: sum(r["kind"] == k and r["role"] == "original" for r in coll) for k in KINDS}}

    # 1. cluster
    for old in [run_dir, *work.glob("run.replaced-*")]:  # a previous loop's run and its kept edits
        if old.exists():  # a fresh --work has none
            shutil.rmtree(old)
    cache = work / "cache"  # a fresh embedding cache: the first run of a team embeds everything
    if cache.exists() and cold:
        shutil.rmtree(cache)
    wall, cpu, out = cli(["cluster", str(work / "collection"), "--out", str(run_dir), "--dedup", "--report",
                          "--save-model", "--seed", str(seed), "--quiet"] + (["--cache-dir", str(cache)] if cold else []))
    res["steps"]["cluster --dedup --report --save-model" + (" (fresh embedding cache)" if cold else "")] = {
        "wall_s": wall, "cpu_s": cpu}
    res["output_cluster"] = out
    run = RunDir.open(run_dir)
    asg = run.read_assignments()
    paths = asg["id"].astype(str).tolist()
    kinds = np.array([kind_of[p] for p in paths])
    auto = asg["cluster"].to_numpy()
    res["auto"] = {"clusters": int(len(set(auto[auto >= 0].tolist()))), "noise": float(np.mean(auto < 0)),
                   "nmi": float(nmi(kinds, auto)), "nmi_assigned": float(nmi(kinds, asg["assigned_cluster"])),
                   "kinds": len(KINDS)}
    if "level_0" in asg:
        lv = [c for c in asg.columns if re.fullmatch(r"level_\d+", c)]
        res["auto"]["levels"] = {c: {"k": int(asg[c].nunique()), "nmi": round(float(nmi(kinds, asg[c])), 3)}
                                 for c in sorted(lv, key=lambda c: int(c.split("_")[1]))}
    dups = run.read_duplicates()
    group_of = dict(zip(dups["id"].astype(str), dups["duplicate_group"].astype(int)))
    rep_rows = [r for r in coll if r["role"] == "repost"]
    found = sum(group_of.get(r["path"], -1) >= 0 and group_of.get(r["path"]) == group_of.get(r["of"]) for r in rep_rows)
    res["auto"]["collection_reposts_grouped"] = f"{found}/{len(rep_rows)}"
    # groups that hold more than one original (precision of the grouping the fit relies on)
    source = {r["path"]: r["of"] or r["path"] for r in coll}
    members = defaultdict(list)
    for p, g in group_of.items():
        if g >= 0:
            members[g].append(p)
    mixed = [m for m in members.values() if len({source[p] for p in m}) > 1]
    res["auto"]["groups"] = len(members)
    res["auto"]["groups_mixing_originals"] = len(mixed)
    res["auto"]["mixed_by_kind"] = dict(Counter(kind_of[m[0]] for m in mixed))
    res["auto"]["largest_mixed"] = max((len({source[p] for p in m}) for m in mixed), default=0)

    # 2. serve the automatic model; uploads before curation
    srv = Server(["serve", str(run_dir), "--port", "0", "--poll", "1"])
    res["steps"]["serve: start to listening"] = {"wall_s": srv.start_s}
    lat_all = []
    try:
        with httpx.Client(base_url=srv.base, timeout=120) as c:
            answers, lat, fail = post_uploads(c, uploads)
            lat_all += lat
            res["problems"] += fail
            asg_auto = dict(zip(paths, asg["assigned_cluster"].astype(int)))
            res["before"] = score(answers, uploads, asg_auto, group_of, majority(asg["assigned_cluster"].to_numpy(), kinds),
                                  kind_home(asg["assigned_cluster"].to_numpy(), kinds))
            res["before"]["version"] = answers[0].get("version")
            res["answers_before"] = answers

            # 3. curate in the studio, through its HTTP API as the page does
            st = Server(["studio", str(run_dir), "--port", "0", "--no-browser"])
            res["steps"]["studio: start to listening"] = {"wall_s": st.start_s}
            try:
                cur = curate(st.base, kinds, res, JUNK_KIND)
                # 4. hot switch, uploads after curation
                t0 = time.perf_counter()  # (or the watch, if it saw LATEST first: either way v0002)
                rl = c.post("/v1/reload").json()
                res["steps"]["serve: POST /v1/reload (v0001 -> curated)"] = {"wall_s": time.perf_counter() - t0}
                res["reload_1"] = rl
                while c.get("/v1/model").json()["version"] != cur["version"] and time.perf_counter() - t0 < 60:
                    time.sleep(0.05)
                answers2, lat, fail = post_uploads(c, uploads)
                lat_all += lat
                res["problems"] += fail
                asg = RunDir.open(run_dir).read_assignments()
                cc = asg["curated_cluster"].to_numpy()
                res["curated"] = {"clusters": int(len(set(cc[cc >= 0].tolist()))), "nmi": float(nmi(kinds, cc))}
                item_c = dict(zip(asg["id"].astype(str), cc.astype(int)))
                res["after"] = score(answers2, uploads, item_c, group_of, majority(cc, kinds), kind_home(cc, kinds),
                                     junk=set(cur["junk"]), names=cur["names"])
                res["after"]["version"] = answers2[0].get("version")
                res["answers_after"] = answers2
                res["clusters_after"] = check_clusters(c.get("/v1/clusters").json(), cur, res)
                # the report of the curated run shows the names a person gave
                wall, cpu, _ = cli(["report", str(run_dir), "--quiet"])
                res["steps"]["report (after curation)"] = {"wall_s": wall, "cpu_s": cpu}
                html = (run_dir / "report" / "index.html").read_text(encoding="utf-8")
                absent = sorted(n for n in cur["names"].values() if n not in html)
                res["report_names_missing"] = absent
                if absent:
                    res["problems"].append(f"the report after curation lacks the names {absent}")
                served_names = {a.get("assigned_name") for a in answers2 if a}
                res["after"]["served_names"] = sorted(n for n in served_names if n)
                # 5. a second curated version; the service follows
                cur2 = curate_again(st.base, cur, res)
                t0 = time.perf_counter()  # this time the service's watch of models/LATEST switches
                while c.get("/v1/model").json()["version"] != cur2["version"] and time.perf_counter() - t0 < 60:
                    time.sleep(0.05)
                res["reload_2"] = {"version": c.get("/v1/model").json()["version"], "by": "the LATEST watch"}
                res["steps"]["serve: the LATEST watch switches (publish -> served, --poll 1)"] = {
                    "wall_s": time.perf_counter() - t0}
                answers3, lat, fail = post_uploads(c, uploads)
                lat_all += lat
                res["problems"] += fail
                res["second"] = follow(answers2, answers3, uploads, cur, cur2, res)
                res["clusters_second"] = check_clusters(c.get("/v1/clusters").json(), cur2, res)
            finally:
                st.stop()
                res["output_studio"] = "".join(st.lines)
            res["model"] = c.get("/v1/model").json()
    finally:
        stop_service(srv, res)
    res["latency_ms"] = latency_summary(lat_all)
    return res


def curate_again(base: str, cur: dict, res: dict) -> dict:
    """The second version: the flags renamed, the food stickers marked junk."""
    import httpx

    names = dict(cur["names"])
    junk = list(cur["junk"])
    with httpx.Client(base_url=base, timeout=300) as c:
        by_name = {e["name"]: e["id"] for e in c.get("/api/clusters").json()["clusters"] if not e.get("junk")}
        flags = by_name.get("flag stickers", next(iter(by_name.values())))
        food = by_name.get("food stickers", [i for i in by_name.values() if i != flags][-1])
        edit(c, {"kind": "rename", "cluster": flags, "name": "flags of the world"})
        names["flag stickers"] = "flags of the world"
        edit(c, {"kind": "junk", "clusters": [food]})
        junk.append(food)
        r = c.post("/api/publish", headers={"X-Mediacluster": "1"})
        if r.status_code != 200:
            raise SystemExit(f"publish -> HTTP {r.status_code}: {r.text[:300]}")
        res["publish_2"] = r.json()
        clusters = {e["id"]: e for e in c.get("/api/clusters").json()["clusters"]}
    return {**cur, "names": names, "junk": junk, "clusters": clusters, "version": res["publish_2"]["version"],
            "food": food, "flags": flags}


def follow(a2: list[dict], a3: list[dict], uploads: list[dict], cur: dict, cur2: dict, res: dict) -> dict:
    """Did the answers follow the second version (names, junk)?"""
    flags = [(x, y) for x, y, u in zip(a2, a3, uploads) if x and y and x.get("assigned_cluster") == cur2["flags"]]
    food = [(x, y) for x, y, u in zip(a2, a3, uploads) if x and y and x.get("assigned_cluster") == cur2["food"]]
    out = {"version": a3[0].get("version") if a3 and a3[0] else None,
           "flags_renamed": f"{sum(y.get('assigned_name') == 'flags of the world' for _, y in flags)}/{len(flags)}",
           "food_junk": f"{sum(y.get('status') == 'junk' for _, y in food)}/{len(food)}",
           "same_cluster": float(np.mean([x.get("assigned_cluster") == y.get("assigned_cluster")
                                          for x, y in zip(a2, a3) if x and y]))}
    return out


# ----------------------------------------------------------------------------- the section
def render(res: dict, cmd: str, load: str, commit: str) -> str:
    s, a, b, af = res["sizes"], res["auto"], res["before"], res["after"]

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}%"

    def fmt3(x):
        return "n/a" if x is None else f"{x:.3f}"

    lines = [SECTION, "",
             f"`{cmd}` (load average before: {load}; 2 cores shared; commit {commit}).",
             "",
             "The loop a social-media team runs, through the CLI and real HTTP only: "
             "`cluster --dedup --report --save-model` -> `serve` the automatic model -> curate in the "
             "studio's HTTP API -> publish -> `POST /v1/reload` -> a second curated version, which the "
             "service's watch of `models/LATEST` switches to. "
             "The curation stands in for a person by the known kinds: split every cluster whose commonest "
             "kind is under 70%, merge the clusters of one kind, junk the screenshots, name each cluster "
             "after its kind.",
             "",
             f"- collection: {s['collection']} images = {s['originals']} originals "
             f"({', '.join(f'{k} {n}' for k, n in s['kinds'].items())}) + {s['reposts']} reposts; "
             f"new uploads: {s['uploads_unseen']} unseen originals + {s['uploads_reposts']} reposts of collection items "
             f"(edits {', '.join(EDITS)}) + {s['uploads_new_kinds']} images of kinds the collection lacks "
             f"({', '.join(NEW_KINDS)})",
             f"- automatic level: {a['clusters']} clusters for {a['kinds']} kinds, NMI {a['nmi']:.3f} "
             f"({pct(a['noise'])} noise; NMI with noise assigned {a['nmi_assigned']:.3f}); "
             f"collection reposts grouped with their original {a['collection_reposts_grouped']}; of the "
             f"{a['groups']} duplicate groups `--dedup` found, {a['groups_mixing_originals']} hold more than one "
             f"original ({', '.join(f'{k} {v}' for k, v in a['mixed_by_kind'].items())}; the largest "
             f"{a['largest_mixed']} different originals; the fit takes each group as one item)",
             f"- curation: {sum(res['curation_steps'].values())} edits ({', '.join(f'{k} {v}' for k, v in res['curation_steps'].items())}) "
             f"-> {res['curated']['clusters']} clusters, NMI {res['curated']['nmi']:.3f}; published "
             f"{res['publish_1']['version']} (agreement {res['publish_1']['agreement']:.3f}). Splits: "
             + "; ".join(res.get("splits", [])),
             "",
             "| service answers | before curation (automatic model) | after curation |",
             "|---|---|---|",
             f"| model version | {b['version']} | {af['version']} |",
             f"| unseen originals in the cluster whose commonest kind is theirs | {pct(b['orig_majority_acc'])} | {pct(af['orig_majority_acc'])} |",
             f"| unseen originals in their kind's cluster (the one holding most of the kind) | {pct(b['orig_home_acc'])} | {pct(af['orig_home_acc'])} |",
             f"| unseen originals answered with their kind's curated name (junk: status junk) | - | {pct(af['orig_name_acc'])} |",
             f"| unseen originals answered as noise (`cluster` -1) | {pct(b['orig_noise'])} | {pct(af['orig_noise'])} |",
             f"| reposts in their original's cluster | {pct(b['repost_cluster_acc'])} | {pct(af['repost_cluster_acc'])} |",
             f"| repost recall of `duplicate_of` (names the original or its group) | {pct(b['dup_recall'])} | {pct(af['dup_recall'])} |",
             f"| precision of `duplicate_of` | {pct(b['dup_precision'])} | {pct(af['dup_precision'])} |",
             f"| images of kinds the collection lacks answered `novel` | {b['novel_new_kinds']} | {af['novel_new_kinds']} |",
             f"| unseen originals and reposts answered `novel` | {b['novel_known']} | {af['novel_known']} |",
             "| `novelty` >= 0.95: kinds the collection lacks / unseen originals and reposts | "
             f"{b['novelty95']['new kind']} / {b['novelty95']['known']} | "
             f"{af['novelty95']['new kind']} / {af['novelty95']['known']} |",
             "| median `novelty`: unseen originals / reposts / kinds the collection lacks | "
             + " | ".join(" / ".join(fmt3(r["novelty_median"][k]) for k in ("original", "repost", "new kind"))
                          for r in (b, af)) + " |",
             "| served `path`: levels; NMI of its coarsest level against stickers / photos / screenshots "
             f"(unseen originals) | {b['path_levels']}; {fmt3(b['coarse_nmi'])} | {af['path_levels']}; {fmt3(af['coarse_nmi'])} |",
             "| median `probability`: unseen originals / kinds the collection lacks | "
             f"{b['probability_median']['original']:.2f} / {b['probability_median']['new kind']:.2f} | "
             f"{af['probability_median']['original']:.2f} / {af['probability_median']['new kind']:.2f} |",
             "| recall per edit | " + ", ".join(f"{k} {v}" for k, v in b["dup_per_edit"].items()) + " | "
             + ", ".join(f"{k} {v}" for k, v in af["dup_per_edit"].items()) + " |",
             "",
             f"Reposts not recognised (before curation): {'; '.join(b['dup_missed']) or 'none'}. New uploads that are "
             f"no repost but were flagged as one: {'; '.join(b['dup_false']) or 'none'}.",
             "",
             f"Second curated version ({res['publish_2']['version']}: the flags renamed, the food stickers junk), "
             f"switched by the service's watch of `models/LATEST` -> {res['reload_2'].get('version')}: flags answered with the new name "
             f"{res['second']['flags_renamed']}, food uploads with status junk {res['second']['food_junk']}, "
             f"same cluster as before {pct(res['second']['same_cluster'])}. `/v1/clusters` after curation: "
             f"{res['clusters_after']['served']} clusters served for {res['clusters_after']['curated']} curated "
             f"(missing {res['clusters_after']['missing']}, extra {res['clusters_after']['extra']}, "
             f"wrong names {res['clusters_after']['wrong_names']}, junk not marked {res['clusters_after']['junk_not_marked']}; "
             f"after the second version: junk not marked {res['clusters_second']['junk_not_marked']}).",
             "",
             f"Latency of one-image `POST /v1/assign` on loopback, {res['latency_ms']['requests']} sequential requests: "
             f"p50 {res['latency_ms']['p50']:.1f} ms, p95 {res['latency_ms']['p95']:.1f} ms, max {res['latency_ms']['max']:.1f} ms.",
             "",
             "| step | wall s | CPU s |", "|---|---|---|"]
    for k, v in res["steps"].items():
        cpu = f"{v['cpu_s']:.1f}" if "cpu_s" in v else "-"
        lines.append(f"| {k} | {v['wall_s']:.2f} | {cpu} |")
    lines += ["", "Wall seconds of each step as the script saw it (a server's start: from the command to its "
              "\"listening on\" line); CPU seconds of a command: its process tree's user + system time. Found "
              "with this loop and fixed on the socialday branch: a version published by the studio carried no "
              "duplicate index, so after the first curation the service answered `duplicate_of` null for every "
              "repost (recall 92.2% -> 0.0% at commit 5452fad); `/v1/clusters` did not say which clusters were junk; "
              "`assign RUN new/*.jpg` embedded the files one by one. A curated version was flat (every upload's `path` empty after the first publish); the curatedtree branch keeps the run's coarser levels above the curated clusters (the row \"served `path`\" above)."]
    if res["problems"]:
        lines += ["", "Problems seen in this run: " + "; ".join(res["problems"])]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("MEDIACLUSTER_DATA", "/work/data"))
    ap.add_argument("--work", default="/tmp/socialday")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--warm-cache", action="store_true",
                    help="cluster through the user's embedding cache (default: a fresh one, everything embedded)")
    _results.add_common_args(ap, seed=True)
    args = ap.parse_args(argv)
    work, load, truth, build_s = start(build, args)
    res = loop(work, truth, args.seed, cold=not args.warm_cache)
    res["steps"] = {"build the collection (Pillow)": {"wall_s": build_s}, **res["steps"]}
    (work / "result.json").write_text(json.dumps(res, indent=1, default=str))
    block = render(res, _results.command("social_loop.py", argv, drop=["--write"]), load, _results.commit())
    _results.publish(SECTION, block, args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
