"""Build a meme scrape for the memetrack walkthrough (benchmarks/RESULTS.md, "Meme templates
through a scrape").

Templates are shared-set images (Imagenette photos, OpenMoji drawings flattened on white);
a *variant* is a template with its own caption drawn over it (Pillow ImageDraw); a *post* shows
a variant as posted: the variant's file itself (an exact repost: another post naming the same
file), or a re-encoded, resized or cropped copy of it (a file of its own). Timestamps spread
over weeks, with a few templates growing. ``posts.csv`` holds the researcher's columns
(``post_id, file_name, timestamp, platform, like_count, author_hash``) with what real scrapes
have: rows naming files that were never downloaded, one post id written twice, and files no row
names.

Two months: ``OUT/m1`` (weeks 0-5) and ``OUT/m2`` (weeks 0-9: every file of m1, same names and
bytes, plus the new weeks' posts and two new templates).

    python benchmarks/memetrack_scrape.py --out /tmp/memetrack --seed 0
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

DATA = Path(os.environ.get("MEDIACLUSTER_DATA", "/work/data"))
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
WORDS = ("when the", "me after", "nobody:", "my code", "monday", "that feeling", "pov:", "cat",
         "deadline", "tax season", "reviewer 2", "coffee", "the wifi", "weekend", "boss",
         "me explaining", "literally", "sleep", "vibes", "again", "no one", "my brain")
START = datetime(2026, 9, 7, tzinfo=UTC)  # a Monday


def templates(rng: random.Random, n_photo: int, n_drawn: int, skip: int = 0) -> list[tuple]:
    """(name, genre, image): photos from distinct Imagenette classes, drawings from distinct
    OpenMoji groups; ``skip`` passes over the first ones (month 2's new templates)."""
    out = []
    classes = sorted(os.listdir(DATA / "imagenette/val"))
    for c in classes[skip:skip + n_photo]:
        f = sorted(os.listdir(DATA / "imagenette/val" / c))[0]
        im = Image.open(DATA / "imagenette/val" / c / f).convert("RGB")
        out.append((f"photo-{c}", "photo", im))
    groups = [g for g in sorted(os.listdir(DATA / "openmoji/groups")) if "extras" not in g]
    for g in groups[skip:skip + n_drawn]:
        f = sorted(os.listdir(DATA / "openmoji/groups" / g))[3]
        rgba = Image.open(DATA / "openmoji/groups" / g / f).convert("RGBA")
        im = Image.new("RGB", rgba.size, "white")
        im.paste(rgba, mask=rgba.split()[3])
        out.append((f"drawn-{g.split()[0].lower()}", "drawn", im))
    return out


def captioned(im: Image.Image, top: str, bottom: str) -> Image.Image:
    im = im.copy()
    w = 400
    im = im.resize((w, round(im.height * w / im.width)))
    d = ImageDraw.Draw(im)
    font = ImageFont.truetype(FONT, 30)
    for text, y in ((top, 8), (bottom, im.height - 44)):
        tw = d.textlength(text, font=font)
        d.text(((w - tw) / 2, y), text, font=font, fill="white", stroke_width=2, stroke_fill="black")
    return im


def repost(im: Image.Image, kind: str) -> Image.Image:
    if kind == "resize":
        return im.resize((im.width * 3 // 5, im.height * 3 // 5))
    if kind == "crop":
        dx, dy = im.width // 12, im.height // 12
        return im.crop((dx, dy, im.width - dx, im.height - dy))
    return im  # "jpeg": the same pixels saved at a lower quality


def build(out: Path, seed: int) -> dict:
    rng = random.Random(seed)
    base = templates(rng, 6, 6)
    new = templates(rng, 1, 1, skip=6)  # month 2 only
    growing = {base[0][0], base[6][0], base[3][0]}
    rows: list[dict] = []  # every post of both months, with its week
    files: dict[str, tuple[Image.Image, str]] = {}  # file name -> (image, format quality)
    truth: dict[str, tuple[str, str, int]] = {}  # file name -> (template, genre, variant)
    post_no = 0
    for t_index, (name, genre, im) in enumerate(base + new):
        is_new = t_index >= len(base)
        n_var = rng.randint(3, 6)
        for v in range(n_var):
            top, bottom = rng.sample(WORDS, 2)
            var = captioned(im, top, bottom)
            vfile = f"{name}-v{v}.jpg"
            files[vfile] = (var, "q90")
            truth[vfile] = (name, genre, v)
            for week in range(6 if is_new else 0, 10):
                # a growing template posts more each week; the others a steady trickle
                lam = (0.3 + 0.45 * week) if name in growing else 0.6
                n = sum(rng.random() < lam / 3 for _ in range(3)) + (week >= 6 and is_new)
                for _ in range(n):
                    kind = rng.choice(["same", "same", "jpeg", "resize", "crop"])
                    if kind == "same":
                        f = vfile
                    else:
                        f = f"{name}-v{v}-{kind}-{post_no}.jpg"
                        files[f] = (repost(var, kind), "q35" if kind == "jpeg" else "q85")
                        truth[f] = (name, genre, v)
                    ts = START + timedelta(weeks=week, seconds=rng.randint(0, 7 * 86400 - 1))
                    rows.append({
                        "post_id": f"p{post_no:05d}", "file_name": f"images/{f}",
                        "timestamp": ts.isoformat(), "platform": rng.choice(["reddit", "x", "instagram"]),
                        "like_count": int(rng.paretovariate(1.2) * 10),
                        "author_hash": hashlib.blake2b(str(rng.randint(0, 400)).encode(), digest_size=6).hexdigest(),
                        "_week": week,
                    })
                    post_no += 1
    rng.shuffle(rows)
    rows.sort(key=lambda r: r["timestamp"])
    stats = {}
    for month, last_week in (("m1", 5), ("m2", 9)):
        d = out / month
        (d / "images").mkdir(parents=True, exist_ok=True)
        mrows = [dict(r) for r in rows if r["_week"] <= last_week]
        used = {r["file_name"][len("images/"):] for r in mrows}
        # a file no row names: downloaded, its post row lost
        orphan = sorted(f for f in files if f not in used and "-v0" in f)[:1]
        if not orphan:
            orphan = [f"{base[1][0]}-v0-orphan.jpg"]
            files[orphan[0]] = (captioned(base[1][2], "orphan", "file"), "q90")
            truth[orphan[0]] = (base[1][0], base[1][1], 0)
        for f in sorted(used | set(orphan)):
            im, q = files[f]
            p = d / "images" / f
            if not p.exists():
                im.save(p, quality=int(q[1:]))
        # rows whose file was never downloaded, and one post id written twice (a re-scrape)
        missing = [{**mrows[i], "post_id": f"x{i:04d}", "file_name": f"images/never-downloaded-{i}.jpg"}
                   for i in (3, 10)]
        dup = dict(mrows[7])
        dup["like_count"] = dup["like_count"] + 5  # the second scrape saw more likes
        mrows = mrows + missing + [dup]
        with open(d / "posts.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, ["post_id", "file_name", "timestamp", "platform", "like_count", "author_hash"],
                               extrasaction="ignore")
            w.writeheader()
            w.writerows(mrows)
        with open(d / "truth.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["file_name", "template", "genre", "variant"])
            for f in sorted(used | set(orphan)):
                w.writerow([f"images/{f}", *truth[f]])
        stats[month] = {"posts": len(mrows), "files": len(used) + len(orphan),
                        "templates": len({truth[f][0] for f in used}), "orphans": orphan}
    return stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/memetrack"))
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(build(a.out, a.seed))


if __name__ == "__main__":
    main()
