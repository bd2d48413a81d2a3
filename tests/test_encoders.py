"""Encoders: the registry, EfficientNet-Lite0 on both backends, the ONNX export cache, CLIP.

CLIP is tested with a tiny random-weight CLIPModel (built from a CLIPConfig, saved with
``save_pretrained`` together with a small BPE tokenizer and an image processor) loaded through
the registry by path. The real ``openai/clip-vit-base-patch32`` checkpoint is only used when it
is already in the local Hugging Face cache (the network is never touched).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from colour_encoders import MeanColour
from PIL import Image

from mediacluster.encoders import available, get_encoder, register
from mediacluster.errors import ParameterError
from mediacluster.ingest import SkipItem, load_image


@pytest.fixture(scope="module")
def photos(imagenette_dir, cifar3_dir) -> list[str]:
    """8 Imagenette photos (224 px) and 4 CIFAR images (32 px)."""
    im = sorted(str(p) for p in Path(imagenette_dir).rglob("*.JPEG"))[::10][:8]
    cf = sorted(str(p) for p in Path(cifar3_dir).rglob("*.jpg"))[::75][:4]
    return im + cf


# -- registry ---------------------------------------------------------------------------------

def test_registry_lists_and_rejects():
    assert {"efficientnet-lite0", "clip"} <= set(available())
    with pytest.raises(ValueError, match="unknown encoder"):
        get_encoder("no-such-encoder")
    with pytest.raises(ValueError, match="only 'lite0'"):
        get_encoder("efficientnet-lite0:lite4")
    with pytest.raises(ValueError, match="backend"):
        get_encoder("efficientnet-lite0", backend="tensorflow")


def test_backend_can_be_forced(monkeypatch):
    assert get_encoder("efficientnet-lite0").backend == "auto"
    monkeypatch.setenv("MEDIACLUSTER_BACKEND", "torch")
    enc = get_encoder("efficientnet-lite0")
    assert enc.backend == "torch" and enc.concurrency == 1
    assert get_encoder("efficientnet-lite0", backend="onnx").backend == "onnx"  # explicit wins


def test_adding_an_encoder_is_one_registration(tmp_path):
    register("mean-colour", MeanColour)
    enc = get_encoder("mean-colour")
    p = tmp_path / "red.png"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(p)
    assert enc.id == "mean-colour@1"
    np.testing.assert_allclose(enc.encode([enc.prepare(str(p))])["embedding"], [[255, 0, 0]])


# -- EfficientNet-Lite0 -----------------------------------------------------------------------

def test_prepare_matches_resize_then_crop(photos, tmp_path):
    """uint8 crop from the PIL box resize == resizing the whole image to 256 and cropping 224."""
    from mediacluster.encoders.efficientnet import preprocess_uint8

    def reference(im):
        w, h = im.size
        s = 256 / min(w, h)
        nw, nh = max(224, round(w * s)), max(224, round(h * s))
        im = im.resize((nw, nh), Image.BILINEAR)
        left, top = (nw - 224) // 2, (nh - 224) // 2
        return np.asarray(im.crop((left, top, left + 224, top + 224)))

    for p in photos:  # square images (Imagenette 224, CIFAR 32): identical
        im = load_image(p)
        np.testing.assert_array_equal(preprocess_uint8(im), reference(im))
    wide = load_image(photos[0]).resize((400, 300))
    diff = np.abs(preprocess_uint8(wide).astype(int) - reference(wide).astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01
    enc = get_encoder("efficientnet-lite0")
    x = enc.prepare(photos[0])
    assert x.dtype == np.uint8 and x.shape == (224, 224, 3)
    bad = tmp_path / "bad.jpg"
    bad.write_text("not a picture")
    with pytest.raises(SkipItem):
        enc.prepare(str(bad))


@pytest.fixture(scope="module")
def lite0_outputs(photos):
    onnx = get_encoder("efficientnet-lite0", backend="onnx")
    torch_ = get_encoder("efficientnet-lite0", backend="torch")
    batch = [onnx.prepare(p) for p in photos]
    return onnx.encode(batch), torch_.encode(batch), onnx, torch_


def test_onnx_matches_pytorch_on_real_images(lite0_outputs):
    o, t, onnx, torch_ = lite0_outputs
    assert onnx.backend_ == "onnx" and torch_.backend_ == "torch"
    assert onnx.id == torch_.id  # same numbers, same cache key
    assert o["embedding"].shape == (12, 1280) and o["imagenet_probs"].shape == (12, 1000)
    assert np.abs(o["embedding"] - t["embedding"]).max() < 1e-4
    assert np.abs(o["imagenet_probs"] - t["imagenet_probs"]).max() < 1e-5
    np.testing.assert_allclose(o["imagenet_probs"].sum(1), 1.0, atol=1e-4)
    assert (o["imagenet_probs"].argmax(1) == t["imagenet_probs"].argmax(1)).all()


def test_lite0_knows_imagenette_classes(lite0_outputs, photos):
    """Imagenette classes are ImageNet classes: the folder's class is among the top 5 (Lite0's
    ImageNet top-5 accuracy is ~92%; top-1 is ~74% on Imagenette val, too noisy for 8 images)."""
    # ImageNet-1k indices of the 4 Imagenette classes in ``imagenette_dir``
    index = {"n01440764": 0, "n02102040": 217, "n03028079": 497, "n03888257": 701}
    o = lite0_outputs[0]
    top5 = np.argsort(-o["imagenet_probs"][:8], axis=1)[:, :5]
    truth = [index[Path(p).parent.name] for p in photos[:8]]
    assert sum(t in row for t, row in zip(truth, top5)) >= 6, (top5, truth)


def test_batch_composition_does_not_change_vectors(lite0_outputs, photos):
    o, _, onnx, _ = lite0_outputs
    single = onnx.encode([onnx.prepare(photos[3])])["embedding"][0]
    np.testing.assert_allclose(single, o["embedding"][3], atol=1e-5)


def test_onnx_export_cache_atomic_and_repaired(tmp_path):
    """The export cache reuses a good file, and re-exports a damaged or unrecorded one."""
    import torch

    from mediacluster.encoders.onnx_cache import exported_model, load_session

    calls = []

    def export(path):
        calls.append(path)
        torch.manual_seed(0)
        lin = torch.nn.Linear(4, 2)
        torch.onnx.export(lin, (torch.zeros(1, 4),), path, input_names=["x"], output_names=["y"],
                          dynamo=False)

    p = exported_model("tiny@1", export, tmp_path)
    assert len(calls) == 1 and p.exists() and p.parent == tmp_path
    assert exported_model("tiny@1", export, tmp_path) == p and len(calls) == 1  # reused
    y = load_session("tiny@1", export, cache_dir=tmp_path).run(None, {"x": np.ones((1, 4), np.float32)})[0]
    assert y.shape == (1, 2)
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])  # truncated by hand
    assert exported_model("tiny@1", export, tmp_path) == p and len(calls) == 2
    y2 = load_session("tiny@1", export, cache_dir=tmp_path).run(None, {"x": np.ones((1, 4), np.float32)})[0]
    np.testing.assert_allclose(y, y2)
    p.with_suffix(".json").unlink()  # record lost: not trusted
    exported_model("tiny@1", export, tmp_path)
    assert len(calls) == 3
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]  # no temporary files left


# -- CLIP ---------------------------------------------------------------------------------------

def make_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """A random-weight CLIP (2-layer towers, 16-d space) with its tokenizer and processor."""
    import torch
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    try:
        from transformers import CLIPImageProcessorPil as CLIPImageProcessor
    except ImportError:
        from transformers import CLIPImageProcessor

    folder.mkdir(parents=True, exist_ok=True)
    chars = sorted(ByteLevel.alphabet())  # byte-level BPE base alphabet, as CLIP's tokenizer uses
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    merges = ["c a", "ca t</w>", "d o", "do g</w>"]
    for m in merges:
        vocab["".join(m.split())] = len(vocab)
    bos, eos = len(vocab), len(vocab) + 1
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = bos, eos
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt")).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    torch.manual_seed(seed)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=32, bos_token_id=bos,
                         eos_token_id=eos, pad_token_id=eos),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=32, patch_size=8),
        projection_dim=16,
    )
    CLIPModel(cfg).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return make_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


def test_tiny_clip_through_registry(tiny_clip, photos, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = get_encoder(f"clip:{tiny_clip}")
    assert enc.has_text and enc.dim == 16 and enc.name == "clip"
    assert str(tiny_clip) in enc.id
    batch = [enc.prepare(p) for p in photos]
    assert batch[0].shape == (3, 32, 32) and batch[0].dtype == np.float32
    v = enc.encode(batch)["embedding"]
    assert v.shape == (len(photos), 16) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert np.ptp(v, axis=0).max() > 1e-3  # different images, different vectors
    np.testing.assert_allclose(enc.encode(batch[:2])["embedding"], v[:2], atol=1e-5)
    t = enc.encode_text(["a cat", "a dog", "a photo of a cat"])
    assert t.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(t[0], t[1])
    np.testing.assert_allclose(enc.encode_text(["a cat"])[0], t[0], atol=1e-5)
    with pytest.raises(NotImplementedError):
        get_encoder("efficientnet-lite0").encode_text(["a cat"])


def test_clip_id_changes_with_weights(tiny_clip, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    other = make_tiny_clip(tmp_path / "other", seed=1)
    a, b = get_encoder(f"clip:{tiny_clip}"), get_encoder(f"clip:{other}")
    assert a.id != b.id
    assert a.id == get_encoder(f"clip:{tiny_clip}").id


def test_clip_embeds_a_folder_through_the_cache(tiny_clip, cifar3_dir, tmp_path, monkeypatch):
    from mediacluster.embed import embed_collection_cached
    from mediacluster.ingest import collect

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    coll = collect(Path(cifar3_dir) / "frog")
    coll.ids, coll.paths = coll.ids[:20], coll.paths[:20]
    emb = embed_collection_cached(coll, f"clip:{tiny_clip}", cache_dir=tmp_path, progress=False)
    assert emb.vectors.shape == (20, 16) and emb.cache_stats["encoded"] == 20
    again = embed_collection_cached(coll, f"clip:{tiny_clip}", cache_dir=tmp_path, progress=False)
    assert again.cache_stats["encoded"] == 0
    np.testing.assert_array_equal(again.vectors, emb.vectors)


def test_missing_model_fails_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ParameterError, match="nothing-here does not exist"):
        get_encoder(f"clip:{tmp_path / 'nothing-here'}").encode([np.zeros((3, 32, 32), np.float32)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ParameterError, match="cannot load AutoConfig from"):  # its config.json, read first
        get_encoder(f"clip:{tmp_path / 'empty'}").encode([np.zeros((3, 32, 32), np.float32)])


@pytest.mark.parametrize("spec,media", [("clip:{d}", "image"), ("clap:{d}", "audio"), ("clip:{d}/nope", "image")])
def test_a_model_that_cannot_load_is_a_clear_error(spec, media, tmp_path, capsys, monkeypatch):
    """``cluster --encoder clip:DIR`` / ``clap:DIR`` where DIR holds no model: exit 2 naming it
    (CLIP crashed with exit 1; CLAP listed every clip as skipped and said 'see the list')."""
    import soundfile as sf

    from mediacluster.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MEDIACLUSTER_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        if media == "image":
            Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(data / f"{i}.png")
        else:
            t = np.arange(8000) / 8000
            sf.write(data / f"{i}.wav", 0.5 * np.sin(2 * np.pi * (200 + 100 * i) * t), 8000)
    (tmp_path / "model").mkdir()
    rc = main(["cluster", str(data), "--out", str(tmp_path / "run"), "--quiet",
               "--encoder", spec.format(d=tmp_path / "model")])
    err = capsys.readouterr().err
    assert rc == 2 and "error: encoder:" in err and str(tmp_path / "model") in err, err
    assert "skipped" not in err


def test_real_clip_checkpoint_if_cached(imagenette_dir, monkeypatch):
    """Only when openai/clip-vit-base-patch32 is already in the local HF cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = get_encoder("clip:openai/clip-vit-base-patch32")
    try:
        enc._load()
    except ParameterError:  # not cached and offline: a clear error, not an OSError
        pytest.skip("openai/clip-vit-base-patch32 not in the local Hugging Face cache")
    dog = sorted(Path(imagenette_dir, "n02102040").glob("*.JPEG"))[:2]
    church = sorted(Path(imagenette_dir, "n03028079").glob("*.JPEG"))[:2]
    v = enc.encode([enc.prepare(str(p)) for p in dog + church])["embedding"]
    assert v.shape == (4, 512)
    t = enc.encode_text(["a photo of a dog", "a photo of a church"])
    sims = v @ t.T
    assert (sims[:2, 0] > sims[:2, 1]).all() and (sims[2:, 1] > sims[2:, 0]).all()
