"""What the end-to-end loops (``social_loop.py``, ``audio_loop.py``) share: building the
collection's folders, reposts and truth tables (``fresh_folders``, ``reposts``,
``upload_reposts``, ``write_truth``; each loop makes its own kind of repost), the CLI and the
servers run as processes (``cli``, ``Server``), uploads posted one at a time (``post_uploads``),
the kinds against the clusters (``majority``, ``kind_home``), a person's curation through the
studio's HTTP API (``edit``, ``studio_labels``, ``curate``), ``/v1/clusters`` against the
curated clusters (``check_clusters``) and a headless Chromium (``chromium``, ``wait``). Each
loop keeps what is its own: its collection, its scores, its second version and its section.
"""

from __future__ import annotations

import csv
import os
import re
import resource
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import _browser  # the one headless Chromium
import _results
import numpy as np


def start(build, args) -> tuple[Path, str, dict, float]:
    """A loop's start: the folder ``args.work`` made, the load average now, and the collection
    ``build(data, work, scale, seed)`` built from ``args``; (work, load, truth, build seconds)."""
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    load = _results.loadavg()
    t0 = time.perf_counter()
    truth = build(Path(args.data), work, args.scale, args.seed)
    return work, load, truth, time.perf_counter() - t0


def fresh_folders(work: Path) -> tuple[Path, Path]:
    """``work/collection`` and ``work/uploads``, emptied."""
    coll, up = work / "collection", work / "uploads"
    for d in (coll, up):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    return coll, up


def reposts(rng, originals: list[dict], folder: Path, edits, repost, per: tuple[int, int]) -> list[dict]:
    """6% of ``originals`` (at least 2) reposted into the collection, ``per`` = [low, high) times
    each, every time with an edit drawn from ``edits``; ``repost(src, dst_stem, edit, rng)``
    writes one (the loop's own kind of file) and returns its path."""
    out = []
    n_rep = max(2, round(0.06 * len(originals)))
    for k, i in enumerate(rng.choice(len(originals), n_rep, replace=False)):
        o = originals[i]
        for r in range(int(rng.integers(*per))):
            edit = str(rng.choice(edits))
            dst = repost(Path(o["path"]), folder / f"repost_{k:04d}_{r}", edit, rng)
            out.append({**o, "path": str(dst), "role": "repost", "of": o["path"], "edit": edit})
    return out


def upload_reposts(rng, originals: list[dict], folder: Path, edits, repost, at_least: int = 2) -> list[dict]:
    """Fresh reposts of 8% of ``originals`` (at least ``at_least``) as new uploads, every edit of
    ``edits`` equally often."""
    out = []
    n_up_rep = max(at_least, round(0.08 * len(originals)))
    for k, i in enumerate(rng.choice(len(originals), n_up_rep, replace=False)):
        o = originals[i]
        edit = edits[k % len(edits)]
        dst = repost(Path(o["path"]), folder / f"reup_{k:04d}", edit, rng)
        out.append({**o, "path": str(dst), "role": "repost", "of": o["path"], "edit": edit})
    return out


def write_truth(work: Path, items: list[dict], uploads: list[dict]) -> dict:
    """``collection.csv`` and ``uploads.csv`` (what each file is) under ``work``; the tables."""
    for name, rows in (("collection.csv", items), ("uploads.csv", uploads)):
        with open(work / name, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return {"collection": items, "uploads": uploads}


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def cli(args: list[str], ok=(0, 3)) -> tuple[float, float, str]:
    """Run ``mediacluster ARGS``; return (wall s, CPU s, output)."""
    t0, c0 = time.perf_counter(), _cpu_children()
    p = subprocess.run([sys.executable, "-m", "mediacluster", *args], capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, _cpu_children() - c0
    if p.returncode not in ok:
        raise SystemExit(f"mediacluster {' '.join(args)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return wall, cpu, p.stdout + p.stderr


class Server:
    """``mediacluster studio|serve ...`` in its own process; ``base`` from its "listening on" line."""

    def __init__(self, args: list[str], timeout: float = 300.0):
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "mediacluster", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: list[str] = []
        url, deadline = None, time.time() + timeout
        while url is None and time.time() < deadline:
            if select.select([self.proc.stdout], [], [], 1.0)[0]:
                line = self.proc.stdout.readline()
                if not line:
                    break
                self.lines.append(line)
                m = re.search(r"listening on (\S+)", line)
                url = m and m.group(1)
            elif self.proc.poll() is not None:
                break
        if url is None:
            self.proc.kill()
            raise SystemExit(f"{args[0]} did not start:\n" + "".join(self.lines))
        self.start_s = time.perf_counter() - self.t0
        self.base = url.split("?", 1)[0].rstrip("/")
        threading.Thread(target=lambda: [self.lines.append(x) for x in self.proc.stdout], daemon=True).start()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def stop_service(srv: Server, res: dict) -> None:
    """Stop a loop's service, keep its output in ``res`` and count an unclean exit as a problem."""
    rc = srv.stop()
    res["output_serve"] = "".join(srv.lines)
    if rc not in (0, -2, 130):
        res["problems"].append(f"serve exited {rc}: " + "".join(srv.lines[-20:]))


def latency_summary(lat_s: list[float]) -> dict:
    """Requests, p50 / p95 / max in ms of a loop's upload latencies (seconds)."""
    lat_ms = np.array(lat_s) * 1000
    return {"requests": len(lat_ms), "p50": float(np.percentile(lat_ms, 50)),
            "p95": float(np.percentile(lat_ms, 95)), "max": float(lat_ms.max())}


def post_uploads(c, uploads: list[dict]) -> tuple[list[dict], list[float], list[str]]:
    """Every upload posted alone as file bytes; the answers, latencies (s) and any failures."""
    answers, lat, failures = [], [], []
    for u in uploads:
        data = Path(u["path"]).read_bytes()
        t0 = time.perf_counter()
        r = c.post("/v1/assign", files=[("files", (Path(u["path"]).name, data))])
        lat.append(time.perf_counter() - t0)
        if r.status_code != 200:
            failures.append(f"{Path(u['path']).name}: HTTP {r.status_code} {r.text[:200]}")
            answers.append({})
            continue
        body = r.json()
        item = body["items"][0]
        if "error" in item:  # an item the service could not read is answered in its place
            failures.append(f"{Path(u['path']).name}: {item['error']['kind']}: {item['error']['message']}")
            answers.append({})
            continue
        answers.append({**item, "version": (body.get("model") or {}).get("version")})
    return answers, lat, failures


def majority(labels: np.ndarray, kinds: np.ndarray) -> dict[int, tuple[str, float]]:
    """cluster -> (its most common kind, that kind's share)."""
    out = {}
    for c in np.unique(labels):
        ks = Counter(kinds[labels == c].tolist())
        k, n = ks.most_common(1)[0]
        out[int(c)] = (k, n / sum(ks.values()))
    return out


def kind_home(labels: np.ndarray, kinds: np.ndarray) -> dict[str, int]:
    """kind -> the cluster holding most of its items (clusters >= 0)."""
    out = {}
    for k in np.unique(kinds):
        lab = labels[(kinds == k) & (labels >= 0)]
        if len(lab):
            out[str(k)] = int(Counter(lab.tolist()).most_common(1)[0][0])
    return out


def edit(c, body: dict) -> dict:
    r = c.post("/api/edits", json=body, headers={"X-Mediacluster": "1"})
    if r.status_code != 200:
        raise SystemExit(f"studio edit {body} -> HTTP {r.status_code}: {r.text[:300]}")
    return r.json()


def studio_labels(c) -> np.ndarray:
    return np.frombuffer(c.get("/api/labels").content, dtype="<i4").astype(int)


def curate(base: str, kinds: np.ndarray, res: dict, junk_kind: str) -> dict:
    """What a person does in the studio, the kinds standing in for what they see: split the mixed
    clusters, merge the clusters of one kind, junk the clusters of ``junk_kind`` (and move its
    strays there), name every cluster after its kind, publish. Every edit is one request of the page's API."""
    import httpx

    steps = Counter()
    with httpx.Client(base_url=base, timeout=300) as c:
        # the studio's items are the run's rows in order (item number = row)
        assert len(studio_labels(c)) == len(kinds)
        # split the mixed clusters (commonest kind under 70%): the automatic split first (the
        # hierarchy's finer level), else k = the kinds a person sees in it; a part still mixed is
        # split again; a split is applied only when its parts are purer than the cluster
        queue = [cid for cid, (_, share) in sorted(majority(studio_labels(c), kinds).items())
                 if cid >= 0 and share < 0.7 and (studio_labels(c) == cid).sum() >= 10]
        while queue and steps["split"] < 6:
            cid = queue.pop(0)
            lab = studio_labels(c)
            members = lab == cid
            share = majority(lab[members], kinds[members])[cid][1]
            seen = Counter(kinds[members].tolist())
            k_seen = sum(v >= 0.1 * members.sum() for v in seen.values())
            applied = None
            for body in ({"cluster": int(cid)}, {"cluster": int(cid), "k": int(max(2, k_seen))}):
                pv = c.post("/api/split/preview", json=body, headers={"X-Mediacluster": "1"})
                if pv.status_code != 200:
                    res.setdefault("split_previews_refused", []).append(f"{body}: {pv.json()['error']['message']}")
                    continue
                pv = pv.json()
                part = np.asarray(pv["labels"]["parts"], dtype=int)
                items = np.asarray(pv["labels"]["items"], dtype=int)
                if len(part) == len(items) and len(items):
                    pur = sum(Counter(kinds[items][part == p].tolist()).most_common(1)[0][1]
                              for p in np.unique(part)) / len(items)
                    if pur <= share + 0.05:
                        continue
                applied = edit(c, {"kind": "split", "preview": pv["preview"]})
                steps["split"] += 1
                how = "automatic" if "k" not in body else f"k={body['k']}"
                res.setdefault("splits", []).append(
                    f"{int(members.sum())} items ({share:.0%} {majority(lab[members], kinds[members])[cid][0]}) "
                    f"{how} -> parts of "
                    + "/".join(str(int((part == p).sum())) for p in np.unique(part)))
                break
            if applied:
                lab = studio_labels(c)
                for new_id in applied["edit"]["ids"]:
                    m = lab == new_id
                    if m.sum() >= 10 and majority(lab[m], kinds[m])[new_id][1] < 0.7:
                        queue.append(new_id)
        # merge the clusters of each kind
        lab = studio_labels(c)
        by_kind = defaultdict(list)
        for cid, (k, _) in majority(lab, kinds).items():
            if cid >= 0:
                by_kind[k].append(cid)
        for cids in by_kind.values():
            if len(cids) > 1:
                edit(c, {"kind": "merge", "clusters": [int(x) for x in cids]})
                steps["merge"] += 1
        # junk and names
        lab = studio_labels(c)
        junk, names = [], {}
        by_c = majority(lab, kinds)
        stray = np.flatnonzero((kinds == junk_kind) & np.isin(lab, [i for i, (k, _) in by_c.items() if k != junk_kind]))
        if len(stray) >= 3:  # junk items inside another cluster: selected in its gallery, moved to junk
            edit(c, {"kind": "move", "items": stray.tolist(), "to": "junk"})
            steps["move to junk"] += 1
            lab = studio_labels(c)
        for cid, (k, _) in majority(lab, kinds).items():
            if cid < 0:
                continue
            if k == junk_kind:
                edit(c, {"kind": "junk", "clusters": [int(cid)]})
                steps["junk"] += 1
                junk.append(cid)
            edit(c, {"kind": "rename", "cluster": int(cid), "name": k})
            steps["rename"] += 1
            names[k] = k
        t0 = time.perf_counter()
        r = c.post("/api/publish", headers={"X-Mediacluster": "1"})
        res["steps"]["studio: publish (HTTP)"] = {"wall_s": time.perf_counter() - t0}
        if r.status_code != 200:
            raise SystemExit(f"publish -> HTTP {r.status_code}: {r.text[:300]}")
        res["publish_1"] = r.json()
        clusters = {e["id"]: e for e in c.get("/api/clusters").json()["clusters"]}
    res["curation_steps"] = dict(steps)
    return {"junk": junk, "names": names, "clusters": clusters, "labels": lab,
            "version": res["publish_1"]["version"]}


def check_clusters(body: dict, cur: dict, res: dict) -> dict:
    """Does ``/v1/clusters`` hold the curated clusters, their names and no merged-away id?"""
    served = {int(e["id"]): e for e in body.get("clusters", [])}
    want = {int(i): e for i, e in cur["clusters"].items() if e.get("size", 1) > 0}
    missing = sorted(set(want) - set(served))
    extra = sorted(set(served) - set(want))
    wrong = sorted(i for i in set(want) & set(served) if served[i].get("name") != want[i]["name"])
    junk_wrong = sorted(i for i in served if bool(served[i].get("junk")) != (i in set(cur["junk"])))
    out = {"served": len(served), "curated": len(want), "missing": missing, "extra": extra,
           "wrong_names": wrong, "junk_not_marked": junk_wrong}
    if missing or extra or wrong or junk_wrong:
        res["problems"].append(f"/v1/clusters does not match the curated clusters: {out}")
    return out


def chromium():
    """A headless Chromium (``_browser.chromium``) that plays audio unprompted."""
    return _browser.chromium(extra=("--autoplay-policy=no-user-gesture-required",))


def wait(fn, timeout=30.0):
    """``fn()`` once it is truthy (exceptions: not yet), polled for up to ``timeout`` s; else None."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            v = fn()
        except Exception:  # noqa: BLE001 - the page is still changing
            v = None
        if v:
            return v
        time.sleep(0.1)
    return None
