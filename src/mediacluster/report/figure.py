"""A static figure of a run's 2-D map with its clusters named, for a paper (PNG, PDF, SVG).

The report's map is an interactive canvas; a publication needs a file. :func:`map_figure`
draws the same map (``map2d.npy``, the report's, laid out and cached once: ``build.map_2d``)
with matplotlib, coloured by the clusters of one level and each of the largest clusters
labelled at its median with the name :func:`naming.tables.cluster_table` gives it (an unsure
automatic name with a "?", as the report shows it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ParameterError
from ..fileio import atomic_path
from ..naming.tables import cluster_table
from ..rundir import RunDir
from .build import cluster_colors, map_2d

FORMATS = ("png", "pdf", "svg")


def map_figure(run, out, level: int | None = None, labels: int = 20, size: float = 8.0, dpi: int = 200,
               map_method: str = "umap") -> Path:
    """Write the map of ``run`` (a run folder or ``RunDir``) to ``out`` (``.png``, ``.pdf`` or
    ``.svg``; written atomically) coloured by the clusters of ``level`` (None: the level in
    use, the ``cluster`` column; a flat run has level 0 only), the ``labels`` largest named
    at their median point. Returns ``out``. The map is the report's (computed and cached in the
    run folder when it has none yet, ``map_method``)."""
    run = run if isinstance(run, RunDir) else RunDir.open(run)
    out = Path(out)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ParameterError(f"figure {out}: the name must end in " + ", ".join("." + f for f in FORMATS),
                             "figure")
    table = cluster_table(run)
    levels = sorted(table["level"].unique().tolist())
    k = int(table.loc[table["in_use"], "level"].iloc[0]) if level is None and table["in_use"].any() else level
    k = levels[-1] if k is None else k
    if k not in levels:
        raise ParameterError(f"level {level} is not a level of {run.path}: it has levels "
                             f"{levels[0]}..{levels[-1]}", "level")
    a = run.read_assignments()
    lv = run.read_levels(a)
    lab = (dict(zip(lv.index, lv.labels))[k] if len(lv) else a["cluster"].to_numpy(np.int64))
    xy = run.read_map(len(a))
    if xy is None or (xy[1].get("method") != map_method and not xy[1].get("fit_sample")):
        with run.writing("map"):
            xy = map_2d(run, run.read_vectors(), method=map_method)
    else:
        xy = xy[0]
    rows = table[table["level"] == k].set_index("cluster")
    ids = [c for c in rows.index.tolist() if c >= 0]
    colors = cluster_colors(ids)

    from matplotlib import rc_context  # plotting only here: not imported with the package
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size, size), dpi=dpi)
    ax = fig.add_axes((0.01, 0.01, 0.98, 0.94))
    dot = float(np.clip(30000 / max(len(a), 1), 0.3, 12))
    un = lab < 0
    if un.any():
        ax.scatter(xy[un, 0], xy[un, 1], s=dot, c="#c8c8c8", linewidths=0, rasterized=True)
    ax.scatter(xy[~un, 0], xy[~un, 1], s=dot, c=[colors[c] for c in lab[~un].tolist()], linewidths=0,
               alpha=0.85, rasterized=True)
    box = {"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.75}
    for c in rows.loc[ids].sort_values("size", ascending=False, kind="stable").index[:max(labels, 0)]:
        r = rows.loc[c]
        person = r.get("curated_name")  # the studio's name, at the level in use
        if isinstance(person, str) and person and person != r["name"]:
            text = person
        else:
            text = r["name"] if isinstance(r["name"], str) and r["name"] else f"cluster {c}"
            if isinstance(r["name_sure"], bool | np.bool_) and not r["name_sure"]:
                text += " ?"
        x, y = np.median(xy[lab == c], axis=0)
        ax.text(x, y, text, fontsize=7, ha="center", va="center", bbox=box)
    ax.set_axis_off()
    n_k = int(rows["n_clusters"].iloc[0]) if len(rows) else 0
    ax.set_title(f"{len(a):,} items, level {k}: {n_k} clusters",
                 fontsize=9)
    # text kept as text (an SVG's or PDF's labels stay editable and searchable, as journals ask)
    with atomic_path(out) as tmp, rc_context({"svg.fonttype": "none", "pdf.fonttype": 42}):
        fig.savefig(tmp, format=fmt)
    return out


__all__ = ["FORMATS", "map_figure"]
