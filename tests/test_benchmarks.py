"""The benchmark scripts use the package's current API (they are not run by the test suite, so a
renamed or removed function would otherwise only surface when someone re-runs a benchmark)."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("*.py"))


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mediacluster"):
            yield node.lineno, node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("mediacluster"):
                    yield node.lineno, a.name, []


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_benchmark_imports_resolve(script):
    missing = []
    for line, module, names in _imports(script):
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            missing.append(f"line {line}: {module} ({e})")
            continue
        for name in names:
            if not hasattr(mod, name):
                try:
                    importlib.import_module(f"{module}.{name}")
                except ImportError:
                    missing.append(f"line {line}: {module}.{name}")
    assert not missing, f"{script.name} imports what the package no longer has: {missing}"


@pytest.mark.parametrize("name", ["assignments.parquet", "run.json", "clusters.json", "names.json",
                                  "map2d.npy", "embeddings.npy", "items.parquet"])
def test_benchmarks_read_run_folders_through_rundir(name):
    users = [p.name for p in SCRIPTS if f'"{name}"' in p.read_text(encoding="utf-8")]
    assert not users, f"{users} spell {name!r}; use mediacluster.rundir.RunDir"


def _results_module():
    """``benchmarks/_results.py`` loaded from its file (the benchmarks folder is not put on
    ``sys.path``, where its scripts would shadow other modules)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_bench_results", BENCHMARKS / "_results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_results_helpers_write_only_their_section_of_the_file_the_environment_names(tmp_path, monkeypatch, capsys):
    r = _results_module()
    scratch = tmp_path / "RESULTS.md"
    scratch.write_text("# Benchmark results\n\n## A (one)\n\nold a\n\n## B (two)\n\nhand-written b\n", encoding="utf-8")
    monkeypatch.setenv(r.RESULTS_ENV, str(scratch))
    assert r.results_path() == scratch
    r.publish("## A (one)", "## A (one)\n\nnew a\n", write=False)
    assert "new a" in capsys.readouterr().out and "old a" in scratch.read_text(encoding="utf-8")
    r.publish("## A (one)", "## A (one)\n\nnew a\n", write=True, show=False)
    r.publish("## C (three)", "## C (three)\n\nc\n", write=True)
    text = scratch.read_text(encoding="utf-8")
    assert text == ("# Benchmark results\n\n## A (one)\n\nnew a\n\n## B (two)\n\nhand-written b\n\n"
                    "## C (three)\n\nc\n")
    with pytest.raises(ValueError, match="heading line"):
        r.write_section("## B (two)", "no heading\n")
    monkeypatch.delenv(r.RESULTS_ENV)
    assert r.results_path() == BENCHMARKS / "RESULTS.md"


def test_results_helpers_command_load_and_timing(monkeypatch):
    import argparse

    r = _results_module()
    assert r.command("x.py", ["--sets", "a", "--write"], drop=["--write"]) == "python benchmarks/x.py --sets a"
    assert r.command("x.py", []) == "python benchmarks/x.py"
    monkeypatch.setattr("sys.argv", ["x.py", "--quick"])
    assert r.command("x.py") == "python benchmarks/x.py --quick"
    assert re.fullmatch(r"\d+\.\d\d \d+\.\d\d \d+\.\d\d", r.loadavg())
    assert r.proc_loadavg().startswith(r.loadavg())
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", r.finished())
    out, t = r.timed(lambda: sum(range(100_000)))
    assert out == sum(range(100_000)) and set(t) == {"wall_s", "cpu_s", "load_before", "load_after"}
    assert t["wall_s"] > 0 and t["cpu_s"] >= 0
    args = r.add_data_args(argparse.ArgumentParser(), seed=True, quiet=True).parse_args(["--seed", "3"])
    assert (args.out, args.shared, args.seed, args.quiet) == (r.QUALITY_OUT, r.SHARED, 3, False)


def test_benchmarks_write_results_through_results_helpers():
    """A script that names RESULTS.md's path itself would write the committed file even when
    ``MEDIACLUSTER_RESULTS`` points at a scratch copy."""
    users = [p.name for p in SCRIPTS if p.name != "_results.py"
             and re.search(r'"RESULTS\.md"|write_section\([^)]*,[^)]*,', p.read_text(encoding="utf-8"))]
    assert not users, f"{users} name the results file themselves; use _results.write_section / publish"


def _fast_layout_module(monkeypatch):
    """``benchmarks/fast_layout.py`` loaded from its file; it puts the benchmarks folder on
    ``sys.path`` and imports two sibling scripts, undone after the test."""
    import importlib.util
    import sys

    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in ("level_stability", "subsets"):
        if name not in sys.modules:
            monkeypatch.setitem(sys.modules, name, None)
            monkeypatch.delitem(sys.modules, name)
    spec = importlib.util.spec_from_file_location("_bench_fast_layout", BENCHMARKS / "fast_layout.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("joined", [False, True])
def test_fast_layout_level_criteria_merge_density_groups_only_where_the_graph_joins_them(monkeypatch, joined):
    """fast_layout's ``crit`` variants (levelmerge helper): two density groups of two leaves each.
    Separated in the graph (every item's neighbours in its own group), every criterion keeps
    the split; joined (every item's neighbours in the *other* group, local cross ratio 2),
    plain modularity and the local tests merge them, today's rule does not, and ``min`` has no
    unsupported split inside a group to compare with, so it keeps today's."""
    import numpy as np
    import scipy.sparse as sp

    from mediacluster.stages import hierarchy as H

    fl = _fast_layout_module(monkeypatch)
    rng = np.random.default_rng(0)
    n = 80
    leaf = np.repeat(np.arange(4), 20)
    group = leaf // 2
    rows, cols = [], []
    for i in range(n):
        pool = np.flatnonzero((group != group[i]) if joined else (group == group[i]))
        pool = pool[pool != i]
        for j in rng.choice(pool, 6, replace=False):
            rows.append(i)
            cols.append(int(j))
    A = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    A = ((A + A.T) > 0).astype(np.float64)
    tree = H._Tree(4)
    a, b = tree.add(0, 1, 1.0), tree.add(2, 3, 1.0)
    root = tree.add(a, b, 5.0)
    inw, vol, m2 = H._node_graph_stats(tree, leaf, A)
    size = np.array([20.0, 20, 20, 20, 40, 40, 80])
    split = {c: root in fl.crit_cut(c, tree, inw, vol, m2, {root}, root, size=size)[0] for c in fl.CRITS}
    if not joined:
        assert all(split.values()), split
    else:
        assert split == {"today": True, "free": False, "loc": False, "rel": False, "cross": False, "min": True}


@pytest.mark.parametrize("apart", [True, False])
def test_fast_layout_confirm_rules_force_a_density_split_only_where_the_input_separates_it(monkeypatch, apart):
    """fast_layout's ``conf*`` / ``grain`` variants (confirm helper): a tree of two density
    groups of two leaves each. When the input vectors hold the two groups as two blobs, K-means
    k = 2 of the root's items reproduces its sides (ARI 1) and ``grain`` forces the split; when
    the input is one blob and the layout's sides are a random half of it, the ARI is near 0 and
    each side splits as well as the root does, so the split is left to modularity."""
    import numpy as np

    from mediacluster.stages import hierarchy as H

    fl = _fast_layout_module(monkeypatch)
    rng = np.random.default_rng(0)
    n = 200
    leaf = rng.permutation(np.repeat(np.arange(4), n // 4))
    group = leaf // 2
    view = rng.standard_normal((n, 5))
    if apart:
        view[:, 0] += np.where(group == 0, 10.0, -10.0)
    tree = H._Tree(4)
    a, b = tree.add(0, 1, 1.0), tree.add(2, 3, 1.0)
    root = tree.add(a, b, 5.0)
    ari = fl.confirm_scores(tree, leaf, view, [root])[root]
    forced = fl.grain_splits(tree, {root}, leaf, view)
    if apart:
        assert ari > 0.99 and forced == {root}, (ari, forced)
    else:
        assert abs(ari) < 0.05 and forced == set(), (ari, forced)


def test_fast_layout_graph_criteria_replace_the_engines_kept_splits_rule(monkeypatch):
    """levelmerge's ``crit`` values patch ``_best_cut``; since the engine's ``kept_group_splits``
    calls ``_best_cut`` too, they also stand in for it (every density split handed to their
    cut, which applies the criterion), and both are restored after."""
    import numpy as np

    from mediacluster.stages import hierarchy as H

    fl = _fast_layout_module(monkeypatch)
    kept, best = H.kept_group_splits, H._best_cut
    restore = fl._use_crit(H, "free")
    try:
        tree = H._Tree(4)
        a, b = tree.add(0, 1, 1.0), tree.add(2, 3, 1.0)
        root = tree.add(a, b, 5.0)
        out = H.kept_group_splits(tree, np.zeros(7), np.ones(7), {root}, root, np.zeros(7), 10)
        assert out == {root}
    finally:
        restore()
    assert H.kept_group_splits is kept and H._best_cut is best

def _quality_module(monkeypatch):
    """``benchmarks/quality.py`` loaded from its file, the benchmarks folder on ``sys.path`` (it
    imports ``_results``) only during the test."""
    import importlib.util
    import sys

    monkeypatch.setattr(sys, "path", [str(BENCHMARKS), *sys.path])
    spec = importlib.util.spec_from_file_location("_bench_quality", BENCHMARKS / "quality.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _spoken_digits_archive(path: Path, digits=("0", "1", "2"), speakers=("ann", "bob"), per=2) -> Path:
    """A tar.gz laid out as the shared FSDD archive (``fsdd/recordings/{digit}_{speaker}_{i}.wav``
    and a README): tones whose pitch follows the digit and whose loudness the speaker."""
    import io
    import tarfile
    import wave

    with tarfile.open(path, "w:gz") as tf:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        add("fsdd/README.md", b"# spoken digits\n")
        for d in digits:
            for s, speaker in enumerate(speakers):
                for i in range(per):
                    t = np.arange(4000) / 8000
                    wav = (np.sin(2 * np.pi * (200 + 150 * int(d) + 7 * i) * t) * (4000 + 6000 * s)).astype("<i2")
                    buf = io.BytesIO()
                    with wave.open(buf, "wb") as w:
                        w.setnchannels(1)
                        w.setsampwidth(2)
                        w.setframerate(8000)
                        w.writeframes(wav.tobytes())
                    add(f"fsdd/recordings/{d}_{speaker}_{i}.wav", buf.getvalue())
    return path


def test_quality_embeds_the_shared_audio_set_with_the_default_audio_encoder_and_labels_from_file_names(
        tmp_path, monkeypatch):
    """Issue 16 asks for the engine table on every shared set: FSDD is one of the default sets,
    embedded through the package with the default AUDIO encoder (not an image encoder), its
    labels the digit and the speaker of each file name (not the folder, ``recordings``)."""
    pytest.importorskip("librosa")
    from mediacluster.encoders import DEFAULT_AUDIO_ENCODER, get_encoder

    q = _quality_module(monkeypatch)
    monkeypatch.setenv("MEDIACLUSTER_CACHE", str(tmp_path / "cache"))
    assert "fsdd" in q.DEFAULT_DATASETS
    shared = tmp_path / "shared"
    shared.mkdir()
    _spoken_digits_archive(shared / q.DATASETS["fsdd"])
    X, labellings, source = q.load_labellings("fsdd", tmp_path / "out", shared, None, False)
    assert list(labellings) == ["digit", "speaker"]
    assert X.shape == (12, get_encoder(DEFAULT_AUDIO_ENCODER).dim) and DEFAULT_AUDIO_ENCODER in source
    emb_names = sorted(f"{d}_{s}" for d, s in zip(labellings["digit"], labellings["speaker"]))
    assert emb_names == sorted(f"{d}_{s}" for d in "012" for s in ("ann", "bob") for _ in range(2))
    # load_dataset (the other benchmarks' way in) gives the set's own labelling, the digit
    X2, y, _ = q.load_dataset("fsdd", tmp_path / "out", shared, None, False)
    assert np.array_equal(X, X2) and y == labellings["digit"]


def test_quality_scores_a_second_labelling_as_its_own_table(tmp_path, monkeypatch, capsys):
    """A dev vectors file of FSDD with ``labels`` (digit) and ``labels_speaker``: the engine
    table gets ``fsdd`` (10 classes) and ``fsdd (speaker)`` (6), each with its summary row in
    the format of the image sets' rows."""
    q = _quality_module(monkeypatch)
    rng = np.random.default_rng(0)
    digit = np.repeat(np.arange(10), 12).astype(str)
    speaker = np.tile(np.arange(6), 20).astype(str)
    X = rng.normal(size=(120, 8)).astype(np.float32) + 3 * np.eye(8, dtype=np.float32)[digit.astype(int) % 8]
    vec = tmp_path / "vec"
    vec.mkdir()
    np.savez(vec / "fsdd.npz", vectors=X, labels=digit, labels_speaker=speaker)
    assert q.main(["--section", "engine", "--rows", "kmeans", "--datasets", "fsdd", "--vectors-from",
                   str(vec), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    from mediacluster.fileio import read_json

    res = read_json(tmp_path / "out" / "engine-quality-dev.json")
    assert {k: v["k"] for k, v in res["datasets"].items()} == {"fsdd": 10, "fsdd (speaker)": 6}
    assert [r["n_clusters"] for r in res["datasets"]["fsdd (speaker)"]["rows"]] == [6]
    # the summary rows come out as the image sets' do once the engine rows are there
    for ds in res["datasets"].values():
        ds["rows"] += [dict(ds["rows"][0], row=r) for r in ("engine, auto level", "engine, best level (oracle)")]
    text = q.engine_markdown(res)
    assert re.search(r"^\| fsdd \| 10 \| \d\.\d{3} \(\d+\) \| K-means \(k\) raw \d\.\d{3} \| met \|", text, re.M)
    assert re.search(r"^\| fsdd \(speaker\) \| 6 \| ", text, re.M) and "### fsdd (speaker) (n=120, k=6)" in text
    # a dev file with one labelling (e.g. digit x speaker written as ``labels``) gives that one
    np.savez(vec / "fsdd.npz", vectors=X, labels=digit)
    X1, labellings, _ = q.load_labellings("fsdd", tmp_path / "out", tmp_path, vec, False)
    assert list(labellings) == ["digit"] and np.array_equal(X1, X)


@pytest.mark.parametrize("colored,ordered,shuffled", [(False, False, False), (True, False, False), (True, True, False), (True, True, True)],
                         ids=["owned", "colored", "ordered", "shuffled"])
def test_par_layout_is_byte_identical_on_one_or_two_threads_and_keeps_two_blobs_apart(monkeypatch, colored, ordered, shuffled):
    """benchmarks/par_layout.py (parlayout helper): umap-learn's layout epochs run vertex-owned on
    every numba thread. The same seed gives the same bytes run to run and on 1 or 2 threads (what
    umap-learn's own parallel epoch cannot promise), and two far-apart blobs stay apart."""
    import sys
    import warnings

    import numba

    from mediacluster.stages.reduce import UMAPReducer

    # by its own name: numba's on-disk cache of its kernels names the module
    monkeypatch.setattr(sys, "path", [str(BENCHMARKS)] + list(sys.path))
    pl = importlib.import_module("par_layout")
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (200, 16)) + 8, rng.normal(0, 1, (200, 16)) - 8]).astype(np.float32)
    X[:, 0] += 20  # cosine distances: the two blobs point two ways
    y = np.repeat([0, 1], 200)
    threads = numba.get_num_threads()
    outs = []
    try:
        for n in (2, 1, 2):
            numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
            with warnings.catch_warnings(), pl.owned_layout(colored=colored, ordered=ordered, shuffled=shuffled):
                warnings.simplefilter("ignore")
                outs.append(UMAPReducer(n_neighbors=15, n_components=4, min_dist=0.0, n_epochs=60, init="pca",
                                        random_state=0).fit(X).embedding_)
    finally:
        numba.set_num_threads(threads)
    assert sys.modules.get("umap") is None or "owned" not in repr(sys.modules["umap"].umap_.optimize_layout_euclidean)
    assert outs[0].tobytes() == outs[1].tobytes() == outs[2].tobytes()
    Z = outs[0]
    centres = np.array([Z[y == c].mean(0) for c in (0, 1)])
    spread = max(np.linalg.norm(Z[y == c] - centres[c], axis=1).max() for c in (0, 1))
    assert np.linalg.norm(centres[0] - centres[1]) > 2 * spread
