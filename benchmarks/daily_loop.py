"""A moderation team's two weeks with the service: cluster, review, publish, serve, re-cluster.

A trust-and-safety team runs the loop every day, through the CLI and real HTTP only:

* **day 0**: 1,500 Imagenette val images (a random draw) are the collection:
  ``mediacluster cluster COLL --out RUN --save-model``; the team reviews it in
  ``mediacluster studio RUN`` driven through its HTTP API as the page drives it (split mixed
  clusters, merge the clusters of one kind, junk the "spam" kind, name every cluster after its
  kind: the kinds stand in for what a person sees; ``_loop.curate``) and publishes.
* **every day**: ``mediacluster serve RUN --workers 2 --keep-uploads INBOX --keep novel
  --keep uncertain`` (a real subprocess) answers the day's uploads (``--per-day`` LOW-HIGH of
  them, posted one per request from two client threads): unseen images of the collection's
  kinds, re-posts of earlier uploads (the same bytes, or re-encoded smaller; also the rest of a
  day once Imagenette val's unseen images run out), and from
  ``--new-kind-from`` (day 4) OpenMoji emoji, a kind the model never saw. An upload the
  service places (not kept by its inbox rule) is filed by the app into the collection
  (``collection/dayNN``); the others wait in the inbox.
* **weekly** (``--recluster-day``, day 7, after its batch): the whole collection plus the inbox
  is clustered again in place with ``--carry-from RUN --save-model`` (the carried curation is
  published at once), the team reviews in the studio only what changed (clusters marked new,
  or split parts without a person's name: named after their kind; clusters of one kind merged),
  publishes v2 while the service keeps serving (a client thread posts uploads the whole time),
  finds v2 wrong (it junked the new emoji cluster by mistake), rolls back with ``mediacluster
  models RUN --use`` to last week's model, fixes the mistake and publishes again.

Measured, per day: the share of uploads the service placed confidently against those it sent
to the inbox (``inbox.sqlite``'s rows), how many new-kind uploads were caught as ``novel`` (and
by ``novelty >= 0.95``), where re-posts went, per-request p50 / p99; and for the week: re-cluster
+ carry time, how many curated names survived the re-cluster, what the person had to redo, and
every failed request while the models were swapped.

    python benchmarks/daily_loop.py --work /tmp/dailyloop [--days 14] [--per-day 150-300] [--write]

Bounded: the whole run takes a few minutes (uploads are embedded by the service; the
collection's images through the user's embedding cache). ``--write`` replaces this script's
section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sqlite3
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402  (RESULTS.md's sections, the commit measured)
from _loop import Server, cli, curate, edit, majority, stop_service, studio_labels  # noqa: E402

SECTION = "## A moderation team's two weeks (dailyloop helper)"

#: Imagenette's folders and the names a person would give them
KIND_NAMES = {"n01440764": "tench", "n02102040": "springer spaniel", "n02979186": "cassette player",
              "n03000684": "chain saw", "n03028079": "church", "n03394916": "french horn",
              "n03417042": "garbage truck", "n03425413": "gas pump", "n03445777": "golf ball",
              "n03888257": "parachute"}
SPAM_KIND = "cassette player"  # the kind the team junks (it stands for spam they do not serve)
NEW_KIND = "emoji"             # OpenMoji images: a kind the day-0 model never saw
NEW_NAME = "emoji stickers"    # the name the team gives it after the re-cluster
KEEP_BELOW = 0.5               # serve's --keep-below default (uncertain)


# ----------------------------------------------------------------------------- the uploads
def _repost(src: Path, dst: Path, rng) -> Path:
    """A re-post: the same bytes (half of them) or the image re-encoded smaller as JPEG."""
    from PIL import Image

    if rng.random() < 0.5:
        dst = dst.with_suffix(src.suffix)
        shutil.copyfile(src, dst)
        return dst
    dst = dst.with_suffix(".jpg")
    with Image.open(src) as im:
        im = im.convert("RGB")
        im.thumbnail((int(im.width * 0.8), int(im.height * 0.8)))
        im.save(dst, "JPEG", quality=70)
    return dst


def build(data: Path, work: Path, days: int, per_day: tuple[int, int], new_from: int, seed: int) -> dict:
    """Day 0's collection (links into ``data``) and each later day's uploads (links, and
    re-posts written with Pillow) under ``work``; what every file is."""
    rng = np.random.default_rng(seed)
    for d in ("collection", "uploads", "inbox", "traffic"):
        if (work / d).exists():
            shutil.rmtree(work / d)
    imgs = []
    for wnid, name in KIND_NAMES.items():
        imgs += [(p, name) for p in sorted((data / "imagenette/val" / wnid).iterdir())]
    order = rng.permutation(len(imgs))
    pool = [imgs[i] for i in order]
    emoji = sorted(p for p in (data / "openmoji/groups").rglob("*.png"))
    emoji = [emoji[i] for i in rng.permutation(len(emoji))]
    day0 = work / "collection" / "day00"
    day0.mkdir(parents=True)
    collection = []
    for i, (p, kind) in enumerate(pool[:1500]):
        dst = day0 / f"d00_{i:05d}{p.suffix}"
        os.symlink(p, dst)
        collection.append({"file": dst.name, "path": str(dst), "kind": kind, "role": "original"})
    pool = pool[1500:]
    seen = list(collection)  # what a re-post may copy: day 0 and earlier uploads
    days_up = {}
    for d in range(1, days + 1):
        folder = work / "uploads" / f"day{d:02d}"
        folder.mkdir(parents=True)
        n = int(rng.integers(per_day[0], per_day[1] + 1))
        n_new = int(round(0.2 * n)) if d >= new_from else 0
        n_rep = max(1, int(round(0.06 * n)))
        n_same = n - n_new - n_rep
        if n_same > len(pool):  # Imagenette val runs out (about day 13 at 150-300 a day): the rest re-posts
            n_rep += n_same - len(pool)
            n_same = len(pool)
        rows = []
        for i in range(n_same):
            p, kind = pool.pop()
            dst = folder / f"d{d:02d}_{i:04d}{p.suffix}"
            os.symlink(p, dst)
            rows.append({"file": dst.name, "path": str(dst), "kind": kind, "role": "same kind"})
        for i in range(n_new):
            p = emoji.pop()
            dst = folder / f"d{d:02d}_new{i:04d}{p.suffix}"
            os.symlink(p, dst)
            rows.append({"file": dst.name, "path": str(dst), "kind": NEW_KIND, "role": "new kind"})
        for i in range(n_rep):
            o = seen[int(rng.integers(len(seen)))]
            dst = _repost(Path(o["path"]), folder / f"d{d:02d}_rep{i:04d}", rng)
            rows.append({"file": dst.name, "path": str(dst), "kind": o["kind"], "role": "repost", "of": o["file"]})
        rows = [rows[i] for i in rng.permutation(len(rows))]
        seen += rows
        days_up[d] = rows
    return {"collection": collection, "days": days_up}


# ----------------------------------------------------------------------------- the service side
class Traffic:
    """Uploads posted in a loop from a background thread (the app's other users) while the team
    re-clusters, publishes and rolls back: every answer's status and model version counted."""

    def __init__(self, base: str, files: list[Path]):
        self.base, self.files = base, files
        self.stop_ev = threading.Event()
        self.codes: Counter = Counter()
        self.errors: list[str] = []
        self.versions: list[tuple[float, str]] = []
        self.marks: list[tuple[float, str]] = []
        self.t0 = time.time()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        import httpx

        k = 0
        with httpx.Client(base_url=self.base, timeout=60) as c:
            while not self.stop_ev.is_set():
                p = self.files[k % len(self.files)]
                k += 1
                try:
                    r = c.post("/v1/assign", files=[("files", (p.name, p.read_bytes()))])
                    self.codes[r.status_code] += 1
                    if r.status_code == 200:
                        self.versions.append((time.time(), r.json()["model"]["version"]))
                    else:
                        self.errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
                except Exception as e:  # noqa: BLE001 - a failed request is what is counted
                    self.codes["exception"] += 1
                    self.errors.append(f"{type(e).__name__}: {e}")
                time.sleep(0.02)

    def finish(self) -> dict:
        self.stop_ev.set()
        self.thread.join()
        changes, last = [], None
        for t, v in self.versions:
            if v != last:
                changes.append((round(t - self.t0, 2), v))
                last = v
        return {"requests": sum(self.codes.values()), "codes": {str(k): v for k, v in self.codes.items()},
                "failed": sum(v for k, v in self.codes.items() if k != 200), "errors": self.errors[:10],
                "versions_seen": sorted({v for _, v in self.versions}), "changes": changes[:50],
                "marks": [(round(t - self.t0, 2), what) for t, what in self.marks]}

    def mark(self, what: str) -> float:
        """Note a step of the team's (its time, for the version changes' timeline)."""
        t = time.time()
        self.marks.append((t, what))
        return t

    def first_answer_of(self, version: str, after: float) -> float | None:
        return next((t - after for t, v in list(self.versions) if v == version and t >= after), None)


def post_day(base: str, rows: list[dict], threads: int = 2) -> tuple[list[dict], list[float], list[str]]:
    """Each upload posted alone (file bytes, multipart) from ``threads`` client threads."""
    import httpx

    answers: list[dict] = [{} for _ in rows]
    lat: list[float] = [0.0] * len(rows)
    failures: list[str] = []

    def worker(idx: list[int]):
        with httpx.Client(base_url=base, timeout=120) as c:
            for i in idx:
                p = Path(rows[i]["path"])
                t0 = time.perf_counter()
                try:
                    r = c.post("/v1/assign", files=[("files", (p.name, p.read_bytes()))])
                except Exception as e:  # noqa: BLE001 - counted as a failure
                    failures.append(f"{p.name}: {type(e).__name__}: {e}")
                    continue
                lat[i] = time.perf_counter() - t0
                if r.status_code != 200:
                    failures.append(f"{p.name}: HTTP {r.status_code} {r.text[:200]}")
                    continue
                body = r.json()
                item = body["items"][0]
                if "error" in item:
                    failures.append(f"{p.name}: {item['error']['kind']}")
                    continue
                answers[i] = {**item, "version": body["model"]["version"]}

    ts = [threading.Thread(target=worker, args=(list(range(t, len(rows), threads)),)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return answers, [x for x in lat if x > 0], failures


def inbox_rows(inbox: Path, after_id: int) -> list[dict]:
    """The inbox's rows after ``after_id`` (written by the service's writer thread)."""
    from mediacluster.serve.inbox import DB_NAME

    db = inbox / DB_NAME
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute("SELECT * FROM uploads WHERE id > ? ORDER BY id", (after_id,))]
    finally:
        con.close()


def wait_rows(inbox: Path, after_id: int, want: int, timeout: float = 30.0) -> list[dict]:
    """The inbox rows once ``want`` of them are written (the writer runs after the answer)."""
    t0 = time.time()
    rows = inbox_rows(inbox, after_id)
    while len(rows) < want and time.time() - t0 < timeout:
        time.sleep(0.2)
        rows = inbox_rows(inbox, after_id)
    return rows


def served_version(base: str) -> str | None:
    import httpx

    try:
        return httpx.get(base + "/v1/model", timeout=10).json().get("version")
    except Exception:  # noqa: BLE001 - not ready
        return None


def wait_version(base: str, version: str, timeout: float = 60.0) -> float | None:
    """Seconds until ``/v1/model`` names ``version`` (one worker's answer), None if never."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if served_version(base) == version:
            return time.perf_counter() - t0
        time.sleep(0.05)
    return None


# ----------------------------------------------------------------------------- one day
def run_day(d: int, rows: list[dict], srv: Server, inbox: Path, work: Path, names_by_cluster: dict,
            res: dict) -> dict:
    """Post day ``d``'s uploads; file the placed ones into the collection; the day's figures."""
    last = max([r["id"] for r in inbox_rows(inbox, 0)], default=0)
    load = _results.loadavg()
    t0 = time.perf_counter()
    answers, lat, fail = post_day(srv.base, rows)
    wall = time.perf_counter() - t0
    res["problems"] += [f"day {d}: {f}" for f in fail]
    # the answer's `kept` says what waits in the inbox (the app files the others as placed)
    kept = [bool(a.get("kept")) for a in answers]
    new_rows = wait_rows(inbox, last, sum(kept))
    by_file = Counter(r["filename"] for r in new_rows)
    in_rows = [by_file.get(Path(u["path"]).name, 0) > 0 for u in rows]
    by_rule = [bool(a) and (a["novel"] or a["probability"] < KEEP_BELOW) for a in answers]
    if kept != in_rows or kept != by_rule:
        res["problems"].append(f"day {d}: answers say kept {sum(kept)}, the inbox holds {sum(in_rows)} of the "
                               f"day's uploads, the rule (novel or probability < {KEEP_BELOW}) picks {sum(by_rule)}")
    # the app files what the service placed into the collection; the inbox keeps the rest
    folder = work / "collection" / f"day{d:02d}"
    folder.mkdir(parents=True, exist_ok=True)
    for u, k in zip(rows, kept):
        if not k:
            os.symlink(os.path.realpath(u["path"]), folder / Path(u["path"]).name)
    roles = np.array([u["role"] for u in rows])
    new = roles == "new kind"
    ok = np.array([bool(a) for a in answers])
    novel = np.array([bool(a.get("novel")) for a in answers])
    nov95 = np.array([(a.get("novelty") or 0) >= 0.95 for a in answers])
    kept = np.array(kept)
    named = [names_by_cluster.get(a.get("assigned_cluster")) for a in answers]
    right = [n == u["kind"] for n, u, a in zip(named, rows, answers) if a and u["role"] == "same kind"]
    new_named = Counter(a.get("assigned_name") for a, m in zip(answers, new) if a and m)
    same = (roles == "same kind") & ok
    lat_ms = np.array(lat) * 1000
    return {
        "day": d, "uploads": len(rows), "same": int((roles == "same kind").sum()), "new": int(new.sum()),
        "reposts": int((roles == "repost").sum()), "failed": len(fail),
        "placed": int((~kept & ok).sum()), "inbox": int(kept.sum()),
        "inbox_reasons": dict(Counter(r["reason"] for r in new_rows)),
        "same_placed": int((~kept & same).sum()), "same_right": f"{sum(right)}/{len(right)}",
        "new_novel": int((novel & new).sum()), "new_novelty95": int((nov95 & new).sum()),
        "new_inbox": int((kept & new).sum()), "new_names": dict(new_named.most_common(3)),
        "same_novel": int((novel & same).sum()), "same_novelty95": int((nov95 & same).sum()),
        "reposts_placed": int((~kept & (roles == "repost")).sum()),
        "versions": sorted({a.get("version") for a in answers if a}),
        "p50_ms": float(np.percentile(lat_ms, 50)) if len(lat_ms) else None,
        "p99_ms": float(np.percentile(lat_ms, 99)) if len(lat_ms) else None,
        "wall_s": wall, "load": load,
    }


# ----------------------------------------------------------------------------- the week
def kinds_of_run(run_dir: Path, kind_of_file: dict) -> np.ndarray:
    from mediacluster.rundir import RunDir

    asg = RunDir.open(run_dir).read_assignments()
    return np.array([kind_of_file.get(Path(str(p)).name, "?") for p in asg["id"].astype(str)])


def write_manifest(work: Path, inbox: Path, kind_of_file: dict) -> Path:
    """The whole collection and the inbox's files as one manifest (``cluster`` reads one input).
    An inbox file is named by its content hash; its kind is the one of the upload it came from."""
    rows = [{"path": str(p)} for p in sorted((work / "collection").rglob("*")) if p.is_file()]
    for r in inbox_rows(inbox, 0):
        f = inbox / "files" / Path(r["file"]).name if r.get("file") else None
        if f is not None and f.exists():
            kind_of_file.setdefault(f.name, kind_of_file.get(r["filename"], "?"))
            rows.append({"path": str(f)})
    seen, out = set(), []
    for r in rows:
        if r["path"] not in seen:
            seen.add(r["path"])
            out.append(r)
    man = work / "week.csv"
    with open(man, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["path"])
        w.writeheader()
        w.writerows(out)
    return man


def review(base: str, kinds: np.ndarray, old_names: set[str], res: dict) -> dict:
    """The week's review in the studio: only the clusters the carry marked new, or without a
    person's name, are looked at; each is named after its kind (the new kind: NEW_NAME), a
    name the week already has is merged into that cluster instead. v2's mistake: the new
    kind's cluster is junked too (the person took the stickers for spam)."""
    import httpx

    redo = Counter()
    with httpx.Client(base_url=base, timeout=300) as c:
        table = c.get("/api/clusters").json()["clusters"]
        lab = studio_labels(c)
        maj = majority(lab, kinds)
        res["week_clusters"] = {"clusters": len(table), "by_carry": dict(Counter(str(e.get("carry")) for e in table)),
                                "new": sum(bool(e.get("new")) for e in table),
                                "person_named": sum(e.get("named_by") == "person" for e in table)}
        # names that survived: a person's name from last week on a cluster of that kind
        survived = [e for e in table if e.get("named_by") == "person" and e["name"] in old_names]
        res["names_survived"] = {"old": len(old_names), "carried": len({e["name"] for e in survived}),
                                 "right_kind": len({e["name"] for e in survived
                                                    if maj.get(e["id"], ("?",))[0] in (e["name"], )
                                                    or (e["name"] == SPAM_KIND and e.get("junk"))}),
                                 "missing": sorted(old_names - {e["name"] for e in survived})}
        looked = [e for e in table if e.get("new") or e.get("named_by") != "person"]
        res["week_looked_at"] = len(looked)
        name_to_id = {e["name"]: e["id"] for e in table if e.get("named_by") == "person"}
        new_kind_cluster = None
        for e in looked:
            kind = maj.get(e["id"], ("?", 0))[0]
            name = NEW_NAME if kind == NEW_KIND else kind
            if name in name_to_id and name_to_id[name] != e["id"]:
                edit(c, {"kind": "merge", "clusters": [int(name_to_id[name]), int(e["id"])]})
                redo["merge into a named cluster"] += 1
                continue
            edit(c, {"kind": "rename", "cluster": int(e["id"]), "name": name})
            redo["rename (new or unnamed)"] += 1
            name_to_id[name] = e["id"]
            if kind == SPAM_KIND and not e.get("junk"):
                edit(c, {"kind": "junk", "clusters": [int(e["id"])]})
                redo["junk (spam kind)"] += 1
        new_kind_cluster = name_to_id.get(NEW_NAME)
        if new_kind_cluster is not None:  # v2's mistake
            edit(c, {"kind": "junk", "clusters": [int(new_kind_cluster)]})
        t0 = time.perf_counter()
        r = c.post("/api/publish", headers={"X-Mediacluster": "1"})
        res["steps"]["week: studio publish v2 (HTTP)"] = {"wall_s": time.perf_counter() - t0}
        if r.status_code != 200:
            raise SystemExit(f"publish -> HTTP {r.status_code}: {r.text[:300]}")
        pub = r.json()
        res["week_redo"] = dict(redo)
        final = {e["id"]: e for e in c.get("/api/clusters").json()["clusters"]}
    return {"version": pub["version"], "new_kind_cluster": new_kind_cluster, "clusters": final}


def fix_and_publish(base: str, cid: int | None, res: dict) -> str:
    """The fix after the rollback: the new kind's cluster is not junk; published again."""
    import httpx

    with httpx.Client(base_url=base, timeout=300) as c:
        if cid is not None:
            edit(c, {"kind": "junk", "clusters": [int(cid)], "value": False})
        t0 = time.perf_counter()
        r = c.post("/api/publish", headers={"X-Mediacluster": "1"})
        res["steps"]["week: studio publish the fix (HTTP)"] = {"wall_s": time.perf_counter() - t0}
        if r.status_code != 200:
            raise SystemExit(f"publish -> HTTP {r.status_code}: {r.text[:300]}")
        return r.json()["version"]


def week(work: Path, run_dir: Path, srv: Server, inbox: Path, kind_of_file: dict, old_names: set[str],
         day0_version: str, traffic_files: list[Path], res: dict) -> dict:
    """Re-cluster with the inbox, carry, review, publish v2, roll back, fix: under traffic."""
    from mediacluster.rundir import RunDir

    out: dict = {}
    traffic = Traffic(srv.base, traffic_files)
    try:
        man = write_manifest(work, inbox, kind_of_file)
        out["items"] = sum(1 for _ in open(man, encoding="utf-8")) - 1
        from mediacluster.inbox import summary as inbox_summary

        out["inbox_states"] = {"before": inbox_summary(inbox)["contents"]}  # the review queue
        v_before = served_version(srv.base)
        t0 = traffic.mark("re-cluster starts")
        wall, cpu, text = cli(["cluster", str(man), "--out", str(run_dir), "--carry-from", str(run_dir),
                               "--save-model", "--quiet"])
        out["recluster"] = {"wall_s": wall, "cpu_s": cpu, "output": text[-3000:]}
        out["inbox_states"]["after"] = inbox_summary(inbox)["contents"]  # the files it took: clustered
        carry = RunDir.open(run_dir).read_carry() or {}
        out["carry"] = {k: carry.get(k) for k in ("identity", "carried", "previous_clusters", "seconds",
                                                   "new_clusters", "shared_items", "items_new_to_the_collection")}
        latest = served_version(srv.base)
        out["served_after_recluster"] = {"before": v_before, "after": latest,
                                         "first_answer_s": traffic.first_answer_of(latest, t0)}
        kinds = kinds_of_run(run_dir, kind_of_file)
        out["unknown_kind_items"] = int((kinds == "?").sum())
        st = Server(["studio", str(run_dir), "--port", "0", "--no-browser"])
        out["studio_start_s"] = st.start_s
        try:
            t1 = time.perf_counter()
            traffic.mark("review starts")
            v2 = review(st.base, kinds, old_names, res)
            out["review_s"] = time.perf_counter() - t1
            out["v2"] = v2["version"]
            out["v2_served_s"] = wait_version(srv.base, v2["version"])
            # v2 was wrong (the stickers junked): roll back to last week's model, then fix
            t2 = traffic.mark(f"models --use {day0_version}")
            wall, _, text = cli(["models", str(run_dir), "--use", day0_version])
            out["rollback"] = {"cli_s": wall, "to": day0_version, "output": text[-1500:]}
            out["rollback"]["served_s"] = wait_version(srv.base, day0_version)
            out["rollback"]["first_answer_s"] = traffic.first_answer_of(day0_version, t2)
            _, _, listing = cli(["models", str(run_dir)])
            out["models_listing"] = listing
            traffic.mark("fix: publish")
            v3 = fix_and_publish(st.base, v2["new_kind_cluster"], res)
            out["v3"] = v3
            out["v3_served_s"] = wait_version(srv.base, v3)
            out["names_after"] = {e["id"]: (e["name"], bool(e.get("junk"))) for e in v2["clusters"].values()}
            out["new_kind_cluster"] = v2["new_kind_cluster"]
        finally:
            st.stop()
            out["studio_output"] = "".join(st.lines)[-3000:]
    finally:
        out["traffic"] = traffic.finish()
    return out


def names_served(base: str) -> dict:
    import httpx

    body = httpx.get(base + "/v1/clusters", timeout=30).json()
    return {int(e["id"]): e.get("name") for e in body.get("clusters", [])}


# ----------------------------------------------------------------------------- the loop
def loop(args) -> dict:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    lo, hi = (int(x) for x in args.per_day.split("-"))
    res: dict = {"steps": {}, "problems": [], "loadavg": _results.loadavg(), "days": []}
    t0 = time.perf_counter()
    truth = build(Path(args.data), work, args.days, (lo, hi), args.new_kind_from, args.seed)
    res["steps"]["build the uploads"] = {"wall_s": time.perf_counter() - t0}
    kind_of_file = {r["file"]: r["kind"] for r in truth["collection"]}
    for rows in truth["days"].values():
        kind_of_file.update({r["file"]: r["kind"] for r in rows})
    run_dir, inbox = work / "run", work / "inbox"
    for old in [run_dir, *work.glob("run.replaced-*")]:
        if old.exists():
            shutil.rmtree(old)
    # day 0: cluster, review, publish
    wall, cpu, text = cli(["cluster", str(work / "collection"), "--out", str(run_dir), "--save-model",
                           "--seed", str(args.seed), "--quiet"])
    res["steps"]["day 0: cluster 1,500 --save-model"] = {"wall_s": wall, "cpu_s": cpu}
    kinds = kinds_of_run(run_dir, kind_of_file)
    st = Server(["studio", str(run_dir), "--port", "0", "--no-browser"])
    res["steps"]["day 0: studio start"] = {"wall_s": st.start_s}
    try:
        t0 = time.perf_counter()
        cur = curate(st.base, kinds, res, SPAM_KIND)
        res["steps"]["day 0: review (splits, merges, junk, names) + publish"] = {"wall_s": time.perf_counter() - t0}
    finally:
        st.stop()
    day0_version = cur["version"]
    old_names = set(cur["names"].values())
    names_by_cluster = {int(i): e["name"] for i, e in cur["clusters"].items()}
    # the service, with the inbox
    srv = Server(["serve", str(run_dir), "--port", "0", "--workers", "2", "--poll", "0.5",
                  "--keep-uploads", str(inbox), "--keep", "novel", "--keep", "uncertain"])
    res["steps"]["serve --workers 2: start to listening"] = {"wall_s": srv.start_s}
    try:
        if wait_version(srv.base, day0_version) is None:
            res["problems"].append(f"the service never served {day0_version}")
        traffic_files = [Path(r["path"]) for r in truth["collection"][:50]]
        for d in range(1, args.days + 1):
            day = run_day(d, truth["days"][d], srv, inbox, work, names_by_cluster, res)
            res["days"].append(day)
            print(f"day {d}: {json.dumps({k: day[k] for k in ('uploads', 'placed', 'inbox', 'new', 'new_novel', 'p50_ms', 'p99_ms')})}",
                  flush=True)
            if d == args.recluster_day:
                wk = week(work, run_dir, srv, inbox, kind_of_file, old_names, day0_version, traffic_files, res)
                res["week"] = wk
                names_by_cluster = names_served(srv.base)
                print("week:", json.dumps({k: wk.get(k) for k in ("items", "v2", "v3", "traffic")}, default=str),
                      flush=True)
        res["model_end"] = served_version(srv.base)
    finally:
        stop_service(srv, res)
        res.pop("output_serve", None)
    res["loadavg_after"] = _results.loadavg()
    return res


# ----------------------------------------------------------------------------- the section
def _s(x) -> str:
    return "never" if x is None else f"{x:.2f} s"


def render(res: dict, cmd: str, commit: str) -> str:
    lines = [SECTION, "",
             f"`{cmd}` (commit {commit}; 1-min load average at the start {res['loadavg']}, at the end "
             f"{res['loadavg_after']}; 2 cores shared with other sessions; {res.get('finished', '')}).", "",
             "Per day: the day's uploads (same kinds / new kind / re-posts), what the service placed "
             "confidently (not kept by `--keep novel --keep uncertain`: the app files it) against what "
             "it sent to the inbox (the answer's `kept`, checked against `inbox.sqlite`'s rows), the new-kind uploads flagged `novel` and with "
             "`novelty >= 0.95`, the same-kind uploads answered with the right curated name, the "
             "same-kind uploads flagged `novel` and with `novelty >= 0.95` (what `--keep-novelty 0.95` "
             "would add to the inbox), per-request latency (two client threads, one image a "
             "request, `serve --workers 2`) and the model version(s) that answered.", "",
             "| day | uploads (same / new / re-post) | placed | inbox | new kind: novel / novelty>=.95 / inbox | "
             "same kind named right | same kind: novel / novelty>=.95 | batch s | p50 / p99 ms | version | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for d in res["days"]:
        n = d["uploads"]
        newc = f"{d['new_novel']} / {d['new_novelty95']} / {d['new_inbox']} of {d['new']}" if d["new"] else "-"
        lines.append(f"| {d['day']} | {n} ({d['same']} / {d['new']} / {d['reposts']}) | "
                     f"{d['placed']} ({d['placed'] / n:.0%}) | {d['inbox']} ({d['inbox'] / n:.0%}) | {newc} | "
                     f"{d['same_right']} | {d['same_novel']} / {d['same_novelty95']} | {d['wall_s']:.1f} | {d['p50_ms']:.1f} / {d['p99_ms']:.1f} | "
                     f"{', '.join(d['versions'])} | {d['load'].split()[0]} |")
    days = res["days"]
    before = [d for d in days if d["new"] and d["versions"] == days[0]["versions"]]
    if before:
        n_new = sum(d["new"] for d in before)
        n_same = sum(d["same"] for d in days)
        lines += ["", f"New kind before the re-cluster (days {before[0]['day']}-{before[-1]['day']}): "
                  f"{sum(d['new_inbox'] for d in before)} of {n_new} sent to the inbox "
                  f"({sum(d['new_novel'] for d in before)} flagged `novel`); `novelty >= 0.95` would have "
                  f"caught {sum(d['new_novelty95'] for d in before)}, at "
                  f"{sum(d['same_novelty95'] for d in days)} of {n_same} same-kind uploads over all days "
                  f"({sum(d['same_novelty95'] for d in days) / max(n_same, 1):.1%}; `novel`: "
                  f"{sum(d['same_novel'] for d in days)})."]
    wk = res.get("week")
    if wk:
        tr = wk["traffic"]
        lines += ["", "The week (after day's batch, under traffic: one client posting an upload every 20 ms "
                  "from the start of the re-cluster to the fix's publish):", "",
                  "| step | result |", "|---|---|",
                  f"| re-cluster the collection + inbox ({wk['items']:,} items), carry, publish | "
                  f"{wk['recluster']['wall_s']:.1f} s wall, {wk['recluster']['cpu_s']:.1f} CPU s; served "
                  f"{wk['served_after_recluster']['before']} -> {wk['served_after_recluster']['after']} |",
                  f"| the inbox's review queue (`mediacluster inbox`), before / after the re-cluster | "
                  f"{json.dumps(wk['inbox_states']['before'])} / {json.dumps(wk['inbox_states']['after'])} |",
                  f"| carry (`carry.json`) | {wk['carry']['shared_items']} shared items by "
                  f"{wk['carry']['identity']}, {wk['carry']['items_new_to_the_collection']} new; previous curated "
                  f"clusters {json.dumps(wk['carry']['previous_clusters'])}; carried {json.dumps(wk['carry']['carried'])}; "
                  f"new clusters {wk['carry']['new_clusters']} |",
                  f"| clusters after the carry | {json.dumps(res.get('week_clusters'))} |",
                  f"| curated names that survived | {res['names_survived']['carried']} of "
                  f"{res['names_survived']['old']} (on a cluster of their kind: {res['names_survived']['right_kind']}); "
                  f"missing: {', '.join(res['names_survived']['missing']) or 'none'} |",
                  f"| the person's review | looked at {res['week_looked_at']} clusters; {json.dumps(res.get('week_redo'))}; "
                  f"{wk.get('review_s', 0):.1f} s of HTTP |",
                  f"| publish v2 ({wk.get('v2')}) | served {_s(wk.get('v2_served_s'))} after |",
                  f"| rollback `models --use {wk['rollback']['to']}` | CLI {wk['rollback']['cli_s']:.2f} s; "
                  f"served {_s(wk['rollback']['served_s'])} after; first answer of it to the traffic "
                  f"{_s(wk['rollback']['first_answer_s'])} after |",
                  f"| the fix published ({wk.get('v3')}) | served {_s(wk.get('v3_served_s'))} after |",
                  f"| versions the traffic saw (s from the re-cluster's start) | "
                  f"{', '.join(f'{v} at {t}' for t, v in tr.get('changes', []))}; steps: "
                  f"{', '.join(f'{w} at {t}' for t, w in tr.get('marks', []))} |",
                  f"| swap window traffic | {tr['requests']} requests, {tr['failed']} failed "
                  f"({json.dumps(tr['codes'])}); versions seen {', '.join(tr['versions_seen'])} |"]
    if wk and wk.get("models_listing"):
        lines += ["", "`mediacluster models RUN` after the rollback (before the fix's publish):", "", "```",
                  *wk["models_listing"].rstrip("\n").splitlines(), "```"]
    lines += ["", "Steps:", "", "| step | wall s | CPU s |", "|---|---:|---:|"]
    for k, v in res["steps"].items():
        cpu = f"{v['cpu_s']:.1f}" if "cpu_s" in v else ""
        lines.append(f"| {k} | {v['wall_s']:.2f} | {cpu} |")
    if res["problems"]:
        lines += ["", "Problems seen in this run: " + "; ".join(res["problems"][:20])]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("MEDIACLUSTER_DATA", "/work/data"))
    ap.add_argument("--work", default="/tmp/dailyloop")
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--per-day", default="150-300", help="uploads a day: LOW-HIGH (drawn per day)")
    ap.add_argument("--new-kind-from", type=int, default=4, help="the first day with the new kind")
    ap.add_argument("--recluster-day", type=int, default=7, help="the day of the weekly re-cluster")
    _results.add_common_args(ap, seed=True)
    ap.add_argument("--from-json", help="render the section from a run's WORK/result.json instead of running")
    args = ap.parse_args(argv)
    if args.from_json:  # the section again from a run's saved figures (its command and commit)
        res = json.loads(Path(args.from_json).read_text())
    else:
        res = loop(args)
        res["finished"] = _results.finished()
        res["command"] = _results.command("daily_loop.py", argv, drop=["--write"])
        res["commit"] = _results.commit()
        Path(args.work, "result.json").write_text(json.dumps(res, indent=1, default=str))
    _results.publish(SECTION, render(res, res["command"], res["commit"]), args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
