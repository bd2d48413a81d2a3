"""Hostile input: what a careful, hostile user feeds mediacluster (issue 11), as a corpus.

Every case ends with a correct result, or with a clear message naming the file, row or
parameter, exit code 2, and nothing lost or stale in the output folder. The corpus is made
of tables that later features extend (the studio, the service, duplicate groups):

* ``HOSTILE_NAMES``  file names as the OS holds them (bytes): not UTF-8, HTML, terminal
  escapes, look-alikes of our own escape form;
* ``NONSENSE``       command-line and config values that must be refused before any work;
* ``TAMPERING``      edits of a saved model that must be refused on load;
* ``NAMES_YAML``     hand-written cluster-name files that must be refused naming the entry;

with helpers to run a command on them: ``mc`` (a real ``python -m mediacluster`` process,
optionally under a umask or a file-size limit), ``mc_main`` (the same entry point in this
process, for what is not process-level), ``assert_user_error`` and ``assert_text_files``.
The run-folder cases (re-runs, kill -9, two writers, --out inside the input) are in
``test_rundir.py``; this file adds the full disk and read-only ones.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import dataset
from PIL import Image

from mediacluster.cli import main as cli_main
from mediacluster.cli import printable
from mediacluster.errors import ModelFormatError, ParameterError
from mediacluster.fileio import (
    cache_root,
    escape_table,
    needs_escape,
    path_from_text,
    path_to_text,
    read_table,
    write_table,
)
from mediacluster.rundir import RunDir

FAST = ["--reducer", "pca", "--reducer-param", "n_components=8", "--clusterer", "kmeans",
        "--clusterer-param", "n_clusters=3", "--quiet"]
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]")  # what must never reach a terminal


# ------------------------------------------------------------------------------------------
# the corpus
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HostileName:
    key: str
    name: bytes  # as the OS holds it
    why: str

    @property
    def text(self) -> str:
        return os.fsdecode(self.name)


HOSTILE_NAMES = [
    HostileName("not_utf8", b"bad\xff\xfe.jpg", "undecodable bytes: cache key, tables, JSON, HTML"),
    HostileName("latin1", b"caf\xe9.jpg", "a Latin-1 name on a UTF-8 system"),
    HostileName("html", b"<!--<script>.jpg", "cuts the report's embedded JSON in an HTML parser"),
    HostileName("escape_lookalike", b"x\\xff.jpg", "a valid name that looks like our escape form"),
    HostileName("escape_and_bytes", b"back\\slash\xe9.jpg", "backslash plus an undecodable byte"),
    HostileName("terminal", b"\x1b[2J\x1b[31mred.jpg", "clears and recolours a terminal"),
    HostileName("newline", b"two\nlines.jpg", "a line break inside a name"),
    HostileName("quotes", b"it's \"quoted\" & <b>.jpg", "quotes and markup"),
    HostileName("dash", b"-rf.jpg", "looks like an option"),
    HostileName("unicode", "caf\u00e9 \u6f22\u5b57 \U0001f600.jpg".encode(), "valid UTF-8, not ASCII"),
]
HOSTILE_FOLDER = b"cl\xe9ss"  # a non-UTF-8 folder name: becomes a label with --labels-from-folders
BROKEN_NAMES = [b"broken\xff.jpg", b"\x1b]0;owned\x07broken.jpg"]  # skipped: their reasons are printed


def _name_ids(cases):
    return [c.key for c in cases]


# Values that must be refused before any work, naming the parameter (issue 11 items 11, 12, 16).
# (extra CLI arguments, config file text or None, what the message must say)
NONSENSE = [
    (["--clusterer", "kmeans", "--clusterer-param", "n_clusters=-2"], None, "clusterer__n_clusters"),
    (["--clusterer", "kmeans", "--clusterer-param", "n_clusters=0"], None, "clusterer__n_clusters"),
    (["--clusterer", "kmeans", "--clusterer-param", "n_clusters=500"], None, "n_clusters=500"),
    (["--clusterer", "kmeans", "--clusterer-param", "n_clusters=abc"], None, "clusterer__n_clusters"),
    (["--clusterer", "hdbscan", "--clusterer-param", "min_cluster_size=-5"], None,
     "clusterer__min_cluster_size"),
    (["--clusterer", "kmeans_auto", "--clusterer-param", "k_min=10", "--clusterer-param", "k_max=3"],
     None, "k_min"),
    (["--clusterer", "kmeans_auto", "--clusterer-param", "k_min=500"], None, "k_min=500"),
    (["--reducer", "umap", "--reducer-param", "n_components=abc"], None, "reducer__n_components"),
    (["--reducer", "umap", "--reducer-param", "n_components=ten"], None, "reducer__n_components"),
    (["--reducer", "pca", "--reducer-param", "nonsense=1"], None, "nonsense"),
    ([], "assign_noise: maybe\n", "assign_noise"),
    ([], "predict_neighbors: 0\n", "predict_neighbors"),
    ([], "reference_size: -1\n", "reference_size"),
    ([], "random_state: abc\n", "random_state"),
    ([], "reducer: {name: umap, params: {n_components: ten}}\n", "reducer__n_components"),
    ([], "reducer: [1\n", "line 2, column 1"),  # YAML syntax error: where it is
    ([], b"reducer: pca\n# \xff\n", "not UTF-8"),
    ([], "clusterer: {name: kmeans, params: {n_clusters: 2.5}}\n", "clusterer__n_clusters"),
    ([], "unknown_key: 1\n", "unknown_key"),
    # a key given twice: PyYAML kept the second, silently (fileio.read_yaml)
    ([], "reducer: pca\nclusterer: kmeans\nreducer: umap\n", "line 3, column 1: found the key 'reducer' a second"),
]


def _set(path, value):
    def f(doc, arrays):
        d = doc
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
    return f


def _delete(path):
    def f(doc, arrays):
        d = doc
        for k in path[:-1]:
            d = d[k]
        del d[path[-1]]
    return f


def _array(name, fn):
    def f(doc, arrays):
        arrays[name] = fn(arrays[name])
    return f


def _poke(name, index, value):
    def g(a):
        a = a.copy()
        a[index] = value
        return a
    return _array(name, g)


# Edits of a saved model: each must be refused on load, naming the file (items 12, 16, 18).
# (what, edit(model_json, arrays), file the message names, what it must say)
TAMPERING = [
    ("a key deleted", _delete(["pipeline"]), "model.json", "pipeline"),
    ("n_features_in deleted", _delete(["n_features_in"]), "model.json", "n_features_in"),
    ("n_features_in a word", _set(["n_features_in"], "abc"), "model.json", "n_features_in"),
    ("pipeline not a mapping", _set(["pipeline"], "x"), "model.json", "pipeline"),
    ("unknown pipeline key", _set(["pipeline", "evil"], 1), "model.json", "evil"),
    ("predict_neighbors -5", _set(["pipeline", "predict_neighbors"], -5), "model.json", "predict_neighbors"),
    ("stage not a mapping", _set(["stages", "clusterer"], "x"), "model.json", "clusterer"),
    ("stage class not registered", _set(["stages", "clusterer", "class"], "os.system"), "model.json",
     "os.system"),
    ("stage parameter a word", _set(["stages", "reducer", "params", "n_components"], "ten"), "model.json",
     "reducer__n_components"),
    ("ref_normalize a word", _set(["ref_normalize"], "yes"), "model.json", "ref_normalize"),
    ("ref_center a word", _set(["ref_center"], "yes"), "model.json", "ref_center"),
    ("ref_center without ref_normalize", lambda doc, arrays: doc.update(ref_center=True, ref_normalize=False),
     "model.json", "ref_center"),
    ("metadata a list", _set(["metadata"], []), "model.json", "metadata"),
    ("names a word", _set(["metadata", "names"], "abc"), "model.json", "metadata.names"),
    ("names key not an id", _set(["metadata", "names"], {"x": "cats"}), "model.json", "'x'"),
    ("name a mapping", _set(["metadata", "names"], {"0": {"a": 1}}), "model.json", "cluster 0"),
    ("encoder a number", _set(["metadata", "encoder"], 5), "model.json", "metadata.encoder"),
    ("timings a word", _set(["timings_s"], "x"), "model.json", "timings_s"),
    ("format_version a string", _set(["format_version"], "1"), "model", "'1'"),
    ("format_version a float", _set(["format_version"], 1.0), "model", "1.0"),
    ("float labels", _array("labels", lambda a: a.astype(np.float64)), "arrays.npz", "labels"),
    ("labels 2-D", _array("labels", lambda a: a[:, None]), "arrays.npz", "labels"),
    ("labels below -2", _poke("labels", 0, -7), "arrays.npz", "labels"),
    ("assigned cluster below -2", _poke("cluster", 0, -7), "arrays.npz", "cluster"),
    ("NaN in reference vectors", _poke("ref_vectors", (0, 0), np.nan), "arrays.npz", "ref_vectors"),
    ("reference vectors cut", _array("ref_vectors", lambda a: a[:, :10]), "arrays.npz", "ref_vectors"),
    ("probability 5", _poke("probabilities", 0, 5.0), "arrays.npz", "probabilities"),
    ("probability -1", _poke("probabilities", 0, -1.0), "arrays.npz", "probabilities"),
    ("embedding 1-D", _array("embedding", lambda a: a[:, 0]), "arrays.npz", "embedding"),
    ("novelty threshold of 3", _array("novelty_threshold", lambda a: np.ones(3)), "arrays.npz",
     "novelty_threshold"),
    ("novelty threshold negative", _array("novelty_threshold", lambda a: np.array(-1.0)), "arrays.npz",
     "novelty_threshold"),
    ("novelty calibration unsorted", _array("novelty_calibration", lambda a: a[::-1].copy()), "arrays.npz",
     "novelty_calibration"),
    ("NaN in novelty calibration", _poke("novelty_calibration", 0, np.nan), "arrays.npz", "novelty_calibration"),
    ("ref_index out of range", _poke("ref_index", 0, 10**6), "arrays.npz", "ref_index"),
    ("rows of another model", _array("confidence", lambda a: a[:-1]), "arrays.npz", "confidence"),
    ("complex numbers", _array("probabilities", lambda a: a.astype(complex)), "arrays.npz", "probabilities"),
]

# Hand-written names.yaml files that must be refused naming the file and the entry (item 17).
NAMES_YAML = [
    ("99: foo\n", "99 is not a cluster"),
    ("0: {a: 1}\n", "cluster 0 must be plain text"),
    ("0: [a, b]\n", "cluster 0 must be plain text"),
    ("abc: x\n", "'abc' is not an integer"),
    ("0: [1\n", "line 2, column 1"),
    (b"0: caf\xe9\n", "not UTF-8"),
    ("- just a list\n", "expected a mapping"),
    # the template's empty '0:' below a person's '0: cats' dropped the name, silently
    ("0: cats\n1:\n0:\n", "line 3, column 1: found the key 0 a second time (first on line 1)"),
    ("0: cats\n00: dogs\n", "found the key 0 a second time"),  # YAML 1.1: 00 is the octal 0
]


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
def mc(*args, env=None, umask=None, max_file_bytes=None, timeout=600, input=None):
    """``python -m mediacluster ARGS`` in a real process (stdout strict UTF-8, as on a terminal
    whose locale is not C), optionally under a umask or a file-size limit (a full disk: writes
    beyond it fail with EFBIG, Python ignores SIGXFSZ). Returns CompletedProcess (bytes)."""
    def pre():
        if umask is not None:
            os.umask(umask)
        if max_file_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    full_env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict", **(env or {})}
    return subprocess.run([sys.executable, "-m", "mediacluster", *[os.fsencode(str(a)) if isinstance(a, Path)
                                                                    else a for a in args]],
                          capture_output=True, env=full_env, timeout=timeout, input=input,
                          preexec_fn=pre if (umask is not None or max_file_bytes is not None) else None)


MANY = """
import sys
from mediacluster.cli import main
for argv in {commands!r}:
    rc = main(argv)
    print(f"rc={{rc}}", file=sys.stderr)
    if rc:
        sys.exit(rc)
"""


def mc_many(*commands, **kw):
    """Several commands through the same ``main`` in one real process (one start-up), e.g.
    ``cluster`` then ``report`` under one umask; stops at the first non-zero exit."""
    commands = [[str(a) for a in c] for c in commands]
    return mc_python(MANY.format(commands=commands), **kw)


def mc_python(code, env=None, umask=None, max_file_bytes=None, timeout=600):
    def pre():
        if umask is not None:
            os.umask(umask)
        if max_file_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=timeout,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8:strict", **(env or {})},
                          preexec_fn=pre if (umask is not None or max_file_bytes is not None) else None)


def mc_main(*args, capsys=None) -> tuple[int, str, str]:
    """The same entry point in this process (for what is not process-level): (rc, out, err).
    argparse's own refusals (SystemExit) come back as their exit code."""
    if capsys is not None:
        capsys.readouterr()
    try:
        rc = cli_main([str(a) for a in args])
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr() if capsys is not None else ("", "")
    return rc, out, err


def text(b: bytes) -> str:
    return b.decode("utf-8", "backslashreplace")


def assert_user_error(rc, err, *fragments):
    """Exit 2, one clear ``error:`` line naming what is wrong, no traceback, nothing a
    terminal would act on."""
    err = text(err) if isinstance(err, bytes) else err
    assert rc == 2, err
    assert "Traceback" not in err and "internal error" not in err, err
    assert "error:" in err, err
    for f in fragments:
        assert f in err, (f, err)
    assert not CONTROL.search(err), err


def assert_text_files(folder: Path) -> None:
    """Every text file mediacluster wrote under ``folder`` is valid UTF-8."""
    for p in folder.rglob("*"):
        if p.suffix in (".csv", ".json", ".html", ".yaml", ".txt") and p.is_file():
            p.read_bytes().decode("utf-8")  # raises if not


def run_files(out: Path) -> dict[str, bytes]:
    """Every file of a run folder with its bytes (to show that nothing changed)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def embedded_json(html_text: str) -> dict:
    """The report's ``<script id="mc-data">`` payload as the browser's HTML parser cuts it: up
    to the first ``</script`` (a ``<!--`` would move the end further in a real parser, so the
    payload must hold no ``<`` at all)."""
    start = html_text.index('<script id="mc-data" type="application/json">')
    body = html_text[start:].split(">", 1)[1]
    body = body[:body.lower().index("</script")]
    assert "<" not in body and "&" not in body, body[:200]
    return json.loads(body)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One embedding cache (and crash log folder) for this module's processes."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def user_cache(cache, monkeypatch):
    """In-process commands use the module's cache; numba's cache stays where it was."""
    monkeypatch.setenv("NUMBA_CACHE_DIR", os.environ.get("NUMBA_CACHE_DIR") or str(cache_root() / "numba"))
    monkeypatch.setenv("MEDIACLUSTER_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """18 real photos: 6 CIFAR-10 test images each of airplane, frog, truck."""
    from mediacluster.datasets import extract_slice

    d = tmp_path_factory.mktemp("photos")
    extract_slice(dataset("cifar10-test"), d, classes=["airplane", "frog", "truck"], per_class=6, seed=0)
    return d


def photo_files(photos: Path) -> list[Path]:
    return sorted(photos.rglob("*.jpg"))


@pytest.fixture(scope="module")
def hostile_dir(photos, tmp_path_factory) -> tuple[Path, set[str], set[str]]:
    """A folder whose file names are the corpus: (folder, usable paths, broken paths).

    Every HOSTILE_NAMES entry holds a real photo, a folder with a non-UTF-8 name holds three
    more, and two broken files with hostile names are there to be skipped (and printed)."""
    root = tmp_path_factory.mktemp("hostile")
    src = photo_files(photos)
    good, bad = set(), set()
    for i, h in enumerate(HOSTILE_NAMES):
        p = os.path.join(os.fsencode(root), h.name)
        shutil.copyfile(src[i], p)
        good.add(os.fsdecode(p))
    sub = os.path.join(os.fsencode(root), HOSTILE_FOLDER)
    os.mkdir(sub)
    for j in range(3):
        p = os.path.join(sub, f"p{j}.jpg".encode())
        shutil.copyfile(src[len(HOSTILE_NAMES) + j], p)
        good.add(os.fsdecode(p))
    for name in BROKEN_NAMES:
        p = os.path.join(os.fsencode(root), name)
        with open(p, "wb") as f:
            f.write(b"this is not a picture\n")
        bad.add(os.fsdecode(p))
    return root, good, bad


@pytest.fixture(scope="module")
def blobs(tmp_path_factory) -> Path:
    """120 vectors in 3 well separated groups (numbers need no media)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 32)) * 10
    X = np.vstack([c + rng.normal(size=(40, 32)) for c in centres]).astype(np.float32)
    p = tmp_path_factory.mktemp("blobs") / "blobs.npy"
    np.save(p, X)
    return p


@pytest.fixture(scope="module")
def vec_run(blobs, tmp_path_factory, cache) -> Path:
    """A run folder with a saved model, fitted on ``blobs`` in a real process."""
    out = tmp_path_factory.mktemp("vecrun") / "run"
    r = mc("cluster", blobs, "--out", out, *FAST, "--save-model", env={"MEDIACLUSTER_CACHE": str(cache)})
    assert r.returncode == 0, text(r.stderr)
    return out


# ------------------------------------------------------------------------------------------
# item 1 (+ 6, 15): file names are data
# ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_hostile_file_names_are_clustered_written_reported_and_assigned(hostile_dir, cache, tmp_path, capsys,
                                                                       user_cache):
    """A folder of hostile names: every usable file is clustered under its exact name, the
    broken ones are skipped with their reasons, every table/JSON/HTML is valid UTF-8 and reads
    back exactly, the report's script data is intact, and no name reaches the terminal raw."""
    root, good, bad = hostile_dir
    env = {"MEDIACLUSTER_CACHE": str(cache)}
    out = tmp_path / "run"
    r = mc("cluster", root, "--out", out, *FAST, "--save-model", "--labels-from-folders", env=env)
    assert r.returncode == 3, text(r.stderr)  # done, with skipped files
    for stream in (r.stdout, r.stderr):
        assert not CONTROL.search(text(stream).replace("\n", "")), stream
    run = RunDir.open(out)
    a = run.read_assignments()
    assert set(a["path"]) == good and len(a) == len(good)  # exact names, none lost
    assert set(run.read_items()["path"]) == good
    labels = dict(zip(run.read_items()["path"], run.read_items()["label"]))
    assert {labels[p] for p in good if os.fsencode(p).count(HOSTILE_FOLDER)} == {os.fsdecode(HOSTILE_FOLDER)}
    # the CSV reads back the same (paths stored relative to the collection root)
    assert {os.path.join(run.collection_root.path, p) for p in read_table(out / "assignments.csv")["path"]} == good
    skipped = json.loads((out / "run.json").read_text(encoding="utf-8"))["skipped"]
    assert {path_from_text(s["path"]) if s.get("escaped") else s["path"] for s in skipped} == bad
    assert all("not an image" in s["reason"] for s in skipped)
    assert_text_files(out)

    rc, _, err = mc_main("report", out, "--map", "pca", "--quiet", capsys=capsys)
    assert rc == 0, err
    page = (out / "report" / "index.html").read_bytes().decode("utf-8")
    data = embedded_json(page)  # item 6: the map, legend and filters get all their data
    assert data["n"] == len(good)
    assert os.path.join(str(root), "<!--<script>.jpg") in data["paths"]
    assert {path_to_text(p) for p in good} == set(data["paths"])
    assert 'class="noimg' not in page  # every hostile name got its thumbnail
    assert_text_files(out)

    rc, _, err = mc_main("assign", out, root, "--out", tmp_path / "new.csv", "--quiet", capsys=capsys)
    assert rc == 3, err
    assert not CONTROL.search(err.replace("\n", ""))
    got = read_table(tmp_path / "new.csv")
    assert set(got["path"]) == good
    fitted = dict(zip(a["path"], a["cluster"]))  # (pandas cannot index such names: dicts)
    assert dict(zip(got["path"], got["cluster"])) == fitted  # a model's training items keep their cluster
    r = mc("assign", out, root, "--quiet", env=env)  # printed (strict UTF-8 stdout), one line per item
    assert r.returncode == 3
    lines = text(r.stdout).splitlines()[1:]
    assert len(lines) == len(good)
    assert not CONTROL.search(text(r.stdout).replace("\n", "").replace("\t", ""))
    assert not CONTROL.search(text(r.stderr).replace("\n", ""))


@pytest.mark.parametrize("fit_sample", [pytest.param("all", marks=pytest.mark.slow), "8"])
def test_hostile_names_with_dedup_and_a_fit_sample(fit_sample, hostile_dir, cache, tmp_path):
    """``cluster --dedup`` (the duplicate_of column) and a run fitted on a sample (items and
    assignments written batch by batch) keep every hostile name exactly (both crashed, exit 1,
    on a name that is not UTF-8)."""
    src, good, bad = hostile_dir
    root = tmp_path / "photos"
    shutil.copytree(src, root)
    good = {os.path.join(str(root), os.path.relpath(p, src)) for p in good}
    original = os.path.join(os.fsencode(root), HOSTILE_NAMES[0].name)
    copy = os.path.join(os.fsencode(root), b"copy\xff.jpg")  # a copy: its duplicate_of is not UTF-8
    shutil.copyfile(original, copy)
    good.add(os.fsdecode(copy))
    out = tmp_path / "run"
    r = mc("cluster", root, "--out", out, *FAST, "--dedup", "--fit-sample", fit_sample, "--labels-from-folders",
           env={"MEDIACLUSTER_CACHE": str(cache)})
    assert r.returncode == 3, text(r.stderr)
    run = RunDir.open(out)
    a = run.read_assignments()
    assert set(a["path"]) == good and set(run.read_items()["path"]) == good
    assert set(a["duplicate_of"].dropna()) == {os.fsdecode(original)}
    assert os.fsdecode(HOSTILE_FOLDER) in set(run.read_items()["label"])
    assert_text_files(out)


@pytest.mark.parametrize("embed", [False, True], ids=["no-embed", "embed"])
def test_dups_command_writes_hostile_names(embed, hostile_dir, cache, tmp_path, capsys, user_cache):
    """``dups`` on the hostile folder: every name in dups.parquet exactly, the text files UTF-8,
    nothing raw on the terminal (a non-UTF-8 name crashed building the table: exit 1)."""
    root, good, bad = hostile_dir
    out = tmp_path / "dups"
    r = mc("dups", root, "--out", out, "--quiet", *([] if embed else ["--no-embed"]),
           env={"MEDIACLUSTER_CACHE": str(cache)})
    assert r.returncode in (0, 3), text(r.stderr)
    for stream in (r.stdout, r.stderr):
        assert not CONTROL.search(text(stream).replace("\n", "")), stream
    from mediacluster.duplicates.collection import read_dups

    df = read_dups(out)  # paths stored relative to the collection root, resolved here
    assert good <= set(df["path"]) <= good | bad
    assert set(read_table(out / "dups.parquet")["id"]) == set(df["path"])
    assert_text_files(out)


@pytest.mark.parametrize("h", HOSTILE_NAMES, ids=_name_ids(HOSTILE_NAMES))
def test_text_form_of_each_name_round_trips(h, tmp_path):
    """Tables: a row with a non-UTF-8 name is written in escaped form (every text cell of the
    row), marked escaped, and reads back exactly; other rows and tables are untouched."""
    name = h.text
    df = pd.DataFrame({"id": pd.Series([name, "plain"], dtype=object),
                       "path": pd.Series([f"/x/{name}", "/x/plain.jpg"], dtype=object),
                       "label": pd.Series(["a\\xff literal", "b\\c"], dtype=object),
                       "cluster": [0, 1]})
    for suffix in (".csv", ".parquet"):
        p = tmp_path / f"t{suffix}"
        write_table(p, df)
        if suffix == ".csv":
            p.read_bytes().decode("utf-8")
        back = read_table(p)
        assert back["id"].tolist() == df["id"].tolist()
        assert back["path"].tolist() == df["path"].tolist()
        assert back["label"].tolist() == df["label"].tolist()  # not un-escaped by mistake
        assert back["cluster"].tolist() == [0, 1]
    assert ("escaped" in escape_table(df)) == needs_escape(name)


def test_csv_with_raw_non_utf8_names_is_read_exactly(hostile_dir, tmp_path):
    """A manifest or labels file written by another tool holds the raw bytes of the names:
    they name the same files (and numbers stay numbers)."""
    from mediacluster.ingest import collect

    root, good, _ = hostile_dir
    rows = b"".join(os.fsencode(p).replace(b'"', b'""').join([b'"', b'"']) + b",%d\n" % i
                    for i, p in enumerate(sorted(good)))
    (tmp_path / "m.csv").write_bytes(b"path,n\n" + rows)
    df = read_table(tmp_path / "m.csv", encoding_errors="surrogateescape")
    assert df["path"].tolist() == sorted(good) and df["n"].tolist() == list(range(len(good)))
    coll = collect(tmp_path / "m.csv")
    assert sorted(coll.paths) == sorted(good) and not coll.skipped


def test_embedding_cache_keys_non_utf8_paths_exactly(tmp_path, photos):
    """The cache's fast path records a non-UTF-8 path by its bytes (it used to abort the run)."""
    from mediacluster.embed import EmbeddingStore
    from mediacluster.fileio import hash_file

    p = os.path.join(os.fsencode(tmp_path), b"bad\xff.jpg")
    shutil.copyfile(photo_files(photos)[0], p)
    os.utime(p, (1_000_000_000, 1_000_000_000))  # old enough to be trusted ("racily clean" rule)
    name = os.fsdecode(p)
    with EmbeddingStore(tmp_path / "c") as store:
        hashes, errors = store.hash_files([name])
        assert not errors and hashes == [hash_file(name)]
        again, _ = store.hash_files([name])
        assert again == hashes and store.stats()["files"] >= 0


def test_printable_escapes_what_a_terminal_would_act_on():
    for h in HOSTILE_NAMES + [HostileName("b", b, "") for b in BROKEN_NAMES]:
        shown = printable(h.text)
        assert not CONTROL.search(shown) and "\n" not in shown
        shown.encode("utf-8")
    # bidirectional controls would reorder the rest of the printed line (an id "abc\u202egpj.exe")
    for bidi in ("\u202e", "\u202a", "\u2066", "\u2069", "\u200f", "\u061c"):
        shown = printable(f"invoice{bidi}gpj.exe")
        assert bidi not in shown and f"\\u{ord(bidi):04x}" in shown
    assert printable("שלום مرحبا") == "שלום مرحبا"  # right-to-left text itself is printed as it is


# ------------------------------------------------------------------------------------------
# item 5: batch size and workers
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flag,value", [("--batch-size", "0"), ("--batch-size", "-3"), ("--workers", "0"),
                                        ("--batch-size", "abc")])
def test_batch_size_and_workers_must_be_positive(flag, value, photos, capsys, user_cache):
    rc, out, err = mc_main("cluster", photos, "--out", "/nonexistent/never", flag, value, capsys=capsys)
    assert rc == 2 and flag in err


def test_embed_collection_refuses_nonpositive_batches(photos):
    from mediacluster.embed import embed_collection
    from mediacluster.ingest import collect

    coll = collect(photos)
    for kw in ({"batch_size": 0}, {"batch_size": -1}, {"workers": 0}, {"batch_size": 2.5}):
        with pytest.raises(ParameterError):
            embed_collection(coll, **kw)


# ------------------------------------------------------------------------------------------
# items 7 and 8: copies of one file, and very small collections
# ------------------------------------------------------------------------------------------
def test_copies_of_one_image_are_one_cluster_with_one_name(photos, cache, tmp_path):
    src = tmp_path / "copies"
    src.mkdir()
    one = photo_files(photos)[0]
    for i in range(300):
        shutil.copyfile(one, src / f"copy_{i:03d}.jpg")
    out = tmp_path / "run"
    r = mc("cluster", src, "--out", out, "--quiet", env={"MEDIACLUSTER_CACHE": str(cache)})
    assert r.returncode == 0, text(r.stderr)
    run = RunDir.open(out)
    assert set(run.read_assignments()["cluster"]) == {0}
    clusters = run.read_clusters()
    assert len(clusters) == 1 and clusters[0]["size"] == 300 and clusters[0].get("name")


def _copies(X, groups=(0, 40, 80), copies=20):
    """X plus ``copies`` exact copies of a few of its rows (shuffled in)."""
    Y = np.vstack([X, np.repeat(X[list(groups)], copies, axis=0)])
    order = np.random.default_rng(1).permutation(len(Y))
    return Y[order]


CLUSTERERS = [("kmeans", {"n_clusters": 3}), ("kmeans_auto", {"min_size": 5}),
              pytest.param("hdbscan", {"min_cluster_size": 5}, marks=pytest.mark.slow),  # numba JIT
              ("agglomerative", {"n_clusters": 3}), ("dbscan", {"eps": 3.0}), ("meanshift", {}), ("auto", {})]


@pytest.mark.parametrize("name,params", CLUSTERERS)
def test_identical_vectors_share_a_label_whatever_the_clusterer(name, params, blobs, one_blas_thread):
    """Exact copies are one item to every stage: they share label, probability and map
    position for every registered clusterer (and the outlier stage)."""
    from mediacluster.pipeline import Pipeline, distinct_rows

    X = _copies(np.load(blobs))
    spec = name if name == "auto" else {"clusterer": name, **{f"clusterer__{k}": v for k, v in params.items()}}
    pipe = Pipeline(reducer="pca", outliers="lof", clusterer="auto", random_state=0)
    pipe = pipe.with_params(spec) if isinstance(spec, dict) else pipe
    pipe.fit(X)
    first, inverse = distinct_rows(X)
    assert len(first) == 120
    for arr in (pipe.labels_, pipe.probabilities_, pipe.cluster_, pipe.embedding_):
        assert np.array_equal(arr, arr[first][inverse])
    again = pipe.predict(X[:5])
    assert again.shape == (5,)


@pytest.mark.parametrize("distinct", [1, 2])
def test_one_or_two_distinct_vectors_are_their_own_clusters(distinct, blobs, tmp_path):
    from mediacluster.pipeline import Pipeline

    X = np.repeat(np.load(blobs)[[0, 50][:distinct]], 30, axis=0)
    pipe = Pipeline(outliers="lof", random_state=0).fit(X)
    assert pipe.n_clusters_ == distinct and (pipe.labels_ >= 0).all()
    assert (pipe.predict(X[:3]) == pipe.labels_[:3]).all()
    pipe.save(tmp_path / "m")
    assert (Pipeline.load(tmp_path / "m").predict(X) == pipe.labels_).all()


@pytest.mark.parametrize("reducer", ["pca", "ipca", "kernel_pca", "none"])
@pytest.mark.parametrize("n", [3, 4, 7, 11])
def test_every_reducer_clusters_three_to_eleven_items(reducer, n, blobs, one_blas_thread):
    from mediacluster.pipeline import Pipeline

    X = np.load(blobs)[:: 120 // n][:n]
    pipe = Pipeline(reducer=reducer, random_state=0).fit(X)
    assert len(pipe.labels_) == n and pipe.n_clusters_ >= 1


@pytest.mark.slow
@pytest.mark.parametrize("n", [3, 5, 11])
def test_default_pipeline_with_umap_clusters_three_to_eleven_items(n, blobs):
    """UMAP's spectral init needs more than n_components + 1 items (scipy: k >= N)."""
    from mediacluster.pipeline import Pipeline

    X = np.load(blobs)[:: 120 // n][:n]
    pipe = Pipeline(random_state=0).fit(X)
    assert len(pipe.labels_) == n and pipe.n_clusters_ >= 1


@pytest.mark.slow
def test_cluster_command_on_five_photos(photos, cache, tmp_path):
    src = tmp_path / "five"
    src.mkdir()
    for p in photo_files(photos)[:5]:
        shutil.copyfile(p, src / p.name)
    r = mc("cluster", src, "--out", tmp_path / "run", "--quiet", "--save-model",
           env={"MEDIACLUSTER_CACHE": str(cache)})
    assert r.returncode == 0, text(r.stderr)


# ------------------------------------------------------------------------------------------
# item 10: decoding memory is bounded by pixels in flight, not per image
# ------------------------------------------------------------------------------------------
MEM_SCRIPT = r"""
import json, resource, sys, tempfile
from mediacluster.embed import embed_collection
from mediacluster.ingest import collect
from mediacluster.ingest.images import DECODE_BUDGET
cache = tempfile.mkdtemp()
embed_collection(collect(sys.argv[2]), cache_dir=cache, progress=False)  # load the encoder first

def hwm_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

if len(sys.argv) > 3:  # the workers overlap by construction (test_decoding_memory_is_bounded_...)
    import threading
    import mediacluster.ingest.images as images

    # every worker keeps its decoded image until all N workers have decoded theirs ("decoded":
    # without a bound, N decoded images are then held at once whatever the scheduling), or until
    # all N have asked the budget for their pixels ("asked": with a bound, the workers that did
    # not get their pixels wait on the budget meanwhile; waiting for N decoded images there
    # would wait for ever)
    N, gate, arrived, decoded, late = int(sys.argv[3]), sys.argv[4], [0], [0], [0]
    cond = threading.Condition()
    _hold, _to_rgb = images._hold_pixels, images.to_rgb

    def hold(pixels):
        with cond:
            arrived[0] += 1
            cond.notify_all()
        _hold(pixels)  # the real budget (waits while it is taken)

    def to_rgb(im):  # called on the decoded image, before the encoder shrinks it
        im = _to_rgb(im)
        with cond:
            decoded[0] += 1
            cond.notify_all()
            if not cond.wait_for(lambda: (decoded if gate == "decoded" else arrived)[0] >= N, timeout=300):
                late[0] += 1
        return im

    images._hold_pixels, images.to_rgb = hold, to_rgb

import ctypes, gc
gc.collect()
ctypes.CDLL("libc.so.6").malloc_trim(0)  # what the warm-up freed (an ONNX export) leaves
with open("/proc/self/clear_refs", "w") as f:  # reset the peak: measure the decoding alone
    f.write("5")
before = hwm_kb()
emb = embed_collection(collect(sys.argv[1]), cache_dir=cache, workers=8, progress=False)
print(json.dumps({"n": len(emb), "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "decode_peak_kb": hwm_kb(), "before_kb": before,
                  "budget": DECODE_BUDGET.capacity, "peak": DECODE_BUDGET.peak,
                  "gate_timeouts": late[0] if len(sys.argv) > 3 else None}))
"""


def _big_pngs(folder: Path, n: int, size: tuple[int, int]) -> None:
    folder.mkdir(exist_ok=True)
    for i in range(n):
        im = Image.new("RGB", size, (30 * i, 100, 200 - 20 * i))
        im.paste((255, 20 * i, 0), (size[0] // 8, size[1] // 8, size[0] // 2, size[1] // 2))
        im.save(folder / f"big_{i}.png", compress_level=1)


def _peak_rss(folder: Path, budget_pixels: int | None, cache: Path, overlap: int | None = None,
              gate: str = "asked") -> dict:
    """Decode (and embed) ``folder``'s images with 8 workers in a new process under a budget of
    ``budget_pixels``: the peak RSS while decoding, the budget's own peak of pixels held.
    ``overlap``: each worker keeps its decoded image until that many workers have decoded theirs
    (``gate="decoded"``, for no bound) or have asked the budget for pixels (``"asked"``): the
    workers overlap by construction, not by the scheduler's chance."""
    env = {**os.environ, "MEDIACLUSTER_CACHE": str(cache)}
    if budget_pixels is not None:
        env["MEDIACLUSTER_DECODE_PIXELS"] = str(budget_pixels)
    small = folder.parent / "warmup"
    if not small.exists():
        _big_pngs(small, 1, (64, 48))
    r = subprocess.run([sys.executable, "-c", MEM_SCRIPT, str(folder), str(small),
                        *([] if overlap is None else [str(overlap), gate])], capture_output=True,
                       text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_decoding_memory_is_bounded_across_workers(tmp_path, cache, user_cache):
    """8 workers decoding 8 large PNGs: with a budget of one image's pixels, the process holds
    about one decoded image at a time, not eight (peak RSS in a real process). The workers
    overlap by construction (``_peak_rss(overlap=)``): without a bound each keeps its decoded
    image until all eight have decoded theirs, so eight decoded images are held at once whatever
    the scheduler does under load (waiting only until all eight had asked the budget, a worker
    could go on before the last ones had decoded: at load ~6 decoding added 234 MB where eight
    images are 288 MB, and the gap to the bound fell short); with the bound each waits until the
    others wait on the budget."""
    from mediacluster.embed import embed_collection
    from mediacluster.ingest import collect

    w, h, n = 4000, 3000, 8
    _big_pngs(tmp_path / "big", n, (w, h))
    _big_pngs(tmp_path / "warmup", 1, (64, 48))  # the encoder's one-time export happens here,
    embed_collection(collect(tmp_path / "warmup"), progress=False)  # not in one measured process
    one = w * h
    free = _peak_rss(tmp_path / "big", 10**12, cache, overlap=n, gate="decoded")
    bounded = _peak_rss(tmp_path / "big", one, cache, overlap=n, gate="asked")
    assert bounded["n"] == free["n"] == n
    assert free["gate_timeouts"] == bounded["gate_timeouts"] == 0, (bounded, free)  # all reached the budget
    assert bounded["peak"] <= one, bounded  # never more than the budget in flight
    assert free["peak"] == n * one, free  # without a bound every worker's image is in flight at once
    # memory that decoding adds at its peak: at least three decoded RGB images (3 bytes a
    # pixel) less with the budget
    added = {k: (r["decode_peak_kb"] - r["before_kb"]) * 1024 for k, r in (("bounded", bounded), ("free", free))}
    assert added["free"] >= n * 3 * one, (bounded, free)  # the eight decoded images were there at once
    assert added["bounded"] < added["free"] - 3 * 3 * one, (bounded, free)


@pytest.mark.slow
def test_issue_reproduction_eight_110_megapixel_pngs(tmp_path, cache):
    """The issue's case: 8 PNGs of 11000 x 10000 with 8 workers reached 3.6 GB (3,453,660 KB
    measured before the fix, 723,272 KB after; see the commit)."""
    _big_pngs(tmp_path / "big", 8, (11000, 10000))
    res = _peak_rss(tmp_path / "big", None, cache)
    assert res["n"] == 8 and res["peak"] <= res["budget"]
    # the peak since the warm-up (which may export the encoder to ONNX, a one-time ~2 GB peak
    # of its own on a fresh machine): decoding eight 110-megapixel images stays well under 1.5 GB
    assert res["decode_peak_kb"] < 1_500_000, res


# ------------------------------------------------------------------------------------------
# items 11, 12, 16: nonsense values and broken config files are refused before any work
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args,config,expect", NONSENSE, ids=[str(i) for i in range(len(NONSENSE))])
def test_nonsense_values_are_refused_naming_the_parameter(args, config, expect, blobs, tmp_path, capsys,
                                                          user_cache):
    extra = []
    if config is not None:
        cfg = tmp_path / "cfg.yaml"
        cfg.write_bytes(config if isinstance(config, bytes) else config.encode())
        extra = ["--config", cfg]
    elif "--reducer" not in args:
        extra = ["--reducer", "pca"]  # refusals at fit time come after a (fast) reduction
    out = tmp_path / "run"
    rc, _, err = mc_main("cluster", blobs, "--out", out, "--quiet", *args, *extra, capsys=capsys)
    assert_user_error(rc, err, expect)
    if config is not None:
        assert "cfg.yaml" in err  # the file is named
    assert not out.exists()  # nothing was written


def test_summary_gives_noise_and_outliers_their_own_shares(blobs, tmp_path, capsys, user_cache):
    """The summary line's percentages are each count's own share (the noise share printed was
    noise + outliers, so 'noise 0 (5.0%)' when LOF had removed 6 of 120)."""
    rc, out, err = mc_main("cluster", blobs, "--out", tmp_path / "run", "--reducer", "pca", "--reducer-param",
                           "n_components=8", "--outliers", "lof", "--outliers-param", "contamination=0.05",
                           "--clusterer", "kmeans", "--clusterer-param", "n_clusters=3", "--quiet", capsys=capsys)
    assert rc == 0, err
    m = re.search(r"(\d+) items -> .*noise (\d+) \(([\d.]+)%\), outliers (\d+) \(([\d.]+)%\)", out)
    assert m, out
    n, noise, noise_pct, outliers, outliers_pct = (float(g) for g in m.groups())
    assert outliers > 0
    assert noise_pct == round(100 * noise / n, 1) and outliers_pct == round(100 * outliers / n, 1)


@pytest.mark.parametrize("command", ["cluster", "tune"])
def test_vocabulary_without_report_is_refused_before_work(command, blobs, tmp_path, capsys, user_cache):
    """--vocabulary is read by the report only (tune), or by a run with a text tower (cluster: the
    run's and its model's names): otherwise it was ignored in silence."""
    (tmp_path / "topics.txt").write_text("dog\ncar\n")
    rc, _, err = mc_main(command, blobs, "--out", tmp_path / "out", "--vocabulary", tmp_path / "topics.txt",
                         capsys=capsys)
    assert_user_error(rc, err, "--vocabulary", "--report" if command == "tune" else "--encoder clip:")
    assert not (tmp_path / "out").exists()


def test_vectors_beyond_float32_are_reported_as_such(tmp_path, capsys, user_cache):
    X = np.random.default_rng(0).normal(size=(20, 8))
    X[7, 3] = 1e39
    np.save(tmp_path / "big.npy", X)
    rc, _, err = mc_main("cluster", tmp_path / "big.npy", "--out", tmp_path / "run", "--quiet", capsys=capsys)
    assert_user_error(rc, err, "float32 range", "row 7", "big.npy")
    assert "NaN" not in err


def test_urls_are_refused_as_urls(photos, tmp_path, capsys, user_cache):
    from mediacluster.ingest import collect

    m = tmp_path / "m.csv"
    m.write_text("path\nhttps://example.com/cat.jpg\n" + "".join(f"{p}\n" for p in photo_files(photos)[:3]))
    coll = collect(m)
    assert len(coll) == 3
    assert coll.skipped[0].path == "https://example.com/cat.jpg" and "never downloads" in coll.skipped[0].reason
    rc, _, err = mc_main("cluster", "https://example.com/photos/", "--out", tmp_path / "run", capsys=capsys)
    assert_user_error(rc, err, "URL")


def test_damaged_embedding_cache_is_named(photos, tmp_path, capsys, user_cache):
    bad = tmp_path / "cache.sqlite"
    bad.write_bytes(b"not a database at all" * 100)
    rc, _, err = mc_main("cluster", photos, "--out", tmp_path / "run", *FAST, "--cache-dir", bad, capsys=capsys)
    assert_user_error(rc, err, str(bad), "--cache-dir")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_an_embedding_cache_on_a_full_disk_says_so_and_the_run_resumes(photos, tmp_path, user_cache):
    """The embedding cache outgrows the disk while embedding (a file-size limit: SQLite says
    "disk I/O error" for EFBIG): the error says the disk may be full and that what was embedded
    is kept (it said only "disk I/O error; choose another --cache-dir")."""
    fresh = tmp_path / "embcache"
    args = ("cluster", photos, "--out", tmp_path / "run", *FAST, "--cache-dir", fresh)
    r = mc(*args, env={"MEDIACLUSTER_CACHE": str(user_cache)}, max_file_bytes=100 * 1024)
    assert_user_error(r.returncode, r.stderr, str(fresh / "embeddings.sqlite"), "may be full",
                      "what was embedded is kept")
    r = mc(*args, env={"MEDIACLUSTER_CACHE": str(user_cache)})
    assert r.returncode == 0, text(r.stderr)


# ------------------------------------------------------------------------------------------
# item 12: full disk, read-only and file-in-the-way outputs
# ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_full_disk_during_a_rerun_keeps_the_old_run(tmp_path, cache, capsys, user_cache):
    """A re-run that meets a full disk (a file-size limit: writes fail with EFBIG) fails with
    exit 2 naming the file; the previous run is untouched and nothing is left beside it."""
    X = np.random.default_rng(0).normal(size=(300, 256)).astype(np.float32)
    np.save(tmp_path / "v.npy", X)
    out = tmp_path / "run"
    env = {"MEDIACLUSTER_CACHE": str(cache)}
    assert mc_main("cluster", tmp_path / "v.npy", "--out", out, *FAST, "--save-model", capsys=capsys)[0] == 0
    before = run_files(out)
    r = mc("cluster", tmp_path / "v.npy", "--out", out, *FAST, "--save-model", env=env,
           max_file_bytes=100_000)
    assert_user_error(r.returncode, r.stderr, "cannot write", "embeddings.npy", "nothing was changed")
    assert run_files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".run")) == [".run.lock"]


@pytest.mark.slow
def test_a_full_disk_stops_tune_naming_its_study_and_the_same_command_resumes(blobs, tmp_path, cache):
    """The study's SQLite file outgrows the disk mid-study (a file-size limit: EFBIG): exit 2
    naming study.db, saying the finished trials are kept and how to resume (it was exit 1
    "internal error ... StorageInternalError" with optuna's traceback per failed trial); the
    same command without the limit finishes the study from there."""
    out = tmp_path / "tune"
    args = ("tune", blobs, "--out", out, "--trials", "40", "--quiet")
    env = {"MEDIACLUSTER_CACHE": str(cache),  # numba's compiled code already cached: only the study grows
           "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR") or str(cache_root() / "numba")}
    r = mc(*args, env=env, max_file_bytes=150 * 1024)
    assert_user_error(r.returncode, r.stderr, f"cannot write {out.resolve() / 'study.db'}", "full",
                      "trials finished are kept in it: the same command resumes the study")
    assert "Traceback" not in text(r.stderr) and "StorageInternalError" not in text(r.stderr), text(r.stderr)
    kept = int(re.search(r"the (\d+) trials finished", text(r.stderr)).group(1))
    assert 0 < kept < 40
    r = mc(*args, env=env)
    assert r.returncode == 0, text(r.stderr)
    done = json.loads((out / "tune.json").read_text())
    assert done["timing"]["trials_this_run"] < 40 and (out / "models" / "LATEST").exists()


@pytest.mark.slow
def test_a_full_disk_under_numbas_code_cache_is_named_not_called_a_bug(blobs, tmp_path):
    """umap-learn's first import compiles into numba's code cache (under the user cache), which
    numba writes itself: on a full disk that was "internal error (a bug, not your input):
    OSError: [Errno 27] File too large" with a crash log; now exit 2 naming numba's cache."""
    fresh = tmp_path / "cache"
    env = {"MEDIACLUSTER_CACHE": str(fresh), "NUMBA_CACHE_DIR": str(fresh / "numba")}
    r = mc("cluster", blobs, "--out", tmp_path / "run", "--quiet", env=env, max_file_bytes=100 * 1024)
    assert_user_error(r.returncode, r.stderr, f"cannot write numba's code cache {fresh / 'numba'}", "full")
    assert not (fresh / "logs").exists() and not (tmp_path / "run").exists()


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody can write to: chmod for a normal user; root ignores modes, so there a
    read-only tmpfs is mounted when allowed (else the test is skipped)."""
    d = tmp_path / "ro"
    d.mkdir()
    if os.geteuid() != 0:
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
        return
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(d)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("running as root without permission to mount a read-only folder")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], capture_output=True)


@pytest.fixture
def read_only_copy(tmp_path):
    """``read_only_copy(src)``: a copy of folder ``src`` nobody can write into (the copy and its
    files; its parent stays writable, as a run on a read-only share): chmod for a normal user;
    for root, which ignores modes, a read-only bind mount when allowed (else the test is skipped)."""
    mounted: list[Path] = []
    made: list[Path] = []

    def make(src: Path) -> Path:
        d = tmp_path / f"ro-{src.name}"
        shutil.copytree(src, d)
        if os.geteuid() != 0:
            for p in [d, *d.rglob("*")]:
                p.chmod(p.stat().st_mode & ~0o222)
            made.append(d)
            return d
        for cmd in (["mount", "--bind", str(d), str(d)], ["mount", "-o", "remount,ro,bind", str(d)]):
            r = subprocess.run(cmd, capture_output=True)
            if r.returncode != 0:
                if mounted:
                    subprocess.run(["umount", str(d)], capture_output=True)
                pytest.skip("running as root without permission to bind-mount a read-only folder")
            if not mounted or mounted[-1] != d:
                mounted.append(d)
        return d

    yield make
    for d in mounted:  # lazily: this process may still hold a file of it open (a memory map)
        subprocess.run(["umount", "-l", str(d)], capture_output=True)
    for d in made:
        for p in [d, *d.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)


def test_a_report_of_a_read_only_run_is_written_elsewhere(read_only_copy, vec_run, tmp_path, capsys, user_cache):
    """``report RUN --out ELSEWHERE`` on a run nobody may write into (a share, a colleague's run):
    the report is written, the 2-D map only not kept in the run (exit 2 "cannot write
    RUN/map2d.npy" before: the map cache was a requirement)."""
    run = read_only_copy(vec_run)
    assert not (run / "map2d.npy").exists()
    rc, _, err = mc_main("report", run, "--out", tmp_path / "rep", capsys=capsys)
    assert rc == 0, err
    assert (tmp_path / "rep" / "index.html").stat().st_size > 0
    assert not (run / "map2d.npy").exists()
    rc, _, err = mc_main("report", run, capsys=capsys)  # into the run itself: says why
    assert_user_error(rc, err, "cannot write", "report")


def test_read_only_out_is_a_clear_error(read_only_dir, blobs, capsys, user_cache):
    rc, _, err = mc_main("cluster", blobs, "--out", read_only_dir / "run", *FAST, capsys=capsys)
    assert_user_error(rc, err, str(read_only_dir))


@pytest.mark.slow
def test_an_embedding_cache_nobody_may_write_costs_the_cache_not_the_run(read_only_dir, photos, tmp_path, cache):
    """``$MEDIACLUSTER_CACHE`` (or a HOME) that cannot be written: the run embeds without the
    cache, saying which cache and why, as the duplicate finder already did (it was exit 2
    "embedding cache ...: unable to open database file", before any work)."""
    r = mc("cluster", photos, "--out", tmp_path / "run", *FAST,
           env={"MEDIACLUSTER_CACHE": str(read_only_dir), "NUMBA_CACHE_DIR": str(cache / "numba")})
    err = text(r.stderr)
    assert r.returncode == 0, err
    assert f"embedding cache {read_only_dir}" in err and "this run embeds without it" in err, err
    assert len(RunDir.open(tmp_path / "run").read_assignments()) == 18
    assert not [p for p in Path(tempfile.gettempdir()).glob("mediacluster-cache-*")
                if p.stat().st_mtime > os.stat(tmp_path).st_mtime]  # the stand-in is gone


def test_evaluate_says_it_cannot_write_into_a_read_only_run_before_scoring(read_only_copy, vec_run, tmp_path,
                                                                          capsys, user_cache):
    """``evaluate RUN`` on a run nobody may write into: refused before the scores are computed
    (minutes on a large run), naming evaluation.json and --out (it printed every score, then
    exit 2 on the write); ``--out ELSEWHERE`` (a folder made for it) works."""
    run = read_only_copy(vec_run)
    rc, out, err = mc_main("evaluate", run, capsys=capsys)
    assert_user_error(rc, err, f"cannot write {run / 'evaluation.json'}", "--out FILE")
    assert "silhouette" not in out, out
    rc, out, err = mc_main("evaluate", run, "--out", tmp_path / "new" / "ev.json", capsys=capsys)
    assert rc == 0 and "silhouette" in out, err
    assert json.loads((tmp_path / "new" / "ev.json").read_text())


def test_assign_says_what_kind_of_file_its_model_reads(vec_run, tmp_path, capsys, user_cache):
    """A folder without a file the model can read: exit 2 saying which kind it reads (it said only
    'nothing could be embedded')."""
    (tmp_path / "sounds").mkdir()
    (tmp_path / "sounds" / "a.wav").write_bytes(b"RIFF")
    rc, _, err = mc_main("assign", vec_run, tmp_path / "sounds", "--quiet", capsys=capsys)
    assert rc == 2 and "this model reads image files, and none were found" in err, err
    # the sound file is listed, with what this model reads (not `cluster`'s --media advice)
    assert "a.wav: not an image file" in err and "--media" not in err, err


def test_assign_checks_every_input_before_embedding(vec_run, photos, tmp_path, capsys, monkeypatch):
    """A mistyped last path is refused before the others are embedded (they were embedded first)."""
    monkeypatch.setenv("MEDIACLUSTER_CACHE", str(tmp_path / "cache"))
    rc, _, err = mc_main("assign", vec_run, photo_files(photos)[0], tmp_path / "typo.jpg", "--quiet", capsys=capsys)
    assert_user_error(rc, err, "typo.jpg")
    assert not list((tmp_path / "cache").glob("embeddings.sqlite*"))  # nothing was embedded


def test_too_few_usable_files_names_a_skip_reason(photos, tmp_path, capsys, user_cache):
    """Fewer than 3 usable files: the error names the first skipped file and why (it said 'see
    the list', and no list was printed)."""
    d = tmp_path / "few"
    d.mkdir()
    for p in photo_files(photos)[:2]:
        shutil.copyfile(p, d / p.name)
    (d / "zz_empty.jpg").write_bytes(b"")
    rc, _, err = mc_main("cluster", d, "--out", tmp_path / "run", *FAST, capsys=capsys)
    assert_user_error(rc, err, "only 2 items could be embedded", "zz_empty.jpg: empty file")


def test_an_output_file_with_a_name_of_250_bytes_is_written(vec_run, blobs, tmp_path, capsys, user_cache):
    """A name the file system takes (255 bytes at most) is one mediacluster writes: the atomic
    write's temporary beside it was ``.NAME.XXXXXXXX.csv``, 11 bytes longer ("cannot write
    ...csv: File name too long", exit 2)."""
    out = tmp_path / ("a" * 246 + ".csv")
    rc, _, err = mc_main("assign", vec_run, blobs, "--out", out, "--quiet", capsys=capsys)
    assert rc == 0, err
    assert len(pd.read_csv(out)) == 120
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temporary left


def test_assign_out_where_a_folder_is(vec_run, blobs, tmp_path, capsys, user_cache):
    (tmp_path / "a.csv").mkdir()
    rc, _, err = mc_main("assign", vec_run, blobs, "--out", tmp_path / "a.csv", "--quiet", capsys=capsys)
    assert_user_error(rc, err, "a.csv")


# ------------------------------------------------------------------------------------------
# item 13: report thumbnails that cannot be made are said, not swallowed
# ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_missing_thumbnails_are_listed_and_write_failures_fail(photos, cache, tmp_path, capsys, user_cache):
    src = tmp_path / "src"
    src.mkdir()
    for p in photo_files(photos)[:12]:
        shutil.copyfile(p, src / p.name)
    out = tmp_path / "run"
    rc, _, err = mc_main("cluster", src, "--out", out, *FAST, capsys=capsys)
    assert rc == 0, err
    names = sorted(p.name for p in src.iterdir())
    (src / names[0]).unlink()  # moved away since the run
    (src / names[1]).write_bytes(b"garbage")  # replaced by something else
    # a disk that fills up while thumbnails are written: exit 2 naming the file
    r = mc("report", out, "--map", "pca", "--quiet", env={"MEDIACLUSTER_CACHE": str(cache)},
           max_file_bytes=300)  # the map files fit, a thumbnail does not
    assert_user_error(r.returncode, r.stderr, "cannot write", "thumbs")
    rc, _, err = mc_main("report", out, "--map", "pca", "--quiet", capsys=capsys)
    assert rc == 3, err  # done, but two items have no picture: said on stderr and in report.json
    assert names[0] in err and names[1] in err
    missing = json.loads((out / "report" / "report.json").read_text())["missing_thumbnails"]
    assert {Path(m["path"]).name for m in missing} == set(names[:2])
    assert (out / "report" / "index.html").read_text().count('class="noimg') >= 2


# ------------------------------------------------------------------------------------------
# item 14: output permissions follow the umask
# ------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("umask,mode", [(0o002, 0o664), (0o077, 0o600)])
def test_outputs_follow_the_umask(umask, mode, photos, cache, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for p in photo_files(photos)[:12]:
        shutil.copyfile(p, src / p.name)
    out = tmp_path / "run"
    env = {"MEDIACLUSTER_CACHE": str(cache)}
    r = mc_many(["cluster", src, "--out", out, *FAST, "--save-model"],
                ["report", out, "--map", "pca", "--quiet"], env=env, umask=umask)
    assert r.returncode == 0, text(r.stderr)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "index.html" for p in files) and any(p.suffix == ".jpg" for p in files)
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(mode)}
    assert {oct(p.stat().st_mode & 0o777) for p in out.rglob("*") if p.is_dir()} == {oct(0o777 & ~umask)}


# ------------------------------------------------------------------------------------------
# items 12, 16, 18: a tampered or damaged model is refused on load
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_parts(vec_run):
    m = RunDir.open(vec_run).models.latest()
    doc = json.loads((m / "model.json").read_text())
    with np.load(m / "arrays.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return doc, arrays


@pytest.mark.parametrize("what,edit,file,expect", TAMPERING, ids=[t[0] for t in TAMPERING])
def test_tampered_models_are_refused_naming_what_is_wrong(what, edit, file, expect, model_parts, tmp_path):
    from mediacluster.pipeline import Pipeline

    doc, arrays = json.loads(json.dumps(model_parts[0])), {k: v.copy() for k, v in model_parts[1].items()}
    edit(doc, arrays)
    d = tmp_path / "model"
    d.mkdir()
    (d / "model.json").write_text(json.dumps(doc))
    np.savez(d / "arrays.npz", **arrays)
    with pytest.raises(ModelFormatError) as e:
        Pipeline.load(d)
    assert file in str(e.value) and expect in str(e.value), str(e.value)


@pytest.mark.parametrize("damage", [b"{not json", b"\xff\xfe garbage", b"[1, 2]"])
def test_damaged_model_json_is_named_by_assign(damage, vec_run, blobs, tmp_path, capsys, user_cache):
    m = tmp_path / "model"
    shutil.copytree(RunDir.open(vec_run).models.latest(), m)
    (m / "model.json").write_bytes(damage)
    rc, _, err = mc_main("assign", m, blobs, "--quiet", capsys=capsys)
    assert_user_error(rc, err, "model.json")


def test_model_recording_an_unknown_encoder_is_named(vec_run, photos, tmp_path, capsys, user_cache):
    m = tmp_path / "model"
    shutil.copytree(RunDir.open(vec_run).models.latest(), m)
    doc = json.loads((m / "model.json").read_text())
    doc["metadata"]["encoder"] = "no-such-encoder"
    (m / "model.json").write_text(json.dumps(doc))
    rc, _, err = mc_main("assign", m, photos, "--quiet", capsys=capsys)
    assert_user_error(rc, err, "no-such-encoder", "--encoder")


# ------------------------------------------------------------------------------------------
# item 17: names.yaml
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("content,expect", NAMES_YAML, ids=[str(i) for i in range(len(NAMES_YAML))])
def test_bad_names_yaml_is_refused_naming_the_entry(content, expect, vec_run, blobs, tmp_path, capsys,
                                                    user_cache):
    run = tmp_path / "run"
    shutil.copytree(vec_run, run)
    (run / "names.yaml").write_bytes(content if isinstance(content, bytes) else content.encode())
    rc, _, err = mc_main("assign", run, blobs, "--quiet", capsys=capsys)
    assert_user_error(rc, err, "names.yaml", expect)


# ------------------------------------------------------------------------------------------
# item 19: conflicting true labels
# ------------------------------------------------------------------------------------------
def test_conflicting_duplicate_labels_are_refused(vec_run, tmp_path, capsys, user_cache):
    run = tmp_path / "run"
    shutil.copytree(vec_run, run)
    ids = [str(i) for i in range(12)]
    pd.DataFrame({"id": ["0", *ids], "label": ["a", "b", *["c"] * 11]}).to_csv(tmp_path / "l.csv", index=False)
    rc, _, err = mc_main("evaluate", run, "--labels", tmp_path / "l.csv", "--no-original", capsys=capsys)
    assert_user_error(rc, err, "l.csv", "'0'")
    pd.DataFrame({"id": ["0", *ids], "label": ["a", "a", *["c"] * 11]}).to_csv(tmp_path / "ok.csv", index=False)
    rc, out, err = mc_main("evaluate", run, "--labels", tmp_path / "ok.csv", "--no-original", capsys=capsys)
    assert rc == 0, err  # the same label twice is not a conflict


# ------------------------------------------------------------------------------------------
# item 20: numba's cache follows MEDIACLUSTER_CACHE
# ------------------------------------------------------------------------------------------
NUMBA_SCRIPT = """
import sys
from mediacluster.cli import main
rc = main(sys.argv[1:])
import numba

@numba.njit(cache=True)
def add_one(x):
    return x + 1

assert add_one(1) == 2
sys.exit(rc)
"""


@pytest.mark.slow
def test_numba_cache_follows_mediacluster_cache(vec_run, tmp_path):
    script = tmp_path / "jit.py"
    script.write_text(NUMBA_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME")}
    env.update(HOME=str(tmp_path / "home"), MEDIACLUSTER_CACHE=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, str(script), "evaluate", str(vec_run), "--no-original",
                        "--out", str(tmp_path / "e.json")], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert list((tmp_path / "cache" / "numba").rglob("*.nbi"))  # numba's index of cached code
    assert not (tmp_path / "home" / ".cache").exists()


def test_a_ctrl_c_that_compiled_code_turned_into_another_error_is_an_interruption():
    """A Ctrl-C during fast_hdbscan's numba code in a `tune` trial came out as "SystemError:
    CPUDispatcher(<function parallel_boruvka ...>) returned a result with an exception set", its
    cause the KeyboardInterrupt (seen on a real `tune`, SIGINT after 25 s): the CLI said
    "internal error (a bug, not your input)" and wrote a crash log instead of "interrupted"."""
    from mediacluster.cli import interrupted

    def chained(outer, how):
        try:
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt as k:
                if how == "cause":
                    raise outer from k  # as CPython's _Py_CheckFunctionResult raises it
                raise outer  # noqa: B904 - raised while handling it, as a callback does
        except Exception as e:  # noqa: BLE001
            return e

    assert interrupted(chained(SystemError("returned a result with an exception set"), "cause"))
    assert interrupted(chained(RuntimeError("in a callback"), "context"))
    assert interrupted(KeyboardInterrupt())
    plain = SystemError("a real bug")
    assert not interrupted(plain)
    try:
        try:
            raise ValueError("first")
        except ValueError as v:
            raise SystemError("second") from v
    except SystemError as e:
        assert not interrupted(e)


def _cut(p: Path, keep: int | None = None, junk: bytes | None = None) -> None:
    if junk is not None:
        p.write_bytes(junk)
    else:
        data = p.read_bytes()
        p.write_bytes(data[:keep if keep is not None else len(data) // 2])


@pytest.mark.parametrize("damage", ["cut", "empty", "junk"])
def test_a_run_whose_embeddings_file_is_damaged_is_refused_naming_it(damage, vec_run, tmp_path, capsys,
                                                                      user_cache):
    """``embeddings.npy`` cut short (a copy or a disk that filled up), emptied, or overwritten:
    numpy's ValueError / EOFError was an internal error of ``tune``, ``evaluate`` and ``report``."""
    run = tmp_path / "run"
    shutil.copytree(vec_run, run)
    _cut(run / "embeddings.npy", 0 if damage == "empty" else None, b"junk" if damage == "junk" else None)
    for args in (["evaluate", run, "--out", tmp_path / "e.json"],
                 ["tune", run, "--out", tmp_path / "t", "--trials", "1", "--no-refit", "--quiet"]):
        rc, _, err = mc_main(*args, capsys=capsys)
        assert_user_error(rc, err, "embeddings.npy cannot be read", "re-run cluster")


def test_a_damaged_hierarchy_or_map_is_read_as_absent_not_a_crash(vec_run, tmp_path, capsys, user_cache):
    """A ``hierarchy.npz`` cut short or emptied: ``read_levels`` means to warn and go on without
    levels, but zipfile's BadZipFile / numpy's EOFError slipped past its (OSError, ValueError), and
    ``names.yaml``'s level lookup too: internal errors of ``evaluate`` and ``report``. The report's
    cached map ``map2d.npy`` cut short: a ValueError out of ``report`` (it is a cache: made again)."""
    run = tmp_path / "run"
    shutil.copytree(vec_run, run)
    rc, _, err = mc_main("report", run, "--quiet", capsys=capsys)
    assert rc == 0, err
    assert (run / "map2d.npy").exists()
    _cut(run / "map2d.npy")
    for junk in (None, b""):
        (run / "hierarchy.npz").write_bytes(b"PK\x03\x04 not a whole zip" if junk is None else junk)
        rc, _, err = mc_main("evaluate", run, "--out", tmp_path / "e.json", capsys=capsys)
        assert rc == 0, err
        rc, _, err = mc_main("report", run, "--quiet", capsys=capsys)
        assert rc == 0, err


@pytest.mark.parametrize("table", ["items.parquet", "assignments.parquet"])
def test_a_run_whose_table_is_cut_short_is_refused_naming_it(table, vec_run, tmp_path, capsys, user_cache):
    """``items.parquet`` / ``assignments.parquet`` cut short: pyarrow's ArrowInvalid ("Parquet
    magic bytes not found in footer") was an internal error of ``evaluate`` and ``report``."""
    run = tmp_path / "run"
    shutil.copytree(vec_run, run)
    _cut(run / table)
    for args in (["evaluate", run, "--out", tmp_path / "e.json"], ["report", run, "--quiet"]):
        rc, _, err = mc_main(*args, capsys=capsys)
        assert_user_error(rc, err, f"{table} cannot be read", "re-run cluster")


def test_a_runs_json_files_cut_short_are_refused_or_made_again(vec_run, blobs, tmp_path, capsys, user_cache):
    """``clusters.json``, ``names.json``, ``level_names.json`` or ``map2d.json`` cut short: a
    JSONDecodeError out of ``report`` and ``assign`` (internal errors). ``clusters.json`` is the
    run's own result: refused naming it; the derived files (stamped with the run id, as
    ``curated.json`` is read) count as absent: the names and the map are made again."""
    run = tmp_path / "run"
    shutil.copytree(vec_run, run)
    rc, _, err = mc_main("report", run, "--quiet", capsys=capsys)
    assert rc == 0, err
    for name in ("names.json", "map2d.json"):
        assert (run / name).exists(), name
        _cut(run / name, 20)
    (run / "level_names.json").write_text('{"run_id": ', encoding="utf-8")
    for args in (["report", run, "--quiet"], ["assign", run, blobs, "--quiet"]):
        rc, _, err = mc_main(*args, capsys=capsys)
        assert rc == 0, err
    _cut(run / "clusters.json", 20)
    for args in (["report", run, "--quiet"], ["assign", run, blobs, "--quiet"]):
        rc, _, err = mc_main(*args, capsys=capsys)
        assert_user_error(rc, err, "clusters.json cannot be read", "re-run cluster")


def test_tune_on_a_folder_of_broken_files_names_why(tmp_path, capsys, user_cache):
    """``tune FOLDER`` whose files all fail to decode said "tuning needs a 2-D array of at least 10
    vectors, got shape (0, 1280)", no word of the files or why (``cluster`` names the first)."""
    d = tmp_path / "broken"
    d.mkdir()
    for i in range(3):
        (d / f"x{i}.jpg").write_text(f"not an image {i}")
    rc, _, err = mc_main("tune", d, "--out", tmp_path / "t", "--trials", "1", "--quiet", capsys=capsys)
    assert_user_error(rc, err, "only 0 items could be embedded; at least 10 are needed to tune (3 skipped; "
                      "the first, ", "x0.jpg: not an image")


@pytest.mark.parametrize("command", [["cluster", "{v}", "--out", "{tmp}/run"],
                                     ["cluster", "{v}", "--out", "{tmp}/run", "--fit-sample", "10"],
                                     ["dups", "{v}", "--out", "{tmp}/dups"],
                                     ["tune", "{v}", "--out", "{tmp}/tune", "--trials", "1"]])
def test_an_empty_npy_input_is_refused_naming_it(tmp_path, capsys, command):
    """A 0-byte vectors.npy (a copy interrupted, a save that failed): `cluster`, `dups`, `assign`,
    `tune`, `cache` stopped with "internal error (a bug, not your input): EOFError: No data left
    in file" (numpy's np.load raises EOFError for an empty file; the readers caught ValueError
    and OSError only)."""
    from mediacluster.cli import main

    v = tmp_path / "vectors.npy"
    v.write_bytes(b"")
    capsys.readouterr()
    assert main([a.format(v=v, tmp=tmp_path) for a in command]) == 2
    err = capsys.readouterr().err
    assert f"{v}: cannot read .npy: No data left in file" in err and "internal error" not in err, err


def test_the_first_compile_note_names_where_numba_keeps_the_code_when_numba_cache_dir_is_read_only(
        read_only_dir, tmp_path, monkeypatch):
    """An existing ``NUMBA_CACHE_DIR`` nobody may write: numba silently keeps the compiled code
    in its own places (the package's ``__pycache__`` folders, then its user cache). The note before
    the first fit named the unwritable folder ("kept in X": untrue, and said again every run); it
    names the place numba uses, and says nothing once the code is there."""
    from mediacluster.fileio import first_compile_pending
    from mediacluster.workflow import first_compile_note

    pkg = tmp_path / "lib" / "mc_fake_jitted"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(pkg.parent))
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(read_only_dir))
    assert first_compile_pending("mc_fake_jitted") == str(pkg)  # its own tree can be written
    (pkg / "__pycache__").mkdir(exist_ok=True)
    (pkg / "__pycache__" / "mod.f-3.py311.nbi").write_bytes(b"")  # what a first compile leaves
    assert first_compile_pending("mc_fake_jitted") is None
    assert str(read_only_dir) not in first_compile_note()


def test_the_cache_listing_reads_a_cache_nobody_may_write(read_only_copy, tmp_path, capsys):
    """``mediacluster cache`` only reads, yet on a cache in a read-only place it was exit 2
    ("unable to open database file" / "attempt to write a readonly database": the open switches
    to WAL and makes the schema). It lists it (SQLite read-only, without the ``-shm`` it cannot
    make; with a write-ahead log copied beside it, that log's rows too) and changes nothing; the
    ``--forget-*`` options, which write, say why they cannot."""
    from mediacluster.embed import EmbeddingStore

    cache = tmp_path / "cache"
    with EmbeddingStore(cache) as store:
        store.put(["a" * 32, "b" * 32], "enc-x", {"embedding": np.ones((2, 4), np.float32)})
    ro = read_only_copy(cache)
    before = sorted(p.name for p in ro.iterdir())
    rc, out, err = mc_main("cache", "--cache-dir", ro, capsys=capsys)
    assert rc == 0, err
    assert "2 vectors" in out and "enc-x (4 dimensions)" in out
    rc, out, err = mc_main("cache", "--cache-dir", ro, "--json", capsys=capsys)
    assert rc == 0 and json.loads(out)["encoders"][0]["vectors"] == 2
    rc, out, err = mc_main("cache", "--cache-dir", ro, "--forget-failures", "--forget-encoder", "enc-x",
                           capsys=capsys)
    assert_user_error(rc, err, "--forget-encoder enc-x, --forget-failures", "cannot be written",
                      "nothing was forgotten")
    assert sorted(p.name for p in ro.iterdir()) == before  # no -shm, no -wal made

    # copied while a command had it open: the newest rows are in its write-ahead log
    live = tmp_path / "live"
    store = EmbeddingStore(live)
    try:
        store.put(["c" * 32], "enc-y", {"embedding": np.ones((1, 3), np.float32)})
        assert Path(f"{store.path}-wal").stat().st_size > 0
        ro_live = read_only_copy(live)
    finally:
        store.close()
    rc, out, err = mc_main("cache", "--cache-dir", ro_live, capsys=capsys)
    assert rc == 0, err
    assert "1 vectors" in out and "enc-y (3 dimensions)" in out
