"""Progress bars (rate and ETA) for every long step, quiet when not wanted."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from tqdm.auto import tqdm


def progress_bar(total: int | None = None, desc: str = "", unit: str = "it", disable: bool = False, **kw):
    """A tqdm bar on stderr with rate and ETA; ``disable`` (or a non-TTY under CI) keeps it quiet."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=disable,
        file=sys.stderr,
        dynamic_ncols=True,
        smoothing=0.1,
        mininterval=0.5,
        **kw,
    )


@contextmanager
def logged_step(log, started: str, finished: str):
    """A step without a bar, said on ``log`` (INFO): ``started`` as it begins, then ``finished``
    followed by its seconds (``"... 1.2 s"``) when it ends without an error."""
    log.info("%s", started)
    t = time.perf_counter()
    yield
    log.info("%s %.1f s", finished, time.perf_counter() - t)


def threaded_map(fn: Callable, items: Sequence, workers: int, desc: str, unit: str,
                 progress: bool = True, chunksize: int = 1) -> list:
    """``fn`` of each of ``items`` on ``workers`` threads (at least one), the results in order,
    with a progress bar (:func:`progress_bar`, ``desc`` / ``unit``; ``progress`` False: none): the
    one pool of a per-file step whose work is a function of one item (``fileio.hash_files``, the
    duplicate finder's audio profiles)."""
    out = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, progress_bar(
            total=len(items), desc=desc, unit=unit, disable=not progress) as bar:
        for r in pool.map(fn, items, chunksize=chunksize):
            out.append(r)
            bar.update(1)
    return out
