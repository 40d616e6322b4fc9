"""The cost legs in the report: record sizes, units per event, latency, bursts, their targets."""

from __future__ import annotations

from collections import Counter
from statistics import fmean
from typing import TYPE_CHECKING, NamedTuple

from bench.measures import BurstRun, LatencyRun, RecordSizes
from bench.traffic import KINDS
from bench.units import LegUnits, Sizes, mean_read_units, replacing_write_units
from userstore.worker.item_size import write_units

if TYPE_CHECKING:
    from bench.report import Results

MODES = ("kms", "cached")
SYSTEMS = ("userstore", "powertools", "naive", "floor")
LABELS = {
    "userstore": "userstore",
    "powertools": "Powertools (Lambda)",
    "naive": "naive loop",
    "floor": "floor",
}

# The 61-event burst before coalescing and record format 2: one run of this same leg
# (`python -m bench --skip kinds,throughput,rss,sizes,latency --burst-timeout 300`).
BURST_BEFORE_S = {"kms": 14.7, "cached": 8.4}
BURST_BEFORE_AT = "2026-12-07, main at 97e8d7e"
BURST_MAX_WRITES = 8
BURST_MAX_GDK = 8
BURST_SPEEDUP = 10.0
STEADY_MAX_BYTES = {"cached": 1024, "kms": 1536}
P99_RATIO = 3.0
KEPT_UP = 0.9  # the latency target is assessed only if events were applied this fast


class Line(NamedTuple):
    name: str
    measured: str
    met: bool | None


def _ops(calls: Counter[str], *ops: str) -> int:
    return sum(calls[op] for op in ops)


def leg_units(results: Results, system: str, mode: str, kind: str) -> LegUnits | None:
    """What a kinds leg wrote and read per event, from its calls and the records around it."""
    from bench.report import event_calls

    window = results.kinds.get((system, mode, kind))
    after = results.kind_sizes.get((system, mode, kind))
    if window is None or after is None:
        return None
    at = KINDS.index(kind)
    before: Sizes = results.kind_sizes.get((system, mode, KINDS[at - 1]), {}) if at else {}
    # Whole-leg counts where the run has them: the measuring window starts at the first
    # settled event, after the writes of the events already in flight.
    whole = getattr(window, "leg_calls", None)
    calls, n = (whole, window.leg_events) if whole else (window.calls, window.events)
    puts = _ops(calls, "dynamodb:PutItem", "dynamodb:DeleteItem") / n
    updates = calls["dynamodb:UpdateItem"] / n
    side = 0
    if system == "userstore":
        # Records: the revisions' sum moved by one per record write (exact); the rest of the
        # worker's writes are lease and checkpoint upkeep on the state table (small items),
        # counted over the window with the idle rate subtracted. Every event's record is read
        # once, by the batch's BatchGetItem.
        upkeep = event_calls(results, system, mode, window)
        upkeep_writes = _ops(upkeep, "dynamodb:UpdateItem") / window.events
        record_writes = getattr(results, "record_writes", {}).get((system, mode, kind))
        if record_writes is None:  # a run saved before revisions were summed per leg
            record_writes = _ops(upkeep, "dynamodb:PutItem") * n / window.events
        return LegUnits(record_writes / n, upkeep_writes, 1.0, before, after, 0)
    if system == "powertools":
        # Each event first puts an idempotency record (conditional: a duplicate's fails, and
        # still costs its units), completed with an UpdateItem; the rest are the user records.
        record_writes, other_writes = max(0.0, puts - 1), 1 + updates
        reads = calls["dynamodb:GetItem"] / n
        side = results.side_sizes.get((system, mode, kind), 0)
    else:
        record_writes, other_writes = puts, updates
        reads = calls["dynamodb:GetItem"] / n
    return LegUnits(record_writes, other_writes, reads, before, after, side)


def _mean(sizes: Sizes) -> str:
    return f"{fmean(sizes.values()):,.0f}" if sizes else "n/a"


def units_table(results: Results) -> list[str]:
    from bench.report import aws_requests, event_calls, per_event

    lines = [
        "| key mode | event | consumer | CPU ms/event | SQS+DynamoDB requests/event "
        "| KMS calls/event | writes/event | write units/event | read units/event "
        "| record bytes after (mean) |",
        "|---" * 10 + "|",
    ]
    for mode in MODES:
        for kind in KINDS:
            for system in SYSTEMS:
                window = results.kinds.get((system, mode, kind))
                units = leg_units(results, system, mode, kind)
                if window is None or units is None:
                    continue
                calls = event_calls(results, system, mode, window)
                lines.append(
                    f"| {mode} | {kind} | {LABELS[system]} | {window.cpu_ms_per_event:.2f} "
                    f"| {aws_requests(calls, window):.2f} | {per_event(calls, window, 'kms:'):.2f} "
                    f"| {units.record_writes + units.other_writes:.2f} "
                    f"| {units.write_units():.2f} "
                    f"| {units.read_units():.2f} | {_mean(units.after)} |"
                )
    return lines


def _sizes(sizes: Sizes) -> str:
    if not sizes:
        return "n/a | n/a | n/a"
    wu = replacing_write_units({}, sizes)
    ru = mean_read_units(sizes, sizes)
    return f"{fmean(sizes.values()):,.0f} / {max(sizes.values()):,} | {wu:.2f} | {ru:.2f}"


def record_table(results: Results) -> list[str]:
    lines = [
        "| key mode | profile JSON bytes | users | after a create: record bytes mean / max "
        "| write units | read units | after the create and 99 updates: record bytes mean / max "
        "| write units | read units | the 99 updates drained in |",
        "|---" * 10 + "|",
    ]
    for mode, r in _records(results).items():
        lines.append(
            f"| {mode} | {r.profile_bytes} | {r.users} | {_sizes(r.after_create)} "
            f"| {_sizes(r.steady)} | {r.steady_seconds:.0f} s |"
        )
    return lines


def _records(results: Results) -> dict[str, RecordSizes]:
    return getattr(results, "record_sizes", {})


def _latency(results: Results) -> dict[str, list[LatencyRun]]:
    return getattr(results, "latency", {})


def _bursts(results: Results) -> dict[str, BurstRun]:
    return getattr(results, "bursts", {})


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def latency_table(results: Results) -> list[str]:
    lines = [
        "| key mode | load | events | published per s | applied per s | p50 ms | p99 ms | max ms "
        "| KMS calls/event | writes/event | not applied |",
        "|---" * 11 + "|",
    ]
    for mode, runs in _latency(results).items():
        for run in runs:
            load = "single events" if run.shape == "single" else "bursts of 4 per user"
            worst = max(run.latencies_ms, default=None)
            kms = sum(n for k, n in run.calls.items() if k.startswith("kms:")) / run.events
            puts = _ops(run.calls, "dynamodb:PutItem", "dynamodb:DeleteItem") / run.events
            lines.append(
                f"| {mode} | {load} | {run.events} | {run.rate:.1f} "
                f"| {getattr(run, 'applied_rate', 0.0):.1f} | {_ms(run.p(0.5))} "
                f"| {_ms(run.p(0.99))} | {_ms(worst)} "
                f"| {kms:.2f} | {puts:.2f} "
                f"| {run.missing} |"
            )
    return lines


def _drain(run: BurstRun) -> str:
    if run.drain_s is None:
        return f"not drained: {run.settled} of {run.events} in {run.timeout_s:.0f} s"
    return f"{run.drain_s:.2f} s"


def burst_table(results: Results) -> list[str]:
    lines = [
        f"| key mode | events | drained in | before ({BURST_BEFORE_AT}) | speed-up | PutItem "
        "| GenerateDataKey | KMS calls/event | publish to applied p50 / p99 ms "
        "| longest pause between two events applied |",
        "|---" * 10 + "|",
    ]
    for mode, run in _bursts(results).items():
        before = BURST_BEFORE_S.get(mode)
        speedup = f"{before / run.drain_s:.1f}x" if before and run.drain_s else "n/a"
        lines.append(
            f"| {mode} | {run.events} | {_drain(run)} | {before or 'n/a'} s | {speedup} "
            f"| {run.calls['dynamodb:PutItem']} | {run.calls['kms:GenerateDataKey']} "
            f"| {run.per_event('kms:'):.2f} "
            f"| {_ms(_pct(run.latencies_ms, 0.5))} / {_ms(_pct(run.latencies_ms, 0.99))} "
            f"| {_seconds(getattr(run, 'longest_pause_s', None))} |"
        )
    return lines


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} s"


def _pct(values: list[float], fraction: float) -> float | None:
    from bench.probe import percentile

    return percentile(values, fraction)


def cost_targets(results: Results) -> list[Line]:
    out: list[Line] = []
    records = _records(results)
    for mode in ("cached", "kms"):
        r = records.get(mode)
        if r is None or not r.steady:
            continue
        limit = STEADY_MAX_BYTES[mode]
        worst = max(r.steady.values())
        out.append(
            Line(
                f"{mode}: steady-state record of the typical profile <= {limit:,} bytes "
                f"({write_units(limit)} write unit{'s' if limit > 1024 else ''})",
                f"after a create and 99 updates, {r.users} users: max {worst:,} B, mean "
                f"{fmean(r.steady.values()):,.0f} B ({write_units(worst)} write units); the "
                f"profile is {r.profile_bytes} B of JSON",
                worst <= limit,
            )
        )
    cached = records.get("cached")
    if cached is not None and cached.after_create:
        worst = max(cached.after_create.values())
        out.append(
            Line(
                "cached: a create of the typical profile <= 1 write unit",
                f"record after a create: max {worst:,} B, mean "
                f"{fmean(cached.after_create.values()):,.0f} B = {write_units(worst)} write "
                "units",
                write_units(worst) <= 1,
            )
        )
    bursts = _bursts(results)
    if bursts:
        puts = {m: b.calls["dynamodb:PutItem"] for m, b in bursts.items()}
        gdk = bursts["kms"].calls["kms:GenerateDataKey"] if "kms" in bursts else None
        out.append(
            Line(
                f"61-event burst of one user: <= {BURST_MAX_WRITES} writes; kms: <= "
                f"{BURST_MAX_GDK} GenerateDataKey",
                ", ".join(f"{m} {n} PutItem" for m, n in puts.items())
                + ("" if gdk is None else f"; kms {gdk} GenerateDataKey")
                + "; KMS calls per event: "
                + ", ".join(f"{m} {b.per_event('kms:'):.2f}" for m, b in bursts.items()),
                max(puts.values()) <= BURST_MAX_WRITES and (gdk or 0) <= BURST_MAX_GDK,
            )
        )
        ratios = {
            m: BURST_BEFORE_S[m] / b.drain_s if b.drain_s else None for m, b in bursts.items()
        }
        out.append(
            Line(
                f"61-event burst drained >= {BURST_SPEEDUP:.0f}x faster than before "
                f"({BURST_BEFORE_AT})",
                ", ".join(
                    f"{m} {_drain(b)} against {BURST_BEFORE_S[m]} s"
                    + ("" if ratios[m] is None else f" = {ratios[m]:.1f}x")
                    for m, b in bursts.items()
                ),
                all(r is not None and r >= BURST_SPEEDUP for r in ratios.values()),
            )
        )
    parts: list[str] = []
    verdicts: list[bool] = []
    for mode, runs in _latency(results).items():
        by_shape = {run.shape: run for run in runs}
        single, grouped = by_shape.get("single"), by_shape.get("burst")
        if single is None or grouped is None:
            continue
        a, b = single.p(0.99), grouped.p(0.99)
        rates = (
            f"published {single.rate:.0f} and {grouped.rate:.0f} events/s, applied "
            f"{single.applied_rate:.0f} and {grouped.applied_rate:.0f}"
        )
        if a is None or b is None:
            parts.append(f"{mode}: events never applied")
            verdicts.append(False)
        elif single.applied_rate < KEPT_UP * single.rate:
            # The machine fell behind even without bursts: the latencies measure a backlog
            # that grows with the leg's length, and their ratio says nothing about the target.
            parts.append(
                f"{mode} not assessed: single events applied slower than {KEPT_UP:.0%} of "
                f"their published rate ({b:,.0f} / {a:,.0f} ms; {rates})"
            )
        else:
            parts.append(f"{mode} {b:,.0f} / {a:,.0f} ms = {b / a:.1f}x ({rates})")
            verdicts.append(b <= P99_RATIO * a)
    if parts:
        met: bool | None = all(verdicts) if verdicts else None
        if met and len(verdicts) < len(parts):
            met = None  # passed where assessed, but not assessed everywhere
        out.append(
            Line(
                "10 users a second, 4 events each in a row: publish-to-applied p99 <= "
                f"{P99_RATIO:.0f}x single events' p99 at the same event rate",
                "; ".join(parts),
                met,
            )
        )
    return out
