"""Finding items (folders, manifests, precomputed vectors) and decoding them safely."""

from __future__ import annotations


class SkipItem(Exception):
    """Raised by a loader for a file that cannot be used; the message is the reason shown."""


from .images import load_image  # noqa: E402
from .sources import IMAGE_EXTENSIONS, collect  # noqa: E402

__all__ = ["SkipItem", "load_image", "collect", "IMAGE_EXTENSIONS"]
