"""Log level precedence: admin override > a filter's log_level > edgegw's level."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgegw.observe import loglevels


@pytest.fixture(autouse=True)
def restore() -> Iterator[None]:
    yield
    loglevels.set_overrides({})
    loglevels.configure_filter("t-lv", "")
    loglevels.configure_root("info")


def test_precedence() -> None:
    loglevels.configure_root("warn")
    log = loglevels.configure_filter("t-lv", "")
    assert log.getEffectiveLevel() == logging.WARNING  # inherits edgegw's
    loglevels.configure_filter("t-lv", "error")
    assert log.getEffectiveLevel() == logging.ERROR
    loglevels.set_overrides({"edgegw.filter.t-lv": "trace", "edgegw": "off"})
    assert log.isEnabledFor(5) and not logging.getLogger("edgegw.app").isEnabledFor(50)
    loglevels.set_overrides({})  # dropped: back to the config and the command line
    assert log.getEffectiveLevel() == logging.ERROR
    assert logging.getLogger("edgegw.app").getEffectiveLevel() == logging.WARNING


def test_overrides_file_merges_and_drops(tmp_path: Path) -> None:
    assert loglevels.read_overrides(tmp_path) == {}
    loglevels.write_overrides(tmp_path, {"edgegw.filter.a": "debug", "edgegw": "warn"})
    merged = loglevels.write_overrides(tmp_path, {"edgegw": ""})
    assert merged == loglevels.read_overrides(tmp_path) == {"edgegw.filter.a": "debug"}


@pytest.mark.parametrize(
    "doc",
    [[], {}, {"root": "debug"}, {"edgegwx": "debug"}, {"edgegw.filter.a": "loud"}, {"edgegw": 3}],
)
def test_invalid_admin_documents(doc: object) -> None:
    with pytest.raises(ValueError):
        loglevels.validate(doc)
