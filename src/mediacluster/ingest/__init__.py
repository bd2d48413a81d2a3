"""Finding items (folders, manifests, precomputed vectors) and decoding them safely."""

from __future__ import annotations


class SkipItem(Exception):
    """Raised by a loader for a file that cannot be used; the message is the reason shown.

    ``kind`` is a short stable code for the failure (``"empty"``, ``"truncated"``,
    ``"not_an_image"``, ``"image_too_large"``, ...) for programs; people read the message.
    """

    def __init__(self, reason: str, kind: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


from .images import load_image  # noqa: E402
from .sources import (  # noqa: E402
    AUDIO_EXTENSIONS,
    IMAGE_EXTENSIONS,
    collect,
    detect_media,
    find_duplicates,
    join_files,
)

__all__ = ["SkipItem", "load_image", "collect", "detect_media", "find_duplicates", "join_files", "IMAGE_EXTENSIONS",
           "AUDIO_EXTENSIONS"]
