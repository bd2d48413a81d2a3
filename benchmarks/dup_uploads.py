"""A new upload's ``duplicate_of``: does the model's duplicate index find re-posts, as ``dups`` does?

``DuplicateIndex.query`` is what ``assign`` and the service (``/v1/assign``'s ``duplicate_of``)
ask of a model saved with ``--dedup``. Its candidates, per new item: the exact content hash;
for images every stored perceptual hash (within the radius, thumbnails agreeing) and the
``n_neighbors`` nearest vectors (geometric check); for audio the nearest vectors and, since
the inbox2 helper, the ``finder.AUDIO_PROFILE_NEIGHBORS`` nearest spectrum profiles (the
``dups`` finder's second source), each confirmed by the fingerprint check.

* audio: FSDD (3,000 clips); ``--clips`` originals reposted four ways (``audio_padded.py``:
  pad, louder, pad+mp3, louder+pad+mp3); ``--held`` other originals are left out of the index
  and queried as the false-pair probe (another take of a word by the same speaker is the
  hardest negative); the index (mfcc vectors, ``find_in_embeddings`` -> ``finder.index()``)
  over the rest. Queried with and without the stored profiles (``before``: the index as
  ``main`` builds it, vectors only).
* images: Imagenette val, the default encoder's vectors from ``--vectors``; ``--clips``
  originals reposted four ways (half size, JPEG quality 30, a centre crop of 80 %, crop +
  half size + quality 50), ``--held`` others left out; queried with the perceptual hashes
  (as the index has always done) and without them (vectors only).

    flock /tmp/mc-bench.lock python benchmarks/dup_uploads.py [--clips 50] [--held 200] [--work /tmp/inbox2/dupup]

Prints one table (markdown) to stdout; bounded by the counts given.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402
from audio_padded import make_reposts  # noqa: E402  (the four audio repost kinds)
from audio_reposts import take  # noqa: E402  (speaker and digit of an FSDD file)


def _embed(paths: list[Path], encoder: str | None, cache: str | None):
    from mediacluster.data import Collection
    from mediacluster.embed import embed_collection

    media = "audio" if encoder == "mfcc" else "image"
    coll = Collection(ids=[str(p) for p in paths], paths=[str(p) for p in paths], media=media)
    return embed_collection(coll, encoder=encoder, cache_dir=cache, progress=False)


def _query(index, paths, vectors) -> tuple[list, float]:
    t = time.process_time()
    near = index.nearest(vectors) if index.vectors is not None else None
    out = [index.query(path=str(p), vector=vectors[k], near=None if near is None else (near[0][k], near[1][k]))
           for k, p in enumerate(paths)]
    return out, 1000 * (time.process_time() - t) / max(1, len(paths))


def _score(rows, matches, held, held_matches, same=None) -> dict:
    by_kind: dict[str, list[int]] = {}
    for r, m in zip(rows, matches):
        by_kind.setdefault(r["kind"], []).append(int(m is not None and m.id == str(r["of"])))
    false = [(p, m) for p, m in zip(held, held_matches) if m is not None]
    return {"kinds": {k: (sum(v), len(v)) for k, v in by_kind.items()},
            "false": len(false), "false_same": sum(1 for p, m in false if same is not None and same(p, Path(m.id)))}


def audio(args) -> list[tuple[str, dict, float]]:
    from mediacluster.duplicates.collection import find_in_embeddings

    files = sorted(Path(args.fsdd).glob("*.wav"))
    if args.audio_files:
        files = [files[int(k)] for k in sorted(np.random.default_rng(args.seed).choice(
            len(files), min(args.audio_files, len(files)), replace=False))]
    work = Path(args.work) / "audio"
    shutil.rmtree(work, ignore_errors=True)
    (work / "reposts").mkdir(parents=True)
    reposts = make_reposts(files, work / "reposts", args.clips, args.seed, -14.0)
    reposted = {str(r["of"]) for r in reposts}
    rng = np.random.default_rng(args.seed + 1)
    others = [p for p in files if str(p) not in reposted]
    held = [others[int(k)] for k in rng.choice(len(others), args.held, replace=False)]
    held_set = {str(p) for p in held}
    indexed = [p for p in files if str(p) not in held_set]
    emb = _embed(indexed, "mfcc", args.cache)
    t = time.process_time()
    finder = find_in_embeddings(emb, media="audio", progress=False)
    fit_s = time.process_time() - t
    index = finder.index()
    q = _embed([r["path"] for r in reposts] + held, "mfcc", args.cache)
    out = []
    for label, profiles in (("vectors only (before)", False), ("vectors + spectrum profiles (after)", True)):
        saved = index.profiles
        if not profiles:
            index.profiles = None
        m, ms = _query(index, [r["path"] for r in reposts] + held, q.vectors)
        index.profiles = saved
        out.append((label, _score(reposts, m[:len(reposts)], held, m[len(reposts):],
                                  same=lambda a, b: take(a) == take(b)), ms))
    print(f"audio: index of {len(indexed)} clips ({fit_s:.1f} CPU s for the finder), "
          f"{len(reposts)} reposts, {len(held)} held-out originals", flush=True)
    return out


def _jpeg(im, quality: int) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _crop(im, share: float):
    w, h = im.size
    dw, dh = int(w * (1 - share) / 2), int(h * (1 - share) / 2)
    return im.crop((dw, dh, w - dw, h - dh))


def images(args) -> list[tuple[str, dict, float]]:
    from PIL import Image

    from mediacluster.duplicates.collection import find_in_rows

    z = np.load(args.vectors, allow_pickle=False)
    ids = [str(x) for x in z["ids"]]
    rng = np.random.default_rng(args.seed)
    pick = rng.choice(len(ids), args.index + args.held, replace=False)
    idx_rows, held_rows = pick[:args.index], pick[args.index:]
    originals = idx_rows[:args.clips]
    work = Path(args.work) / "images"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    reposts = []
    for r in originals:
        src = Path(ids[int(r)])
        im = Image.open(src).convert("RGB")
        w, h = im.size
        edits = {"half size": _jpeg(im.resize((w // 2, h // 2)), 90), "jpeg q30": _jpeg(im, 30),
                 "crop 80%": _jpeg(_crop(im, 0.8), 90),
                 "crop + half + q50": _jpeg(_crop(im, 0.8).resize((int(w * 0.4), int(h * 0.4))), 50)}
        for kind, data in edits.items():
            dst = work / f"{kind.replace(' ', '_').replace('%', '').replace('+', '')}_{src.name}.jpg"
            dst.write_bytes(data)
            reposts.append({"path": dst, "of": src, "kind": kind})
    t = time.process_time()
    finder = find_in_rows(z["vectors"][idx_rows], [ids[int(r)] for r in idx_rows], [ids[int(r)] for r in idx_rows],
                          media="image", progress=False)
    fit_s = time.process_time() - t
    index = finder.index()
    held = [Path(ids[int(r)]) for r in held_rows]
    qv = np.concatenate([_embed([r["path"] for r in reposts], None, args.cache).vectors, z["vectors"][held_rows]])
    out = []
    for label, hashes in (("vectors only", False), ("vectors + perceptual hashes (as before and after)", True)):
        saved = index.hashes
        if not hashes:
            index.hashes = None
        m, ms = _query(index, [r["path"] for r in reposts] + held, qv)
        index.hashes = saved
        out.append((label, _score(reposts, m[:len(reposts)], held, m[len(reposts):],
                                  same=lambda a, b: a.parent.name == b.parent.name), ms))
    print(f"images: index of {len(idx_rows)} photos ({fit_s:.1f} CPU s for the finder), "
          f"{len(reposts)} reposts, {len(held)} held-out photos", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data = os.environ.get("MEDIACLUSTER_DATA", "/work/data")
    ap.add_argument("--fsdd", default=f"{data}/fsdd/recordings")
    ap.add_argument("--vectors", default="/work/vec/imagenette.npz", help="Imagenette val's default-encoder vectors")
    ap.add_argument("--work", default="/tmp/inbox2/dupup")
    ap.add_argument("--cache", default=None, help="the embedding cache (default: the user's)")
    ap.add_argument("--clips", type=int, default=50, help="originals reposted (each four ways)")
    ap.add_argument("--held", type=int, default=200, help="originals left out of the index (false-pair probe)")
    ap.add_argument("--audio-files", type=int, default=None, help="audio: this many FSDD clips drawn (default all)")
    ap.add_argument("--index", type=int, default=1000, help="images: photos in the index")
    _results.add_common_args(ap, write=False, seed=True)
    ap.add_argument("--only", choices=("audio", "images"), default=None)
    args = ap.parse_args(argv)
    load = _results.proc_loadavg()
    rows = []
    if args.only in (None, "audio"):
        rows += [("audio", *r) for r in audio(args)]
    if args.only in (None, "images"):
        rows += [("images", *r) for r in images(args)]
    kinds = []
    for _, _, s, _ in rows:
        kinds += [k for k in s["kinds"] if k not in kinds]
    print(f"\n`{_results.command('dup_uploads.py', argv)}` (commit {_results.commit()}; load before {load})\n")
    print("| media | candidates | " + " | ".join(kinds) + " | all reposts | held-out originals matched "
          "(same speaker-digit / class) | CPU ms per query |")
    print("|---|---|" + "---:|" * (len(kinds) + 3))
    for media, label, s, ms in rows:
        cells = [f"{s['kinds'][k][0]}/{s['kinds'][k][1]}" if k in s["kinds"] else "" for k in kinds]
        hit = sum(a for a, _ in s["kinds"].values())
        tot = sum(b for _, b in s["kinds"].values())
        print(f"| {media} | {label} | " + " | ".join(cells) + f" | **{hit}/{tot}** | {s['false']} ({s['false_same']}) | {ms:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
