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
EXIT_DIFFERS = 6


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
        width = max(len(outcome) for outcome in Outcome)
        lines = []
        for resource, outcome in self.outcomes.items():
            settings = self.updated_settings.get(resource)
            detail = f": {', '.join(dict.fromkeys(settings))}" if settings else ""
            lines.append(f"{outcome:<{width}}  {resource}{detail}")
        lines.extend(f"{'differs':<{width}}  {d.line()}" for d in self.differences)
        counts = {o: sum(1 for v in self.outcomes.values() if v is o) for o in Outcome}
        summary = ", ".join(f"{counts[o]} {o}" for o in Outcome)
        if self.differences:
            lines.append(
                f"{len(self.outcomes)} resources ({summary}); {len(self.differences)} setting(s)"
                f" differ and can't be changed by provision: see above (exit {EXIT_DIFFERS})"
            )
        else:
            lines.append(f"{len(self.outcomes)} resources ({summary}): as configured")
        return lines
