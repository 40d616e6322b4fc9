"""The exception tree, and what each error means for the message being handled.

    UserstoreError
    ├── DeadLetter                can never succeed: dead-letter it now, with the reason
    │   ├── InvalidMessage        the body is not a valid event (translates events.InvalidEvent)
    │   ├── EventOutOfRange       occurred_at is older than the tombstone horizon, or in the future
    │   ├── InvalidResult         the merged profile would be invalid (e.g. too many attributes)
    │   ├── EventIdReused         the event id was applied before with different content
    │   └── RecordTampered        the stored record fails verification or has an impossible stamp
    │       └── ControlRolledBack an older control record was put back (replay)
    ├── RetryLater                transient: leave it to SQS (visibility timeout, then redrive)
    │   ├── AwsUnavailable        throttling, 5xx, timeouts, dropped connections
    │   │   ├── ResourceMissing   a table or queue named in the settings does not exist (yet)
    │   │   └── CredentialsMissing  no AWS credentials were found
    │   ├── KeyUnavailable        KMS refused or could not be reached
    │   │   └── PayloadKeyUnavailable  a sealed event can't be opened yet
    │   └── WriteConflict         the conditional write lost too many races in a row
    ├── Misconfigured             fix the setting or provision: retrying can't help
    │   ├── KeyNotFound           a configured KMS key or alias does not exist
    │   ├── StreamNotFound        the stream ARN names no stream
    │   ├── NotProvisioned        the table has no control records
    │   ├── InsecureEndpoint      a plain-HTTP endpoint off loopback
    │   ├── InvalidSweepInput     the sweep schedule's Input is not a SweepInput
    │   ├── InvalidSetting        an environment variable's value is not valid
    │   └── ExtraNotInstalled     a command needs an optional extra (`userstore[embedded]`)
    ├── OperationRefused          an operator command refused what it was asked; nothing changed
    ├── SweepBusy                 another sweep for the same target holds the lease
    ├── LeaseLost                 another replica owns a shard's lease now (internal)
    └── UserNotFound              a read found no such user (operator commands)

The consumer and the Lambda batch only ever see this tree: the intake translates the event
contract's `InvalidEvent` into `InvalidMessage`, and the adapters translate botocore's errors.
Nothing raises the root itself. Every message string is safe to log: it names event ids, types
and fields, never a value.
"""

from __future__ import annotations


class UserstoreError(Exception):
    """Root of every error userstore raises on purpose (never raised itself)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DeadLetter(UserstoreError):
    """Retrying can't help: the message goes to the dead-letter queue with `reason`."""


class InvalidMessage(DeadLetter):
    """The message body is not a valid event.

    `event_id` and `event_type` are set only when the body carried them, valid: a dead letter
    then still says which event it was.
    """

    def __init__(
        self, reason: str, *, event_id: str | None = None, event_type: str | None = None
    ) -> None:
        super().__init__(reason)
        self.event_id = event_id
        self.event_type = event_type


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


class ResourceMissing(AwsUnavailable):
    """AWS says a table or queue the settings name does not exist.

    Retried like any unavailability by the worker (a table AWS is still creating answers the
    same), but an operator command reports it as not provisioned, naming `kind` and `name`.
    """

    def __init__(self, reason: str, *, kind: str = "resource", name: str = "") -> None:
        super().__init__(reason)
        self.kind = kind
        self.name = name


class CredentialsMissing(AwsUnavailable):
    """No AWS credentials were found (retried: a role's credentials may still arrive)."""


class KeyUnavailable(RetryLater):
    """KMS refused or could not be reached; records can't be sealed or opened for now."""


class PayloadKeyUnavailable(KeyUnavailable):
    """A sealed event that cannot be opened yet (KMS unreachable, throttling, key missing)."""

    def __init__(self, reason: str, event_id: str, event_type: str | None = None) -> None:
        super().__init__(reason)
        self.event_id = event_id
        self.event_type = event_type


class WriteConflict(RetryLater):
    """Concurrent writers kept winning the conditional write."""


class Misconfigured(UserstoreError):
    """A setting or the provisioned resources are wrong: fix them, retrying can't help."""


class KeyNotFound(Misconfigured):
    """A configured KMS key or alias does not exist: provision, or fix the setting.

    `name`: the key id, ARN or alias asked for, when known.
    """

    def __init__(self, reason: str, *, name: str | None = None) -> None:
        super().__init__(reason)
        self.name = name


class StreamNotFound(Misconfigured):
    """The stream ARN names no stream (a configuration error: retrying can't help)."""


class NotProvisioned(Misconfigured):
    """The table has no control records: run `userstore provision`."""


class InsecureEndpoint(Misconfigured):
    """A configured endpoint would send requests in plaintext over a network."""


class InvalidSweepInput(Misconfigured):
    """The schedule's Input is not a SweepInput (a configuration error: fix the schedule)."""


class InvalidSetting(Misconfigured):
    """An environment variable's value is not valid; the reason names the variable."""


class ExtraNotInstalled(Misconfigured):
    """The command needs an optional extra that is not installed; the reason says which."""


class OperationRefused(UserstoreError):
    """An operator command can't do what it was asked (as configured): nothing was changed."""


class SweepBusy(UserstoreError):
    """Another sweep for the same target holds the lease."""


class LeaseLost(UserstoreError):
    """Another replica owns this shard's lease now: stop reading it, don't checkpoint."""


class UserNotFound(UserstoreError):
    """No record for this user, or only a tombstone."""
