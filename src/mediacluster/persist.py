"""Model folders and model versions: fitted state as JSON + npz, never pickle.

A **model folder** holds::

    model.json    format name and version, package versions, what the owner recorded
    arrays.npz    plain numeric arrays (read back with ``np.load(allow_pickle=False)``)

Nothing is ever unpickled: :func:`read_model` refuses a folder that contains a pickle-like file
(``*.pkl``, ``*.pickle``, ``*.joblib``, ...), reads arrays with ``allow_pickle=False`` (object
arrays raise), and the owner (``Pipeline.load``) rebuilds stages only from the stage registry,
so opening someone else's model cannot run their code. A folder written with another
``MODEL_FORMAT_VERSION`` is refused with a message naming both versions.

A **model store** (``RUN/models/``) keeps versions ``v0001``, ``v0002``, ... (each a model
folder) and a ``LATEST`` file naming the current one with its run id. :meth:`ModelStore.publish`
builds a version in a temporary folder, renames it into place, then atomically rewrites
``LATEST``; a reader (``assign``, the service's file watch) that reads ``LATEST`` therefore always
finds a complete version, and a service sees a new one appear in one step. A ``LATEST`` marked
``held`` (:meth:`ModelStore.hold`: the cluster job's bare fit while the curation it carries is
being published as the next version) names a version that readers use but the service's watch
does not switch to; the next publish or :meth:`ModelStore.use` writes it unmarked.

A version's **model id** (:func:`model_id`) is ``RUN_ID/vNNNN``: the run it was fitted in and its
number, unique across runs, where the number alone repeats between stores. A run folder re-run in
place keeps its store: the new build starts with the previous run's versions (hard links:
:meth:`ModelStore.carry_to`), so numbering goes on (v0003 after v0002) and ``--use`` reaches last
week's model.
"""

from __future__ import annotations

import io
import os
import shutil
import time
import zipfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ._version import MODEL_FORMAT_VERSION, __version__, versions
from .errors import MediaclusterError, ModelFormatError, OutputError
from .fileio import atomic_path, flocked, pid_alive, read_json, write_json

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".pck", ".pcl", ".dill")
FORMAT_NAME = "mediacluster-model"
MODEL_JSON = "model.json"
ARRAYS_NPZ = "arrays.npz"
LATEST = "LATEST"


def write_model(path: str | os.PathLike, info: dict, arrays: dict[str, np.ndarray],
                overwrite: bool = False) -> dict:
    """Write a model folder; returns ``{"path", "bytes", "files"}``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path} is a file; a model is saved as a folder")
    if path.exists() and any(path.iterdir()) and not (path / MODEL_JSON).exists():
        raise OutputError(f"{path} exists and is not a mediacluster model; refusing to write into it")
    if (path / MODEL_JSON).exists() and not overwrite:
        raise OutputError(f"{path} already holds a model; pass overwrite=True to replace it")
    try:
        path.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
        with atomic_path(path / ARRAYS_NPZ) as tmp, open(tmp, "wb") as f:
            f.write(buf.getvalue())
        doc = {"format": FORMAT_NAME, "format_version": MODEL_FORMAT_VERSION,
               "mediacluster_version": __version__, "versions": versions(), **info,
               "arrays": {k: {"shape": list(np.shape(v)), "dtype": str(np.asarray(v).dtype)}
                          for k, v in arrays.items()}}
        write_json(path / MODEL_JSON, doc)
    except OutputError:
        raise
    except OSError as e:
        raise OutputError(f"cannot write the model to {path}: {e.strerror or e}") from e
    files = {p.name: p.stat().st_size for p in sorted(path.iterdir()) if p.is_file()}
    return {"path": str(path), "bytes": int(sum(files.values())), "files": files}


def check_model_dir(path: str | os.PathLike) -> dict:
    """Refuse unsafe / foreign / incompatible model folders; return model.json."""
    path = Path(path)
    if not path.is_dir():
        raise ModelFormatError(f"{path} is not a folder (a mediacluster model is a folder with {MODEL_JSON})")
    for root, _dirs, files in os.walk(path):
        for f in files:
            if f.lower().endswith(PICKLE_SUFFIXES):
                raise ModelFormatError(
                    f"refusing to load {path}: it contains {Path(root, f)}, a pickle-type file. "
                    "mediacluster models are JSON + npz only and are never unpickled "
                    "(a pickle can run arbitrary code when opened).")
    mj = path / MODEL_JSON
    if not mj.exists():
        raise ModelFormatError(f"{path} has no {MODEL_JSON}; not a mediacluster model")
    try:
        info = read_json(mj)
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelFormatError(f"{mj} is not valid JSON: {e}") from e
    if not isinstance(info, dict) or info.get("format") != FORMAT_NAME:
        fmt = info.get("format") if isinstance(info, dict) else None
        raise ModelFormatError(f"{mj} is not a mediacluster model (format={fmt!r})")
    ver = info.get("format_version")
    if type(ver) is not int or ver != MODEL_FORMAT_VERSION:
        raise ModelFormatError(
            f"model {path} has format version {ver!r} (written by mediacluster "
            f"{info.get('mediacluster_version', '?')}); this mediacluster {__version__} reads format "
            f"version {MODEL_FORMAT_VERSION} (an integer) only. Refit the model with this version "
            f"(mediacluster cluster ... --save-model) or install the version that wrote it.")
    return info


def read_model(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """``(model.json, arrays)`` of a checked model folder."""
    path = Path(path)
    info = check_model_dir(path)
    try:
        with np.load(path / ARRAYS_NPZ, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise ModelFormatError(f"{path} has no {ARRAYS_NPZ}") from None
    except ValueError as e:  # object arrays need pickle: refuse
        raise ModelFormatError(f"{path}/{ARRAYS_NPZ} holds non-numeric (pickled) arrays; refusing: {e}") from e
    except (OSError, EOFError, zipfile.BadZipFile) as e:  # cut short, or not an npz
        raise ModelFormatError(f"{path}/{ARRAYS_NPZ} cannot be read: {e}") from e
    for k, a in arrays.items():
        if a.dtype.kind not in "biuf":
            raise ModelFormatError(f"{path}/{ARRAYS_NPZ}: array {k!r} has dtype {a.dtype}, not numeric")
    return info, arrays


class ModelStore:
    """Versions of a model in one folder (``RUN/models``): ``v0001``, ``v0002``, ... + ``LATEST``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def versions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted((p.name for p in self.root.iterdir()
                       if p.is_dir() and p.name.startswith("v") and p.name[1:].isdecimal()),
                      key=lambda name: int(name[1:]))  # by number: v10000 after v9999

    def pointer(self) -> dict | None:
        """``LATEST``'s content ({"version", "run_id", "published"}), None when there is none (or
        it is not such an object: a hand-edited file holding a bare version string, say)."""
        p = self.root / LATEST
        try:
            ptr = read_json(p)
        except (OSError, ValueError):
            return None
        return ptr if isinstance(ptr, dict) and isinstance(ptr.get("version"), str) else None

    def latest(self) -> Path | None:
        return self.latest_of(self.pointer())

    def latest_of(self, ptr: dict | None) -> Path | None:
        """The version ``ptr`` (one :meth:`pointer` read) names, else the newest: a reader that
        decides on ``held`` takes the version from the same read."""
        if ptr and (self.root / ptr.get("version", "")).is_dir() and ptr.get("version"):
            return self.root / ptr["version"]
        vs = self.versions()
        return self.root / vs[-1] if vs else None

    def describe(self) -> list[dict]:
        """Each version, oldest first: ``version``, ``id`` (:func:`model_id`), ``run_id``, ``source``, ``created`` (its
        model.json's time), ``n_clusters`` (None where unreadable), ``latest`` (the one
        ``LATEST`` names, which ``assign`` and the service use) and ``held`` (the latest, held from
        a watching service: :meth:`hold`) and ``note`` (what a curated version is, where its
        publisher said: the carried curation of ``cluster --carry-from``) and ``damaged`` (why the
        version cannot be loaded, None when its model.json and the index of its arrays read:
        :func:`check_model_dir`, ``arrays.npz`` opened as a zip, not read whole)."""
        latest = self.latest()
        held = bool((self.pointer() or {}).get("held"))
        out = []
        for v in self.versions():
            try:
                info = read_json(self.root / v / MODEL_JSON)
            except (OSError, ValueError):
                info = {}
            info = info if isinstance(info, dict) else {}  # damaged or hand-edited: listed with "?"
            meta = info.get("metadata") if isinstance(info.get("metadata"), dict) else {}
            try:
                made = time.strftime("%Y-%m-%dT%H:%M:%S%z",
                                     time.localtime((self.root / v / MODEL_JSON).stat().st_mtime))
            except OSError:
                made = None
            try:  # a version cut short (a copy, a full disk) is said so here, not first by --use
                check_model_dir(self.root / v)
                zipfile.ZipFile(self.root / v / ARRAYS_NPZ).close()
                damaged = None
            except ModelFormatError as e:
                damaged = str(e)
            except (OSError, zipfile.BadZipFile) as e:
                damaged = f"{self.root / v / ARRAYS_NPZ} cannot be read: {e}"
            out.append({"version": v, "id": model_id(self.root / v, info), "run_id": meta.get("run_id"),
                        "damaged": damaged,
                        "source": meta.get("source"),
                        "created": made, "n_clusters": info.get("n_clusters"),
                        "note": (meta.get("curated") or {}).get("note") if isinstance(meta.get("curated"), dict) else None,
                        "latest": latest is not None and latest.name == v,
                        "held": held and latest is not None and latest.name == v})
        return out

    def find(self, name: str) -> str:
        """The version ``name`` means: a version (``v0002``, or its number as a person types it:
        ``v2``, ``2``, ``V02``) or a model id (``RUN_ID/v0002``, :func:`model_id`; a unique prefix
        of the run id will do; ``RUN_ID/2`` too). A clear error listing the store's versions and
        ids when none (or several) match."""
        vs = self.versions()
        if name in vs:
            return name
        run, _, ver = name.strip().rpartition("/")
        num = ver[1:] if ver[:1] in ("v", "V") else ver
        hits = [v for v in vs if v == ver or (num.isdecimal() and int(v[1:]) == int(num))]
        if run:
            hits = [v for v in hits if model_id(self.root / v).split("/")[0].startswith(run)]
        if len(hits) == 1:
            return hits[0]
        have = ", ".join(model_id(self.root / v) for v in vs) or "none"
        if hits:  # hand-made folders v2 and v0002, or two runs' ids sharing the prefix
            raise ModelFormatError(f"{self.root}: {name!r} is ambiguous: it may be "
                                   f"{', '.join(model_id(self.root / v) for v in hits)} (versions: {have})")
        raise ModelFormatError(f"{self.root}: no model version {name!r} (versions: {have})")

    def use(self, version: str, load: Callable[[Path], object] | None = read_model) -> dict:
        """Point ``LATEST`` at an existing ``version`` (a rollback, or back to the newest; a
        version or a model id, :meth:`find`): the service watching this store switches to it
        within its poll, ``assign`` uses it. The versions themselves are never changed; the next
        publish is the newest number again and becomes the latest. ``load``: read the version
        first (default :func:`read_model`: its arrays there and readable; ``Pipeline.load``, as
        ``mediacluster models --use`` passes, the whole model as the service would load it), a
        version it refuses is refused by name before ``LATEST`` moves; None: its folder's format
        only (a version this process just wrote). Returns the new ``LATEST`` content."""
        version = self.find(version)
        if not (self.root / version / MODEL_JSON).is_file():
            raise ModelFormatError(f"{self.root / version}: no {MODEL_JSON}; not a model version")
        # a damaged version is refused here, not by the service that would switch to it
        meta = check_model_dir(self.root / version).get("metadata")
        if load is not None:
            try:
                load(self.root / version)
            except MediaclusterError as e:
                now = (self.pointer() or {}).get("version")
                raise ModelFormatError(f"version {version} does not load, so LATEST stays "
                                       f"{'at ' + now if now else 'as it is'}: {e}") from e
        meta = meta if isinstance(meta, dict) else {}
        ptr = {"version": version, "run_id": meta.get("run_id"), "source": meta.get("source") or "",
               "published": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "pointed_by": "use"}
        with self._pointing():
            return self._point(ptr)

    def hold(self) -> dict | None:
        """Mark ``LATEST`` held: a service watching the store keeps the version it serves (it
        does not switch to this one); ``assign`` and the studio read it as usual. The next
        :meth:`publish` or :meth:`use` releases it. Returns the new ``LATEST`` content (None
        when there is none)."""
        if not self.root.is_dir():
            return None
        with self._pointing():  # no publish or use between the read and the write (it would be undone)
            ptr = self.pointer()
            if ptr is None:
                return None
            return self._point({**ptr, "held": True})

    def carry_to(self, root: str | os.PathLike) -> list[str]:
        """Put this store's published versions and ``LATEST`` into the new store ``root`` (a
        run re-run in place: its build folder's ``models/``), as hard links (a copy where the
        file system has none): the versions are never changed, so both stores may share them.
        The new store's next publish takes the next number, and ``use`` reaches the earlier
        runs' versions. Returns the versions carried."""
        root = Path(root)
        vs = [v for v in self.versions() if (self.root / v / MODEL_JSON).is_file()]
        if not vs:
            return []

        def link(src, dst):
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)

        try:
            root.mkdir(parents=True, exist_ok=True)
            for v in vs:
                shutil.copytree(self.root / v, root / v, copy_function=link)
            if (self.root / LATEST).is_file():
                link(self.root / LATEST, root / LATEST)
        except OSError as e:
            raise OutputError(f"cannot carry the model versions of {self.root} to {root}: "
                              f"{e.strerror or e}") from e
        return vs

    @contextmanager
    def _pointing(self):
        """Held by every writer of ``LATEST`` (:meth:`publish`, :meth:`use`, :meth:`hold`, which
        reads it and writes it back: a publish in between was undone): an exclusive ``flock`` on
        the store's folder itself (no lock file in it), so other processes and this process's
        other threads wait; the folder must exist."""
        with flocked(self.root, folder=True, opened=lambda e: OutputError(
                f"cannot open the model store {self.root}: {e.strerror or e}")):
            yield

    def _point(self, ptr: dict) -> dict:
        """Write ``ptr`` as ``LATEST`` (atomically), a clear error naming it when that fails."""
        try:
            write_json(self.root / LATEST, ptr)
        except OSError as e:
            if isinstance(e, OutputError):
                raise
            raise OutputError(f"cannot write {self.root / LATEST}: {e.strerror or e}") from e
        return ptr

    def _remove_stale(self) -> None:
        """Half-written versions of killed writers (their pid is gone): a model-sized folder
        each, which nothing else would ever remove."""
        for tmp in self.root.glob(".tmp-*"):
            try:
                pid = int(tmp.name.split("-")[1])
            except (ValueError, IndexError):
                continue
            if pid != os.getpid() and not pid_alive(pid):
                shutil.rmtree(tmp, ignore_errors=True)

    def publish(self, write: Callable[[Path], object], run_id: str | None = None,
                source: str = "", held: bool = False,
                unless: Callable[[Path | None], bool] | None = None) -> Path:
        """Write a new version with ``write(folder)`` and make it the latest (``held``: the
        latest, held at once, :meth:`hold`); returns its path. ``unless(latest)``, asked under
        the store's lock once the version is written: True when the latest version already is
        this one (another process published the same model meanwhile, e.g. two ``tune`` on one
        ``--out``): nothing is published and the latest's path is returned."""
        tmp = self.root / f".tmp-{os.getpid()}-{time.monotonic_ns()}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._remove_stale()
            write(tmp)
            with self._pointing():
                if unless is not None and unless(latest := self.latest()):
                    shutil.rmtree(tmp, ignore_errors=True)
                    return latest
                vs = self.versions()
                n = int(vs[-1][1:]) + 1 if vs else 1
                while True:
                    dest = self.root / f"v{n:04d}"
                    try:
                        os.rename(tmp, dest)  # fails if dest exists (non-empty): another writer won
                        break
                    except OSError:
                        if not dest.exists():
                            raise
                        n += 1
                write_json(self.root / LATEST, {"version": dest.name, "run_id": run_id, "source": source,
                                                "published": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                                **({"held": True} if held else {})})
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, OutputError):
                raise
            raise OutputError(f"cannot publish a model version in {self.root}: {e.strerror or e}") from e
        except BaseException:  # the writer refused (bad items, an interrupt): no half version left
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return dest


def model_id(folder: str | os.PathLike, info: dict | None = None) -> str:
    """A model version's id, unique across runs: ``RUN_ID/vNNNN`` (the run it was fitted in, from
    its model.json's metadata, and its folder's name); the folder's name alone for a model saved
    without a run id (``Pipeline.save`` to a folder of one's own). ``info``: model.json, when
    read already."""
    folder = Path(folder)
    if info is None:
        try:
            info = read_json(folder / MODEL_JSON)
        except (OSError, ValueError):
            info = {}
    meta = info.get("metadata") if isinstance(info, dict) else None
    run_id = meta.get("run_id") if isinstance(meta, dict) else None
    return f"{run_id}/{folder.name}" if isinstance(run_id, str) and run_id else folder.name


#: A model version's duplicate index (``cluster --save-model --dedup``): a sub-folder of JSON, npz
#: and the vectors' faiss file, written and checked by ``duplicates.index`` (``save_to_model`` /
#: ``read_from_model``).
DUPLICATES_DIR = "duplicates"


def _stores(path: Path) -> tuple[Path, ...]:
    """Where a model store may be for ``path``: itself, a run's ``models/``, a tuning folder's."""
    return (path, path / "models", path / "best" / "models")


def resolve_model(path: str | os.PathLike) -> Path:
    """The model folder meant by ``path``: a model folder itself, a model store (its latest
    version), or a run / tuning folder (the latest version of its ``models/``)."""
    path = Path(path)
    if (path / MODEL_JSON).exists():
        return path
    for store in _stores(path):
        latest = ModelStore(store).latest()
        if latest is not None:
            return latest
    if not path.exists():
        raise ModelFormatError(f"{path} does not exist")
    raise ModelFormatError(f"{path} holds no model: give a model folder (with {MODEL_JSON}), a run "
                           "folder written with `cluster --save-model`, or its models/ folder")


def version_store(path: str | os.PathLike) -> ModelStore | None:
    """The store ``path`` is a published version of (``RUN/models/v0003`` -> ``RUN/models``),
    None for any other folder. A published version is never changed after it is published:
    ``assign`` and the service read it as it was, so nothing else may write into it."""
    path = Path(path)
    store = ModelStore(path.parent)
    if (path / MODEL_JSON).exists() and path.name in store.versions() and (store.root / LATEST).exists():
        return store
    return None


def model_store_of(path: str | os.PathLike) -> ModelStore | None:
    """The store whose ``LATEST`` a service watches for ``path``; None for a model folder given
    directly (a pinned version never switches)."""
    path = Path(path)
    if (path / MODEL_JSON).exists():
        return None
    for store in _stores(path):
        if (store / LATEST).exists() or ModelStore(store).versions():
            return ModelStore(store)
    return None
