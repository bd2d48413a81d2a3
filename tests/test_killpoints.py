"""Commands killed (SIGKILL) at a point forced in a real subprocess, then resumed: what the kill
leaves must read back whole and a later command must finish the work (benchmarks/killpoints.py
does the same at random moments over whole commands; these are the moments it found wanting).

The kill point is forced by ``killed_at``: Python run in the command's process before the CLI
wraps one library function so that the process kills itself (SIGKILL: no cleanup, no ``finally``)
right after that function returns, as a power cut there would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import sigint_default

from mediacluster.inbox import FILES, listing, mark, summary
from mediacluster.serve.inbox import Inbox, KeepRule

ROOT = Path(__file__).resolve().parents[1]


def killed_at(targets: list[str], argv: list[str] | None, after: int = 1, when: str = "True",
              code: str = "") -> subprocess.CompletedProcess:
    """Run ``mediacluster ARGV`` (or the Python ``code``) with each of ``targets``
    (``module:Class.method`` or ``module:function``) wrapped: the ``after``-th call among them
    whose arguments make ``when`` true (``a``: the positional arguments) is followed by SIGKILL
    to the process."""
    run = code or f"from mediacluster.cli import main\nsys.exit(main({[str(a) for a in argv]!r}))"
    setup = f"""
import importlib, os, signal, sys
_n = [0]
def _wrap(target):
    mod, _, attr = target.partition(":")
    owner, _, name = attr.rpartition(".")
    o = importlib.import_module(mod)
    o = getattr(o, owner) if owner else o
    f = getattr(o, name)
    def _killing(*a, **k):
        r = f(*a, **k)
        if {when}:
            _n[0] += 1
            if _n[0] == {after}:
                os.kill(os.getpid(), signal.SIGKILL)
        return r
    setattr(o, name, _killing)
for _t in {targets!r}:
    _wrap(_t)
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", setup + run], capture_output=True, text=True, timeout=300,
                          env=env)


def cli(*argv) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "mediacluster", *map(str, argv)], capture_output=True,
                          text=True, timeout=300, env=env)


def png(seed: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def keep(inbox: Path, blobs: list[bytes], names: list[str]) -> None:
    """What the service's inbox writer keeps of uploads it answered (the real writer thread)."""
    box = Inbox(inbox, KeepRule(kinds=frozenset({"all"})))
    answers = [{"cluster": 0, "name": "x", "status": "clustered", "probability": 0.9, "novel": False,
                "filename": n} for n in names]
    box.offer("v0001", "/v1/assign", "image", answers, datas=blobs)
    assert box.flush()
    box.close()


def test_an_inbox_purge_killed_after_removing_a_file_leaves_no_row_without_its_file(tmp_path):
    """``inbox --purge`` removed a content's file, then its rows, committed at the end: killed
    between, the rows came back (the transaction rolled back) naming a file that is gone; the
    service, storing the same content again, found the row and wrote no file, so the inbox kept
    rows of an upload with no bytes for good (``--list`` showed it, ``/v1/inbox/files`` 404)."""
    blobs = [png(i) for i in range(3)]
    inbox = tmp_path / "inbox"
    keep(inbox, blobs, ["a.png", "b.png", "c.png"])
    assert mark(inbox)["marked"] == 3
    # killed once the second file has left files/ (removed, or moved aside), before the commit
    r = killed_at(["pathlib:Path.unlink", "os:replace"], ["inbox", inbox, "--purge", "0"], after=2,
                  when=f"str(a[0]).startswith({str(inbox / FILES)!r})")
    assert r.returncode == -signal.SIGKILL, r.stderr
    # what the next command that reads the inbox sees: every content with its file
    r = cli("inbox", inbox, "--list", "all", "--json")
    assert r.returncode == 0, r.stderr
    listed = json.loads(r.stdout)["items"]
    assert [it["missing"] for it in listed] == [False] * 3, "rows whose file the killed purge removed"
    assert sorted((inbox / it["file"]).read_bytes() for it in listed) == sorted(blobs)
    # the same contents uploaded again are kept with their bytes, and a purge run again finishes
    keep(inbox, blobs, ["a.png", "b.png", "c.png"])
    for row in listing(inbox, "all", limit=10):
        assert (inbox / row["file"]).read_bytes() in blobs
    assert summary(inbox)["contents"]["reviewed"] == 3  # as before the purge that was killed
    r = cli("inbox", inbox, "--purge", "0")
    assert r.returncode == 0, r.stderr
    assert not [p for p in (inbox / FILES).iterdir()], "a purge run again removes every file"
    assert not [p for p in inbox.rglob("*") if p.name.startswith(".") and ".tmp" in p.name]


def test_the_service_s_inbox_writer_killed_mid_file_leaves_no_temporary_file_for_good(tmp_path):
    """The service's inbox writer writes an upload's bytes to a hidden temporary file in
    ``files/`` and renames it: killed between, the temporary file stayed there for good (no row
    names it, so no purge removes it, and no later open did: a leak per kill, outside
    ``--keep-max-mb``). Now the next open of the inbox (under its write lock, which a live
    writer holds while its temporary file exists) removes it; the content is stored again whole."""
    inbox = tmp_path / "inbox"
    blob = png(7)
    code = f"""
import numpy as np
from mediacluster.serve.inbox import Inbox, KeepRule
box = Inbox({str(inbox)!r}, KeepRule(kinds=frozenset({{"all"}})))
box.offer("v0001", "/v1/assign", "image", [{{"cluster": 0, "status": "clustered", "filename": "up.png"}}],
          datas=[bytes.fromhex({blob.hex()!r})])
box.flush()
"""
    # killed right after the bytes are in the temporary file, before its rename
    r = killed_at(["pathlib:Path.write_bytes"], None, code=code, when="a[0].name.startswith('.')")
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert [p.name for p in (inbox / FILES).iterdir() if p.name.startswith(".")], "the kill came too late"
    keep(inbox, [blob], ["up.png"])  # the service started again, the same upload
    assert [p.name for p in (inbox / FILES).iterdir()] == [listing(inbox, "all")[0]["file"].split("/")[1]]
    assert (inbox / listing(inbox, "all")[0]["file"]).read_bytes() == blob


def test_a_studio_export_killed_half_way_leaves_no_export_that_looks_finished(base_run, tmp_path):
    """``studio RUN --export folders`` wrote straight into ``exports/folders-STAMP-eN``; killed
    half-way (a ``finally`` does not run) it left that folder with part of the files, named as a
    finished export, for good (the next export takes another stamp). Now an export is built in a
    hidden folder named after its process and renamed whole; the next export removes a killed
    one's."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(base_run, run, symlinks=True)
    # killed after the export's fifth file is linked
    r = killed_at(["os:symlink"], ["studio", run, "--export", "folders"], after=5,
                  when=f"str(a[1]).startswith({str(run / 'exports')!r})")
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert not [p.name for p in (run / "exports").iterdir() if not p.name.startswith(".")], \
        "a half-written export under a finished export's name"
    r = cli("studio", run, "--export", "folders")
    assert r.returncode == 0, r.stderr
    (done,) = list((run / "exports").iterdir())  # the killed one's hidden folder is gone too
    n = sum(1 for p in done.rglob("*") if p.is_symlink())
    assert n == 300


@pytest.mark.parametrize("when", ["importing the cli", "building the parser"])
def test_ctrl_c_while_the_libraries_load_is_one_line_and_exit_130(tmp_path, when):
    """Ctrl-C in the first seconds of a command, while ``mediacluster.cli`` imports numpy and
    the rest (before ``main`` takes Ctrl-C over), or while ``main`` builds the parser (the
    commands' modules: scipy, pandas): Python's traceback and exit status -2
    (benchmarks/killpoints.py met it 0.3 to 2.8 s into report, dups, evaluate and studio
    --publish). Now one line, 130."""
    fire = ('name == "numpy" and "numpy" not in sys.modules' if when == "importing the cli" else
            '"mediacluster.cli" in sys.modules and signal.getsignal(signal.SIGINT) is not '
            'signal.default_int_handler and not _fired')
    setup = f"""
import builtins, os, runpy, signal, sys
_imp = builtins.__import__
_fired = []
def _ctrl_c(name, *a, **k):
    if {fire}:
        _fired.append(name)
        os.kill(os.getpid(), signal.SIGINT)  # the terminal's Ctrl-C, delivered mid-import
    return _imp(name, *a, **k)
builtins.__import__ = _ctrl_c
sys.argv = ["mediacluster", "report", "nowhere"]
runpy.run_module("mediacluster", run_name="__main__")
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, "-c", setup], capture_output=True, text=True, timeout=120, env=env,
                       preexec_fn=sigint_default)  # CI's background run has SIGINT ignored
    assert r.returncode == 130 and "Traceback" not in r.stderr, (r.returncode, r.stderr[-800:])
    assert r.stderr.strip() == "interrupted"


def test_a_tag_model_retrained_and_killed_between_its_two_files_is_never_read_as_a_mix(tmp_path):
    """``tags train --out DIR`` over a tag model replaced ``weights.npz``, then ``model.json``:
    killed between, the new weights were read under the old ``model.json`` (its classes and
    thresholds), a model whose suggestions were the wrong tags, without a word. Now the pair
    carries one stamp: such a mix is refused, naming the folder; training again mends it."""
    from mediacluster.errors import InputError
    from mediacluster.tags.model import TagClassifier

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 4
    X = np.concatenate([c + rng.normal(size=(60, 16)) for c in centres]).astype(np.float32)
    old, new = np.repeat(["a", "b", "c"], 60), np.repeat(["z", "x", "y"], 60)  # other tags, another order
    np.savez(tmp_path / "old.npz", vectors=X, labels=old)
    np.savez(tmp_path / "new.npz", vectors=X, labels=new)
    out = tmp_path / "tagger"
    assert cli("tags", "train", tmp_path / "old.npz", "--out", out, "--quiet").returncode == 0
    # killed once the new weights.npz is in place, before the new model.json
    r = killed_at(["os:replace"], ["tags", "train", tmp_path / "new.npz", "--out", out, "--quiet"],
                  when="str(a[1]).endswith('weights.npz')")
    assert r.returncode == -signal.SIGKILL, r.stderr
    try:
        got = TagClassifier.load(out).predict(X)
    except InputError as e:
        assert str(out) in str(e) and "train the model again" in str(e)
    else:  # read back, it must be one of the two models, not new weights under old tags
        assert (got == old).mean() > 0.9 or (got == new).mean() > 0.9, "a mix of the two saves"
    assert cli("tags", "train", tmp_path / "new.npz", "--out", out, "--quiet").returncode == 0
    assert (TagClassifier.load(out).predict(X) == new).mean() > 0.9
