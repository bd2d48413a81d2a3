"""Long recordings, second pass: an excerpt cut from anywhere in a long recording, and MP3 seeks.

Recordings are made from FSDD clips as ``benchmarks/long_audio.py`` makes them (clips of one
speaker one after the other, 0.1-0.6 s pauses, 8 kHz mono): for each of ``--speakers`` speakers one
recording of each of ``--minutes`` (10, 30, 60), each from its own third of the speaker's 500 clips
(no clip in two recordings), written as FLAC.

* **Excerpts** (reposts): from each recording, ``--per-length`` excerpts of each of ``--lengths``
  seconds (10, 30, 60, 120, 300) cut at random offsets (seeded), 6 dB quieter to 6 dB louder,
  re-encoded as Ogg Vorbis. Each checked against its recording with ``fingerprint.AudioVerifier``
  **before** (``AudioCheck(probes=0)``: the middle 120 s only, the check as it was) and **after**
  (the defaults: the block and 30 probes of 5 s): linked / all, by length and recording.
* **False links**: every excerpt against every other recording (other speakers, and the same
  speaker's other recordings: the same voice saying the same digits), every pair of recordings,
  and ``--clips`` FSDD clips of each speaker's first recording's share against the speaker's two
  other recordings (other takes of the same words by the same voice, a second or less).
* **Cost**: CPU seconds to prepare a recording's fingerprint (the check's ``prepared``: decode
  what is read at 8 kHz, spectrograms), CPU ms per pair compared, and the fingerprint's bytes.
* **MP3**: the 10-minute recordings of ``--mp3`` speakers written as MP3; the lines on stderr
  while their 10 excerpts are read by seeking as soundfile reads them (``seek`` then ``read``),
  and through ``ingest.audio.load_audio_read`` (each in a fresh process).

    python benchmarks/long_audio_excerpts.py --write      # writes its RESULTS.md section
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import _results  # noqa: E402
from long_audio import RATE, SPEAKERS, fsdd_voices, recording, write  # noqa: E402

SECTION = "## Audio: long recordings, second pass (audio2 helper)"


def make(voices, work: Path, speakers, minutes, lengths, per_length: int, clips: int, seed: int = 0):
    import soundfile as sf

    rng = np.random.default_rng(seed)
    longs, excerpts, shorts = [], [], []
    for s in speakers:
        share = len(voices[s]) // len(minutes)
        for k, m in enumerate(minutes):
            pool = voices[s][k * share:(k + 1) * share]
            p = work / f"{s}_{m}min.flac"
            y = recording(pool, 60 * m, seed=1000 + 10 * k + SPEAKERS.index(s))
            if not p.exists():
                write(p, y, format="FLAC")
            longs.append({"path": p, "speaker": s, "minutes": m, "k": k})
            for L in lengths:
                for j in range(per_length):
                    a = int(rng.integers(0, len(y) - L * RATE))
                    gain = float(10 ** (rng.uniform(-6, 6) / 20))
                    q = work / f"{s}_{m}min_excerpt_{L}s_{j}.ogg"
                    if not q.exists():
                        write(q, np.clip(y[a:a + L * RATE] * gain, -1, 1), format="OGG", subtype="VORBIS")
                    excerpts.append({"path": q, "of": p, "speaker": s, "minutes": m, "seconds": L,
                                     "at_s": a / RATE})
            if k == 0:  # clips of this recording's share: other takes for the speaker's other recordings
                for j, i in enumerate(rng.choice(len(pool), size=min(clips, len(pool)), replace=False)):
                    q = work / f"{s}_clip_{j}.wav"
                    if not q.exists():
                        sf.write(q, pool[i], RATE)
                    shorts.append({"path": q, "speaker": s})
    return longs, excerpts, shorts


def run_mode(name: str, check, longs, excerpts, shorts) -> dict:
    from mediacluster.duplicates.fingerprint import AudioVerifier

    v = AudioVerifier(check, cache_bytes=2**31)
    v.verify(shorts[0]["path"], shorts[1]["path"])  # imports, FFT plans
    t = time.process_time()
    fps = {str(x["path"]): v.prepared(x["path"]) for x in longs}
    prep_cpu = (time.process_time() - t) / len(longs)
    for x in excerpts + shorts:
        v.prepared(x["path"])
    nbytes = max(f.nbytes for f in fps.values())
    pos, t_pos = [], 0.0
    for e in excerpts:
        t = time.process_time()
        ok, info = v.verify(e["of"], e["path"])
        t_pos += time.process_time() - t
        fa = fps[str(e["of"])]
        lo, hi = e["at_s"], e["at_s"] + e["seconds"]  # the excerpt's block, in the recording's time
        if e["seconds"] > check.excerpt_seconds:
            lo += (e["seconds"] - check.excerpt_seconds) / 2
            hi = lo + check.excerpt_seconds
        holds = any(lo <= a and a + check.probe_seconds <= hi for a in fa.probe_starts_s)
        pos.append({**{k: e[k] for k in ("speaker", "minutes", "seconds")}, "linked": ok, "info": info,
                    "holds": holds})
    neg, t_neg = [], 0.0
    for e in excerpts:
        for lo in longs:
            if lo["path"] == e["of"]:
                continue
            t = time.process_time()
            ok, info = v.verify(lo["path"], e["path"])
            t_neg += time.process_time() - t
            neg.append({"same_speaker": lo["speaker"] == e["speaker"], "linked": ok, "info": info})
    ll, t_ll = [], 0.0
    for i in range(len(longs)):
        for j in range(i + 1, len(longs)):
            t = time.process_time()
            ok, info = v.verify(longs[i]["path"], longs[j]["path"])
            t_ll += time.process_time() - t
            ll.append({"linked": ok, "info": info, "same_speaker": longs[i]["speaker"] == longs[j]["speaker"]})
    cl = []
    for c in shorts:
        for lo in longs:
            if lo["speaker"] == c["speaker"] and lo["k"] != 0:
                ok, info = v.verify(lo["path"], c["path"])
                cl.append({"linked": ok, "info": info})
    return {"name": name, "prep_cpu_s": prep_cpu, "fp_mb": nbytes / 2**20, "pos": pos, "neg": neg, "ll": ll,
            "clips": cl, "pos_ms": 1000 * t_pos / max(1, len(pos)), "neg_ms": 1000 * t_neg / max(1, len(neg)),
            "ll_ms": 1000 * t_ll / max(1, len(ll))}


MP3_CHILD = r"""
import sys, soundfile as sf
from mediacluster.ingest.audio import excerpt_spans, load_audio_read
path, how = sys.argv[1], sys.argv[2]
if how == "soundfile":
    with sf.SoundFile(path) as f:
        for a, b in excerpt_spans(f.frames, f.samplerate):
            f.seek(a)
            f.read(b - a)
else:
    load_audio_read(path)
"""


def mp3_lines(voices, work: Path, speakers) -> list[dict]:
    rows = []
    for s in speakers:
        y = recording(voices[s], 600, seed=7)
        p = write(work / f"{s}_10min.mp3", y, format="MP3", subtype="MPEG_LAYER_III")
        for how in ("soundfile", "load_audio_read"):
            r = subprocess.run([sys.executable, "-c", MP3_CHILD, str(p), how], capture_output=True, text=True)
            err = r.stderr.splitlines()
            rows.append({"speaker": s, "how": how, "rc": r.returncode, "lines": len(err),
                         "reservoir": sum("too large for available bit count" in x for x in err)})
            print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def markdown(args, load: str, commit: str, modes: list[dict], mp3: list[dict], lengths, minutes) -> str:
    L = [SECTION, "",
         f"`python benchmarks/long_audio_excerpts.py {' '.join(sys.argv[1:])}` (commit {commit}; "
         f"`cat /proc/loadavg` before: {load}; 2 shared cores, so CPU time is given).", "",
         f"Recordings of FSDD clips as in \"Audio: long recordings\": {len(args.speakers.split(','))} speakers x "
         f"{', '.join(str(m) for m in minutes)} min, each from its own third of the speaker's clips, FLAC 8 kHz. "
         f"Excerpts: {args.per_length} per recording and length, cut at random offsets, -6..+6 dB, Ogg Vorbis. "
         "**before**: `AudioCheck(probes=0)`, the middle 120 s of a long file only (the check as it was); "
         "**after**: the defaults, the middle 120 s and 30 probes of 5 s spread over the file, a probe looked "
         "for inside the other file's block (`duplicates.fingerprint`).", "",
         "Excerpts linked with their recording (linked / excerpts; after: in brackets the excerpts whose block "
         "(all of it, or its middle 120 s) holds one of the recording's probes whole, the bound by design: "
         "the spacing of the probes is the recording's length / 30, 20 s for 10 min, 62 s for 30 min, 124 s "
         "for 60 min):", "",
         "| excerpt length | " + " | ".join(f"{m} min: before | {m} min: after" for m in minutes) + " |",
         "|---|" + "---|" * (2 * len(minutes))]
    by = {m["name"]: m for m in modes}
    for sec in lengths:
        cells = []
        for m in minutes:
            for name in ("before", "after"):
                xs = [p for p in by[name]["pos"] if p["seconds"] == sec and p["minutes"] == m]
                held = f" ({sum(p['holds'] for p in xs)})" if name == "after" else ""
                cells.append(f"{sum(p['linked'] for p in xs)}/{len(xs)}{held}")
        L.append(f"| {sec} s | " + " | ".join(cells) + " |")
    for name in ("before", "after"):
        xs = [p["linked"] for p in by[name]["pos"]]
        L.append("")
        L.append(f"All excerpts, {name}: **{sum(xs)}/{len(xs)}**.")
    L += ["", "False links (`highest correlation`: the blocks', and after also the best probe's, over every "
          "unlinked pair) and cost (`prepare`: the fingerprint of a recording, read at 8 kHz by seeking; per pair: "
          "`verify` of two prepared files):", "",
          "| check | excerpt vs another recording (same speaker) | recording vs recording | FSDD clip vs the "
          "speaker's other recordings | highest correlation among them | prepare a recording, CPU s | "
          "fingerprint MB | CPU ms per pair: excerpt vs its recording / vs another / recording vs recording |",
          "|---|---|---|---|---|---|---|---|"]
    for m in modes:
        neg = m["neg"]
        same = [n for n in neg if n["same_speaker"]]
        hi = max([max(x["info"].get("ncc") or -1, x["info"].get("probe_ncc") or -1)
                  for x in neg + m["ll"] + m["clips"]], default=-1)
        L.append(f"| {m['name']} | {sum(n['linked'] for n in neg)}/{len(neg)} ({sum(n['linked'] for n in same)}/"
                 f"{len(same)}) | {sum(x['linked'] for x in m['ll'])}/{len(m['ll'])} | "
                 f"{sum(x['linked'] for x in m['clips'])}/{len(m['clips'])} | {hi:.3f} | {m['prep_cpu_s']:.3f} | "
                 f"{m['fp_mb']:.1f} | {m['pos_ms']:.0f} / {m['neg_ms']:.0f} / {m['ll_ms']:.0f} |")
    if mp3:
        L += ["", "MP3: the 10-minute recordings written as MP3 (libsndfile, LAME), their 10 excerpts of 30 s read by "
              "seeking, in a fresh process each; lines on stderr (of them libmpg123's \"part2_3_length ... too "
              "large for available bit count\"):", "",
              "| recording | soundfile seek + read | `load_audio_read` |", "|---|---|---|"]
        for s in dict.fromkeys(r["speaker"] for r in mp3):
            a = next(r for r in mp3 if r["speaker"] == s and r["how"] == "soundfile")
            b = next(r for r in mp3 if r["speaker"] == s and r["how"] == "load_audio_read")
            L.append(f"| {s} | {a['lines']} ({a['reservoir']}) | {b['lines']} ({b['reservoir']}) |")
    return "\n".join(L) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/audio2-bench")
    ap.add_argument("--speakers", default="george,jackson,nicolas,theo")
    ap.add_argument("--minutes", default="10,30,60")
    ap.add_argument("--lengths", default="10,30,60,120,300")
    ap.add_argument("--per-length", type=int, default=4)
    ap.add_argument("--clips", type=int, default=50)
    ap.add_argument("--mp3", default="george,theo")
    _results.add_common_args(ap)
    args = ap.parse_args()
    from mediacluster.duplicates.fingerprint import AudioCheck

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    load = _results.proc_loadavg()
    speakers = [s for s in args.speakers.split(",") if s]
    minutes = [int(m) for m in args.minutes.split(",")]
    lengths = [int(x) for x in args.lengths.split(",")]
    voices = fsdd_voices()
    longs, excerpts, shorts = make(voices, work, speakers, minutes, lengths, args.per_length, args.clips)
    modes = []
    for name, check in (("before", AudioCheck(probes=0)), ("after", AudioCheck())):
        modes.append(run_mode(name, check, longs, excerpts, shorts))
        m = modes[-1]
        print(name, sum(p["linked"] for p in m["pos"]), len(m["pos"]), sum(n["linked"] for n in m["neg"]),
              f"{m['prep_cpu_s']:.3f}", f"{m['pos_ms']:.0f} {m['neg_ms']:.0f} {m['ll_ms']:.0f}", file=sys.stderr)
    mp3 = mp3_lines(voices, work, [s for s in args.mp3.split(",") if s])
    _results.publish(SECTION, markdown(args, load, _results.commit(), modes, mp3, lengths, minutes), args.write)


if __name__ == "__main__":
    main()
