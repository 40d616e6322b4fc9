"""What a `userstore` command says and exits with when it fails (pure).

One line on stderr saying what is wrong and what to do, and one exit code per kind of failure,
decided by the error's place in the tree (worker/errors.py), never by its text. The README's
"Exit codes" table lists the same codes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum

from .errors import (
    CredentialsMissing,
    KeyNotFound,
    Misconfigured,
    NotProvisioned,
    OperationRefused,
    RecordTampered,
    ResourceMissing,
    RetryLater,
    StreamNotFound,
    SweepBusy,
    UserNotFound,
    UserstoreError,
)


class ExitCode(IntEnum):
    OK = 0
    # get, find: nothing matched. sweep, publish, dlq redrive: some records or messages failed.
    NOT_FOUND = 1
    FAILED = 1
    USAGE = 2  # invalid usage or configuration: fix the command line or the setting
    AWS_UNAVAILABLE = 3  # still failing after the bounded retries: try again later
    SWEEP_UNFINISHED = 4  # sweep --max-duration stopped at its limit: run it again to resume
    SWEEP_BUSY = 5  # another sweep of the same job holds the lease: nothing done
    VERIFICATION_FAILED = 6  # a record failed verification: refused, left as evidence
    NOT_PROVISIONED = 7  # a key, table or queue the settings name does not exist
    PROVISION_DIFFERS = 8  # provision: a setting differs that it can't change (each printed)
    INTERNAL = 70  # a bug: run again with --debug for the traceback, and report it
    INTERRUPTED = 130  # Ctrl-C


@dataclass(frozen=True)
class Where:
    """Where the command looked: to name the region, the endpoint and the variables."""

    region: str
    endpoint: str | None = None
    # a configured resource name -> the environment variable it came from
    variables: Mapping[str, str] = field(default_factory=dict)

    def place(self) -> str:
        endpoint = f", endpoint {self.endpoint}" if self.endpoint else ""
        return f"region {self.region}{endpoint}"


@dataclass(frozen=True)
class Failure:
    code: ExitCode
    message: str

    def line(self) -> str:
        """The one line printed: never more, whatever the message holds."""
        return "userstore: " + " ".join(self.message.split())


PROVISION = "run `userstore provision`"
CREDENTIALS = (
    "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE "
    "(any dummy pair for a local emulator)"
)


def failure(exc: UserstoreError, where: Where | None = None) -> Failure:
    """The line and exit code for an error that reached the command's boundary."""
    place = f" ({where.place()})" if where else ""
    if isinstance(exc, UserNotFound):
        return Failure(ExitCode.NOT_FOUND, exc.reason)
    if isinstance(exc, RecordTampered):
        return Failure(
            ExitCode.VERIFICATION_FAILED,
            "a record failed verification and was not used; it is left as it is, as evidence "
            "(see docs/threat-model.md)",
        )
    if isinstance(exc, SweepBusy):
        return Failure(ExitCode.SWEEP_BUSY, f"{exc.reason}; nothing done")
    if isinstance(exc, CredentialsMissing):
        return Failure(ExitCode.USAGE, CREDENTIALS)
    if isinstance(exc, ResourceMissing | KeyNotFound):
        return _missing(exc, where, place)
    if isinstance(exc, NotProvisioned | StreamNotFound):
        return Failure(ExitCode.NOT_PROVISIONED, f"{exc.reason}{place}")
    if isinstance(exc, Misconfigured | OperationRefused):
        return Failure(ExitCode.USAGE, exc.reason)
    if isinstance(exc, RetryLater):
        # The reason names the endpoint when it could not be reached.
        region = f" in {where.region}" if where else ""
        return Failure(
            ExitCode.AWS_UNAVAILABLE,
            f"AWS unavailable{region}: {exc.reason}; still failing after retries, try again later",
        )
    return Failure(ExitCode.FAILED, exc.reason)


def _missing(exc: ResourceMissing | KeyNotFound, where: Where | None, place: str) -> Failure:
    if isinstance(exc, KeyNotFound):
        what = "KMS key or alias" if exc.name is None else f"KMS key or alias {exc.name!r}"
        name = exc.name
    else:
        what = f"{exc.kind} {exc.name!r}" if exc.name else f"a {exc.kind}"
        name = exc.name
    variable = where.variables.get(name) if where and name else None
    check = f", or check {variable}" if variable else ""
    return Failure(ExitCode.NOT_PROVISIONED, f"{what} does not exist{place}: {PROVISION}{check}")


def unexpected(exc: BaseException) -> Failure:
    """A bug: named by class only (its text may hold a value)."""
    return Failure(
        ExitCode.INTERNAL,
        f"unexpected error ({type(exc).__name__}); run again with --debug to see the "
        "traceback, and please report it",
    )
