"""The HTML report: files, caching, and the page itself in real headless Chromium."""

from __future__ import annotations

import html as html_mod
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from studio_helpers import browser

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def make_run(emb, out: Path) -> Path:
    """A run folder written by the package's own functions from real embeddings."""
    from mediacluster.pipeline import Pipeline
    from mediacluster.workflow import publish_run

    pipe = Pipeline(random_state=0, outliers="lof").fit(emb.vectors)
    return publish_run(out, emb, pipe, name=False).path


def add_study(run_dir: Path, X: np.ndarray) -> None:
    """A small real Optuna study in run_dir/study.db: K-means k vs silhouette, coverage recorded."""
    import optuna
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial):
        k = trial.suggest_int("k", 2, 6)
        lab = KMeans(k, n_init=1, random_state=trial.number).fit_predict(X)
        trial.set_user_attr("coverage", 1.0 - 0.05 * trial.number)
        return float(silhouette_score(X, lab))

    st = optuna.create_study(study_name="demo", storage=f"sqlite:///{run_dir / 'study.db'}",
                             direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    st.optimize(objective, n_trials=5)


@pytest.fixture(scope="module")
def report_run(cifar3_embeddings, tmp_path_factory):
    run = make_run(cifar3_embeddings, tmp_path_factory.mktemp("run") / "run")
    add_study(run, cifar3_embeddings.vectors[:150])
    import pandas as pd

    labels = pd.read_parquet(run / "assignments.parquet")["cluster"].to_numpy()
    first = int(min(labels[labels >= 0]))
    (run / "names.yaml").write_text(f"{first}: my hand-given name\n", encoding="utf-8")
    from mediacluster.report import make_report

    t = time.perf_counter()
    html = make_report(run, progress=False)
    return {"run": run, "html": html, "labels": labels, "first": first, "seconds": time.perf_counter() - t}


def test_report_files(report_run):
    run, html, labels = report_run["run"], report_run["html"], report_run["labels"]
    text = html.read_text(encoding="utf-8")
    n_clusters = len(set(labels[labels >= 0].tolist()))
    assert n_clusters >= 2
    assert len(re.findall(r'<section class="card" data-cluster="(\d+)"', _run_cards(text))) == n_clusters
    # the cards largest first; the noise and the outlier galleries each count their own items
    order = [int(c) for c in re.findall(r'<section class="card" data-cluster="(\d+)"', _run_cards(text))]
    sizes = [int((labels == c).sum()) for c in order]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) > 1, sizes
    n_noise, n_out = int((labels == -1).sum()), int((labels == -2).sum())
    assert f"({n_noise:,} items, label -1" in text and f"({n_out:,} items, label -2" in text
    # self-contained: nothing fetched from the network
    assert not re.search(r'(src|href)="(https?:)?//', text)
    assert "<script src" not in text and "<link" not in text
    # every item has a thumbnail file, lazily loaded
    thumbs = list((html.parent / "thumbs").glob("*.jpg"))
    assert len(thumbs) == len(labels)  # 300 distinct images
    assert 'loading="lazy"' in text
    # the hand-given name wins over the automatic one, which is still shown
    assert "my hand-given name" in text
    names = json.loads((run / "names.json").read_text())["clusters"]
    assert all(e["name"] and len(e["alternatives"]) <= 3 for e in names)
    clusters = json.loads((run / "clusters.json").read_text())["clusters"]
    assert all("name" in e and "alternatives" in e for e in clusters)
    # the map is cached and reused
    assert (run / "map2d.npy").exists()
    xy = np.load(run / "map2d.npy")
    assert xy.shape == (len(labels), 2) and np.isfinite(xy).all()


def test_report_rebuild_reuses_cache(report_run, caplog):
    from mediacluster.report import build_report

    run = report_run["run"]
    m0 = (run / "map2d.npy").stat().st_mtime_ns
    thumbs = sorted((run / "report" / "thumbs").iterdir())
    mt = [p.stat().st_mtime_ns for p in thumbs]
    t = time.perf_counter()
    caplog.set_level("INFO", logger="mediacluster.report.build")
    build_report(run, progress=False)
    assert "2-D map" not in caplog.text  # cached: nothing laid out, nothing said
    assert (run / "map2d.npy").stat().st_mtime_ns == m0
    assert [p.stat().st_mtime_ns for p in thumbs] == mt
    assert time.perf_counter() - t < report_run["seconds"]


def _open_and_wait_for_first_paint(drv, html: Path, timeout: float = 60) -> None:
    """Load the report page and wait (at most ``timeout`` s) until its map reports a first paint."""
    drv.get(html.resolve().as_uri())
    deadline = time.time() + timeout
    while not drv.execute_script("return window.mcReport && window.mcReport.firstPaintMs") and time.time() < deadline:
        time.sleep(0.05)


def _wait_for(drv, script: str, want, timeout: float = 20):
    """Poll ``script`` (a JS expression) until it returns ``want`` or ``timeout`` s pass; its last
    value (the caller asserts on it, so a page that never gets there fails with what it showed)."""
    deadline = time.time() + timeout
    while True:
        got = drv.execute_script(f"return {script}")
        if got == want or time.time() > deadline:
            return got
        time.sleep(0.05)


PIXELS_JS = """
const c = document.getElementById('map');
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let ink = 0, h = 0;
for (let i = 0; i < d.length; i += 4) {
  if (d[i] < 245 || d[i+1] < 245 || d[i+2] < 245) ink++;
  h = (h * 31 + d[i] + 7 * d[i+1] + 13 * d[i+2]) >>> 0;
}
return [ink, h];
"""


@pytest.mark.browser
def test_laying_out_the_map_is_said_with_its_time(report_run, caplog):
    """A large run's report sat silent for a minute while its 2-D map was laid out (50,000
    CIFAR-10 images: 57 s between the fit's last line and the thumbnails' bar)."""
    from mediacluster.report.build import map_2d
    from mediacluster.rundir import RunDir

    run = RunDir.open(report_run["run"])
    vectors = np.load(report_run["run"] / "embeddings.npy")
    caplog.set_level("INFO", logger="mediacluster.report.build")
    xy = map_2d(run, vectors, method="pca", recompute=True)
    assert xy.shape == (len(vectors), 2)
    assert f"2-D map: laying out {len(vectors):,} items (pca" in caplog.text
    assert "2-D map: done in " in caplog.text
    map_2d(run, vectors, method="umap", recompute=True)  # the report's own map back for the other tests


def test_report_in_chromium(report_run, tmp_path, module_chromium):
    html, labels = report_run["html"], report_run["labels"]
    with browser(shared=module_chromium) as drv:
        _open_and_wait_for_first_paint(drv, html)
        n_clusters = len(set(labels[labels >= 0].tolist()))
        cards = drv.find_elements("css selector", ".cards:not([hidden]) [data-cluster]")  # the run's level
        assert len(cards) == n_clusters
        ink0, hash0 = drv.execute_script(PIXELS_JS)
        assert ink0 > 300, "the map canvas is blank"
        assert drv.execute_script("return window.mcReport.drawn") == len(labels)
        # clicking a card filters the map to that cluster
        cid = int(cards[-1].get_attribute("data-cluster"))
        cards[-1].click()
        assert _wait_for(drv, "window.mcReport.filter", cid) == cid
        assert drv.find_element("id", "map").get_attribute("data-filter") == str(cid)
        want = int((labels == cid).sum())
        assert _wait_for(drv, "window.mcReport.highlighted", want) == want
        ink1, hash1 = drv.execute_script(PIXELS_JS)
        assert hash1 != hash0
        # without a mouse: Tab reaches the legend's entries and Enter filters the map (the
        # entries were plain spans, out of the keyboard's reach)
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        drv.execute_script("document.getElementById('reset').click()")
        assert _wait_for(drv, "window.mcReport.filter", None) is None
        entry = drv.find_elements("css selector", "#legend .item")[0]
        other = int(entry.get_attribute("data-id"))
        drv.execute_script("document.getElementById('reset').focus()")
        for _ in range(50):
            ActionChains(drv).send_keys(Keys.TAB).perform()
            if drv.execute_script("return document.activeElement.getAttribute('data-id')") == str(other):
                break
        ActionChains(drv).send_keys(Keys.ENTER).perform()
        assert _wait_for(drv, "window.mcReport.filter", other) == other
        # tuning plots were drawn from the study
        assert len(drv.find_elements("css selector", "#study-plots svg circle")) >= 5
        drv.execute_script("window.scrollTo(0, 0)")
        shot = tmp_path / "report.png"
        assert drv.save_screenshot(str(shot))
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(shot, ARTIFACTS / "report.png")
        logs = drv.get_log("browser")
        severe = [e for e in logs if e.get("level") == "SEVERE"]
        assert not severe, severe


def test_report_cli(report_run, tmp_path, capsys):
    from mediacluster.cli import main

    out = tmp_path / "rep"
    assert main(["report", str(report_run["run"]), "--out", str(out), "--quiet", "--names-template"]) == 0
    assert (out / "index.html").exists() and "file://" in capsys.readouterr().out
    # the template never overwrites the person's names.yaml
    assert "my hand-given name" in (report_run["run"] / "names.yaml").read_text()
    assert main(["report", str(tmp_path / "not-a-run")]) == 2
    # a file where the report folder goes is the user's to fix (exit 2 naming it), not a bug (exit 1)
    (tmp_path / "in-the-way").write_text("x")
    capsys.readouterr()
    assert main(["report", str(report_run["run"]), "--out", str(tmp_path / "in-the-way"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "error: cannot write" in err and "in-the-way" in err and "internal error" not in err, err


@pytest.mark.browser
@pytest.mark.slow
def test_large_report_paints_density_and_loads_names_on_demand(tmp_path, module_chromium):
    """A run of more than INLINE_MAX items: names in chunk files loaded when hovered, the map
    rasterised by density (one ImageData per frame), discs again once zoomed in."""
    from mediacluster.pipeline import Pipeline
    from mediacluster.report.build import INLINE_MAX, build_report
    from mediacluster.workflow import cluster_folder

    rng = np.random.default_rng(0)
    n = INLINE_MAX + 10_000
    C = rng.normal(size=(12, 8)) * 4
    X = (C[rng.integers(0, 12, n)] + rng.normal(size=(n, 8))).astype(np.float32)
    np.save(tmp_path / "v.npy", X)
    pipe = Pipeline(random_state=0).with_params({"reducer": "pca", "reducer__n_components": 4,
                                                 "clusterer": "kmeans", "clusterer__n_clusters": 12})
    res = cluster_folder(tmp_path / "v.npy", tmp_path / "run", pipeline=pipe, fit_sample=1500, progress=False,
                         name=False)
    html = build_report(res.out, progress=False)
    assert (html.parent / "paths" / "0000.js").exists()
    assert html.stat().st_size < 60 * n  # x, y, label per item (base64) and little else
    with browser(shared=module_chromium) as drv:
        _open_and_wait_for_first_paint(drv, html)
        st = drv.execute_script("return [window.mcReport.mode, window.mcReport.drawn, window.mcReport.firstPaintMs]")
        assert st[0] == "density" and st[1] == n
        assert st[2] < 10_000  # ms; a million items paint in ~0.5-1.5 s (benchmarks/RESULTS.md "Scale")
        ink, _ = drv.execute_script(PIXELS_JS)
        assert ink > 2000, "the map canvas is blank"
        i = n - 5  # an item of the last chunk: its name is loaded when it is first hovered
        name = drv.execute_script(f"""
            var m = window.mcReport, c = document.getElementById('map'), r = c.getBoundingClientRect();
            var p = m.screenOf({i});
            c.dispatchEvent(new PointerEvent('pointermove', {{clientX: r.left + p[0], clientY: r.top + p[1], bubbles: true}}));
            return document.getElementById('tiptext').textContent;""")
        assert name.startswith("#")  # shown at once, named when the chunk arrives
        deadline = time.time() + 20
        while time.time() < deadline:
            text = drv.execute_script("return document.getElementById('tiptext').textContent")
            if not text.startswith("#"):
                break
            time.sleep(0.1)
        assert text.split()[0].isdigit() and not text.startswith("#"), text
        mode = drv.execute_script("""var m = window.mcReport, c = document.getElementById('map').getBoundingClientRect();
            for (var k = 0; k < 14; k++) m.zoom(1.8, c.width / 2, c.height / 2); return m.mode;""")
        assert mode == "discs"
        assert not [e for e in drv.get_log("browser") if e.get("level") == "SEVERE"]


# ------------------------------------------------------------------------------ levels
def make_level_run(emb, out: Path, hierarchy_file: bool) -> tuple[Path, np.ndarray, int]:
    """A run folder written through ``RunDir`` whose assignments carry the nested levels of a
    real hierarchy fit (``level_0..level_{L-1}``, coarse to fine) and whose ``cluster`` column
    is one of them; with ``hierarchy_file`` the levels are in ``hierarchy.npz`` instead."""
    from sklearn.decomposition import PCA

    from mediacluster.rundir import RunDir
    from mediacluster.stages.hierarchy import HierarchyClusterer
    from mediacluster.workflow import assignment_frame, cluster_summaries

    Z = PCA(n_components=8, random_state=0).fit_transform(emb.vectors)
    h = HierarchyClusterer(min_cluster_size=5).fit(Z)
    levels = h.levels_
    assert len(levels) >= 3
    chosen = int(np.flatnonzero(h.n_clusters_per_level_ >= 3)[0])
    lab = levels[chosen]
    with RunDir.create(out, command="cluster") as b:
        b.write_embeddings(emb)
        df = assignment_frame(emb.ids, emb.paths, emb.labels,
                              {"labels": lab, "probabilities": h.level_probabilities_[chosen]})
        if hierarchy_file:
            P = h.parents_
            b.write_hierarchy({"levels": levels, "level": np.int64(chosen),
                               "parents": np.concatenate(P), "parents_offsets": np.cumsum([0] + [len(p) for p in P]),
                               "level_probabilities": h.level_probabilities_.astype(np.float32)})
        else:
            for k, lv in enumerate(levels):
                df[f"level_{k}"] = lv
        b.write_assignments(df)
        b.write_clusters(cluster_summaries(emb, lab))
        b.write_info({"encoder": {"name": emb.encoder, "media": "image"}})
    return b.published.path, levels, chosen


@pytest.fixture(scope="module")
def level_run(cifar3_embeddings, tmp_path_factory):
    from mediacluster.report import make_report

    run, levels, chosen = make_level_run(cifar3_embeddings, tmp_path_factory.mktemp("lv") / "run", False)
    return {"run": run, "levels": levels, "chosen": chosen, "html": make_report(run, progress=False)}


def _page_data(html: Path) -> dict:
    text = html.read_text(encoding="utf-8")
    m = re.search(r'<script id="mc-data" type="application/json">(.*?)</script>', text, re.S)
    return json.loads(m.group(1))


def _run_cards(text: str) -> str:
    """The HTML of the run's own cards (the level in use when the run has levels)."""
    if 'data-view="' not in text:
        return text
    m = re.search(r'<script id="mc-data" type="application/json">(.*?)</script>', text, re.S)
    return _view_box(text, json.loads(m.group(1))["levels"]["current"])


def _view_box(text: str, k: int) -> str:
    """The HTML of level view ``k``'s cards."""
    start = text.index(f'<div class="cards" data-view="{k}"')
    ends = [i for i in (text.find('<div class="cards" data-view=', start + 1), text.find('<section id="noise"', start))
            if i > 0]
    return text[start:min(ends)]


@pytest.mark.slow
def test_report_level_views(level_run):
    """One view per level: the run's level keeps the run's names and cards, every other level
    gets its own labels, automatic names, colours and cards."""
    import base64

    levels, chosen, html = level_run["levels"], level_run["chosen"], level_run["html"]
    text = html.read_text(encoding="utf-8")
    D = _page_data(html)
    views = D["levels"]["views"]
    assert len(views) == len(levels) and D["levels"]["current"] == chosen
    assert "c" not in views[chosen]  # the run's own view: the page's main labels
    run_names = {c["id"]: c["name"] for c in D["clusters"]}
    for k, v in enumerate(views):
        n_k = len(np.unique(levels[k]))
        assert v["n_clusters"] == n_k and f"level {k}: {n_k} clusters" in v["label"]
        if k == chosen:
            continue
        lab = np.frombuffer(base64.b64decode(v["c"]), dtype=np.int32)
        assert np.array_equal(lab, levels[k])
        assert sorted(c["id"] for c in v["clusters"]) == sorted(np.unique(levels[k]).tolist())
        assert all(c["size"] == int((levels[k] == c["id"]).sum()) for c in v["clusters"])
        # names by the automatic rule (ImageNet probabilities -> WordNet), distinct in the level
        names = [c["name"] for c in v["clusters"]]
        assert all(nm and not nm.startswith("cluster ") for nm in names) and len(set(names)) == len(names)
        # that level's cards, hidden until chosen
        assert f'<div class="cards" data-view="{k}" hidden>' in text
        box = _view_box(text, k)
        assert len(re.findall(r'<section class="card" data-cluster="(\d+)"', box)) == n_k
    # colours follow the run's clusters: a coarser level's cluster has the colour of its
    # largest run cluster, and each run cluster's largest child keeps its colour
    run_color = {c["id"]: c["color"] for c in D["clusters"]}
    run_lab = levels[chosen]
    for k, v in enumerate(views):
        if k == chosen:
            continue
        col = {c["id"]: c["color"] for c in v["clusters"]}
        for c in col:
            members = run_lab[levels[k] == c]
            biggest_run = int(np.bincount(members).argmax())
            if k < chosen:
                assert col[c] == run_color[biggest_run]
        if k > chosen:
            for r in np.unique(run_lab):
                kids = levels[k][run_lab == r]
                assert col[int(np.bincount(kids).argmax())] == run_color[int(r)]
    box = _view_box(text, chosen)
    ids = [int(x) for x in re.findall(r'<section class="card" data-cluster="(\d+)"', box)]
    assert sorted(ids) == sorted(run_names)
    assert all(html_mod.escape(run_names[c]) in box for c in ids)
    assert text.count('class="level-select"') == 2  # over the legend and over the cards


@pytest.mark.slow
def test_report_levels_from_hierarchy_file(cifar3_embeddings, tmp_path):
    """Levels in ``hierarchy.npz`` (no level columns) give the same switch; its per-level
    probabilities give each level's cards their borderline members."""
    from mediacluster.report import build_report

    run, levels, chosen = make_level_run(cifar3_embeddings, tmp_path / "run", True)
    html = build_report(run, progress=False)
    D = _page_data(html)
    assert len(D["levels"]["views"]) == len(levels) and D["levels"]["current"] == chosen
    text = html.read_text(encoding="utf-8")
    coarse = 0 if chosen != 0 else 1  # clusters bigger than their representatives
    assert "borderline" in _view_box(text, coarse)


def test_report_without_levels_has_no_switch(cifar3_embeddings, tmp_path):
    """A flat run (a clusterer without levels) gets no level switch."""
    from mediacluster.pipeline import Pipeline
    from mediacluster.report import build_report
    from mediacluster.workflow import publish_run

    pipe = Pipeline(random_state=0).with_params({"reducer": "pca", "reducer__n_components": 8,
                                                 "clusterer": "kmeans", "clusterer__n_clusters": 3})
    run = publish_run(tmp_path / "run", cifar3_embeddings, pipe.fit(cifar3_embeddings.vectors), name=False).path
    html = build_report(run, progress=False, map_method="pca")
    text = html.read_text(encoding="utf-8")
    assert 'class="level-select"' not in text and "levels" not in _page_data(html)
    assert len(re.findall(r'<section class="card" data-cluster="(\d+)"', text)) == 3


@pytest.mark.browser
@pytest.mark.slow
def test_report_level_switch_in_chromium(level_run, module_chromium):
    """Switching the level recolours the map, rebuilds the legend and shows that level's cards."""
    levels, chosen, html = level_run["levels"], level_run["chosen"], level_run["html"]
    with browser(shared=module_chromium) as drv:
        _open_and_wait_for_first_paint(drv, html)
        assert drv.execute_script("return window.mcReport.level") == chosen
        n_run = len(np.unique(levels[chosen]))
        assert len(drv.find_elements("css selector", "#legend .item")) == n_run
        _, hash0 = drv.execute_script(PIXELS_JS)
        k = len(levels) - 1 if chosen != len(levels) - 1 else 0
        sel = drv.find_elements("css selector", "select.level-select")[0]
        from selenium.webdriver.support.ui import Select

        Select(sel).select_by_value(str(k))
        n_k = len(np.unique(levels[k]))
        assert _wait_for(drv, "window.mcReport.level", k) == k
        assert _wait_for(drv, "document.querySelectorAll('#legend .item').length", n_k) == n_k
        shown = [e for e in drv.find_elements("css selector", ".cards[data-view]") if e.is_displayed()]
        assert len(shown) == 1 and shown[0].get_attribute("data-view") == str(k)
        assert len(shown[0].find_elements("css selector", ".card")) == n_k
        assert drv.find_element("id", "n-clusters").text == str(n_k)
        assert drv.find_elements("css selector", "select.level-select")[1].get_attribute("value") == str(k)
        _, hash1 = drv.execute_script(PIXELS_JS)
        assert hash1 != hash0
        # a card of the new level filters the map to its members
        card = shown[0].find_elements("css selector", ".card")[-1]
        cid = int(card.get_attribute("data-cluster"))
        card.click()
        want = int((levels[k] == cid).sum())
        assert _wait_for(drv, "window.mcReport.highlighted", want) == want
        drv.execute_script("window.mcReport.setFilter(null); window.scrollTo(0, 0)")
        assert _wait_for(drv, "window.mcReport.filter", None) is None
        ARTIFACTS.mkdir(exist_ok=True)
        drv.save_screenshot(str(ARTIFACTS / "report-levels.png"))  # the finer level, for a look
        # and back to the run's level
        Select(drv.find_elements("css selector", "select.level-select")[1]).select_by_value(str(chosen))
        assert _wait_for(drv, "document.querySelectorAll('#legend .item').length", n_run) == n_run
        assert not [e for e in drv.get_log("browser") if e.get("level") == "SEVERE"]


@pytest.mark.browser
@pytest.mark.slow
def test_large_report_loads_level_labels_on_demand(tmp_path, module_chromium):
    """A run of more than INLINE_MAX items with levels (the default clusterer, fitted on a
    sample): each level's labels are a script file loaded when the level is first chosen, so
    the page stays the size of a flat run's."""
    from mediacluster.pipeline import Pipeline
    from mediacluster.report.build import INLINE_MAX, build_report
    from mediacluster.rundir import RunDir
    from mediacluster.workflow import cluster_folder

    rng = np.random.default_rng(0)
    n = INLINE_MAX + 5_000
    C = rng.normal(size=(12, 8)) * 4
    X = (C[rng.integers(0, 12, n)] + rng.normal(size=(n, 8))).astype(np.float32)
    np.save(tmp_path / "v.npy", X)
    pipe = Pipeline(random_state=0).with_params({"reducer": "pca", "reducer__n_components": 4})
    res = cluster_folder(tmp_path / "v.npy", tmp_path / "run", pipeline=pipe, fit_sample=1500, progress=False,
                         name=False)
    levels = RunDir.open(res.out).read_hierarchy()["levels"]
    assert len(levels) >= 3 and levels.shape[1] == n
    html = build_report(res.out, progress=False)
    D = _page_data(html)
    views, cur = D["levels"]["views"], D["levels"]["current"]
    assert len(views) == len(levels)
    files = [v["file"] for k, v in enumerate(views) if k != cur]
    assert all((html.parent / f).exists() for f in files) and not any("c16" in v or "c" in v for v in views)
    assert html.stat().st_size < 60 * n  # no per-item level labels in the page itself
    k = 0 if cur != 0 else len(views) - 1
    with browser(shared=module_chromium) as drv:
        _open_and_wait_for_first_paint(drv, html)
        _, hash0 = drv.execute_script(PIXELS_JS)
        drv.execute_script(f"window.mcReport.setLevel({k})")
        deadline = time.time() + 20
        while drv.execute_script("return window.mcReport.level") != k and time.time() < deadline:
            time.sleep(0.1)
        assert drv.execute_script("return window.mcReport.level") == k
        assert len(drv.find_elements("css selector", "#legend .item")) == len(np.unique(levels[k]))
        assert drv.execute_script("return window.mcReport.drawn") == n
        _, hash1 = drv.execute_script(PIXELS_JS)
        assert hash1 != hash0
        assert not [e for e in drv.get_log("browser") if e.get("level") == "SEVERE"]


def test_thumbnails_of_unchanged_files_are_found_without_reading_them(tmp_path, monkeypatch):
    """A re-built report finds its thumbnails through the embedding cache's record of files
    hashed since they last changed, instead of reading every file again (5.4 s of a 12.4 s
    re-build at 50,000 CIFAR images, more with larger photos); a changed file gets a new one."""
    from PIL import Image

    from mediacluster import fileio
    from mediacluster.embed import store as store_mod
    from mediacluster.report import thumbs

    monkeypatch.setenv("MEDIACLUSTER_CACHE", str(tmp_path / "cache"))
    # files made a moment ago are not trusted by the cache's record ("racily clean"): here the
    # test's files are, so the second pass can use it without waiting
    monkeypatch.setattr(store_mod, "_RACY_S", -1.0)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        p = tmp_path / f"im{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    reads = []
    real = fileio.hash_file

    def counted(path):
        reads.append(str(path))
        return real(path)

    monkeypatch.setattr(fileio, "hash_file", counted)  # the cache reads files through fileio.hash_files
    monkeypatch.setattr(thumbs, "hash_file", counted)
    out = tmp_path / "thumbs"
    first = thumbs.make_thumbnails(paths + [None], out, size=32, progress=False)
    assert len(reads) == 6 and first[-1] is None and all(first[:6])
    from mediacluster.fileio import MADE_HERE

    assert (out / MADE_HERE).is_file()  # a folder scan of the collection passes over it
    assert sorted(x.name for x in out.iterdir() if x.name != MADE_HERE) == sorted(first[:6])
    reads.clear()
    assert thumbs.make_thumbnails(paths + [None], out, size=32, progress=False) == first
    assert reads == []  # nothing read: the names came from the record, the files from one listing
    Image.fromarray(rng.integers(0, 255, (60, 30, 3), dtype=np.uint8)).save(paths[2])  # edited
    again = thumbs.make_thumbnails(paths, out, size=32, progress=False)
    assert reads == [paths[2]]
    assert again[2] != first[2] and again[:2] == first[:2] and again[3:] == first[3:6]
    with Image.open(out / again[2]) as im:
        assert max(im.size) == 32 and im.size[0] < im.size[1]  # made from the new picture


@pytest.mark.slow
def test_cards_read_a_small_runs_vectors_once(cifar3_embeddings, tmp_path, monkeypatch):
    """Every level's cards take most rows again: a run whose vectors fit WHOLE_READ_MAX has them
    read in one pass (it was one read per cluster and level, one per row in sparse windows:
    440,000 reads and 3.4 s at 50,000 x 1,280), a larger one row by row; the page is the same."""
    from mediacluster.ingest.stream import NpyVectors
    from mediacluster.report import build

    run, levels, _ = make_level_run(cifar3_embeddings, tmp_path / "run", False)
    reads = []
    real = NpyVectors._pread

    def counted(self, fd, start, stop):
        reads.append((start, stop))
        return real(self, fd, start, stop)

    monkeypatch.setattr(NpyVectors, "_pread", counted)
    whole = build.build_report(run, tmp_path / "whole", progress=False)
    assert reads == [(0, len(cifar3_embeddings.ids))]
    reads.clear()
    monkeypatch.setattr(build, "WHOLE_READ_MAX", 0)
    by_rows = build.build_report(run, tmp_path / "rows", progress=False)
    assert len(reads) >= len(levels)  # the file read cluster by cluster, level by level
    assert _page_data(whole) == _page_data(by_rows)


def test_a_thumbnail_size_below_one_pixel_is_refused_by_name(tmp_path, capsys):
    """``report --thumb-size 0`` (or negative) was accepted and every thumbnail then failed on
    its own with "ZeroDivisionError: division by zero", listed item by item."""
    from mediacluster.cli import main

    rng = np.random.default_rng(0)
    np.save(tmp_path / "v.npy", rng.normal(size=(30, 8)).astype(np.float32))
    assert main(["cluster", str(tmp_path / "v.npy"), "--out", str(tmp_path / "run"), "--quiet", "--no-csv"]) == 0
    for size in ("0", "-5"):
        capsys.readouterr()
        assert main(["report", str(tmp_path / "run"), "--quiet", "--thumb-size", size]) == 2
        assert f"thumb_size must be at least 1 pixel, got {size}" in capsys.readouterr().err
    assert not (tmp_path / "run" / "report").exists()


def test_a_vocabulary_file_that_cannot_be_read_is_refused_before_any_work(tmp_path, capsys):
    """``report --vocabulary FILE`` with a missing or empty file (a typo) wrote the whole report
    with a warning "automatic naming failed" and exit 0, the old names kept; ``cluster --report
    --vocabulary`` did so after the whole run. Now each is refused naming the file, before any
    work (no run, no report written)."""
    from mediacluster.cli import main

    rng = np.random.default_rng(0)
    np.save(tmp_path / "v.npy", rng.normal(size=(30, 8)).astype(np.float32))
    (tmp_path / "empty.txt").write_text("# topics\n\n")
    missing = tmp_path / "no such.txt"
    assert main(["cluster", str(tmp_path / "v.npy"), "--out", str(tmp_path / "run2"), "--quiet", "--no-csv",
                 "--report", "--vocabulary", str(missing)]) == 2
    assert f"vocabulary file {missing} cannot be read" in capsys.readouterr().err
    assert not (tmp_path / "run2").exists()
    assert main(["cluster", str(tmp_path / "v.npy"), "--out", str(tmp_path / "run"), "--quiet", "--no-csv"]) == 0
    for f, said in ((missing, "cannot be read"), (tmp_path / "empty.txt", "has no entries"),
                    (tmp_path, "cannot be read")):
        capsys.readouterr()
        assert main(["report", str(tmp_path / "run"), "--quiet", "--vocabulary", str(f)]) == 2
        assert f"vocabulary file {f} {said}" in capsys.readouterr().err
    assert not (tmp_path / "run" / "report").exists()


def test_the_methods_paragraph_of_a_run_fitted_on_a_sample_reads_as_prose(tmp_path):
    """``report/methods.md`` of a ``cluster --fit-sample`` run said "fitted on a random sample
    ({'size': 60, 'of': 120, 'seed': 0})" and "The 2-D map is a UMAP OF THE FITTED ITEMS; THE
    OTHERS PLACED BY THEIR NEIGHBOURS projection of the embeddings": a Python dict and a
    shouted phrase in the paragraph a paper copies; and of a vectors file, "We embedded 120 image
    files ... with the encoder `precomputed`"."""
    from mediacluster.cli import main
    from mediacluster.report.methods import methods_text

    rng = np.random.default_rng(0)
    np.save(tmp_path / "v.npy", np.vstack([rng.normal(size=(60, 8)) + 4, rng.normal(size=(60, 8)) - 4])
            .astype(np.float32))
    assert main(["cluster", str(tmp_path / "v.npy"), "--out", str(tmp_path / "run"), "--quiet", "--no-csv",
                 "--fit-sample", "60"]) == 0
    text = methods_text(tmp_path / "run")
    assert "fitted on a random sample of 60 of the 120 items (seed 0)" in text
    assert "The 2-D map is a UMAP of the fitted items; the others placed by their neighbours." in text
    assert "{" not in text and "FITTED" not in text
    # a vectors file was not embedded (it said "We embedded 120 image files ... with the encoder `precomputed`")
    assert f"We clustered 120 precomputed vectors of `{tmp_path / 'v.npy'}`." in text


def test_a_cluster_cards_true_labels_leave_unlabelled_items_out(tmp_path):
    """A run whose items are partly labelled (a manifest or .npz with empty labels) showed the
    unlabelled items on every card as a label of their own: "true labels: nan 50%, a 17%". The
    shares are now those of the cluster's labelled items."""
    from mediacluster.cli import main

    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(size=(20, 8)) + 5, rng.normal(size=(20, 8)) - 5]).astype(np.float32)
    labels = np.array(["up"] * 20 + ["down"] * 20)
    labels[::2] = ""
    np.savez(tmp_path / "v.npz", vectors=X, labels=labels)
    assert main(["cluster", str(tmp_path / "v.npz"), "--out", str(tmp_path / "run"), "--quiet", "--no-csv"]) == 0
    assert main(["report", str(tmp_path / "run"), "--quiet", "--map", "pca"]) == 0
    shown = re.findall(r"true labels: ([^<]*)<", (tmp_path / "run" / "report" / "index.html").read_text())
    assert shown and all(s in ("up 100%", "down 100%") for s in shown), shown


def test_a_thread_count_below_one_is_refused_by_name(tmp_path, capsys):
    """``report --workers -1`` laid out the map and then stopped with an internal error
    ("ValueError: max_workers must be greater than 0", exit 1); ``--workers 0`` was taken as
    the default without a word."""
    from mediacluster.cli import main

    np.save(tmp_path / "v.npy", np.random.default_rng(0).normal(size=(30, 8)).astype(np.float32))
    assert main(["cluster", str(tmp_path / "v.npy"), "--out", str(tmp_path / "run"), "--quiet", "--no-csv"]) == 0
    for n in ("0", "-1"):
        capsys.readouterr()
        assert main(["report", str(tmp_path / "run"), "--quiet", "--workers", n]) == 2
        assert f"workers: must be >= 1, got {n}" in capsys.readouterr().err
    assert not (tmp_path / "run" / "report").exists()


def test_the_methods_paragraph_gives_the_duplicate_finders_parameters(tmp_path):
    """``report/methods.md`` of a ``cluster --dedup`` run said the near-duplicates were grouped but
    not how (the finder's thresholds decide which items are one): it gives every parameter of the
    finder, defaults included, and the groups' counts; a run.json written before they were
    recorded says so instead of leaving them out silently."""
    import json

    from mediacluster.cli import main
    from mediacluster.report.methods import methods_text

    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(size=(60, 8)) + 4, rng.normal(size=(60, 8)) - 4]).astype(np.float32)
    X[1] = X[0]  # one exact copy
    np.save(tmp_path / "v.npy", X)
    assert main(["cluster", str(tmp_path / "v.npy"), "--out", str(tmp_path / "run"), "--quiet", "--no-csv",
                 "--no-names", "--reducer", "pca", "--reducer-param", "n_components=4", "--clusterer", "kmeans",
                 "--clusterer-param", "n_clusters=2", "--dedup", "--dedup-param", "semantic_threshold=0.99"]) == 0
    text = methods_text(tmp_path / "run")
    assert "(`--dedup`, `duplicates.DuplicateFinder`; its parameters: " in text, text
    assert "semantic_threshold=0.99" in text and "hash_radius=7" in text and "workers=" not in text
    assert "of the 120 items." in text
    doc = json.loads((tmp_path / "run" / "run.json").read_text())
    del doc["duplicates"]["params"]
    (tmp_path / "run" / "run.json").write_text(json.dumps(doc))
    assert "its parameters were not recorded by the version that made the run" in methods_text(tmp_path / "run")


def test_cached_files_stops_at_a_write_error_without_making_the_rest(tmp_path):
    """The thumbnails' pool (``progress.threaded_map`` since it replaced the hand-written one):
    a file that cannot be written stops the step at once, the files not started are not made
    first; and the helper's generator, closed by a caller whose own loop raised (the image
    signatures' store), cancels what has not started."""
    from mediacluster.errors import OutputError
    from mediacluster.progress import threaded_imap
    from mediacluster.report.thumbs import cached_files, content_keys

    srcs = []
    for k in range(40):
        p = tmp_path / f"src{k}.bin"
        p.write_bytes(b"x%d" % k)
        srcs.append(str(p))
    made = []
    out = tmp_path / "out"
    blocked = out / (content_keys(srcs[:1], "t")[0] + ".png")
    (blocked / "x").mkdir(parents=True)  # the first file's place is a folder: its write fails

    def make(p):
        made.append(p)
        time.sleep(0.01)
        return b"y", (".png" if p == srcs[0] else ".jpg")

    with pytest.raises(OutputError, match="cannot write"):
        cached_files(srcs, out, "t", (".jpg",), make, "thumbs", workers=1, progress=False)
    assert len(made) < 10

    # the helper itself: closing it (the caller's loop raised) cancels what has not started
    seen = []

    def slow(k):
        seen.append(k)
        time.sleep(0.01)
        return k

    it = threaded_imap(slow, list(range(50)), 1, "t", "it", progress=False, done=7)
    assert next(it) == 0
    it.close()
    assert len(seen) < 10
