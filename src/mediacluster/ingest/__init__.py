"""Finding items (folders, manifests, precomputed vectors) and decoding them safely."""

from __future__ import annotations


class SkipItem(Exception):
    """Raised by a loader for a file that cannot be used; the message is the reason shown.

    ``kind`` is a short stable code for the failure (``"empty"``, ``"truncated"``,
    ``"not_an_image"``, ``"image_too_large"``, ...) for programs; people read the message.
    ``lasting``: the file's own bytes are the cause, so the same content fails the same way on
    every run (the embedding cache remembers it and does not decode it again:
    ``EmbeddingStore.remember_failures``); by default true for the kinds in
    :data:`LASTING_KINDS`. Not lasting: a missing or unreadable file, not a regular file, and
    any failure of the machine rather than the file (out of memory: ``lasting=False``).
    """

    def __init__(self, reason: str, kind: str | None = None, lasting: bool | None = None):
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
        self.lasting = kind in LASTING_KINDS if lasting is None else bool(lasting)


#: failure kinds that come from a file's content (see ``SkipItem.lasting``)
LASTING_KINDS = frozenset({
    "empty", "file_too_large", "image_too_large", "not_an_image", "truncated", "corrupt", "unsupported",
    "not_audio", "no_samples", "too_long", "silent",
})


from .images import load_image  # noqa: E402
from .sources import (  # noqa: E402
    AUDIO_EXTENSIONS,
    IMAGE_EXTENSIONS,
    collect,
    detect_media,
    find_duplicates,
    join_files,
)

__all__ = ["SkipItem", "LASTING_KINDS", "load_image", "collect", "detect_media", "find_duplicates", "join_files", "IMAGE_EXTENSIONS",
           "AUDIO_EXTENSIONS"]
