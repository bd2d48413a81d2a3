"""A researcher's own CLIP / CLAP model in a local folder (no hub): tiny random models saved with
``save_pretrained`` (their quality is meaningless; the paths through the package are what is
tested): names against her vocabulary in the run and in its saved model, what identifies the
encoder in the embedding cache, and folders that do not hold what the encoder needs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
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


def _copy_without(src: Path, dst: Path, *names: str) -> Path:
    import shutil

    shutil.copytree(src, dst)
    for n in names:
        (dst / n).unlink()
    return dst


def test_a_folder_without_a_tokenizer_names_nothing_alike(own_clip, imagenette_dir, tmp_path, caplog):
    """A CLIP folder saved without its tokenizer: ``transformers`` built an empty one, every text
    had the same vector, and every cluster was named with the vocabulary's first topic (silently,
    as if sure). Now the encoder has no text tower: the run is named by no method, said once."""
    from mediacluster.encoders import get_encoder
    from mediacluster.errors import ParameterError

    folder = _copy_without(own_clip, tmp_path / "model", "tokenizer.json", "tokenizer_config.json",
                           "vocab.json", "merges.txt")
    enc = get_encoder(f"clip:{folder}")
    assert not enc.has_text and "no tokenizer files" in caplog.text
    with pytest.raises(ParameterError, match="no tokenizer files"):
        enc.encode_text(["a dog"])
    run = tmp_path / "run"
    assert main(["cluster", str(imagenette_dir), "--out", str(run), "--encoder", f"clip:{folder}", *FAST]) == 0
    assert json.loads((run / "names.json").read_text())["method"] == "none"


@pytest.mark.parametrize("case", ["clap-as-clip", "clip-as-clap", "image-size"])
def test_a_folder_of_another_kind_is_refused_naming_it(case, own_clip, tmp_path):
    """A CLAP folder given as ``clip:`` loaded as a CLIP model with every weight random (a
    warning table, then noise under a CLIP id in the cache); a processor for another image size
    failed every batch inside the model (``ValueError: Input image size (64*64) doesn't
    match``). Each is now a ParameterError naming the folder when the encoder loads."""
    from mediacluster.encoders import get_encoder
    from mediacluster.errors import ParameterError

    if case == "clap-as-clip":
        spec, said = f"clip:{tiny_clap(tmp_path / 'clap')}", "holds a 'clap' model, not 'clip'"
    elif case == "clip-as-clap":
        spec, said = f"clap:{own_clip}", "holds a 'clip' model, not 'clap'"
    else:
        folder = _copy_without(own_clip, tmp_path / "model")
        cfg = json.loads((folder / "preprocessor_config.json").read_text())
        cfg.update(crop_size={"height": 64, "width": 64}, size={"shortest_edge": 64})
        (folder / "preprocessor_config.json").write_text(json.dumps(cfg))
        spec, said = f"clip:{folder}", "makes 64x64 images but the model takes 32x32"
    enc = get_encoder(spec)
    with pytest.raises(ParameterError, match=said):
        enc.prepare(__file__) if case == "clip-as-clap" else enc.encode([np.zeros((3, 32, 32), np.float32)])
