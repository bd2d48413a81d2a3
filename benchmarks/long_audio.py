"""Long recordings: the cost of embedding one, and whether recordings group by speaker.

Recordings are made from FSDD clips (../shared/datasets/fsdd.tar.gz, 8 kHz mono): clips of one
speaker drawn at random (seeded) one after the other, each followed by a 0.1-0.6 s pause.

* **Cost**: 1-, 10- and 60-minute recordings (WAV, and the 60-minute one also as Ogg Vorbis),
  each embedded by each encoder (``prepare`` + ``encode``) in a fresh process: wall and CPU
  seconds, and the process's peak RSS above what it held after loading the encoder (warmed on a
  one-second clip); beside it the same for decoding the file whole (``soundfile.read``), what a
  loader without excerpts would hold, and the fingerprint check's ``prepared`` (the middle 120 s)
  and one comparison of two 60-minute files. Before this change the 10- and 60-minute files were
  skipped ("too long", limit 300 s).
* **Speakers**: ``--per-speaker`` recordings of ``--minutes`` each for each of FSDD's 6 speakers,
  each from its own disjoint share of the speaker's 500 clips (so two recordings of one speaker
  share no clip); embedded through the package (``embed_collection``) with each encoder, scored
  by the nearest other recording (same speaker?), K-means told k = 6 and the default
  ``Pipeline()`` (never told k): ACC / NMI from ``mediacluster.metrics.external_scores``.

    python benchmarks/long_audio.py --write            # writes its RESULTS.md section

BirdNET's model is CC BY-NC-SA 4.0 (non-commercial); this benchmark is research use.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import _results
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = _results.SHARED / "fsdd.tar.gz"
SECTION = "## Audio: long recordings (longaudio helper)"
RATE = 8000
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")


def fsdd_voices() -> dict[str, list[np.ndarray]]:
    import io

    import soundfile as sf

    found: dict[str, list[tuple[str, np.ndarray]]] = {s: [] for s in SPEAKERS}
    with tarfile.open(ARCHIVE) as tf:
        for m in tf:
            name = os.path.basename(m.name)
            if m.isfile() and name.endswith(".wav") and name.split("_")[1] in found:
                y, _ = sf.read(io.BytesIO(tf.extractfile(m).read()), dtype="float32")
                found[name.split("_")[1]].append((name, y))
    return {k: [y for _, y in sorted(v, key=lambda t: t[0])] for k, v in found.items()}


def recording(clips: list[np.ndarray], seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    need = int(seconds * RATE)
    out = np.zeros(need, np.float32)
    n = 0
    while n < need:
        y = clips[rng.integers(len(clips))][: need - n]
        out[n:n + len(y)] = y
        n += len(y) + int(RATE * rng.uniform(0.1, 0.6))
    return out


def write(path: Path, y: np.ndarray, **kw) -> Path:
    import soundfile as sf

    with sf.SoundFile(path, "w", RATE, 1, **kw) as f:  # by blocks: libsndfile's Vorbis writer
        for i in range(0, len(y), 10 * RATE):            # crashes on minutes in one call
            f.write(y[i:i + 10 * RATE])
    return path


def podcast(y: np.ndarray, path: Path) -> Path:
    """``y`` (8 kHz) as a podcast is stored: 44.1 kHz stereo (the right channel 0.8 x the left),
    FLAC; resampled and written 10 s at a time."""
    import soundfile as sf
    from scipy.signal import resample_poly

    with sf.SoundFile(path, "w", 44100, 2, format="FLAC") as f:
        for i in range(0, len(y), 10 * RATE):
            b = resample_poly(y[i:i + 10 * RATE], 441, 80).astype(np.float32)
            f.write(np.stack([b, 0.8 * b], 1))
    return path


# -- cost, one measurement per fresh process --------------------------------------------------------


def child(what: str, path: str, warm: str, other: str | None) -> dict:
    """Run in a fresh process: load ``what``, warm it on ``warm``, then time it on ``path``."""
    def status(key: str) -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1]) / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def start() -> float:
        """The RSS now, with the peak (VmHWM) reset to it (Linux: clear_refs 5)."""
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
        return status("VmRSS")

    def rss_mb() -> float:
        return status("VmHWM")

    out: dict = {}
    if what == "decode-whole":
        import soundfile as sf

        sf.read(warm, dtype="float32")
        base = start()
        t, c = time.perf_counter(), time.process_time()
        y, _ = sf.read(path, dtype="float32")
        out["n"] = len(y)
    elif what == "fingerprint":
        from mediacluster.duplicates.fingerprint import AudioVerifier

        v = AudioVerifier()
        v.verify(warm, warm)
        base = start()
        t, c = time.perf_counter(), time.process_time()
        fp = v.prepared(path)
        out["frames"] = int(fp.block.shape[1])
        if other:
            t2 = time.perf_counter()
            fo = v.prepared(other)
            t3 = time.perf_counter()
            ok, info = v.compare(fp, fo)
            out["compare_s"] = round(time.perf_counter() - t3, 3)
            out["prepare_other_s"] = round(t3 - t2, 3)
            out["linked"] = ok
            out["info"] = info
    else:
        import warnings

        from mediacluster.encoders import get_encoder
        from mediacluster.ingest.audio import load_audio_read

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            enc = get_encoder(what)
        enc.encode([enc.prepare(warm)])
        base = start()
        t, c = time.perf_counter(), time.process_time()
        v = enc.encode([enc.prepare(path)])["embedding"]
        out["finite"] = bool(np.isfinite(v).all())
    out["wall_s"] = round(time.perf_counter() - t, 3)
    out["cpu_s"] = round(time.process_time() - c, 3)
    out["rss_base_mb"] = round(base, 1)
    out["rss_peak_mb"] = round(rss_mb(), 1)
    out["rss_added_mb"] = round(rss_mb() - base, 1)
    if what not in ("decode-whole", "fingerprint"):  # how much audio the loader read (not timed)
        r = load_audio_read(path)
        out["read_s"] = round(r.frames_read / r.rate, 1)
    return out


def measure(what: str, path: Path, warm: Path, other: Path | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", what, str(path), str(warm)] + ([str(other)] if other else [])
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if p.returncode != 0:
        return {"error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


def cost(voices, work: Path, encoders: list[str]) -> list[dict]:
    import soundfile as sf

    warm = work / "warm.wav"
    sf.write(warm, voices["theo"][0], RATE)
    files = {}
    for minutes in (1, 10, 60):
        files[f"{minutes} min WAV"] = write(work / f"theo_{minutes}.wav", recording(voices["theo"], 60 * minutes, seed=minutes))
    y60 = sf.read(files["60 min WAV"], dtype="float32")[0]
    files["60 min Ogg"] = write(work / "theo_60.ogg", y60, format="OGG", subtype="VORBIS")
    files["60 min 44.1 kHz stereo FLAC"] = podcast(y60, work / "theo_60_44k_stereo.flac")
    other = write(work / "theo_60_repost.ogg", y60[11 * RATE:-4 * RATE] * 0.7, format="OGG", subtype="VORBIS")
    del y60
    rows = []
    for label, path in files.items():
        for what in ["decode-whole", *encoders, "fingerprint"]:
            r = measure(what, path, warm, other if (what == "fingerprint" and label == "60 min WAV") else None)
            r.update(file=label, what=what if "compare_s" not in r else "fingerprint + the repost's + compare",
                     mb_on_disk=round(path.stat().st_size / 2**20, 1))
            print(json.dumps(r), file=sys.stderr)
            rows.append(r)
    return rows


def seek_fidelity(work: Path) -> list[dict]:
    """Each excerpt read by seeking in a compressed copy of the 10-minute WAV against the same
    excerpt of the WAV: the lowest correlation over the 10 excerpts (lag 0: the seek lands on
    the right sample), and the samples read."""
    from mediacluster.ingest.audio import load_audio_read

    ref = load_audio_read(str(work / "theo_10.wav"))
    y = ref.wav
    seg = len(y) // 10
    rows = []
    for fmt, sub in (("FLAC", None), ("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III")):
        import soundfile as sf

        whole, _ = sf.read(work / "theo_10.wav", dtype="float32")
        p = write(work / f"theo_10.{fmt.lower()}", whole, format=fmt, **({"subtype": sub} if sub else {}))
        r = load_audio_read(str(p))
        cs = [float(np.corrcoef(y[k * seg + 800:(k + 1) * seg - 800], r.wav[k * seg + 800:(k + 1) * seg - 800])[0, 1])
              for k in range(10)]
        dec, _ = sf.read(p, dtype="float32")  # the same excerpts cut from the file decoded whole
        cw = [float(np.corrcoef(y[k * seg + 800:(k + 1) * seg - 800],
                                dec[a + 800:a + seg - 800])[0, 1])
              for k, a in enumerate(round(s0 * ref.rate) for s0, _ in ref.spans_s)]
        rows.append({"format": fmt, "min_corr": round(min(cs), 4), "median_corr": round(float(np.median(cs)), 4),
                     "whole_min_corr": round(min(cw), 4), "whole_median_corr": round(float(np.median(cw)), 4),
                     "read_s": round(r.frames_read / r.rate, 1), "spans_equal": r.spans_s == ref.spans_s})
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


# -- speakers -------------------------------------------------------------------------------------


def speakers(voices, work: Path, encoders: list[str], per_speaker: int, minutes: float) -> list[dict]:
    from sklearn.cluster import KMeans

    from mediacluster.data import Collection
    from mediacluster.embed import embed_collection
    from mediacluster.metrics import external_scores
    from mediacluster.pipeline import Pipeline

    d = work / "speakers"
    d.mkdir(exist_ok=True)
    paths, labels = [], []
    for s in SPEAKERS:
        clips = voices[s]
        share = len(clips) // per_speaker
        for k in range(per_speaker):
            p = d / f"{s}_{k}.wav"
            if not p.exists():
                write(p, recording(clips[k * share:(k + 1) * share], 60 * minutes, seed=100 + k))
            paths.append(str(p))
            labels.append(s)
    import tempfile

    cache = tempfile.mkdtemp(prefix="cache-", dir=work)  # a cold cache: the embed time is the encoders'
    rows = []
    for spec in encoders:
        coll = Collection(ids=paths, paths=paths, media="audio")
        t = time.perf_counter()
        emb = embed_collection(coll, encoder=spec, cache_dir=cache, progress=False)
        secs = time.perf_counter() - t
        X = emb.vectors / np.linalg.norm(emb.vectors, axis=1, keepdims=True)
        y = np.array([labels[paths.index(p)] for p in emb.paths])
        S = X @ X.T
        np.fill_diagonal(S, -np.inf)
        nn = float((y[S.argmax(1)] == y).mean())
        km = KMeans(len(SPEAKERS), n_init=10, random_state=0).fit_predict(X)
        a = external_scores(list(y), km)["all"]
        pipe = Pipeline(random_state=0).fit(emb.vectors)
        b = external_scores(list(y), pipe.labels_)
        rows.append({"encoder": spec, "items": len(emb), "skipped": len(emb.skipped), "embed_s": round(secs, 1),
                     "nn_same_speaker": round(nn, 3), "kmeans_acc": round(a["acc"], 3), "kmeans_nmi": round(a["nmi"], 3),
                     "pipeline_clusters": int(b["n_clusters"]), "pipeline_acc": round(b["all"]["acc"], 3),
                     "pipeline_nmi": round(b["all"]["nmi"], 3)})
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def markdown(args, load: str, commit: str, rows: list[dict], spk: list[dict], fid: list[dict]) -> str:
    L = [SECTION, "",
         f"`python benchmarks/long_audio.py {' '.join(a for a in sys.argv[1:])}` (commit {commit}; "
         f"`cat /proc/loadavg` before: {load}; 2 shared cores, so CPU seconds are given beside wall time).",
         "",
         "Recordings made of FSDD clips of one speaker with 0.1-0.6 s pauses, 8 kHz mono. A file over 300 s "
         "is read as 10 excerpts of 30 s spread over it, found by seeking (`ingest.audio.load_audio`); "
         "before, every file over 300 s was skipped as \"too long\". Each cell: one fresh process, the encoder "
         "loaded and warmed on a one-second clip first; RSS added = peak RSS after the file minus the RSS "
         "before it (what the file cost, not the libraries). `decode-whole` is `soundfile.read` of the whole "
         "file (what a loader without excerpts would hold before any resampling); `fingerprint` is the "
         "repost check's `AudioVerifier.prepared` (the middle 120 s at 8 kHz).",
         "",
         "| file | on disk MB | step | wall s | CPU s | RSS added MB | audio read s |",
         "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            L.append(f"| {r['file']} | {r['mb_on_disk']} | {r['what']} | error: {r['error']} | | | |")
            continue
        L.append(f"| {r['file']} | {r['mb_on_disk']} | {r['what']} | {r['wall_s']} | {r['cpu_s']} | "
                 f"{r['rss_added_mb']} | {r.get('read_s', '')} |")
    by = {(r["file"], r["what"]): r for r in rows if "error" not in r}
    flat = [f"{w} {by[('10 min WAV', w)]['rss_added_mb']:.0f} / {by[('60 min WAV', w)]['rss_added_mb']:.0f} / "
            f"{by[('60 min 44.1 kHz stereo FLAC', w)]['rss_added_mb']:.0f} MB"
            for w in [*dict.fromkeys(r["what"] for r in rows)]
            if all(k in by for k in [("10 min WAV", w), ("60 min WAV", w), ("60 min 44.1 kHz stereo FLAC", w)])]
    if flat:
        L += ["", "RSS added for the 10-minute WAV / the 60-minute WAV / the 60-minute 44.1 kHz stereo FLAC: "
              + "; ".join(flat) + ". The encoders' cost stops growing at 300 s of audio read (they resample "
              "what they read to their own rate, 16 or 48 kHz mono, so the file's rate and channels only change "
              "the excerpt being decoded); decoding whole grows with the file, before any resampling. The "
              "fingerprint is the middle 120 s at 8 kHz whatever the file (its 60-minute WAV cell also prepares "
              "the repost and compares the two: the comparison's float64 arrays)."]
    fp = [r for r in rows if "compare_s" in r]
    if fp:
        r = fp[0]
        L += ["", f"Fingerprint check of the 60-minute WAV against a repost of it (11 s cut at the start, 4 s at "
              f"the end, 3 dB quieter, Ogg Vorbis, also 60 min): prepared in {r['prepare_other_s']} s, compared "
              f"in {r['compare_s']} s, linked: {r['linked']} ({r['info']})."]
    if fid:
        L += ["", "Seeking in compressed files: the 10-minute WAV written as FLAC, Ogg Vorbis and MP3 (libsndfile), "
              "each read in its 10 excerpts by seeking, each excerpt correlated with the same excerpt of the WAV at "
              "lag 0 (so a seek landing on the wrong sample would show):", "",
              "| format | excerpts read by seeking: lowest / median correlation with the WAV's | the same cut from "
              "the file decoded whole | audio read s |", "|---|---|---|---|"]
        for r in fid:
            L.append(f"| {r['format']} | {r['min_corr']} / {r['median_corr']} | {r['whole_min_corr']} / "
                     f"{r['whole_median_corr']} | {r['read_s']} |")
    if spk:
        L += ["", f"Speakers: {args.per_speaker} recordings of {args.minutes:g} min for each of FSDD's 6 speakers "
              f"(each from its own share (1/{args.per_speaker}) of the speaker's clips: no clip in two recordings), embedded "
              "through the package from their excerpts. `nearest`: share of recordings whose nearest other "
              "recording (cosine) is of the same speaker; K-means told k = 6; `Pipeline()` defaults, never told k.",
              "",
              "| encoder | recordings | skipped | embed s | nearest same speaker | K-means k=6 ACC / NMI | "
              "Pipeline() clusters | Pipeline() ACC / NMI |",
              "|---|---|---|---|---|---|---|---|"]
        for r in spk:
            L.append(f"| {r['encoder']} | {r['items']} | {r['skipped']} | {r['embed_s']} | {r['nn_same_speaker']} | "
                     f"{r['kmeans_acc']} / {r['kmeans_nmi']} | {r['pipeline_clusters']} | "
                     f"{r['pipeline_acc']} / {r['pipeline_nmi']} |")
    return "\n".join(L) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] if len(sys.argv) > 5 else None)))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/longaudio-bench")
    ap.add_argument("--encoders", default="mfcc,resemblyzer,birdnet")
    ap.add_argument("--per-speaker", type=int, default=4)
    ap.add_argument("--minutes", type=float, default=6.0)
    ap.add_argument("--skip-cost", action="store_true")
    _results.add_common_args(ap)
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    load = _results.proc_loadavg()
    encoders = [e for e in args.encoders.split(",") if e]
    voices = fsdd_voices()
    rows = [] if args.skip_cost else cost(voices, work, encoders)
    fid = [] if args.skip_cost else seek_fidelity(work)
    spk = speakers(voices, work, [e for e in encoders if e != "birdnet"], args.per_speaker, args.minutes)
    _results.publish(SECTION, markdown(args, load, _results.commit(), rows, spk, fid), args.write)


if __name__ == "__main__":
    main()
