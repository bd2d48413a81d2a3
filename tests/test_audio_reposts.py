"""Audio reposts: an edited copy of a clip is a duplicate of it, another take of the same word is not.

Real FSDD clips (../shared/datasets/fsdd.tar.gz) and reposts written here with soundfile;
``dups`` and ``cluster --dedup`` through the CLI, the saved model's ``duplicate_of`` through a
real service process (HTTP).
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import dataset

sf = pytest.importorskip("soundfile")

# several takes of one word by one speaker (the hardest negatives), and a few other clips
TAKES = [f"3_theo_{k}" for k in range(6)] + [f"7_nicolas_{k}" for k in range(6)]
OTHERS = ["0_george_0", "0_george_1", "9_jackson_0", "9_jackson_1", "5_yweweler_0", "1_lucas_0"]
UNSEEN = "3_theo_7"  # not in the collection: a new upload that is no repost


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    want = set(TAKES + OTHERS + [UNSEEN])
    dest = tmp_path_factory.mktemp("fsdd_takes")
    out = {}
    with tarfile.open(dataset("fsdd")) as tf:
        for m in tf.getmembers():
            stem = os.path.basename(m.name)[:-4]
            if m.isfile() and m.name.endswith(".wav") and stem in want:
                out[stem] = dest / f"{stem}.wav"
                out[stem].write_bytes(tf.extractfile(m).read())
    assert set(out) == want
    return out


def trimmed_louder_ogg(src: Path, dst: Path) -> Path:
    """12% cut (5% at the start, 7% at the end), 6 dB louder, re-encoded as Ogg Vorbis."""
    y, sr = sf.read(src, dtype="float32")
    n = len(y)
    y = np.clip(y[int(0.05 * n): n - int(0.07 * n)] * 10 ** (6 / 20), -1, 1)
    sf.write(dst, y, sr, format="OGG", subtype="VORBIS")
    return dst


def resampled_noisy_stereo(src: Path, dst: Path) -> Path:
    """At 16 kHz, white noise 30 dB below the clip, in stereo, 40 ms of silence in front."""
    from scipy.signal import resample_poly

    y, _ = sf.read(src, dtype="float32")
    y = resample_poly(y, 2, 1).astype(np.float32)
    rng = np.random.default_rng(0)
    y = y + rng.standard_normal(len(y)).astype(np.float32) * np.sqrt(np.mean(y ** 2)) * 10 ** (-30 / 20)
    y = np.concatenate([np.zeros(640, np.float32), y])
    sf.write(dst, np.stack([y, 0.8 * y], 1), 16000)
    return dst


def collection(tmp_path: Path, clips: dict[str, Path]) -> Path:
    d = tmp_path / "clips"
    d.mkdir()
    for k in TAKES + OTHERS:
        (d / clips[k].name).write_bytes(clips[k].read_bytes())
    trimmed_louder_ogg(clips["3_theo_0"], d / "repost_of_3_theo_0.ogg")
    return d


def test_the_check_links_a_repost_and_not_another_take(clips, tmp_path):
    from mediacluster.duplicates.fingerprint import AudioVerifier

    v = AudioVerifier()
    rep = trimmed_louder_ogg(clips["3_theo_0"], tmp_path / "r.ogg")
    ok, info = v.verify(clips["3_theo_0"], rep)
    cut = 0.05 * sf.info(clips["3_theo_0"]).duration  # the repost starts this much into the original
    assert ok and info["overlap"] > 0.95 and abs(info["offset_s"] - cut) <= 0.011, (cut, info)
    for k in TAKES[1:6]:
        ok, info = v.verify(clips["3_theo_0"], clips[k])
        assert not ok, (k, info)
    ok, info = v.verify(clips["7_nicolas_2"], resampled_noisy_stereo(clips["7_nicolas_2"], tmp_path / "s.wav"))
    assert ok, info


def test_dups_groups_an_audio_repost_with_its_original_only(clips, tmp_path, capsys):
    """``dups`` on a folder of clips: the trimmed, louder Ogg repost is grouped with its original
    by its fingerprint; the five other takes of the same digit by the same speaker stay apart
    (before, audio duplicates were exact copies only: the repost was missed)."""
    from mediacluster.cli import main
    from mediacluster.duplicates.collection import read_dups

    d = collection(tmp_path, clips)
    (d / "copy_of_9_jackson_0.wav").write_bytes(clips["9_jackson_0"].read_bytes())
    out = tmp_path / "dups"
    assert main(["dups", str(d), "--out", str(out), "--media", "audio", "--quiet"]) == 0
    said = capsys.readouterr().out
    assert "confirmed by an audio fingerprint" in said, said
    df = read_dups(out).assign(name=lambda t: [Path(p).name for p in t["path"]]).set_index("name")
    g = df.loc["repost_of_3_theo_0.ogg", "duplicate_group"]
    assert g >= 0 and df.loc["3_theo_0.wav", "duplicate_group"] == g
    assert {df.loc["repost_of_3_theo_0.ogg", "link_kind"], df.loc["3_theo_0.wav", "link_kind"]} == {"fingerprint"}
    assert df.loc["copy_of_9_jackson_0.wav", "link_kind"] == "exact"
    grouped = sorted(df.index[df["duplicate_group"] >= 0])
    assert grouped == sorted(["3_theo_0.wav", "repost_of_3_theo_0.ogg", "9_jackson_0.wav",
                              "copy_of_9_jackson_0.wav"]), grouped
    info = json.loads((out / "dups.json").read_text())
    assert info["links"]["fingerprint"] >= 1 and "fingerprint" in info["note"]
    # the page lets a person hear and see each grouped clip (it listed file names only): a
    # spectrogram and a player of an excerpt, both copied beside the page
    import re

    page = (out / "dups.html").read_text(encoding="utf-8")
    players = re.findall(r'<audio [^>]*src="(audio/[^"]+)"', page)
    pictures = re.findall(r'<img [^>]*src="(thumbs/[^"]+)"', page)
    assert len(players) == len(pictures) == 4 and 'class="noimg"' not in page
    assert all((out / f).stat().st_size > 500 for f in players + pictures)


@pytest.mark.slow
def test_dedup_model_answers_duplicate_of_for_an_uploaded_repost(clips, tmp_path):
    """``cluster --media audio --dedup --save-model``: the repost is grouped (fitted as one item
    with its original); the service answers ``duplicate_of`` for an uploaded repost of a training
    clip (resampled, noisy, stereo, padded) naming that clip, and none for an unseen take of a
    digit and speaker the collection holds; ``assign`` answers the same."""
    from test_serve import Server

    from mediacluster.cli import main
    from mediacluster.rundir import RunDir

    d = collection(tmp_path, clips)
    out = tmp_path / "run"
    assert main(["cluster", str(d), "--out", str(out), "--media", "audio", "--dedup", "--save-model",
                 "--seed", "0", "--quiet"]) == 0
    dups = RunDir.open(out).read_duplicates()
    grouped = sorted(Path(p).name for p in dups.loc[dups["duplicate_group"] >= 0, "id"])
    assert grouped == ["3_theo_0.wav", "repost_of_3_theo_0.ogg"], grouped
    new = tmp_path / "new"
    new.mkdir()
    upload = resampled_noisy_stereo(clips["7_nicolas_2"], new / "voice_message.wav")
    (new / clips[UNSEEN].name).write_bytes(clips[UNSEEN].read_bytes())
    assert main(["assign", str(out), str(new), "--out", str(tmp_path / "a.csv"), "--quiet"]) == 0
    import pandas as pd

    a = pd.read_csv(tmp_path / "a.csv").assign(name=lambda t: [Path(str(i)).name for i in t["id"]]).set_index("name")
    assert Path(a.loc["voice_message.wav", "duplicate_of"]).name == "7_nicolas_2.wav", a.to_dict()
    assert a.loc["voice_message.wav", "duplicate_kind"] == "fingerprint"
    assert pd.isna(a.loc[clips[UNSEEN].name, "duplicate_of"]), a.to_dict()
    s = Server(str(out), log=tmp_path / "serve.log")
    try:
        r = s.client.post("/v1/assign", files=[("files", (p.name, p.read_bytes()))
                                               for p in (upload, clips[UNSEEN])])
        assert r.status_code == 200, r.text
        rep, unseen = r.json()["items"]
        assert rep["duplicate_of"] is not None and rep["duplicate_of"]["kind"] == "fingerprint", rep
        assert Path(rep["duplicate_of"]["id"]).name == "7_nicolas_2.wav", rep
        assert unseen["duplicate_of"] is None, unseen
    finally:
        s.stop()


def test_a_new_clips_duplicate_of_takes_candidates_from_spectrum_profiles_too(clips, tmp_path):
    """``DuplicateIndex.query`` (a new upload's ``duplicate_of``: ``assign`` and the service)
    takes the ``dups`` finder's second candidate source for audio, each clip's nearest spectrum
    profiles (level- and silence-free), kept in the index and saved with it: a padded, louder
    repost is found by its profile alone (no vector given), another take of the same word is
    not; without the stored profiles (an index as made before) the same query finds nothing."""
    from mediacluster.duplicates.collection import find_in_embeddings
    from mediacluster.duplicates.index import DuplicateIndex
    from mediacluster.embed import embed_collection
    from mediacluster.ingest import collect

    d = collection(tmp_path, clips)
    emb = embed_collection(collect(d, media="audio"), encoder="mfcc", cache_dir=tmp_path / "cache", progress=False)
    index = find_in_embeddings(emb, media="audio", progress=False).index()
    assert index.profiles is not None and index.profiles.shape[0] == len(emb)
    index = DuplicateIndex.load(index.save(tmp_path / "index"))
    y, sr = sf.read(clips["7_nicolas_2"], dtype="float32")
    y = np.concatenate([np.zeros(sr // 2, np.float32), np.tanh(3 * y), np.zeros(sr, np.float32)])
    sf.write(tmp_path / "padded_louder.wav", y, sr)
    m = index.query(path=tmp_path / "padded_louder.wav")
    assert m is not None and m.kind == "fingerprint" and Path(m.id).name == "7_nicolas_2.wav", m
    assert index.query(path=clips[UNSEEN]) is None
    index.profiles = None
    assert index.query(path=tmp_path / "padded_louder.wav") is None
