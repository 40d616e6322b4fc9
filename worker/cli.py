"""The `userstore` command."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TextIO, TypeVar

import click
from pydantic import ValidationError

from userstore.events import Event, InvalidEvent, Publisher, PublishError, parse_event

from .app import aws_clients, components, payload_sealer, queue_url
from .cli_output import dead_letter_line, scheduled_sweep_lines, shard_lines, sweep_lines
from .embedded import embedded_moto
from .endpoints import InsecureEndpoint, check_endpoints
from .errors import RecordTampered, UserNotFound, UserstoreError
from .logs import configure
from .metrics import Metrics
from .provision import provision as provision_all
from .provision_report import ProvisionReport
from .runner import run_worker
from .search import verified_profile
from .settings import Settings

T = TypeVar("T")


def _settings() -> Settings:
    try:
        settings = Settings()
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
        raise click.UsageError(f"invalid configuration: {fields}") from None
    try:
        check_endpoints(
            settings.aws_endpoint_url,
            os.environ,
            allow_insecure=settings.allow_insecure_endpoint,
        )
    except InsecureEndpoint as exc:
        raise click.UsageError(exc.reason) from None
    return settings


@contextmanager
def _maybe_embedded(settings: Settings, embedded: bool) -> Iterator[Settings]:
    if not embedded:
        yield settings
        return
    with embedded_moto() as endpoint:
        click.echo(f"embedded AWS emulator at {endpoint}", err=True)
        yield settings.model_copy(update={"aws_endpoint_url": endpoint})


@click.group()
@click.version_option(package_name="userstore", prog_name="userstore")
def main() -> None:
    """userstore: user events from SQS to encrypted, signed DynamoDB records."""


async def _provision(settings: Settings, report: ProvisionReport | None = None) -> None:
    async with aws_clients(settings) as clients:
        await provision_all(settings, clients.kms, clients.dynamodb, clients.sqs, report)


@main.command()
def provision() -> None:
    """Create the KMS keys and aliases, tables and queues; bring existing ones in line.

    Prints what it created, found as configured, and updated. Exit 6: a setting differs that
    provision can't change (each printed: resource, attribute, expected, found)."""
    settings = _settings()
    configure(settings.log_level)
    report = ProvisionReport()
    _run_or_exit(_provision(settings, report))
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

        _run_or_exit(main_())


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
    events = _read_events(file)

    async def send() -> int:
        async with aws_clients(settings) as clients:
            url = await queue_url(clients.sqs, settings.queue, settings)
            sealer = await payload_sealer(settings) if seal else None
            result = await Publisher(clients.sqs, url, sealer=sealer).publish(events)
            return result.sent

    try:
        sent = _run_or_exit(send())
    except PublishError as exc:
        # Some batches went out: say which events did not, so the publisher can resend them.
        failed = ", ".join(exc.failed_event_ids)
        raise click.ClickException(f"sent {exc.result.sent}; not sent: {failed}") from None
    click.echo(f"sent {sent} events")


async def read_profile(settings: Settings, user_id: str) -> dict[str, Any]:
    """The decrypted, verified profile; UserNotFound or RecordTampered otherwise."""
    async with components(settings) as parts:
        return await verified_profile(parts, user_id)


@main.command()
@click.argument("user_id")
def get(user_id: str) -> None:
    """Print a user's decrypted profile as JSON."""
    settings = _settings()
    configure(settings.log_level)
    try:
        current = asyncio.run(read_profile(settings, user_id))
    except UserNotFound as exc:
        click.echo(f"userstore: {exc.reason}", err=True)
        sys.exit(1)
    except RecordTampered:
        click.echo("userstore: the record failed verification; it was not read", err=True)
        sys.exit(2)
    except UserstoreError as exc:
        click.echo(f"userstore: {exc.reason}", err=True)
        sys.exit(3)
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

    async def go() -> str:
        async with components(settings) as parts:
            if index_key:
                return f"blind-index key version {await rotate_index_key(parts)} is active"
            if payload_key:
                return f"payload key: {await rotate_payload_key(parts, payload_key)}"
            assert to is not None
            return f"active key: {await rotate_key(parts, to)}"

    click.echo(_run_or_exit(go()))


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

    click.echo(_run_or_exit(go()))


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

    click.echo(_run_or_exit(go()))


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
    from tqdm import tqdm

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
            total = await parts.store.approximate_count()
            with tqdm(total=total, unit="record", file=sys.stderr, disable=None) as bar:
                report = await run_sweep(
                    parts,
                    segments=segments,
                    rate_per_s=rate,
                    on_scanned=bar.update,
                    wait_for_lease_s=2 * settings.sweep_lease_s,
                    verify=verify,
                )
            if report.ok:
                await finish_job(parts, report.target.key_ref, report.target.index_version)
        for line in sweep_lines(report):
            click.echo(line)
        return report.ok

    if not _run_or_exit(go()):
        sys.exit(1)


# `userstore sweep --max-duration` exit codes besides 0 (done) and 1 (records failed).
EXIT_SWEEP_UNFINISHED = 4
EXIT_SWEEP_BUSY = 5


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

    report = _run_or_exit(go())
    if report.status is SweepStatus.BUSY:
        click.echo("userstore: another sweep for this target is running; nothing done", err=True)
        sys.exit(EXIT_SWEEP_BUSY)
    if not report.pending:
        click.echo(f"no re-encryption job pending: records are under {report.key_ref}")
        return
    for line in scheduled_sweep_lines(report):
        click.echo(line)
    if report.job.failed:
        sys.exit(1)
    if report.status is SweepStatus.UNFINISHED:
        click.echo("userstore: stopped at --max-duration; run again to resume", err=True)
        sys.exit(EXIT_SWEEP_UNFINISHED)


@main.command()
@click.option("--email", required=True, help="The address to look for.")
def find(email: str) -> None:
    """Print the ids of users whose email matches, through the blind index.

    A candidate whose record fails verification is skipped and named on stderr; the exit code is
    2 only when nothing verified matched (the forged record may have been the one wanted).
    """
    from .search import EmailMatches, match_email

    settings = _settings()
    configure(settings.log_level)

    async def go() -> EmailMatches:
        async with components(settings) as parts:
            return await match_email(parts, email)

    matches = _run_or_exit(go())
    for user_id in matches.user_ids:
        click.echo(user_id)
    for user_id in matches.failed_verification:
        click.echo(f"userstore: skipped a record that failed verification: {user_id}", err=True)
    if not matches.user_ids:
        sys.exit(2 if matches.failed_verification else 1)


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

    listing = _run_or_exit(go())
    if as_json:
        for dead in listing.dead_letters:
            click.echo(json.dumps(dead.as_dict(), sort_keys=True))
        return
    click.echo(
        f"{len(listing.dead_letters)} listed, about {listing.approximate_total} in the queue"
    )
    for d in listing.dead_letters:
        click.echo(dead_letter_line(d))


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

    report = _run_or_exit(go())
    if as_json:
        for dead in report.moved:
            click.echo(json.dumps(dead.as_dict(), sort_keys=True))
    else:
        for d in report.moved:
            click.echo(f"{'would move' if dry_run else 'moved'} {d.event_id or d.message_id}")
    verb = "would move" if dry_run else "moved"
    click.echo(
        f"{verb} {len(report.moved)}; left (other error classes) {report.skipped}; "
        f"failed {report.failed}",
        err=as_json,
    )
    if report.failed:
        sys.exit(1)


def _run_or_exit(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except RecordTampered:
        click.echo("userstore: a record failed verification", err=True)
        sys.exit(2)
    except UserstoreError as exc:
        click.echo(f"userstore: {exc.reason}", err=True)
        sys.exit(3)
