"""Regenerate docs/reliability.md: run every reliability scenario, tabulate what each checked.

python -m tests.reliability.report            # the CI-sized suite
RELIABILITY_SCALE=10 python -m tests.reliability.report   # a soak run (by hand)
"""

from __future__ import annotations

import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.scenario import PROPERTY

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "docs" / "reliability.md"
SCENARIOS = [
    "tests/reliability",
    "tests/faults/test_product_faults.py",
    "tests/e2e/test_cli.py::test_sigterm_under_load_drains_and_a_second_worker_finishes_the_queue",
    "tests/e2e/test_cli.py::test_a_plain_http_endpoint_off_loopback_is_refused",
]


class Collector:
    """Scenario rows from tests that described themselves; a tally of the supporting tests."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.supporting: dict[str, int] = {}

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call" and not (report.when == "setup" and report.outcome != "passed"):
            return
        described = [v for k, v in report.user_properties if k == PROPERTY]
        for scenario in described:
            self.rows.append(
                {**scenario, "result": report.outcome, "seconds": round(report.duration, 1)}
            )
        if not described:
            self.supporting[report.outcome] = self.supporting.get(report.outcome, 0) + 1


def main() -> int:
    collector = Collector()
    started = datetime.now(UTC)
    code = pytest.main([*SCENARIOS, "-q", "-p", "no:cacheprovider"], plugins=[collector])
    scale = os.environ.get("RELIABILITY_SCALE", "1")
    lines = [
        "# Reliability",
        "",
        "Each row is an automated scenario against a moto server process on loopback (see",
        "`tests/reliability/`, `tests/faults/`). Regenerate this page with",
        "`python -m tests.reliability.report` (from `./dev`'s virtualenv: `.venv/bin/python -m",
        "tests.reliability.report`); `RELIABILITY_SCALE=10` makes the loads a soak run.",
        "",
        f"Last run: {started:%Y-%m-%d %H:%M} UTC, scale {scale}, "
        f"Python {platform.python_version()}, {os.cpu_count()} cores.",
        "",
        "| scenario | load | faults injected | checked | result | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for row in collector.rows:
        cells = [row["name"], row["load"], row["faults"], row["checked"], row["result"]]
        lines.append(
            "| " + " | ".join(c.replace("|", "/") for c in cells) + f" | {row['seconds']} |"
        )
    tally = ", ".join(f"{n} {outcome}" for outcome, n in sorted(collector.supporting.items()))
    lines += [
        "",
        "Supporting tests in the same run (the bad-input corpus case by case, the fault proxy's"
        f" own tests, the leak scanner): {tally or 'none'}.",
    ]
    OUTPUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUTPUT.relative_to(ROOT)} ({len(collector.rows)} scenarios)")
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
