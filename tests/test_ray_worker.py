"""The Ray executor's embedding actor (``EmbedWorker``) in this process, with the real MFCC
encoder on real files: what it hands the driver, which keeps it in the embedding cache under
the content hash the actor read. No Ray cluster is needed for the actor's own work."""

from __future__ import annotations

import hashlib

import numpy as np


def _tone(path, hz: float) -> None:
    import soundfile as sf

    t = np.arange(16000) / 16000
    sf.write(path, 0.3 * np.sin(2 * np.pi * hz * t), 16000)


def test_a_file_replaced_between_the_actors_hashing_and_decoding_is_skipped_not_kept_under_its_old_hash(tmp_path):
    """Before: the actor returned the vector of the new bytes under the hash of the old ones (the
    driver stores it there for good: every later file holding the old bytes got the other
    sound's vector), as the local path did before its fix (RESULTS, bughunt2)."""
    from mediacluster.embed.engine import CHANGED
    from mediacluster.executors.ray_executor import EmbedWorker

    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    _tone(a, 220)
    _tone(b, 1760)
    old, new = a.read_bytes(), b.read_bytes()
    w = EmbedWorker("mfcc")
    real = w.enc.prepare

    def prepare(path):  # a sync tool rewrites the file after the actor hashed it, before it decodes
        if path == str(a) and a.read_bytes() == old:
            a.write_bytes(new)
        return real(path)

    w.enc.prepare = prepare
    out = w({"row": np.array([0, 1]), "path": np.array([str(a), str(b)], dtype=object)})
    assert out["hash"][1] == hashlib.blake2b(new, digest_size=16).hexdigest() and out["skip"][1] == ""
    # the driver keeps a row's vector when it has a hash and no reason to skip: a's must have one
    assert out["skip"][0] == CHANGED and not out["lasting"][0]
    w.enc.prepare = real
    a.write_bytes(old)  # unchanged now: embedded as what it is, under its own hash
    again = w({"row": np.array([0]), "path": np.array([str(a)], dtype=object)})
    assert again["skip"][0] == "" and again["hash"][0] == hashlib.blake2b(old, digest_size=16).hexdigest()
    assert not np.allclose(again["embedding"][0], out["embedding"][1])
