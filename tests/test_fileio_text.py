"""``fileio.write_text``: the atomic text writer behind ``write_json`` and the studio's exports."""

from __future__ import annotations

import pytest

from mediacluster.errors import OutputError
from mediacluster.fileio import write_json, write_text


def test_write_text_replaces_whole_or_not_at_all(tmp_path):
    p = tmp_path / "README.txt"
    write_text(p, "first\n")
    write_text(p, "second\n")
    assert p.read_text(encoding="utf-8") == "second\n"
    # a failure while writing (a lone surrogate cannot be encoded as UTF-8) leaves the old file
    # whole and no temporary file beside it
    with pytest.raises(UnicodeEncodeError):
        write_text(p, "half written \udce9\n")
    assert p.read_text(encoding="utf-8") == "second\n"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["README.txt"]


def test_write_text_names_the_path_it_cannot_write(tmp_path):
    (tmp_path / "a_file").write_text("x")
    target = tmp_path / "a_file" / "label_config.xml"  # its folder is a file
    with pytest.raises(OutputError, match="label_config.xml"):
        write_text(target, "<View/>\n")
    with pytest.raises(OutputError, match="choices.json"):
        write_json(tmp_path / "a_file" / "choices.json", [])
