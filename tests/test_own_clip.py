"""A researcher's own CLIP / CLAP model in a local folder (no hub): tiny random models saved with
``save_pretrained`` (their quality is meaningless; the paths through the package are what is
tested): names against her vocabulary in the run and in its saved model, what identifies the
encoder in the embedding cache, and folders that do not hold what the encoder needs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_clap
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


def test_a_local_folder_is_named_by_its_absolute_path(own_clip, imagenette_dir, tmp_path, monkeypatch):
    """``--encoder clip:model`` run from the model's parent folder: the id, ``run.json`` and the
    saved model said ``model``, so two folders called ``model`` shared cached vectors (when their
    config, weight sizes and times matched: a copy with ``cp -p``, ``tar``) and ``assign`` from
    another directory loaded whatever ``model`` was there, or nothing."""
    from mediacluster import load
    from mediacluster.encoders import get_encoder

    monkeypatch.chdir(own_clip.parent)
    enc = get_encoder("clip:model")
    assert enc.spec == f"clip:{own_clip.resolve()}" and f"@{own_clip.resolve()}#" in enc.id
    run = tmp_path / "run"
    assert main(["cluster", str(imagenette_dir), "--out", str(run), "--encoder", "clip:model",
                 "--save-model", *FAST]) == 0
    info = json.loads((run / "run.json").read_text())
    assert info["encoder"]["name"] == f"clip:{own_clip.resolve()}"
    assert load(str(run / "models" / "v0001")).model_info_["metadata"]["encoder"] == f"clip:{own_clip.resolve()}"


def test_clap_id_changes_with_the_weights_in_its_folder(tmp_path):
    """The CLAP encoder's id was its folder's name and window count only: weights retrained and
    saved into the same folder were served the old weights' vectors from the cache."""
    import torch
    from transformers import ClapModel

    from mediacluster.encoders import get_encoder

    folder = tiny_clap(tmp_path / "clap")
    before = get_encoder(f"clap:{folder}").id
    assert before == get_encoder(f"clap:{folder}").id
    model = ClapModel.from_pretrained(folder)
    with torch.no_grad():
        model.audio_projection.linear1.weight.add_(0.1)
    model.save_pretrained(folder)
    assert get_encoder(f"clap:{folder}").id != before
