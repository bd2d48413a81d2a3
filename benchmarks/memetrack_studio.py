"""The memetrack walkthrough's studio session (benchmarks/RESULTS.md, "Meme templates through a
scrape"): open a run in the studio in headless Chromium, name some clusters through the page
(the cluster's name box, Enter), export the one-row-per-post table, and time each step.

    python benchmarks/memetrack_studio.py RUN '{"0": "fish trophy", "1": "chainsaw guy"}'
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from _browser import STUDIO_LOADED, chromium


def wait(cond, timeout: float = 60.0, step: float = 0.02) -> None:
    t0 = time.time()
    while not cond():
        if time.time() - t0 > timeout:
            raise TimeoutError("the page did not answer")
        time.sleep(step)


def main() -> None:
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("names", help="JSON: cluster id -> the name to give it")
    ap.add_argument("--port", type=int, default=8793)
    a = ap.parse_args()
    names = json.loads(a.names)
    t0 = time.time()
    server = subprocess.Popen([sys.executable, "-m", "mediacluster", "studio", a.run, "--no-browser", "--port",
                               str(a.port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = next(line[line.index("http://"):].split()[0] for line in server.stdout if "http://" in line)
    out = {"studio_up_s": round(time.time() - t0, 2)}
    drv = chromium()
    try:
        t = time.time()
        drv.get(url)
        wait(lambda: drv.execute_script(STUDIO_LOADED))
        out["first_paint_s"] = round(time.time() - t, 2)
        acks = []
        for cid, name in names.items():
            drv.execute_script("return window.mcStudio.showCluster(arguments[0])", int(cid))
            wait(lambda cid=cid: drv.find_elements("id", "cluster-name") and
                 drv.find_element("id", "view-head").get_attribute("data-cluster") == str(cid))
            box = drv.find_element("id", "cluster-name")
            box.clear()
            box.send_keys(name)
            t = time.time()
            box.send_keys(Keys.ENTER)
            wait(lambda cid=cid: f"renamed #{cid}" in drv.find_element("id", "toast").text)
            acks.append(round(time.time() - t, 3))
        out["rename_ack_s"] = acks
        Select(drv.find_element("id", "export-kind")).select_by_value("csv")
        t = time.time()
        drv.find_element("id", "export").click()
        wait(lambda: "exported" in drv.find_element("id", "toast").text)
        out["export_s"] = round(time.time() - t, 2)
        out["errors"] = drv.execute_script("return window.mcStudio.errors")
    finally:
        drv.quit()
        server.terminate()
        server.wait(10)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
