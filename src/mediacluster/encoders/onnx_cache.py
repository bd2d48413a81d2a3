"""ONNX Runtime sessions for encoders, from models exported on first use into a cache folder.

The exported file is never shipped or committed: it is made from the installed PyTorch weights
the first time an encoder runs on ONNX Runtime and kept under ``cache_root() / "onnx"``.
Writing is atomic (temporary file + fsync + rename) and guarded by a file lock, so two
processes starting at once export once and never see half a file. A JSON sidecar records the
file's content hash (``fileio.hash_file``); a file whose hash does not match (truncated, overwritten, bit rot) or that ONNX
Runtime refuses to load is exported again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path

from ..fileio import atomic_path, cache_root, flocked, hash_file, write_json

log = logging.getLogger(__name__)

#: bump when the export recipe changes (opset, wrapper), so old files are not reused
EXPORT_RECIPE = "ts-opset17-2"  # 2: the record keeps fileio.hash_file, not SHA-256


def _safe_name(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.@" else "_" for c in key)


def _valid(onnx_path: Path, meta_path: Path) -> bool:
    if not onnx_path.exists() or not meta_path.exists():
        return False
    try:
        meta = json.loads(meta_path.read_text())
        return meta.get("hash") == hash_file(onnx_path) and meta.get("recipe") == EXPORT_RECIPE
    except (OSError, ValueError):
        return False


def exported_model(key: str, export: Callable[[str], None], cache_dir: str | os.PathLike | None = None) -> Path:
    """Path of the ONNX file for ``key``, calling ``export(tmp_path)`` to make it when missing or bad.

    ``key`` must identify the weights and preprocessing (the encoder id does).
    """

    folder = Path(cache_dir) if cache_dir is not None else cache_root() / "onnx"
    base = _safe_name(f"{key}-{EXPORT_RECIPE}")
    onnx_path = folder / f"{base}.onnx"
    meta_path = folder / f"{base}.json"
    if _valid(onnx_path, meta_path):
        return onnx_path
    with flocked(folder / f"{base}.lock"):
        if _valid(onnx_path, meta_path):  # another process made it while we waited
            return onnx_path
        if onnx_path.exists():
            log.warning("ONNX model %s is missing its record or damaged; exporting it again", onnx_path)
        with atomic_path(onnx_path) as tmp:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                export(tmp)
        write_json(meta_path, {"key": key, "recipe": EXPORT_RECIPE, "hash": hash_file(onnx_path)})
    return onnx_path


def ort_session(onnx_path: str | os.PathLike, threads: int = 1):
    """A CPU ONNX Runtime session with ``threads`` intra-op threads and no busy-waiting.

    Spinning off: on a shared 2-core machine a spinning thread pool steals the core that the
    decoding threads (or the other inference call) need; measured 15 -> 27 img/s under load.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, int(threads))
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])


def load_session(key: str, export: Callable[[str], None], threads: int = 1,
                 cache_dir: str | os.PathLike | None = None):
    """``ort_session`` over ``exported_model``; re-exports once if the cached file will not load."""
    path = exported_model(key, export, cache_dir)
    try:
        return ort_session(path, threads)
    except Exception as e:  # a file that hashes right but does not load: export afresh
        log.warning("ONNX Runtime could not load %s (%s); exporting it again", path, e)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        path = exported_model(key, export, cache_dir)
        return ort_session(path, threads)


__all__ = ["exported_model", "ort_session", "load_session", "EXPORT_RECIPE"]
