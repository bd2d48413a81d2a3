"""Reading excerpts of a long MP3 by seeking prints nothing on stderr; a broken MP3 still says so.

soundfile's ``read`` seeks (``tell``), libsndfile's MP3 decoder answers with ``mpg123_seek``, and
libmpg123 prints "part2_3_length ... too large for available bit count" from C on fd 2 when the
first frame after it refers back into its emptied bit reservoir (``ingest.audio``, module
docstring). The file here is 12 minutes of a gliding, beating tone with a little noise, 8 kHz
mono MP3 written by libsndfile (LAME): the encoder uses the reservoir, so seeks print the line.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

sf = pytest.importorskip("soundfile")

RATE = 8000


def tone(seconds: float, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    rng = np.random.default_rng(seed)
    y = 0.3 * np.sin(2 * np.pi * (300 + 200 * np.sin(t * 0.7)) * t) * (0.5 + 0.5 * np.sin(t * 3))
    return (y + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def write_mp3(path: Path, y: np.ndarray) -> Path:
    with sf.SoundFile(path, "w", RATE, 1, format="MP3", subtype="MPEG_LAYER_III") as f:
        for i in range(0, len(y), 10 * RATE):
            f.write(y[i:i + 10 * RATE])
    return path


@pytest.fixture(scope="module")
def mp3s(tmp_path_factory) -> dict[str, Path]:
    """A 12-minute MP3, and a copy with 4,000 random bytes inside its second excerpt (at 90 s
    of 720: the excerpts read are 0-30 s, 76.7-106.7 s, ...)."""
    d = tmp_path_factory.mktemp("mp3")
    good = write_mp3(d / "talk.mp3", tone(12 * 60))
    b = bytearray(good.read_bytes())
    at = len(b) * 90 // 720
    b[at:at + 4000] = np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    broken = d / "broken.mp3"
    broken.write_bytes(bytes(b))
    return {"good": good, "broken": broken}


def test_seeking_in_the_mp3_makes_libmpg123_speak(mp3s, capfd):
    """The precondition of the next test: read as soundfile reads (seek, then read), the
    excerpts make libmpg123 print its reservoir line on fd 2."""
    from mediacluster.ingest.audio import excerpt_spans

    with sf.SoundFile(mp3s["good"]) as f:
        for a, b in excerpt_spans(f.frames, f.samplerate):
            f.seek(a)
            f.read(b - a)
    assert "too large for available bit count" in capfd.readouterr().err


def test_long_mp3_excerpts_are_read_without_the_seek_noise(mp3s, capfd):
    """``load_audio_read`` reads the same 10 excerpts and fd 2 stays empty; a thread writing to
    fd 2 meanwhile loses no line (its lines are written back after each excerpt)."""
    from mediacluster.ingest.audio import load_audio_read

    capfd.readouterr()
    stop = threading.Event()
    said = []

    def chatter():
        k = 0
        while not stop.is_set() or k < 50:
            os.write(2, f"other thread line {k}\n".encode())
            said.append(k)
            k += 1
            stop.wait(0.002)

    t = threading.Thread(target=chatter)
    t.start()
    try:
        r = load_audio_read(str(mp3s["good"]))
    finally:
        stop.set()
        t.join()
    err = capfd.readouterr().err
    assert r.partial and r.frames_read == 300 * RATE
    assert "libmpg123" not in err and "too large" not in err, err[:500]
    # every line arrives once; a line the thread wrote while fd 2 was redirected is written back
    # after that read, so it can come after a line the thread wrote just after the read ended
    assert sorted(err.splitlines()) == sorted(f"other thread line {k}" for k in said)
    # three threads reading it at once: the same samples, still no line
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(3) as ex:
        again = list(ex.map(lambda _: load_audio_read(str(mp3s["good"])).wav, range(3)))
    assert all(np.array_equal(w, r.wav) for w in again)
    assert capfd.readouterr().err == ""
    # the excerpts are the file's audio at its places (the MP3 decoded whole, cut there)
    whole, _ = sf.read(mp3s["good"], dtype="float32")
    for k, (a, _) in enumerate(r.spans_s):
        got = r.wav[k * 30 * RATE + 800:(k + 1) * 30 * RATE - 800]
        want = whole[round(a * RATE) + 800:round(a * RATE) + 30 * RATE - 800]
        assert np.corrcoef(got, want)[0, 1] > 0.99, k


def test_a_broken_mp3_still_speaks_and_is_listed_as_skipped(mp3s, tmp_path, capfd):
    """libmpg123's complaint about a broken stream still reaches stderr, and the file is listed
    in ``dups.json``'s ``skipped_files`` as corrupt with libmpg123's words (before: "truncated",
    though no byte was missing); the good MP3 is read without a line on stderr."""
    from mediacluster.cli import main

    d = tmp_path / "in"
    d.mkdir()
    for p in mp3s.values():
        os.link(p, d / p.name)
    sf.write(d / "short.wav", tone(3, seed=2), RATE)
    capfd.readouterr()
    # its own cache: a cache that saw these bytes fail remembers it and does not decode them again
    assert main(["dups", str(d), "--out", str(tmp_path / "dups"), "--media", "audio", "--quiet",
                 "--cache-dir", str(tmp_path / "cache")]) == 3
    err = capfd.readouterr().err
    assert "Illegal Audio-MPEG-Header" in err and "too large for available bit count" not in err, err[:800]
    skipped = json.loads((tmp_path / "dups" / "dups.json").read_text())["skipped_files"]
    assert [Path(s["path"]).name for s in skipped] == ["broken.mp3"], skipped
    why = skipped[0]["reason"]
    assert why.startswith("corrupt MP3: decoding stopped at 7") and "Illegal Audio-MPEG-Header" in why, why
