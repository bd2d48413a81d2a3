"""Run the tests on slightly different vectors: a pytest plugin that perturbs every encoder output.

The default encoder's ONNX copy is exported on first use, and its vectors differ between machines
in the last digits. UMAP / NN-descent are chaotic in their input, so a relative change of 1e-6
already moves the default engine's clustering of 300 CIFAR images (ARI 0.96-0.97 against the
unperturbed one; 0.84-0.98 at 1e-5 and 1e-4, two seeds each): a test that passes on one
machine's vectors may be asserting one draw. This plugin gives each run another draw.

Use (not part of the test suite: it is loaded only when asked for, and the benchmarks folder is
never put on ``sys.path``, where its scripts would shadow other modules)::

    mkdir -p /tmp/pp && ln -sf "$PWD/benchmarks/perturb_plugin.py" /tmp/pp/
    MC_PERTURB_SEED=1 PYTHONPATH=/tmp/pp:$PWD/src python -m pytest -p perturb_plugin tests/test_levels.py

``MC_PERTURB_SEED`` (unset: the plugin does nothing), ``MC_PERTURB_SCALE`` (relative noise,
default 1e-5; the PyTorch and ONNX backends differ by ~2e-6 in relative norm on CIFAR images).

What it does:

* every output row ``r`` of every ``Encoder.encode`` (the package's encoders and tests' own, also
  subclasses defined later: ``Encoder.__init_subclass__`` wraps each ``encode``) becomes
  ``r * (1 + scale * z)``, ``z ~ N(0, 1)`` from a generator seeded by (seed, CRC-32 of the row's
  bytes): the same input row always gets the same noise, whatever its batch (identical files
  stay identical). Rows that were unit-norm are renormalised (CLIP), ``*probs`` rows sum to 1
  again (the softmax);
* the hook is an import hook on ``mediacluster.encoders.base``, installed when the plugin is
  imported (before any test module imports the package); subprocesses (``python -m
  mediacluster`` in the CLI tests) get it through a ``sitecustomize.py`` that the plugin writes to
  a temporary folder put first on ``PYTHONPATH``;
* the embedding cache is a fresh folder per run (``MEDIACLUSTER_CACHE``; the ONNX exports and
  numba's compiled code are linked from the user cache): the user cache's unperturbed vectors are
  never read and perturbed ones never written there.

The summary line says how many encode calls were perturbed in the pytest process.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import tempfile
import threading
import zlib
from pathlib import Path

SEED = os.environ.get("MC_PERTURB_SEED")
SCALE = float(os.environ.get("MC_PERTURB_SCALE", "1e-5"))
TARGET = "mediacluster.encoders.base"
_local = threading.local()
CALLS = {"calls": 0, "rows": 0}


def perturb(out: dict, seed: int | None = None, scale: float | None = None) -> dict:
    """``out`` (an ``encode`` result: name -> (n, d) array) with relative noise on each row."""
    import numpy as np

    seed = int(SEED if seed is None else seed)
    scale = SCALE if scale is None else scale
    res = {}
    for key, v in out.items():
        a = np.asarray(v)
        if a.ndim != 2 or a.dtype.kind != "f" or a.shape[0] == 0:
            res[key] = v
            continue
        b = a.astype(np.float64)
        unit = np.abs(np.linalg.norm(b, axis=1) - 1.0) < 1e-3
        for i in range(len(b)):
            rng = np.random.default_rng([seed, zlib.crc32(a[i].tobytes())])
            b[i] *= 1.0 + scale * rng.standard_normal(b.shape[1])
        if key.endswith("probs"):
            b /= b.sum(axis=1, keepdims=True)
        else:
            b[unit] /= np.linalg.norm(b[unit], axis=1, keepdims=True)
        res[key] = b.astype(a.dtype)
    CALLS["calls"] += 1
    CALLS["rows"] += max((np.shape(v)[0] for v in out.values() if np.ndim(v) == 2), default=0)
    return res


def _wrap(cls) -> None:
    orig = cls.__dict__["encode"]

    def encode(self, batch, *args, **kwargs):
        if getattr(_local, "inside", False):  # a subclass calling super().encode: perturb once
            return orig(self, batch, *args, **kwargs)
        _local.inside = True
        try:
            out = orig(self, batch, *args, **kwargs)
        finally:
            _local.inside = False
        return perturb(out) if isinstance(out, dict) else out

    encode.__wrapped__ = orig
    encode.__doc__ = orig.__doc__
    cls.encode = encode


def _patch(module) -> None:
    encoder = module.Encoder
    prev = encoder.__dict__.get("__init_subclass__")

    def __init_subclass__(cls, **kw):
        if prev is not None:
            prev.__func__(cls, **kw)
        else:
            super(encoder, cls).__init_subclass__(**kw)
        if "encode" in cls.__dict__:
            _wrap(cls)

    encoder.__init_subclass__ = classmethod(__init_subclass__)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None:
            return None
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _patch(module)

        spec.loader.exec_module = exec_module
        return spec


def install() -> None:
    if SEED is None or getattr(sys, "_mc_perturb_installed", False):
        return
    if TARGET in sys.modules:
        raise RuntimeError(f"perturb_plugin: {TARGET} was imported before the plugin")
    sys._mc_perturb_installed = True
    sys.meta_path.insert(0, _Finder())


install()


# -- pytest hooks ------------------------------------------------------------------------------
def pytest_configure(config):
    if SEED is None:
        return
    scratch = Path(tempfile.mkdtemp(prefix=f"perturb-{SEED}-"))
    (scratch / "sitecustomize.py").write_text(
        "import importlib.util as u\n"
        f"s = u.spec_from_file_location('perturb_plugin', {str(Path(__file__).resolve())!r})\n"
        "m = u.module_from_spec(s)\n"
        "s.loader.exec_module(m)\n", encoding="utf-8")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(scratch), os.environ.get("PYTHONPATH")]))
    from mediacluster.fileio import cache_root  # the fileio module has no encoder in it

    home = cache_root()
    cache = scratch / "cache"
    cache.mkdir()
    for sub in ("onnx", "numba"):
        if (home / sub).is_dir():
            (cache / sub).symlink_to(home / sub)
    os.environ["MEDIACLUSTER_CACHE"] = str(cache)


def pytest_report_header(config):
    if SEED is not None:
        return (f"perturb_plugin: seed {SEED}, relative noise {SCALE}, "
                f"cache {os.environ.get('MEDIACLUSTER_CACHE')}")


def pytest_terminal_summary(terminalreporter):
    if SEED is not None:
        terminalreporter.write_line(f"perturb_plugin: {CALLS['calls']} encode calls perturbed in this "
                                    f"process ({CALLS['rows']} items)")
