"""Names a person gives clusters by hand: ``names.yaml`` in the run folder.

Format (plain YAML mapping, cluster id -> name; a run with levels may add a ``levels:``
section, level key as in ``level_names.json`` / the ``level_<k>`` columns (``0`` or ``level_0``)
-> cluster id of that level -> name)::

    0: cats
    3: "memes"
    7: screenshots
    levels:
      0:
        2: memes
        5: food

**One rule for names**, applied by :func:`load_names` wherever a name is shown or used (report,
assignments, tags, models): automatic names (``names.json``, else the ``name`` keys of
``clusters.json``; for a model, then the names it was published with), overridden by
``names.yaml``, overridden by the studio's curated names
(``curated.json``, derived from the studio's edit log: every cluster of the curated state, with
the name a person gave it there or the one it started with). An id in ``names.yaml`` that is not
a cluster of the run (fitted or curated), or a value that is not a plain name, is refused with
a message naming the file and the entry.

**The names of level L** of a run with levels: :func:`run_level_names`, the same rule per level
(automatic names of ``level_names.json`` < ``names.yaml``'s ``levels:`` section < the studio's
level renames, ``curated.json`` ``level_names``); the level in use also takes the flat mapping
(its clusters are the run's ``cluster`` column's). Every consumer of a level's names (the
report's level switch, :func:`~mediacluster.naming.tables.named_assignments`, the studio's
groups and exports, the published model's ``names_by_level``, ``assign`` / the service's path
names through :func:`level_names`) reads them there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError, yaml_problem
from ..fileio import atomic_path, read_yaml
from ..rundir import HIERARCHY, LEVEL_COLUMN, NAMES_YAML, NPY_ERRORS, RunDir, find_run


def _as_run(run) -> RunDir:
    return run if isinstance(run, RunDir) else RunDir.open(run)


def _names_file(run: RunDir) -> Path | None:
    for name in (NAMES_YAML, "names.yml"):
        if run.file(name).exists():
            return run.file(name)
    return None


def _parse_overrides(run: RunDir) -> tuple[Path | None, dict, dict]:
    """``(file, flat, levels)``: ``names.yaml``'s flat entries ``{cluster id: name}`` and its
    ``levels:`` section ``{level key: {cluster id: name}}``, checked for form (not yet against the
    run's clusters: :func:`_check_ids`)."""
    p = _names_file(run)
    if p is None:
        return None, {}, {}
    import yaml

    try:
        data = read_yaml(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p} is not valid YAML: {yaml_problem(e)}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping 'cluster id: name', got {type(data).__name__}")
    levels: dict[int, dict[int, str]] = {}
    if "levels" in data:
        section = data.pop("levels")
        if section is None:
            section = {}
        if not isinstance(section, dict):
            raise ConfigError(f"{p}: 'levels' must be a mapping 'level key: {{cluster id: name}}' (e.g. "
                              f"'levels: {{0: {{2: memes}}}}'), got {type(section).__name__}")
        seen: dict[int, object] = {}
        for lk, entries in section.items():
            key = _level_key(p, lk)
            if key in seen:
                raise ConfigError(f"{p}: levels: level {key} is given twice ({seen[key]!r} and {lk!r})")
            seen[key] = lk
            if entries is None:
                continue
            if not isinstance(entries, dict):
                raise ConfigError(f"{p}: levels: {lk}: expected a mapping 'cluster id: name', got "
                                  f"{type(entries).__name__}")
            levels[key] = _entries(p, entries, f"levels: {lk}: ")
    # a level whose entries are all empty (the template's) names nothing: not checked against the run
    return p, _entries(p, data, ""), {k: v for k, v in levels.items() if v}


def _level_key(p: Path, k) -> int:
    """A ``levels:`` key: ``0`` or ``level_0`` (as ``level_names.json`` / the assignment columns)."""
    if isinstance(k, int) and not isinstance(k, bool) and k >= 0:
        return int(k)
    if isinstance(k, str):
        m = LEVEL_COLUMN.fullmatch(k.strip())
        if m or k.strip().isdigit():
            return int(m.group(1) if m else k.strip())
    raise ConfigError(f"{p}: levels: {k!r} is not a level key (0, 1, ... or level_0, level_1, ... as in "
                      "level_names.json and the assignments' level_<k> columns)")


def _entries(p: Path, data: dict, where: str) -> dict[int, str]:
    """``{cluster id: name}`` of one mapping of ``names.yaml`` (``where``: the section, for the
    messages); empty values are left out (keep the automatic name)."""
    out: dict[int, str] = {}
    given: dict[int, object] = {}
    for k, v in data.items():
        try:
            if isinstance(k, bool) or not isinstance(k, int | str):  # 1.7, true: a typo, not int(k)
                raise TypeError(k)
            cid = int(k)
        except (TypeError, ValueError):
            raise ConfigError(f"{p}: {where}cluster id {k!r} is not an integer") from None
        if cid in given:
            raise ConfigError(f"{p}: {where}cluster {cid} is named twice ({given[cid]!r} and {k!r})")
        given[cid] = k
        if v is None or (isinstance(v, str) and v.strip() == ""):
            continue  # an empty entry means "keep the automatic name"
        if not isinstance(v, str | int | float) or isinstance(v, bool):
            raise ConfigError(f"{p}: {where}the name of cluster {cid} must be plain text, got {v!r}")
        out[cid] = str(v).strip()
    return out


def _check_ids(p: Path, named: dict[int, str], valid: set[int] | None, where: str, what: str) -> None:
    if valid is None:
        return
    for cid in named:
        if cid not in valid:
            raise ConfigError(f"{p}: {where}{cid} is not a cluster of {what} (clusters: "
                              f"{', '.join(map(str, sorted(valid)))})")


def level_in_use(run: RunDir) -> int | None:
    """The key of the level the run's ``cluster`` column holds (``hierarchy.npz`` ``level``;
    only that entry is read), None for a flat run or one that did not record it."""
    p = run.file(HIERARCHY)
    if not p.exists():
        return None
    try:
        with np.load(p, allow_pickle=False) as z:
            return int(z["level"]) if "level" in z.files and np.ndim(z["level"]) == 0 else None
    except NPY_ERRORS:  # cut short (EOFError, BadZipFile were internal errors of report)
        return None


def _level_ids(run: RunDir) -> dict[int, set[int]]:
    """Level key -> its cluster ids (``RunDir.read_levels``: the ``level_<k>`` columns, else
    ``hierarchy.npz``), for checking ``names.yaml``'s ``levels:`` section."""
    lv = run.read_levels()
    return {int(k): {int(c) for c in np.unique(lab[lab >= 0]).tolist()} for k, lab in zip(lv.index, lv.labels)}


def _checked_levels(run: RunDir, p: Path | None, levels: dict) -> dict[int, dict[int, str]]:
    """``names.yaml``'s ``levels:`` section (``p``, ``levels``: :func:`_parse_overrides`'),
    checked against the run's levels (a level key the run has not, a cluster id its level has
    not: refused naming the file and the entry)."""
    if not levels:
        return {}
    ids = _level_ids(run)
    for key, named in levels.items():
        if key not in ids:
            have = ", ".join(map(str, sorted(ids))) or "none: the run has no levels"
            raise ConfigError(f"{p}: levels: {key} is not a level of this run (levels: {have})")
        _check_ids(p, named, ids[key], f"levels: {key}: ", f"level {key}")
    return levels


def _read_overrides(run: RunDir, valid_ids: set[int] | None = None) -> dict[int, str]:
    """``names.yaml``'s names of the run's clusters: its flat mapping, with its ``levels:`` entries
    of the level in use (the same clusters; a cluster named differently in both is refused)."""
    p, flat, levels = _parse_overrides(run)
    if p is None:
        return {}
    _check_ids(p, flat, valid_ids, "", "this run")
    if not levels:
        return flat
    at = level_in_use(run)
    return _with_level_in_use(p, flat, _checked_levels(run, p, levels), at)


def _with_level_in_use(p: Path, flat: dict[int, str], hand: dict[int, dict[int, str]], at: int | None) -> dict[int, str]:
    own = hand.get(at, {}) if at is not None else {}
    for cid, nm in own.items():
        if cid in flat and flat[cid] != nm:
            raise ConfigError(f"{p}: cluster {cid} is named {flat[cid]!r} and, under levels: {at} (the level "
                              f"in use), {nm!r}: give it one name")
    return {**own, **flat}


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


def run_level_names(run, automatic: bool = True, curated: bool = True,
                    edited: dict | None = None) -> dict[int, dict[int, str]]:
    """The names of every level of a run with levels: level key (as ``level_names.json``, the
    ``level_<k>`` columns) -> the run's cluster id at that level -> name; {} for a flat run.

    The one rule per level: the automatic names (``level_names.json``; ``automatic=False``: none),
    overridden by ``names.yaml``'s ``levels:`` section (the level in use also by its flat
    mapping), overridden by the studio's level renames (``curated.json`` ``level_names``;
    ``curated=False``: none; ``edited``: the studio's live ones instead, ``{key: {cluster:
    name}}``). The level in use names the run's fitted clusters (the studio's renames of the
    curated clusters are :func:`load_names`'). Clusters without any name are absent."""
    run = _as_run(run)
    out: dict[int, dict[int, str]] = {}
    if automatic:
        for k, named in run.read_level_names().items():
            out[int(k)] = {int(e["cluster"]): str(e["name"]) for e in named if e.get("name")}
    p, flat, levels = _parse_overrides(run)
    hand = _checked_levels(run, p, levels)
    at = level_in_use(run)
    if p is not None and at is not None:  # the level in use: the flat mapping names its clusters too
        _check_ids(p, flat, _cluster_ids(run), "", "this run")
        hand = {**hand, at: _with_level_in_use(p, flat, hand, at)}
    for k, named in hand.items():
        if named:
            out.setdefault(k, {}).update(named)
    studio = edited if edited is not None else (_curated_level_names(run) if curated else {})
    return merge_level_names(out, studio)


def merge_level_names(base: dict[int, dict[int, str]], over: dict) -> dict[int, dict[int, str]]:
    """``base``'s level names with ``over``'s on top (level key -> cluster id -> name; new dicts):
    :func:`run_level_names`' last layer, and the studio's live one over its start."""
    out = {int(k): dict(v) for k, v in base.items()}
    for k, named in (over or {}).items():
        out.setdefault(int(k), {}).update({int(c): str(v) for c, v in named.items() if v})
    return out


def _curated_level_names(run: RunDir) -> dict[int, dict[int, str]]:
    """The studio's level renames as written to ``curated.json`` (``level_names``)."""
    doc = run.read_curated() or {}
    by = doc.get("level_names") or {}
    out: dict[int, dict[int, str]] = {}
    if not isinstance(by, dict):
        return out
    for k, named in by.items():
        try:
            out[int(k)] = {int(c): str(v) for c, v in (named or {}).items() if isinstance(v, str) and v}
        except (TypeError, ValueError, AttributeError):
            continue
    return out


def hand_level_names(run) -> dict[int, dict[int, str]]:
    """The level names a person gave (``names.yaml``'s ``levels:``, then the studio's)."""
    return run_level_names(run, automatic=False)


def hand_names(run) -> dict[int, str]:
    """The names a person gave (``names.yaml``, then the studio's)."""
    return load_names(run, automatic=False)


def save_names_template(run, overwrite: bool = False) -> Path:
    """Write a ``names.yaml`` listing every cluster with its automatic name commented, for
    editing; a run with levels also lists, under ``levels:``, every cluster of each level coarser
    than the one in use (the groups above the clusters: "memes" vs "food")."""
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
    at = level_in_use(run)
    stored = run.read_level_names()
    coarse = [k for k in stored if at is not None and k < at]
    if coarse:
        lines += ["", "# The coarser levels' groups (level key as in level_names.json and the level_<k>",
                  "# columns -> cluster id of that level -> name): the names the report's level switch,",
                  "# assign's level_<k>_name columns and a published model's path answers use.", "levels:"]
        for k in coarse:
            lines.append(f"  {k}:")
            for e in stored[k]:
                a = e.get("name") or ""
                lines.append(f"    {int(e['cluster'])}:   # automatic: {a}" if a else f"    {int(e['cluster'])}:")
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
    for lv, named in _run_level_hand_names(pipe, meta).items():  # a person's names of the run's levels
        if lv in out and (saved is None or lv != int(saved)):
            out[lv].update(named)
    if saved is not None and int(saved) in out and int(saved) != int(pipe.level_) and str(int(saved)) in by \
            and getattr(pipe, "model_path_", None) is not None:
        out[int(saved)] = model_names(pipe.model_path_, by[str(int(saved))])
    out[int(pipe.level_)] = dict(pipeline_names(pipe) if names is None else names)
    return out


def _run_level_hand_names(pipe, meta: dict) -> dict[int, dict[int, str]]:
    """The level names a person gave (:func:`hand_level_names`) of the run a model fitted by the
    cluster job belongs to (its levels are the run's, key for key); {} for a model the studio
    published (its levels are renumbered: the names it was published with hold them), a model
    of another run or outside a run folder."""
    path = getattr(pipe, "model_path_", None)
    if path is None or getattr(pipe, "tree_sources_", None) is not None or meta.get("curated") is not None \
            or meta.get("source") == "studio":
        return {}
    run = find_run(path)
    if run is None or meta.get("run_id") not in (None, run.run_id):
        return {}
    return hand_level_names(run)


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
    by_hand = _run_level_hand_names(pipe, meta) if len(by_level) > 1 else {}  # a person's level names: sure
    out = {}
    for lv, names in by_level.items():
        if int(lv) == int(pipe.level_):
            out[lv] = pipeline_names_sure(pipe, names)
        else:
            hand = _model_hand_names(pipe) if saved is not None and int(saved) == int(lv) else by_hand.get(int(lv), {})
            out[lv] = of_names(names, sup_by.get(str(int(lv))), hand)
    return out


def names_near(path: str | Path) -> dict[int, str]:
    """Cluster names for a saved model or run folder: :func:`load_names` of the run that holds
    ``path`` (a model saved in ``RUN/models/v0001``); ``{}`` if none."""
    run = find_run(path)
    return load_names(run) if run is not None else {}
