"""The settlement policy, table-driven: every branch, standard and FIFO, every error class."""

from __future__ import annotations

import pytest

from userstore.worker import errors
from userstore.worker.settlement import Action, Decision, Group, Limits, settle, unsent

LIMITS = Limits(max_receive_count=5, retry_delay_max_s=60)
NONE, CLEAR, FAILED = Group.NONE, Group.CLEAR, Group.FAILED
A, R, D, H, L = (Action.ACKNOWLEDGE, Action.RETRY, Action.DEAD_LETTER, Action.HOLD, Action.LEAVE)
OPAQUE_SECRET = "jane@example.com"  # a bug's text: must never become a reason


def failure(cls: type[errors.UserstoreError]) -> errors.UserstoreError:
    if cls is errors.PayloadKeyUnavailable:
        return errors.PayloadKeyUnavailable("payload key not available", "e-1", "user.created")
    if cls is errors.InvalidMessage:
        return errors.InvalidMessage("data.email: not valid", event_id="e-2", event_type="user.x")
    return cls(f"{cls.__name__} reason")


DEAD = [
    errors.DeadLetter,
    errors.InvalidMessage,
    errors.EventOutOfRange,
    errors.InvalidResult,
    errors.EventIdReused,
    errors.RecordTampered,
    errors.ControlRolledBack,
]
RETRY = [
    errors.RetryLater,
    errors.AwsUnavailable,
    errors.ResourceMissing,
    errors.CredentialsMissing,
    errors.KeyUnavailable,
    errors.PayloadKeyUnavailable,
    errors.WriteConflict,
]
# Not meant for a message: if the handler raises one, it is a bug (retried, bounded).
ELSEWHERE = [
    errors.Misconfigured,
    errors.KeyNotFound,
    errors.StreamNotFound,
    errors.NotProvisioned,
    errors.InsecureEndpoint,
    errors.InvalidSweepInput,
    errors.InvalidSetting,
    errors.ExtraNotInstalled,
    errors.OperationRefused,
    errors.SweepBusy,
    errors.LeaseLost,
    errors.UserNotFound,
]


def test_the_table_names_every_error_of_the_tree() -> None:
    def tree(cls: type[errors.UserstoreError]) -> set[type[errors.UserstoreError]]:
        return {cls}.union(*(tree(sub) for sub in cls.__subclasses__()))

    assert tree(errors.UserstoreError) - {errors.UserstoreError} == {*DEAD, *RETRY, *ELSEWHERE}


@pytest.mark.parametrize(
    ("failed", "receives", "group", "action", "holds_group"),
    [
        # Success: acknowledged, on any receive, in any group state but a failed one.
        (None, 1, NONE, A, False),
        (None, 5, NONE, A, False),
        (None, 1, CLEAR, A, False),
        (None, 5, CLEAR, A, False),
        # An earlier message of its FIFO group failed: held, whatever this one would have done.
        (None, 1, FAILED, H, True),
        (errors.AwsUnavailable("x"), 5, FAILED, H, True),
        (errors.InvalidResult("x"), 1, FAILED, H, True),
        # Dead letters: at once, on any receive; a FIFO group goes on behind them.
        *[(failure(cls), 1, NONE, D, False) for cls in DEAD],
        *[(failure(cls), 1, CLEAR, D, False) for cls in DEAD],
        *[(failure(cls), 5, CLEAR, D, False) for cls in DEAD],
        # Transient: retried, holding a FIFO group; dead-lettered on the last allowed receive.
        *[(failure(cls), 1, NONE, R, False) for cls in RETRY],
        *[(failure(cls), 4, CLEAR, R, True) for cls in RETRY],
        *[(failure(cls), 5, NONE, D, False) for cls in RETRY],
        *[(failure(cls), 6, CLEAR, D, False) for cls in RETRY],
        # A bug, or an error of the tree no message should raise: retried as unexpected.
        (ValueError(OPAQUE_SECRET), 1, NONE, R, False),
        (ValueError(OPAQUE_SECRET), 2, CLEAR, R, True),
        (ValueError(OPAQUE_SECRET), 5, CLEAR, D, False),
        *[(failure(cls), 1, CLEAR, R, True) for cls in ELSEWHERE],
        *[(failure(cls), 5, NONE, D, False) for cls in ELSEWHERE],
    ],
)
def test_decision(
    failed: BaseException | None, receives: int, group: Group, action: Action, holds_group: bool
) -> None:
    decision = settle(failed, receives, LIMITS, group, jitter=0.0)
    assert decision.action is action
    assert decision.holds_group is holds_group
    if action in (A, H):
        assert (decision.error, decision.reason) == (None, None)
        return
    assert failed is not None
    assert decision.error == type(failed).__name__
    expected = failed.reason if isinstance(failed, errors.RetryLater | errors.DeadLetter) else None
    unexpected = not isinstance(failed, errors.RetryLater | errors.DeadLetter)
    assert decision.unexpected is unexpected
    reason = "unexpected error" if unexpected else expected
    if action is D and not isinstance(failed, errors.DeadLetter):
        reason = f"gave up after {receives} attempts: {reason}"
    assert decision.reason == reason
    assert OPAQUE_SECRET not in (decision.reason or "")


@pytest.mark.parametrize(
    ("receives", "jitter", "delay_s"),
    [
        (1, 0.0, 1),  # backoff 2: between 1 and 2
        (1, 0.99, 2),
        (1, 1.0, 2),
        (3, 0.0, 4),  # backoff 8: between 4 and 8
        (3, 0.5, 6),
        (3, 1.0, 8),
        (9, 0.0, 30),  # backoff capped at 60
        (9, 1.0, 60),
    ],
)
def test_retry_delay_doubles_with_each_receive_jittered_and_capped(
    receives: int, jitter: float, delay_s: int
) -> None:
    limits = Limits(max_receive_count=10, retry_delay_max_s=60)
    decision = settle(errors.AwsUnavailable("x"), receives, limits, jitter=jitter)
    assert decision == Decision(Action.RETRY, "AwsUnavailable", "x", delay_s)


def test_no_retry_delay_when_the_limit_is_zero() -> None:
    decision = settle(errors.AwsUnavailable("x"), 1, Limits(5, retry_delay_max_s=0))
    assert (decision.action, decision.delay_s) == (Action.RETRY, 0)


@pytest.mark.parametrize(
    ("failed", "event"),
    [
        (failure(errors.InvalidMessage), ("e-2", "user.x")),
        (failure(errors.PayloadKeyUnavailable), ("e-1", "user.created")),
        (errors.InvalidMessage("body is not valid JSON"), (None, None)),
        (errors.InvalidResult("x"), (None, None)),  # the loop knows the parsed event's ids
    ],
)
def test_a_message_that_did_not_parse_keeps_its_event_id_and_type(
    failed: errors.UserstoreError, event: tuple[str | None, str | None]
) -> None:
    for receives in (1, 5):
        decision = settle(failed, receives, LIMITS)
        assert (decision.event_id, decision.event_type) == event


@pytest.mark.parametrize(("group", "holds"), [(NONE, False), (CLEAR, True)])
def test_a_dead_letter_that_could_not_be_sent_is_left_to_sqs_and_holds_its_group(
    group: Group, holds: bool
) -> None:
    for failed, receives in ((errors.InvalidResult("x"), 1), (errors.AwsUnavailable("x"), 5)):
        decision = settle(failed, receives, LIMITS, group)
        assert decision.action is Action.DEAD_LETTER and not decision.holds_group
        left = unsent(decision)
        assert left.action is Action.LEAVE
        assert left.holds_group is holds
        assert (left.error, left.reason) == (decision.error, decision.reason)
