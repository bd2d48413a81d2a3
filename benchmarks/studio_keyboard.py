"""The studio by keyboard and screen reader: an audit of a real run's page, and its load time.

    python benchmarks/studio_keyboard.py RUN [--loads 8] [--zoom 2] [--audit] [--compare OTHER_SRC]

Starts ``mediacluster studio RUN`` on 127.0.0.1 (the package on ``PYTHONPATH``), opens it in
headless Chromium and

- times ``--loads`` fresh loads of the page (navigation start to the page's first paint with
  no request in flight; and the page's own ``firstPaint``, ms), the median and the spread;
- with ``--compare OTHER_SRC``: instead, two studios on RUN, one with ``OTHER_SRC`` as its
  ``PYTHONPATH`` (another checkout's ``src``: the page before a change), loaded in turn by one
  browser ``--loads`` times each (the order swapped every round), so the two see the same
  machine load at the same moments;
- with ``--audit``: walks the page with Tab from the top (each stop's tag, role, accessible name
  as Chromium computes it, whether a focus ring is drawn), lists the controls without an
  accessible name, the images in controls without a text alternative, the live regions, and,
  at ``--zoom`` (a window ``1 / zoom`` as wide: what 200% zoom leaves a 1400 px screen), the
  widths the gallery and the side panels get and whether the header is cut off.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import _browser  # noqa: E402
from studio_helpers import Server  # noqa: E402

FOCUS_INFO = """
const a = document.activeElement;
if (!a || a === document.body) return null;
const cs = getComputedStyle(a);
const up = a.parentElement ? getComputedStyle(a.parentElement) : null;  // or its row's (a cluster row's open button)
const ring = (cs.outlineStyle !== 'none' && parseFloat(cs.outlineWidth) > 0) || cs.boxShadow !== 'none'
  || (up !== null && up.outlineStyle !== 'none' && parseFloat(up.outlineWidth) > 0);
const vis = a.offsetParent !== null && parseFloat(cs.opacity) > 0.1;
return [a.tagName.toLowerCase(), a.id || a.className || '', a.getAttribute('role') || '', ring, vis];
"""

NAMELESS = """
const out = [];
for (const e of document.querySelectorAll('button, input, select, [role=button], [tabindex], img, canvas')) {
  if (e.closest('[hidden], dialog:not([open])')) continue;  // not shown (a closed dialog: the new cluster's name)
  out.push(e);
}
return out;
"""


def load_times(url: str, loads: int) -> tuple[list[float], list[float]]:
    drv = _browser.chromium(1400, 1000)
    wall, paint = [], []
    try:
        for _ in range(loads):
            drv.get("about:blank")
            t0 = time.perf_counter()
            drv.get(url)
            _browser.wait_studio_loaded(drv)
            wall.append((time.perf_counter() - t0) * 1000)
            paint.append(drv.execute_script("return window.mcStudio.firstPaint"))
    finally:
        drv.quit()
    return wall, paint


def compare(run: Path, other: str, loads: int) -> None:
    """``--loads`` loads of each of two studios on ``run`` in turn: this checkout's and ``other``'s."""
    import os

    here = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = other
    a = Server(run)
    os.environ["PYTHONPATH"] = here
    b = Server(run)
    drv = _browser.chromium(1400, 1000)
    res = {"other": ([], []), "this": ([], [])}
    try:
        for k in range(loads):
            for name, s in ((("other", a), ("this", b)) if k % 2 == 0 else (("this", b), ("other", a))):
                drv.get("about:blank")
                t0 = time.perf_counter()
                drv.get(s.url)
                _browser.wait_studio_loaded(drv)
                res[name][0].append((time.perf_counter() - t0) * 1000)
                res[name][1].append(drv.execute_script("return window.mcStudio.firstPaint"))
        for name, (w, p) in res.items():
            q, qp = statistics.quantiles(w), statistics.quantiles(p)
            print(f"{name} ({other if name == 'other' else here}): load median {statistics.median(w):.0f} ms "
                  f"(quartiles {q[0]:.0f}-{q[2]:.0f}); firstPaint median {statistics.median(p):.0f} ms "
                  f"(quartiles {qp[0]:.0f}-{qp[2]:.0f})")
    finally:
        drv.quit()
        a.stop()
        b.stop()


def audit(url: str, zoom: float) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    drv = _browser.chromium(1400, 1000)
    try:
        drv.get(url)
        _browser.wait_studio_loaded(drv)
        # a cluster open, so the gallery's tiles are there to Tab through
        drv.find_element("css selector", "#cluster-list li[data-cluster]").click()
        time.sleep(1.5)
        drv.find_element("tag name", "body").click()
        stops, seen = [], 0
        for _ in range(160):
            ActionChains(drv).send_keys(Keys.TAB).perform()
            info = drv.execute_script(FOCUS_INFO)
            name = drv.switch_to.active_element.accessible_name if info else ""
            stops.append((info, name))
            seen += 1
        print(f"Tab stops from the top ({seen}):")
        last = None
        for info, name in stops:
            key = (info[0], str(info[1])[:20], info[2]) if info else None
            if key == last:
                continue
            last = key
            print(f"  {info!s:60.60} name={name!r:.50}")
        print("no focus ring:", sorted({f"{i[0]}#{i[1]}"[:40] for i, _ in stops if i and not i[3]}))
        print("focused but invisible:", sorted({f"{i[0]}#{i[1]}"[:40] for i, _ in stops if i and not i[4]}))
        nameless = []
        for e in drv.execute_script(NAMELESS):
            tag = e.tag_name
            if tag == "img":
                if e.get_attribute("alt") in (None, "") and e.find_elements("xpath", "ancestor::*[@role='button' or self::button]") == []:
                    nameless.append(f"img {e.get_attribute('src')[:40]} (alt={e.get_attribute('alt')!r})")
                continue
            nm = e.accessible_name
            if not nm.strip():
                nameless.append(f"{tag}#{e.get_attribute('id') or e.get_attribute('class')}")
        print("without an accessible name:", nameless[:40], f"({len(nameless)})")
        print("live regions:", drv.execute_script(
            "return Array.from(document.querySelectorAll('[aria-live],[role=status],[role=alert]')).map(e => e.id + ':' + (e.getAttribute('aria-live') || e.getAttribute('role')))"))
        # what a zoom leaves: a window 1 / zoom as wide and high, the same CSS px as zooming in
        drv.set_window_size(int(1400 / zoom), int(1000 / zoom))
        time.sleep(0.5)
        drv.find_element("css selector", "#grid .tile").click()  # the item panel and the selection bar
        drv.find_element("css selector", "#grid .tile .open").click() if drv.find_elements("css selector", "#grid .tile .open") else None
        time.sleep(1.0)
        print(f"at {zoom:.0%} zoom:", drv.execute_script("""
          const w = (id) => { const e = document.getElementById(id); return e && !e.hidden ? Math.round(e.getBoundingClientRect().width) : null; };
          const top = document.getElementById('top');
          const sel = document.getElementById('selbar').getBoundingClientRect();
          return {viewport: innerWidth, side: w('side'), center: w('center'), item: w('item-panel'), grid: w('grid'),
                  header_cut: top.scrollWidth - top.clientWidth, selbar: Math.round(sel.width), selbar_off: Math.round(Math.max(0, -sel.left, sel.right - innerWidth))};"""))
    finally:
        drv.quit()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("--loads", type=int, default=8)
    ap.add_argument("--zoom", type=float, default=2.0)
    ap.add_argument("--audit", action="store_true")
    ap.add_argument("--compare", metavar="OTHER_SRC")
    a = ap.parse_args(argv)
    if a.compare:
        compare(Path(a.run), a.compare, a.loads)
        return 0
    s = Server(Path(a.run))
    try:
        if a.loads:
            wall, paint = load_times(s.url, a.loads)
            print(f"page load over {a.loads} loads: median {statistics.median(wall):.0f} ms "
                  f"(min {min(wall):.0f}, max {max(wall):.0f}); firstPaint median {statistics.median(paint):.0f} ms "
                  f"(min {min(paint):.0f}, max {max(paint):.0f})")
        if a.audit:
            audit(s.url, a.zoom)
    finally:
        s.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
