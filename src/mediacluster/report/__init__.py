"""Offline HTML report of a clustering run (``mediacluster report RUN_DIR``)."""

from __future__ import annotations

from .build import build_report, map_2d, read_study
from .thumbs import make_thumbnails

__all__ = ["build_report", "map_2d", "read_study", "make_thumbnails"]
