"""An event store's memory of recent aggregates."""

from __future__ import annotations

from runtime.eventstore import StoredEvent
from runtime.recent import Recent

SCOPE = "evt.test.account.a1.*"


def event(seq: int) -> StoredEvent:
    return StoredEvent(seq=seq, subject="evt.test.account.a1.Deposited", type="Deposited",
                       data=b"{}", headers={})


def test_a_copy_handed_out_never_changes_under_its_holder() -> None:
    # A load holds the remembered events across its awaits while our own append lands:
    # had the append extended that very list, the load would add the event a second time.
    recent = Recent(10)
    recent.put(SCOPE, [event(1), event(2)])
    held = recent.get(SCOPE)
    recent.appended(SCOPE, 2, event(3))
    assert held is not None and [e.seq for e in held] == [1, 2]
    assert [e.seq for e in recent.get(SCOPE) or []] == [1, 2, 3]


def test_an_append_on_a_stale_expectation_drops_what_was_remembered() -> None:
    recent = Recent(10)
    recent.put(SCOPE, [event(1), event(2)])
    recent.appended(SCOPE, 1, event(5))
    assert recent.get(SCOPE) is None and recent.last(SCOPE) is None


def test_the_least_recently_used_aggregate_goes_first() -> None:
    recent = Recent(2)
    for name in ("a", "b"):
        recent.put(name, [event(1)])
    recent.get("a")
    recent.put("c", [event(1)])
    assert recent.get("b") is None and recent.get("a") is not None
