"""What a poll of ``/api/version`` costs a studio that another process on the same run edits.

A run of the 3,925 Imagenette images (the default encoder's vectors from ``/work/vec``, PCA 10 +
K-means k=10 as the studio tests make runs: the studio does not care how clusters were made; a
cached PCA map). Process A is a ``Studio`` in this process making edits (renames, moves of 5
items, tags of 3 items, in turn); B is

1. a second ``Studio`` in this process: the time of ``Studio.sync`` (what every poll, cluster
   list and labels read runs first) and of ``Studio.version`` (the whole poll: sync, plus
   whether the folder still holds the run) with nothing new, and on the poll after 1 and after
   100 new events of A's (and after one undo with 100 edits in effect: the state is rebuilt);
2. a real ``mediacluster studio`` server: the HTTP round trip of ``GET /api/version`` the same
   ways, and the page's reload after a change (``/api/labels`` + ``/api/clusters``).

Usage:
    flock /tmp/mc-bench.lock python benchmarks/studio_live.py [--write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _results
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VEC = Path(os.environ.get("MEDIACLUSTER_VEC", "/work/vec")) / "imagenette.npz"
SECTION = "## Studio: edits from another process (livestudio helper)"
sys.path.insert(0, str(ROOT / "tests"))


def make(out: Path) -> Path:
    from studio_helpers import make_run

    from mediacluster.data import Embeddings

    d = np.load(VEC, allow_pickle=True)
    emb = Embeddings(ids=[str(x) for x in d["ids"]], vectors=np.asarray(d["vectors"], np.float32),
                     encoder="default", labels=[str(x) for x in d["labels"]],
                     extras={"imagenet_probs": np.asarray(d["imagenet_probs"], np.float32)})
    return make_run(emb, out, save_model=False, k=10)


class Editor:
    """Process A's edits, in turn: a rename, a move of 5 items, a tag of 3 items."""

    def __init__(self, studio, seed: int):
        self.st, self.k = studio, 0
        self.rng = np.random.default_rng(seed)

    def one(self) -> None:
        st, k = self.st, self.k
        self.k += 1
        ids = sorted(c.id for c in st.state.alive())
        if k % 3 == 0:
            st.edit("rename", {"cluster": ids[k % len(ids)], "name": f"name {k}"}, "A")
        elif k % 3 == 1:
            items = self.rng.choice(st.n, 5, replace=False).tolist()
            to = next(c for c in ids[k % len(ids):] + ids if (st.state.labels[items] != c).any())
            st.edit("move", {"items": items, "to": to}, "A")
        else:
            st.edit("tag", {"items": self.rng.choice(st.n, 3, replace=False).tolist(), "add": [f"t{k % 7}"]}, "A")

    def many(self, n: int) -> None:
        for _ in range(n):
            self.one()


def ms(t: float) -> float:
    return round(1000 * t, 3)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def in_process(run: Path) -> dict:
    from mediacluster.studio.session import Studio

    a = Studio(run, warm=False, map_method="pca")
    b = Studio(run, warm=False, map_method="pca")
    ed = Editor(a, 0)
    try:
        out = {"idle_sync_ms": ms(statistics.median(timed(b.sync) for _ in range(500))),
               "idle_version_ms": ms(statistics.median(timed(b.version) for _ in range(200)))}
        one = []
        for _ in range(30):
            ed.one()
            one.append(timed(b.version))
        out["after_1_version_ms"] = ms(statistics.median(one))
        hundred = []
        for _ in range(5):
            ed.many(100)
            hundred.append(timed(b.version))
            assert b.state.seq == a.state.seq
        out["after_100_version_ms"] = ms(statistics.median(hundred))
        a.edit("undo", {}, "A")
        out["after_undo_version_ms"] = ms(timed(b.version))
        out["edits_in_effect_at_undo"] = len(b.state.done)
        assert b.state.labels.tolist() == a.state.labels.tolist()
        return out
    finally:
        a.close()
        b.close()


def over_http(run: Path) -> dict:
    from studio_helpers import Server, client

    from mediacluster.studio.session import Studio

    s = Server(run)
    a = Studio(run, warm=False, map_method="pca")
    ed = Editor(a, 1)
    try:
        with client(s) as c:
            c.get("/api/version")
            out = {"idle_ms": ms(statistics.median(timed(lambda: c.get("/api/version")) for _ in range(200)))}
            one, hundred, reload = [], [], []
            for _ in range(20):
                ed.one()
                one.append(timed(lambda: c.get("/api/version")))
            for _ in range(5):
                ed.many(100)
                hundred.append(timed(lambda: c.get("/api/version")))
                reload.append(timed(lambda: (c.get("/api/labels"), c.get("/api/clusters"))))
            assert c.get("/api/version").json()["seq"] == a.state.seq
            out.update(after_1_ms=ms(statistics.median(one)), after_100_ms=ms(statistics.median(hundred)),
                       reload_ms=ms(statistics.median(reload)))
            return out
    finally:
        a.close()
        s.stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _results.add_common_args(ap)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="studio-live-") as tmp:
        run = make(Path(tmp) / "run")
        n = len(np.load(VEC, allow_pickle=True)["ids"])
        load = _results.load1()
        ip = in_process(run)
        http = over_http(run)
    print(ip, http, f"load {load:.2f}", sep="\n")
    block = f"""{SECTION}

A studio applies the events another process appended to the run's `edits.sqlite` (a second
studio on the run, a `--carry-from`) on each poll of `/api/version` (and each read of
`/api/clusters` / `/api/labels`): `Studio.sync` reads the log's last edit number (`MAX(seq)` of
the integer primary key, one indexed read) and, when it is past the state's, only the new events.
Run: Imagenette val, {n:,} items (default-encoder vectors, PCA 10 + K-means k=10); process A
edits in turn (rename, move 5 items, tag 3 items). Medians. Command: `flock /tmp/mc-bench.lock
python benchmarks/studio_live.py --write`; commit {_results.commit()}; 1-min load average {load:.2f} (2 cores
shared by other sessions).

| poll of B | in process: `Studio.version` | HTTP `GET /api/version` (real server) |
|---|---:|---:|
| nothing new | {ip['idle_version_ms']} ms (of which `sync` {ip['idle_sync_ms']} ms) | {http['idle_ms']} ms |
| 1 new event | {ip['after_1_version_ms']} ms | {http['after_1_ms']} ms |
| 100 new events | {ip['after_100_version_ms']} ms | {http['after_100_ms']} ms |
| 1 undo, {ip['edits_in_effect_at_undo']} edits in effect (state rebuilt) | {ip['after_undo_version_ms']} ms | |

After a poll that saw new events the page reloads `/api/labels` + `/api/clusters`:
{http['reload_ms']} ms over HTTP (the same reload as after its own edit).
"""
    _results.publish(SECTION, block, args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
