"""What an event store remembers of the aggregates it used lately: their events, the
states folded from them, or only their last sequence. Checked against the log before use
(see EventStore.load and expected_last)."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.eventstore import StoredEvent


class _Remembered:
    def __init__(self, events: list[StoredEvent]) -> None:
        self.events = events
        self.folds: dict[object, tuple[int, Any]] = {}  # evolve -> (sequence, state)


class Recent:
    """The events of the aggregates loaded or appended to lately (least recent dropped),
    and states folded from them."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._aggregates: OrderedDict[str, _Remembered] = OrderedDict()
        self._lasts: OrderedDict[str, int] = OrderedDict()

    def get(self, scope: str) -> list[StoredEvent] | None:
        found = self._aggregates.get(scope)
        if found is None:
            return None
        self._aggregates.move_to_end(scope)
        return found.events

    def put(self, scope: str, events: list[StoredEvent]) -> None:
        """Remember an aggregate's events; states folded from a prefix of them stay."""
        found = self._aggregates.get(scope)
        if found is None:
            self._aggregates[scope] = found = _Remembered(events)
            while len(self._aggregates) > self.size:
                self._aggregates.popitem(last=False)
        found.events = events
        self._aggregates.move_to_end(scope)
        self._lasts.pop(scope, None)

    def appended(self, scope: str, expected: int, event: StoredEvent) -> None:
        """Follow our own append, made on the expectation that ``expected`` was last."""
        if self.last(scope) != expected:
            self.forget(scope)
            return
        known = self.get(scope)
        if known is not None:
            # A new list, never the old one extended: a load may hold that one across
            # its awaits, and would then read this event a second time.
            self.put(scope, [*known, event])
        else:
            self.note_last(scope, event.seq)

    def last(self, scope: str) -> int | None:
        """The newest sequence known for the aggregate (None: nothing remembered)."""
        found = self._aggregates.get(scope)
        if found is not None:
            return found.events[-1].seq if found.events else 0
        return self._lasts.get(scope)

    def note_last(self, scope: str, seq: int) -> None:
        """Remember only an aggregate's last sequence (its events were not read)."""
        self._lasts[scope] = seq
        self._lasts.move_to_end(scope)
        while len(self._lasts) > self.size:
            self._lasts.popitem(last=False)

    def forget(self, scope: str) -> None:
        self._aggregates.pop(scope, None)
        self._lasts.pop(scope, None)

    def fold(self, scope: str, key: object) -> tuple[int, Any] | None:
        found = self._aggregates.get(scope)
        return None if found is None else found.folds.get(key)

    def keep_fold(self, scope: str, key: object, seq: int, state: object) -> None:
        found = self._aggregates.get(scope)
        if found is not None:
            found.folds[key] = (seq, state)
