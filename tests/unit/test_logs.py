"""Unexpected errors are logged by class and location, never by message."""

from __future__ import annotations

from worker.logs import frames


def _fail() -> None:
    raise KeyError("ada.lovelace@example.org")


def test_frames_name_where_without_the_message() -> None:
    try:
        _fail()
    except KeyError as exc:
        where = frames(exc)
    assert any("_fail" in frame for frame in where)
    assert not any("ada.lovelace" in frame for frame in where)
