"""Audio reposts padded with silence or made louder: does the duplicate search still link them?

A clip re-uploaded is often padded (a platform's or editor's 1-3 s of silence before and after
it) or loudness-normalised (made louder to a target level, its peaks held under full scale by a
limiter). FSDD (3,000 clips of one spoken digit, 0.3-1 s each) is the collection; ``--clips``
originals drawn at random (seeded) are reposted three ways:

* ``pad``: 1-3 s of digital silence in all, split at random between the two ends;
* ``louder``: normalised to an RMS of ``--target-dbfs`` (-14 dBFS, a streaming platform's
  level), the peaks soft-limited (tanh above 0.5), so a quiet clip is both louder and compressed;
* ``pad+mp3``: padded, then MP3 (libsndfile);
* ``louder+pad+mp3``: made louder (its level measured on the clip, as a gated loudness meter
  ignores silence), padded, then MP3.

Measured, as ``audio_reposts.py`` measures the other edits: the check alone
(``fingerprint.AudioVerifier``: each repost against its original, and every pair of different
takes of the same speaker and digit among the sampled originals' takes, the hardest negatives);
the whole path (``collect`` -> ``embed_collection`` (mfcc) -> ``find_in_embeddings``, what
``cluster --media audio --dedup`` and ``dups`` run) on the 3,000 originals plus the reposts:
reposts grouped with their original, the original's rank among the repost's vector neighbours,
originals grouped with another original (false pairs); CPU seconds.

    python benchmarks/audio_padded.py [--clips 50] [--seed 0] [--work /tmp/dupsloose/padded] [--write]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402  (RESULTS.md's sections, the commit measured)
from audio_loop import _read, _write  # noqa: E402  (the loop's way of reading and writing a clip)
from audio_reposts import same_take_pairs, take, working_copy  # noqa: E402  (FSDD's takes, the working copy)

SECTION = "## Duplicates: padded and louder audio reposts (dupsloose helper)"
KINDS = ("pad", "louder", "pad+mp3", "louder+pad+mp3")


def _pad(y: np.ndarray, sr: int, rng) -> np.ndarray:
    total = int(sr * rng.uniform(1.0, 3.0))
    a = int(rng.integers(0, total + 1))
    return np.concatenate([np.zeros(a, y.dtype), y, np.zeros(total - a, y.dtype)])


def _louder(y: np.ndarray, target_dbfs: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(y.astype(np.float64) ** 2))) or 1e-4
    z = y * (10 ** (target_dbfs / 20) / rms)
    knee = 0.5  # a soft limiter: linear below the knee, tanh above it, never past full scale
    over = np.abs(z) > knee
    z[over] = np.sign(z[over]) * (knee + (1 - knee) * np.tanh((np.abs(z[over]) - knee) / (1 - knee)))
    return z.astype(np.float32)


def make_reposts(files: list[Path], out: Path, clips: int, seed: int, target_dbfs: float) -> list[dict]:
    """Each of ``clips`` originals (seeded) reposted every way of :data:`KINDS`."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in rng.choice(len(files), clips, replace=False):
        src = files[int(k)]
        y, sr = _read(src)
        for kind in KINDS:
            stem = out / f"repost_{kind.replace('+', '-')}_{src.stem}"
            if kind == "pad":
                dst = _write(stem.with_suffix(".wav"), _pad(y, sr, rng), sr)
            elif kind == "louder":
                dst = _write(stem.with_suffix(".wav"), _louder(y, target_dbfs), sr)
            else:
                z = _pad(_louder(y, target_dbfs) if kind.startswith("louder") else y, sr, rng)
                dst = _write(stem.with_suffix(".mp3"), z, sr, format="MP3", subtype="MPEG_LAYER_III")
            rows.append({"path": dst, "of": src, "kind": kind})
    return rows


def check_alone(files: list[Path], reposts: list[dict]) -> dict:
    from mediacluster.duplicates.fingerprint import AudioCheck, AudioVerifier

    check = AudioCheck()
    v = AudioVerifier(check, cache_bytes=2**31)
    pos: dict[str, list[float]] = {}
    t = time.process_time()
    for r in reposts:
        pos.setdefault(r["kind"], []).append(v.verify(r["of"], r["path"])[1].get("ncc", -1.0))
    fp_cpu = time.process_time() - t
    sampled = {take(Path(r["of"])) for r in reposts}
    neg, pair_cpu = same_take_pairs(v, files, sampled)
    return {"min_ncc": check.min_ncc, "pos": {k: np.asarray(x) for k, x in pos.items()},
            "neg": neg, "takes": len({take(p) for p in files} & sampled),
            "pair_cpu_ms": 1000 * pair_cpu / max(1, len(neg)),
            "repost_cpu_ms": 1000 * fp_cpu / max(1, len(reposts))}


def whole_path(coll: Path, files: list[Path], reposts: list[dict]) -> dict:
    from audio_reposts import whole_path as measured

    return measured(coll, files, reposts, None)


def render(a: dict, w: dict, cmd: str, load: str, commit: str, clips: int, target: float) -> str:
    thr = a["min_ncc"]
    neg = a["neg"]
    lines = [SECTION, "",
             f"`{cmd}` (commit {commit}; `cat /proc/loadavg` before: {load}; 2 shared cores).", "",
             f"{clips} FSDD clips drawn at random, each reposted {len(KINDS)} ways: `pad` (1-3 s of digital silence "
             f"split at random between the ends), `louder` (RMS normalised to {target:g} dBFS, peaks soft-limited: "
             "tanh above 0.5), `pad+mp3`, `louder+pad+mp3` (the level measured on the clip, as a gated loudness meter ignores silence). Whole path on the 3,000 FSDD clips plus the reposts.", "",
             "| repost kind | check alone: correlation to its original, min / median | linked by the check "
             f"| whole path: grouped with its original | original among the repost's {w['n_neighbors']} nearest vectors |",
             "|---|---|---|---|---|"]
    k = 0
    for kind in KINDS:
        x = a["pos"][kind]
        r = w["recall"][kind]
        ranks = w["rank"][k:k + len(r)]
        k += len(r)
        lines.append(f"| {kind} | {x.min():.3f} / {np.median(x):.3f} | {int((x >= thr).sum())}/{len(x)} "
                     f"| {sum(r)}/{len(r)} | {int((ranks <= w['n_neighbors']).sum())}/{len(r)} |")
    tot = sum(sum(r) for r in w["recall"].values())
    n_all = sum(len(r) for r in w["recall"].values())
    lines += ["", f"All reposts grouped with their original: **{tot}/{n_all}**.", "",
              f"Hardest negatives, the check alone: every pair of different takes of the {a['takes']} sampled "
              f"speaker-digit pairs, {len(neg):,} pairs: correlation median {np.median(neg):.3f}, 99.9th percentile "
              f"{np.percentile(neg, 99.9):.4f}, max {neg.max():.4f}; **{int((neg >= thr).sum())} false links** at {thr}.",
              "",
              f"Whole path: {w['items']:,} clips, {w['verified']:,} candidate pairs checked; originals grouped with "
              f"another original: {w['originals_in_false_groups']} (false pairs {w['false_pairs']}, of them the same "
              f"speaker and digit {w['false_same_take']}). Duplicate search {w['cpu']:.1f} CPU s ({w['wall']:.1f} s "
              f"wall), {1000 * w['cpu'] / w['items']:.1f} CPU ms per clip; the check alone "
              f"{a['repost_cpu_ms']:.2f} CPU ms per repost pair (both fingerprints made), "
              f"{a['pair_cpu_ms']:.2f} CPU ms per pair of cached fingerprints."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.path.join(os.environ.get("MEDIACLUSTER_DATA", "/work/data"), "fsdd/recordings"))
    ap.add_argument("--work", default="/tmp/dupsloose/padded")
    ap.add_argument("--clips", type=int, default=50, help="originals reposted")
    ap.add_argument("--target-dbfs", type=float, default=-14.0, help="the louder copies' RMS level")
    ap.add_argument("--check-only", action="store_true", help="the check alone, not the whole path")
    _results.add_common_args(ap, seed=True)
    args = ap.parse_args(argv)
    load = _results.proc_loadavg()
    coll, originals = working_copy(args.data, args.work)
    originals = [p for p in originals if not p.name.startswith("repost_")]
    reposts = make_reposts(originals, coll, args.clips, args.seed, args.target_dbfs)
    print(f"{len(originals)} originals, {len(reposts)} reposts in {coll}", flush=True)
    a = check_alone(originals, reposts)
    for kind, x in a["pos"].items():
        print(f"check alone {kind}: linked {int((x >= a['min_ncc']).sum())}/{len(x)}, min {x.min():.3f}", flush=True)
    print(f"hard negatives {len(a['neg'])}: max {a['neg'].max():.4f}, >= thr {int((a['neg'] >= a['min_ncc']).sum())}",
          flush=True)
    if args.check_only:
        return 0
    w = whole_path(coll, originals, reposts)
    text = render(a, w, _results.command("audio_padded.py", argv), load, _results.commit(), args.clips,
                  args.target_dbfs)
    _results.publish(SECTION, text, args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
