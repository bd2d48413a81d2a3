"""An excerpt cut from anywhere in a long recording is linked with it, from bounded reads.

A long file's fingerprint is its middle 120 s (the block) and 30 probes of 5 s spread over it
(``duplicates.fingerprint``); a probe found inside the other file's block, with the others that
should lie there, links the pair. Recordings are made here from real FSDD clips as
tests/test_long_audio.py makes them.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import dataset

sf = pytest.importorskip("soundfile")

RATE = 8000


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Two 10-minute recordings of theo from disjoint halves of his clips (``a``, ``b``); 60 s
    excerpts of ``a`` cut at 20 s, 400 s and 530 s (away from its middle 240-360 s), 6 dB
    quieter, Ogg Vorbis; ``spliced``: ``b`` with the 20 s of ``a`` around its probe 10 pasted
    into its middle; ``stretch``: those 20 s of ``a`` alone."""
    from test_long_audio import recording, write

    from mediacluster.duplicates.fingerprint import AudioCheck

    clips = []
    with tarfile.open(dataset("fsdd")) as tf:
        for m in tf:
            name = os.path.basename(m.name)
            if m.isfile() and name.endswith(".wav") and name.split("_")[1] == "theo":
                clips.append((name, sf.read(io.BytesIO(tf.extractfile(m).read()), dtype="float32")[0]))
    clips = [y for _, y in sorted(clips, key=lambda t: t[0])]
    d = tmp_path_factory.mktemp("excerpts")
    a = recording(clips[:250], 10, seed=10)
    b = recording(clips[250:], 10, seed=11)
    out = {"a": write(d / "a.flac", a, format="FLAC"), "b": write(d / "b.flac", b, format="FLAC")}
    for at in (20, 400, 530):
        out[f"at{at}"] = write(d / f"excerpt_{at}.ogg", a[at * RATE:(at + 60) * RATE] * 0.5,
                               format="OGG", subtype="VORBIS")
    c = AudioCheck()
    p10 = round(10 * (600 - c.probe_seconds) / (c.probes - 1) * RATE)  # where a's probe 10 starts
    piece = a[p10 - 5 * RATE:p10 + 15 * RATE]
    spliced = b.copy()
    spliced[290 * RATE:290 * RATE + len(piece)] = piece
    out["spliced"] = write(d / "spliced.flac", spliced, format="FLAC")
    out["stretch"] = write(d / "stretch.wav", piece)
    return out


def test_an_excerpt_from_anywhere_is_linked_at_its_place(files):
    """Each excerpt lies outside the middle 120 s: the check as it was (``probes=0``) misses all
    three; with the probes each is linked, and the offset found is where it was cut."""
    from mediacluster.duplicates.fingerprint import AudioCheck, AudioVerifier

    before, after = AudioVerifier(AudioCheck(probes=0)), AudioVerifier()
    fp = after.prepared(files["a"])
    assert fp.block.shape[1] <= 12_000 and fp.probes.shape[0] == 30  # bounded: 120 s + 30 x 5 s
    assert fp.probe_starts_s[0] == 0 and fp.probe_starts_s[-1] == pytest.approx(595, abs=0.01)
    for at in (20, 400, 530):
        assert not before.verify(files["a"], files[f"at{at}"])[0], at
        ok, info = after.verify(files["a"], files[f"at{at}"])
        assert ok and info["by"] == "probes" and abs(info["offset_s"] - at) <= 0.03, (at, info)
        ok, info = after.verify(files[f"at{at}"], files["a"])  # either order
        assert ok and abs(info["offset_s"] + at) <= 0.03, (at, info)


def test_other_recordings_and_a_shared_stretch_are_not_linked(files):
    """Another recording of the same voice is linked with neither the recording nor its
    excerpts; a recording which shares 20 s with ``a`` (one of a's probes found in its block,
    the others that should lie there not) is not linked with it, though the 20 s alone are."""
    from mediacluster.duplicates.fingerprint import AudioVerifier

    v = AudioVerifier()
    for k in ("a", "at20", "at400", "at530"):
        ok, info = v.verify(files["b"], files[k])
        assert not ok, (k, info)
    ok, info = v.verify(files["a"], files["spliced"])
    found, expected = map(int, info["probes"].split("/"))
    assert not ok and found == 1 and expected >= 4, info
    ok, info = v.verify(files["a"], files["stretch"])
    assert ok and info["probes"] == "1/1", info


def test_dups_groups_an_excerpt_of_a_long_recording(files, tmp_path):
    """``mediacluster dups`` on the two recordings and an excerpt cut at 400 s: the excerpt is
    grouped with its recording by its fingerprint; the other recording stays alone."""
    from mediacluster.cli import main
    from mediacluster.duplicates.collection import read_dups

    d = tmp_path / "in"
    d.mkdir()
    for k in ("a", "b", "at400"):
        os.link(files[k], d / files[k].name)
    assert main(["dups", str(d), "--out", str(tmp_path / "dups"), "--quiet"]) == 0
    t = read_dups(tmp_path / "dups")
    g = t.set_index(t["path"].map(lambda p: Path(p).name))["duplicate_group"]
    assert g["a.flac"] >= 0 and g["a.flac"] == g["excerpt_400.ogg"] and g["b.flac"] == -1, g.to_dict()
    assert np.all(t.loc[t["duplicate_group"] >= 0, "link_kind"] == "fingerprint")
