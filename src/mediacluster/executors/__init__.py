"""Where the per-item work of a run happens: in this process (``local``) or on a Ray cluster.

Two jobs are spread this way, because they are the ones whose cost grows with every item and
that need nothing but the item (and a fitted model) to do: **embedding** files and **assigning**
vectors with a fitted pipeline. Fitting stays on the driver (it sees a sample, see
``mediacluster.scale``). Both executors give the same answers; the run folder is written by the
driver in both cases, so a Ray run's files are those a local run writes.

``get_executor("local")`` never imports Ray; ``get_executor("ray", address=...)`` imports it
(an optional extra: ``pip install "mediacluster[ray]"``) and says so when it is missing.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..errors import ParameterError
from ..scale import assign_batch

EXECUTORS = ("local", "ray")


class LocalExecutor:
    """Everything in this process (embedding threads as ``mediacluster.embed`` sets them)."""

    name = "local"

    def embed(self, collection, encoder, cache_dir=None, batch_size: int = 16, workers: int | None = None,
              progress: bool = True, **_):
        from ..embed import embed_collection

        return embed_collection(collection, encoder=encoder, cache_dir=cache_dir, batch_size=batch_size,
                                workers=workers, progress=progress)

    def assign(self, vectors_path: str, n: int, pipe, sample: np.ndarray, ref_xy=None,
               batch_rows: int = 65_536, progress: bool = True, shards=None
               ) -> Iterator[tuple[int, dict]]:
        """``(first_row, answer)`` per batch of the ``.npy`` at ``vectors_path``, in row order."""
        from ..ingest.stream import NpyVectors
        from ..progress import progress_bar

        src = NpyVectors(vectors_path)
        with progress_bar(n, "assign", "item", disable=not progress) as bar:
            for start, X in src.batches(batch_rows):
                yield start, assign_batch(pipe, sample, start, X, ref_xy)
                bar.update(len(X))

    def info(self) -> dict:
        return {"name": self.name}

    def close(self) -> None:
        pass


def get_executor(name: str = "local", address: str | None = None, workers: int | None = None):
    """The executor called ``name`` (``local`` or ``ray``)."""
    if name == "local":
        if address:
            raise ParameterError("--ray-address needs --executor ray", "ray_address")
        if workers is not None:  # taken and never used before
            raise ParameterError("--ray-workers needs --executor ray (local embedding threads: --workers)",
                                 "ray_workers")
        return LocalExecutor()
    if name == "ray":
        from .ray_executor import RayExecutor  # Ray itself is imported there, lazily

        return RayExecutor(address=address, workers=workers)
    raise ParameterError(f"executor must be one of {EXECUTORS}, not {name!r}", "executor")
