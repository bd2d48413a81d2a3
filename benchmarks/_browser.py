"""Headless Chromium (selenium) for every benchmark that opens a page, and for the browser tests
(``tests/conftest.chromium`` skips where there is none, else calls :func:`chromium`): the one
set of flags this machine needs, and a new empty profile for every browser.

Chromium runs headless, without its sandbox (containers, CI) or the GPU, and reaches the network
on nothing of its own (QUIC, background requests, component updates, sync, the first-run page):
a page is timed, not Chromium's housekeeping.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

#: flags every browser gets (the window size and a new ``--user-data-dir`` are added per browser)
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


def binaries() -> tuple[str | None, str | None]:
    """(the Chromium executable, chromedriver), None where not installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")


def missing() -> str | None:
    """Why no browser can be started here, or None when one can."""
    browser, driver = binaries()
    if not browser or not driver:
        return "headless Chromium not installed (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401 - only whether it is there
    except ImportError:
        return "selenium not installed (pip install -e '.[dev]')"
    return None


def chromium(width: int = 1400, height: int = 1000, extra: tuple[str, ...] = ()):
    """A headless Chromium (``selenium.webdriver.Chrome``) of ``width`` x ``height`` with
    :data:`FLAGS`, ``extra`` flags and a new empty profile; it keeps the page's console log
    (``driver.get_log("browser")``). Its ``quit()`` also removes the profile folder (``/tmp/
    mc-chrome-*``, ~2.5 MB each: 462 of them had piled up) and kills what is left of the browser's
    processes (:func:`remove_profile`); a browser never quit has its profile removed at exit."""
    why = missing()
    if why:
        raise RuntimeError(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    class Chrome(webdriver.Chrome):
        def quit(self) -> None:
            try:
                super().quit()  # selenium stops chromedriver even when the browser no longer answers
            finally:
                remove_profile(profile)

    browser, driver = binaries()
    profile = tempfile.mkdtemp(prefix="mc-chrome-")
    atexit.register(remove_profile, profile)  # a script that never quits its browser
    opts = Options()
    opts.binary_location = browser
    for a in (*FLAGS, f"--window-size={width},{height}", *extra, f"--user-data-dir={profile}"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        return Chrome(options=opts, service=Service(driver))
    except BaseException:  # the browser did not start: nothing will quit it
        remove_profile(profile)
        raise


def remove_profile(profile: str) -> None:
    """Kill what is left of the browser started on ``profile`` (a browser whose chromedriver died
    outlives it) and remove the folder. Idempotent. Until none is left (up to 10 s): a killed
    process takes a moment to go, and a browser can start another while it is being killed."""
    deadline = time.monotonic() + 10.0
    while (pids := processes_with(f"--user-data-dir={profile}")) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    shutil.rmtree(profile, ignore_errors=True)


def processes_with(text: str) -> list[int]:
    """The processes whose command line holds ``text`` (a browser's own ``--user-data-dir``: its
    processes, not other browsers')."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            with contextlib.suppress(OSError):
                if text.encode() in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
    return pids


#: true in the studio's page once it has drawn and has no request in flight
STUDIO_LOADED = "const s = window.mcStudio; return s && s.firstPaint !== null && s.busy === 0"


def wait_studio_loaded(drv, timeout: float = 60.0) -> None:
    """Wait until the studio's page ``drv`` shows has loaded (:data:`STUDIO_LOADED`); a
    RuntimeError after ``timeout`` seconds."""
    t0 = time.time()
    while not drv.execute_script(STUDIO_LOADED):
        if time.time() - t0 > timeout:
            raise RuntimeError("the page did not load")
        time.sleep(0.05)
