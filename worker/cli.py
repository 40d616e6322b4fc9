"""The `userstore` command, and its one error boundary (`command_line`).

Every expected failure reaches `command_line` as an error of the tree in worker/errors.py (or a
click usage error) and leaves as one line on stderr and an exit code (worker/cli_errors.py); a
traceback only with --debug or USERSTORE_LOG_LEVEL=DEBUG.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn, TextIO, TypeVar

import click
from pydantic import TypeAdapter, ValidationError

from userstore.events import Event, InvalidEvent, Publisher, PublishError, parse_event
from userstore.events.fields import UserId

from . import logs
from .app import aws_clients, components, payload_sealer, queue_url
from .cli_errors import ExitCode, Failure, Where, failure, unexpected
from .cli_output import (
    dead_letter_table,
    error_classes,
    scheduled_sweep_lines,
    shard_lines,
    sweep_lines,
    unknown_error_classes,
)
from .embedded import embedded_moto
from .endpoints import check_endpoints
from .errors import (
    DeadLetter,
    ExtraNotInstalled,
    InvalidSetting,
    KeyNotFound,
    RetryLater,
    UserstoreError,
)
from .metrics import Metrics
from .provision import provision as provision_all
from .provision_report import ProvisionReport
from .runner import run_worker
from .search import verified_profile
from .settings import KeyMode, Settings, read_settings, variable

T = TypeVar("T")

LOG_FORMATS = ("auto", "console", "json")
_RESOURCE_FIELDS = (
    "table",
    "meta_table",
    "state_table",
    "queue",
    "dlq",
    "kms_key",
    "payload_kms_key",
    "storage_kms_key",
)


@dataclass
class Options:
    """The group's options, and where the command looked (for the boundary's message)."""

    debug: bool = False
    log_format: str = "auto"
    where: Where | None = None


def _options() -> Options:
    return click.get_current_context().ensure_object(Options)


def where(settings: Settings) -> Where:
    names = {getattr(settings, name): variable(name) for name in _RESOURCE_FIELDS}
    return Where(settings.aws_region, settings.aws_endpoint_url, names)


def _settings() -> Settings:
    settings = read_settings()
    check_endpoints(
        settings.aws_endpoint_url,
        os.environ,
        allow_insecure=settings.allow_insecure_endpoint,
    )
    _options().where = where(settings)
    return settings


def configure(level: str) -> None:
    """Logs on stderr: readable lines for a person at a terminal, JSON lines otherwise (and
    always for `run`, whose logs are collected), or as --log-format says."""
    ctx = click.get_current_context()
    chosen = ctx.ensure_object(Options).log_format
    logs.configure(level, human=human_logs(chosen, ctx.info_name or "", sys.stderr.isatty()))


def human_logs(log_format: str, command: str, terminal: bool) -> bool:
    """Readable log lines (else JSON lines): asked for, or `auto` on a terminal but for `run`."""
    return log_format == "console" or (log_format == "auto" and command != "run" and terminal)


@contextmanager
def _maybe_embedded(settings: Settings, embedded: bool) -> Iterator[Settings]:
    if not embedded:
        yield settings
        return
    try:
        import moto.server  # noqa: F401 - only to say what to install, before anything starts
    except ImportError:
        raise ExtraNotInstalled(
            "the embedded emulator needs moto, which is not installed: "
            "pip install 'userstore[embedded]'"
        ) from None
    with embedded_moto() as endpoint:
        click.echo(f"embedded AWS emulator at {endpoint}", err=True)
        _options().where = where(settings.model_copy(update={"aws_endpoint_url": endpoint}))
        yield settings.model_copy(update={"aws_endpoint_url": endpoint})


@click.group()
@click.version_option(package_name="userstore", prog_name="userstore")
@click.option(
    "--debug",
    is_flag=True,
    help="On failure, also print the traceback (as USERSTORE_LOG_LEVEL=DEBUG).",
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="auto",
    show_default=True,
    envvar="USERSTORE_LOG_FORMAT",
    help="Logs on stderr. auto: readable lines on a terminal, JSON lines otherwise; `run` "
    "always JSON lines.",
)
@click.pass_context
def main(ctx: click.Context, debug: bool, log_format: str) -> None:
    """userstore: user events from SQS to encrypted, signed DynamoDB records."""
    options = ctx.ensure_object(Options)
    options.debug, options.log_format = debug, log_format


def command_line(args: Sequence[str] | None = None) -> NoReturn:
    """The command line's one error boundary: every failure is one line and an exit code."""
    options = Options()
    try:
        code = main.main(args=args, prog_name="userstore", standalone_mode=False, obj=options)
    except (click.exceptions.Abort, KeyboardInterrupt):
        _exit(Failure(ExitCode.INTERRUPTED, "interrupted"))
    except click.UsageError as exc:
        _exit(_usage(exc))
    except click.ClickException as exc:
        known = exc.exit_code in ExitCode._value2member_map_
        _exit(Failure(ExitCode(exc.exit_code) if known else ExitCode.FAILED, exc.format_message()))
    except UserstoreError as exc:
        _show_traceback(options)
        _exit(failure(exc, options.where))
    except Exception as exc:  # a bug: one line, its traceback on request
        _show_traceback(options)
        _exit(unexpected(exc))
    sys.exit(code if isinstance(code, int) else 0)


def _usage(exc: click.UsageError) -> Failure:
    path = exc.ctx.command_path if exc.ctx else "userstore"
    return Failure(ExitCode.USAGE, f"{exc.format_message()} (see `{path} --help`)")


def _show_traceback(options: Options) -> None:
    if options.debug or os.environ.get("USERSTORE_LOG_LEVEL", "").upper() == "DEBUG":
        traceback.print_exc()


def _exit(done: Failure) -> NoReturn:
    click.echo(done.line(), err=True)
    sys.exit(done.code)


async def _provision(settings: Settings, report: ProvisionReport | None = None) -> None:
    async with aws_clients(settings) as clients:
        await provision_all(settings, clients.kms, clients.dynamodb, clients.sqs, report)


@main.command()
def provision() -> None:
    """Create the KMS keys and aliases, tables and queues; bring existing ones in line.

    Prints what it created, found as configured, and updated. Exit 8: a setting differs that
    provision can't change (each printed: resource, attribute, expected, found)."""
    settings = _settings()
    configure(settings.log_level)
    report = ProvisionReport()
    asyncio.run(_provision(settings, report))
    click.echo("\n".join(report.lines()))
    sys.exit(report.exit_code)


@main.command()
@click.option("--embedded", is_flag=True, help="Start an in-process moto server and provision it.")
def run(embedded: bool) -> None:
    """Run the worker until SIGTERM or SIGINT."""
    settings = _settings()
    configure(settings.log_level)
    # Until the worker installs its own handlers nothing is in flight: stopping is clean.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with _maybe_embedded(settings, embedded) as effective:

        async def main_() -> None:
            if embedded:
                await _provision(effective)
            await run_worker(effective, Metrics())

        try:
            asyncio.run(main_())
        except OSError as exc:
            if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
                raise
            # Only the probes' listener binds: the AWS clients' errors are translated.
            raise InvalidSetting(
                f"can't listen on {effective.metrics_host}:{effective.metrics_port} "
                f"({os.strerror(exc.errno or 0)}): set {variable('metrics_port')} to a free "
                f"port, or {variable('metrics_host')}"
            ) from None


def _read_events(stream: TextIO) -> list[Event]:
    """Every line parsed exactly as the worker will parse it; the first bad line stops it all."""
    events: list[Event] = []
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            events.append(parse_event(line))
        except InvalidEvent as exc:
            raise click.ClickException(f"nothing sent: line {number}: {exc.reason}") from None
    return events


@main.command()
@click.argument("file", type=click.File("r"), default="-")
@click.option(
    "--seal",
    is_flag=True,
    help="Seal each event's data under USERSTORE_PAYLOAD_KMS_KEY (kms:GenerateDataKey).",
)
def publish(file: TextIO, seal: bool) -> None:
    """Validate and send events given as JSON lines (standard input by default)."""
    settings = _settings()
    configure(settings.log_level)
    if file.isatty():
        click.echo(
            "userstore: reading events as JSON lines until end of input (Ctrl-D); "
            "nothing is sent before",
            err=True,
        )
    events = _read_events(file)

    async def send() -> int:
        async with aws_clients(settings) as clients:
            url = await queue_url(clients.sqs, settings.queue, settings)
            sealer = await payload_sealer(settings) if seal else None
            result = await Publisher(clients.sqs, url, sealer=sealer).publish(events)
            return result.sent

    try:
        sent = asyncio.run(send())
    except PublishError as exc:
        # Some batches went out: say which events did not, so the publisher can resend them.
        failed = ", ".join(exc.failed_event_ids)
        raise click.ClickException(f"sent {exc.result.sent}; not sent: {failed}") from None
    click.echo(f"sent {sent} events")


async def read_profile(settings: Settings, user_id: str) -> dict[str, Any]:
    """The decrypted, verified profile; UserNotFound or RecordTampered otherwise."""
    async with components(settings) as parts:
        return await verified_profile(parts, user_id)


_USER_ID: TypeAdapter[str] = TypeAdapter(UserId)


def _user_id(_: click.Context, param: click.Parameter, value: str) -> str:
    """The event contract's rule for a user id, so a mistake is a usage error, not AWS's."""
    try:
        return _USER_ID.validate_python(value)
    except ValidationError as exc:
        raise click.BadParameter(exc.errors()[0]["msg"], param=param) from None


@main.command()
@click.argument("user_id", callback=_user_id)
def get(user_id: str) -> None:
    """Print a user's decrypted profile as JSON.

    Exit 1: no such user (or deleted); 6: the record failed verification and was not read."""
    settings = _settings()
    configure(settings.log_level)
    current = asyncio.run(read_profile(settings, user_id))
    click.echo(json.dumps(current, indent=2, sort_keys=True, ensure_ascii=False))


@main.command()
@click.option("--users", default=80, show_default=True, help="How many sample users.")
@click.option("--seed", default=7, show_default=True, help="Random seed for the sample traffic.")
def demo(users: int, seed: int) -> None:
    """Embedded emulator, sample traffic, the worker until the queue drains, then a report."""
    from .demo import run_demo

    settings = _settings().model_copy(update={"log_level": "ERROR"})
    configure(settings.log_level)
    with _maybe_embedded(settings, True) as effective:
        asyncio.run(run_demo(effective, users=users, seed=seed))


@main.command()
@click.option(
    "--to",
    "to",
    help="kms mode: key id, ARN or alias. cached mode: `new` or a version (a new material "
    "version), or a KMS key (the versions' wrapping key).",
)
@click.option("--index-key", is_flag=True, help="Rotate the blind-index key instead.")
@click.option("--payload-key", help="Point USERSTORE_PAYLOAD_KMS_KEY's alias at this key.")
def rotate(to: str | None, index_key: bool, payload_key: str | None) -> None:
    """Make a new key active. Then `userstore rotation status` says what still needs the old
    one; the re-encryption job (or `userstore sweep`) moves it."""
    from .rotation import rotate_index_key, rotate_key, rotate_payload_key

    if sum((bool(to), index_key, bool(payload_key))) != 1:
        raise click.UsageError("give exactly one of --to KEY, --index-key and --payload-key KEY")
    settings = _settings()
    configure(settings.log_level)
    material = to is not None and (to == "new" or to.isdigit())
    if material and settings.key_mode is KeyMode.KMS:
        raise click.BadParameter(
            f"{to!r} names a material version, which only {variable('key_mode')}=cached has; "
            "in kms mode give a KMS key id, key ARN or alias/NAME",
            param_hint="--to",
        )

    async def go() -> str:
        async with components(settings) as parts:
            if index_key:
                return f"blind-index key version {await rotate_index_key(parts)} is active"
            if payload_key:
                await _existing_key(parts, payload_key, "--payload-key", settings.aws_region)
                return f"payload key: {await rotate_payload_key(parts, payload_key)}"
            assert to is not None
            if not material:
                await _existing_key(parts, to, "--to", settings.aws_region)
            return f"active key: {await rotate_key(parts, to)}"

    click.echo(asyncio.run(go()))


async def _existing_key(parts: Any, key: str, option: str, region: str) -> None:
    """A key the operator named that does not exist is their mistake, not a missing provision."""
    try:
        await parts.keys.resolve(key)
    except KeyNotFound:
        raise click.BadParameter(
            f"no KMS key or alias {key!r} in {region} (give a key id, key ARN or alias/NAME)",
            param_hint=option,
        ) from None


@main.group()
def rotation() -> None:
    """Where records stand with respect to key rotation."""


@rotation.command("status")
def rotation_status() -> None:
    """Every ciphertext userstore holds per key, whether old keys can be retired, the stream."""
    from .inventory import describe, inventory, stream_progress

    settings = _settings()
    configure(settings.log_level)

    async def go() -> str:
        async with components(settings) as parts:
            inv = await inventory(parts)
            shards = await stream_progress(parts)
        return "\n".join(describe(inv) + shard_lines(shards, datetime.now(UTC)))

    click.echo(asyncio.run(go()))


@rotation.command("retire-index-key")
@click.argument("version", type=int)
def rotation_retire_index_key(version: int) -> None:
    """Drop a blind-index key version that no record uses any more."""
    from .inventory import inventory
    from .rotation import retire_index_version

    settings = _settings()
    configure(settings.log_level)

    async def go() -> str:
        async with components(settings) as parts:
            inv = await inventory(parts)
            in_use = inv.emails_by_index_version.get(version, 0)
            await retire_index_version(parts, version, in_use)
        return f"blind-index key version {version} retired"

    click.echo(asyncio.run(go()))


@main.command()
@click.option("--segments", default=4, show_default=True, help="Parallel scan segments.")
@click.option(
    "--rate", default=100.0, show_default=True, help="Re-encryptions per second, at most."
)
@click.option("--verify", is_flag=True, help="Also verify records already under the active key.")
@click.option(
    "--max-duration",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds: stop between pages after this long (exit 4; the next run resumes). "
    "For cron: does nothing unless a rotation left a job pending; exit 5 if another sweep runs.",
)
@click.option("--force", is_flag=True, help="With --max-duration: sweep even if no job is pending.")
def sweep(
    segments: int, rate: float, verify: bool, max_duration: float | None, force: bool
) -> None:
    """Re-encrypt every record not sealed under the active key. Resumes if interrupted."""
    from .cli_progress import sweep_progress
    from .control import CONTROL_IDS
    from .scheduled import finish_job
    from .sweep import run_sweep

    settings = _settings()
    configure(settings.log_level)
    if max_duration is not None:
        _scheduled_sweep(settings, segments, rate, verify, force, max_duration)
        return
    if force:
        raise click.UsageError("--force goes with --max-duration")

    async def go() -> bool:
        async with components(settings) as parts:
            count = await parts.store.approximate_count()
            estimate = None if count is None else max(0, count - len(CONTROL_IDS))
            with sweep_progress(estimate) as progress:
                report = await run_sweep(
                    parts,
                    segments=segments,
                    rate_per_s=rate,
                    on_scanned=progress.advance,
                    wait_for_lease_s=2 * settings.sweep_lease_s,
                    verify=verify,
                )
                if report.done:
                    progress.finish()
            if report.ok:
                await finish_job(parts, report.target.key_ref, report.target.index_version)
        for line in sweep_lines(report):
            click.echo(line)
        return report.ok

    if not asyncio.run(go()):
        sys.exit(1)


def _scheduled_sweep(
    settings: Settings, segments: int, rate: float, verify: bool, force: bool, max_duration: float
) -> None:
    from .scheduled import SweepStatus, run_scheduled_sweep

    async def go() -> Any:
        async with components(settings) as parts:
            return await run_scheduled_sweep(
                parts,
                max_duration_s=max_duration,
                segments=segments,
                rate_per_s=rate,
                verify=verify,
                force=force,
            )

    report = asyncio.run(go())
    if report.status is SweepStatus.BUSY:
        click.echo("userstore: another sweep for this target is running; nothing done", err=True)
        sys.exit(ExitCode.SWEEP_BUSY)
    if not report.pending:
        click.echo(f"no re-encryption job pending: records are under {report.key_ref}")
        return
    for line in scheduled_sweep_lines(report):
        click.echo(line)
    if report.job.failed:
        sys.exit(1)
    if report.status is SweepStatus.UNFINISHED:
        click.echo("userstore: stopped at --max-duration; run again to resume", err=True)
        sys.exit(ExitCode.SWEEP_UNFINISHED)


@main.command()
@click.option("--email", required=True, help="The address to look for.")
def find(email: str) -> None:
    """Print the ids of users whose email matches, through the blind index.

    A candidate whose record fails verification is skipped and named on stderr; the exit code is
    6 only when nothing verified matched (the forged record may have been the one wanted), 1 when
    nothing matched.
    """
    from .search import EmailMatches, match_email

    settings = _settings()
    configure(settings.log_level)

    async def go() -> EmailMatches:
        async with components(settings) as parts:
            return await match_email(parts, email)

    matches = asyncio.run(go())
    for user_id in matches.user_ids:
        click.echo(user_id)
    for user_id in matches.failed_verification:
        click.echo(f"userstore: skipped a record that failed verification: {user_id}", err=True)
    if matches.user_ids:
        return
    if matches.failed_verification:
        sys.exit(ExitCode.VERIFICATION_FAILED)
    click.echo("userstore: no user has that email", err=True)
    sys.exit(ExitCode.NOT_FOUND)


@main.group()
def dlq() -> None:
    """The dead-letter queue: what is in it (never the bodies), and sending it back."""


async def _dead_letter_queue(settings: Settings, clients: Any) -> Any:
    from .adapters.queue import open_queue
    from .dlq import DeadLetterAdmin

    attempts = settings.aws_max_attempts
    return DeadLetterAdmin(
        await open_queue(clients.sqs, settings.dlq, attempts),
        await open_queue(clients.sqs, settings.queue, attempts),
    )


@dlq.command("list")
@click.option(
    "--max", "max_messages", default=100, show_default=True, help="List at most this many."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per dead letter.")
def dlq_list(max_messages: int, as_json: bool) -> None:
    """Event id, type, error, reason, age and receive count of each dead letter.

    Messages are received with a short visibility timeout and released at once: nothing is
    deleted. On a FIFO queue only the first dead letter of each message group shows.
    """
    settings = _settings()
    configure(settings.log_level)

    async def go() -> Any:
        async with aws_clients(settings) as clients:
            queue = await _dead_letter_queue(settings, clients)
            return await queue.inspect(max_messages, time.time())

    listing = asyncio.run(go())
    if as_json:
        for dead in listing.dead_letters:
            click.echo(json.dumps(dead.as_dict(), sort_keys=True))
        return
    click.echo(
        f"{len(listing.dead_letters)} listed, about {listing.approximate_total} in the queue"
    )
    for line in dead_letter_table(listing.dead_letters):
        click.echo(line)


@dlq.command("redrive")
@click.option(
    "--max", "max_messages", default=1000, show_default=True, help="Move at most this many."
)
@click.option(
    "--error", "errors", multiple=True, help="Only dead letters of this error class (repeatable)."
)
@click.option("--dry-run", is_flag=True, help="Say what would move; move nothing.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message moved.")
def dlq_redrive(max_messages: int, errors: tuple[str, ...], dry_run: bool, as_json: bool) -> None:
    """Send dead letters back to the main queue (after a fix), then delete them from the DLQ.

    Safe to interrupt and re-run: each message is sent before it is deleted, and handling an
    event twice is harmless.
    """
    settings = _settings()
    configure(settings.log_level)

    async def go() -> Any:
        async with aws_clients(settings) as clients:
            queue = await _dead_letter_queue(settings, clients)
            return await queue.redrive(max_messages, errors=errors, dry_run=dry_run)

    report = asyncio.run(go())
    if as_json:
        for dead in report.moved:
            click.echo(json.dumps(dead.as_dict(), sort_keys=True))
    else:
        for d in report.moved:
            click.echo(f"{'would move' if dry_run else 'moved'} {d.event_id or d.message_id}")
    verb = "would move" if dry_run else "moved"
    unknown = unknown_error_classes(errors, _DEAD_LETTER_CLASSES, {d.error for d in report.moved})
    if unknown:
        raise click.BadParameter(
            f"no such error class: {', '.join(unknown)} (nothing matched it; userstore "
            f"dead-letters with {', '.join(_DEAD_LETTER_CLASSES)}, and a bug's class as "
            "`dlq list` shows it)",
            param_hint="--error",
        )
    click.echo(
        f"{verb} {len(report.moved)}; left (other error classes) {report.skipped}; "
        f"failed {report.failed}",
        err=as_json,
    )
    if report.failed:
        sys.exit(ExitCode.FAILED)


# The classes a dead letter can name: a DeadLetter, or a RetryLater that ran out of receives.
_DEAD_LETTER_CLASSES = error_classes(DeadLetter, RetryLater)
