"""Tests that need the shared data sets fail under CI when the data is missing (issue 17, item 7)."""

from __future__ import annotations

import pytest
from conftest import dataset


def test_missing_dataset_fails_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no-such-set.tar.gz not available.*CI is set"):
        dataset("no-such-set")


def test_missing_dataset_skips_outside_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no-such-set.tar.gz not available"):
        dataset("no-such-set")
