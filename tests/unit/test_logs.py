"""Unexpected errors are logged by class and location, never by message."""

from __future__ import annotations

import io
import json
import sys

import pytest
import structlog

from userstore.worker.logs import configure, frames, get_logger


def _fail() -> None:
    raise KeyError("ada.lovelace@example.org")


def test_frames_name_where_without_the_message() -> None:
    try:
        _fail()
    except KeyError as exc:
        where = frames(exc)
    assert any("_fail" in frame for frame in where)
    assert not any("ada.lovelace" in frame for frame in where)


def test_a_cached_logger_follows_stderr_when_it_is_redirected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    saved = structlog.get_config()
    try:
        configure("INFO")
        log = get_logger("userstore.test")
        first, second = io.StringIO(), io.StringIO()
        monkeypatch.setattr(sys, "stderr", first)
        log.info("one")  # cached from here on
        monkeypatch.setattr(sys, "stderr", second)
        log.info("two")
    finally:
        structlog.configure(**saved)
    assert json.loads(first.getvalue())["event"] == "one"
    assert json.loads(second.getvalue())["event"] == "two"
