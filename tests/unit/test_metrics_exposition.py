"""/metrics as a scraper reads it: no `<name>_created` series beside the counters and histograms."""

from __future__ import annotations

import aiohttp

from userstore.worker.metrics import Metrics
from userstore.worker.probes import Readiness, serve


async def test_the_scrape_has_no_created_series() -> None:
    metrics = Metrics()
    # A child of every labelled kind, so each would have its `_created` sample.
    metrics.events.labels(type="user.created", outcome="applied").inc()
    metrics.dead_letters.labels(error="InvalidMessage").inc()
    metrics.verification_failures.inc()
    metrics.handling_seconds.labels(type="user.created").observe(0.01)
    async with (
        serve(metrics, Readiness(), "127.0.0.1", 0) as port,
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        page = await response.text()
    assert response.status == 200
    samples = [line for line in page.splitlines() if line and not line.startswith("#")]
    assert any(line.startswith("userstore_events_total{") for line in samples), page
    assert any(line.startswith("userstore_handling_seconds_count{") for line in samples), page
    created = [line.split("{")[0].split(" ")[0] for line in samples if "_created" in line]
    assert created == [], created
