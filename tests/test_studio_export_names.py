"""The studio's exports of names a person may give: names the studio takes must export."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from studio_helpers import make_run

from mediacluster.data import Embeddings


@pytest.fixture
def png_run(tmp_path) -> Path:
    """A run of 12 small PNGs in 3 clusters (random vectors around 3 centres)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "c").mkdir()
    paths = []
    for i in range(12):
        p = tmp_path / "c" / f"im{i:02d}.png"
        Image.fromarray((rng.random((8, 8, 3)) * 255).astype("uint8")).save(p)
        paths.append(str(p))
    centres = rng.standard_normal((3, 8)) * 5
    vecs = (centres[np.arange(12) % 3] + rng.standard_normal((12, 8))).astype("float32")
    emb = Embeddings(ids=paths, vectors=vecs, encoder="test", paths=paths, root=str(tmp_path / "c"))
    return make_run(emb, tmp_path / "run", save_model=False, k=3)


def test_a_long_name_of_emoji_exports_as_a_folder_the_file_system_takes(png_run):
    from mediacluster.studio.session import Studio

    st = Studio(png_run)
    try:
        name = "🐶" * 70  # 70 characters (the studio takes 200), 280 bytes in UTF-8: above NAME_MAX (255)
        st.edit("rename", {"cluster": 0, "name": name})
        for kind in ("folders", "classes"):
            out = Path(st.export(kind)["path"])
            dirs = [d for d in os.listdir(out) if (out / d).is_dir()]
            mine = [d for d in dirs if "🐶" in d]
            assert len(mine) == 1 and len(os.fsencode(mine[0])) <= 255, dirs
            assert len(os.listdir(out / mine[0])) == 4  # every item of the cluster
    finally:
        st.close()
