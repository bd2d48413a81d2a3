"""Hand-made mutation check of the test suite: does a test notice a wrong answer?

Each mutant is one textual change to one source file (a flipped comparison, an off-by-one, a
dropped ``not``, an early return, two arguments swapped, a default changed, a skipped write). For
each, a fresh copy of ``src/`` is made in a temporary folder, the change applied there (the text
to replace must occur exactly once, or the mutant names which occurrence), and the test files that
own the module run against the copy (``PYTHONPATH=<copy>``, ``-x -q``, a timeout). The checkout
itself is never changed, so an interrupted run leaves nothing to restore.

    PYTHONPATH=$PWD/src python benchmarks/mutants.py                 # all mutants, fast tier
    PYTHONPATH=$PWD/src python benchmarks/mutants.py --only rundir-1 hier-3
    PYTHONPATH=$PWD/src python benchmarks/mutants.py --module rundir --slow
    PYTHONPATH=$PWD/src python benchmarks/mutants.py --list

killed: the tests failed (exit 1) or errored (exit 2/3/4) on the mutant; survived: they passed;
timeout: they ran past ``--timeout`` (counted as killed, flagged). A mutant whose text is not
found (the source moved on) is reported as ``stale``, not run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = "src/mediacluster"


@dataclass
class Mutant:
    id: str
    file: str  # relative to src/mediacluster
    old: str
    new: str
    tests: list[str]
    what: str
    k: str = ""  # pytest -k expression, to keep a run short
    nth: int = 0  # which occurrence of ``old`` when it occurs more than once
    slow: bool = False  # run the slow tier too (the owning tests are marked slow)
    extra: list[str] = field(default_factory=list)


#: the second pass's -k for test_studio (its fast tier is ~3 min at load 4): the tests that
#: read the curated state, leaving out search, publish, audio and report
STUDIO_K = "not search and not publish and not audio and not clip and not report and not label_studio and not large_run"
#: ... and for the export rules (test_studio_dups, test_studio)
EXPORT_K = "export or keep or dataset or dropped or copy or duplicate"
#: ... and for the pruner rules in test_tune (whose fast tier is ~10 min at load 10)
TUNE_K = "pruned or leader or sampler"


def T(*names: str) -> list[str]:
    return [f"tests/{n}.py" for n in names]


MUTANTS: list[Mutant] = [
    # ---- rundir.py: resume, atomic write, the replaced run ----
    Mutant("rundir-1", "rundir.py", 'PERSONAL = (NAMES_YAML, "names.yml", EDITS)',
           'PERSONAL = (NAMES_YAML, "names.yml")', T("test_rundir", "test_studio"),
           "a replaced run holding only studio edits is deleted, not kept aside", slow=True,
           k="kept or replaced or edits"),
    Mutant("rundir-2", "rundir.py", "os.rename(olds.pop(), path)", "os.rename(olds.pop(0), path)",
           T("test_rundir"), "an interrupted swap puts back the OLDEST previous run, not the newest"),
    Mutant("rundir-3", "rundir.py", 'header=self.rows == 0, mode="a"', 'header=True, mode="a"',
           T("test_rundir", "test_scale"), "batched assignments.csv repeats its header every batch"),
    Mutant("rundir-4", "rundir.py", "        shutil.rmtree(work_path(t), ignore_errors=True)\n        return RunDir",
           "        return RunDir", T("test_rundir", "test_embed_resume"),
           "publish leaves the .DIR.work shards folder behind (skip a cleanup)"),
    Mutant("rundir-5", "rundir.py", "if pid != os.getpid() and not pid_alive(pid):",
           "if pid != os.getpid():", T("test_rundir"), slow=True, k="process or writer",
           what="a live process's build folder is removed as stale (drop a `not`)"),
    Mutant("rundir-6", "rundir.py", "start + len(rows) > self.n:", "start + len(rows) >= self.n:",
           T("test_rundir", "test_embed_resume"), "the last embeddings batch is refused (off by one)"),
    Mutant("rundir-7", "rundir.py", " and not RunDir.is_run(t) and not _is_legacy_run(t):",
           " and not RunDir.is_run(t):", T("test_rundir"),
           "a run folder written before the schema was recorded is refused as foreign", slow=True,
           k="foreign or tool or old_version"),
    # ---- stages/hierarchy.py: level selection, predict vs fit, paths, nesting ----
    Mutant("hier-1", "stages/hierarchy.py", "if lv >= n_levels:", "if lv > n_levels:",
           T("test_hierarchy"), "level == number of levels passes the guard (IndexError, no message)"),
    Mutant("hier-2", "stages/hierarchy.py", "budget = int(math.floor(", "budget = int(math.ceil(",
           T("test_hierarchy", "test_stages"), "max_unclustered rounds up: one item more left as noise"),
    Mutant("hier-3", "stages/hierarchy.py", "cand[np.argsort(probs[cand], kind=\"stable\")[:budget]]",
           "cand[np.argsort(-probs[cand], kind=\"stable\")[:budget]]", T("test_hierarchy", "test_stages"),
           "noise budget spent on the STRONGEST memberships, not the weakest"),
    Mutant("hier-4", "stages/hierarchy.py", "return self.predict_path(Z)[0][self.level_]",
           "return self.predict_path(Z)[0][self.auto_level_]", T("test_hierarchy", "test_stages", "test_predict"),
           "predict answers at the auto level, not the level set (predict vs fit)"),
    Mutant("hier-5", "stages/hierarchy.py", "inside = inside & (lab == choice[:, None])", "inside = inside",
           T("test_hierarchy", "test_predict"), "vote_path: finer levels vote with neighbours outside the chosen parent"),
    Mutant("hier-6", "stages/hierarchy.py", "empty = got <= 0", "empty = got < 0",
           T("test_hierarchy", "test_predict"), "vote_path: no neighbour in any child is not treated as empty"),
    Mutant("hier-7", "stages/hierarchy.py", "if not (last < len(src) < len(ids)):",
           "if not (last <= len(src) < len(ids)):", T("test_hierarchy", "test_curated_tree"),
           "tree_above keeps a coarse level that repeats the one above it"),
    Mutant("hier-8", "stages/hierarchy.py", "            self.level = old\n            raise",
           "            raise", T("test_hierarchy", "test_stages"),
           "set_level with a bad level leaves the bad level set (no restore)"),
    Mutant("hier-9", "stages/hierarchy.py", "_neighbours(Z, exclude_self=True, threads=True)",
           "_neighbours(Z, exclude_self=False, threads=True)", T("test_hierarchy", "test_stages"),
           "training memberships count each item as its own neighbour"),
    Mutant("hier-10", "stages/hierarchy.py", "if float(value) >= 1.0:", "if float(value) > 1.0:",
           T("test_hierarchy", "test_stages"), "max_unclustered=1 accepted (everything noise)"),
    Mutant("hier-11", "stages/hierarchy.py", "int(np.argmin(np.abs(self.n_clusters_per_level_",
           "int(np.argmax(np.abs(self.n_clusters_per_level_", T("test_hierarchy", "test_stages"),
           "level_with picks the level FARTHEST from the count asked"),
    # ---- studio/carry.py and studio/editlog.py: edits carried, applied, undone ----
    Mutant("carry-1", "studio/carry.py", "if a >= 0 and b >= 0 and 2 * k > size_a[a]:",
           "if a >= 0 and b >= 0 and 2 * k >= size_a[a]:", T("test_carry", "test_carry_regroup"),
           "a new cluster holding exactly half of a previous one is its heir (tie counted as majority)"),
    Mutant("carry-2", "studio/carry.py", "elif len(parts[a]) >= 2:", "elif len(parts[a]) > 2:",
           T("test_carry", "test_carry_regroup"), "a cluster split in two is not reported as split"),
    Mutant("carry-3", "studio/carry.py", "return [e for e in old.state.done if e.seq > since]",
           "return [e for e in old.state.done if e.seq >= since]", T("test_carry", "test_carry_regroup"),
           "carrying again re-applies the last edit already carried (off by one)"),
    Mutant("carry-4", "studio/carry.py", "for e in _undone_since(old, old_run, since) if e.kind != \"keep\"]",
           "for e in _undone_since(old, old_run, since)]", T("test_carry", "test_carry_regroup", "test_studio_dups"),
           "an undone keep is also listed as not carried", slow=True, k="carr"),
    Mutant("carry-5", "studio/carry.py", "(2 * k > size_a) & (2 * k > size_b)", "(2 * k > size_a)",
           T("test_carry", "test_carry_regroup"), "level pairing counts one-sided majorities"),
    Mutant("carry-6", "studio/carry.py", "if done and not any(e.seq > since and", "if done and not any(e.seq >= since and",
           T("test_carry", "test_carry_regroup"), "a repeated carry with nothing new carries again"),
    Mutant("edits-1", "studio/editlog.py", "WHERE seq > ? ORDER BY seq", "WHERE seq >= ? ORDER BY seq",
           T("test_studio", "test_studio_edges", "test_carry"), "events(since) repeats the event `since`"),
    Mutant("edits-2", "studio/editlog.py", "if meta.get(\"run_id\") != run_id:", "if False:",
           T("test_studio", "test_studio_edges", "test_carry"), "an edit log of another run is opened"),
    Mutant("edits-3", "studio/editlog.py", "return \" \".join(text.split())[:MAX_USER]",
           "return \" \".join(text.split())", T("test_studio", "test_studio_edges"),
           "a person's name is not cut to MAX_USER"),
    # ---- serve/model.py, persist.py, serve/app.py: model version chosen, status codes ----
    Mutant("serve-1", "persist.py", "return self.root / vs[-1] if vs else None",
           "return self.root / vs[0] if vs else None", T("test_persist", "test_serve"),
           "without a LATEST the OLDEST version is served"),
    Mutant("serve-2", "serve/model.py", "if (ptr or {}).get(\"held\"):", "if (ptr or {}).get(\"hold\"):",
           T("test_serve", "test_persist"), "a held version is switched to by the watching service"),
    Mutant("serve-3", "serve/model.py", "same = latest is None or identity(latest) == cur.identity",
           "same = latest is None", T("test_serve", "test_persist"),
           "reload reloads the version already served (counts a switch)"),
    Mutant("serve-4", "serve/model.py", "                same = False  # no readable",
           "                same = True  # no readable", T("test_serve", "test_persist"),
           "a version with no readable model.json is silently not switched to"),
    Mutant("serve-5", "serve/app.py", "if len(rows) > limit:", "if len(rows) >= limit:",
           T("test_serve"), "a batch of exactly max_vectors is refused 413 (off by one)"),
    Mutant("serve-6", "serve/app.py", "status = 413 if all(b[1] in TOO_LARGE for b in bad) else 400",
           "status = 413 if any(b[1] in TOO_LARGE for b in bad) else 400", T("test_serve", "test_hostile"),
           "one too-large file among unreadable ones makes the answer 413, not 400"),
    Mutant("serve-7", "serve/app.py", "want.strip() in (served.id, served.version)",
           "want.strip() in (served.id,)", T("test_serve"),
           "X-Model-Id naming the served VERSION is answered 409"),
    Mutant("serve-8", "serve/app.py", "if len(bad) == len(results):", "if bad:",
           T("test_serve", "test_hostile"), "one unreadable upload refuses the whole request"),
    Mutant("serve-9", "serve/app.py", "if len(failed) == len(ids):", "if failed:",
           T("test_serve", "test_similar"), "one unknown id in /v1/similar refuses the whole request"),
    # ---- duplicates/grouping.py and verify.py: who is grouped ----
    Mutant("dups-1", "duplicates/grouping.py", "if np.all(d(x, group) <= max_diameter):",
           "if np.any(d(x, group) <= max_diameter):", T("test_duplicates", "test_dedup"),
           "leader split admits a member within the diameter of ANY member (chaining)"),
    Mutant("dups-2", "duplicates/grouping.py", "np.lexsort((np.arange(len(D)), total, worst))",
           "np.lexsort((np.arange(len(D)), worst, total))", T("test_duplicates", "test_dedup"),
           "representative: smallest sum first, not smallest max distance"),
    Mutant("dups-3", "duplicates/grouping.py",
           "bits = np.minimum(bits, self._bits(self.mirror[i], self.hashes[j]))", "bits = bits",
           T("test_duplicates", "test_dedup"), "PairDistance.between ignores the mirror hash"),
    Mutant("dups-4", "duplicates/grouping.py", "if len(group) >= 2:", "if len(group) >= 1:",
           T("test_duplicates", "test_dedup"), "a member left alone by a split is a group of one"),
    Mutant("dups-5", "duplicates/grouping.py", "order = np.argsort(d(leader, cands), kind=\"stable\")",
           "order = np.argsort(-d(leader, cands), kind=\"stable\")", T("test_duplicates", "test_dedup"),
           "leader split takes its farthest linked members first"),
    Mutant("dups-6", "duplicates/verify.py", "| (np.asarray(sat) < check.grey_chroma))", ")",
           T("test_duplicates", "test_dedup", "test_dups_cache"),
           "a grey (unsaturated) copy is refused on colour difference"),
    Mutant("dups-7", "duplicates/verify.py", "if not (1 / self.geo.max_scale <= scale <= self.geo.max_scale):",
           "if not (scale <= self.geo.max_scale):", T("test_duplicates", "test_dedup", "test_dups_cache"),
           "a tiny-scale match (thumbnail inside a picture) is accepted"),
    Mutant("dups-8", "duplicates/verify.py", "if area < 16 or overlap < self.geo.min_overlap:",
           "if area < 16:", T("test_duplicates", "test_dedup", "test_dups_cache"),
           "a match overlapping a small part of the image is accepted"),
    # ---- metrics.py / evaluation.py: a metric's formula ----
    Mutant("metric-1", "metrics.py", "return float((lab >= 0).mean()) if lab.size else 0.0",
           "return float((lab >= -1).mean()) if lab.size else 0.0", T("test_metrics", "test_evaluate"),
           "coverage counts noise (-1) as clustered"),
    Mutant("metric-2", "metrics.py", "linear_sum_assignment(c, maximize=True)",
           "linear_sum_assignment(c, maximize=False)", T("test_metrics", "test_evaluate"),
           "Hungarian accuracy takes the WORST matching"),
    Mutant("metric-3", "metrics.py", "p_all = np.where(p >= 0, p, _UNCLUSTERED)", "p_all = p",
           T("test_metrics", "test_evaluate"), "'all' scores keep noise -1 and outliers -2 apart"),
    Mutant("metric-4", "metrics.py", "if sample_size is None or len(idx) <= sample_size:",
           "if sample_size is None or len(idx) < sample_size:", T("test_metrics"),
           "a sample the size of the input is drawn (expected equivalent)"),
    Mutant("eval-1", "evaluation.py", "[codes] == 1", "[codes] == 0", T("test_evaluate"),
           "neighbour vote judges items whose label no other item carries"),
    Mutant("eval-2", "evaluation.py", "if a.shape != b.shape or not np.array_equal(a < 0, b < 0) or",
           "if a.shape != b.shape or", T("test_evaluate"),
           "same_partition ignores which items are noise"),
    Mutant("eval-3", "evaluation.py", '**x["all"]})', '**x["clustered"]})', T("test_evaluate"),
           "level scores over clustered items (expected equivalent: every level assigns every item)"),
    # ---- naming/: a name picked ----
    Mutant("name-1", "naming/names.py", "        if n < 2:\n            continue", "        if n < 3:\n            continue",
           T("test_naming"), "two clusters sharing a first name get no qualifier"),
    Mutant("name-2", "naming/names.py", "if seen[out[c]] > 1:", "if seen[out[c]] >= 1:",
           T("test_naming"), "the first of still-duplicated names is numbered too ('dog 1')"),
    Mutant("name-3", "naming/support.py", "return bool(support >= SURE and (", "return bool(support >= SURE or (",
           T("test_name_support", "test_naming"), "a name is sure when it beats chance OR the threshold"),
    Mutant("name-4", "naming/support.py", "1 << (size.bit_length() - 1)", "1 << (size.bit_length())",
           T("test_name_support"), "null group size: next power of two above the cluster size"),
    Mutant("name-5", "naming/overrides.py", "person_only=not automatic)", "person_only=automatic)",
           T("test_naming", "test_level_names", "test_studio"), "load_names(automatic=False) returns automatic curated names"),
    Mutant("name-6", "naming/overrides.py", "return {**own, **flat}", "return {**flat, **own}",
           T("test_naming", "test_level_names"), "level-in-use names before flat ones (expected equivalent)"),
    # ---- inbox.py ----
    Mutant("inbox-1", "inbox.py", "FROM uploads u WHERE u.hash = s.hash), '') <= ?\"",
           "FROM uploads u WHERE u.hash = s.hash), '') < ?\"", T("test_inbox_lifecycle", "test_serve_inbox", "test_inbox_store"),
           "purge --older-than 0 keeps what was uploaded this second"),
    Mutant("inbox-2", "inbox.py", "INSERT OR IGNORE INTO reviewed", "INSERT OR REPLACE INTO reviewed",
           T("test_inbox_lifecycle", "test_serve_inbox", "test_inbox_store"), "a person's review overwrites 'clustered by run'"),
    Mutant("inbox-3", "inbox.py", "if not older_than_days >= 0:", "if older_than_days < 0:",
           T("test_inbox_lifecycle", "test_serve_inbox", "test_inbox_store"), "purge --older-than nan is accepted"),
    Mutant("inbox-4", "inbox.py", "e.strerror or str(e)})\n                        continue",
           "e.strerror or str(e)})", T("test_inbox_lifecycle", "test_serve_inbox", "test_inbox_store"),
           "a file that cannot be removed loses its rows anyway"),
    Mutant("inbox-5", "inbox.py", "part = files[s:s + 500]", "part = files[s:s + 499]",
           T("test_inbox_lifecycle", "test_serve_inbox", "test_inbox_store"), "take() marks 499 of every 500 files (off by one)"),
    # ---- fileio.py ----
    Mutant("fileio-1", "fileio.py", "            os.chmod(tmp, 0o666 & ~_UMASK)\n", "",
           T("test_fileio_text", "test_rundir", "test_hostile"), "atomically written files stay 0600"),
    Mutant("fileio-2", "fileio.py", 'if nxt == "x" and i + 3 < len(t):', 'if nxt == "x" and i + 4 < len(t):',
           T("test_fileio_text", "test_rundir"), "a name ENDING in an undecodable byte is not decoded back"),
    Mutant("fileio-3", "fileio.py", "            os.unlink(tmp)\n        except FileNotFoundError:",
           "            pass\n        except FileNotFoundError:", T("test_fileio_text", "test_rundir", "test_hostile"),
           "a failed atomic write leaves its temporary file"),
    Mutant("fileio-4", "fileio.py", "if 0xDC80 <= o <= 0xDCFF:", "if 0xDC80 < o <= 0xDCFF:",
           T("test_fileio_text", "test_rundir"), "byte 0x80 escaped as \\udc80, not \\x80"),
    # ======== second pass (mutants2): the modules the first pass left ========
    # ---- predictor.py: predict paths, probabilities, unknown / outlier answers ----
    Mutant("pred-1", "predictor.py", "return novel & ~copy, np.where(copy, 0.0, novelty)",
           "return novel, np.where(copy, 0.0, novelty)", T("test_predict", "test_predictor_metric"),
           "a copy of a fitted item is answered novel (the copy rule dropped)"),
    Mutant("pred-2", "predictor.py", "proba = np.where(labels >= 0, share * prob, 0.0)", "proba = share * prob",
           T("test_predict", "test_predictor_metric"), "an item answered noise gets a membership probability > 0"),
    Mutant("pred-3", "predictor.py", "return dist[:, 1:].mean(axis=1)", "return dist[:, :-1].mean(axis=1)",
           T("test_predict", "test_predictor_metric"),
           "calibration counts each reference as its own neighbour (distance 0): new items look novel"),
    Mutant("pred-4", "predictor.py", "novelty = np.searchsorted(cal, score.astype(cal.dtype), side=\"left\") / (len(cal) + 1.0)",
           "novelty = 1.0 - np.searchsorted(cal, score.astype(cal.dtype), side=\"left\") / (len(cal) + 1.0)",
           T("test_predict", "test_predictor_metric"), "novelty reversed: a far item scores near 0"),
    Mutant("pred-5", "predictor.py", "r = int(np.ceil((len(s) + 1) * (1.0 - alpha)))",
           "r = int(np.ceil(len(s) * (1.0 - alpha)))", T("test_predict", "test_predictor_metric"),
           "conformal threshold one rank low: more than alpha of exchangeable items called novel"),
    Mutant("pred-6", "predictor.py", "        w /= w.sum(axis=1, keepdims=True)\n        emb =",
           "        emb =", T("test_predict", "test_predictor_metric"),
           "a new item's map position is an unnormalised sum of its neighbours' (weights not normalised)"),
    Mutant("pred-7", "predictor.py", "if zero_vectors == \"refuse\" and zero is not None and zero.any():",
           "if zero is not None and zero.any():", T("test_predict", "test_predictor_metric", "test_nonfinite"),
           "zero_vectors='place' refuses a zero vector anyway"),
    # ---- serve/model.py: what /v1/clusters and /v1/levels list ----
    Mutant("smodel-1", "serve/model.py", "ids, sizes = np.unique(labels[labels >= 0], return_counts=True)",
           "ids, sizes = np.unique(labels, return_counts=True)", T("test_serve", "test_persist", "test_levels"),
           "/v1/clusters lists noise (-1) and outliers (-2) as clusters"),
    Mutant("smodel-2", "serve/model.py", "for c, n in enumerate(t[\"sizes\"]) if n > 0]", "for c, n in enumerate(t[\"sizes\"])]",
           T("test_serve", "test_persist", "test_levels", "test_curated_tree"),
           "/v1/levels lists ids with no training items (merged away in the studio)"),
    Mutant("smodel-3", "serve/model.py", "assigned = dict(zip(*np.unique(np.asarray(pipe.cluster_), return_counts=True)))",
           "assigned = dict(zip(*np.unique(np.asarray(pipe.labels_), return_counts=True)))",
           T("test_serve", "test_persist", "test_levels"), "assigned_size counts the clustered items only (= size)"),
    Mutant("smodel-4", "serve/model.py", "\"name\": names.get(c) if t[\"chosen\"] else", "\"name\": names.get(c) if not t[\"chosen\"] else",
           T("test_serve", "test_persist", "test_levels", "test_level_names"),
           "/v1/levels names the chosen level with the other levels' names and vice versa"),
    Mutant("smodel-5", "serve/model.py", "            if n_in != pipe.n_features_in_:", "            if False:",
           T("test_serve", "test_tags"), "a tag model of another vector size is loaded (fails at the first request)"),
    # ---- embed/store.py: cache keys, encoder, resume ----
    Mutant("store-1", "embed/store.py", "k[:4] == (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)",
           "k[:1] == (st.st_size,)", T("test_store", "test_embed_resume", "test_badcache"),
           "a file edited in place to the same size keeps its old hash (old vector served)"),
    Mutant("store-2", "embed/store.py", "if max(st.st_mtime, st.st_ctime) < hashed_after - _RACY_S]",
           "]", T("test_store", "test_embed_resume", "test_badcache"),
           "a file written in the last 2 s is recorded (racily clean rule dropped)"),
    Mutant("store-3", "embed/store.py", "f\"SELECT hash FROM vectors WHERE encoder=? AND hash IN ({q})\", [encoder, *chunk]",
           "f\"SELECT hash FROM vectors WHERE ? IS NOT NULL AND hash IN ({q})\", [encoder, *chunk]",
           T("test_store", "test_embed_resume", "test_badcache"),
           "vectors of ANOTHER encoder count as cached (nothing embedded for the new one)"),
    Mutant("store-4", "embed/store.py", "    return not any(kind.startswith(f\"{FAILED}v{FAILURE_VERSION}",
           "    return any(kind.startswith(f\"{FAILED}v{FAILURE_VERSION}", T("test_store", "test_badcache", "test_cache_cli"),
           "prune drops the CURRENT decoder's remembered failures and keeps the stale ones"),
    Mutant("store-5", "embed/store.py", "if idle_s > 0 and now - used.get(k, now) < idle_s:",
           "if idle_s > 0 and now - used.get(k, now) > idle_s:", T("test_store", "test_badcache", "test_cache_cli", "test_dups_cache"),
           "a stale kind in use by another version is dropped; an idle one kept"),
    Mutant("store-6", "embed/store.py", "    if before is None:\n        return True", "    if before is None:\n        return False",
           T("test_store", "test_embed_resume", "test_badcache"),
           "a file whose stat failed before hashing counts as unchanged"),
    # ---- ingest/sources.py: which files are read, skipped and why ----
    Mutant("ingest-1", "ingest/sources.py", "where = f\"line {row + 2}\" if csv else f\"row {row}\"",
           "where = f\"line {row + 1}\" if csv else f\"row {row}\"", T("test_ingest", "test_hostile"),
           "a manifest row's message names the line above it (off by one)"),
    Mutant("ingest-2", "ingest/sources.py", "if name in SKIP_FOLDERS or _made_here(entry.path):", "if name in SKIP_FOLDERS:",
           T("test_ingest", "test_cli_cluster"), "a run folder (an --out inside the input) is scanned as input"),
    Mutant("ingest-3", "ingest/sources.py", "            if _hidden(name):\n                continue\n",
           "", T("test_ingest"), "hidden files (.DS_Store, ._x.jpg) are read as items"),
    Mutant("ingest-4", "ingest/sources.py", "        elif full in seen_path:", "        elif False:",
           T("test_ingest", "test_hostile"), "a path listed twice in a manifest becomes two items"),
    Mutant("ingest-5", "ingest/sources.py", "labels_from_folders != \"name\" else name_of_folder",
           "labels_from_folders == \"name\" else name_of_folder", T("test_ingest"),
           "--labels-from-folders name gives the whole relative path and path gives the last folder"),
    Mutant("ingest-6", "ingest/sources.py", "    if media == \"image\":\n        from . import images",
           "    if media == \"audio\":\n        from . import images", T("test_ingest", "test_hostile", "test_decode"),
           "an image over MAX_FILE_BYTES is read (not skipped from stat)"),
    Mutant("ingest-7", "ingest/sources.py", "return (\"audio\" if counts[\"audio\"] > counts[\"image\"] else \"image\"), counts",
           "return (\"audio\" if counts[\"audio\"] >= counts[\"image\"] else \"image\"), counts", T("test_ingest", "test_audio"),
           "a folder with as many sounds as pictures (none of either) is taken as audio"),
    # ---- studio/state.py: an edit's effect ----
    Mutant("state-1", "studio/state.py", "into = max(cl, key=lambda c: (sizes.get(c.id, 0), -c.id)).id",
           "into = min(cl, key=lambda c: (sizes.get(c.id, 0), -c.id)).id", T("test_studio"),
           "a merge without `into` keeps the SMALLEST cluster's id and name", k=STUDIO_K),
    Mutant("state-2", "studio/state.py", "                self.undone.append(self.done.pop())\n                self._rebuild()",
           "                self.undone.append(self.done.pop())", T("test_studio"),
           "undo pops the edit but leaves its effect (no rebuild)", k=STUDIO_K),
    Mutant("state-3", "studio/state.py", "            self.done.append(ev)\n            self.undone.clear()",
           "            self.done.append(ev)", T("test_studio"),
           "a new edit after an undo keeps the redo stack (redo re-applies over the new edit)", k=STUDIO_K),
    Mutant("state-4", "studio/state.py", "np.where(lab == OUTLIER, \"outlier\", \"noise\")", "np.where(lab == OUTLIER, \"noise\", \"outlier\")",
           T("test_studio"), "status: noise items called outliers and outliers noise", k=STUDIO_K),
    Mutant("state-5", "studio/state.py", "out = [t for t in tags if t not in set(remove)]", "out = list(tags)",
           T("test_studio"), "removing a tag keeps it", k=STUDIO_K),
    Mutant("state-6", "studio/state.py", "if len(text) > limit:", "if len(text) > limit + 1:",
           T("test_studio"), "a name one character over its bound is accepted", k=STUDIO_K),
    Mutant("state-7", "studio/state.py", "parent = int(np.bincount(src[src >= 0]).argmax())",
           "parent = int(np.bincount(src[src >= 0]).argmin())", T("test_studio", "test_curated_tree"),
           "a new cluster's parent is the cluster FEWEST of its items came from", k=STUDIO_K + " and not hierarchy_split"),
    # ---- studio/session.py: what the studio page shows ----
    Mutant("sess-1", "studio/session.py", "np.flatnonzero((kept != now) | (kept != before))", "np.flatnonzero(kept != now)",
           T("test_studio", "test_name_support", "test_name_sure_model"),
           "a cluster that only LOST items is not 'changed' (its name keeps its old support)", k=STUDIO_K),
    Mutant("sess-2", "studio/session.py", "idx = idx[np.argsort(self.probability[idx], kind=\"stable\")]",
           "idx = idx[np.argsort(-self.probability[idx], kind=\"stable\")]", T("test_studio"),
           "order=borderline lists the most typical members first", k=STUDIO_K),
    Mutant("sess-3", "studio/session.py", "idx = idx[np.lexsort((-self.probability[idx], share))]",
           "idx = idx[np.lexsort((share, -self.probability[idx]))]", T("test_studio"),
           "order=label sorts by membership, not by how rare the item's label is", k=STUDIO_K),
    Mutant("sess-4", "studio/session.py", "if j >= 0 and j != i][:k]", "if j >= 0][:k]",
           T("test_studio"), "an item lists itself among its neighbours", k=STUDIO_K),
    Mutant("sess-5", "studio/session.py", "page = idx[int(max(0, offset)): int(max(0, offset)) + limit]",
           "page = idx[int(max(0, offset)): int(max(0, offset)) + limit - 1]", T("test_studio"),
           "a page of members holds one fewer than asked (off by one)", k=STUDIO_K),
    # ---- studio/exports.py: a clean dataset ----
    Mutant("exp-1", "studio/exports.py", "return \"junk\" if c in junk else \"unassigned\" if c == -1 else \"outlier\" if c < 0 else None",
           "return \"junk\" if c in junk else \"outlier\" if c == -1 else \"unassigned\" if c < 0 else None",
           T("test_studio_dups", "test_studio"), "dropped.csv calls noise 'outlier' and outliers 'unassigned'", k=EXPORT_K),
    Mutant("exp-2", "studio/exports.py", "bool(rep[i]) if rep is not None else False, -i)",
           "bool(rep[i]) if rep is not None else False, i)", T("test_studio_dups", "test_studio"),
           "of equal copies the LAST is kept, not the first", k=EXPORT_K),
    Mutant("exp-3", "studio/exports.py", "ranked = sorted(members, key=key, reverse=True)", "ranked = sorted(members, key=key)",
           T("test_studio_dups", "test_studio"), "the smallest copy is kept, the original dropped", k=EXPORT_K),
    Mutant("exp-4", "studio/exports.py", "if g >= 0 and why[i] is None:", "if g >= 0:",
           T("test_studio_dups", "test_studio"),
           "a junk copy may be the kept one, so the group's good copy is dropped too", k=EXPORT_K),
    Mutant("exp-5", "studio/exports.py", "leak = splits is not None and splits[i] != splits[keep]",
           "leak = splits is not None and splits[i] == splits[keep]", T("test_studio_dups", "test_studio"),
           "a copy across train/test called 'duplicate', one in the same split 'leak'", k=EXPORT_K),
    Mutant("exp-6", "studio/exports.py", "if chosen is not None and chosen in members and len(members) > 1:",
           "if chosen is not None and len(members) > 1:", T("test_studio_dups", "test_studio"),
           "a person's chosen copy that is junk is 'kept' (none of the group survives)", k=EXPORT_K),
    # ---- tune/study.py: the best trial, resume ----
    Mutant("tune-1", "tune/study.py", "    best = max(pruned, key=reach)", "    best = min(pruned, key=reach)",
           T("test_tune"), "every trial pruned: the WORST pruned trial is run at full size", k=TUNE_K),
    Mutant("tune-2", "tune/study.py", "best = max(front, key=lambda t:", "best = min(front, key=lambda t:",
           T("test_tune"), "multi-objective: the default pick is the WORST on the front", k="cli_tune_on_a_vectors or sampler"),
    Mutant("tune-3", "tune/study.py", "            study.enqueue_trial(t.params, user_attrs={\"retry_of\": t.number})",
           "            pass", T("test_tune"), "a trial interrupted by a kill is not retried on resume", slow=True,
           k="interrupted_study_resumes or ctrl_c"),
    Mutant("tune-4", "tune/study.py", "    return latest if old == new else None", "    return latest",
           T("test_tune"), "a resumed study with a NEW best publishes nothing (the old version stays)", slow=True,
           k="resumed_tune or published_before"),
    Mutant("tune-5", "tune/study.py", "return best is None or value > best", "return best is None or value < best",
           T("test_tune"), "leader pruner: only a trial WORSE than the promoted best goes on", k=TUNE_K),
    Mutant("tune-6", "tune/study.py", "        if n_done >= n_total:\n            return", "        if n_done > n_total:\n            return",
           T("test_tune"), "the study runs one trial more than asked", k="sampler or cli_tune or fails or largest_seed"),
    # ---- workflow.py: run.json and the assignments ----
    Mutant("wf-1", "workflow.py", "\"noise\": int((labels == -1).sum()),", "\"noise\": int((labels < 0).sum()),",
           T("test_cli_cluster", "test_report", "test_pipeline", "test_smoke"), "run.json's noise count includes the outliers"),
    Mutant("wf-2", "workflow.py", "top = np.argsort(mass)[::-1][:n_classes]", "top = np.argsort(mass)[:n_classes]",
           T("test_cli_cluster", "test_report", "test_smoke", "test_pipeline"), "a cluster's top ImageNet classes are its LEAST likely",
           nth=1),
    Mutant("wf-3", "workflow.py", "df[\"assigned_name\"] = [names.get(int(c)) for c in df[\"assigned_cluster\"]]",
           "df[\"assigned_name\"] = [names.get(int(c)) for c in df[\"cluster\"]]",
           T("test_cli_cluster", "test_report", "test_pipeline", "test_smoke", "test_levels"),
           "assigned_name names the item's cluster (None for noise), not its assigned one"),
    Mutant("wf-4", "workflow.py", "df[f\"level_{lv}\"] = np.asarray(levels)[:, lv].astype(np.int64)",
           "df[f\"level_{lv}\"] = np.asarray(levels)[:, -1 - lv].astype(np.int64)",
           T("test_levels", "test_cli_cluster", "test_hierarchy", "test_pipeline"), "the level_<k> columns are written fine to coarse"),
    Mutant("wf-5", "workflow.py", "cand = idx[examples_from[idx]] if examples_from is not None else idx",
           "cand = idx", T("test_dedup", "test_cli_cluster"), "--dedup: a cluster's examples may be copies of one picture",
           slow=True, k="dedup"),
    # ---- report/build.py: what the report states ----
    Mutant("rep-1", "report/build.py", "        out.sort(key=lambda e: -e[\"size\"])", "        out.sort(key=lambda e: e[\"size\"])",
           T("test_report"), "the report's cards: smallest cluster first"),
    Mutant("rep-2", "report/build.py", "border = idx[np.argsort(probs_[idx], kind=\"stable\")[:n_border]]",
           "border = idx[np.argsort(-probs_[idx], kind=\"stable\")[:n_border]]", T("test_report"),
           "'borderline members' are the most typical"),
    Mutant("rep-3", "report/build.py", "    noise_idx = np.flatnonzero(labels == -1)", "    noise_idx = np.flatnonzero(labels < 0)",
           T("test_report"), "the noise gallery and its count include the outliers"),
    Mutant("rep-4", "report/build.py", "\"share\": float(cnt[j] / len(known))} for j in o]",
           "\"share\": float(cnt[j] / len(idx))} for j in o]", T("test_report"),
           "true-label shares counted over all members, unlabelled ones included"),
    Mutant("rep-5", "report/build.py", "            if c in hand_:\n                entry.update(name_sure=True",
           "            if False:\n                entry.update(name_sure=True", T("test_report", "test_name_sure_model"),
           "a name given by hand is shown unsure"),
    Mutant("rep-6", "report/build.py", "return pairs.shape[1] == len(np.unique(labels[ok])) == len(np.unique(lv[ok]))",
           "return pairs.shape[1] == len(np.unique(labels[ok]))", T("test_report", "test_levels"),
           "a coarser level (one of its clusters holds two of the run's) is taken as the run's level"),
    # ---- metrics.py: formulas ----
    Mutant("metric-5", "metrics.py", "    s[own <= 1] = 0.0", "    s[own < 1] = 0.0", T("test_metrics", "test_evaluate"),
           "silhouette of a singleton is not 0 (scikit-learn's convention)"),
    Mutant("metric-6", "metrics.py", "a = S[np.arange(m), codes] / np.maximum(own - 1, 1)",
           "a = S[np.arange(m), codes] / np.maximum(own, 1)", T("test_metrics", "test_evaluate"),
           "silhouette's a(i) averages over the item itself too"),
    Mutant("metric-7", "metrics.py", "small = ids[counts < min_points]", "small = ids[counts <= min_points]",
           T("test_metrics", "test_evaluate"), "DBCV drops a cluster of exactly min_points items"),
    Mutant("metric-8", "metrics.py", "\"clustered\": _scores(t[c], p[c]),", "\"clustered\": _scores(t, p),",
           T("test_metrics", "test_evaluate"), "'clustered' scores include the noise items"),
    # ---- stages/outliers.py ----
    Mutant("outl-1", "stages/outliers.py", "self.offset_ = float(q1 - 1.5 * (q3 - q1))", "self.offset_ = float(q1 - 3.0 * (q3 - q1))",
           T("test_stages", "test_pipeline"), "isolation forest's fence at 3 IQR, not Tukey's 1.5"),
    Mutant("outl-2", "stages/outliers.py", "            self._graph_fit_ = True", "            self._graph_fit_ = False",
           T("test_stages", "test_pipeline"), "LOF fitted on the graph scores new points against the graph (wrong space)"),
    Mutant("outl-3", "stages/outliers.py", "if neighbors_graph is not None and self.metric == \"euclidean\":",
           "if neighbors_graph is not None:", T("test_stages", "test_pipeline"),
           "LOF with metric cosine uses the euclidean neighbour graph"),
    Mutant("outl-4", "stages/outliers.py", "if isinstance(ms, float) and ms > 1:", "if isinstance(ms, float) and ms > 1e9:",
           T("test_stages", "test_pipeline"), "max_samples=300.0 (a count as float) is refused by scikit-learn"),
    # ---- stages/cluster.py and the pipeline's --max-unclustered ----
    Mutant("clus-1", "stages/cluster.py", "    best = tally.argmax(axis=1)", "    best = tally.argmin(axis=1)",
           T("test_stages", "test_pipeline"), "the neighbour vote picks the label with the LEAST weight"),
    Mutant("clus-2", "stages/cluster.py", "        if n <= mcs:\n", "        if n < mcs:\n",
           T("test_stages", "test_pipeline", "test_small_collections"), "HDBSCAN on exactly min_cluster_size items (degenerate)"),
    Mutant("clus-3", "stages/cluster.py", "int(max(1, min(self.min_samples, n - 1)))", "int(max(1, min(self.min_samples, n)))",
           T("test_stages", "test_pipeline", "test_small_collections"), "min_samples not capped below n (degenerate input)"),
    Mutant("clus-4", "stages/cluster.py", "return lab.astype(np.int64), (d2 - d1) / np.maximum(d2 + d1, 1e-12)",
           "return lab.astype(np.int64), (d2 - d1) / np.maximum(d2, 1e-12)", T("test_stages", "test_pipeline"),
           "k-means membership margin divided by d2, not d2 + d1"),
    Mutant("clus-5", "stages/cluster.py", "if s[i] >= s[i - 1] and s[i] >= s[i + 1]]", "if s[i] >= s[i - 1] or s[i] >= s[i + 1]]",
           T("test_stages", "test_pipeline"), "silhouette-k local_max takes any point that beats one neighbour"),
    Mutant("clus-6", "stages/cluster.py", "    if d.shape[1] == 1:\n", "    if d.shape[1] == 0:\n",
           T("test_stages", "test_pipeline", "test_small_collections"), "k-means with one cluster (degenerate): IndexError"),
    Mutant("clus-7", "stages/cluster.py", "        p = np.where(labels >= 0, share * prob, 0.0)", "        p = share * prob",
           T("test_stages", "test_pipeline"), "predicted noise gets a membership > 0"),
    Mutant("mu-1", "pipeline.py", "take = np.argsort(-share, kind=\"stable\")[:int(un.sum() - budget)]",
           "take = np.argsort(share, kind=\"stable\")[:int(un.sum() - budget)]", T("test_pipeline", "test_levels", "test_hierarchy"),
           "--max-unclustered (flat): the items with the WEAKEST pull are assigned"),
    Mutant("mu-2", "pipeline.py", "if budget is None or un.sum() <= budget or un.all():", "if budget is None or un.sum() <= budget:",
           T("test_pipeline", "test_levels", "test_hierarchy", "test_small_collections"),
           "--max-unclustered with every item noise (degenerate): a vote with no voters"),
    Mutant("mu-3", "pipeline.py", "budget = int(np.floor(float(mu) * len(lab))) if mu is not None else None",
           "budget = int(np.ceil(float(mu) * len(lab))) if mu is not None else None", T("test_pipeline", "test_levels", "test_hierarchy"),
           "--max-unclustered (flat) rounds up: one item more left unclustered"),
]


def apply(mutant: Mutant, src_root: Path) -> str | None:
    """Apply ``mutant`` to the copy at ``src_root``; None when done, else why not."""
    path = src_root / "mediacluster" / mutant.file
    text = path.read_text()
    n = text.count(mutant.old)
    if n == 0:
        return "text not found"
    if n > 1 and mutant.nth == 0:
        return f"text occurs {n} times; name nth"
    if mutant.nth:
        if mutant.nth > n:
            return f"only {n} occurrences"
        at = -1
        for _ in range(mutant.nth):
            at = text.index(mutant.old, at + 1)
    else:
        at = text.index(mutant.old)
    path.write_text(text[:at] + mutant.new + text[at + len(mutant.old):])
    return None


def run_tests(mutant: Mutant | None, tests: list[str], k: str, slow: bool, timeout: float,
              src_root: Path, tests_root: Path = ROOT) -> tuple[str, float, str]:
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-o",
           "addopts=", *tests]
    if not slow:
        cmd += ["-m", "not slow"]
    if k:
        cmd += ["-k", k]
    if mutant:
        cmd += mutant.extra
    env = dict(os.environ, PYTHONPATH=str(src_root), PYTHONDONTWRITEBYTECODE="1")
    t0 = time.perf_counter()
    # output to a file, not a pipe: a process a test leaves behind (a lock holder it killed
    # late, a server) would keep a pipe open and the run waiting for it
    log = src_root.parent / "pytest.log"
    with open(log, "w") as out:
        try:
            p = subprocess.run(cmd, cwd=tests_root, env=env, stdout=out, stderr=subprocess.STDOUT,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            return "timeout", time.perf_counter() - t0, ""
    wall = time.perf_counter() - t0
    tail = log.read_text(errors="replace").strip().splitlines()
    last = tail[-1] if tail else ""
    if p.returncode == 0:
        return "survived", wall, last
    if p.returncode == 5:
        return "no-tests", wall, last
    failed = next((ln for ln in tail if ln.startswith(("FAILED", "ERROR"))), last)
    return "killed", wall, failed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", default=None, help="mutant ids")
    ap.add_argument("--module", default=None, help="mutants whose id starts with this")
    ap.add_argument("--slow", action="store_true", help="run the slow tier too, for every mutant")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--baseline", action="store_true",
                    help="also run each mutant's tests on the unchanged copy first")
    ap.add_argument("--tests-from", default=None, metavar="GITREF",
                    help="run the tests as they are at this commit (the 'before' of a new test)")
    ap.add_argument("-k", dest="k", default=None, help="a pytest -k expression for every mutant chosen")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args(argv)
    chosen = [m for m in MUTANTS
              if (args.only is None or m.id in args.only)
              and (args.module is None or m.id.startswith(args.module))]
    if args.list:
        for m in chosen:
            n = (ROOT / PKG / m.file).read_text().count(m.old)
            ok = "ok" if n == 1 or (m.nth and m.nth <= n) else f"STALE ({n} matches)"
            print(f"{m.id:12} {m.file:28} {ok:6} {m.what}")
        return 0
    counts: dict[str, int] = {}
    tests_root = ROOT
    if args.tests_from:
        tests_root = Path(tempfile.mkdtemp(prefix="mutant-tests-"))
        archive = subprocess.run(["git", "archive", args.tests_from, "tests", "benchmarks", "pyproject.toml"],
                                 cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tests_root)], input=archive, check=True)
    for m in chosen:
        with tempfile.TemporaryDirectory(prefix="mutant-") as tmp:
            src_root = Path(tmp) / "src"
            shutil.copytree(ROOT / PKG, src_root / "mediacluster",
                            ignore=shutil.ignore_patterns("__pycache__"))
            slow = args.slow or m.slow
            if args.k is not None:
                m = Mutant(**{**m.__dict__, "k": args.k})
            if args.baseline:
                state, wall, last = run_tests(None, m.tests, m.k, slow, args.timeout, src_root,
                                              tests_root)
                if state != "survived":
                    print(f"{m.id:12} BASELINE {state} ({wall:.0f}s) {last}", flush=True)
                    counts["baseline-fail"] = counts.get("baseline-fail", 0) + 1
                    continue
            why = apply(m, src_root)
            if why:
                state, wall, last = "stale", 0.0, why
            else:
                state, wall, last = run_tests(m, m.tests, m.k, slow, args.timeout, src_root,
                                              tests_root)
        counts[state] = counts.get(state, 0) + 1
        tests = " ".join(Path(t).stem for t in m.tests) + (f" -k '{m.k}'" if m.k else "")
        print(f"{m.id:12} {state:9} {wall:5.0f}s  {m.what}  [{tests}{' slow' if slow else ''}]"
              f"\n{'':14}{last[:160]}", flush=True)
    print("summary:", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if args.tests_from:
        shutil.rmtree(tests_root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
