"""Offline HTML report of a clustering run (``mediacluster report RUN_DIR``).

``make_report(run)`` names the clusters when the run has no names yet (or when asked), then
writes ``report/index.html`` with its thumbnails (``build.build_report``) and
``report/methods.md``, the methods paragraph of the run (``report.methods``); audio runs get
spectrograms and players (``report.audio``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import OutputError
from ..naming.names import name_run
from ..naming.overrides import save_names_template
from ..naming.zeroshot import load_vocabulary
from ..rundir import RunDir
from .build import build_report, map_2d, missing_thumbnails, read_study
from .methods import write_methods
from .thumbs import make_thumbnails

#: the methods paragraph written beside the report's index.html
METHODS = "methods.md"

__all__ = ["build_report", "make_report", "map_2d", "missing_thumbnails", "read_study", "make_thumbnails"]

log = logging.getLogger(__name__)


def make_report(run_dir, out=None, vocabulary=None, rename=False, names_template=False, thumb_size=96,
                map_method="umap", workers=None, progress=True, collection_root=None) -> Path:
    """What ``mediacluster report`` does, callable from ``cluster --report`` / ``tune --report``.
    ``collection_root``: where the collection's files are now, when they moved since the run
    (``--collection-root``; see ``mediacluster.locations``); ignored for a ``RunDir`` given.

    Holds the run folder's lock while it writes (names, the map, the report)."""
    run = run_dir if isinstance(run_dir, RunDir) else RunDir.open(run_dir, collection_root=collection_root)
    if vocabulary is not None:  # a file that cannot be read is refused, not a naming failure after the work
        load_vocabulary(vocabulary)
    with run.writing("report"):
        if rename or vocabulary is not None or not run.read_automatic_names():
            try:
                named = name_run(run, vocabulary=vocabulary)  # names.json, every level's, clusters.json
                if vocabulary is not None and named and named[0]["method"] != "clip-zeroshot":
                    log.warning("--vocabulary is used with CLIP runs only; this run's encoder has no "
                                "text tower, names come from %s", named[0]["method"])
            except OutputError:  # a full disk is not a naming problem: say it
                raise
            except Exception as e:  # noqa: BLE001 - the report is still useful without names
                log.warning("automatic naming failed: %s", e)
        if names_template:
            save_names_template(run)
        path = build_report(run, out_dir=out, thumb_size=thumb_size, map_method=map_method,
                            workers=workers, progress=progress, name=False)
        try:  # the methods paragraph for a paper, from run.json
            write_methods(run, path.parent / METHODS)
        except OutputError:  # a full disk is said as such
            raise
        except Exception as e:  # noqa: BLE001 - the report is written; the paragraph is an extra
            log.warning("methods.md not written: %s", e)
        return path
