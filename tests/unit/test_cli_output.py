"""What the commands print: the dead-letter table, unknown error classes, the sweep's bar."""

from __future__ import annotations

import io
import sys

from userstore.worker.cli_output import dead_letter_table, error_classes, unknown_error_classes
from userstore.worker.cli_progress import sweep_progress
from userstore.worker.dlq import ListedDeadLetter
from userstore.worker.errors import DeadLetter, RetryLater


def dead(event_id: str | None, error: str, reason: str, receives: int | None) -> ListedDeadLetter:
    return ListedDeadLetter("m", event_id, "user.updated", error, reason, 4000.0, receives, None)


def test_dead_letter_columns_are_aligned() -> None:
    lines = dead_letter_table(
        [
            dead("evt-1", "InvalidMessage", "data.email: not an email", 1),
            dead("evt-with-a-much-longer-id", "EventIdReused", "reused", None),
            dead(None, "RecordTampered", "signature", 12),
        ]
    )
    assert len(lines) == 4 and lines[0].startswith("EVENT ID")
    starts = {
        line.index(token)
        for line, token in zip(lines, ["TYPE", *["user.updated"] * 3], strict=True)
    }
    assert len(starts) == 1
    reasons = {
        line.index(token)
        for line, token in zip(lines, ["REASON", "data.email", "reused", "signature"], strict=True)
    }
    assert len(reasons) == 1
    assert dead_letter_table([]) == []


def test_an_error_class_nobody_dead_letters_with_is_unknown() -> None:
    known = error_classes(DeadLetter, RetryLater)
    assert "InvalidMessage" in known and "AwsUnavailable" in known
    assert "DeadLetter" not in known  # the roots are never raised
    assert unknown_error_classes(["NoSuchClass", "InvalidMessage"], known, set()) == ["NoSuchClass"]
    # a bug's class, as `dlq list` shows it, is accepted once a dead letter had it
    assert unknown_error_classes(["KeyError"], known, {"KeyError"}) == []


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_sweep_bar_ends_at_100_percent_and_logs_go_above_it() -> None:
    screen = Terminal()
    with sweep_progress(10, screen) as progress:  # control items counted: fewer are visited
        progress.advance(4)
        sys.stderr.write('{"event": "sweep.record_failed"}')
        sys.stderr.write("\n")
        progress.advance(4)
        progress.finish()
    shown = screen.getvalue()
    assert "total estimated" in shown
    # each log line stands alone: after the bar is cleared, before it is drawn again
    rows = [row for part in shown.split("\n") for row in part.split("\r")]
    assert '{"event": "sweep.record_failed"}' in rows
    last = shown.rsplit("\r", 1)[-1]
    assert "100%" in last and "8/8" in last, last
    assert not isinstance(sys.stderr, Terminal)


def test_the_sweep_bar_never_passes_100_percent() -> None:
    screen = Terminal()
    with sweep_progress(5, screen) as progress:  # ItemCount is refreshed every few hours
        progress.advance(4)
        progress.advance(4)
        assert progress.counted == (8, 8)


def test_no_bar_off_a_terminal() -> None:
    piped = io.StringIO()
    with sweep_progress(10, piped) as progress:
        progress.advance(3)
        progress.finish()
    assert piped.getvalue() == ""


def test_a_sweep_with_nothing_to_visit_ends_at_100_percent() -> None:
    screen = Terminal()
    with sweep_progress(0, screen) as progress:
        progress.finish()
    assert "100%, no records" in screen.getvalue().rsplit("\r", 1)[-1]
