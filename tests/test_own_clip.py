"""A researcher's own CLIP / CLAP model in a local folder (no hub): tiny random models saved with
``save_pretrained`` (their quality is meaningless; the paths through the package are what is
tested): names against her vocabulary in the run and in its saved model, what identifies the
encoder in the embedding cache, and folders that do not hold what the encoder needs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_encoders import make_tiny_clip

from mediacluster.cli import main

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def own_clip(tmp_path_factory) -> Path:
    return make_tiny_clip(tmp_path_factory.mktemp("own") / "model")


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MEDIACLUSTER_CACHE", str(tmp_path / "cache"))


FAST = ["--reducer", "pca", "--reducer-param", "n_components=5", "--clusterer", "kmeans",
        "--clusterer-param", "n_clusters=3", "--quiet"]


def test_cluster_names_the_run_and_its_model_against_the_vocabulary(own_clip, imagenette_dir, tmp_path):
    """``cluster --encoder clip:DIR --vocabulary FILE --save-model``: the run was named against the
    shipped social-media topics, and only ``--report`` renamed the run against the file, so the
    saved model (``assign``, the service) answered with other names than the run and its report."""
    from mediacluster import load

    topics = ["zebra crossing", "lighthouse", "bagpipe"]
    (tmp_path / "topics.txt").write_text("# mine\n" + "\n".join(topics) + "\n")
    run = tmp_path / "run"
    assert main(["cluster", str(imagenette_dir), "--out", str(run), "--encoder", f"clip:{own_clip}",
                 "--vocabulary", str(tmp_path / "topics.txt"), "--save-model", *FAST]) == 0
    named = json.loads((run / "names.json").read_text())["clusters"]
    assert named and all(any(c["name"].startswith(t) for t in topics) for c in named), named
    model = load(str(run / "models" / "v0001"))
    assert model.model_info_["metadata"]["names"] == {str(c["cluster"]): c["name"] for c in named}
