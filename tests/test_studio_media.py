"""What the studio serves of an item's file as a browser asks for it: a sound's excerpt with byte
ranges (a player seeks by them), in a real studio process over HTTP and in real Chromium."""

from __future__ import annotations

import numpy as np
import pytest
from studio_helpers import Server, browser, client


@pytest.fixture(scope="module")
def tone_run(tmp_path_factory):
    """An audio run of 6 tones of 6 s each (MFCC, PCA + K-means)."""
    import soundfile as sf

    from mediacluster.embed import embed_collection
    from mediacluster.ingest import collect
    from mediacluster.pipeline import Pipeline
    from mediacluster.report.build import map_2d
    from mediacluster.workflow import publish_run

    root = tmp_path_factory.mktemp("tones")
    rng = np.random.default_rng(0)
    t = np.arange(8000 * 6) / 8000
    for k in range(6):
        wav = 0.3 * np.sin(2 * np.pi * (200 + 150 * k) * t) + 0.01 * rng.standard_normal(t.size)
        (root / "c").mkdir(exist_ok=True)
        sf.write(root / "c" / f"tone{k}.wav", wav, 8000)
    emb = embed_collection(collect(root / "c", media="audio"), encoder="mfcc", cache_dir=root / "cache",
                           progress=False)
    pipe = Pipeline(outliers=None).with_params({"reducer": "pca", "reducer__n_components": 3,
                                                "clusterer": "kmeans", "clusterer__n_clusters": 2})
    run = publish_run(root / "run", emb, pipe.fit(emb.vectors), media="audio", name=False)
    with run.writing("t"):
        map_2d(run, emb.vectors, method="pca")
    return run.path


@pytest.fixture(scope="module")
def tone_studio(tone_run):
    srv = Server(tone_run)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.mark.slow
def test_a_sounds_excerpt_is_served_in_byte_ranges(tone_studio):
    with client(tone_studio) as c:
        whole = c.get("/api/items/0/audio")
        assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes"
        n = len(whole.content)
        assert n > 1000
        part = c.get("/api/items/0/audio", headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == whole.content[100:200]
        assert part.headers["content-range"] == f"bytes 100-199/{n}"
        head = c.head("/api/items/0/audio")
        assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) == n
        assert c.get("/api/items/99/audio").status_code == 404
        assert c.get("/api/items/0/audio").content == whole.content  # the cached excerpt, the same bytes


@pytest.mark.slow
@pytest.mark.browser
def test_the_player_seeks_in_a_sounds_excerpt_in_chromium(tone_studio):
    """Chromium seeks a media resource only when the server answers byte ranges: before, the
    seekable range was [0, 0] and setting currentTime to 4 s played from the start."""
    with browser() as drv:
        drv.get(tone_studio.url)
        drv.set_script_timeout(30)
        got = drv.execute_async_script("""
          const done = arguments[arguments.length - 1];
          const a = new Audio("api/items/0/audio");
          a.preload = "auto";
          a.addEventListener("error", () => done({error: String(a.error && a.error.message)}));
          a.addEventListener("canplaythrough", () => {
            a.addEventListener("seeked", () => done({t: a.currentTime, end: a.seekable.length ? a.seekable.end(0) : 0}),
                               {once: true});
            a.currentTime = 4.0;
          }, {once: true});
        """)
    assert "error" not in got, got
    assert got["end"] > 5 and abs(got["t"] - 4.0) < 0.1, got


def test_a_sounds_excerpt_plays_when_the_cache_cannot_keep_it(tone_run, tmp_path, monkeypatch):
    """A full disk or a cache folder that cannot be made: the excerpt's bytes, whole (no byte
    ranges then), rather than an internal error."""
    from mediacluster.studio.session import Studio

    (tmp_path / "file").write_bytes(b"")
    monkeypatch.setenv("MEDIACLUSTER_CACHE", str(tmp_path / "file" / "cache"))
    st = Studio(tone_run)
    try:
        data, kind = st.audio_file(0)
        assert isinstance(data, bytes) and len(data) > 1000 and kind in ("audio/mpeg", "audio/wav")
        assert st.audio(0) == (data, kind) and st.thumbnail(0)[1] == "image/png"
    finally:
        st.close()
