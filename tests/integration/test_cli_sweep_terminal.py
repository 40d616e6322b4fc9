"""`userstore sweep` on a terminal: the progress bar ends at 100% of what was visited, and the
log lines print above it, never through it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from tests.harness.counting import event
from tests.harness.settings import make_settings, provision_settings
from tests.harness.terminal import run_on_terminal
from tests.harness.worker_process import env_for, userstore
from userstore.worker.app import components
from userstore.worker.rotation import rotate_key

USERS = 6


async def test_the_sweep_bar_ends_at_100_percent_with_logs_above_it(moto_endpoint: str) -> None:
    settings = await provision_settings(make_settings(moto_endpoint))
    async with components(settings) as parts:
        for n in range(USERS):
            user = f"urn:fdc:gov.uk:2022:bar-{uuid.uuid4().hex[:10]}"
            created = event(
                f"c-{user}",
                "user.created",
                user,
                datetime.now(UTC).isoformat(),
                {"given_name": f"Given{n}"},
            )
            await parts.handler.handle(created)
        new_key = await parts.clients.kms.create_key(Description="rotated")
        await rotate_key(parts, str(new_key["KeyMetadata"]["Arn"]))

    shown = await asyncio.to_thread(
        run_on_terminal, userstore("sweep", "--segments", "2"), env_for(settings)
    )
    assert shown.returncode == 0, shown.terminal
    assert f"re-encrypted {USERS}," in shown.stdout
    assert "Traceback" not in shown.terminal
    last_draw = shown.terminal.rstrip("\n").rsplit("\r", 1)[-1]
    assert "100%" in last_draw and f"{USERS}/{USERS} records" in last_draw, last_draw
    # A log line starts a row of its own (after the bar was cleared) and the bar never sits in it
    logged = [row for row in shown.terminal.replace("\r", "\n").splitlines() if "sweep.done" in row]
    assert len(logged) == 1 and logged[0].lstrip().startswith(tuple("0123456789")), logged
    assert "records" not in logged[0]
