"""Kill a real ``mediacluster`` command at seeded random moments and check what it leaves.

For each scenario: one uninterrupted run gives the reference result and its duration; then
``--kills`` runs are killed (SIGKILL to the process group, as a machine losing power or an OOM
killer would; ``--signal int``: Ctrl-C, which must exit 130 with one clean line) after a delay
drawn from ``--seed`` over that duration. After each kill every file in the scratch folder must be
complete and readable (JSON, YAML, Parquet, CSV, npy/npz, SQLite ``PRAGMA integrity_check``, a
saved model loads), and a re-run of the same command must finish, leave no temporary file, and
give the reference result (the seeded assignments compared cell by cell).

    PYTHONPATH=$PWD/src python benchmarks/killpoints.py --scenario cluster --kills 30
    PYTHONPATH=$PWD/src python benchmarks/killpoints.py --scenario all --kills 8

Scratch folders live under ``--work`` (default /tmp/bughunt10). Images: the first ``--per-class``
files of each class of ``--images`` (imagenette val by default).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

TEMP_MARKS = (".tmp", "tmp-", ".partial", ".part")


def mc(*args) -> list[str]:
    return [sys.executable, "-m", "mediacluster", *map(str, args)]


def run(argv, timeout=900, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)


def killed_run(argv, delay: float, sig: int) -> tuple[int, str]:
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        p.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
    try:
        err = p.communicate(timeout=120)[1]
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        err = p.communicate()[1] + "\n[did not stop within 120 s of the signal]"
    return p.returncode, err


def temp_files(root: Path) -> list[str]:
    out = []
    for p in root.rglob("*"):
        if any(m in p.name for m in TEMP_MARKS) and not p.name.endswith(".lock"):
            out.append(str(p.relative_to(root)))
    return sorted(out)


def check_file(p: Path) -> str | None:
    """None when the file reads back whole, else what is wrong with it."""
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq

    name = p.name
    try:
        if name.endswith((".json",)) or name == "LATEST":
            json.loads(p.read_text())
        elif name.endswith((".yaml", ".yml")):
            import yaml
            yaml.safe_load(p.read_text())
        elif name.endswith(".parquet"):
            pq.read_table(p)
        elif name.endswith(".csv"):
            pd.read_csv(p)
        elif name.endswith(".npy"):
            np.load(p, mmap_mode="r")
        elif name.endswith(".npz"):
            with np.load(p) as z:
                for k in z.files:
                    z[k]
        elif name.endswith((".sqlite", ".db")):
            con = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=30)
            try:
                r = con.execute("PRAGMA integrity_check").fetchone()[0]
            finally:
                con.close()
            if r != "ok":
                return f"integrity_check: {r}"
        elif name.endswith(".html"):
            t = p.read_text(errors="replace")
            if "</html>" not in t[-200:].lower():
                return "html without its end"
    except Exception as e:  # noqa: BLE001 - reported, the point of the check
        return f"{type(e).__name__}: {e}"[:300]
    return None


def check_tree(root: Path) -> list[str]:
    bad = []
    if not root.exists():
        return bad
    for p in sorted(root.rglob("*")):
        if p.is_file() and not any(m in p.name for m in TEMP_MARKS):
            why = check_file(p)
            if why:
                bad.append(f"{p.relative_to(root)}: {why}")
    for models in root.rglob("models"):
        latest = models / "LATEST"
        if models.is_dir() and latest.exists():
            from mediacluster.persist import ModelStore
            from mediacluster.pipeline import Pipeline
            try:
                Pipeline.load(ModelStore(models).latest())
            except Exception as e:  # noqa: BLE001
                bad.append(f"{models.relative_to(root)}/LATEST does not load: {type(e).__name__}: {e}"[:300])
    return bad


def assignments(run_dir: Path):
    from mediacluster.rundir import RunDir

    return RunDir.open(run_dir).read_assignments() if RunDir.is_run(run_dir) else None


def same_frame(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return a.shape == b.shape and list(a.columns) == list(b.columns) and a.equals(b)


# --------------------------------------------------------------------------- scenarios
# each: setup(work) -> argv; result(work) -> comparable; optional reset(work) before each kill


def images(args) -> Path:
    dst = args.work / f"imgs{args.per_class}"
    if not dst.exists():
        tmp = args.work / f".imgs{args.per_class}-building"
        shutil.rmtree(tmp, ignore_errors=True)
        for cls in sorted(Path(args.images).iterdir()):
            (tmp / cls.name).mkdir(parents=True)
            for f in sorted(cls.iterdir())[: args.per_class]:
                shutil.copy(f, tmp / cls.name / f.name)
        tmp.rename(dst)
    return dst


def base_run(args) -> Path:
    """A finished run (with a model) the read-only commands start from."""
    src = args.work / "base-run"
    from mediacluster.rundir import RunDir

    if not RunDir.is_run(src):
        r = run(mc("cluster", images(args), "--out", src, "--cache-dir", args.work / "base-cache",
                   "--save-model", "--quiet", "--seed", "0"))
        assert r.returncode == 0, r.stderr
    return src


class Scenario:
    name = ""
    tree = "out"  # what check_tree walks, under the scenario folder

    def __init__(self, args):
        self.args = args
        self.dir = args.work / "kp" / self.name
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)

    def argv(self) -> list[str]: ...

    def reset(self, i: int) -> None:
        """Before kill i (state the kill starts from)."""

    def result(self):
        return assignments(self.dir / "out")

    def same(self, a, b) -> bool:
        return same_frame(a, b)


class Cluster(Scenario):
    """embed + cluster + save a model, with an embedding cache of its own; every other kill starts
    with neither out folder nor cache (a first run), the others over the previous finished run."""

    name = "cluster"

    def argv(self):
        return mc("cluster", images(self.args), "--out", self.dir / "out", "--cache-dir",
                  self.dir / "cache", "--save-model", "--quiet", "--seed", "0")

    def reset(self, i):
        if i % 2 == 0:
            shutil.rmtree(self.dir / "out", ignore_errors=True)
            shutil.rmtree(self.dir / "cache", ignore_errors=True)

    def checked(self):
        return [self.dir]


class Tune(Scenario):
    name = "tune"

    def argv(self):
        return mc("tune", base_run(self.args), "--out", self.dir / "out", "--trials", "6",
                  "--seed", "0", "--quiet", "--sampler", "random")

    def reset(self, i):
        if i % 2 == 0:
            shutil.rmtree(self.dir / "out", ignore_errors=True)

    def result(self):
        """A resumed study reseeds its sampler (a resume does not replay the first proposals) and
        marks a killed trial failed, so its trials are not the uninterrupted run's: the same
        command must reach the same number of finished trials, publish a model and its best
        parameters."""
        import pandas as pd
        f, best = self.dir / "out" / "trials.csv", self.dir / "out" / "best_params.json"
        if not f.exists() or not best.exists():
            return None
        t = pd.read_csv(f)
        done = int((t["state"] == "COMPLETE").sum()) if "state" in t else len(t)
        return (min(done, 6), sorted(json.loads(best.read_text())), (self.dir / "out" / "models" / "LATEST").exists())

    def same(self, a, b):
        return a == b


class CopyOfBase(Scenario):
    """A command over a copy of the base run, the copy renewed before every other kill."""

    def reset(self, i):
        if i % 2 == 0 or not (self.dir / "out").exists():
            shutil.rmtree(self.dir / "out", ignore_errors=True)
            shutil.copytree(base_run(self.args), self.dir / "out", symlinks=True)


class Evaluate(CopyOfBase):
    name = "evaluate"

    def argv(self):
        return mc("evaluate", self.dir / "out", "--out", self.dir / "out" / "eval.json")

    def result(self):
        f = self.dir / "out" / "eval.json"
        if not f.exists():
            return None
        d = json.loads(f.read_text())
        for k in ("created", "finished", "seconds"):  # when, and how long: not the result
            d.pop(k, None)
        return json.dumps(d, sort_keys=True, default=str)

    def same(self, a, b):
        return a == b


class Report(CopyOfBase):
    name = "report"

    def argv(self):
        return mc("report", self.dir / "out", "--quiet", "--rename")

    def result(self):
        from mediacluster.rundir import RunDir

        return json.dumps(RunDir.open(self.dir / "out").read_automatic_names(), sort_keys=True, default=str)

    def same(self, a, b):
        return a == b


class Dups(Scenario):
    name = "dups"

    def argv(self):
        return mc("dups", images(self.args), "--out", self.dir / "out", "--cache-dir",
                  self.dir / "cache", "--quiet")

    def reset(self, i):
        if i % 2 == 0:
            shutil.rmtree(self.dir / "out", ignore_errors=True)
            shutil.rmtree(self.dir / "cache", ignore_errors=True)

    def result(self):
        import pandas as pd
        fs = sorted((self.dir / "out").glob("*.parquet")) + sorted((self.dir / "out").glob("*.csv"))
        if not fs:
            return None
        return {f.name: (pd.read_parquet(f) if f.suffix == ".parquet" else pd.read_csv(f)) for f in fs}

    def same(self, a, b):
        if a is None or b is None or a.keys() != b.keys():
            return False
        return all(same_frame(a[k], b[k]) for k in a)


class Publish(CopyOfBase):
    """studio --publish over a run with a few edits (the edit log made once per copy)."""

    name = "publish"

    def reset(self, i):
        fresh = i % 2 == 0 or not (self.dir / "out").exists()
        super().reset(i)
        if fresh:
            from mediacluster.studio.session import Studio
            st = Studio(self.dir / "out", lazy_map=True)
            try:
                cl = sorted(st.state.clusters)
                st.edit("merge", {"clusters": cl[:2]})
                st.edit("rename", {"cluster": cl[2], "name": "renamed by killpoints"})
            finally:
                st.close()

    def argv(self):
        return mc("studio", self.dir / "out", "--publish")

    def result(self):
        a = assignments(self.dir / "out")
        if a is None:
            return None
        return a[[c for c in a.columns if c.startswith("curated")]]


class Cache(Scenario):
    """cache --forget-encoder over a copy of the base run's embedding cache (renewed each kill)."""

    name = "cache"

    def reset(self, i):
        base_run(self.args)
        shutil.rmtree(self.dir / "out", ignore_errors=True)
        shutil.copytree(self.args.work / "base-cache", self.dir / "out")

    def argv(self):
        return mc("cache", "--cache-dir", self.dir / "out", "--forget-encoder", "efficientnet-lite0")

    def result(self):
        r = run(mc("cache", "--cache-dir", self.dir / "out", "--json"))
        d = json.loads(r.stdout)
        return json.dumps(d.get("encoders", d.get("vectors")), sort_keys=True, default=str)

    def same(self, a, b):
        return a == b


SCENARIOS = {c.name: c for c in (Cluster, Tune, Evaluate, Report, Dups, Publish, Cache)}


def serve_hunt(args, kills: int, rng: random.Random) -> dict:
    """``serve RUN --keep-uploads INBOX --keep all`` killed while clients upload: the inbox (one
    folder across every kill, as a service restarted by its supervisor keeps it) must read back
    whole, every row naming a stored file whose bytes hash to it, no content stored twice, no
    temporary file; an upload answered but not yet written when the kill came is lost (the
    writer writes after the answer: counted, not a failure), none is kept twice."""
    import threading

    import httpx

    from mediacluster.fileio import hash_bytes

    d = args.work / "kp" / "serve"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    run_dir, inbox = base_run(args), d / "inbox"
    files = sorted(p for p in images(args).rglob("*") if p.is_file())
    rows, sent = [], 0
    for i in range(kills):
        p = subprocess.Popen(mc("serve", run_dir, "--port", "0", "--keep-uploads", inbox, "--keep", "all"),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        url = None
        for line in p.stdout:
            if "listening on " in line:
                url = line.split("listening on ", 1)[1].split()[0].split("?")[0].rstrip("/")
                break
        threading.Thread(target=p.stdout.read, daemon=True).start()
        answered, stop = [], threading.Event()

        def client(k, i=i, url=url, stop=stop, answered=answered):
            with httpx.Client(base_url=url, timeout=60) as c:
                j = k
                while not stop.is_set():
                    f = files[j % len(files)]
                    try:
                        r = c.post("/v1/assign", files=[("files", (f.name, f.read_bytes(), "image/jpeg"))],
                                   data={"item_ids": f"{i}-{j}"})
                    except httpx.HTTPError:
                        return
                    if r.status_code == 200:
                        answered.append((f"{i}-{j}", r.json()["items"][0].get("kept")))
                    j += 2

        ts = [threading.Thread(target=client, args=(k + 2 * sent,)) for k in range(2)]
        for t in ts:
            t.start()
        delay = rng.uniform(0.2, 4.0)
        time.sleep(delay)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        stop.set()
        for t in ts:
            t.join()
        sent += len(answered)
        row = {"i": i, "delay": round(delay, 2), "answered": len(answered)}
        bad = check_tree(d)
        if bad:
            row["broken_after_kill"] = bad
        con = sqlite3.connect(inbox / "inbox.sqlite")
        stored = con.execute("SELECT hash, file FROM stored").fetchall()
        ids = [r[0] for r in con.execute("SELECT item_id FROM uploads WHERE item_id IS NOT NULL")]
        con.close()
        wrong = [f for h, f in stored if f and (not (inbox / f).is_file() or hash_bytes((inbox / f).read_bytes()) != h)]
        if wrong:
            row["row_without_its_file"] = wrong
        on_disk = {f"files/{q.name}" for q in (inbox / "files").iterdir()}
        orphans = sorted(on_disk - {f for _, f in stored})
        if orphans:
            row["file_without_its_row"] = orphans
        twice = [k for k in set(ids) if ids.count(k) > 1]
        if twice:
            row["kept_twice"] = twice
        kept = {k for k, why in answered if why}
        row["answered_not_kept"] = len(kept - set(ids))
        left = temp_files(d)
        if left:
            row["temp_left"] = left
        rows.append(row)
        flag = {k for k in row if k not in ("i", "delay", "answered", "answered_not_kept")}
        print(f"serve kill {i} at {delay:.2f}s: {row['answered']} answered, {row['answered_not_kept']} "
              f"answered as kept but not in the inbox: {sorted(flag) or 'ok'}", flush=True)
        for k in flag:
            print("   ", k, row[k], flush=True)
    return {"scenario": "serve", "kills": kills, "rows": rows,
            "problems": sum(1 for r in rows if set(r) - {"i", "delay", "answered", "answered_not_kept"})}


def studio_hunt(args, kills: int, rng: random.Random) -> dict:
    """``studio RUN`` (a server) killed while a page edits and publishes: after each kill the run
    must read back whole, and the studio opened again must hold every edit it acknowledged, write
    them into the run (``curated.json``'s ``edits_seq`` = the log's last edit) and publish."""
    import re
    import threading

    import httpx

    d = args.work / "kp" / "studio"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    shutil.copytree(base_run(args), d / "out", symlinks=True)
    write = {"X-Mediacluster": "1"}
    rows = []

    def start():
        p = subprocess.Popen(mc("studio", d / "out", "--port", "0", "--no-browser", "--map", "pca"),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        url = None
        for line in p.stdout:
            m = re.search(r"studio: listening on (\S+)", line)
            if m:
                url = m.group(1).split("?", 1)[0]
                break
        threading.Thread(target=p.stdout.read, daemon=True).start()
        return p, url

    for i in range(kills):
        p, url = start()
        acked, stop = [], threading.Event()

        def page(url=url, stop=stop, acked=acked, i=i):
            with httpx.Client(base_url=url, timeout=60) as c:
                j = 0
                while not stop.is_set():
                    try:
                        cl = [x["id"] for x in c.get("/api/clusters").json()["clusters"]]
                        body = ({"kind": "rename", "cluster": cl[j % len(cl)], "name": f"kill {i} edit {j}"}
                                if j % 3 else {"kind": "tag", "clusters": [cl[0]], "add": [f"t{i}"]})
                        r = c.post("/api/edits", json=body, headers=write)
                        if r.status_code == 200:
                            acked.append(r.json()["seq"])
                        if j % 4 == 3:
                            c.post("/api/publish", json={}, headers=write)
                    except httpx.HTTPError:
                        return
                    j += 1

        t = threading.Thread(target=page)
        t.start()
        delay = rng.uniform(0.3, 6.0)
        time.sleep(delay)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        stop.set()
        t.join()
        row = {"i": i, "delay": round(delay, 2), "acked": len(acked)}
        bad = check_tree(d)
        if bad:
            row["broken_after_kill"] = bad
        p, url = start()  # opened again: catches up, publishes
        try:
            with httpx.Client(base_url=url, timeout=120) as c:
                v = c.get("/api/version").json()
                if acked and v["seq"] < max(acked):
                    row["acked_edit_lost"] = [v["seq"], max(acked)]
                r = c.post("/api/publish", json={}, headers=write)
                if r.status_code != 200:
                    row["publish_failed"] = r.text[:300]
                deadline = time.time() + 60
                while (v := c.get("/api/version").json())["written"] != v["seq"] and time.time() < deadline:
                    time.sleep(0.2)
                if v["written"] != v["seq"]:
                    row["not_written"] = v
        finally:
            os.killpg(p.pid, signal.SIGINT)
            p.wait(60)
        cur = json.loads((d / "out" / "curated.json").read_text()) if (d / "out" / "curated.json").exists() else {}
        con = sqlite3.connect(d / "out" / "edits.sqlite")
        last = con.execute("SELECT MAX(seq) FROM events WHERE kind NOT IN ('publish', 'export')").fetchone()[0]
        con.close()  # a publish / export record changes nothing written: curated.json's stays
        if acked and not (isinstance(cur.get("edits_seq"), int) and last <= cur["edits_seq"] <= v["seq"]):
            row["curated_json_behind"] = [cur.get("edits_seq"), last]
        left = temp_files(d)
        if left:
            row["temp_left"] = left
        rows.append(row)
        flag = {k for k in row if k not in ("i", "delay", "acked")}
        print(f"studio kill {i} at {delay:.2f}s: {row['acked']} edits acknowledged: {sorted(flag) or 'ok'}", flush=True)
        for k in flag:
            print("   ", k, row[k], flush=True)
    return {"scenario": "studio", "kills": kills, "rows": rows,
            "problems": sum(1 for r in rows if set(r) - {"i", "delay", "acked"})}


def hunt(sc: Scenario, kills: int, rng: random.Random, sig: int) -> dict:
    argv = sc.argv()
    sc.reset(0)
    t0 = time.time()
    r = run(argv)
    took = time.time() - t0
    assert r.returncode == 0, f"{sc.name}: the uninterrupted run failed: {r.stderr[-2000:]}"
    ref = sc.result()
    rows = []
    for i in range(kills):
        sc.reset(i)
        delay = rng.uniform(0.05, took)
        code, err = killed_run(argv, delay, sig)
        row = {"i": i, "delay": round(delay, 2), "code": code}
        if sig == signal.SIGINT and code not in (0, 130):
            row["sigint_exit"] = code
        if sig == signal.SIGINT and "Traceback" in err:
            row["sigint_traceback"] = err[-600:]
        bad = check_tree(sc.dir)
        if bad:
            row["broken_after_kill"] = bad
        r = run(argv)
        if r.returncode != 0:
            row["rerun_failed"] = r.stderr[-800:]
        else:
            left = temp_files(sc.dir)
            if left:
                row["temp_left_after_rerun"] = left
            if not sc.same(sc.result(), ref):
                row["rerun_differs"] = True
        rows.append(row)
        flag = {k for k in row if k not in ("i", "delay", "code")}
        print(f"{sc.name} kill {i} at {delay:.2f}s (exit {code}): {sorted(flag) or 'ok'}", flush=True)
        for k in flag:
            print("   ", k, row[k], flush=True)
    return {"scenario": sc.name, "took": round(took, 1), "kills": kills, "rows": rows,
            "problems": sum(1 for r in rows if set(r) - {"i", "delay", "code"})}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="all", help=", ".join(SCENARIOS) + " or all")
    ap.add_argument("--kills", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--signal", choices=["kill", "int"], default="kill")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bughunt10"))
    ap.add_argument("--images", default="/work/data/imagenette/val")
    ap.add_argument("--per-class", type=int, default=25)
    ap.add_argument("--json", type=Path, help="write the rows here")
    a = ap.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    names = [*SCENARIOS, "serve", "studio"] if a.scenario == "all" else a.scenario.split(",")
    sig = signal.SIGKILL if a.signal == "kill" else signal.SIGINT
    out = []
    for n in names:
        if n in ("serve", "studio"):
            res = (serve_hunt if n == "serve" else studio_hunt)(a, a.kills, random.Random(f"{a.seed}-{n}"))
            print(f"== {n}: {res['kills']} kills, {res['problems']} with a problem", flush=True)
            out.append(res)
            continue
        res = hunt(SCENARIOS[n](a), a.kills, random.Random(f"{a.seed}-{n}"), sig)
        print(f"== {n}: {res['kills']} kills over {res['took']} s, {res['problems']} with a problem", flush=True)
        out.append(res)
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
