"""The exception tree, and what each error means for the message being handled.

    UserstoreError
    ├── DeadLetter            the message can never succeed: dead-letter it now, with the reason
    │   ├── InvalidMessage    the body is not a valid event (wraps events.InvalidEvent)
    │   ├── EventOutOfRange   occurred_at is older than the tombstone horizon, or in the future
    │   ├── InvalidResult     the merged profile would be invalid (e.g. too many attributes)
    │   ├── EventIdReused     the event id was applied before with different content
    │   └── RecordTampered    the stored record fails verification, or holds an impossible stamp
    │       └── ControlRolledBack  an older control record was put back (replay)
    ├── RetryLater            transient: leave the message to SQS (visibility timeout, then redrive)
    │   ├── AwsUnavailable    throttling, 5xx, timeouts, dropped connections
    │   ├── KeyUnavailable    KMS refused or could not be reached
    │   └── WriteConflict     the conditional write lost too many races in a row
    ├── KeyNotFound           a configured KMS key or alias does not exist (configuration)
    ├── StreamNotFound        the stream ARN names no stream (worker.streams; configuration)
    ├── LeaseLost             another replica owns a shard's lease now (worker.streams; internal)
    └── UserNotFound          a read found no such user (operator commands)

Every message string is safe to log: it names event ids, types and fields, never a value.
"""

from __future__ import annotations


class UserstoreError(Exception):
    """Root of every error userstore raises on purpose."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DeadLetter(UserstoreError):
    """Retrying can't help: the message goes to the dead-letter queue with `reason`."""


class InvalidMessage(DeadLetter):
    """The message body is not a valid event."""


class EventOutOfRange(DeadLetter):
    """The event's occurred_at is outside the window the store can order safely."""


class InvalidResult(DeadLetter):
    """Applying the event would leave an invalid profile."""


class EventIdReused(DeadLetter):
    """An event id already applied to the record came again with different content.

    Neither can win by delivery order: the publisher must send the change under a new id.
    """


class RecordTampered(DeadLetter):
    """The stored record failed verification; it is refused and left untouched as evidence."""


class ControlRolledBack(RecordTampered):
    """A control record older than one already seen: versions and revisions only move forward."""


class RetryLater(UserstoreError):
    """A transient failure: the message stays on the queue and is tried again."""


class AwsUnavailable(RetryLater):
    """An AWS call failed in a way that may succeed later."""


class KeyUnavailable(RetryLater):
    """KMS refused or could not be reached; records can't be sealed or opened for now."""


class WriteConflict(RetryLater):
    """Concurrent writers kept winning the conditional write."""


class KeyNotFound(UserstoreError):
    """A configured KMS key or alias does not exist: provision, or fix the setting."""


class UserNotFound(UserstoreError):
    """No record for this user, or only a tombstone."""
