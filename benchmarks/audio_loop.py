"""The whole loop on audio, as a team with voice messages runs it, through the product's interfaces.

A collection drawn from FSDD (seeded): spoken digits of five speakers in skewed shares (digit 0
and the first speaker common, the last digits and speakers rare), a junk kind (synthetic beeps,
as voicemail tones), clips converted to other containers and encodings (48 kHz stereo 24-bit,
8-bit, FLAC, Ogg, MP3, a unicode file name), "reposts" of some clips made with numpy / scipy /
soundfile (another sample rate, trimmed 10-20%, gain, a little noise, stereo, Ogg), and hostile
files (empty, truncated, text named .wav, silent, ten minutes long). Held out as *new uploads*:
unseen clips of the same speakers and digits, reposts of collection clips (the same edits, and
exact copies), and clips of kinds the collection lacks (a sixth speaker, synthetic chirps).

Then, through the CLI and real HTTP only (the helpers the loops share, ``_loop.py``):

1. ``mediacluster cluster COLL --out RUN --media audio --dedup --report --save-model``; every
   hostile file clustered or listed as skipped with its reason; the report's players checked
2. ``mediacluster serve RUN`` (v0001): every upload posted as bytes, one request each
3. ``mediacluster studio RUN``: a member of a cluster opened in headless Chromium (does its
   ``<audio>`` play?), then curated through the page's HTTP API (split the mixed clusters,
   merge the clusters of one kind, junk the beeps, rename each cluster after its kind), publish
4. the service switched (``POST /v1/reload``), the uploads posted again, ``/v1/clusters``
5. a second curated version (a rename, one more junk cluster) switched to by the LATEST watch;
   the uploads posted a third time: the answers follow
6. ``tags train --run RUN`` on the curated clusters and ``tags suggest`` on the uploads

    python benchmarks/audio_loop.py --work /tmp/audioday [--kind speaker|digit] [--encoder mfcc] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _loop  # noqa: E402  (what the loops share: processes, uploads, curation, the browser)
import _results  # noqa: E402  (RESULTS.md's sections, the commit measured)

SECTION = "## End to end: an audio collection (audioday helper)"
SPEAKERS = ("jackson", "george", "nicolas", "theo", "yweweler")  # most common first
NEW_SPEAKER = "lucas"  # a kind the collection lacks
JUNK_KIND = "beeps"
EDITS = ("resample", "trim", "gain", "noise", "stereo", "ogg")
HOSTILE = {  # file -> what the run must do with it
    "empty.wav": "skipped", "truncated.wav": "skipped", "notes.wav": "skipped", "silence.wav": "skipped",
    "ten_minutes.wav": "skipped or clustered",
}
FORMATS = ("48k-stereo-24bit.wav", "8bit.wav", "clip.flac", "clip.ogg", "clip.mp3", "Ünïcødé клип 🎵.wav")


# ----------------------------------------------------------------------------- the collection
def _read(p):
    import soundfile as sf

    y, sr = sf.read(p, dtype="float32", always_2d=False)
    return y, sr


def _write(dst: Path, y, sr, **kw):
    import soundfile as sf

    sf.write(dst, y, sr, **kw)
    return dst


def _repost(src: Path, dst_stem: Path, edit: str, rng: np.random.Generator) -> Path:
    from scipy.signal import resample_poly

    y, sr = _read(src)
    if edit == "exact":
        dst = dst_stem.with_suffix(src.suffix)
        shutil.copyfile(src, dst)
        return dst
    if edit == "resample":  # re-encoded at 22.05 kHz
        return _write(dst_stem.with_suffix(".wav"), resample_poly(y, 441, 160).astype(np.float32), 22050)
    if edit == "trim":  # 10-20% of the clip cut away, split at random between its ends
        cut = int(len(y) * rng.uniform(0.10, 0.20))
        a = int(rng.integers(0, cut + 1))
        return _write(dst_stem.with_suffix(".wav"), y[a:len(y) - (cut - a)], sr)
    if edit == "gain":  # 4-10 dB louder or quieter
        g = 10 ** (rng.choice([-1, 1]) * rng.uniform(4, 10) / 20)
        return _write(dst_stem.with_suffix(".wav"), np.clip(y * g, -1, 1), sr)
    if edit == "noise":  # white noise 30 dB below the clip's RMS
        rms = float(np.sqrt(np.mean(y ** 2))) or 1e-3
        return _write(dst_stem.with_suffix(".wav"), np.clip(y + rng.standard_normal(len(y)).astype(np.float32)
                                                              * rms * 10 ** (-30 / 20), -1, 1), sr)
    if edit == "stereo":
        return _write(dst_stem.with_suffix(".wav"), np.stack([y, 0.8 * y], axis=1), sr)
    if edit == "ogg":
        return _write(dst_stem.with_suffix(".ogg"), y, sr, format="OGG", subtype="VORBIS")
    if edit == "mp3":  # not in EDITS (this loop's figures stay as they were); audio_reposts.py uses it
        return _write(dst_stem.with_suffix(".mp3"), y, sr, format="MP3", subtype="MPEG_LAYER_III")
    raise ValueError(edit)


def _tone(rng, sr=8000, chirp=False) -> np.ndarray:
    t = np.arange(int(sr * rng.uniform(0.4, 1.0))) / sr
    if chirp:
        f0, f1 = rng.uniform(200, 500), rng.uniform(2000, 3500)
        y = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * t[-1])))
    else:
        f = rng.choice([440.0, 697.0, 852.0, 941.0, 1209.0, 1336.0])
        y = np.sin(2 * np.pi * f * t) * (1 + (rng.random() < 0.5) * np.sin(2 * np.pi * rng.uniform(5, 15) * t)) / 2
    fade = np.minimum(1, np.minimum(t, t[-1] - t) / 0.02)
    return (0.5 * y * fade + 0.003 * rng.standard_normal(len(t))).astype(np.float32)


def build(data: Path, work: Path, scale: float, seed: int) -> dict:
    """Write the collection and the new uploads under ``work``; return the truth tables."""
    from scipy.signal import resample_poly

    rng = np.random.default_rng(seed)
    coll, up = _loop.fresh_folders(work)
    cells: dict[tuple[int, str], list[Path]] = {}
    for p in sorted(data.glob("*.wav")):
        dg, sp, _ = p.stem.split("_")
        cells.setdefault((int(dg), sp), []).append(p)
    w_digit = np.linspace(1.0, 0.25, 10)
    w_speaker = np.linspace(1.0, 0.3, len(SPEAKERS))
    items, uploads, spare = [], [], []

    def row(path, digit, speaker, role, of="", edit=""):
        kind = JUNK_KIND if digit < 0 else None
        return {"path": str(path), "digit": digit, "speaker": speaker, "junk": kind or "", "role": role,
                "of": of, "edit": edit}

    originals = []
    for (dg, sp), files in sorted(cells.items()):
        if sp not in SPEAKERS:
            continue
        order = rng.permutation(len(files))
        n = max(2, round(36 * w_digit[dg] * w_speaker[SPEAKERS.index(sp)] * scale))
        originals += [(files[i], dg, sp) for i in order[:n]]
        uploads += [(files[i], dg, sp, "original") for i in order[n:n + 2]]
        spare += [(files[i], dg, sp) for i in order[n + 2:]]
    for j, i in enumerate(rng.permutation(len(originals))):
        src, dg, sp = originals[i]
        dst = coll / f"msg_{j:05d}.wav"
        shutil.copyfile(src, dst)
        items.append(row(dst, dg, sp, "original"))
    n_beeps = max(3, round(15 * scale))
    for j in range(n_beeps):
        items.append(row(_write(coll / f"msg_beep_{j:03d}.wav", _tone(rng), 8000), -1, "", "original"))
    # the same clips in other containers and encodings (clips no other row holds)
    for name, k in zip(FORMATS, rng.choice(len(spare), len(FORMATS), replace=False)):
        src, dg, sp = spare[k]
        y, sr = _read(src)
        dst = coll / f"fmt_{name}"
        if name.startswith("48k"):
            z = resample_poly(y, 6, 1).astype(np.float32)
            _write(dst, np.stack([z, 0.9 * z], 1), 48000, subtype="PCM_24")
        elif name == "8bit.wav":
            _write(dst, y, sr, subtype="PCM_U8")
        elif name.endswith(".ogg"):
            _write(dst, y, sr, format="OGG", subtype="VORBIS")
        elif name.endswith(".mp3"):
            _write(dst, y, sr, format="MP3")
        else:
            _write(dst, y, sr)
        items.append(row(dst, dg, sp, "format", edit=name))
    orig_items = [r for r in items if r["role"] == "original" and r["digit"] >= 0]
    items += _loop.reposts(rng, orig_items, coll, EDITS, _repost, per=(1, 3))  # 6% of the clips, 1-2 times
    # hostile files
    real = Path(orig_items[0]["path"]).read_bytes()
    (coll / "empty.wav").write_bytes(b"")
    (coll / "truncated.wav").write_bytes(real[: len(real) // 3])
    (coll / "notes.wav").write_text("call me back about the invoice\n", encoding="utf-8")
    _write(coll / "silence.wav", np.zeros(16000, np.float32), 8000)
    long = np.concatenate([_read(Path(r["path"]))[0] for r in orig_items[:40]])
    _write(coll / "ten_minutes.wav", np.tile(long, int(np.ceil(600 * 8000 / len(long))))[: 600 * 8000], 8000)
    # the new uploads
    out_up = []
    for j, (src, dg, sp, role) in enumerate(uploads):
        dst = up / f"new_{j:04d}.wav"
        shutil.copyfile(src, dst)
        out_up.append(row(dst, dg, sp, role))
    for j in range(max(1, round(3 * scale))):
        out_up.append(row(_write(up / f"new_beep_{j:02d}.wav", _tone(rng), 8000), -1, "", "original"))
    lucas = [p for (dg, sp), fs in cells.items() if sp == NEW_SPEAKER for p in fs]
    for j, i in enumerate(rng.choice(len(lucas), 10, replace=False)):
        dst = up / f"other_{NEW_SPEAKER}_{j:02d}.wav"
        shutil.copyfile(lucas[i], dst)
        out_up.append({**row(dst, int(lucas[i].stem.split("_")[0]), NEW_SPEAKER, "new kind"), "edit": "new speaker"})
    for j in range(4):
        out_up.append({**row(_write(up / f"other_chirp_{j:02d}.wav", _tone(rng, chirp=True), 8000), -2, "",
                             "new kind"), "junk": "", "edit": "chirp"})
    up_edits = (*EDITS, "exact")
    out_up += _loop.upload_reposts(rng, orig_items, up, up_edits, _repost, at_least=len(up_edits))
    return _loop.write_truth(work, items, out_up)


def kind_of(r: dict, by: str) -> str:
    if r["junk"]:
        return JUNK_KIND
    if r["digit"] == -2:
        return "chirp"
    return f"speaker {r['speaker']}" if by == "speaker" else f"digit {r['digit']}"


# ----------------------------------------------------------------------------- checks
def check_report(run_dir: Path) -> dict:
    """Every ``<audio>`` of the report names a file that exists and decodes to a nonzero duration."""
    import soundfile as sf

    html = (run_dir / "report" / "index.html").read_text(encoding="utf-8")
    srcs = re.findall(r'<audio[^>]*\ssrc="([^"]+)"', html)
    bad = []
    for s in sorted(set(srcs)):
        p = run_dir / "report" / s
        try:
            info = sf.info(str(p))
            if info.frames <= 0:
                bad.append(f"{s}: 0 frames")
        except Exception as e:  # noqa: BLE001 - a player that cannot play
            bad.append(f"{s}: {e}")
    return {"players": len(srcs), "files": len(set(srcs)), "unplayable": bad}


LOAD_JS = """
const a = arguments[0]; const done = arguments[arguments.length - 1];
a.preload = 'metadata';
const out = () => done({src: a.currentSrc || a.src, duration: a.duration, readyState: a.readyState,
                        error: a.error ? a.error.code + ' ' + (a.error.message || '') : null});
a.addEventListener('loadedmetadata', out, {once: true});
a.addEventListener('error', out, {once: true});
a.load();
setTimeout(out, 10000);
"""


def check_players(studio_base: str, run_dir: Path) -> dict:
    """A cluster's member opened in the studio in Chromium: its ``<audio>`` loads (the server
    answers 200 with an audio type, the element has a duration); the report's first player too."""
    import httpx

    out: dict = {}
    drv = _loop.chromium()
    drv.set_script_timeout(20)
    try:
        drv.get(studio_base + "/")
        _loop.wait(lambda: drv.execute_script("const s = window.mcStudio; return s && s.firstPaint !== null && "
                                         "s.busy === 0 && s.L !== null"), 60)
        rows = drv.find_elements("css selector", "#cluster-list li[data-cluster]")
        row = next(r for r in rows if int(r.get_attribute("data-cluster")) >= 0)
        row.click()
        tile = _loop.wait(lambda: drv.find_elements("css selector", "#grid .tile"))
        tile[0].find_element("css selector", "button.open").click()
        a = _loop.wait(lambda: drv.find_element("id", "item-audio"))
        if a is None:
            out["studio"] = {"error": "no <audio> in the item view"}
        else:
            got = drv.execute_async_script(LOAD_JS, a)
            r = httpx.get(got["src"])
            got.update(status=r.status_code, content_type=r.headers.get("content-type"), bytes=len(r.content))
            got["plays"] = bool(r.status_code == 200 and str(got["content_type"]).startswith("audio/")
                                and got["duration"] and got["duration"] > 0 and not got["error"])
            out["studio"] = got
        drv.get((run_dir / "report" / "index.html").resolve().as_uri())
        a = _loop.wait(lambda: drv.find_element("css selector", "audio"))
        if a is not None:
            got = drv.execute_async_script(LOAD_JS, a)
            got["plays"] = bool(got["duration"] and got["duration"] > 0 and not got["error"])
            out["report"] = got
        out["console_errors"] = [e["message"][:200] for e in drv.get_log("browser") if e.get("level") == "SEVERE"
                                 and "favicon" not in e.get("message", "")]
    finally:
        drv.quit()
    return out


def score(answers, uploads, by: str, item_cluster: dict, labels: np.ndarray, kinds: np.ndarray,
          junk=(), names=None) -> dict:
    """Unseen clips in their kind's cluster, reposts in their original's, duplicate_of."""
    home = _loop.kind_home(labels, kinds)
    maj = _loop.majority(labels, kinds)
    n_o = ok_major = ok_home = ok_name = noise = 0
    n_r = rep_ok = tp = 0
    flagged_new = 0
    per_edit: dict = {}
    for a, u in zip(answers, uploads):
        if not a:
            continue
        k = kind_of(u, by)
        dup = a.get("duplicate_of")
        got = int(a["assigned_cluster"])
        if u["role"] == "original":
            n_o += 1
            noise += int(a["cluster"] < 0)
            if k == JUNK_KIND and junk:
                ok = a["status"] == "junk"
                ok_major += ok
                ok_home += ok
                ok_name += ok
            else:
                ok_major += maj.get(got, ("?", 0))[0] == k
                ok_home += got == home.get(k, -99)
                ok_name += bool(names) and a.get("assigned_name") == names.get(k)
            flagged_new += dup is not None
        elif u["role"] == "repost":
            n_r += 1
            rep_ok += got == item_cluster.get(u["of"], -99)
            hit = dup is not None and dup.get("id") == u["of"]
            tp += hit
            e = per_edit.setdefault(u["edit"], [0, 0, 0])
            e[0] += hit
            e[1] += 1
            e[2] += got == item_cluster.get(u["of"], -99)
    newk = [(a, u) for a, u in zip(answers, uploads) if a and u["role"] == "new kind"]
    prob = {r: float(np.median([a["probability"] for a, u in zip(answers, uploads) if a and u["role"] == r] or [np.nan]))
            for r in ("original", "new kind")}
    return {"originals": n_o, "reposts": n_r,
            "orig_majority_acc": ok_major / max(n_o, 1), "orig_home_acc": ok_home / max(n_o, 1),
            "orig_name_acc": ok_name / max(n_o, 1) if names else None, "orig_noise": noise / max(n_o, 1),
            "repost_cluster_acc": rep_ok / max(n_r, 1), "dup_recall": tp / max(n_r, 1),
            "dup_false_on_new_clips": flagged_new,
            "per_edit": {k: f"dup {v[0]}/{v[1]}, cluster {v[2]}/{v[1]}" for k, v in sorted(per_edit.items())},
            "novel_new_kinds": f"{sum(bool(a.get('novel')) for a, _ in newk)}/{len(newk)}",
            "probability_median": prob,
            "path_levels": int(np.median([len(a.get("path") or []) for a in answers if a] or [0])),
            "version": next((a.get("version") for a in answers if a), None)}


def curate_again(base: str, cur: dict, by: str, res: dict) -> dict:
    """The second version: the largest kind's cluster renamed, the rarest kind's marked junk."""
    import httpx

    names, junk = dict(cur["names"]), list(cur["junk"])
    with httpx.Client(base_url=base, timeout=300) as c:
        live = [e for e in c.get("/api/clusters").json()["clusters"] if not e.get("junk") and e["id"] >= 0]
        live.sort(key=lambda e: -e["size"])
        big, rare = live[0], live[-1]
        _loop.edit(c, {"kind": "rename", "cluster": big["id"], "name": big["name"] + " (renamed)"})
        for k, v in list(names.items()):
            if v == big["name"]:
                names[k] = big["name"] + " (renamed)"
        _loop.edit(c, {"kind": "junk", "clusters": [rare["id"]]})
        junk.append(rare["id"])
        r = c.post("/api/publish", headers={"X-Mediacluster": "1"})
        if r.status_code != 200:
            raise SystemExit(f"publish -> HTTP {r.status_code}: {r.text[:300]}")
        res["publish_2"] = r.json()
        clusters = {e["id"]: e for e in c.get("/api/clusters").json()["clusters"]}
    return {**cur, "names": names, "junk": junk, "clusters": clusters, "version": res["publish_2"]["version"],
            "renamed": (big["id"], big["name"] + " (renamed)"), "junked": rare["id"]}


def follow(a2, a3, cur2) -> dict:
    cid, name = cur2["renamed"]
    ren = [(x, y) for x, y in zip(a2, a3) if x and y and x.get("assigned_cluster") == cid]
    jk = [(x, y) for x, y in zip(a2, a3) if x and y and x.get("assigned_cluster") == cur2["junked"]]
    return {"version": next((y.get("version") for y in a3 if y), None),
            "renamed": f"{sum(y.get('assigned_name') == name for _, y in ren)}/{len(ren)}",
            "junk": f"{sum(y.get('status') == 'junk' for _, y in jk)}/{len(jk)}",
            "same_cluster": float(np.mean([x.get("assigned_cluster") == y.get("assigned_cluster")
                                           for x, y in zip(a2, a3) if x and y]))}


def cosines(run, row_of: dict) -> dict:
    """Why vectors cannot tell a repost of a clip: the cosine of every original clip to its
    nearest other original, against that of each repost to its own original, by edit."""
    emb = run.read_embeddings()
    ids = [str(i) for i in emb.ids]
    X = np.asarray(emb.vectors, dtype=np.float64)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    at = {p: i for i, p in enumerate(ids)}
    orig = [at[p] for p in ids if p in row_of and row_of[p]["role"] == "original" and not row_of[p]["junk"]]
    S = X[orig] @ X[orig].T
    np.fill_diagonal(S, -1)
    nearest = S.max(axis=1)
    by_edit: dict[str, list[float]] = {}
    for p in ids:
        r = row_of.get(p)
        if r and r["role"] == "repost" and r["of"] in at:
            by_edit.setdefault(r["edit"], []).append(float(X[at[p]] @ X[at[r["of"]]]))
    return {"nearest_other": {"median": float(np.median(nearest)), "p5": float(np.percentile(nearest, 5)),
                              "n": len(orig)},
            "repost_to_original": {k: {"min": min(v), "median": float(np.median(v)), "n": len(v)}
                                   for k, v in sorted(by_edit.items())}}


# ----------------------------------------------------------------------------- the loop
def loop(work: Path, truth: dict, seed: int, by: str, encoder: str | None, cold: bool = True) -> dict:
    """The loop with one encoder (None: the product's default for audio); its run, embedding
    cache and tag model in ``work`` under names ending with the encoder's."""
    import httpx
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from mediacluster.rundir import RunDir

    res: dict = {"steps": {}, "problems": []}
    tag = encoder or "default"
    run_dir = work / f"run-{tag}"
    coll, uploads = truth["collection"], truth["uploads"]
    row_of = {r["path"]: r for r in coll}
    res["sizes"] = {"collection": len(coll), **Counter(r["role"] for r in coll),
                    "uploads": dict(Counter(u["role"] for u in uploads)),
                    "digits": dict(sorted(Counter(r["digit"] for r in coll if r["role"] == "original").items())),
                    "speakers": dict(Counter(r["speaker"] or JUNK_KIND for r in coll if r["role"] == "original"))}
    for old in [run_dir, *work.glob(f"run-{tag}.replaced-*")]:
        if old.exists():
            shutil.rmtree(old)
    cache = work / f"cache-{tag}"
    if cache.exists() and cold:
        shutil.rmtree(cache)
    enc = ["--encoder", encoder] if encoder else []
    wall, cpu, out = _loop.cli(["cluster", str(work / "collection"), "--out", str(run_dir), "--media", "audio",
                                 "--dedup", "--report", "--save-model", "--seed", str(seed), "--quiet", *enc]
                                + (["--cache-dir", str(cache)] if cold else []))
    res["steps"]["cluster --media audio --dedup --report --save-model" + (" (fresh embedding cache)" if cold else "")] = {
        "wall_s": wall, "cpu_s": cpu}
    res["output_cluster"] = out
    run = RunDir.open(run_dir)
    info = run.info
    skipped = {Path(str(s.get("path", ""))).name: s.get("reason") for s in info.get("skipped", [])} \
        if isinstance(info.get("skipped"), list) else {}
    asg = run.read_assignments()
    got_paths = set(asg["id"].astype(str))
    res["hostile"] = {}
    for name in [*HOSTILE, *(f"fmt_{f}" for f in FORMATS)]:
        p = str(work / "collection" / name)
        res["hostile"][name] = ("clustered" if p in got_paths else f"skipped: {skipped[name]}" if name in skipped
                                else "MISSING (neither clustered nor skipped)")
        if res["hostile"][name].startswith("MISSING"):
            res["problems"].append(f"{name}: neither clustered nor listed as skipped")
    asg = asg[asg["id"].astype(str).isin(row_of)]
    paths = asg["id"].astype(str).tolist()
    rows = [row_of[p] for p in paths]
    kinds = np.array([kind_of(r, by) for r in rows])
    digit = np.array([r["digit"] for r in rows])
    speaker = np.array([r["speaker"] or JUNK_KIND for r in rows])
    auto = asg["cluster"].to_numpy()
    res["auto"] = {"clusters": int(len(set(auto[auto >= 0].tolist()))), "noise": float(np.mean(auto < 0)),
                   "nmi_digit": float(nmi(digit, auto)), "nmi_speaker": float(nmi(speaker, auto)),
                   "nmi_kind": float(nmi(kinds, auto)), "level": int(info.get("level", -1)) if "level" in info else None}
    lv = sorted((c for c in asg.columns if re.fullmatch(r"level_\d+", c)), key=lambda c: int(c.split("_")[1]))
    res["auto"]["levels"] = {c: {"k": int(asg[c].nunique()), "nmi_digit": round(float(nmi(digit, asg[c])), 3),
                                 "nmi_speaker": round(float(nmi(speaker, asg[c])), 3)} for c in lv}
    dups = run.read_duplicates()
    group_of = dict(zip(dups["id"].astype(str), dups["duplicate_group"].astype(int)))
    reps = [r for r in coll if r["role"] == "repost"]
    res["auto"]["collection_reposts_grouped"] = f"{sum(group_of.get(r['path'], -1) >= 0 and group_of.get(r['path']) == group_of.get(r['of']) for r in reps)}/{len(reps)}"
    res["auto"]["groups"] = int(len({g for g in group_of.values() if g >= 0}))
    res["auto"]["reposts_with_original_cluster"] = f"{sum(dict(zip(paths, auto)).get(r['path']) == dict(zip(paths, auto)).get(r['of']) for r in reps)}/{len(reps)}"
    res["cosines"] = cosines(run, row_of)
    res["report"] = check_report(run_dir)
    if res["report"]["unplayable"]:
        res["problems"].append(f"report players that cannot play: {res['report']['unplayable'][:3]}")

    srv = _loop.Server(["serve", str(run_dir), "--port", "0", "--poll", "1"])
    res["steps"]["serve: start to listening"] = {"wall_s": srv.start_s}
    lat_all = []
    try:
        with httpx.Client(base_url=srv.base, timeout=120) as c:
            answers, lat, fail = _loop.post_uploads(c, uploads)
            lat_all += lat
            res["problems"] += fail
            # the hostile and converted files posted as uploads: a 4xx naming the file, or an answer
            res["hostile_uploads"] = {}
            for name in [*HOSTILE, *(f"fmt_{f}" for f in FORMATS)]:
                f = work / "collection" / name
                r = c.post("/v1/assign", files=[("files", (name, f.read_bytes()))])
                kind = (r.json().get("error") or {}).get("kind") if r.status_code != 200 else "answered"
                res["hostile_uploads"][name] = f"{r.status_code} {kind}"
                if r.status_code >= 500 or (name.startswith("fmt_") and r.status_code != 200) or (
                        r.status_code != 200 and name not in r.text):
                    res["problems"].append(f"upload {name}: HTTP {r.status_code} {r.text[:200]}")
            ac = asg["assigned_cluster"].to_numpy()
            res["before"] = score(answers, uploads, by, dict(zip(paths, ac.astype(int))), ac, kinds)
            st = _loop.Server(["studio", str(run_dir), "--port", "0", "--no-browser"])
            res["steps"]["studio: start to listening"] = {"wall_s": st.start_s}
            try:
                t0 = time.perf_counter()
                try:
                    res["players"] = check_players(st.base, run_dir)
                except Exception as e:  # noqa: BLE001 - recorded as a problem, the loop goes on
                    res["players"] = {"error": f"{type(e).__name__}: {e}"}
                res["steps"]["chromium: open a member, load its audio"] = {"wall_s": time.perf_counter() - t0}
                for where in ("studio", "report"):
                    if not (res["players"].get(where) or {}).get("plays"):
                        res["problems"].append(f"{where} player does not play: {res['players'].get(where) or res['players']}")
                # the studio's items are the run's rows: kinds for every row (hostile rows have none)
                all_rows = RunDir.open(run_dir).read_assignments()["id"].astype(str).tolist()
                all_kinds = np.array([kind_of(row_of[p], by) if p in row_of else "?" for p in all_rows])
                cur = _loop.curate(st.base, all_kinds, res, JUNK_KIND)
                t0 = time.perf_counter()
                res["reload_1"] = c.post("/v1/reload").json()
                res["steps"]["serve: POST /v1/reload (v0001 -> curated)"] = {"wall_s": time.perf_counter() - t0}
                while c.get("/v1/model").json()["version"] != cur["version"] and time.perf_counter() - t0 < 60:
                    time.sleep(0.05)
                answers2, lat, fail = _loop.post_uploads(c, uploads)
                lat_all += lat
                res["problems"] += fail
                a2 = RunDir.open(run_dir).read_assignments()
                a2 = a2[a2["id"].astype(str).isin(row_of)]
                cc = a2["curated_cluster"].to_numpy()
                k2 = np.array([kind_of(row_of[p], by) for p in a2["id"].astype(str)])
                res["curated"] = {"clusters": int(len(set(cc[cc >= 0].tolist()))), "nmi_kind": float(nmi(k2, cc))}
                res["after"] = score(answers2, uploads, by, dict(zip(a2["id"].astype(str), cc.astype(int))), cc, k2,
                                     junk=set(cur["junk"]), names=cur["names"])
                res["clusters_after"] = _loop.check_clusters(c.get("/v1/clusters").json(), cur, res)
                # the report of the curated run shows the names given in the studio
                wall, cpu, _ = _loop.cli(["report", str(run_dir), "--quiet"])
                res["steps"]["report (after curation)"] = {"wall_s": wall, "cpu_s": cpu}
                html = (run_dir / "report" / "index.html").read_text(encoding="utf-8")
                res["report_names_missing"] = sorted(n for n in cur["names"].values() if n not in html)
                if res["report_names_missing"]:
                    res["problems"].append(f"the report after curation lacks the names {res['report_names_missing']}")
                cur2 = curate_again(st.base, cur, by, res)
                t0 = time.perf_counter()
                while c.get("/v1/model").json()["version"] != cur2["version"] and time.perf_counter() - t0 < 60:
                    time.sleep(0.05)
                res["reload_2"] = {"version": c.get("/v1/model").json()["version"], "by": "the LATEST watch"}
                res["steps"]["serve: the LATEST watch switches (publish -> served, --poll 1)"] = {
                    "wall_s": time.perf_counter() - t0}
                answers3, lat, fail = _loop.post_uploads(c, uploads)
                lat_all += lat
                res["problems"] += fail
                res["second"] = follow(answers2, answers3, cur2)
                res["clusters_second"] = _loop.check_clusters(c.get("/v1/clusters").json(), cur2, res)
            finally:
                st.stop()
                res["output_studio"] = "".join(st.lines)
    finally:
        _loop.stop_service(srv, res)
    res["latency_ms"] = _loop.latency_summary(lat_all)
    # tags on the curated clusters
    try:
        wall, cpu, out = _loop.cli(["tags", "train", "--run", str(run_dir), "--out", str(work / f"tags-{tag}")])
        res["steps"]["tags train --run"] = {"wall_s": wall, "cpu_s": cpu}
        new = [u["path"] for u in uploads if u["role"] == "original"][:40]
        wall, cpu, out = _loop.cli(["tags", "suggest", str(work / f"tags-{tag}"), *new])
        res["steps"]["tags suggest (40 clips)"] = {"wall_s": wall, "cpu_s": cpu}
        res["tags_output"] = out[-3000:]
    except SystemExit as e:
        res["problems"].append(f"tags: {str(e)[:400]}")
    return res


# ----------------------------------------------------------------------------- the section
def render(res: dict, cmd: str, load: str, commit: str, by: str) -> str:
    s, a, b, af = res["sizes"], res["auto"], res["before"], res["after"]

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}%"

    lines = [SECTION, "", f"`{cmd}` (load average before: {load}; 2 cores shared; commit {commit}).", "",
             "The loop a team with voice messages runs, through the CLI and real HTTP only: `cluster --media audio "
             "--dedup --report --save-model` -> `serve` -> the studio in headless Chromium (a member's player) and "
             "its HTTP API (curation) -> publish -> `POST /v1/reload` -> a second curated version switched to by "
             f"the LATEST watch -> `tags train/suggest`. Kinds for curation and scoring: {by}s (and the beeps).", "",
             f"- collection: {s['collection']} clips ({s.get('original', 0)} originals: digits "
             f"{', '.join(f'{k}: {v}' for k, v in s['digits'].items() if k >= 0)}; speakers "
             f"{', '.join(f'{k} {v}' for k, v in s['speakers'].items())}; {s.get('format', 0)} converted clips "
             f"({', '.join(FORMATS)}); {s.get('repost', 0)} reposts ({', '.join(EDITS)})) + 5 hostile files; "
             f"uploads: {s['uploads'].get('original', 0)} unseen clips of the collection's kinds (2 per speaker and digit, "
             f"and beeps), {s['uploads'].get('repost', 0)} reposts of collection clips ({', '.join(EDITS)}, exact copies), "
             f"{s['uploads'].get('new kind', 0)} clips of kinds the collection lacks (10 of a sixth speaker, 4 chirps)",
             "- hostile and converted files: " + "; ".join(f"`{k}` {v}" for k, v in res["hostile"].items()),
             "- the same files posted to the service: " + "; ".join(f"`{k}` {v}" for k, v in res["hostile_uploads"].items()),
             f"- automatic level: {a['clusters']} clusters, NMI against digits {a['nmi_digit']:.3f}, against speakers "
             f"{a['nmi_speaker']:.3f} ({pct(a['noise'])} noise); collection reposts in their original's cluster "
             f"{a['reposts_with_original_cluster']}, grouped by `--dedup` {a['collection_reposts_grouped']} "
             f"({a['groups']} groups: exact copies, and vector candidates confirmed by a spectrogram check of the files)",
             f"- why vectors alone cannot find audio reposts (the check above decides): an original clip's cosine to its nearest "
             f"other recording has median {res['cosines']['nearest_other']['median']:.4f} (5th percentile "
             f"{res['cosines']['nearest_other']['p5']:.4f}, {res['cosines']['nearest_other']['n']} clips); a repost's "
             "to its original (min / median): " + ", ".join(
                 f"{k} {v['min']:.4f} / {v['median']:.4f}" for k, v in res["cosines"]["repost_to_original"].items()),
             "- levels (k, NMI digit / speaker): " + ", ".join(f"{v['k']} ({v['nmi_digit']:.2f}/{v['nmi_speaker']:.2f})"
                                                             for v in a["levels"].values()),
             f"- report: {res['report']['players']} players over {res['report']['files']} files, unplayable "
             f"{len(res['report']['unplayable'])}; in Chromium: studio member player "
             f"{json.dumps({k: res['players'].get('studio', {}).get(k) for k in ('status', 'content_type', 'duration', 'error')})}, "
             f"report player duration {res['players'].get('report', {}).get('duration')}",
             f"- curation: {sum(res['curation_steps'].values())} edits "
             f"({', '.join(f'{k} {v}' for k, v in res['curation_steps'].items())}) -> {res['curated']['clusters']} "
             f"clusters, NMI against the kinds {a['nmi_kind']:.3f} -> {res['curated']['nmi_kind']:.3f}; published "
             f"{res['publish_1']['version']} (agreement {res['publish_1']['agreement']:.3f}). Splits: "
             + ("; ".join(res.get("splits", [])) or "none"), "",
             "| service answers | before curation (automatic model) | after curation |", "|---|---|---|",
             f"| model version | {b['version']} | {af['version']} |",
             f"| unseen clips in the cluster whose commonest kind is theirs | {pct(b['orig_majority_acc'])} | {pct(af['orig_majority_acc'])} |",
             f"| unseen clips in their kind's cluster (the one holding most of the kind) | {pct(b['orig_home_acc'])} | {pct(af['orig_home_acc'])} |",
             f"| unseen clips answered with their kind's curated name (beeps: status junk) | - | {pct(af['orig_name_acc'])} |",
             f"| unseen clips answered as noise | {pct(b['orig_noise'])} | {pct(af['orig_noise'])} |",
             f"| reposts in their original's cluster | {pct(b['repost_cluster_acc'])} | {pct(af['repost_cluster_acc'])} |",
             f"| reposts answered `duplicate_of` their original | {pct(b['dup_recall'])} | {pct(af['dup_recall'])} |",
             f"| new clips flagged `duplicate_of` | {b['dup_false_on_new_clips']} | {af['dup_false_on_new_clips']} |",
             f"| clips of kinds the collection lacks answered `novel` | {b['novel_new_kinds']} | {af['novel_new_kinds']} |",
             f"| median `probability`: unseen clips / kinds the collection lacks | {b['probability_median']['original']:.2f} / "
             f"{b['probability_median']['new kind']:.2f} | {af['probability_median']['original']:.2f} / {af['probability_median']['new kind']:.2f} |",
             f"| served `path` levels | {b['path_levels']} | {af['path_levels']} |",
             "| per repost edit | " + ", ".join(f"{k}: {v}" for k, v in b["per_edit"].items()) + " | "
             + ", ".join(f"{k}: {v}" for k, v in af["per_edit"].items()) + " |", "",
             f"Second curated version ({res['publish_2']['version']}: the largest cluster renamed, the smallest junk), "
             f"served after the LATEST watch: {res['reload_2']['version']}; uploads of the renamed cluster answered "
             f"with its new name {res['second']['renamed']}, of the junked one with status junk {res['second']['junk']}, "
             f"same cluster as before {pct(res['second']['same_cluster'])}. `/v1/clusters`: after curation "
             f"{res['clusters_after']['served']} served for {res['clusters_after']['curated']} curated (missing "
             f"{res['clusters_after']['missing']}, extra {res['clusters_after']['extra']}, wrong names "
             f"{res['clusters_after']['wrong_names']}, junk not marked {res['clusters_after']['junk_not_marked']}); "
             f"after the second version junk not marked {res['clusters_second']['junk_not_marked']}.", "",
             f"Latency of one-clip `POST /v1/assign` on loopback, {res['latency_ms']['requests']} sequential requests: "
             f"p50 {res['latency_ms']['p50']:.1f} ms, p95 {res['latency_ms']['p95']:.1f} ms, max {res['latency_ms']['max']:.1f} ms.",
             "", "| step | wall s | CPU s |", "|---|---|---|"]
    for k, v in res["steps"].items():
        lines.append(f"| {k} | {v['wall_s']:.2f} | {v['cpu_s']:.1f} |" if "cpu_s" in v else f"| {k} | {v['wall_s']:.2f} | - |")
    if res["problems"]:
        lines += ["", "Problems seen in this run: " + "; ".join(str(p)[:300] for p in res["problems"])]
    return "\n".join(lines) + "\n"


def compare(results: dict[str, dict]) -> list[str]:
    """The key figures of every encoder's loop side by side."""
    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}%"

    def best(r, key):
        k, v = max(((v["k"], v[key]) for v in r["auto"]["levels"].values()), key=lambda t: t[1])
        return f"{k} ({v:.2f})"

    keys = [("automatic level: clusters", lambda r: str(r["auto"]["clusters"])),
            ("automatic level: NMI digits / speakers", lambda r: f"{r['auto']['nmi_digit']:.3f} / {r['auto']['nmi_speaker']:.3f}"),
            ("best level for speakers: k (NMI)", lambda r: best(r, "nmi_speaker")),
            ("best level for digits: k (NMI)", lambda r: best(r, "nmi_digit")),
            ("curation edits -> clusters, NMI against the kinds", lambda r: f"{sum(r['curation_steps'].values())} -> "
             f"{r['curated']['clusters']}, {r['auto']['nmi_kind']:.3f} -> {r['curated']['nmi_kind']:.3f}"),
            ("unseen clips in their kind's cluster, before / after curation",
             lambda r: f"{pct(r['before']['orig_home_acc'])} / {pct(r['after']['orig_home_acc'])}"),
            ("unseen clips with their kind's curated name", lambda r: pct(r["after"]["orig_name_acc"])),
            ("reposts in their original's cluster, before / after", lambda r: f"{pct(r['before']['repost_cluster_acc'])} / "
             f"{pct(r['after']['repost_cluster_acc'])}"),
            ("second version: renamed / junk followed", lambda r: f"{r['second']['renamed']} / {r['second']['junk']}"),
            ("one-clip upload latency p50 / p95 ms", lambda r: f"{r['latency_ms']['p50']:.1f} / {r['latency_ms']['p95']:.1f}"),
            ("cluster --dedup --report --save-model wall / CPU s (fresh cache)", lambda r: next(
                f"{v['wall_s']:.1f} / {v['cpu_s']:.1f}" for k, v in r["steps"].items() if k.startswith("cluster")))]
    names = list(results)
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, f in keys:
        lines.append(f"| {label} | " + " | ".join(f(results[n]) for n in names) + " |")
    return lines


FOUND = ("Found with this loop and fixed on the audioday branch: `--dedup` on audio linked clips by their vectors "
         "(cosine >= 0.97), but MFCC vectors of different recordings are closer than that (the cosines above): on this "
         "collection 5 groups held all 822 clips (the largest 789), the fit saw 5 items and the run had 1 cluster "
         "(then exact copies only; since the audioreposts branch, vector candidates confirmed by a spectrogram "
         "check of the files: benchmarks/RESULTS.md, \"Duplicates: audio reposts\"); a ready audio service answered its first clip in 1.2 s (librosa's import and numba kernels: "
         "the warm-up ran only for images); the service asked an audio model's clients to send images; the "
         "Label Studio export of an audio run was an image config (no player); `tags train` on a labelled folder "
         "of clips said \"no labels\" (the folder was read as images); README did not name the audio encoders "
         "nor say that the service takes audio clips. Found here and fixed on the hygiene branch: when a curated "
         "cluster was marked junk in a later version, a few borderline uploads that the earlier version put in it "
         "went to another cluster instead of being answered junk (the flat answer is the top-down path through "
         "the levels, and the junk cluster is a branch of its own at every coarse level); now an item whose "
         "neighbours' flat vote is a junk cluster is answered junk (the row \"junk followed\"). The row \"new "
         "clips flagged `duplicate_of`\": the two are new beeps (synthetic tones), answered as reposts of a "
         "collection beep at spectrogram distance < 1e-4: the same sound, not a false link between recordings. A clip "
         "over 300 s (`ten_minutes.wav`) is embedded from 10 excerpts of 30 s spread over it since the longaudio "
         "branch (it was skipped as too long; benchmarks/RESULTS.md, \"Audio: long recordings\").")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.path.join(os.environ.get("MEDIACLUSTER_DATA", "/work/data"), "fsdd/recordings"))
    ap.add_argument("--work", default="/tmp/audioday")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--kind", choices=("speaker", "digit"), default="speaker",
                    help="what the curation groups by (and the service is scored against)")
    ap.add_argument("--encoders", default="default",
                    help="comma-separated audio encoders, each through the whole loop on the same collection "
                         "('default': the product's default for audio); the first is written out in full")
    ap.add_argument("--warm-cache", action="store_true")
    _results.add_common_args(ap, seed=True)
    args = ap.parse_args(argv)
    work, load, truth, build_s = _loop.start(build, args)
    results = {}
    for name in args.encoders.split(","):
        res = loop(work, truth, args.seed, args.kind, None if name == "default" else name, cold=not args.warm_cache)
        res["steps"] = {"build the collection (numpy / scipy / soundfile)": {"wall_s": build_s}, **res["steps"]}
        res["load_after"] = _results.loadavg()
        results[name] = res
        (work / f"result-{name}.json").write_text(json.dumps(res, indent=1, default=str))
    first = next(iter(results))
    block = render(results[first], _results.command("audio_loop.py", argv, drop=["--write"]), load,
                   _results.commit(), args.kind).rstrip("\n")
    block += (f"\n\nThe figures above are the loop with the `{first}` encoder"
              + (" (the default for audio: mfcc)" if first == "default" else "") + ". Every encoder through the "
              "same loop on the same collection (load average after each: "
              + ", ".join(f"{n} {r['load_after']}" for n, r in results.items()) + "):\n\n"
              + "\n".join(compare(results)) + "\n\n" + FOUND + "\n")
    _results.publish(SECTION, block, args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
