"""The studio in real headless Chromium: the whole loop a person goes through (rename, merge,
split with a preview, lasso on the map and move, undo, reload, search by words, by example and
by an uploaded image, export), and hostile file / cluster names that must stay text.
Screenshots are kept in tests/artifacts/."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from studio_helpers import client, copy_run, make_run, post, studio_in_chromium

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

INK_JS = """
const c = document.getElementById('map');
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let ink = 0;
for (let i = 0; i < d.length; i += 4) if (d[i] < 245 || d[i+1] < 245 || d[i+2] < 245) ink++;
return ink;
"""


def wait(fn, timeout=30.0, what="condition"):
    t0 = time.time()
    while True:
        try:
            v = fn()
        except Exception:  # noqa: BLE001 - the page is still changing
            v = None
        if v:
            return v
        if time.time() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def shot(drv, name):
    ARTIFACTS.mkdir(exist_ok=True)
    assert drv.save_screenshot(str(ARTIFACTS / name))


def js(drv, code, *args):
    return drv.execute_script(code, *args)


def cluster_rows(drv) -> dict[int, str]:
    out = {}
    for li in drv.find_elements("css selector", "#cluster-list li[data-cluster]"):
        cid = int(li.get_attribute("data-cluster"))
        if cid >= 0:
            out[cid] = li.find_element("css selector", ".cname").text
    return out


def open_cluster(drv, cid):
    drv.find_element("css selector", f'#cluster-list li[data-cluster="{cid}"]').click()
    wait(lambda: js(drv, "return window.mcStudio.busy") == 0 and
         drv.find_element("id", "view-head").get_attribute("data-cluster") == str(cid), what=f"cluster {cid}")


def loaded(drv):
    return js(drv, "const s = window.mcStudio; return s && s.firstPaint !== null && s.busy === 0 && s.L !== null")


def severe(drv):
    return [e for e in drv.get_log("browser") if e.get("level") == "SEVERE"
            and "favicon" not in e.get("message", "")]


@pytest.mark.browser
@pytest.mark.slow
def test_the_whole_loop_in_chromium(base_run, tmp_path, module_chromium):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    from mediacluster.rundir import RunDir

    run = copy_run(base_run, tmp_path / "run")
    truth = np.array(RunDir.open(run).read_items()["label"].tolist())
    paths = RunDir.open(run).read_items()["path"].tolist()
    with studio_in_chromium(run, shared=module_chromium) as (s, drv):
        with client(s) as api:
            drv.get(s.url)
            wait(lambda: loaded(drv), what="first paint")
            assert js(drv, "return window.mcStudio.drawn") == 300
            assert drv.execute_script(INK_JS) > 300, "the map is blank"
            assert js(drv, "return window.mcStudio.firstPaint") < 5000
            rows = cluster_rows(drv)
            assert len(rows) == 3
            shot(drv, "studio-start.png")

            # -- a second tab on the same studio
            tab_a = drv.current_window_handle
            drv.switch_to.new_window("tab")
            drv.get(s.url)
            wait(lambda: loaded(drv), what="the second tab")
            tab_b = drv.current_window_handle
            drv.switch_to.window(tab_a)

            # -- open the largest cluster and rename it
            lab = np.frombuffer(api.get("/api/labels").content, "<i4")
            big = int(np.bincount(lab).argmax())
            open_cluster(drv, big)
            wait(lambda: len(drv.find_elements("css selector", "#grid .tile")) == min(60, int((lab == big).sum())),
                 what="the gallery")
            # the run has folder labels: the items whose label is not the cluster's first, first;
            # each order drawn anew (the view's head too: its old input marked) before going on
            for order in ("label", "typical"):
                js(drv, "document.getElementById('cluster-name').mcOld = 1")
                Select(drv.find_element("id", "order")).select_by_value(order)
                want = [it["i"] for it in api.get(f"/api/clusters/{big}/items?order={order}&limit=60").json()["items"]]
                wait(lambda want=want: not js(drv, "return document.getElementById('cluster-name').mcOld") and
                     [int(t.get_attribute("data-i")) for t in drv.find_elements("css selector", "#grid .tile")] == want,
                     what=f"the gallery in {order} order")
                if order == "label":
                    assert " \u00b7 label " in js(drv, "return document.querySelector('#grid .tile').title")
            name = drv.find_element("id", "cluster-name")
            name.clear()
            name.send_keys("renamed in chromium" + Keys.ENTER)
            wait(lambda: cluster_rows(drv)[big] == "renamed in chromium", what="rename")
            # the other tab sees it within a few seconds, without reloading
            drv.switch_to.window(tab_b)
            wait(lambda: cluster_rows(drv)[big] == "renamed in chromium", timeout=5, what="the edit in the other tab")
            drv.close()
            drv.switch_to.window(tab_a)

            # -- merge the two others
            others = [c for c in rows if c != big]
            for c in others:
                drv.find_element("css selector", f'#cluster-list li[data-cluster="{c}"] .mcheck').click()
            drv.find_element("id", "merge").click()
            wait(lambda: len(cluster_rows(drv)) == 2, what="merge")
            merged = next(c for c in cluster_rows(drv) if c != big)

            # -- split it again, with a preview first
            open_cluster(drv, merged)
            Select(drv.find_element("id", "split-k")).select_by_value("2")
            before = api.get("/api/labels").content
            drv.find_element("id", "split-preview").click()
            wait(lambda: len(drv.find_elements("css selector", "#split-panel .part")) == 2, what="split preview")
            assert drv.find_element("id", "split-panel").is_displayed()
            assert api.get("/api/labels").content == before  # a preview changes nothing
            assert js(drv, "return window.mcStudio.preview.part.size") == int((lab != big).sum())
            shot(drv, "studio-split-preview.png")
            part_names = drv.find_elements("css selector", "#split-panel .part-name")
            part_names[0].clear()
            part_names[0].send_keys("first half")
            drv.find_element("id", "split-apply").click()
            wait(lambda: len(cluster_rows(drv)) == 3, what="split applied")
            assert "first half" in cluster_rows(drv).values()

            # -- lasso a patch of the map and move it to a new cluster
            open_cluster(drv, big)
            assert js(drv, "return window.mcStudio.highlight") == big
            drv.find_element("id", "tool-lasso").click()
            pts = js(drv, """const S = window.mcStudio, out = [];
                for (let i = 0; i < S.n; i++) if (S.L[i] === arguments[0]) out.push([i].concat(S.screenOf(i)));
                return out;""", big)
            pts = np.array(pts)
            cx, cy = np.median(pts[:, 1]), np.median(pts[:, 2])
            half = 35
            canvas = drv.find_element("id", "map")
            w, h = canvas.size["width"], canvas.size["height"]
            corners = [(cx - half, cy - half), (cx + half, cy - half), (cx + half, cy + half), (cx - half, cy + half)]
            ch = ActionChains(drv).move_to_element_with_offset(canvas, int(corners[0][0] - w / 2), int(corners[0][1] - h / 2))
            ch.click_and_hold()
            prev = corners[0]
            for c in corners[1:] + corners[:1]:
                for _ in range(4):  # several moves per edge, as a hand would
                    ch.move_by_offset(int(round((c[0] - prev[0]) / 4)), int(round((c[1] - prev[1]) / 4)))
                prev = c
            ch.release().perform()
            wait(lambda: js(drv, "return window.mcStudio.selected.size") > 0, what="a lasso selection")
            sel = sorted(js(drv, "return Array.from(window.mcStudio.selected)"))
            inside = pts[(abs(pts[:, 1] - cx) < half - 3) & (abs(pts[:, 2] - cy) < half - 3), 0].astype(int)
            near = pts[(abs(pts[:, 1] - cx) <= half + 3) & (abs(pts[:, 2] - cy) <= half + 3), 0].astype(int)
            assert set(inside.tolist()) <= set(sel) <= set(near.tolist())
            assert set(lab[sel].tolist()) == {big}
            shot(drv, "studio-lasso.png")
            Select(drv.find_element("id", "move-to")).select_by_value("new")
            drv.find_element("id", "move").click()
            wait(lambda: drv.find_element("id", "name-dialog").is_displayed(), what="the name dialog")
            drv.find_element("id", "new-name").send_keys("lassoed" + Keys.ENTER)
            wait(lambda: "lassoed" in cluster_rows(drv).values(), what="lasso move")
            new_id = next(c for c, nm in cluster_rows(drv).items() if nm == "lassoed")
            lab = np.frombuffer(api.get("/api/labels").content, "<i4")
            assert (lab[sel] == new_id).all()

            # -- undo takes the move back
            drv.find_element("id", "undo").click()
            wait(lambda: "lassoed" not in cluster_rows(drv).values(), what="undo")
            lab = np.frombuffer(api.get("/api/labels").content, "<i4")
            assert (lab[sel] == big).all()

            # -- reload: everything is still there
            drv.refresh()
            wait(lambda: loaded(drv), what="reload")
            rows = cluster_rows(drv)
            assert rows[big] == "renamed in chromium" and "first half" in rows.values() and len(rows) == 3
            assert drv.find_element("id", "redo").is_enabled()
            assert drv.find_element("id", "undo").is_enabled()

            # -- search by words
            q = drv.find_element("id", "q")
            q.send_keys("vehicle" + Keys.ENTER)
            wait(lambda: "vehicle" in drv.find_element("id", "search-title").text, what="word search")
            tiles = [int(t.get_attribute("data-i")) for t in drv.find_elements("css selector", "#grid .tile")]
            assert len(tiles) >= 50 and np.mean(np.isin(truth[tiles[:50]], ["airplane", "truck"])) >= 0.9
            shot(drv, "studio-search-words.png")

            # -- search by example: open an item, "more like this"
            first = drv.find_elements("css selector", "#grid .tile")[0]
            i0 = int(first.get_attribute("data-i"))
            ActionChains(drv).double_click(first).perform()
            wait(lambda: drv.find_element("id", "item-panel").is_displayed(), what="the item view")
            wait(lambda: len(drv.find_elements("css selector", "#item-panel .nb img")) == 12, what="neighbours")
            drv.find_element("id", "more-like").click()
            wait(lambda: drv.find_element("id", "search-title").text.startswith("More like"), what="more like this")
            tiles = [int(t.get_attribute("data-i")) for t in drv.find_elements("css selector", "#grid .tile")]
            assert tiles[0] == i0 and np.mean(truth[tiles[:20]] == truth[i0]) >= 0.7
            shot(drv, "studio-more-like-this.png")

            # -- search by an uploaded image
            target = 123
            drv.find_element("id", "upload").send_keys(str(Path(paths[target]).resolve()))
            wait(lambda: drv.find_element("id", "search-title").text.startswith("Look-alikes"), what="upload search")
            tiles = [int(t.get_attribute("data-i")) for t in drv.find_elements("css selector", "#grid .tile")]
            assert tiles[0] == target

            # -- export
            Select(drv.find_element("id", "export-kind")).select_by_value("csv")
            drv.find_element("id", "export").click()
            wait(lambda: js(drv, "return window.mcStudio.lastExport"), what="export")
            exp = Path(js(drv, "return window.mcStudio.lastExport.path"))
            assert (exp / "curated_assignments.csv").exists()
            assert any("exported" in t["text"] for t in js(drv, "return window.mcStudio.toasts"))
            shot(drv, "studio-export.png")
            assert js(drv, "return window.mcStudio.errors") == []
            assert not severe(drv)


HOSTILE = ["<!--<script>.png", '"><img src=x onerror=window.__pwned=1>.png',
           "'onmouseover='window.__pwned=3'.png", "javascript:window.__pwned=4.png",
           "<b>bold<b> & co.png", "<svg onload=window.__pwned=8>.png"]


@pytest.fixture(scope="module")
def hostile_run(cifar3_dir, tmp_path_factory):
    from mediacluster.embed import embed_collection
    from mediacluster.ingest import collect

    src = tmp_path_factory.mktemp("hostile-src")
    files = sorted((cifar3_dir / "frog").iterdir())[:14] + sorted((cifar3_dir / "truck").iterdir())[:14]
    for k, f in enumerate(files):
        name = HOSTILE[k] if k < len(HOSTILE) else f"plain {k}.png"
        shutil.copy(f, src / name)
    emb = embed_collection(collect(src), cache_dir=tmp_path_factory.mktemp("cache"), progress=False)
    assert len(emb) == len(files)
    return make_run(emb, tmp_path_factory.mktemp("hostile") / "run", k=2)


@pytest.mark.slow
@pytest.mark.browser
def test_hostile_names_stay_text_in_chromium(hostile_run, tmp_path, module_chromium):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import Select

    run = copy_run(hostile_run, tmp_path / "run")
    evil_cluster = "<img src=x onerror=window.__pwned=5>"
    evil_tag = "<script>window.__pwned=6</script>"
    evil_new = '"><svg onload=window.__pwned=7>'
    with studio_in_chromium(run, shared=module_chromium) as (s, drv):
        with client(s) as api:
            assert post(api, "/api/edits", {"kind": "rename", "cluster": 0, "name": evil_cluster}).status_code == 200
            assert post(api, "/api/edits", {"kind": "tag", "clusters": [0], "items": [0, 1], "add": [evil_tag]}).status_code == 200
            assert post(api, "/api/edits", {"kind": "move", "items": [2], "to": "new", "name": evil_new}).status_code == 200
            lab = np.frombuffer(api.get("/api/labels").content, "<i4")
            names = {}
            for cid in set(lab.tolist()):
                names.update({x["i"]: x["name"] for x in api.get(f"/api/clusters/{cid}/items?limit=100").json()["items"]})
        drv.get(s.url)
        wait(lambda: loaded(drv), what="first paint")
        rows = cluster_rows(drv)
        assert evil_cluster in rows.values() and evil_new in rows.values()
        hostile_items = [i for i, nm in names.items() if nm in HOSTILE]
        assert len(hostile_items) == len(HOSTILE)
        for cid in sorted(set(lab.tolist())):  # every gallery: captions and titles are the names, as text
            open_cluster(drv, cid)
            wait(lambda cid=cid: len(drv.find_elements("css selector", "#grid .tile")) == int((lab == cid).sum()),
                 what=f"gallery {cid}")
            caps = {t.get_attribute("textContent") for t in drv.find_elements("css selector", "#grid .tile .cap")}
            assert caps == {names[i] for i in np.flatnonzero(lab == cid)}
        for i in hostile_items:  # the item view of each, opened from its gallery
            drv.execute_script("window.mcStudio.showCluster(arguments[0])", int(lab[i]))
            wait(lambda i=i: js(drv, "return window.mcStudio.busy") == 0 and
                 drv.find_element("id", "view-head").get_attribute("data-cluster") == str(int(lab[i])))
            tile = wait(lambda i=i: drv.find_element("css selector", f'#grid .tile[data-i="{i}"]'), what=f"tile {i}")
            assert tile.get_attribute("title") == names[i]
            ActionChains(drv).double_click(tile).perform()
            wait(lambda i=i: drv.find_element("id", "item-name").text == names[i], what=f"item {i}")
            ActionChains(drv).move_to_element(drv.find_element("id", "map")).perform()  # hover tooltips
        open_cluster(drv, 0)
        wait(lambda: evil_tag in drv.find_element("id", "cluster-tags").text, what="the tag as text")
        assert drv.find_element("id", "cluster-name").get_attribute("value") == evil_cluster
        Select(drv.find_element("id", "split-k")).select_by_value("2")
        drv.find_element("id", "split-preview").click()
        wait(lambda: len(drv.find_elements("css selector", "#split-panel .part")) == 2, what="preview")
        drv.find_element("id", "q").send_keys("frog\n")
        wait(lambda: drv.find_elements("css selector", "#search-title"), what="search")
        wait(lambda: drv.find_elements("css selector", "#grid .tile"), what="results")
        shot(drv, "studio-hostile-names.png")
        assert js(drv, "return window.__pwned") is None
        assert js(drv, "return document.querySelectorAll('img[src=\"x\"], svg, #grid script, #cluster-list img').length") == 0
        assert js(drv, "return Array.from(document.querySelectorAll('b')).filter(b => b.textContent === 'bold').length") == 0
        assert js(drv, "return document.scripts.length") == 1
        assert not severe(drv)


@pytest.mark.slow
@pytest.mark.browser
def test_keyboard_only_opens_clusters_and_selects_items(base_run, tmp_path, module_chromium):
    """Without a mouse: Tab reaches the cluster list's rows and Enter opens one; Tab reaches the
    gallery's tiles, Space selects one and Shift+Space a range; focus stays on the row / tile
    when the list is redrawn. (The rows and tiles were plain elements with click handlers: a
    keyboard could not open a cluster at all.)"""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    run = copy_run(base_run, tmp_path / "run")
    with studio_in_chromium(run, shared=module_chromium) as (s, drv):
        def focused(attr):
            return js(drv, f"const a = document.activeElement; return a ? a.getAttribute('{attr}') : null")

        def tab_until(attr, limit=400):
            for _ in range(limit):
                ActionChains(drv).send_keys(Keys.TAB).perform()
                if focused(attr) is not None:
                    return focused(attr)
            raise AssertionError(f"Tab never reached an element with {attr}")

        drv.get(s.url)
        wait(lambda: loaded(drv), what="first paint")
        drv.find_element("id", "filter").click()  # start in the cluster list's filter box
        first = tab_until("data-cluster")
        ActionChains(drv).send_keys(Keys.ENTER).perform()
        wait(lambda: drv.find_element("id", "view-head").get_attribute("data-cluster") == first
             and js(drv, "return window.mcStudio.busy") == 0, what="the cluster opened by Enter")
        assert focused("data-cluster") == first  # the redrawn list keeps the focus on its row
        second = tab_until("data-cluster")  # past the row's merge checkbox to the next row
        assert second != first
        ActionChains(drv).send_keys(Keys.SPACE).perform()
        wait(lambda: drv.find_element("id", "view-head").get_attribute("data-cluster") == second
             and js(drv, "return window.mcStudio.busy") == 0, what="the cluster opened by Space")
        wait(lambda: drv.find_elements("css selector", "#grid .tile"), what="the gallery")
        a = tab_until("data-i")
        ActionChains(drv).send_keys(Keys.SPACE).perform()
        wait(lambda: js(drv, "return window.mcStudio.selected.size") == 1, what="one tile selected")
        for _ in range(3):  # past the tile's own "open" button to the third tile
            ActionChains(drv).send_keys(Keys.TAB).perform()
            while focused("data-i") is None:
                ActionChains(drv).send_keys(Keys.TAB).perform()
        ActionChains(drv).key_down(Keys.SHIFT).send_keys(Keys.SPACE).key_up(Keys.SHIFT).perform()
        wait(lambda: js(drv, "return window.mcStudio.selected.size") == 4, what="a range of four tiles")
        assert js(drv, "return window.mcStudio.selected.has(Number(arguments[0]))", a)
        assert not severe(drv)


@pytest.mark.browser
@pytest.mark.slow
def test_the_level_switch_groups_clusters_as_the_model_will_in_chromium(level_run, tmp_path, module_chromium):
    """On a run with levels, choosing a coarse level in the page groups the curated clusters
    under the groups of the tree publish writes (``/api/clusters`` ``groups``), each group
    headed by its name; a junk cluster under a group of its own."""
    from selenium.webdriver.support.ui import Select

    run = copy_run(level_run, tmp_path / "run")
    with studio_in_chromium(run, shared=module_chromium) as (s, drv):
        with client(s) as api:
            lab = np.frombuffer(api.get("/api/labels").content, "<i4")
            smallest = int(np.argmin(np.where(np.bincount(lab[lab >= 0]) > 0, np.bincount(lab[lab >= 0]), 10**9)))
            assert post(api, "/api/edits", {"kind": "junk", "clusters": [smallest]}).status_code == 200
            shown = api.get("/api/clusters").json()
            drv.get(s.url)
            wait(lambda: loaded(drv), what="first paint")
            level = next(iter(shown["groups"]))
            # the switch's first choice says the list is flat, not that the run has no levels
            assert Select(drv.find_element("id", "level")).options[0].text == "not grouped by level"
            Select(drv.find_element("id", "level")).select_by_value(level)
            wait(lambda: drv.find_elements("css selector", "#cluster-list li.group"), what="the groups")
            under, head = {}, None
            for li in drv.find_elements("css selector", "#cluster-list li"):
                if "group" in (li.get_attribute("class") or "").split():
                    head = li.text
                elif li.get_attribute("data-cluster") and int(li.get_attribute("data-cluster")) >= 0:
                    under[int(li.get_attribute("data-cluster"))] = head
            groups, names = shown["groups"][level], shown["group_names"][level]
            assert set(under) == {int(c) for c in groups}
            for cid, text in under.items():
                g = str(groups[str(cid)])
                assert text.startswith(f"{level}: {names[g]} (group {g})"), text
            junk_group = groups[str(smallest)]
            assert [c for c in groups if groups[c] == junk_group] == [str(smallest)]
            assert not severe(drv)
            shot(drv, "studio-level-groups.png")
            # a group named in its header (a level rename edit): the header, the API and undo follow
            g, run_id = next((g, k) for g, k in shown["group_clusters"][level].items() if k >= 0)
            head = drv.find_element("css selector", f'#cluster-list li.group[data-group="{g}"]')
            head.find_element("css selector", ".group-rename").click()
            box = drv.find_element("css selector", f'#cluster-list li.group[data-group="{g}"] input.group-name')
            box.clear()
            box.send_keys("memes\n")
            wait(lambda: drv.find_element("css selector", f'#cluster-list li.group[data-group="{g}"]').text
                 .startswith(f"{level}: memes (group {g})"), what="the renamed group's header")
            assert api.get("/api/clusters").json()["group_names"][level][g] == "memes"
            drv.find_element("id", "undo").click()
            wait(lambda: api.get("/api/clusters").json()["group_names"][level][g] == names[g], what="the undo")
            wait(lambda: drv.find_element("css selector", f'#cluster-list li.group[data-group="{g}"]').text
                 .startswith(f"{level}: {names[g]} (group {g})"), what="the header after the undo")
            assert run_id >= 0 and not severe(drv)


@pytest.mark.slow
@pytest.mark.browser
def test_the_page_swaps_in_the_umap_map_laid_out_after_it_opened(base_run, tmp_path, module_chromium):
    """A large run without a 2-D map opens on a quick PCA map; when the UMAP map is laid out in
    the background, the open page draws it without a reload. The server's layout is held until
    the page has shown the PCA map (a flag file), so both states are seen."""
    run = copy_run(base_run, tmp_path / "run")
    for f in ("map2d.npy", "map2d.json"):
        (run / f).unlink(missing_ok=True)
    flag = tmp_path / "go"
    setup = (
        "import os, time\n"
        "import mediacluster.report.build as b\n"
        "import mediacluster.studio.session as s\n"
        "s.MAP_BACKGROUND_MIN = 100\n"
        "_layout = b.layout_2d\n"
        "def held(v, method='umap', *a, **k):\n"
        f"    while method == 'umap' and not os.path.exists({str(flag)!r}):\n"
        "        time.sleep(0.05)\n"
        "    return _layout(v, method, *a, **k)\n"
        "b.layout_2d = held\n")
    with studio_in_chromium(run, setup=setup, shared=module_chromium) as (s, drv):
        with client(s) as api:
            drv.get(s.url)
            wait(lambda: loaded(drv), what="first paint")
            assert js(drv, "return window.mcStudio.info.map_method") == "pca"
            assert "quick PCA map" in drv.find_element("id", "map-info").text
            pca = js(drv, "return Array.from(window.mcStudio.X.slice(0, 5))")
            flag.write_text("go")
            wait(lambda: js(drv, "return window.mcStudio.info.map_method") == "umap", timeout=120,
                 what="the UMAP map in the page")
            umap = np.frombuffer(api.get("/api/map").content, "<f4")
            shown = js(drv, "return Array.from(window.mcStudio.X.slice(0, 5))")
            assert np.allclose(shown, umap[:5], atol=1e-5) and not np.allclose(shown, pca)
            wait(lambda: "quick PCA map" not in drv.find_element("id", "map-info").text, what="the note gone")
            assert drv.execute_script(INK_JS) > 300, "the map is blank"
            assert not severe(drv)


@pytest.mark.browser
def test_the_name_box_is_kept_across_a_reload_and_sent_with_edits(base_run, tmp_path, module_chromium):
    """The "your name" box: what a person types is kept in the browser (localStorage), shown
    again after a reload, and recorded with the page's edits (the history says who)."""
    run = copy_run(base_run, tmp_path / "run")
    with studio_in_chromium(run, shared=module_chromium) as (s, drv):
        drv.get(s.url)
        wait(lambda: loaded(drv), what="first paint")
        box = drv.find_element("id", "user-name")
        assert box.get_attribute("value") == ""
        box.send_keys("Zoë Ek")
        drv.refresh()
        wait(lambda: loaded(drv), what="first paint after the reload")
        assert drv.find_element("id", "user-name").get_attribute("value") == "Zoë Ek"
        cid = min(cluster_rows(drv))
        assert js(drv, "return window.mcStudio.edit(arguments[0]).then(r => r && r.seq)",
                  {"kind": "rename", "cluster": cid, "name": "named by Zoë"})
        with client(s) as api:
            ev = api.get("/api/edits").json()["events"]
        assert [(e["kind"], e["user"]) for e in ev] == [("rename", "Zoë Ek")]
        assert not severe(drv)
