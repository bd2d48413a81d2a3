"""Helpers for the studio tests: real run folders, real server processes and real browsers."""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


def make_run(emb, out: Path, save_model: bool = True, k: int = 3) -> Path:
    """A run folder written by the package's own functions (PCA + K-means: fast, and the
    studio does not care how the clusters were made), with a cached 2-D map."""
    from mediacluster.pipeline import Pipeline
    from mediacluster.report.build import map_2d
    from mediacluster.workflow import publish_run

    pipe = Pipeline(outliers=None, random_state=0).with_params(
        {"reducer": "pca", "reducer__n_components": 10, "clusterer": "kmeans", "clusterer__n_clusters": k})
    pipe.fit(emb.vectors)
    run = publish_run(out, emb, pipe, save_model=save_model)
    with run.writing("test"):
        map_2d(run, emb.vectors, method="pca")
    return run.path


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def start_service(run) -> tuple[subprocess.Popen, str]:
    """``mediacluster serve RUN`` on a free port in its own process: ``(process, url)`` once it
    says where it listens (an AssertionError if it never does)."""
    proc = subprocess.Popen([sys.executable, "-m", "mediacluster", "serve", str(run), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = None
    while url is None and (line := proc.stdout.readline()):
        m = re.search(r"listening on (\S+)", line)
        url = m and m.group(1).rstrip("/")
    if not url:
        proc.kill()
        raise AssertionError("the service did not start")
    return proc, url


class Server:
    """``mediacluster studio RUN`` in its own process; ``url`` from its "listening on" line."""

    def __init__(self, run: Path, *args: str, timeout: float = 180.0, setup: str = ""):
        # setup: Python run in the server process before the CLI (e.g. a module constant changed)
        start = ["-m", "mediacluster"] if not setup else [
            "-c", setup + "\nimport sys\nfrom mediacluster.cli import main\nsys.exit(main(sys.argv[1:]))"]
        cmd = [sys.executable, *start, "studio", str(run), "--port", "0", "--no-browser", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: list[str] = []
        self.url = None
        deadline = time.time() + timeout
        while time.time() < deadline and self.url is None:
            ready, _, _ = select.select([self.proc.stdout], [], [], 1.0)
            if ready:
                line = self.proc.stdout.readline()
                if not line:
                    break
                self.lines.append(line)
                m = re.search(r"studio: listening on (\S+)", line)
                if m:
                    self.url = m.group(1)
            elif self.proc.poll() is not None:
                break
        if self.url is None:
            self.proc.kill()
            raise AssertionError("the studio did not start:\n" + "".join(self.lines))
        self.base = self.url.split("?", 1)[0]
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def quit_chromium(drv) -> None:
    """Quit a browser of ``conftest.chromium``: its ``quit()`` (``benchmarks/_browser.chromium``)
    also kills what is left of its processes and removes its profile folder."""
    drv.quit()


def processes_with(text: str) -> list[int]:
    """The processes whose command line holds ``text`` (``benchmarks/_browser.processes_with``)."""
    from conftest import _browser

    return _browser().processes_with(text)


def blank(drv, origins=()) -> None:
    """Hand a browser back as a new one would start, for the next test to use: one window on
    ``about:blank``; no cookies (a host's cookies reach every port of it), no cache, no console
    log left to read; ``origins``' stored data (localStorage, sessionStorage, IndexedDB) cleared
    (an origin is a port: a later server may be given the same one)."""
    with contextlib.suppress(Exception):  # a dialog a test left open would refuse every command
        drv.switch_to.alert.dismiss()
    handles = drv.window_handles
    seen = set(origins)
    for h in handles:  # the pages open now: their origins' data too
        drv.switch_to.window(h)
        with contextlib.suppress(Exception):
            seen.add(drv.execute_script("return location.origin"))
    for h in handles[1:]:
        drv.switch_to.window(h)
        drv.close()
    drv.switch_to.window(handles[0])
    drv.get("about:blank")
    for o in sorted(seen - {"null", None}):
        drv.execute_cdp_cmd("Storage.clearDataForOrigin", {"origin": o, "storageTypes": "all"})
    drv.execute_cdp_cmd("Network.clearBrowserCookies", {})
    drv.execute_cdp_cmd("Network.clearBrowserCache", {})
    drv.get_log("browser")  # read: what the next test reads is its own


class SharedChromium:
    """One headless Chromium lent to the tests of a module in turn (``conftest.module_chromium``)
    instead of a new one for each: :meth:`take` starts it the first time, :meth:`give_back`
    blanks it (:func:`blank`); a browser that cannot be blanked is quit and the next
    :meth:`take` starts a new one, so one test's wreck is not the next one's failure."""

    def __init__(self, width: int = 1400, height: int = 1000):
        self.size = (width, height)
        self.drv = None
        self.started = 0  # browsers started (tests of the helper count them)

    def take(self):
        if self.drv is None:
            from conftest import chromium

            self.drv = chromium(*self.size)
            self.started += 1
        return self.drv

    def give_back(self, origins=()) -> None:
        if self.drv is None:
            return
        try:
            blank(self.drv, origins)
        except Exception:  # noqa: BLE001 - a browser that cannot be blanked is not lent again
            self.close()

    def close(self) -> None:
        drv, self.drv = self.drv, None
        if drv is not None:
            quit_chromium(drv)


@contextlib.contextmanager
def browser(width: int = 1400, height: int = 1000, shared: SharedChromium | None = None):
    """A headless Chromium (``conftest.chromium``: skipped where there is none) of ``width`` x
    ``height``, quit when the block ends however it ends; ``shared``: that browser instead,
    handed back blank (its size is its own)."""
    if shared is not None:
        drv = shared.take()
        try:
            yield drv
        finally:
            shared.give_back()
        return
    from conftest import chromium

    drv = chromium(width, height)
    try:
        yield drv
    finally:
        quit_chromium(drv)


@contextlib.contextmanager
def studio_in_chromium(run: Path, *args: str, setup: str = "", width: int = 1400, height: int = 1000,
                       shared: SharedChromium | None = None):
    """The browser tests' setup: ``(server, driver)``, a studio :class:`Server` on ``run``
    (``args`` and ``setup`` as it takes them) and a headless Chromium (new, of ``width`` x
    ``height``, or ``shared``'s). However the block ends, the browser is quit (or handed back
    blank, the server's stored data cleared) and then the server stopped: the browser first, so
    its open connections do not hold up the server's shutdown; and it is started first, so a
    machine without one skips the test before a server is started."""
    if shared is not None:
        drv = shared.take()
    else:
        from conftest import chromium

        drv = chromium(width, height)
    s = None
    try:
        s = Server(run, *args, setup=setup)
        yield s, drv
    finally:
        try:
            if shared is not None:
                shared.give_back([origin(s.base)] if s is not None else [])
            else:
                quit_chromium(drv)
        finally:
            if s is not None:
                s.stop()


def origin(url: str) -> str:
    """``scheme://host:port`` of ``url`` (what a browser keeps its stored data by)."""
    from urllib.parse import urlsplit

    u = urlsplit(url)
    return f"{u.scheme}://{u.netloc}"


def client(server: Server, **kw):
    import httpx

    return httpx.Client(base_url=server.base, timeout=120.0, **kw)


WRITE = {"X-Mediacluster": "1"}


def post(c, path: str, body=None, **kw):
    return c.post(path, json=body if body is not None else {}, headers={**WRITE, **kw.pop("headers", {})}, **kw)


def publish(c) -> dict:
    """Publish the curated model through the studio (``POST /api/publish``, which must answer
    200) and wait until the curated state is written; the answer's JSON."""
    r = post(c, "/api/publish")
    assert r.status_code == 200, r.text
    wait_written(c)
    return r.json()


def wait_written(c, timeout: float = 30.0) -> dict:
    """Wait until the server has written the curated state of its last edit into the run."""
    deadline = time.time() + timeout
    while True:
        v = c.get("/api/version").json()
        if v["written"] == v["seq"] or time.time() > deadline:
            return v
        time.sleep(0.2)


def split_run(emb, out: Path, leaks=(0, 3, 6), misfiled=(1, 4), loose=(2,), meme: int = 0) -> tuple[Path, dict]:
    """A ``cluster --dedup`` run (PCA + K-means, 3 clusters) over a collection laid out as
    ``train/<class>/`` and ``test/<class>/`` in ``out.parent / "coll"`` (``emb``'s files copied
    there: every fourth item into test/, the rest into train/, under its label), plus copies
    (the same bytes and vectors): of the train items at positions ``leaks`` in test/ (a leak
    between splits), of those at ``misfiled`` in another class's train/ folder, of those at
    ``loose`` directly in the collection's folder, and ``meme`` copies of the train item at
    position 5 in its own class folder (a meme posted many times: one large group). Returns (run
    path, {"leak", "misfiled", "loose", "meme", "originals"}: the copies' row numbers, and the
    originals' for each)."""
    import dataclasses

    import numpy as np

    from mediacluster.duplicates import DuplicateFinder
    from mediacluster.pipeline import Pipeline
    from mediacluster.workflow import publish_run

    root = out.parent / "coll"
    classes = sorted(set(map(str, emb.labels)))
    paths, labels = [], []
    for i, (p, lab) in enumerate(zip(emb.paths, emb.labels)):
        dst = root / ("test" if i % 4 == 0 else "train") / str(lab) / f"{i}-{Path(p).name}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, dst)
        paths.append(str(dst))
        labels.append(str(lab))
    train = [i for i in range(len(paths)) if i % 4]
    rows = {"leak": [], "misfiled": [], "loose": [], "meme": [], "originals": {}}
    src = []
    for kind, picks in (("leak", leaks), ("misfiled", misfiled), ("loose", loose), ("meme", [5] * meme)):
        for n, k in enumerate(picks):
            i = train[k]
            lab = labels[i]
            if kind == "leak":
                dst = root / "test" / lab / f"copy-{Path(paths[i]).name}"
            elif kind == "misfiled":
                lab = classes[(classes.index(lab) + 1) % len(classes)]
                dst = root / "train" / lab / f"copy-{Path(paths[i]).name}"
            elif kind == "meme":
                dst = root / "train" / lab / f"meme{n:04d}-{Path(paths[i]).name}"
            else:
                dst = root / f"copy-{Path(paths[i]).name}"
            shutil.copyfile(paths[i], dst)
            rows[kind].append(len(paths))
            rows["originals"][len(paths)] = i
            paths.append(str(dst))
            labels.append(lab)
            src.append(i)
    ids = [str(p) for p in paths]
    emb = dataclasses.replace(
        emb, ids=ids, root=str(root), paths=paths, labels=labels,
        vectors=np.concatenate([emb.vectors, emb.vectors[src]]),
        extras={k: np.concatenate([v, v[src]]) for k, v in emb.extras.items()})
    finder = DuplicateFinder().fit(vectors=emb.vectors, ids=ids)  # the copies' vectors are the same
    pipe = Pipeline(outliers=None, random_state=0).with_params(
        {"reducer": "pca", "reducer__n_components": 10, "clusterer": "kmeans", "clusterer__n_clusters": 3})
    pipe.fit(emb.vectors, duplicates=finder.duplicate_of_)
    return publish_run(out, emb, pipe, duplicates=finder).path, rows
