"""The run folder: one whole run at every instant, one writer at a time, nothing stale.

Real processes (``python -m mediacluster``) on real files: a re-run into an existing folder with
other input, two writers on one folder, and kill -9 at many moments of a re-run.
"""

from __future__ import annotations

import gc
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mediacluster import fileio
from mediacluster.errors import OutputError, RunDirError, RunLockedError
from mediacluster.rundir import (
    RunDir,
    lock_path,
    needs_escape,
    path_from_text,
    path_to_text,
    run_lock,
)

FAST = ["--reducer", "pca", "--reducer-param", "n_components=8", "--clusterer", "kmeans",
        "--clusterer-param", "n_clusters=3", "--quiet"]


def cli(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "mediacluster", *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, **kw)


@pytest.fixture(scope="module")
def vectors(cifar3_embeddings, tmp_path_factory):
    """Two different inputs: the 300 CIFAR vectors and a 120-vector subset of them."""
    d = tmp_path_factory.mktemp("vectors")
    X = np.asarray(cifar3_embeddings.vectors, dtype=np.float32)
    np.save(d / "a.npy", X)
    np.save(d / "b.npy", X[::-1][:120])
    return d / "a.npy", d / "b.npy"


def consistent(out: Path) -> str:
    """The run id of a whole, self-consistent run folder (asserts that it is one)."""
    run = RunDir.open(out)
    rid = run.run_id
    n = len(run.read_items())
    assert len(run.read_assignments()) == n == len(np.load(out / "embeddings.npy"))
    assert json.loads((out / "clusters.json").read_text())["run_id"] == rid
    if (out / "names.json").exists():
        assert json.loads((out / "names.json").read_text())["run_id"] == rid
    latest = run.models.latest()
    if latest is not None:
        assert json.loads((latest / "model.json").read_text())["metadata"]["run_id"] == rid
    return rid


@pytest.mark.slow
def test_rerun_with_other_input_leaves_nothing_of_the_old_run(vectors, tmp_path):
    a, b = vectors
    out = tmp_path / "run"
    r = cli("cluster", a, "--out", out, *FAST, "--save-model", "--report")
    assert r.returncode == 0, r.stderr
    # where the page is, as `mediacluster report` says it
    assert f"open it in a browser: file://{(out / 'report' / 'index.html').resolve()}\n" in r.stdout
    first = consistent(out)
    assert (out / "map2d.npy").exists() and (out / "report" / "index.html").exists()
    assert len(pd.read_parquet(out / "assignments.parquet")) == 300
    r = cli("cluster", b, "--out", out, *FAST)  # no --save-model, no --report this time
    assert r.returncode == 0, r.stderr
    second = consistent(out)
    assert second != first
    assert len(pd.read_parquet(out / "assignments.parquet")) == 120
    for stale in ("map2d.npy", "map2d.json", "report", "models"):  # derived from the old run
        assert not (out / stale).exists(), stale
    assert [p.name for p in tmp_path.glob(".run.*")] == [".run.lock"]  # no temporary or old folder
    r = cli("assign", out, a)  # the old model is gone with its run: assign says so
    assert r.returncode == 2 and "holds no model" in r.stderr


@pytest.mark.slow
def test_a_run_with_hand_given_names_is_kept_aside_when_replaced(vectors, tmp_path):
    a, b = vectors
    out = tmp_path / "run"
    assert cli("cluster", a, "--out", out, *FAST).returncode == 0
    first = consistent(out)
    (out / "names.yaml").write_text("0: my cats\n")
    r = cli("cluster", b, "--out", out, *FAST)
    assert r.returncode == 0
    assert not (out / "names.yaml").exists()  # never paired with the new clusters
    kept = tmp_path / f"run.replaced-{first}"
    assert (kept / "names.yaml").read_text() == "0: my cats\n"  # a person's work is not deleted
    assert f"kept as {kept}" in r.stdout  # and the person is told where it went


@pytest.mark.slow
def test_a_folder_name_too_long_for_the_runs_siblings_is_refused_before_any_work(vectors, tmp_path):
    """--out of 232 bytes (a name may have 255): the run was written, and a re-run over a person's
    names.yaml then failed at its very end ("File name too long" on NAME.replaced-<run_id>) with
    the new run already published and the person's names.yaml left in a ``.NAME.tmp-*`` folder the
    next run deletes as stale. Now refused before any work, saying how long a name may be; a
    name of that length keeps the person's work when replaced."""
    a, b = vectors
    too_long = tmp_path / ("r" * 232)
    r = cli("cluster", a, "--out", too_long, *FAST)
    most = os.pathconf(tmp_path, "PC_NAME_MAX") - 42  # the longest sibling: .NAME.old-<time_ns>-<run_id>
    assert r.returncode == 2 and "232 bytes" in r.stderr and f"at most {most} bytes" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and sorted(p.name for p in tmp_path.iterdir()) == []
    out = tmp_path / ("s" * most)
    assert cli("cluster", a, "--out", out, *FAST).returncode == 0
    first = consistent(out)
    (out / "names.yaml").write_text("0: my cats\n")
    r = cli("cluster", b, "--out", out, *FAST)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / f"{out.name}.replaced-{first}" / "names.yaml").read_text() == "0: my cats\n"


@pytest.mark.slow
def test_a_second_writer_fails_at_once_with_the_holder_named(vectors, tmp_path):
    a, _ = vectors
    out = tmp_path / "run"
    assert cli("cluster", a, "--out", out, *FAST).returncode == 0
    before = consistent(out)
    with run_lock(out, "test"):
        t = time.perf_counter()
        r = cli("cluster", a, "--out", out, *FAST)
        assert time.perf_counter() - t < 60
    assert r.returncode == 2
    assert "being written by another mediacluster process" in r.stderr and f"pid {os.getpid()}" in r.stderr
    assert consistent(out) == before


@pytest.mark.slow
def test_two_cluster_processes_on_one_folder(cifar3_dir, tmp_path):
    """Two real `cluster` processes on one --out: the second one fails (exit 2) while the first
    holds the folder; the first finishes and the folder is its whole run."""
    out = tmp_path / "run"
    cache = tmp_path / "cache"  # empty: the first process really embeds, so it holds the lock a while
    p1 = subprocess.Popen([sys.executable, "-m", "mediacluster", "cluster", str(cifar3_dir), "--out",
                           str(out), *FAST, "--cache-dir", str(cache)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    lock = lock_path(out)
    deadline = time.time() + 120
    while time.time() < deadline and not (lock.exists() and lock.read_text().startswith("pid")):
        time.sleep(0.05)
    r2 = cli("cluster", cifar3_dir, "--out", out, *FAST, "--cache-dir", cache)
    o1, e1 = p1.communicate(timeout=600)
    assert p1.returncode == 0, e1
    assert r2.returncode == 2 and "being written by another" in r2.stderr
    consistent(out)


@pytest.mark.slow
def test_kill_at_any_moment_leaves_the_old_run_or_the_new_one(vectors, tmp_path):
    a, b = vectors
    out = tmp_path / "run"
    assert cli("cluster", a, "--out", out, *FAST, "--save-model").returncode == 0
    runs = {consistent(out)}
    seen_new = False
    for delay in (0.3, 0.8, 1.3, 1.8, 2.5, 3.5, 5.0):
        p = subprocess.Popen([sys.executable, "-m", "mediacluster", "cluster", str(b if len(runs) % 2 else a),
                              "--out", str(out), *FAST, "--save-model"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        rid = consistent(out)  # never a mix: every file of one run
        seen_new |= rid not in runs
        runs.add(rid)
    # the next run cleans what killed ones left beside the folder, and succeeds
    assert cli("cluster", a, "--out", out, *FAST).returncode == 0
    consistent(out)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run.tmp")]


@pytest.mark.slow
def test_out_inside_the_input_is_not_clustered(cifar3_dir, tmp_path):
    import shutil

    src = tmp_path / "photos"
    shutil.copytree(cifar3_dir / "airplane", src)
    out = src / "results"
    for _ in range(2):  # the second run must not cluster the first run's thumbnails
        r = cli("cluster", src, "--out", out, *FAST, "--report")
        assert r.returncode == 0, r.stderr
        assert len(pd.read_parquet(out / "assignments.parquet")) == 100


@pytest.mark.slow
def test_out_that_is_a_file_or_a_foreign_folder_is_refused(vectors, tmp_path):
    a, _ = vectors
    f = tmp_path / "file.txt"
    f.write_text("keep me")
    r = cli("cluster", a, "--out", f, *FAST)
    assert r.returncode == 2 and "is an existing file" in r.stderr and f.read_text() == "keep me"
    foreign = tmp_path / "Pictures"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"x")
    r = cli("cluster", a, "--out", foreign, *FAST)
    assert r.returncode == 2 and "not a mediacluster run" in r.stderr
    assert (foreign / "holiday.jpg").exists()


def test_open_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(RunDirError, match="does not exist"):
        RunDir.open(tmp_path / "nope")
    with pytest.raises(RunDirError, match="not a run folder"):
        RunDir.open(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"schema": "mediacluster-run", "schema_version": 99}))
    with pytest.raises(RunDirError, match="schema version 99"):
        RunDir.open(tmp_path)


def test_lock_is_reentrant_in_one_thread_and_exclusive_across_processes(tmp_path):
    out = tmp_path / "run"
    with run_lock(out), run_lock(out):  # nested in one thread: fine
        code = ("import sys; from mediacluster.rundir import run_lock\n"
                f"with run_lock({str(out)!r}): pass")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert r.returncode != 0 and "RunLockedError" in r.stderr
    with run_lock(out):  # released: can be taken again
        pass
    assert issubclass(RunLockedError, RunDirError)


def test_the_one_file_lock_names_its_holder_and_locks_a_folder(tmp_path):
    """``fileio.flocked``, the lock behind ``run_lock``, the ONNX export cache and a model
    store's ``LATEST``: a second open of the lock (another process, or another thread) is
    refused at once with the holder's note, which is cleared on release; a folder is locked
    itself, a waiting thread let in only once the holder leaves."""
    import threading

    from mediacluster.fileio import LockBusy, flocked

    lp = tmp_path / "sub" / ".x.lock"
    with flocked(lp, wait=False, note="pid 1, test"):
        with pytest.raises(LockBusy) as e, flocked(lp, wait=False):
            pass
        assert e.value.holder == "pid 1, test"
    assert lp.read_text() == ""
    with pytest.raises(OutputError, match="cannot open x"), flocked(
            tmp_path / "none", folder=True, opened=lambda e: OutputError(f"cannot open x: {e}")):
        pass
    order = []

    def waiter():
        with flocked(tmp_path, folder=True):
            order.append("waiter")

    with flocked(tmp_path, folder=True):
        t = threading.Thread(target=waiter)
        t.start()
        t.join(0.3)
        order.append("holder leaves")
    t.join(5)
    assert order == ["holder leaves", "waiter"]


def test_publishing_without_renameat2_and_its_interrupted_swaps(tmp_path, monkeypatch, caplog):
    """Where ``renameat2(RENAME_EXCHANGE)`` is missing (``_exchange`` answers False, as it does
    there: forced here) a publish is two renames through ``.OUT.old-*``. It leaves none behind;
    a kill between the renames (``OUT`` missing) is undone by the next open, which puts the
    newest previous run back, not an older leftover (the name carries the time; before, a
    random run id picked one); a kill after both leaves an ``.OUT.old-*`` that the next open
    or ``cluster --out`` retires like a publish (deleted, or kept as ``OUT.replaced-<id>`` when
    it holds a person's work; before, it stayed forever)."""
    import shutil

    from mediacluster import rundir
    from mediacluster.cli import main

    monkeypatch.setattr(rundir, "_exchange", lambda a, b: False)
    rng = np.random.default_rng(3)
    v = tmp_path / "v.npy"
    np.save(v, np.concatenate([rng.normal(c, 0.3, size=(25, 8)) for c in range(3)]).astype(np.float32))
    out = tmp_path / "run"

    def cluster():
        assert main(["cluster", str(v), "--out", str(out), *FAST, "--no-names"]) == 0
        return RunDir.open(out).run_id

    first = cluster()
    (out / "names.yaml").write_text("0: mine\n")  # a person's work in the run
    second = cluster()
    assert second != first and (tmp_path / f"run.replaced-{first}").is_dir()
    assert not list(tmp_path.glob(".run.old-*")) and not list(tmp_path.glob(".run.tmp-*"))

    # killed between the two renames, with an older leftover beside it: the newest goes back
    stray = tmp_path / ".run.old-99-stray"  # sorts after the real one by name, before it by time
    shutil.copytree(out, stray)
    (stray / "run.json").write_text((stray / "run.json").read_text().replace(second, "0" * 16))
    os.rename(out, rundir._old_name(out, second))
    assert RunDir.open(out).run_id == second
    assert not list(tmp_path.glob(".run.old-*"))  # the stray (no personal files) retired: deleted

    # killed after both renames: the previous run (with a person's edits) is left at .run.old-*
    left = rundir._old_name(out, second)
    shutil.copytree(out, left)
    (left / "edits.sqlite").write_bytes(b"")
    with caplog.at_level("WARNING", "mediacluster.rundir"):
        third = cluster()
    assert third != second and not list(tmp_path.glob(".run.old-*"))
    assert (tmp_path / f"run.replaced-{second}").is_dir() and "holds a person's work" in caplog.text

    # a writer holding the folder is never disturbed mid-swap by a reader's recovery
    with run_lock(out, "test"):
        os.rename(out, rundir._old_name(out, third))
        code = f"from mediacluster.rundir import RunDir\nRunDir.open({str(out)!r})"
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert r.returncode != 0 and "does not exist" in r.stderr
        assert list(tmp_path.glob(".run.old-*")) and not out.exists()
    assert RunDir.open(out).run_id == third


@pytest.mark.parametrize("name", ["plain.jpg", "caf\u00e9.jpg", "bad\udcff\udcfe.jpg",
                                  "back\\slash\udce9.jpg", "x\\xff.jpg", "\\\\udcff.jpg"])
def test_file_names_round_trip_through_text(name):
    text = path_to_text(name)
    text.encode("utf-8")  # always valid UTF-8
    assert (path_from_text(text) if needs_escape(name) else text) == name


def test_run_tables_are_read_and_freed_on_the_calling_thread(tmp_path, monkeypatch):
    """No pyarrow thread is left holding the Python bytes of a run-folder table once the read has
    returned: freeing them needs the GIL, and a thread that asks for it while the interpreter
    finalises is ended inside a C++ destructor, aborting a finished command ("terminate called
    without an active exception", rc 134; apache/arrow#34314). pd.read_parquet's dataset scan read
    and freed them on its own threads."""
    main = threading.get_ident()
    seen = {"read": set(), "freed": set()}

    class Chunk(bytes):  # what the file hands pyarrow; it wraps these without copying
        def __del__(self):
            seen["freed"].add(threading.get_ident())

    class File(io.FileIO):
        def read(self, size=-1):
            seen["read"].add(threading.get_ident())
            return Chunk(super().read(size))

    n = 20_000
    df = pd.DataFrame({"id": [f"item{i}" for i in range(n)], "path": [f"/photos/{i}.jpg" for i in range(n)],
                       "cluster": np.arange(n) % 7, "probability": np.linspace(0, 1, n)})
    fileio.write_table(tmp_path / "t.parquet", df)
    monkeypatch.setattr(fileio, "open", lambda p, mode="r", **kw: File(p, mode), raising=False)
    for _ in range(5):
        for columns in (None, ["cluster", "probability"]):
            back = fileio.read_table(tmp_path / "t.parquet", columns=columns)
            pd.testing.assert_frame_equal(back, df[list(back.columns)], check_dtype=False)
    del back
    gc.collect()
    time.sleep(0.2)  # a worker still tearing a scan down would free its buffers now
    assert seen["read"] == {main}
    assert seen["freed"] == {main}


def _publish_minimal(out, names_yaml: str | None = None) -> str:
    with RunDir.create(out) as run:
        run.write_info({})
        if names_yaml is not None:
            (run.path / "names.yaml").write_text(names_yaml)
    return run.run_id


def test_a_kept_run_copied_back_and_replaced_again_is_kept_under_a_free_name(tmp_path):
    """A person copies a kept-aside run back to go on with it (``cp -r run.replaced-X run``), works
    on, and re-clusters: the run is kept aside again, beside the first copy. Before, the rename onto
    the existing ``run.replaced-X`` failed after the new run was published (an internal error) and
    left the old run at its temporary build name, which the next run deletes as a killed build."""
    import shutil

    out = tmp_path / "run"
    first = _publish_minimal(out, "0: cats\n")
    _publish_minimal(out)
    kept = tmp_path / f"run.replaced-{first}"
    assert (kept / "names.yaml").read_text() == "0: cats\n"
    shutil.rmtree(out)
    shutil.copytree(kept, out)  # the old run back, then more of a person's work in it
    (out / "names.yaml").write_text("0: cats\n1: dogs\n")
    with RunDir.create(out) as run:
        run.write_info({})
    again = tmp_path / f"run.replaced-{first}-2"
    assert run.kept_previous == again
    assert (again / "names.yaml").read_text() == "0: cats\n1: dogs\n"
    assert (kept / "names.yaml").read_text() == "0: cats\n"  # the first one untouched
    assert sorted(p.name for p in tmp_path.glob(".run.*")) == [".run.lock"]  # no build folder left


def test_cluster_carry_from_its_own_out_finds_a_run_kept_under_a_suffixed_name(tmp_path):
    """``cluster --out run --carry-from run`` carries from the run kept aside; kept as
    ``run.replaced-ID-2`` (that name taken), it was "nothing to carry"."""
    from mediacluster.studio.carry import resolve_previous

    out = tmp_path / "run"
    for kept in (f"run.replaced-{'a' * 16}", f"run.replaced-{'a' * 16}-2"):
        assert resolve_previous(out, out, "a" * 16, tmp_path / kept) == tmp_path / kept
    assert resolve_previous(out, out, "a" * 16, tmp_path / f"run.replaced-{'b' * 16}-2") is None
    assert resolve_previous(out, out, "a" * 16, None) is None


@pytest.mark.parametrize("doc", ['[{"id": 1}]', '"run the command again"', "3"])
def test_another_tools_run_json_is_no_run_and_its_folder_is_never_replaced(tmp_path, doc):
    """A folder holding another tool's ``run.json`` (a JSON list, a string): ``is_run`` /
    ``find_run`` (``evaluate MODEL`` looks for its run among the parents) were an internal error
    (AttributeError), and a string holding the word "command" passed as a run of an old version,
    so ``cluster --out`` replaced the folder, deleting the files in it."""
    from mediacluster.rundir import find_run

    proj = tmp_path / "proj"
    (proj / "models").mkdir(parents=True)
    (proj / "run.json").write_text(doc)
    (proj / "notes.txt").write_text("mine")
    assert not RunDir.is_run(proj) and find_run(proj / "models") is None
    with pytest.raises(RunDirError, match="not a mediacluster run"):
        with RunDir.create(proj) as run:
            run.write_info({})
    assert (proj / "notes.txt").read_text() == "mine" and (proj / "run.json").read_text() == doc


def test_out_a_link_to_a_run_folder_is_rebuilt_where_the_folder_is(tmp_path):
    """``--out runs/x`` where ``runs/x`` links to ``/big/disk/x``: the new run was built beside the
    link and swapped with the link itself, so the link became a folder on the small disk, the old
    run stayed orphaned behind it and a ``.x.tmp-*`` link was left for ever (rmtree refuses a
    link). Now the folder the link names is rebuilt, the link stays, and writers through the link
    and through the folder hold one lock."""
    big, runs = tmp_path / "big", tmp_path / "runs"
    big.mkdir()
    runs.mkdir()
    _publish_minimal(big / "x")
    (runs / "x").symlink_to(big / "x")
    with RunDir.create(runs / "x") as run:
        run.write_info({})
    assert (runs / "x").is_symlink() and run.published.path == runs / "x"
    assert json.loads((big / "x" / "run.json").read_text())["run_id"] == run.run_id
    assert sorted(p.name for p in runs.iterdir()) == ["x"]
    assert sorted(p.name for p in big.iterdir()) == [".x.lock", "x"]
    assert lock_path(runs / "x") == lock_path(big / "x")


def test_a_run_holding_only_studio_edits_is_kept_aside_and_the_rest_replaced(tmp_path):
    """A person's studio edits (``edits.sqlite``) and nothing else: re-clustering keeps the run
    aside (``run.replaced-ID``) as it keeps one with hand-given names; a run without a person's
    files is deleted."""
    out = tmp_path / "run"
    first = _publish_minimal(out)
    (out / "edits.sqlite").write_bytes(b"a person's work")
    second = _publish_minimal(out)
    kept = tmp_path / f"run.replaced-{first}"
    assert (kept / "edits.sqlite").read_bytes() == b"a person's work"
    _publish_minimal(out)
    assert not (tmp_path / f"run.replaced-{second}").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.lock", "run", kept.name]


def test_a_run_of_an_old_version_is_replaced_and_a_build_of_a_live_process_is_left(tmp_path):
    """``run.json`` without a schema but with a ``command`` (written before the schema was
    recorded) is a run: replaced, not refused. A build folder of a process still running is its
    own (left alone); one of a process that is gone is a killed build (removed), as is the
    ``.run.work`` folder of a run once it is published."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text('{"command": "cluster"}')
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        (tmp_path / f".run.tmp-{live.pid}-abcdef").mkdir()
        (tmp_path / f".run.tmp-{dead.pid}-abcdef").mkdir()
        with RunDir.create(out) as run:
            run.shards("job").write(0, pa_table())
            assert (tmp_path / ".run.work" / "job").is_dir()
            run.write_info({})
        assert RunDir.open(out).run_id == run.run_id
        assert (tmp_path / f".run.tmp-{live.pid}-abcdef").is_dir()
        assert not (tmp_path / f".run.tmp-{dead.pid}-abcdef").exists()
        assert not (tmp_path / ".run.work").exists()
    finally:
        live.kill()
        live.wait()


def pa_table():
    import pyarrow as pa

    return pa.table({"id": ["a", "b"]})


def test_embeddings_writer_takes_rows_up_to_its_last_and_refuses_past_it(tmp_path):
    from mediacluster.rundir import EmbeddingsWriter

    rows = np.arange(8, dtype=np.float32).reshape(4, 2)
    with EmbeddingsWriter(tmp_path / "e.npy", 4, 2) as w:
        w.write(0, rows[:3])
        w.write(3, rows[3:])  # the last row: start + len == n
        with pytest.raises(RunDirError, match="do not fit"):
            w.write(3, rows[:2])
    assert (np.load(tmp_path / "e.npy") == rows).all()
