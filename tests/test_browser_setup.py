"""The browser tests' one setup (``studio_helpers.studio_in_chromium`` / ``browser`` /
``SharedChromium``): whatever the test does, its browser and its server are gone afterwards, and a
browser lent to the next test is handed back as a new one would start."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest
from studio_helpers import SharedChromium, browser, processes_with, studio_in_chromium


@pytest.mark.slow
@pytest.mark.browser
def test_a_failing_test_leaves_no_browser_no_server_and_no_profile(base_run):
    with pytest.raises(RuntimeError, match="the test failed"):
        with studio_in_chromium(base_run, "--map", "pca") as (s, drv):
            profile = drv.capabilities["chrome"]["userDataDir"]
            driver = drv.service.process
            drv.get(s.url)
            assert processes_with(f"--user-data-dir={profile}")  # the browser's processes, found by its profile
            raise RuntimeError("the test failed")
    assert s.proc.poll() is not None and driver.poll() is not None
    assert not Path(profile).exists()
    assert processes_with(f"--user-data-dir={profile}") == []


class _Site:
    """A real HTTP server on 127.0.0.1 serving an empty page at one origin, kept across two
    uses of a shared browser (a studio would be on a new port each time)."""

    def __enter__(self):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the stdlib's name
        body = b"<!doctype html><title>page</title><p>page"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


STATE = ("return indexedDB.databases().then(d => [localStorage.length, sessionStorage.length, "
         "document.cookie, d.length])")


@pytest.mark.slow
@pytest.mark.browser
def test_a_shared_browser_is_handed_back_as_a_new_one(base_run):
    """Stored data of the origin, cookies, other tabs, the console log and an open dialog are
    gone when the next test takes the browser; one that cannot be blanked is replaced."""
    shared = SharedChromium()
    try:
        with _Site() as site:
            with browser(shared=shared) as drv:
                drv.get(site.url)
                drv.execute_script("localStorage.setItem('k', 'v'); sessionStorage.setItem('k', 'v');"
                                   "document.cookie = 'c=1; max-age=3600'; console.error('from the first test');"
                                   "window.open(location.href);"
                                   "return new Promise(r => { indexedDB.open('db').onsuccess = () => r(1); })")
                assert len(drv.window_handles) == 2
                assert drv.execute_script(STATE) == [1, 1, "c=1", 1]
                drv.execute_script("setTimeout(() => alert('left open'), 0)")
            with browser(shared=shared) as drv:
                assert drv.window_handles == [drv.current_window_handle] and drv.current_url == "about:blank"
                assert drv.get_log("browser") == []
                drv.get(site.url)
                assert drv.execute_script(STATE) == [0, 0, "", 0]
            # the studio's setup clears its server's origin too, and its page's log
            with studio_in_chromium(base_run, "--map", "pca", shared=shared) as (s, drv):
                drv.get(s.url)
                drv.execute_script("localStorage.setItem('k', 'v'); console.error('from the studio test')")
            assert shared.started == 1
            assert drv.current_url == "about:blank" and drv.get_log("browser") == []
            # a browser that died is not lent again: the next test gets a new one
            profile = drv.capabilities["chrome"]["userDataDir"]
            assert processes_with(f"--user-data-dir={profile}")
            drv.service.process.kill()
            shared.give_back()
            assert shared.drv is None and not Path(profile).exists()
            assert processes_with(f"--user-data-dir={profile}") == []
            with browser(shared=shared) as drv:
                drv.get(site.url)
                assert drv.execute_script(STATE) == [0, 0, "", 0]
            assert shared.started == 2
    finally:
        shared.close()
    assert shared.drv is None


@pytest.mark.slow
@pytest.mark.browser
def test_a_benchmarks_browser_leaves_no_profile_folder_and_no_process():
    """``benchmarks/_browser.chromium`` (every benchmark that opens a page): its ``quit()`` removes
    the new profile folder it was started with (they piled up in /tmp: 462 of them) and kills the
    browser's processes even when its chromedriver died first."""
    from conftest import _browser

    launcher = _browser()
    if launcher.missing():
        pytest.skip(launcher.missing())
    for driver_dies in (False, True):
        drv = launcher.chromium(400, 300)
        profile = drv.capabilities["chrome"]["userDataDir"]
        drv.get("about:blank")
        assert Path(profile).is_dir() and processes_with(f"--user-data-dir={profile}")
        if driver_dies:
            drv.service.process.kill()
            drv.service.process.wait()
        drv.quit()
        assert not Path(profile).exists(), driver_dies
        assert processes_with(f"--user-data-dir={profile}") == [], driver_dies
