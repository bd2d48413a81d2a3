"""The studio by keyboard and screen reader, in real headless Chromium: a curator's job driven by
``send_keys`` only (move between clusters and items, select, move, undo, open an item, merge,
rename, junk, the "?" overlay), the focus never left on the page's body after an edit; the
accessible names Chromium computes for the controls; and the page at 200% zoom."""

from __future__ import annotations

import numpy as np
import pytest
from studio_helpers import client, copy_run, studio_in_chromium
from test_studio_browser import js, loaded, severe, wait


def keys(drv, *k):
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(drv).send_keys(*k).perform()


def chord(drv, mod, key):
    """``mod`` held while ``key`` is pressed (send_keys presses and releases each in turn)."""
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(drv).key_down(mod).send_keys(key).key_up(mod).perform()


def focused(drv) -> dict:
    """The focused element: its tag, id, data-i / data-cluster, and whether it is the body."""
    return js(drv, """const a = document.activeElement;
        return {tag: a.tagName, id: a.id, i: a.getAttribute('data-i'), cluster: a.getAttribute('data-cluster'),
                body: a === document.body, tile: a.classList.contains('tile')};""")


def idle(drv, what="the page idle"):
    wait(lambda: js(drv, "return window.mcStudio.busy === 0 && !window.mcStudio.editing"), what=what)


def labels(api) -> np.ndarray:
    return np.frombuffer(api.get("/api/labels").content, "<i4")


@pytest.mark.slow
@pytest.mark.browser
def test_a_curator_selects_moves_undoes_and_opens_items_by_keyboard(base_run, tmp_path, module_chromium):
    """c / arrows / Enter reach and open a cluster; g / arrows / Space select two tiles (said by
    aria-pressed); m reaches "move to", Tab and Enter move them, and the focus lands on a tile of
    the gallery, not on the body (the selection bar it was on is gone); Ctrl+Z takes the move back;
    o opens a tile's item and Escape closes it, the focus back on the tile; ? opens the shortcuts
    dialog, which keeps the focus until Escape gives it back. (Before: no arrow keys, no o, no ?,
    and after a move the focus was on the body: the next Tab started from the page's top.)"""
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    run = copy_run(base_run, tmp_path / "run")
    with studio_in_chromium(run, shared=module_chromium) as (s, drv):
        with client(s) as api:
            drv.get(s.url)
            wait(lambda: loaded(drv), what="first paint")
            keys(drv, "c")
            first = focused(drv)["cluster"]
            assert first is not None, "c did not reach the cluster list"
            keys(drv, Keys.ARROW_DOWN)
            second = focused(drv)["cluster"]
            assert second not in (None, first)
            keys(drv, Keys.ENTER)
            wait(lambda: drv.find_element("id", "view-head").get_attribute("data-cluster") == second
                 and drv.find_elements("css selector", "#grid .tile"), what="the cluster opened by Enter")
            idle(drv)
            row = drv.find_element("css selector", f'#cluster-list li[data-cluster="{second}"] .crow')
            assert row.get_attribute("aria-current") == "true"  # the open cluster is said, not only coloured
            keys(drv, "g")
            tiles = [t.get_attribute("data-i") for t in drv.find_elements("css selector", "#grid .tile")]
            assert focused(drv)["i"] == tiles[0]
            keys(drv, Keys.SPACE, Keys.ARROW_RIGHT)
            assert focused(drv)["i"] == tiles[1]
            keys(drv, Keys.SPACE)
            wait(lambda: js(drv, "return window.mcStudio.selected.size") == 2, what="two tiles selected")
            assert [t.get_attribute("aria-pressed") for t in drv.find_elements("css selector", "#grid .tile")[:3]] == \
                ["true", "true", "false"]
            before = labels(api)
            keys(drv, "m")
            assert focused(drv)["id"] == "move-to"
            target = next(o.get_attribute("value") for o in Select(drv.find_element("id", "move-to")).options
                          if o.get_attribute("value").lstrip("-").isdigit() and int(o.get_attribute("value")) >= 0
                          and o.get_attribute("value") != second)
            while drv.find_element("id", "move-to").get_attribute("value") != target:
                keys(drv, Keys.ARROW_DOWN)
            keys(drv, Keys.TAB)
            assert focused(drv)["id"] == "move"
            keys(drv, Keys.ENTER)
            wait(lambda: (labels(api)[[int(tiles[0]), int(tiles[1])]] == int(target)).all(), what="the move")
            idle(drv, "the move's refresh")
            f = focused(drv)
            assert f["tile"] and not f["body"], f"after the move the focus is on {f}"
            chord(drv, Keys.CONTROL, "z")
            wait(lambda: (labels(api) == before).all(), what="the undo")
            idle(drv, "the undo's refresh")
            f = focused(drv)
            assert f["tile"], f"after the undo the focus is on {f}"
            tile = f["i"]
            keys(drv, "o")
            wait(lambda: drv.find_element("id", "item-panel").is_displayed()
                 and js(drv, "return window.mcStudio.itemOpen") == int(tile), what="the item opened by o")
            assert focused(drv)["i"] == tile  # browsing on: the focus stays on the tile
            keys(drv, Keys.ESCAPE)
            wait(lambda: not drv.find_element("id", "item-panel").is_displayed(), what="Escape closing the item")
            assert focused(drv)["i"] == tile
            keys(drv, "?")
            wait(lambda: drv.find_element("id", "help").is_displayed(), what="the shortcuts dialog")
            assert focused(drv)["id"] == "help-close"
            assert "Ctrl" in drv.find_element("id", "help").text
            keys(drv, Keys.TAB)
            assert focused(drv)["id"] == "help-close"  # the dialog keeps the focus
            keys(drv, Keys.ESCAPE)
            wait(lambda: not drv.find_element("id", "help").is_displayed(), what="Escape closing the dialog")
            assert focused(drv)["i"] == tile
            assert not severe(drv)


@pytest.mark.slow
@pytest.mark.browser
def test_a_curator_merges_renames_and_junks_by_keyboard(base_run, tmp_path, module_chromium):
    """x on two rows checks them for a merge (the row says so), Tab reaches "merge checked" and
    Enter merges; the focus goes to the merged cluster's row (the merge button it was on is
    disabled now: it went to the body before). Then Tab into the cluster's name box, a new name
    and Enter; Tab on to "mark as junk" and Enter, the row now saying "junk"."""
    from selenium.webdriver.common.keys import Keys

    run = copy_run(base_run, tmp_path / "run")
    with studio_in_chromium(run, shared=module_chromium) as (s, drv):
        with client(s) as api:
            drv.get(s.url)
            wait(lambda: loaded(drv), what="first paint")
            keys(drv, "c")
            a = focused(drv)["cluster"]
            keys(drv, "x")
            wait(lambda: "checked for a merge" in (drv.find_element(
                "css selector", f'#cluster-list li[data-cluster="{a}"] .crow').get_attribute("aria-label") or ""),
                what="x checking the row")
            assert focused(drv)["cluster"] == a
            keys(drv, Keys.ARROW_DOWN, "x")
            b = focused(drv)["cluster"]
            assert b != a and js(drv, "return window.mcStudio.checked.size") == 2
            for _ in range(40):
                if focused(drv)["id"] == "merge":
                    break
                keys(drv, Keys.TAB)
            assert focused(drv)["id"] == "merge"
            keys(drv, Keys.ENTER)
            wait(lambda: len(api.get("/api/edits").json()["events"]) == 1, what="the merge")
            idle(drv, "the merge's refresh")
            into = js(drv, "return window.mcStudio.lastEdit.edit.into")
            f = focused(drv)
            assert f["cluster"] == str(into), f"after the merge the focus is on {f}"
            cid = int(into)
            assert drv.find_element("id", "view-head").get_attribute("data-cluster") == str(cid)
            for _ in range(60):
                if focused(drv)["id"] == "cluster-name":
                    break
                keys(drv, Keys.TAB)
            assert focused(drv)["id"] == "cluster-name"
            chord(drv, Keys.CONTROL, "a")
            keys(drv, "birds by keyboard", Keys.ENTER)
            wait(lambda: api.get(f"/api/clusters/{cid}").json()["name"] == "birds by keyboard", what="the rename")
            idle(drv, "the rename's refresh")
            for _ in range(5):
                if focused(drv)["id"] == "junk-toggle":
                    break
                keys(drv, Keys.TAB)
            assert focused(drv)["id"] == "junk-toggle"
            keys(drv, Keys.ENTER)
            wait(lambda: api.get(f"/api/clusters/{cid}").json()["junk"], what="the junk flag")
            wait(lambda: ", junk" in drv.find_element("css selector", f'#cluster-list li[data-cluster="{cid}"] .crow').get_attribute("aria-label"),
                 what="the row saying junk")
            assert not focused(drv)["body"]
            assert not severe(drv)


#: every visible control the keyboard or a screen reader reaches
CONTROLS = """return Array.from(document.querySelectorAll(
  'button, input, select, [role=button], [tabindex], canvas, [role=img]')).filter(
  e => !e.closest('[hidden]') && e.offsetParent !== null && e.type !== 'hidden');"""


@pytest.mark.slow
@pytest.mark.browser
def test_every_control_has_an_accessible_name(base_run, tmp_path, module_chromium):
    """Chromium's computed accessible name of every visible control, with a cluster open, a tile
    selected and an item open: none empty; a tile is named by its file (not "NAME i"), its open
    button "open NAME" and out of the Tab order; the map has a name; the selection's count is a
    live region; the item panel's neighbours are reachable by Tab and named. (Before: the map
    had none, every open button was "i", tiles were "NAME i", neighbours were mouse-only.)"""
    run = copy_run(base_run, tmp_path / "run")
    with studio_in_chromium(run, shared=module_chromium) as (s, drv):
        drv.get(s.url)
        wait(lambda: loaded(drv), what="first paint")
        drv.find_element("css selector", "#cluster-list li[data-cluster]").click()
        wait(lambda: drv.find_elements("css selector", "#grid .tile"), what="the gallery")
        tile = drv.find_element("css selector", "#grid .tile")
        tile.click()
        name = tile.find_element("css selector", ".cap").text
        js(drv, "arguments[0].querySelector('.open').click()", tile)
        wait(lambda: drv.find_elements("css selector", "#item-panel .nb [role=button]"), what="the item's neighbours")
        idle(drv)
        nameless = [f"{e.tag_name}#{e.get_attribute('id') or e.get_attribute('class')}"
                    for e in js(drv, CONTROLS) if not e.accessible_name.strip()]
        assert nameless == []
        assert tile.accessible_name.startswith(name) and not tile.accessible_name.endswith(" i")
        assert tile.get_attribute("aria-pressed") == "true"
        opener = tile.find_element("css selector", ".open")
        assert opener.accessible_name == "open " + name and opener.get_attribute("tabindex") == "-1"
        assert drv.find_element("id", "map").accessible_name
        assert drv.find_element("id", "sel-count").get_attribute("aria-live") == "polite"
        nb = drv.find_elements("css selector", "#item-panel .nb [role=button]")
        assert all(n.get_attribute("tabindex") == "0" and n.accessible_name for n in nb)
        row = drv.find_element("css selector", "#cluster-list li.current .crow")
        assert "items" in row.accessible_name and "check to merge" not in row.accessible_name
        assert not severe(drv)


@pytest.mark.slow
@pytest.mark.browser
def test_the_page_at_200_percent_zoom_keeps_the_gallery_usable(base_run, tmp_path):
    """A 1400 x 1000 screen at 200% zoom leaves 700 x 500 CSS px: the panels stack instead of
    squeezing the gallery between the cluster list and the item panel (it was 65 px wide, one
    tile, with the item panel open), the header wraps instead of hiding half its controls past
    a horizontal scroll, and the selection bar fits the window (it ran past both edges)."""
    run = copy_run(base_run, tmp_path / "run")
    with studio_in_chromium(run, width=700, height=500) as (s, drv):
        drv.get(s.url)
        wait(lambda: loaded(drv), what="first paint")
        drv.find_element("css selector", "#cluster-list li[data-cluster]").click()
        wait(lambda: drv.find_elements("css selector", "#grid .tile"), what="the gallery")
        tile = drv.find_element("css selector", "#grid .tile")
        tile.click()
        js(drv, "arguments[0].querySelector('.open').click()", tile)
        wait(lambda: drv.find_element("id", "item-panel").is_displayed(), what="the item panel")
        idle(drv)
        m = js(drv, """const r = (id) => document.getElementById(id).getBoundingClientRect();
            const top = document.getElementById('top'), sel = r('selbar');
            return {vw: document.documentElement.clientWidth, grid: r('grid').width, cut: top.scrollWidth - top.clientWidth,
                    selLeft: sel.left, selRight: sel.right,
                    off: Array.from(top.querySelectorAll('button, input, select, .button')).filter(e => e.offsetParent !== null)
                      .filter(e => { const b = e.getBoundingClientRect(); return b.left < 0 || b.right > document.documentElement.clientWidth; })
                      .map(e => e.id)};""")
        assert m["grid"] >= m["vw"] * 0.6, m
        assert m["cut"] <= 1 and m["off"] == [], m
        assert m["selLeft"] >= 0 and m["selRight"] <= m["vw"], m
        assert not severe(drv)


@pytest.mark.slow
@pytest.mark.browser
def test_search_split_export_and_a_level_name_by_keyboard(level_run, tmp_path, module_chromium):
    """On a run with levels: / and a word and Enter search, Down goes from the box to the first
    result (a dozen Tabs past the header before); f, Tab to the level switch, Down groups the
    list, Tab to a group's rename, Enter, a name and Enter name it, the focus back on the group's
    rename button (it was left on the body: the box was drawn away); a split is previewed and
    applied by Tab and Enter, the focus on a tile afterwards (the panel it was in hides); export
    by Enter keeps the focus on its button (disabled while it ran, which dropped the focus)."""
    from selenium.webdriver.common.keys import Keys

    run = copy_run(level_run, tmp_path / "run")
    with studio_in_chromium(run, shared=module_chromium) as (s, drv):
        def tab_to(elem_id, limit=40):
            for _ in range(limit):
                if focused(drv)["id"] == elem_id or elem_id in (js(drv, "return document.activeElement.className") or ""):
                    return
                keys(drv, Keys.TAB)
            raise AssertionError(f"Tab never reached {elem_id}: {focused(drv)}")

        with client(s) as api:
            drv.get(s.url)
            wait(lambda: loaded(drv), what="first paint")
            keys(drv, "/")
            assert focused(drv)["id"] == "q"
            keys(drv, "cat", Keys.ENTER)
            wait(lambda: drv.find_elements("css selector", "#search-title") and drv.find_elements("css selector", "#grid .tile"),
                 what="the search's results")
            keys(drv, Keys.ARROW_DOWN)
            assert focused(drv)["tile"], focused(drv)

            keys(drv, Keys.ESCAPE, "f", Keys.TAB)
            assert focused(drv)["id"] == "level"
            keys(drv, Keys.ARROW_DOWN)
            wait(lambda: drv.find_elements("css selector", "#cluster-list li.group .group-rename"), what="the grouped list")
            idle(drv)
            tab_to("group-rename")
            group = js(drv, "return document.activeElement.closest('li.group').getAttribute('data-group')")
            keys(drv, Keys.ENTER)
            wait(lambda: js(drv, "return document.activeElement.className") == "group-name", what="the group's name box")
            keys(drv, "felines by keyboard", Keys.ENTER)
            wait(lambda: any(e["kind"] == "level_rename" for e in api.get("/api/edits").json()["events"]), what="the level rename")
            idle(drv, "the rename's refresh")
            assert js(drv, "return document.activeElement.className") == "group-rename"
            assert js(drv, "return document.activeElement.closest('li.group').getAttribute('data-group')") == group

            keys(drv, "c", Keys.ENTER)
            wait(lambda: drv.find_elements("css selector", "#split-preview"), what="a cluster's head")
            idle(drv)
            drv.find_element("id", "cluster-name").click()  # the head (Tab from the list crosses every row)
            tab_to("split-preview")
            keys(drv, Keys.ENTER)
            wait(lambda: drv.find_element("id", "split-panel").is_displayed(), what="the split preview")
            idle(drv)
            assert focused(drv)["id"] == "split-preview"
            tab_to("split-apply")
            keys(drv, Keys.ENTER)
            wait(lambda: any(e["kind"] == "split" for e in api.get("/api/edits").json()["events"]), what="the split")
            idle(drv, "the split's refresh")
            wait(lambda: not drv.find_element("id", "split-panel").is_displayed(), what="the split panel gone")
            assert focused(drv)["tile"], f"after the split the focus is on {focused(drv)}"

            js(drv, "document.getElementById('export').focus()")
            keys(drv, Keys.ENTER)
            wait(lambda: js(drv, "return window.mcStudio.lastExport"), what="the export")
            idle(drv)
            assert focused(drv)["id"] == "export"
            assert not severe(drv)


@pytest.mark.slow
@pytest.mark.browser
def test_moving_to_a_new_cluster_asks_its_name_in_the_page(base_run, tmp_path, module_chromium):
    """"move to: a new cluster" asks the name in a dialog of the page (it was ``window.prompt``:
    unstyled, outside the page's keyboard help, not testable without driving a browser alert):
    the focus goes into its labelled name box; Escape cancels (nothing moved, the selection kept,
    the focus back on "move"); Enter on an empty name is refused with a visible message said by
    a screen reader; a name and Enter move the items to a new cluster of that name, the focus on
    a tile of the gallery afterwards."""
    from selenium.webdriver.common.keys import Keys

    run = copy_run(base_run, tmp_path / "run")
    with studio_in_chromium(run, shared=module_chromium) as (s, drv):
        with client(s) as api:
            drv.get(s.url)
            wait(lambda: loaded(drv), what="first paint")
            keys(drv, "c", Keys.ENTER)
            wait(lambda: drv.find_elements("css selector", "#grid .tile"), what="a cluster's gallery")
            idle(drv)
            keys(drv, "g", Keys.SPACE)
            tile = int(focused(drv)["i"])
            wait(lambda: js(drv, "return window.mcStudio.selected.size") == 1, what="a tile selected")
            keys(drv, "m")
            for _ in range(40):
                if drv.find_element("id", "move-to").get_attribute("value") == "new":
                    break
                keys(drv, Keys.ARROW_DOWN)
            assert drv.find_element("id", "move-to").get_attribute("value") == "new"
            keys(drv, Keys.TAB, Keys.ENTER)
            dialog = drv.find_element("id", "name-dialog")
            wait(lambda: dialog.is_displayed(), what="the name dialog")
            assert focused(drv)["id"] == "new-name"
            box = drv.find_element("id", "new-name")
            assert box.accessible_name and "name" in box.accessible_name
            keys(drv, Keys.ESCAPE)
            wait(lambda: not dialog.is_displayed(), what="Escape closing the dialog")
            assert focused(drv)["id"] == "move"
            assert js(drv, "return window.mcStudio.selected.size") == 1  # Escape closed the dialog only
            assert api.get("/api/edits").json()["events"] == []

            keys(drv, Keys.ENTER)
            wait(lambda: dialog.is_displayed(), what="the name dialog again")
            assert focused(drv)["id"] == "new-name" and box.get_attribute("value") == ""
            keys(drv, "   ", Keys.ENTER)
            err = drv.find_element("id", "new-name-error")
            wait(lambda: err.is_displayed() and err.text, what="the empty name refused")
            assert dialog.is_displayed() and focused(drv)["id"] == "new-name"
            assert box.get_attribute("aria-invalid") == "true" and err.get_attribute("role") == "alert"
            assert api.get("/api/edits").json()["events"] == []

            keys(drv, "picked by keyboard", Keys.ENTER)
            wait(lambda: len(api.get("/api/edits").json()["events"]) == 1, what="the move")
            idle(drv, "the move's refresh")
            assert not dialog.is_displayed()
            new = int(labels(api)[tile])
            assert api.get(f"/api/clusters/{new}").json()["name"] == "picked by keyboard"
            f = focused(drv)
            assert f["tile"] and not f["body"], f"after the move the focus is on {f}"
            assert not severe(drv)


#: controls of the cluster list that sit inside another control (a button or role=button holding a checkbox)
NESTED = """return Array.from(document.querySelectorAll('#cluster-list button, #cluster-list input, #cluster-list [role=button], #cluster-list [tabindex]'))
  .filter(e => { const up = e.parentElement.closest('button, input, a[href], [role=button], [tabindex]');
                 return up !== null && document.getElementById('cluster-list').contains(up); })
  .map(e => e.tagName + '.' + e.className);"""


@pytest.mark.slow
@pytest.mark.browser
def test_a_cluster_row_holds_its_open_button_and_merge_checkbox_side_by_side(base_run, tmp_path, module_chromium):
    """A cluster row is a list item holding two sibling controls, its merge checkbox and a button
    that opens the cluster (the row was a role=button holding the checkbox: a control inside a
    control, which the HTML spec and screen readers reject). The row looks as it did (one line,
    the button filling it after the checkbox, a click on the row's edge still opens it); the
    button carries the row's spoken name and aria-current; arrows move between the rows'
    buttons, x checks the focused row's box, Enter opens the row."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    run = copy_run(base_run, tmp_path / "run")
    with studio_in_chromium(run, shared=module_chromium) as (s, drv):
        drv.get(s.url)
        wait(lambda: loaded(drv), what="first paint")
        assert js(drv, NESTED) == []
        rows = drv.find_elements("css selector", "#cluster-list li[data-cluster]")
        assert len(rows) >= 2
        for li in rows:
            kids = js(drv, "return Array.from(arguments[0].children).map(e => e.tagName + '.' + e.className)", li)
            cid = int(li.get_attribute("data-cluster"))
            assert "BUTTON.crow" in kids and (cid < 0 or "INPUT.mcheck" in kids), kids
        g = js(drv, """const li = arguments[0], b = li.querySelector('.crow').getBoundingClientRect(), r = li.getBoundingClientRect();
            return {h: r.height, right: r.right - b.right, bh: b.height};""", rows[0])
        assert g["h"] < 32 and g["right"] <= 9 and g["bh"] >= g["h"] - 9, g  # one line, the button fills the row

        keys(drv, "c")
        a = focused(drv)
        assert a["tag"] == "BUTTON" and a["cluster"] is not None, a
        btn = drv.find_element("css selector", f'#cluster-list li[data-cluster="{a["cluster"]}"] .crow')
        assert "items" in btn.accessible_name
        keys(drv, "x")
        wait(lambda: js(drv, "return window.mcStudio.checked.has(Number(arguments[0]))", a["cluster"]), what="x checking the row")
        box = drv.find_element("css selector", f'#cluster-list li[data-cluster="{a["cluster"]}"] .mcheck')
        assert box.is_selected() and focused(drv)["cluster"] == a["cluster"] and focused(drv)["tag"] == "BUTTON"
        assert "checked for a merge" in drv.find_element(
            "css selector", f'#cluster-list li[data-cluster="{a["cluster"]}"] .crow').get_attribute("aria-label")
        keys(drv, Keys.ARROW_DOWN)
        b = focused(drv)
        assert b["tag"] == "BUTTON" and b["cluster"] not in (None, a["cluster"]), b
        keys(drv, Keys.ENTER)
        wait(lambda: drv.find_element("id", "view-head").get_attribute("data-cluster") == b["cluster"], what="Enter opening the row")
        idle(drv)
        cur = drv.find_element("css selector", f'#cluster-list li[data-cluster="{b["cluster"]}"] .crow')
        assert cur.get_attribute("aria-current") == "true" and focused(drv)["cluster"] == b["cluster"]
        # the row's left edge (its padding, before the checkbox) opens it too, as the whole row did
        li = drv.find_element("css selector", f'#cluster-list li[data-cluster="{a["cluster"]}"]')
        ActionChains(drv).move_to_element_with_offset(li, -li.size["width"] // 2 + 3, 0).click().perform()
        wait(lambda: drv.find_element("id", "view-head").get_attribute("data-cluster") == a["cluster"], what="a click on the row's edge")
        assert js(drv, NESTED) == []
        assert not severe(drv)
