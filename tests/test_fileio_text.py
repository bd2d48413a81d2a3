"""``fileio.write_text``: the atomic text writer behind ``write_json`` and the studio's exports."""

from __future__ import annotations

import os

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


def test_a_written_file_gets_the_permissions_a_plain_open_gives(tmp_path):
    """Not the 0600 of a temporary file: a run folder shared with a group stays readable."""
    write_text(tmp_path / "a.txt", "x")
    open(tmp_path / "b.txt", "w").close()
    mode = (tmp_path / "b.txt").stat().st_mode & 0o777
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == mode, oct(mode)  # 0644 under the usual umask 022


def test_write_text_names_the_path_it_cannot_write(tmp_path):
    (tmp_path / "a_file").write_text("x")
    target = tmp_path / "a_file" / "label_config.xml"  # its folder is a file
    with pytest.raises(OutputError, match="label_config.xml"):
        write_text(target, "<View/>\n")
    with pytest.raises(OutputError, match="choices.json"):
        write_json(tmp_path / "a_file" / "choices.json", [])


@pytest.mark.parametrize("name, text", [
    ("a\udc80.jpg", "a\\x80.jpg"),  # the lowest undecodable byte is \x80, as every other
    ("ends in \udcff", "ends in \\xff"),  # a name ENDING in an undecodable byte
    ("\udcfe", "\\xfe"),
    ("back\\slash\udce9", "back\\\\slash\\xe9"),
])
def test_undecodable_bytes_are_written_as_xNN_and_read_back(name, text):
    from mediacluster.fileio import path_from_text, path_to_text

    assert path_to_text(name) == text
    assert path_from_text(text) == name


def test_a_long_name_s_temporary_file_is_cut_between_characters(tmp_path):
    """A name over 100 bytes gives its temporary file the first 100 bytes of it, at most: cut
    between two characters, so the temporary name is UTF-8 text like the name (it was cut in the
    middle of an 'é', a name no listing or message shows as it is)."""
    import os

    from mediacluster.fileio import atomic_path

    name = "a" + "é" * 60 + ".json"  # the 100th byte is the first half of the 50th 'é'
    with atomic_path(tmp_path / name) as tmp:
        raw = os.fsencode(os.path.basename(tmp))
        raw.decode("utf-8")  # UnicodeDecodeError before
        assert raw.startswith(os.fsencode("." + "a" + "é" * 49 + "."))
        with open(tmp, "w") as f:
            f.write("{}")
    assert (tmp_path / name).read_text() == "{}"


def test_a_folder_where_the_file_goes_is_named_as_such(tmp_path):
    """EISDIR (a folder sits where the file is written) says so, as ``fileio.refusal`` reads it
    ("in the way": 409 in the web apps). Fails before: the message was the bare strerror."""
    (tmp_path / "summary.json").mkdir()
    with pytest.raises(OutputError, match=r"summary\.json.*a folder is where the file goes"):
        write_json(tmp_path / "summary.json", {})


def test_the_temporary_names_atomic_writes_use_are_recognised(tmp_path):
    """``is_temporary_name`` knows the names ``atomic_path`` gives its temporary files (what a
    killed writer leaves: the inbox clears them), long and non-ASCII ones included, and no
    stored file's or dotfile's name."""
    import tempfile

    from mediacluster.fileio import _temp_name, is_temporary_name

    for name, suffix in [("a.jpg", ".jpg"), ("é" * 120 + ".png", ".png"), ("cat", "")]:
        fd, tmp = tempfile.mkstemp(**_temp_name(name, suffix), dir=tmp_path)
        os.close(fd)
        assert is_temporary_name(os.path.basename(tmp)), tmp
    for name in ["a.jpg", "photo-1a2b3c4d.jpg", ".hidden", ".purging"]:
        assert not is_temporary_name(name), name
