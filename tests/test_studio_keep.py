"""What a person on one studio page keeps when another page's edit arrives (real Chromium).

Page A is a real page; "page B" is another studio client making its edits over HTTP (its own
``X-Mediacluster-Client``), exactly what the page's poll sees of another tab or studio. After
each of B's edits A's poll refreshes, and A must still have its place: the clusters it checked
for a merge, the gallery page and scroll, the items it selected, the name it was typing, the
focused tile, the map's zoom, the filter; what B's edit took away is dropped visibly (a checked
cluster merged away, a split preview of a cluster B changed)."""

from __future__ import annotations

import numpy as np
import pytest
from studio_helpers import client, copy_run, post, studio_in_chromium
from test_studio_browser import js, loaded, open_cluster, severe, wait

#: the browser the module's tests share (conftest.module_chromium)
BROWSER_SIZE = (1400, 900)

B = {"X-Mediacluster-Client": "page-b"}


def b_edit(api, body) -> int:
    r = post(api, "/api/edits", body, headers=B)
    assert r.status_code == 200, r.text
    return r.json()["seq"]


def caught_up(drv, seq):
    """A's poll has refreshed to edit ``seq`` and nothing is loading."""
    return js(drv, "const S = window.mcStudio; return S.seq === arguments[0] && S.busy === 0", seq)


def checked(drv) -> set[int]:
    return {int(c.find_element("xpath", "..").get_attribute("data-cluster"))
            for c in drv.find_elements("css selector", "#cluster-list .mcheck") if c.is_selected()}


def largest(api, n: int = 3):
    """The run's labels, cluster sizes and its ``n`` largest clusters, largest first."""
    lab = np.frombuffer(api.get("/api/labels").content, "<i4")
    sizes = np.bincount(lab[lab >= 0])
    return lab, sizes, [int(c) for c in np.argsort(-sizes)[:n]]


def check(drv, cid):
    drv.find_element("css selector", f'#cluster-list li[data-cluster="{cid}"] .mcheck').click()


@pytest.mark.browser
@pytest.mark.slow
def test_another_pages_edit_keeps_this_pages_place(base_run, tmp_path, module_chromium):
    run = copy_run(base_run, tmp_path / "run")
    with studio_in_chromium(run, shared=module_chromium) as (s, drv):
        with client(s) as api:
            lab, sizes, (big, mid, small) = largest(api)
            assert sizes[big] > 60  # a second gallery page
            drv.get(s.url)
            wait(lambda: loaded(drv), what="first paint")
            js(drv, "performance.setResourceTimingBufferSize(100000)")  # every request counted below

            # -- A's place: the big cluster's second page, scrolled, two tiles selected, the last
            # one focused, a name typed but not applied, the other two clusters checked, zoomed in
            open_cluster(drv, big)
            drv.find_element("id", "next").click()
            wait(lambda: "page 2 of" in drv.find_element("id", "page-info").text and
                 js(drv, "return window.mcStudio.busy") == 0, what="page 2")
            name = drv.find_element("id", "cluster-name")
            name.clear()
            name.send_keys("half typed")
            tiles = drv.find_elements("css selector", "#grid .tile")
            picked = [int(t.get_attribute("data-i")) for t in tiles[2:4]]
            for t in tiles[2:4]:
                drv.execute_script("arguments[0].scrollIntoView({block: 'center'})", t)
                t.click()
            assert js(drv, "return Array.from(window.mcStudio.selected).sort((a, b) => a - b)") == sorted(picked)
            check(drv, mid)
            check(drv, small)
            drv.execute_script("arguments[0].focus()", tiles[3])  # the keyboard's focus on the last pick
            js(drv, "document.getElementById('view').scrollTop = 120")
            js(drv, """const c = document.getElementById('map'), r = c.getBoundingClientRect();
                c.dispatchEvent(new WheelEvent('wheel', {deltaY: -400, clientX: r.left + r.width / 2,
                                                           clientY: r.top + r.height / 2, bubbles: true}));""")
            scale = js(drv, "return window.mcStudio.scale")
            assert scale > 1.5
            scroll = js(drv, "return document.getElementById('view').scrollTop")
            assert scroll > 0
            loads = js(drv, "return performance.getEntriesByType('resource').length")

            # -- B renames the middle cluster: nothing of A's place refers to what changed
            seq = b_edit(api, {"kind": "rename", "cluster": mid, "name": "renamed by B"})
            wait(lambda: caught_up(drv, seq), what="A's poll")
            wait(lambda: drv.find_element("css selector", f'#cluster-list li[data-cluster="{mid}"] .cname').text
                 == "renamed by B", what="B's name in A")
            place = {  # every state checked at once, so a failure names all that were lost
                "checked for a merge": checked(drv) == {mid, small} and drv.find_element("id", "merge").is_enabled(),
                "gallery page": "page 2 of" in drv.find_element("id", "page-info").text,
                "gallery scroll": js(drv, "return document.getElementById('view').scrollTop") == scroll,
                "typed name": drv.find_element("id", "cluster-name").get_attribute("value") == "half typed",
                "focused tile": js(drv, "return document.activeElement.getAttribute('data-i')") == str(picked[1]),
                "selected items": {int(t.get_attribute("data-i"))
                                   for t in drv.find_elements("css selector", "#grid .tile.selected")} == set(picked),
                "map zoom": js(drv, "return window.mcStudio.scale") == scale,
            }
            assert all(place.values()), "lost: " + ", ".join(k for k, v in place.items() if not v)
            # the gallery B's edit did not touch is not fetched again (a rename of another cluster)
            fetched = js(drv, "return performance.getEntriesByType('resource').slice(arguments[0]).map((e) => e.name)",
                         loads)
            assert not [u for u in fetched if f"/api/clusters/{big}" in u], fetched

            # -- B merges the small cluster into the middle one: A's check of it goes, visibly
            seq = b_edit(api, {"kind": "merge", "clusters": [mid, small]})
            wait(lambda: caught_up(drv, seq), what="A's poll after the merge")
            wait(lambda: checked(drv) == {mid}, what="the merged-away cluster unchecked")
            assert not drv.find_element("id", "merge").is_enabled()
            assert drv.find_element("id", "merge-info").text == "1 checked"
            assert any(f"#{small}" in t["text"] and "merged" in t["text"]
                       for t in js(drv, "return window.mcStudio.toasts")), js(drv, "return window.mcStudio.toasts")
            assert drv.find_element("id", "cluster-name").get_attribute("value") == "half typed"
            assert js(drv, "return Array.from(window.mcStudio.selected).sort((a, b) => a - b)") == sorted(picked)
            assert not js(drv, "return window.mcStudio.refreshes.slice(-1)[0].rendered")  # A's cluster untouched

            # -- B moves most of A's cluster away: A's page 2 no longer exists; A sees the last page
            members = np.flatnonzero(np.frombuffer(api.get("/api/labels").content, "<i4") == big)
            keep = set(picked)
            gone = [int(i) for i in members if int(i) not in keep][: len(members) - 30]
            js(drv, "for (const t of document.querySelectorAll('#grid .tile.selected')) t.mcMark = 1")
            loads = js(drv, "return performance.getEntriesByType('resource').length")
            seq = b_edit(api, {"kind": "move", "items": gone, "to": mid})
            wait(lambda: caught_up(drv, seq), what="A's poll after the move")
            wait(lambda: len(drv.find_elements("css selector", "#grid .tile")) == 30, what="the gallery's last page")
            # the tiles of items still shown are kept, their pictures not loaded again
            assert js(drv, """const ts = document.querySelectorAll('#grid .tile.selected');
                              return ts.length === 2 && Array.from(ts).every((t) => t.mcMark === 1)""")
            fetched = js(drv, "return performance.getEntriesByType('resource').slice(arguments[0]).map((e) => e.name)",
                         loads)
            assert not [u for u in fetched for i in picked if f"/api/items/{i}/thumb" in u], fetched
            assert not drv.find_element("id", "pager").is_displayed() or \
                "page 1 of 1" in drv.find_element("id", "page-info").text
            assert {int(t.get_attribute("data-i")) for t in drv.find_elements("css selector", "#grid .tile.selected")} \
                == set(picked)
            # the head was drawn again (B changed this cluster), the name typed in it is still there
            assert js(drv, "return window.mcStudio.refreshes.slice(-1)[0].rendered")
            assert drv.find_element("id", "cluster-name").get_attribute("value") == "half typed"
            assert js(drv, "return window.mcStudio.errors") == []
            assert not severe(drv)


@pytest.mark.browser
@pytest.mark.slow
def test_a_split_preview_stays_until_another_page_changes_its_cluster(base_run, tmp_path, module_chromium):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    run = copy_run(base_run, tmp_path / "run")
    with studio_in_chromium(run, shared=module_chromium) as (s, drv):
        with client(s) as api:
            lab, sizes, (big, mid, small) = largest(api)
            drv.get(s.url)
            wait(lambda: loaded(drv), what="first paint")
            drv.find_element("id", "filter").send_keys(str(big))  # the list filtered to one cluster
            wait(lambda: len(drv.find_elements("css selector", "#cluster-list li[data-cluster]")) == 1, what="filter")
            open_cluster(drv, big)
            Select(drv.find_element("id", "split-k")).select_by_value("2")
            drv.find_element("id", "split-preview").click()
            wait(lambda: len(drv.find_elements("css selector", "#split-panel .part")) == 2, what="split preview")
            part = drv.find_elements("css selector", "#split-panel .part-name")[0]
            part.clear()
            part.send_keys("my part")

            # B tags another cluster: the preview, its typed part name, the k chosen and the filter stay
            seq = b_edit(api, {"kind": "tag", "clusters": [mid], "add": ["from b"]})
            wait(lambda: caught_up(drv, seq), what="A's poll")
            assert drv.find_element("id", "split-panel").is_displayed()
            assert js(drv, "return window.mcStudio.preview !== null")
            assert drv.find_elements("css selector", "#split-panel .part-name")[0].get_attribute("value") == "my part"
            assert Select(drv.find_element("id", "split-k")).first_selected_option.get_attribute("value") == "2"
            assert drv.find_element("id", "filter").get_attribute("value") == str(big)
            assert len(drv.find_elements("css selector", "#cluster-list li[data-cluster]")) == 1

            # B moves items out of the previewed cluster: the preview is out of date, dropped with a word
            one = int(np.flatnonzero(lab == big)[0])
            seq = b_edit(api, {"kind": "move", "items": [one], "to": small})
            wait(lambda: caught_up(drv, seq), what="A's poll after the move")
            wait(lambda: not drv.find_element("id", "split-panel").is_displayed(), what="the preview dropped")
            assert js(drv, "return window.mcStudio.preview") is None
            assert any("split preview" in t["text"] for t in js(drv, "return window.mcStudio.toasts"))

            # A's own tag and rename from the head's boxes (Enter): applied, so not kept as typed text;
            # B's later name for the cluster shows in A's box
            tag = drv.find_element("id", "cluster-tag")
            tag.send_keys("mine" + Keys.ENTER)
            wait(lambda: "mine" in drv.find_element("id", "cluster-tags").text, what="A's tag chip")
            assert drv.find_element("id", "cluster-tag").get_attribute("value") == ""
            assert js(drv, "return document.activeElement.id") == "cluster-tag"
            box = drv.find_element("id", "cluster-name")
            box.clear()
            box.send_keys("A's name" + Keys.ENTER)
            wait(lambda: drv.find_element("css selector", f'#cluster-list li[data-cluster="{big}"] .cname').text
                 == "A's name", what="A's rename")
            seq = b_edit(api, {"kind": "rename", "cluster": big, "name": "B's name"})
            wait(lambda: caught_up(drv, seq), what="A's poll after B's rename")
            wait(lambda: drv.find_element("id", "cluster-name").get_attribute("value") == "B's name",
                 timeout=5, what="B's name in A's box")

            # B merges A's cluster into another: A follows its items there and is told so
            seq = b_edit(api, {"kind": "merge", "clusters": [big, mid], "into": mid})
            wait(lambda: caught_up(drv, seq), what="A's poll after the merge")
            wait(lambda: drv.find_element("id", "view-head").get_attribute("data-cluster") == str(mid),
                 what="A's view on the cluster its items went to")
            assert js(drv, "return window.mcStudio.highlight") == mid
            assert any(f"#{big}" in t["text"] and "merged into" in t["text"]
                       for t in js(drv, "return window.mcStudio.toasts"))
            assert js(drv, "return window.mcStudio.errors") == []
            assert not severe(drv)


@pytest.mark.browser
@pytest.mark.slow
def test_the_level_switch_stays_and_its_map_colours_follow_another_pages_edit(level_run, tmp_path, module_chromium):
    """On a run with levels, A groups the list by a coarse level (the map coloured by its groups);
    B moves items between clusters of two groups: A's switch stays on the level and the map's
    colours are the level's groups now (``/api/levels/NAME``), not the ones before B's edit."""
    from selenium.webdriver.support.ui import Select

    run = copy_run(level_run, tmp_path / "run")
    with studio_in_chromium(run, shared=module_chromium) as (s, drv):
        with client(s) as api:
            shown = api.get("/api/clusters").json()
            level = next(iter(shown["groups"]))
            groups = shown["groups"][level]
            lab = np.frombuffer(api.get("/api/labels").content, "<i4")
            a = next(int(c) for c in groups)
            b = next(int(c) for c in groups if groups[c] != groups[str(a)])
            drv.get(s.url)
            wait(lambda: loaded(drv), what="first paint")
            Select(drv.find_element("id", "level")).select_by_value(level)
            wait(lambda: drv.find_elements("css selector", "#cluster-list li.group") and
                 js(drv, "return window.mcStudio.levelLabels !== null"), what="the groups")
            before = np.array(js(drv, "return Array.from(window.mcStudio.levelLabels)"))
            items = [int(i) for i in np.flatnonzero(lab == a)[:10]]
            seq = b_edit(api, {"kind": "move", "items": items, "to": b})
            now = np.frombuffer(api.get(f"/api/levels/{level}").content, "<i4")
            assert (now[items] != before[items]).all()  # B's edit changed those items' groups
            wait(lambda: caught_up(drv, seq), what="A's poll")
            assert Select(drv.find_element("id", "level")).first_selected_option.get_attribute("value") == level
            assert drv.find_elements("css selector", "#cluster-list li.group")
            wait(lambda: np.array_equal(np.array(js(drv, "return Array.from(window.mcStudio.levelLabels)")), now),
                 timeout=5, what="the level's colours as they are now")
            assert not severe(drv)


def swatch(drv, i):
    """The colour and the cluster name of a gallery tile's swatch."""
    return js(drv, """const s = document.querySelector('#grid .tile[data-i="' + arguments[0] + '"] .sw');
                      return s && [s.style.background, s.title]""", i)


def list_colour(drv, cid):
    return js(drv, """return document.querySelector('#cluster-list li[data-cluster="' + arguments[0] + '"] .swatch')
                      .style.background""", cid)


@pytest.mark.browser
@pytest.mark.slow
def test_a_search_and_the_open_item_follow_another_pages_edit(base_run, tmp_path, module_chromium):
    """A searches for look-alikes of an item (its panel open) in one cluster, selects a result and
    scrolls; B moves the item and two results to another cluster, renames that cluster, tags the
    item and merges the searched cluster away: A's results (their order, the query, the scroll,
    the selection) stay, each tile's swatch shows its cluster as it is now, the panel shows the
    item's cluster, name and tags now, and A is told of what went away."""
    from selenium.webdriver.support.ui import Select

    run = copy_run(base_run, tmp_path / "run")
    with studio_in_chromium(run, shared=module_chromium) as (s, drv):
        with client(s) as api:
            lab, sizes, (big, mid, small) = largest(api)
            drv.get(s.url)
            wait(lambda: loaded(drv), what="first paint")
            open_cluster(drv, big)
            Select(drv.find_element("id", "scope")).select_by_value(str(big))  # search in this cluster
            tile = drv.find_elements("css selector", "#grid .tile")[0]
            x = int(tile.get_attribute("data-i"))
            tile.find_element("css selector", ".open").click()
            wait(lambda: drv.find_element("id", "more-like").is_displayed(), what="the item panel")
            drv.find_element("id", "more-like").click()
            wait(lambda: js(drv, "return window.mcStudio.view.kind === 'search' && window.mcStudio.busy === 0"),
                 what="the search")
            results = js(drv, "return window.mcStudio.view.result.items.map((it) => it.i)")
            others = [i for i in results if i != x]
            assert len(others) > 30 and all(lab[i] == big for i in results)
            moved = others[:2]
            title = drv.find_element("id", "search-title").text
            pick = drv.find_element("css selector", f'#grid .tile[data-i="{others[5]}"]')
            drv.execute_script("arguments[0].scrollIntoView({block: 'center'})", pick)
            pick.click()
            js(drv, "document.getElementById('view').scrollTop = 80")
            scroll = js(drv, "return document.getElementById('view').scrollTop")
            assert scroll > 0
            assert swatch(drv, moved[0])[0] == list_colour(drv, big)

            def place():  # every part of A's place checked at once, so a failure names all that were lost
                p = {"search view": js(drv, "return window.mcStudio.view.kind") == "search",
                     "results and their order": [int(t.get_attribute("data-i")) for t in
                                                 drv.find_elements("css selector", "#grid .tile")] == results,
                     "query": drv.find_element("id", "search-title").text == title,
                     "scroll": js(drv, "return document.getElementById('view').scrollTop") == scroll,
                     "selection": js(drv, "return Array.from(window.mcStudio.selected)") == [others[5]] and
                     drv.find_element("css selector", f'#grid .tile[data-i="{others[5]}"]').get_attribute("class")
                     .split().count("selected") == 1}
                assert all(p.values()), "lost: " + ", ".join(k for k, v in p.items() if not v)

            # -- B moves the open item and two of the results to the small cluster
            seq = b_edit(api, {"kind": "move", "items": [x, *moved], "to": small})
            wait(lambda: caught_up(drv, seq), what="A's poll")
            wait(lambda: all(swatch(drv, i)[0] == list_colour(drv, small) for i in moved), timeout=5,
                 what="the moved results' swatches in their new cluster's colour")
            assert swatch(drv, others[2])[0] == list_colour(drv, big)  # the rest as they were
            wait(lambda: f"(#{small})" in drv.find_element("id", "item-table").text, timeout=5,
                 what="the open item's new cluster in its panel")
            assert any(f"#{small}" in t["text"] and "moved" in t["text"] and "open" in t["text"]
                       for t in js(drv, "return window.mcStudio.toasts")), js(drv, "return window.mcStudio.toasts")
            place()

            # -- B renames that cluster and tags the item: the tiles' and the panel's names follow
            b_edit(api, {"kind": "rename", "cluster": small, "name": "renamed by B"})
            seq = b_edit(api, {"kind": "tag", "items": [x], "add": ["from b"]})
            wait(lambda: caught_up(drv, seq), what="A's poll after the rename and the tag")
            wait(lambda: swatch(drv, moved[0])[1] == f"renamed by B (#{small})", timeout=5,
                 what="the moved results' cluster name")
            wait(lambda: "from b" in drv.find_element("id", "item-table").text, timeout=5, what="the item's tag")
            assert f"renamed by B (#{small})" in drv.find_element("id", "item-table").text
            place()

            # -- B merges the searched cluster into the middle one: the results stay, A is told
            seq = b_edit(api, {"kind": "merge", "clusters": [big, mid], "into": mid})
            wait(lambda: caught_up(drv, seq), what="A's poll after the merge")
            wait(lambda: swatch(drv, others[2])[0] == list_colour(drv, mid), timeout=5,
                 what="the merged results in the colour of the cluster they went to")
            assert swatch(drv, moved[0])[1] == f"renamed by B (#{small})"
            assert any(f"#{big}" in t["text"] and "this search was in" in t["text"] and f"merged into #{mid}" in t["text"]
                       for t in js(drv, "return window.mcStudio.toasts")), js(drv, "return window.mcStudio.toasts")
            place()
            assert js(drv, "return window.mcStudio.errors") == []
            assert not severe(drv)


@pytest.mark.browser
@pytest.mark.slow
def test_a_refresh_slower_than_the_poll_is_not_started_again_by_the_next_poll(base_run, tmp_path, module_chromium):
    """The page polls every 1.5 s; on a loaded machine a refresh can take longer. The next poll
    waits for it: before, it saw the edit still being refreshed to and refreshed again, so the
    view was drawn twice (the duplicates view's button replaced under the pointer lost its click:
    test_studio_dups' StaleElementReference at load 16) and another page's change said twice."""
    run = copy_run(base_run, tmp_path / "run")
    with studio_in_chromium(run, shared=module_chromium) as (s, drv):
        with client(s) as api:
            lab, sizes, (big, mid, small) = largest(api)
            drv.get(s.url)
            wait(lambda: loaded(drv), what="first paint")
            open_cluster(drv, big)
            # the labels come 4 s late: two or three more polls are due while the refresh waits
            js(drv, """const f = window.fetch;
                       window.fetch = async (u, init) => { const r = await f(u, init);
                         if (String(u).startsWith('api/labels')) await new Promise((ok) => setTimeout(ok, 4000));
                         return r; };""")
            n = js(drv, "return window.mcStudio.refreshes.length")
            seq = b_edit(api, {"kind": "move", "items": [int(np.flatnonzero(lab == big)[0])], "to": mid})
            wait(lambda: caught_up(drv, seq), timeout=60, what="A's poll")
            done = js(drv, "return window.mcStudio.refreshes.slice(arguments[0])", n)
            assert [(r["seq"], r["rendered"]) for r in done] == [(seq, True)], done
