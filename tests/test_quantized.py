"""The int8 EfficientNet-Lite0 (``efficientnet-lite0-int8``): made offline, close to the float
model on real images, cached apart from it, bad files still skipped with reasons.

The default int8 model is made once per machine from the float export (in the user cache, as
the float export is; about 20-40 s the first time on 2 cores, then it loads in well under a
second). The test that makes a model from scratch calibrates on 32 real images into a temporary
cache, with the float export copied in, so it stays fast.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from broken_media import make_broken

from mediacluster.encoders import get_encoder


@pytest.fixture(scope="module")
def photos(imagenette_dir, cifar3_dir) -> list[str]:
    """8 Imagenette photos (224 px) and 4 CIFAR images (32 px)."""
    im = sorted(str(p) for p in Path(imagenette_dir).rglob("*.JPEG"))[::10][:8]
    cf = sorted(str(p) for p in Path(cifar3_dir).rglob("*.jpg"))[::75][:4]
    return im + cf


@pytest.fixture(scope="module")
def outputs(photos):
    fl = get_encoder("efficientnet-lite0", backend="onnx")
    q = get_encoder("efficientnet-lite0-int8")
    batch = [fl.prepare(p) for p in photos]
    return fl.encode(batch), q.encode(batch), fl, q


def _cos(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_int8_vectors_follow_the_float_model(outputs):
    """Measured on these 12 images (onnxruntime 1.32, built-in calibration): cosine with the
    float embedding 0.988-0.997 on the 8 Imagenette photos and 0.979-0.989 on the 4 CIFAR
    images, the same ImageNet top-1 class on all 12. Asserted: > 0.975 on the photos, > 0.95 on
    all, the float top-1 within the int8 top-5 on the photos: room for another ONNX Runtime
    version, none for a broken recipe (per-tensor weights give cosines of 0.37-0.65)."""
    f, q, fl, qe = outputs
    assert qe.backend_ == "onnx" and qe.id != fl.id and qe.id.startswith("efficientnet-lite0-int8@")
    assert q["embedding"].shape == (12, 1280) and q["embedding"].dtype == np.float32
    assert q["imagenet_probs"].shape == (12, 1000)
    np.testing.assert_allclose(q["imagenet_probs"].sum(1), 1.0, atol=1e-4)
    cos = _cos(f["embedding"], q["embedding"])
    assert cos[:8].min() > 0.975 and cos.min() > 0.95, cos
    top5 = np.argsort(-q["imagenet_probs"][:8], axis=1)[:, :5]
    assert all(t in row for t, row in zip(f["imagenet_probs"][:8].argmax(1), top5))
    # other images give other vectors: the int8 model is not collapsing them
    off = _cos(q["embedding"][:1].repeat(11, 0), q["embedding"][1:])
    assert off.max() < cos.min()


def test_int8_batch_composition_does_not_change_vectors(outputs, photos):
    _, q, fl, qe = outputs
    single = qe.encode([fl.prepare(photos[3])])["embedding"][0]
    np.testing.assert_allclose(single, q["embedding"][3], atol=1e-5)


@pytest.mark.slow
def test_int8_made_offline_and_cached_by_recipe(photos, imagenette_dir, tmp_path, monkeypatch):
    """Made from the float export without the network, kept next to it under its own key;
    another calibration or recipe is another file and another encoder id."""
    from mediacluster.encoders.efficientnet import VERSION
    from mediacluster.encoders.onnx_cache import EXPORT_RECIPE, cache_root

    fl = get_encoder("efficientnet-lite0", backend="onnx")
    fl.encode([fl.prepare(photos[0])])  # the float export exists in the user cache
    name = f"efficientnet-lite0@{VERSION}-{EXPORT_RECIPE}"
    for ext in (".onnx", ".json"):
        shutil.copy(cache_root() / "onnx" / f"{name}{ext}", tmp_path / f"{name}{ext}")

    def no_network(*a, **k):
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    calib = sorted(str(p) for p in Path(imagenette_dir).rglob("*.JPEG"))[1::2][:32]
    enc = get_encoder("efficientnet-lite0-int8", onnx_cache_dir=str(tmp_path), calibration=calib)
    v = enc.encode([enc.prepare(p) for p in photos[:4]])["embedding"]
    made = sorted(p.name for p in tmp_path.glob("efficientnet-lite0-int8@*.onnx"))
    assert len(made) == 1 and "files32." in made[0] and (tmp_path / made[0]).with_suffix(".json").exists()
    assert "files32." in enc.id and enc.id != get_encoder("efficientnet-lite0-int8").id
    # the same settings find the file again (nothing re-made, same numbers)
    again = get_encoder("efficientnet-lite0-int8", onnx_cache_dir=str(tmp_path), calibration=calib)
    mtime = (tmp_path / made[0]).stat().st_mtime_ns
    np.testing.assert_allclose(again.encode([again.prepare(p) for p in photos[:4]])["embedding"], v, atol=1e-5)
    assert (tmp_path / made[0]).stat().st_mtime_ns == mtime
    # another recipe: another id (and so another cache key, in both caches)
    assert get_encoder("efficientnet-lite0-int8", quant_format="qoperator").id != get_encoder("efficientnet-lite0-int8").id
    assert get_encoder("efficientnet-lite0-int8", per_channel=False).id != get_encoder("efficientnet-lite0-int8").id


def test_builtin_calibration_is_reproducible_and_offline(monkeypatch):
    from mediacluster.encoders.efficientnet_int8 import builtin_calibration, builtin_sources

    monkeypatch.setattr(socket.socket, "connect", lambda *a, **k: (_ for _ in ()).throw(OSError("network")))
    assert len(builtin_sources()) == 3  # scikit-learn's china.jpg and flower.jpg, matplotlib's grace_hopper.jpg
    a = builtin_calibration(n_photo=6, n_drawn=4)
    b = builtin_calibration(n_photo=6, n_drawn=4)
    assert len(a) == 10 and all(x.shape == (224, 224, 3) and x.dtype == np.uint8 for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert len({x.tobytes() for x in a}) == 10


def test_int8_and_float_vectors_kept_apart_and_bad_files_skipped(cifar3_dir, tmp_path):
    """One store, both encoders: each item has a float and an int8 vector, never mixed up;
    unusable files are skipped with their reasons by the int8 encoder too."""
    import sqlite3

    from mediacluster.embed import embed_collection_cached
    from mediacluster.ingest import collect

    folder = tmp_path / "in"
    good = sorted(Path(cifar3_dir, "frog").glob("*.jpg"))[:12]
    folder.mkdir()
    for p in good:
        shutil.copy(p, folder / p.name)
    broken = make_broken(folder)
    cache = tmp_path / "cache"
    q = embed_collection_cached(collect(folder), "efficientnet-lite0-int8", cache_dir=cache, progress=False)
    f = embed_collection_cached(collect(folder), "efficientnet-lite0", cache_dir=cache, progress=False)
    assert q.vectors.shape == f.vectors.shape == (12, 1280)
    assert f.cache_stats["encoded"] == 12  # the int8 vectors were not taken for float ones
    assert q.encoder_version != f.encoder_version and q.encoder == "efficientnet-lite0-int8"
    cos = _cos(q.vectors, f.vectors)
    assert cos.min() > 0.9 and not np.allclose(q.vectors, f.vectors, atol=1e-4)
    reasons = {Path(s.path).name: s.reason for s in q.skipped}
    assert set(reasons) == set(broken) and all(reasons.values())
    again = embed_collection_cached(collect(folder), "efficientnet-lite0-int8", cache_dir=cache, progress=False)
    assert again.cache_stats["encoded"] == 0
    np.testing.assert_array_equal(again.vectors, q.vectors)
    with sqlite3.connect(cache / "embeddings.sqlite") as db:
        rows = dict(db.execute("select encoder, count(*) from vectors group by encoder").fetchall())
    assert rows == {q.encoder_version: 12, f.encoder_version: 12}


def test_int8_rejects_bad_settings():
    with pytest.raises(ValueError, match="quant_format"):
        get_encoder("efficientnet-lite0-int8", quant_format="fp8")
    with pytest.raises(ValueError, match="activation"):
        get_encoder("efficientnet-lite0-int8", activation="u4")
    with pytest.raises(ValueError, match="ONNX Runtime only"):
        get_encoder("efficientnet-lite0-int8", backend="torch")
    with pytest.raises(ValueError, match="does not exist"):
        _ = get_encoder("efficientnet-lite0-int8", calibration="/no/such/folder").id
