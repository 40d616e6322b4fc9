"""What `userstore provision` did to each resource, for the operator: created, found as
configured, updated (which settings), or different in a way provision can't change.

Pure data and rendering; worker/provision.py fills it in. Resource names, attribute names and
settings only: nothing here is ever a record's or an event's value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from .resources import Mismatch

# `userstore provision`'s exit code when a resource differs in a way it can't change (each
# difference is printed: resource, attribute, expected, found, what to do).
EXIT_DIFFERS = 8  # cli_errors.ExitCode.PROVISION_DIFFERS


class Outcome(StrEnum):
    CREATED = "created"
    AS_IS = "as is"
    UPDATED = "updated"


@dataclass(frozen=True)
class Difference:
    resource: str  # "queue events.fifo", "table users", "key alias/userstore"
    mismatch: Mismatch

    def line(self) -> str:
        m = self.mismatch
        text = f"{self.resource}: {m.attribute}: expected {m.expected}, found {m.found}"
        return f"{text} ({m.remedy})" if m.remedy else text


@dataclass
class ProvisionReport:
    """Filled in resource by resource; `lines()` is the human summary."""

    outcomes: dict[str, Outcome] = field(default_factory=dict)
    updated_settings: dict[str, list[str]] = field(default_factory=dict)
    differences: list[Difference] = field(default_factory=list)

    def created(self, resource: str) -> None:
        self.outcomes[resource] = Outcome.CREATED

    def found(self, resource: str) -> None:
        self.outcomes.setdefault(resource, Outcome.AS_IS)

    def updated(self, resource: str, *settings: str) -> None:
        """Settings changed on `resource` (a resource just created stays "created")."""
        if self.outcomes.get(resource) is Outcome.CREATED:
            return
        self.outcomes[resource] = Outcome.UPDATED
        self.updated_settings.setdefault(resource, []).extend(settings)

    def differs(self, resource: str, *mismatches: Mismatch) -> None:
        self.found(resource)
        self.differences.extend(Difference(resource, m) for m in mismatches)

    @property
    def exit_code(self) -> int:
        return EXIT_DIFFERS if self.differences else 0

    def lines(self) -> list[str]:
        """One line per resource (one per difference for a resource that differs), a summary."""
        width = max(len(outcome) for outcome in Outcome)
        differing = {d.resource for d in self.differences}
        lines = []
        for resource, outcome in self.outcomes.items():
            if outcome is Outcome.AS_IS and resource in differing:
                continue  # not as configured: its differences say how
            settings = self.updated_settings.get(resource)
            detail = f": {', '.join(dict.fromkeys(settings))}" if settings else ""
            lines.append(f"{outcome:<{width}}  {resource}{detail}")
        lines.extend(f"{'differs':<{width}}  {d.line()}" for d in self.differences)
        counts = {o: sum(1 for v in self.outcomes.values() if v is o) for o in Outcome}
        counts[Outcome.AS_IS] -= sum(
            1 for r in differing if self.outcomes.get(r, Outcome.AS_IS) is Outcome.AS_IS
        )
        summary = ", ".join(f"{counts[o]} {o}" for o in Outcome)
        if not self.differences:
            return [*lines, f"{len(self.outcomes)} resources ({summary}): as configured"]
        return [
            *lines,
            f"{len(self.outcomes)} resources ({summary}, {len(differing)} differ):"
            f" {len(self.differences)} setting(s) provision can't change, see above"
            f" (exit {EXIT_DIFFERS})",
        ]
