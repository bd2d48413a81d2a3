"""Progress bars (rate and ETA) for every long step, quiet when not wanted."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager

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


def threaded_imap(fn: Callable, items: Sequence, workers: int, desc: str, unit: str,
                  progress: bool = True, chunksize: int = 1, done: int = 0,
                  name: str = "") -> Iterator:
    """``fn`` of each of ``items`` on ``workers`` threads (at least one, named ``name``-N), each
    result yielded in order as it comes, with a progress bar (:func:`progress_bar`, ``desc`` /
    ``unit``; ``progress`` False: none) over ``done`` items finished before plus ``items``: the
    one pool of a per-item step whose work is a function of one item. A caller that keeps
    results as they come (the image signatures' store every ``SAVE_EVERY``) iterates it; closing
    it (an exception in the caller's loop, within ``contextlib.closing``) cancels the items not
    started, so an interrupted step does not first finish the rest."""
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix=name) as pool, progress_bar(
            total=len(items) + done, desc=desc, unit=unit, disable=not progress) as bar:
        bar.update(done)
        results = pool.map(fn, items, chunksize=chunksize)
        try:
            for r in results:
                bar.update(1)
                yield r
        finally:
            results.close()  # Executor.map's generator cancels its futures not yet running


def threaded_map(fn: Callable, items: Sequence, workers: int, desc: str, unit: str,
                 progress: bool = True, chunksize: int = 1, done: int = 0) -> list:
    """:func:`threaded_imap`'s results as a list, in order (``fileio.hash_files``, the duplicate
    finder's audio profiles, the report's thumbnails)."""
    with closing(threaded_imap(fn, items, workers, desc, unit, progress, chunksize, done)) as results:
        return list(results)
