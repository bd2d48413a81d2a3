"""The report's "Most reposted" gallery: the largest duplicate groups of a ``--dedup`` run.

Read from the run's duplicate table (``RunDir.read_duplicates``); a run made without
``--dedup`` has none and the report shows no such section.
"""

from __future__ import annotations

import html
from collections.abc import Callable

import numpy as np


def most_reposted(run, n_groups: int = 12, per_group: int = 8) -> list[dict] | None:
    """The ``n_groups`` largest duplicate groups (largest first): ``group``, ``size``,
    ``diameter``, ``representative`` (row) and up to ``per_group`` - 1 other ``members`` (rows).
    None when the run has no duplicate table."""
    df = run.read_duplicates(columns=["duplicate_group", "is_representative", "group_diameter"])
    if df is None:
        return None
    g = df["duplicate_group"].to_numpy().astype(np.int64)
    if not (g >= 0).any():
        return []
    rep = df["is_representative"].to_numpy().astype(bool)
    diam = df["group_diameter"].to_numpy().astype(np.float64)
    sizes = np.bincount(g[g >= 0])
    top = [int(x) for x in np.argsort(-sizes, kind="stable")[:n_groups] if sizes[x] > 1]
    out = []
    for k in top:
        rows = np.flatnonzero(g == k)
        r = rows[rep[rows]]
        r = int(r[0]) if len(r) else int(rows[0])
        out.append({"group": k, "size": int(sizes[k]), "diameter": float(diam[r]), "representative": r,
                    "members": [int(m) for m in rows if m != r][: per_group - 1]})
    return out


def gallery_rows(groups: list[dict] | None) -> list[int]:
    """Every row the gallery shows (for the thumbnails to make)."""
    return sorted({i for e in groups or [] for i in [e["representative"], *e["members"]]})


def reposts_section(groups: list[dict] | None, img: Callable[[int], str], labels: np.ndarray,
                    names: dict[int, str]) -> str:
    """The HTML section (empty string without a duplicate table). ``img(row)`` renders a
    thumbnail; ``labels`` and ``names`` give each group's cluster."""
    if groups is None:
        return ""
    rows = []
    for e in groups:
        c = int(labels[e["representative"]])
        where = html.escape(names.get(c, f"cluster {c}") if c >= 0 else "noise")
        more = e["size"] - 1 - len(e["members"])
        rows.append(
            f'<div class="repost"><h3>{e["size"]:,} copies <span class="muted">in {where} '
            f'(group {e["group"]}, diameter {e["diameter"]:.2f}{f", {more:,} more" if more > 0 else ""})'
            f'</span></h3><div class="grid gallery">{img(e["representative"])}'
            f'{"".join(img(i) for i in e["members"])}</div></div>')
    body = "".join(rows) or '<span class="muted">no duplicates found</span>'
    return (f'<section id="reposts"><h2>Most reposted <span class="muted">(duplicate groups of '
            f'--dedup, largest first; the first image is the group\'s representative, whose cluster '
            f'every copy takes)</span></h2>{body}</section>\n')


__all__ = ["most_reposted", "gallery_rows", "reposts_section"]
