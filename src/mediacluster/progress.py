"""Progress bars (rate and ETA) for every long step, quiet when not wanted."""

from __future__ import annotations

import sys
import time
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
