"""Names a person gives clusters by hand: ``names.yaml`` in the run folder.

Format (plain YAML mapping, cluster id -> name)::

    0: cats
    3: "memes"
    7: screenshots

**One rule for names**, applied by :func:`load_names` wherever a name is shown or used (report,
assignments, tags, models): automatic names (``names.json``, else the ``name`` keys of
``clusters.json``; for a model, then the names it was published with), overridden by
``names.yaml``, overridden by the studio's curated names
(``curated.json``, derived from the studio's edit log: every cluster of the curated state, with
the name a person gave it there or the one it started with). An id in ``names.yaml`` that is not
a cluster of the run (fitted or curated), or a value that is not a plain name, is refused with
a message naming the file and the entry.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, yaml_problem
from ..fileio import atomic_path
from ..rundir import NAMES_YAML, RunDir, find_run


def _as_run(run) -> RunDir:
    return run if isinstance(run, RunDir) else RunDir.open(run)


def _read_overrides(run: RunDir, valid_ids: set[int] | None = None) -> dict[int, str]:
    p = run.file(NAMES_YAML)
    if not p.exists():
        p = run.file("names.yml")
        if not p.exists():
            return {}
    import yaml

    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p} is not valid YAML: {yaml_problem(e)}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping 'cluster id: name', got {type(data).__name__}")
    out: dict[int, str] = {}
    given: dict[int, object] = {}
    for k, v in data.items():
        try:
            if isinstance(k, bool) or not isinstance(k, int | str):  # 1.7, true: a typo, not int(k)
                raise TypeError(k)
            cid = int(k)
        except (TypeError, ValueError):
            raise ConfigError(f"{p}: cluster id {k!r} is not an integer") from None
        if cid in given:
            raise ConfigError(f"{p}: cluster {cid} is named twice ({given[cid]!r} and {k!r})")
        given[cid] = k
        if v is None or (isinstance(v, str) and v.strip() == ""):
            continue  # an empty entry means "keep the automatic name"
        if not isinstance(v, str | int | float) or isinstance(v, bool):
            raise ConfigError(f"{p}: the name of cluster {cid} must be plain text, got {v!r}")
        if valid_ids is not None and cid not in valid_ids:
            raise ConfigError(f"{p}: {cid} is not a cluster of this run (clusters: "
                              f"{', '.join(map(str, sorted(valid_ids)))})")
        out[cid] = str(v).strip()
    return out


def automatic_names(run) -> dict[int, str]:
    """Automatic names of a run (``names.json``, else ``clusters.json`` name keys)."""
    run = _as_run(run)
    out = {int(e["cluster"]): str(e["name"]) for e in run.read_automatic_names() if e.get("name")}
    if not out:
        out = {int(e["cluster"]): str(e["name"]) for e in run.read_clusters() if e.get("name")}
    return out


def curated_names(run, person_only: bool = False) -> dict[int, str]:
    """Names of the studio's curated clusters (``curated.json``); ``person_only``: only those a
    person gave (in the studio or, before that, in ``names.yaml``). ``{}`` without a studio."""
    doc = _as_run(run).read_curated()
    if not doc:
        return {}
    return {int(e["id"]): str(e["name"]) for e in doc.get("clusters", [])
            if e.get("name") and (not person_only or e.get("named_by") == "person")}


def _cluster_ids(run: RunDir) -> set[int] | None:
    ids = {int(e["cluster"]) for e in run.read_clusters()}
    doc = run.read_curated()
    if doc:
        ids |= {int(e["id"]) for e in doc.get("clusters", [])}
    return ids or None


def load_names(run, automatic: bool = True, curated: bool = True,
               published: dict | None = None) -> dict[int, str]:
    """Cluster id -> name for a run: automatic names, overridden by the hand-edited
    ``names.yaml``, overridden by the studio's curated names (see the module docstring).

    ``automatic=False``: only names a person gave; ``curated=False``: as before the studio (what
    the studio itself starts from); ``published``: the names a model was published with, a
    layer just above the automatic names (:func:`model_names`). Clusters without any name are
    absent; callers fall back to e.g. ``f"cluster {id}"``.
    """
    run = _as_run(run)
    names = automatic_names(run) if automatic else {}
    if automatic and published:
        names.update({int(k): str(v) for k, v in published.items() if v})
    names.update(_read_overrides(run, _cluster_ids(run)))
    if curated:
        names.update(curated_names(run, person_only=not automatic))
    return names


def hand_names(run) -> dict[int, str]:
    """The names a person gave (``names.yaml``, then the studio's)."""
    return load_names(run, automatic=False)


def save_names_template(run, overwrite: bool = False) -> Path:
    """Write a ``names.yaml`` listing every cluster with its automatic name commented, for editing."""
    run = _as_run(run)
    p = run.file(NAMES_YAML)
    if p.exists() and not overwrite:
        return p
    auto = automatic_names(run)
    ids = sorted({int(e["cluster"]) for e in run.read_clusters()} | set(auto))
    lines = ["# Hand-given cluster names: 'cluster id: name'. They override automatic names in",
             "# the report and in later assignments. Leave a value empty to keep the automatic one.", ""]
    for c in ids:
        a = auto.get(c, "")
        lines.append(f"{c}:   # automatic: {a}" if a else f"{c}:")
    with atomic_path(p) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def model_names(path: str | Path, published: dict | None = None) -> dict[int, str]:
    """Cluster names for a saved model at ``path``: :func:`load_names` of the run that holds it,
    with the names the model was published with (``model_info_["metadata"]["names"]``) as the
    layer just above the automatic ones. ``assign`` and the service use this."""
    run = find_run(path)
    if run is None:
        return {int(k): str(v) for k, v in (published or {}).items() if v}
    return load_names(run, published=published)


def pipeline_names(pipe) -> dict[int, str]:
    """Cluster names of a loaded model (``Pipeline.load``) at the level it answers with:
    :func:`model_names` while that is the level it was saved with; after ``set_level`` the
    automatic names of the new level it was saved with (``metadata.names``, switched by
    ``set_level``; names given by hand belong to the saved level's clusters)."""
    info = getattr(pipe, "model_info_", None) or {}
    meta = info.get("metadata") or {}
    saved = (info.get("levels") or {}).get("level")
    own = getattr(pipe, "levels_", None) is not None and saved is not None and int(saved) != int(pipe.level_)
    if own or getattr(pipe, "model_path_", None) is None:
        return {int(k): str(v) for k, v in (meta.get("names") or {}).items() if v}
    return model_names(pipe.model_path_, meta.get("names"))


def level_names(pipe, names: dict[int, str] | None = None) -> dict[int, dict[int, str]]:
    """Level -> cluster id -> name for a loaded model with levels ({} without): the level in
    use gets ``names`` (default :func:`pipeline_names`), the level it was saved with
    :func:`model_names` of its saved names (hand-given names belong to its clusters), every
    other level the automatic names it was saved with (``metadata.names_by_level``; none for a
    model saved before every level was named)."""
    if getattr(pipe, "levels_", None) is None:
        return {}
    info = getattr(pipe, "model_info_", None) or {}
    meta = info.get("metadata") or {}
    by = meta.get("names_by_level") or {}
    out = {lv: {int(k): str(v) for k, v in (by.get(str(lv)) or {}).items() if v}
           for lv in range(len(pipe.levels_))}
    saved = (info.get("levels") or {}).get("level")
    if saved is not None and int(saved) in out and int(saved) != int(pipe.level_) and str(int(saved)) in by \
            and getattr(pipe, "model_path_", None) is not None:
        out[int(saved)] = model_names(pipe.model_path_, by[str(int(saved))])
    out[int(pipe.level_)] = dict(pipeline_names(pipe) if names is None else names)
    return out


def _model_hand_names(pipe) -> dict[int, str]:
    """The names a person gave the clusters of the run a saved model belongs to ({} for a
    model not in a run folder)."""
    path = getattr(pipe, "model_path_", None)
    run = find_run(path) if path is not None else None
    return hand_names(run) if run is not None else {}


def pipeline_names_sure(pipe, names: dict[int, str] | None = None) -> dict[int, dict]:
    """Cluster id -> ``name_sure`` / ``name_support`` / ``name_why`` of a loaded model's names
    at the level it answers with (``names``: default :func:`pipeline_names`): a person's name
    is sure, an automatic one as measured when the model was saved (``metadata.names_support``),
    any other name, or any name of a model saved before this was kept, null
    (``support.of_names``)."""
    from .support import of_names

    info = getattr(pipe, "model_info_", None) or {}
    meta = info.get("metadata") or {}
    names = pipeline_names(pipe) if names is None else names
    saved = (info.get("levels") or {}).get("level")
    own = getattr(pipe, "levels_", None) is not None and saved is not None and int(saved) != int(pipe.level_)
    return of_names(names, meta.get("names_support"), {} if own else _model_hand_names(pipe))


def level_names_sure(pipe, by_level: dict[int, dict[int, str]]) -> dict[int, dict[int, dict]]:
    """:func:`pipeline_names_sure` for every level of :func:`level_names` (``by_level``): the
    level in use as there, the others from ``metadata.names_support_by_level`` (the level the
    model was saved with also knows a person's names)."""
    from .support import of_names

    if getattr(pipe, "levels_", None) is None:
        return {}
    info = getattr(pipe, "model_info_", None) or {}
    meta = info.get("metadata") or {}
    sup_by = meta.get("names_support_by_level") or {}
    saved = (info.get("levels") or {}).get("level")
    out = {}
    for lv, names in by_level.items():
        if int(lv) == int(pipe.level_):
            out[lv] = pipeline_names_sure(pipe, names)
        else:
            hand = _model_hand_names(pipe) if saved is not None and int(saved) == int(lv) else {}
            out[lv] = of_names(names, sup_by.get(str(int(lv))), hand)
    return out


def names_near(path: str | Path) -> dict[int, str]:
    """Cluster names for a saved model or run folder: :func:`load_names` of the run that holds
    ``path`` (a model saved in ``RUN/models/v0001``); ``{}`` if none."""
    run = find_run(path)
    return load_names(run) if run is not None else {}
