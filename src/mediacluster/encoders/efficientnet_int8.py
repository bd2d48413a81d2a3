"""EfficientNet-Lite0 with int8 weights and activations (ONNX Runtime static quantization).

``get_encoder("efficientnet-lite0-int8")``: the same network, preprocessing and outputs as
``efficientnet-lite0`` (1280-d pooled features + ImageNet softmax), run as an int8 model that
is made once, on first use, from the float ONNX export and kept in the same cache folder
(``onnx_cache.cache_root() / "onnx"``; atomic write, SHA-256 sidecar, remade when damaged).

How the int8 model is made (``quantize``):

1. the float export is pre-processed for quantization (``quant_pre_process``: shape inference
   and constant folding, so the padding arithmetic torch exports becomes constants);
2. ``onnxruntime.quantization.quantize_static`` over the calibration images, QDQ format by
   default, int8 weights per output channel, uint8 activations whose range is the mean over
   calibration batches (16 images each) of each batch's minimum and maximum (``method=
   "batch-mean"``, ORT's MinMax with ``CalibMovingAverage``; ``"minmax"`` takes the extremes of
   the whole set, which lets a few outlying images coarsen every other image's steps). The
   final ``Gemm`` (the ImageNet classifier, 0.3% of the work) stays in float; the pooling that
   makes ``embedding`` is a float ``ReduceMean`` over the dequantized last activation.

Calibration images (``calibration``):

* ``"builtin"`` (default): 320 images generated deterministically, offline, from files every
  install has: 240 random crops of the three photos that ship inside scikit-learn
  (``china.jpg``, ``flower.jpg``) and matplotlib (``grace_hopper.jpg``), with flips,
  brightness / contrast / saturation jitter, some greyscale and some blurred to 32 px and back
  (low-resolution collections); plus 80 drawn images (strokes, shapes and glyphs on flat
  backgrounds: icon-, emoji- and digit-like pictures). No evaluation set is used. The SHA-256 of
  the three source files is part of the id, so a dependency that changes its sample photos
  makes a new model and never mixes its vectors with the old ones.
* a folder (or a list of files): the user's own calibration slice, e.g. a few hundred images
  of the kind they will embed (at most ``calibration_n``, taken evenly over the sorted paths).
  The id then carries a hash of the chosen files' contents.

Not the default (benchmarks/RESULTS.md, "Quantized encoder"): about half the CPU time per image,
but the issue's rule (NMI loss <= 0.005 on every shared set) fails on MNIST (-0.010 with the
default pipeline) and on CIFAR-10 told k (-0.006); the vectors keep a mean cosine of 0.977-0.994
with the float ones.

``Encoder.id`` = ``efficientnet-lite0-int8@<float version>-<recipe>-<calibration hash>``:
it changes with the format, per-channel setting, activation type, calibration images and the
ONNX Runtime minor version (its quantizer decides the scales), so the embedding cache never
mixes float vectors, or int8 vectors of another recipe, with these.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

from . import register
from .efficientnet import (
    RESIZE,
    VERSION,
    EfficientNetLite0,
    _auto_threads,
    export_onnx,
    preprocess_uint8,
)

log = logging.getLogger(__name__)

FORMATS = ("qdq", "qoperator")
ACTIVATIONS = ("u8", "s8")
METHODS = ("batch-mean", "minmax")
#: bump when the built-in calibration generator changes
BUILTIN_CALIBRATION = "builtin2"
#: bump when the quantization recipe (pre-processing, excluded nodes, options) changes
QUANT_RECIPE = "q2"


# -- calibration images ----------------------------------------------------------------------

def builtin_sources() -> list[Path]:
    """The real photos every install has: scikit-learn's two sample images, matplotlib's one."""
    from importlib.resources import files

    out = [Path(str(files("sklearn.datasets") / "images" / n)) for n in ("china.jpg", "flower.jpg")]
    try:
        import matplotlib

        out.append(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    except ImportError:  # matplotlib is a dependency, but the photos above suffice without it
        pass
    found = [p for p in out if p.is_file()]
    if not found:
        raise RuntimeError("efficientnet-lite0-int8: none of the built-in calibration photos "
                           f"({', '.join(map(str, out))}) exist; pass calibration=FOLDER")
    return found


def _photo_crop(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = im.size
    area = w * h * np.exp(rng.uniform(np.log(0.03), 0.0))
    ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    cw = int(min(w, max(16, round(np.sqrt(area * ratio)))))
    ch = int(min(h, max(16, round(np.sqrt(area / ratio)))))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    c = im.crop((x0, y0, x0 + cw, y0 + ch))
    if rng.random() < 0.5:
        c = c.transpose(Image.FLIP_LEFT_RIGHT)
    c = ImageEnhance.Brightness(c).enhance(rng.uniform(0.6, 1.4))
    c = ImageEnhance.Contrast(c).enhance(rng.uniform(0.6, 1.4))
    c = ImageEnhance.Color(c).enhance(0.0 if rng.random() < 0.1 else rng.uniform(0.5, 1.5))
    if rng.random() < 0.25:  # a low-resolution picture (CIFAR-like): down to 32 px and back
        c = c.resize((32, 32), Image.BILINEAR)
    return c


def _drawn(rng: np.random.Generator, size: int = 256) -> Image.Image:
    def colour():
        return tuple(int(v) for v in rng.integers(0, 256, 3))

    kind = rng.random()
    bg = (0, 0, 0) if kind < 0.25 else (255, 255, 255) if kind < 0.7 else colour()
    im = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(1, 7))):
        fg = (255, 255, 255) if bg == (0, 0, 0) and rng.random() < 0.7 else colour()
        x = np.sort(rng.integers(0, size, 2))
        y = np.sort(rng.integers(0, size, 2))
        box = (int(x[0]), int(y[0]), int(x[1]) + 8, int(y[1]) + 8)
        width = int(rng.integers(2, 24))
        shape = rng.integers(0, 5)
        if shape == 0:
            d.ellipse(box, fill=fg if rng.random() < 0.6 else None, outline=fg, width=width)
        elif shape == 1:
            d.rectangle(box, fill=fg if rng.random() < 0.6 else None, outline=fg, width=width)
        elif shape == 2:
            pts = [tuple(int(v) for v in rng.integers(0, size, 2)) for _ in range(int(rng.integers(3, 7)))]
            d.polygon(pts, fill=fg, outline=colour())
        elif shape == 3:
            pts = [tuple(int(v) for v in rng.integers(0, size, 2)) for _ in range(int(rng.integers(2, 6)))]
            d.line(pts, fill=fg, width=width, joint="curve")
        else:
            font = ImageFont.load_default(size=int(rng.integers(40, 200)))
            d.text((int(x[0]) // 2, int(y[0]) // 2), chr(int(rng.choice([rng.integers(48, 58), rng.integers(65, 91)]))),
                   fill=fg, font=font)
    if rng.random() < 0.5:
        im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 3.0))))
    return im


def builtin_calibration(n_photo: int = 240, n_drawn: int = 80, seed: int = 0) -> list[np.ndarray]:
    """The default calibration set: ``n_photo + n_drawn`` 224x224x3 uint8 crops (see module doc)."""
    from ..ingest import load_image

    rng = np.random.default_rng(seed)
    photos = [load_image(p) for p in builtin_sources()]
    out = [preprocess_uint8(_photo_crop(photos[i % len(photos)], rng)) for i in range(n_photo)]
    out += [preprocess_uint8(_drawn(rng)) for _ in range(n_drawn)]
    return out


def _file_digest(paths: Sequence[str | os.PathLike]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()[:12]


def calibration_files(folder_or_files: str | os.PathLike | Sequence[str | os.PathLike], n: int) -> list[str]:
    """At most ``n`` image files, evenly spaced over the sorted paths (a reproducible choice)."""
    from ..ingest import IMAGE_EXTENSIONS

    if isinstance(folder_or_files, str | os.PathLike):
        root = Path(folder_or_files)
        if not root.is_dir():
            raise ValueError(f"efficientnet-lite0-int8: calibration folder {root} does not exist")
        paths = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    else:
        paths = sorted(str(p) for p in folder_or_files)
    if not paths:
        raise ValueError(f"efficientnet-lite0-int8: no images to calibrate on in {folder_or_files}")
    if len(paths) > n:
        paths = [paths[i] for i in np.linspace(0, len(paths) - 1, n).round().astype(int)]
    return paths


# -- quantization ----------------------------------------------------------------------------

class _Batches:
    """``CalibrationDataReader`` over uint8 crops, ``batch`` at a time."""

    def __init__(self, crops: list[np.ndarray], batch: int = 16):
        self.chunks = [np.stack(crops[i:i + batch]) for i in range(0, len(crops), batch)]
        self.i, self.end = 0, len(self.chunks)

    def get_next(self):
        if self.i >= self.end:
            return None
        self.i += 1
        return {"image": self.chunks[self.i - 1]}

    def __len__(self):
        return len(self.chunks)

    def __iter__(self):
        return ({"image": c} for c in self.chunks)

    def set_range(self, start_index: int, end_index: int):
        """Serve batches ``start_index:end_index`` (``CalibStridedMinMax`` calibrates in chunks)."""
        self.i, self.end = start_index, min(end_index, len(self.chunks))


def quantize(float_path: str | os.PathLike, out_path: str | os.PathLike, crops: list[np.ndarray],
             fmt: str = "qdq", per_channel: bool = True, activation: str = "u8",
             method: str = "batch-mean") -> None:
    """Write the int8 model of the float EfficientNet-Lite0 export ``float_path`` to ``out_path``."""
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="mc-quant-") as tmp:
        pre = os.path.join(tmp, "pre.onnx")
        quant_pre_process(str(float_path), pre, skip_symbolic_shape=True)
        model = onnx.load(pre)
        keep_float = [n.name for n in model.graph.node if n.op_type in ("Gemm", "Softmax")]
        act = QuantType.QUInt8 if activation == "u8" else QuantType.QInt8
        quantize_static(
            pre, str(out_path), _Batches(crops),
            quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
            per_channel=per_channel, activation_type=act, weight_type=QuantType.QInt8,
            nodes_to_exclude=keep_float,
            calibrate_method=CalibrationMethod.MinMax,
            # MinMax keeps only each batch's per-tensor min and max (ReduceMin/ReduceMax outputs),
            # so memory stays small. Not "CalibMaxIntermediateOutputs": onnxruntime 1.32 drops
            # the batches collected so far when that limit is reached instead of merging them.
            extra_options={"CalibMovingAverage": method == "batch-mean"},
        )


def _ort_minor() -> str:
    import onnxruntime

    return ".".join(onnxruntime.__version__.split(".")[:2])


class EfficientNetLite0Int8(EfficientNetLite0):
    """EfficientNet-Lite0 quantized to int8 with ONNX Runtime (see the module doc).

    ``quant_format``: "qdq" (QuantizeLinear/DequantizeLinear pairs that ONNX Runtime fuses into
    int8 kernels) or "qoperator" (QLinearConv etc. in the file). ``per_channel``: one weight
    scale per output channel (depthwise convolutions need it). ``activation``: "u8" or "s8".
    ``calibration``: "builtin" or a folder / list of image files; ``calibration_n``: how many
    of them. Threads and concurrency as for the float encoder.
    """

    name = "efficientnet-lite0-int8"

    def __init__(self, model: str = "", threads: int | None = None, concurrency: int | None = None,
                 onnx_cache_dir: str | None = None, quant_format: str = "qdq", per_channel: bool = True,
                 activation: str = "u8", calibration: str | os.PathLike | Sequence = "builtin",
                 calibration_n: int = 320, method: str = "batch-mean", backend: str = "onnx"):
        if backend not in ("onnx", "auto"):
            raise ValueError("efficientnet-lite0-int8 runs on ONNX Runtime only (backend='onnx')")
        super().__init__(model=model, threads=threads, backend="onnx", concurrency=concurrency,
                         onnx_cache_dir=onnx_cache_dir)
        if quant_format not in FORMATS:
            raise ValueError(f"efficientnet-lite0-int8: quant_format must be one of {FORMATS}, not {quant_format!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"efficientnet-lite0-int8: activation must be one of {ACTIVATIONS}, not {activation!r}")
        if method not in METHODS:
            raise ValueError(f"efficientnet-lite0-int8: method must be one of {METHODS}, not {method!r}")
        self.quant_format, self.per_channel, self.activation = quant_format, bool(per_channel), activation
        self.calibration, self.calibration_n, self.method = calibration, int(calibration_n), method
        self._calib_id: str | None = None
        self._calib_files: list[str] | None = None

    def _calibration_id(self) -> str:
        if self._calib_id is None:
            if isinstance(self.calibration, str) and self.calibration == "builtin":
                self._calib_id = f"{BUILTIN_CALIBRATION}.{_file_digest(builtin_sources())}"
            else:
                self._calib_files = calibration_files(self.calibration, self.calibration_n)
                self._calib_id = f"files{len(self._calib_files)}.{_file_digest(self._calib_files)}"
        return self._calib_id

    def _calibration_crops(self) -> list[np.ndarray]:
        from ..ingest import SkipItem, load_image

        if isinstance(self.calibration, str) and self.calibration == "builtin":
            return builtin_calibration()
        self._calibration_id()
        crops = []
        for p in self._calib_files:
            try:
                crops.append(preprocess_uint8(load_image(p, draft_size=RESIZE)))
            except SkipItem as e:
                log.warning("calibration: skipping %s (%s)", p, e.reason)
        if len(crops) < 16:
            raise ValueError(f"efficientnet-lite0-int8: only {len(crops)} usable calibration images")
        return crops

    @property
    def version(self) -> str:
        recipe = (f"{QUANT_RECIPE}-{self.quant_format}-{'pc' if self.per_channel else 'pt'}-"
                  f"{self.activation}s8-{self.method}-ort{_ort_minor()}")
        return f"{VERSION}-int8-{recipe}-{self._calibration_id()}"

    @classmethod
    def writes(cls, version: str) -> bool | None:
        """The float model's version and the recipe, made by this ONNX Runtime's quantizer (its
        minor version decides the scales); the format, method and calibration set are settings."""
        try:
            ort = _ort_minor()
        except ImportError:
            return None
        return version.startswith(f"{VERSION}-int8-{QUANT_RECIPE}-") and f"-ort{ort}-" in version

    def float_model_path(self) -> Path:
        """The float export this model is made from (exported first if needed)."""
        from .onnx_cache import exported_model

        return exported_model(f"{EfficientNetLite0.name}@{VERSION}", export_onnx, self.onnx_cache_dir)

    def _load_onnx(self):
        from .onnx_cache import load_session

        def make(path: str) -> None:
            log.info("making the int8 model of efficientnet-lite0 (once; calibration: %s)", self._calibration_id())
            quantize(self.float_model_path(), path, self._calibration_crops(), fmt=self.quant_format,
                     per_channel=self.per_channel, activation=self.activation, method=self.method)

        threads = self.threads or max(1, _auto_threads() // self.concurrency)
        sess = load_session(self.id, make, threads=threads, cache_dir=self.onnx_cache_dir)

        def run(x: np.ndarray):
            f, p = sess.run(None, {"image": x})
            return f, p

        return run

    def _load_torch(self):  # pragma: no cover - backend is forced to "onnx"
        raise RuntimeError("efficientnet-lite0-int8 runs on ONNX Runtime only")

    def info(self) -> dict:
        d = super().info()
        d.update(quant_format=self.quant_format, per_channel=self.per_channel,
                 activation=self.activation, calibration=self._calibration_id())
        return d


register("efficientnet-lite0-int8", EfficientNetLite0Int8)
