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
