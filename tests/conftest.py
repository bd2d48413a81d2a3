"""Shared fixtures: small real slices of ../shared/datasets, extracted once per session."""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

# One BLAS / OpenMP thread for the test process and the servers and commands it starts: the
# tests' matrices are small, and on 2 cores shared with other processes (CI, or a loaded
# development box) a second thread only spins and waits (tests/test_hierarchy.py: 33 s with the
# libraries' default threads, 15 s with one, at load 4-5). Set before numpy is imported below;
# an explicit setting in the environment wins.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MEDIACLUSTER_SHARED", ROOT.parent / "shared")) / "datasets"


def sigint_default():  # pragma: no cover - runs in the child before exec
    """``preexec_fn`` for a child a test interrupts with Ctrl-C (SIGINT): SIGINT's default
    action. A test run started in the background by a non-interactive shell (`bash -c '... &'`,
    as a CI runner may) has SIGINT *ignored*, a child inherits that, and Python then installs no
    KeyboardInterrupt handler: the command runs on as if no Ctrl-C came."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def dataset(name: str) -> Path:
    """The archive of a shared labelled set. Missing: the test fails when the ``CI`` environment
    variable is set (CI must test everything, not pass having skipped it), else it is skipped."""
    p = SHARED / f"{name}.tar.gz"
    if not p.exists():
        msg = (f"shared dataset {p} not available (put ../shared/datasets next to the checkout or "
               "set MEDIACLUSTER_SHARED)")
        if os.environ.get("CI"):
            pytest.fail(msg + "; CI is set, so this is a failure, not a skip", pytrace=False)
        pytest.skip(msg)
    return p


@functools.cache
def _browser():
    """``benchmarks/_browser.py``, the one headless Chromium launcher (loaded from its file: the
    benchmarks folder is not put on ``sys.path``, where its scripts would shadow other modules)."""
    spec = importlib.util.spec_from_file_location("_browser", ROOT / "benchmarks" / "_browser.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def chromium(width: int = 1400, height: int = 1000):
    """A real headless Chromium (selenium) for the browser tests, launched as the benchmarks
    launch theirs (``benchmarks/_browser.chromium``: its flags, a new empty profile, the console
    log kept); the test is skipped where Chromium, chromedriver or selenium is not installed."""
    browser = _browser()
    why = browser.missing()
    if why:
        pytest.skip(why)
    return browser.chromium(width, height)


@pytest.fixture(scope="module")
def module_chromium(request):
    """One headless Chromium lent in turn to the browser tests of a module whose tests need no
    new browser of their own (``studio_helpers.SharedChromium``; pass it as ``shared=`` to
    ``studio_in_chromium`` / ``browser``): started by the first test that takes it, handed back
    blank after each, quit after the module. Its size: the module's ``BROWSER_SIZE``, else
    1400 x 1000."""
    from studio_helpers import SharedChromium

    shared = SharedChromium(*getattr(request.module, "BROWSER_SIZE", (1400, 1000)))
    try:
        yield shared
    finally:
        shared.close()


def tiny_clap(path: Path, tokenizer: bool = False) -> Path:
    """A tiny random CLAP checkpoint (model + feature extractor) saved at ``path``: the CLAP
    encoder's path through ``transformers`` tested without a hub (skipped without torch or
    transformers). ``tokenizer``: also a tiny byte-level BPE tokenizer (RoBERTa's kind, as
    CLAP's), so the text tower embeds prompts."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    vocab_size = 100
    if tokenizer:
        import json

        from tokenizers.pre_tokenizers import ByteLevel

        path.mkdir(parents=True, exist_ok=True)
        vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>"])}
        vocab.update({c: len(vocab) + i for i, c in enumerate(sorted(ByteLevel.alphabet()))})
        vocab["<mask>"] = len(vocab)
        (path / "vocab.json").write_text(json.dumps(vocab))
        (path / "merges.txt").write_text("#version: 0.2\n")
        transformers.RobertaTokenizer(vocab=str(path / "vocab.json"),
                                      merges=str(path / "merges.txt")).save_pretrained(path)
        vocab_size = len(vocab)
    torch.manual_seed(0)
    cfg = transformers.ClapConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=37, max_position_embeddings=64),
        audio_config=dict(hidden_size=32, patch_embeds_hidden_size=16, depths=[1, 1],
                          num_attention_heads=[1, 1], window_size=8, spec_size=256,
                          num_mel_bins=64, num_hidden_layers=2, projection_dim=16),
        projection_dim=16)
    transformers.ClapModel(cfg).save_pretrained(path)
    transformers.ClapFeatureExtractor(feature_size=64, sampling_rate=48000, max_length_s=10,
                                      truncation="rand_trunc").save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    return SHARED


@pytest.fixture(scope="session")
def cifar3_dir(tmp_path_factory) -> Path:
    """300 CIFAR-10 test images: 100 each of airplane, frog, truck."""
    from mediacluster.datasets import extract_slice

    d = tmp_path_factory.mktemp("cifar3")
    extract_slice(dataset("cifar10-test"), d, classes=["airplane", "frog", "truck"], per_class=100, seed=0)
    return d


@pytest.fixture(scope="session")
def cifar3_embeddings(cifar3_dir, tmp_path_factory):
    """Default-encoder embeddings of ``cifar3_dir`` (with folder labels), computed once."""
    from mediacluster.embed import embed_collection
    from mediacluster.ingest import collect

    coll = collect(cifar3_dir, labels_from_folders=True)
    return embed_collection(coll, cache_dir=tmp_path_factory.mktemp("cache"), progress=False)


@pytest.fixture(scope="module")
def base_run(cifar3_embeddings, tmp_path_factory) -> Path:
    """A studio's run folder over ``cifar3_embeddings`` (``studio_helpers.make_run``: PCA +
    K-means, saved model, cached map), one per test module; tests that edit it copy it first."""
    from studio_helpers import make_run

    return make_run(cifar3_embeddings, tmp_path_factory.mktemp("base-run") / "run")


@pytest.fixture(scope="module")
def level_run(cifar3_embeddings, tmp_path_factory) -> Path:
    """A studio's run folder with levels over ``cifar3_embeddings`` (``test_levels.pca_tree``,
    the run's level the first below the top two with 6 clusters or more; a cached PCA map, no
    saved model), one per test module; tests that edit it copy it first."""
    from test_levels import pca_tree

    from mediacluster.report.build import map_2d
    from mediacluster.workflow import publish_run

    pipe = pca_tree().fit(cifar3_embeddings.vectors)
    pipe.set_level(next(lv for lv, k in enumerate(pipe.n_clusters_per_level_.tolist()) if lv >= 2 and k >= 6))
    run = publish_run(tmp_path_factory.mktemp("level-run") / "run", cifar3_embeddings, pipe, save_model=False)
    with run.writing("test"):
        map_2d(run, cifar3_embeddings.vectors, method="pca")
    return run.path


@pytest.fixture(scope="session")
def imagenette_dir(tmp_path_factory) -> Path:
    """20 Imagenette val photos from each of 4 classes (224 px JPEGs)."""
    from mediacluster.datasets import extract_slice

    d = tmp_path_factory.mktemp("imagenette")
    extract_slice(dataset("imagenette-val"), d,
                  classes=["n01440764", "n02102040", "n03028079", "n03888257"], per_class=20, seed=0)
    return d


@pytest.fixture(scope="module")
def one_blas_thread():
    """Small matrices: multi-threaded OpenBLAS only spins on a loaded 2-core box (measured 50x
    slower PCA on 150 x 1280 at load 20); one thread keeps these tests fast anywhere."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)
