"""The inbox's table rules (``mediacluster.inbox``) on a real inbox written by the service's
writer (``serve.inbox.Inbox``, real SQLite, real files): what ``take`` marks, what a person's
review leaves, what ``purge`` removes and refuses."""

from __future__ import annotations

import calendar
import time

import pytest

from mediacluster.errors import ParameterError
from mediacluster.inbox import CLUSTERED, FILES, REVIEWED, listing, mark, purge, summary, take


def _inbox(root, n: int):
    """An inbox of ``n`` distinct contents, kept as the service keeps uploads (``--keep all``)."""
    from mediacluster.serve.inbox import Inbox, KeepRule

    box = Inbox(root, KeepRule(frozenset({"all"})))
    box.offer("v0001", "assign", "image", [{"filename": f"u{i}.jpg", "cluster": 0, "status": "clustered"}
                                           for i in range(n)],
              datas=[f"content {i}".encode() for i in range(n)])
    box.close()
    return root


def test_a_run_takes_every_file_of_the_inbox_it_read_past_one_query_of_500(tmp_path):
    inbox = _inbox(tmp_path / "inbox", 501)
    files = sorted((inbox / FILES).iterdir())
    assert len(files) == 501
    assert take([str(p) for p in files], "run-1") == {str(inbox.resolve()): 501}
    assert summary(inbox)["contents"][CLUSTERED] == 501


def test_a_persons_review_leaves_what_a_run_took_and_purge_takes_this_seconds_uploads(tmp_path, monkeypatch):
    inbox = _inbox(tmp_path / "inbox", 3)
    first, second = [it["hash"] for it in listing(inbox, "all")][:2]
    take([str(inbox / FILES / p.name) for p in (inbox / FILES).iterdir() if first[:16] in p.name], "run-1")
    assert mark(inbox, [first, second], how=REVIEWED)["marked"] == 1  # the one no run took
    states = {it["hash"]: (it["state"], it["run"]) for it in listing(inbox, "all")}
    assert states[first] == (CLUSTERED, "run-1") and states[second] == (REVIEWED, None)
    for bad in (float("nan"), -1):
        with pytest.raises(ParameterError, match="retention"):
            purge(inbox, bad)
    # 0 days: every content to this second, those uploaded in this very second too (the clock
    # held at the uploads' second: times are whole seconds)
    last = max(it["last_seen"] for it in listing(inbox, "all"))
    now = calendar.timegm(time.strptime(last, "%Y-%m-%dT%H:%M:%SZ")) + 0.5
    with monkeypatch.context() as m:
        m.setattr(time, "time", lambda: now)
        got = purge(inbox, 0, states=(REVIEWED, CLUSTERED, "pending"))
    assert got["contents"] == 3 and listing(inbox, "all") == []
