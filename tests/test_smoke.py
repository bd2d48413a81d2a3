import subprocess
import sys

import pytest

from mediacluster.cli import COMMANDS, main

#: what `mediacluster --help` (or a usage error) has no use for: each costs a user 0.1-1 s of
#: waiting per call (scikit-learn alone ~1 s: benchmarks/RESULTS.md, "What a user waits for")
HEAVY = ("sklearn", "scipy", "pandas", "pyarrow", "torch", "numba", "umap", "pynndescent", "faiss",
         "fastapi", "uvicorn", "transformers", "optuna", "ray", "hdbscan", "PIL")

PROBE = """
import sys
from mediacluster.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
print(" ".join(sorted({{m.split(".")[0] for m in sys.modules}})))
"""


def loaded_by(argv: list[str]) -> set[str]:
    """Top-level modules a fresh interpreter has imported after ``main(argv)``."""
    out = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    return set(out.split())


def test_cli_help(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert all(c in out for c in COMMANDS)


@pytest.mark.parametrize("argv", [["--help"], [], ["--version"], ["no-such-command"]])
def test_top_level_help_imports_no_library(argv):
    """`mediacluster --help`, the usage line and a mistyped command answer at once: no
    sub-command module (they import the library) is loaded, only its summary line is shown."""
    mods = loaded_by(argv)
    assert "mediacluster" in mods
    assert sorted(set(HEAVY) & mods) == []


def test_a_command_builds_only_its_own_parser():
    """`mediacluster serve --help` shows serve's options without importing the other commands'
    modules (the tuner's Optuna, the studio) or the service itself (FastAPI: only when it runs)."""
    out = subprocess.run([sys.executable, "-c", PROBE.replace(
        'print(" ".join(sorted({{m.split(".")[0] for m in sys.modules}})))',
        'print(" ".join(sorted(sys.modules)))').format(argv=["serve", "--help"])],
        capture_output=True, text=True, timeout=120, check=True).stdout
    mods = set(out.split())
    assert "mediacluster.cli.serve" in mods
    assert sorted({"fastapi", "uvicorn", "optuna", "mediacluster.cli.tune", "mediacluster.cli.studio",
                   "mediacluster.studio"} & mods) == []


@pytest.mark.slow
def test_a_process_freezes_its_imports_and_a_call_in_process_does_not():
    """`mediacluster CMD` (``main()`` on the process's own argv) imports its command with the cyclic
    garbage collector off, then freezes what the imports made: every later full collection, and
    the one at exit, skipped ~200,000 objects that live as long as the process (0.15-0.25 s of a
    cold `assign`: benchmarks/RESULTS.md, "What a user waits for, part two"). ``main(argv)`` called
    in-process (tests, a program using the CLI) leaves the collector as it was."""
    probe = ("import gc, sys\nfrom mediacluster.cli import main\nsys.argv = ['mediacluster', 'evaluate', '--help']\n"
             "try:\n    main({argv})\nexcept SystemExit:\n    pass\nprint(gc.get_freeze_count(), gc.isenabled())")
    out = subprocess.run([sys.executable, "-c", probe.format(argv="")], capture_output=True, text=True,
                         timeout=120, check=True).stdout.splitlines()[-1].split()
    assert int(out[0]) > 10_000 and out[1] == "True", out
    out = subprocess.run([sys.executable, "-c", probe.format(argv="['evaluate', '--help']")],
                         capture_output=True, text=True, timeout=120, check=True).stdout.splitlines()[-1].split()
    assert out == ["0", "True"], out


#: what predicting with a saved model of vectors has no use for, even one fitted with UMAP and
#: the hierarchy clusterer: the reducer's numba code (umap, pynndescent, llvmlite), hdbscan, the
#: image encoders' runtimes, the tuner, Ray, the web stack. Measured (`python -X importtime`): a
#: cold `assign` imports scikit-learn with SciPy and pandas (~0.75 s, the Pipeline is a
#: scikit-learn estimator) and faiss (the predictor's search), and these would add 0.1-2 s each
NOT_FOR_ASSIGN = ("torch", "numba", "llvmlite", "umap", "pynndescent", "hdbscan", "onnxruntime",
                  "transformers", "optuna", "ray", "fastapi", "uvicorn")


def test_assign_on_a_vector_model_imports_only_what_predicting_needs(tmp_path):
    """`mediacluster assign MODEL new.npy` with the default pipeline (UMAP + the hierarchy),
    in a fresh interpreter, answers without importing the fit's libraries: users call it from
    scripts one file at a time (benchmarks/RESULTS.md, "What a user waits for, part two")."""
    import numpy as np

    from mediacluster.pipeline import Pipeline

    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(c, 1.0, (100, 32)) for c in (0, 5, 10)]).astype(np.float32)
    Pipeline().fit(X).save(tmp_path / "model")
    np.save(tmp_path / "new.npy", X[[0, 150, 299]] + 0.05)
    mods = loaded_by(["assign", str(tmp_path / "model"), str(tmp_path / "new.npy"), "--out",
                      str(tmp_path / "out.csv")])
    assert (tmp_path / "out.csv").exists()
    assert "sklearn" in mods and "faiss" in mods  # what it does need (the probe saw the answer)
    assert sorted(set(NOT_FOR_ASSIGN) & mods) == []
