"""Audio reposts: does ``dups`` / ``cluster --dedup`` link an edited copy of a clip to its original,
and never two different recordings?

FSDD (3,000 clips: 6 speakers x 10 digits x 50 takes) is the collection; a seeded sample of its
clips is reposted with every edit of ``audio_loop._repost`` (resample to 22.05 kHz, trim 10-20%
split between the ends, gain 4-10 dB up or down, noise 30 dB below the clip, stereo, Ogg
Vorbis; plus MP3, an exact copy and one chain: trim, then gain, then Ogg). Measured:

1. **the check alone** (``fingerprint.AudioVerifier`` at its defaults): each repost against its
   original (recall per edit), and every pair of different takes of the same speaker and digit
   (the hardest negatives: same voice, same word; FSDD has 50 takes of each), with the
   correlation's distribution, so the threshold can be read off;
2. **the whole path** (``collect`` -> ``embed_collection`` (mfcc, the default audio encoder,
   through the embedding cache) -> ``duplicates.collection.find_in_embeddings``, what
   ``cluster --media audio --dedup`` and ``dups`` run) on the 3,000 originals plus the reposts:
   per edit, the reposts grouped with their original; originals grouped with another original
   (false links; how many of them are the same speaker and digit); candidate pairs checked; the
   rank of the original among a repost's vector neighbours (the candidate stage's reach); CPU
   seconds of the duplicate search per clip (process time: every thread's);
3. optionally (``--chromaprint``, needs ``fpcalc``: Debian ``libchromaprint-tools``): how many
   clips Chromaprint fingerprints at all.

    python benchmarks/audio_reposts.py [--per-edit 40] [--seed 0] [--work /tmp/audioreposts] [--chromaprint] [--write]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402  (RESULTS.md's sections, the commit measured)
from audio_loop import EDITS, _repost  # noqa: E402  (the loop's way of making a repost)

SECTION = "## Duplicates: audio reposts (audioreposts helper)"
KINDS = ("exact", *EDITS, "mp3", "trim+gain+ogg")


#: what was measured and rejected on the way to the defaults (this script at earlier commits)
DESIGN = (
    "Design, measured with this script: the first fingerprint was a log-mel sequence (80 bands, the same "
    "alignment; commit ececad4, threshold 0.97, 10 candidates per clip): reposts grouped 338/360, but other takes "
    "of the same word reached correlation 0.985 (16 false links among the 73,500 hardest pairs; 11 false "
    "pairs among the 3,000 originals in the whole path). Mel bands blur the harmonics, which is where two takes "
    "of one speaker differ (pitch); the linear spectrogram (15.6 Hz bins) keeps them: 2 false links, max 0.971. "
    "Exploratory runs on the same reposts (not committed): on 800 of those pairs, 32 mel bands (32 ms window, "
    "3.8 kHz) reached 0.971, 64 and 96 bands (64 ms, 3 kHz) 0.959 and 0.949; on 18,000 pairs, 80 and 128 bands "
    "0.971 and 0.964 against the linear spectrogram's 0.953; with the linear one, a 30 dB floor let more of "
    "other takes through (max 0.968), a 50 dB floor cost the MP3 and noisy reposts (8 below 0.96), a "
    "1024-sample window blurred time (4 reposts below 0.96). The one trimmed repost the check misses (0.910) "
    "is a 0.25 s clip cut to 0.21 s: 20 frames, where the window's misalignment at the cut (the offset is not "
    "a multiple of the 10 ms hop) weighs. The reposts the whole path misses are the candidate stage's: their "
    "original is not among their 30 nearest MFCC vectors (100 neighbours would reach 357/360 at about three "
    "times the checks)."
)


def make_reposts(files: list[Path], out: Path, per_edit: int, seed: int) -> list[dict]:
    """``per_edit`` reposts of every kind, each of a different original (seeded)."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for kind in KINDS:
        for k in rng.choice(len(files), per_edit, replace=False):
            src = files[int(k)]
            stem = out / f"repost_{kind.replace('+', '-')}_{src.stem}"
            if kind == "trim+gain+ogg":
                a = _repost(src, out / f"_tmp_{src.stem}_a", "trim", rng)
                b = _repost(a, out / f"_tmp_{src.stem}_b", "gain", rng)
                dst = _repost(b, stem, "ogg", rng)
                a.unlink()
                b.unlink()
            else:
                dst = _repost(src, stem, kind, rng)
            rows.append({"path": dst, "of": src, "kind": kind})
    return rows


def take(p: Path) -> tuple[str, str]:
    digit, speaker, _ = p.stem.split("_")
    return digit, speaker


def check_alone(files: list[Path], reposts: list[dict]) -> dict:
    from mediacluster.duplicates.fingerprint import AudioCheck, AudioVerifier

    check = AudioCheck()
    v = AudioVerifier(check, cache_bytes=2**31)
    t = time.process_time()
    for p in files:
        v.prepared(p)
    fp_cpu = time.process_time() - t
    pos: dict[str, list[float]] = {}
    for r in reposts:
        pos.setdefault(r["kind"], []).append(v.verify(r["of"], r["path"])[1].get("ncc", -1.0))
    neg, pair_cpu = same_take_pairs(v, files)
    return {"min_ncc": check.min_ncc, "pos": {k: np.asarray(x) for k, x in pos.items()}, "neg": neg,
            "fp_cpu_per_clip": fp_cpu / len(files), "pair_cpu_ms": 1000 * pair_cpu / max(1, len(neg))}


def same_take_pairs(v, files: list[Path], takes: set | None = None) -> tuple[np.ndarray, float]:
    """The hardest negatives: the check's correlation (``v``, an ``AudioVerifier``) of every
    pair of different takes of one speaker and digit among ``files`` (``takes``: of these
    speaker-digit pairs only), and the CPU seconds of the comparisons."""
    by_take: dict[tuple, list[Path]] = {}
    for p in files:
        if takes is None or take(p) in takes:
            by_take.setdefault(take(p), []).append(p)
    neg = []
    t = time.process_time()
    for group in by_take.values():
        for a in range(len(group)):
            A = v.prepared(group[a])
            for b in range(a + 1, len(group)):
                neg.append(v.compare(A, v.prepared(group[b]))[1]["ncc"])
    return np.asarray(neg), time.process_time() - t


def working_copy(data: str | Path, work: str | Path) -> tuple[Path, list[Path]]:
    """FSDD's clips (``data``) copied into ``work``/collection, emptied first, where the reposts
    are written next to them; the folder and the copies, sorted."""
    files = sorted(Path(data).glob("*.wav"))
    if not files:
        raise SystemExit(f"no .wav files in {data}")
    shutil.rmtree(work, ignore_errors=True)
    coll = Path(work) / "collection"
    coll.mkdir(parents=True)
    for p in files:
        shutil.copyfile(p, coll / p.name)
    return coll, sorted(coll.glob("*.wav"))


def whole_path(coll: Path, files: list[Path], reposts: list[dict], workers: int | None) -> dict:
    from mediacluster.duplicates.collection import find_in_embeddings
    from mediacluster.embed import embed_collection
    from mediacluster.ingest import collect

    c = collect(str(coll), media="audio")
    t = time.process_time()
    emb = embed_collection(c, encoder="mfcc", workers=workers, progress=False)
    embed_cpu = time.process_time() - t
    t, w = time.process_time(), time.perf_counter()
    finder = find_in_embeddings(emb, media="audio", progress=False, workers=workers)
    cpu, wall = time.process_time() - t, time.perf_counter() - w
    row = {os.path.basename(p): k for k, p in enumerate(emb.paths)}
    labels = finder.labels_
    orig_rows = np.array([row[p.name] for p in files])
    out: dict = {"items": len(emb), "cpu": cpu, "wall": wall, "embed_cpu": embed_cpu,
                 "verified": int(finder.n_verified_), "groups": int(finder.n_groups_)}
    rec: dict[str, list[bool]] = {}
    rank: list[int] = []
    X = np.asarray(emb.vectors, np.float32)
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    for r in reposts:
        a, b = row[Path(r["path"]).name], row[Path(r["of"]).name]
        rec.setdefault(r["kind"], []).append(bool(labels[a] >= 0 and labels[a] == labels[b]))
        sims = X @ X[a]
        sims[a] = -np.inf
        rank.append(int((sims > sims[b]).sum()) + 1)
    out["recall"] = rec
    out["rank"] = np.asarray(rank)
    out["n_neighbors"] = finder.n_neighbors
    # originals grouped together: false links (each group of originals counts its pairs)
    og = labels[orig_rows]
    false_pairs = same_take = 0
    members: dict[int, list[int]] = {}
    for k, g in enumerate(og.tolist()):
        if g >= 0:
            members.setdefault(g, []).append(k)
    for ks in members.values():
        for x in range(len(ks)):
            for y in range(x + 1, len(ks)):
                false_pairs += 1
                same_take += take(files[ks[x]]) == take(files[ks[y]])
    out["false_pairs"], out["false_same_take"] = false_pairs, same_take
    out["originals_in_false_groups"] = sum(len(ks) for ks in members.values() if len(ks) > 1)
    return out


def chromaprint(files: list[Path], n: int, seed: int) -> dict | None:
    fpcalc = shutil.which("fpcalc")
    if fpcalc is None:
        return None
    rng = np.random.default_rng(seed)
    pick = [files[int(k)] for k in rng.choice(len(files), min(n, len(files)), replace=False)]
    empty = 0
    for p in pick:
        r = subprocess.run([fpcalc, "-raw", str(p)], capture_output=True, text=True)
        m = re.search(r"FINGERPRINT=([0-9,\-]+)", r.stdout)
        empty += m is None or not m.group(1).strip(",")
    version = subprocess.run([fpcalc, "-version"], capture_output=True, text=True).stdout.strip()
    return {"checked": len(pick), "empty": empty, "version": version}


def render(a: dict, w: dict, cp: dict | None, cmd: str, load: str, commit: str, files: int) -> str:
    neg, thr = a["neg"], a["min_ncc"]
    lines = [SECTION, "",
             f"`{cmd}` (commit {commit}; `cat /proc/loadavg` before: {load}; 2 shared cores, so CPU seconds, "
             "which load does not inflate, are given beside wall time).", "",
             f"FSDD, {files:,} clips (6 speakers x 10 digits x 50 takes), plus reposts of {len(a['pos']['exact'])} "
             "originals per kind, made by `audio_loop._repost` (the audio loop's edits) and MP3 through "
             "soundfile (libsndfile). Candidates: each clip's `n_neighbors` "
             f"({w['n_neighbors']}) nearest MFCC vectors; check: `fingerprint.AudioVerifier` "
             f"(log spectrograms, best normalised cross-correlation over time offsets, link at >= {thr}).", "",
             "| repost kind | check alone: correlation to its original, min / median | linked by the check "
             f"| whole path: grouped with its original | original among the repost's {w['n_neighbors']} nearest vectors |",
             "|---|---|---|---|---|"]
    ranks: dict[str, list[int]] = {}
    k = 0
    for kind in KINDS:
        n = len(w["recall"][kind])
        ranks[kind] = w["rank"][k:k + n].tolist()
        k += n
    for kind in KINDS:
        x = a["pos"][kind]
        r = w["recall"][kind]
        near = sum(v <= w["n_neighbors"] for v in ranks[kind])
        lines.append(f"| {kind} | {x.min():.3f} / {np.median(x):.3f} | {int((x >= thr).sum())}/{len(x)} "
                     f"| {sum(r)}/{len(r)} | {near}/{len(r)} |")
    tot = sum(sum(r) for r in w["recall"].values())
    n_all = sum(len(r) for r in w["recall"].values())
    reach = ", ".join(f"{k} nearest {int((w['rank'] <= k).sum())}" for k in (10, 20, 30, 50, 100))
    lines += ["", f"The candidate stage's reach (reposts whose original is among their nearest MFCC vectors): "
              f"{reach} of {len(w['rank'])}.", ""]
    lines += [f"All reposts grouped with their original: **{tot}/{n_all}** (exact bytes only before: "
              f"{sum(w['recall']['exact'])}/{n_all}).", "",
              f"Hardest negatives, the check alone: every pair of different takes of the same speaker and digit, "
              f"{len(neg):,} pairs: correlation median {np.median(neg):.3f}, 99th percentile "
              f"{np.percentile(neg, 99):.3f}, 99.9th {np.percentile(neg, 99.9):.4f}, max {neg.max():.4f}; "
              f"**{int((neg >= thr).sum())} false links** at {thr} "
              f"({', '.join(f'{int((neg >= t).sum())} at {t:.3f}' for t in (thr - 0.02, thr - 0.01, thr + 0.01))}); "
              f"reposts below {thr}: {', '.join(f'{k} {int((x < thr).sum())}' for k, x in a['pos'].items() if (x < thr).any()) or 'none'}"
              f" (at {thr - 0.01:.3f}: {sum(int((x < thr - 0.01).sum()) for x in a['pos'].values())}, "
              f"at {thr + 0.01:.3f}: {sum(int((x < thr + 0.01).sum()) for x in a['pos'].values())}).", "",
              f"Whole path on {w['items']:,} clips ({files:,} originals + {n_all} reposts): {w['verified']:,} "
              f"candidate pairs checked, {w['groups']} groups; originals grouped with another original: "
              f"{w['originals_in_false_groups']} (pairs of originals in one group: {w['false_pairs']}, of them the "
              f"same speaker and digit: {w['false_same_take']}).", "",
              f"Cost: the duplicate search (`find_in_embeddings`, fingerprints included) {w['cpu']:.1f} CPU s "
              f"({w['wall']:.1f} s wall), **{1000 * w['cpu'] / w['items']:.1f} CPU ms per clip**; a fingerprint "
              f"{1000 * a['fp_cpu_per_clip']:.1f} CPU ms per clip (decode at 8 kHz + STFT), a pair comparison "
              f"{a['pair_cpu_ms']:.2f} CPU ms; for scale, the MFCC embedding of the same clips "
              f"{w['embed_cpu']:.1f} CPU s (through the shared embedding cache, so mostly cache reads)."]
    lines += ["", DESIGN]
    if cp is not None:
        lines += ["", f"Chromaprint ({cp['version']}): `fpcalc -raw` gave an empty fingerprint for "
                  f"**{cp['empty']}/{cp['checked']}** FSDD clips drawn at random (it needs seconds of audio; "
                  "a spoken digit lasts 0.3-1 s), so it cannot decide these pairs."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.path.join(os.environ.get("MEDIACLUSTER_DATA", "/work/data"), "fsdd/recordings"))
    ap.add_argument("--work", default="/tmp/audioreposts")
    ap.add_argument("--per-edit", type=int, default=40, help="originals reposted per edit kind")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--chromaprint", action="store_true", help="also count the clips fpcalc fingerprints")
    _results.add_common_args(ap, seed=True)
    args = ap.parse_args(argv)
    load = _results.proc_loadavg()
    coll, originals = working_copy(args.data, args.work)
    reposts = make_reposts(originals, coll, args.per_edit, args.seed)
    print(f"{len(originals)} originals, {len(reposts)} reposts in {coll}", flush=True)
    a = check_alone(originals, reposts)
    print(f"check alone: {len(a['neg']):,} hard-negative pairs, max {a['neg'].max():.4f}", flush=True)
    w = whole_path(coll, originals, reposts, args.workers)
    cp = chromaprint(originals, 200, args.seed) if args.chromaprint else None
    text = render(a, w, cp, _results.command("audio_reposts.py", argv), load, _results.commit(), len(originals))
    _results.publish(SECTION, text, args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
