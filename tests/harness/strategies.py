"""Hypothesis strategies for user events (JSON-like dicts, as a publisher would send them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

BASE_TIME = datetime(2026, 11, 1, tzinfo=UTC)

names = st.sampled_from(["Ada", "Grace", "Alan", "Edsger", "Barbara"])
emails = st.sampled_from(["ada@example.org", "grace@example.org", "alan@example.net"])
phones = st.sampled_from(["+447700900123", "+14155550100"])
addresses = st.fixed_dictionaries(
    {},
    optional={
        "street_address": st.sampled_from(["1 High St", "2 Low Rd"]),
        "locality": st.sampled_from(["Leeds", "York"]),
        "postal_code": st.sampled_from(["LS1 1AA", "YO1 7HH"]),
        "country": st.sampled_from(["GB", "IE"]),
    },
)
attr_names = st.sampled_from(["dept", "grade", "tags", "active"])
attr_values = st.one_of(
    st.sampled_from(["a", "b"]),
    st.integers(0, 3),
    st.booleans(),
    st.lists(st.sampled_from(["x", "y"]), max_size=2),
)


def _nullable(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


profiles = st.fixed_dictionaries(
    {},
    optional={
        "email": emails,
        "email_verified": st.booleans(),
        "phone_number": phones,
        "given_name": names,
        "family_name": names,
        "birthdate": st.sampled_from(["1990-01-31", "1815-12-10"]),
        "address": addresses,
        "attributes": st.dictionaries(attr_names, attr_values, max_size=3),
    },
)
patches = st.fixed_dictionaries(
    {},
    optional={
        "email": _nullable(emails),
        "email_verified": _nullable(st.booleans()),
        "given_name": _nullable(names),
        "family_name": _nullable(names),
        "address": _nullable(
            st.dictionaries(
                st.sampled_from(["street_address", "locality", "country"]),
                _nullable(st.sampled_from(["Leeds", "GB", "3 Mid Way"])),
                max_size=2,
            )
        ),
        "attributes": _nullable(st.dictionaries(attr_names, _nullable(attr_values), max_size=3)),
    },
)


@st.composite
def event_sets(draw: st.DrawFn, max_events: int = 12, users: int = 2) -> list[dict[str, Any]]:
    """Events for a few users; timestamps collide on purpose to exercise tie-breaking."""
    count = draw(st.integers(1, max_events))
    events = []
    for index in range(count):
        kind = draw(st.sampled_from(["user.created", "user.updated", "user.deleted"]))
        event: dict[str, Any] = {
            "event_id": f"evt-{index:03d}-{draw(st.sampled_from(['a', 'b']))}",
            "type": kind,
            "user_id": f"urn:fdc:gov.uk:2022:user-{draw(st.integers(0, users - 1))}",
            "occurred_at": (BASE_TIME + timedelta(seconds=draw(st.integers(0, 5)))).isoformat(),
        }
        if kind == "user.created":
            event["data"] = draw(profiles)
        elif kind == "user.updated":
            event["data"] = draw(patches)
        events.append(event)
    return events


@st.composite
def deliveries(draw: st.DrawFn, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A delivery order: a permutation of the events with some delivered more than once."""
    repeated = events + draw(st.lists(st.sampled_from(events), max_size=len(events)))
    return draw(st.permutations(repeated))
