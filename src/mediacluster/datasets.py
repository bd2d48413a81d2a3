"""Extract labelled slices of ``NAME/SPLIT/CLASS/FILE`` tar archives (tests and benchmarks).

The shared labelled sets (CIFAR-10, Imagenette, MNIST, spoken digits) come as gzipped tars laid
out as ``NAME/SPLIT/CLASS/FILE``. ``extract_slice`` pulls a reproducible subset into a folder
in one pass over the archive, keeping the class folders, so ``--labels-from-folders`` works.
"""

from __future__ import annotations

import os
import tarfile
from collections import defaultdict
from pathlib import Path

import numpy as np


def list_members(archive: str | os.PathLike) -> dict[str, list[str]]:
    """class name -> sorted member names of regular files (class = parent folder name)."""
    by_class: dict[str, list[str]] = defaultdict(list)
    with tarfile.open(archive) as tf:
        for m in tf:
            if m.isfile() and not os.path.basename(m.name).startswith("."):
                by_class[Path(m.name).parent.name].append(m.name)
    return {k: sorted(v) for k, v in sorted(by_class.items())}


def extract_slice(
    archive: str | os.PathLike,
    dest: str | os.PathLike,
    classes: list[str] | None = None,
    per_class: int | None = None,
    seed: int = 0,
    flat: bool = False,
) -> list[tuple[str, str]]:
    """Extract up to ``per_class`` files of each of ``classes`` (all if None) into ``dest``.

    Returns ``[(path, class), ...]``. Files land in ``dest/CLASS/FILE`` (or ``dest/FILE`` with
    ``flat``). The choice of files is a seeded random sample, the same for the same arguments.
    """
    members = list_members(archive)
    if classes is not None:
        missing = set(classes) - set(members)
        if missing:
            raise ValueError(f"{archive}: no classes {sorted(missing)}; has {sorted(members)}")
        members = {c: members[c] for c in classes}
    rng = np.random.default_rng(seed)
    wanted: dict[str, str] = {}
    for c, names in members.items():
        pick = names if per_class is None or per_class >= len(names) else [
            names[i] for i in sorted(rng.choice(len(names), per_class, replace=False))]
        for name in pick:
            wanted[name] = c
    dest = Path(dest)
    out: list[tuple[str, str]] = []
    with tarfile.open(archive) as tf:
        for m in tf:
            c = wanted.get(m.name)
            if c is None:
                continue
            target = dest / (os.path.basename(m.name) if flat else Path(c) / os.path.basename(m.name))
            target.parent.mkdir(parents=True, exist_ok=True)
            f = tf.extractfile(m)
            target.write_bytes(f.read())
            out.append((str(target), c))
    out.sort()
    return out
