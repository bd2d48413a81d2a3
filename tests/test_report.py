"""The HTML report: files, caching, and the page itself in real headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

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
    assert len(re.findall(r'<section class="card" data-cluster="(\d+)"', text)) == n_clusters
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


def test_report_rebuild_reuses_cache(report_run):
    from mediacluster.report import build_report

    run = report_run["run"]
    m0 = (run / "map2d.npy").stat().st_mtime_ns
    thumbs = sorted((run / "report" / "thumbs").iterdir())
    mt = [p.stat().st_mtime_ns for p in thumbs]
    t = time.perf_counter()
    build_report(run, progress=False)
    assert (run / "map2d.npy").stat().st_mtime_ns == m0
    assert [p.stat().st_mtime_ns for p in thumbs] == mt
    assert time.perf_counter() - t < report_run["seconds"]


def _chrome():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("headless Chromium not installed (apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium not installed (pip install -e '.[dev]')")
    opts = Options()
    opts.binary_location = chromium
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1000",
              f"--user-data-dir={tempfile.mkdtemp(prefix='mc-chrome-')}"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=opts, service=Service(driver))


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
def test_report_in_chromium(report_run, tmp_path):
    html, labels = report_run["html"], report_run["labels"]
    drv = _chrome()
    try:
        drv.get(html.resolve().as_uri())
        time.sleep(0.5)
        n_clusters = len(set(labels[labels >= 0].tolist()))
        cards = drv.find_elements("css selector", "[data-cluster]")
        assert len(cards) == n_clusters
        ink0, hash0 = drv.execute_script(PIXELS_JS)
        assert ink0 > 300, "the map canvas is blank"
        assert drv.execute_script("return window.mcReport.drawn") == len(labels)
        # clicking a card filters the map to that cluster
        cid = int(cards[-1].get_attribute("data-cluster"))
        cards[-1].click()
        time.sleep(0.3)
        assert drv.execute_script("return window.mcReport.filter") == cid
        assert drv.find_element("id", "map").get_attribute("data-filter") == str(cid)
        assert drv.execute_script("return window.mcReport.highlighted") == int((labels == cid).sum())
        ink1, hash1 = drv.execute_script(PIXELS_JS)
        assert hash1 != hash0
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
    finally:
        drv.quit()


def test_report_cli(report_run, tmp_path, capsys):
    from mediacluster.cli import main

    out = tmp_path / "rep"
    assert main(["report", str(report_run["run"]), "--out", str(out), "--quiet", "--names-template"]) == 0
    assert (out / "index.html").exists() and "file://" in capsys.readouterr().out
    # the template never overwrites the person's names.yaml
    assert "my hand-given name" in (report_run["run"] / "names.yaml").read_text()
    assert main(["report", str(tmp_path / "not-a-run")]) == 2


@pytest.mark.browser
@pytest.mark.slow
def test_large_report_paints_density_and_loads_names_on_demand(tmp_path):
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
    drv = _chrome()
    try:
        drv.get(html.resolve().as_uri())
        deadline = time.time() + 60
        while not drv.execute_script("return window.mcReport && window.mcReport.firstPaintMs") and time.time() < deadline:
            time.sleep(0.05)
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
    finally:
        drv.quit()
