"""Names a person gives clusters by hand: ``names.yaml`` in the run folder.

Format (plain YAML mapping, cluster id -> name)::

    0: cats
    3: "memes"
    7: screenshots

Hand names override automatic ones everywhere (report, assignments, tags). ``load_names`` merges
automatic names (``names.json`` or the ``name`` keys of ``clusters.json``) with the overrides.
"""

from __future__ import annotations

from pathlib import Path

NAMES_YAML = "names.yaml"
NAMES_JSON = "names.json"


def _read_overrides(run_dir: Path) -> dict[int, str]:
    p = run_dir / NAMES_YAML
    if not p.exists():
        p = run_dir / "names.yml"
        if not p.exists():
            return {}
    import yaml

    data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected a mapping 'cluster id: name', got {type(data).__name__}")
    out: dict[int, str] = {}
    for k, v in data.items():
        try:
            cid = int(k)
        except (TypeError, ValueError):
            raise ValueError(f"{p}: cluster id {k!r} is not an integer") from None
        if v is None or str(v).strip() == "":
            continue  # an empty entry means "keep the automatic name"
        out[cid] = str(v).strip()
    return out


def automatic_names(run_dir: str | Path) -> dict[int, str]:
    """Automatic names of a run (``names.json``, else ``clusters.json`` name keys)."""
    from ..io import read_json

    run_dir = Path(run_dir)
    out: dict[int, str] = {}
    if (run_dir / NAMES_JSON).exists():
        d = read_json(run_dir / NAMES_JSON)
        for e in d.get("clusters", []):
            if e.get("name"):
                out[int(e["cluster"])] = str(e["name"])
    if not out and (run_dir / "clusters.json").exists():
        for e in read_json(run_dir / "clusters.json").get("clusters", []):
            if e.get("name"):
                out[int(e["cluster"])] = str(e["name"])
    return out


def load_names(run_dir: str | Path, automatic: bool = True) -> dict[int, str]:
    """Cluster id -> name for a run: automatic names, overridden by the hand-edited ``names.yaml``.

    Clusters without any name are absent; callers fall back to e.g. ``f"cluster {id}"``.
    """
    run_dir = Path(run_dir)
    names = automatic_names(run_dir) if automatic else {}
    names.update(_read_overrides(run_dir))
    return names


def save_names_template(run_dir: str | Path, overwrite: bool = False) -> Path:
    """Write a ``names.yaml`` listing every cluster with its automatic name commented, for editing."""
    from ..io import atomic_path, read_json

    run_dir = Path(run_dir)
    p = run_dir / NAMES_YAML
    if p.exists() and not overwrite:
        return p
    auto = automatic_names(run_dir)
    ids = sorted(auto)
    if (run_dir / "clusters.json").exists():
        ids = sorted({int(e["cluster"]) for e in read_json(run_dir / "clusters.json").get("clusters", [])} | set(ids))
    lines = ["# Hand-given cluster names: 'cluster id: name'. They override automatic names in",
             "# the report and in later assignments. Leave a value empty to keep the automatic one.", ""]
    for c in ids:
        a = auto.get(c, "")
        lines.append(f"{c}:   # automatic: {a}" if a else f"{c}:")
    with atomic_path(p) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def names_near(path: str | Path) -> dict[int, str]:
    """Cluster names for a saved model or run folder: looks in ``path`` and its parent (a model
    saved as ``RUN/model``) for the run's names (automatic + ``names.yaml``); ``{}`` if none."""
    path = Path(path)
    for d in (path, path.parent):
        if d.is_dir() and any((d / f).exists() for f in (NAMES_YAML, "names.yml", NAMES_JSON, "clusters.json")):
            names = load_names(d)
            if names:
                return names
    return {}
