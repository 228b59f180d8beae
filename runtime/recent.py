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

    def get(self, subject_filter: str) -> list[StoredEvent] | None:
        found = self._aggregates.get(subject_filter)
        if found is None:
            return None
        self._aggregates.move_to_end(subject_filter)
        return found.events

    def put(self, subject_filter: str, events: list[StoredEvent]) -> None:
        """Remember an aggregate's events; states folded from a prefix of them stay."""
        found = self._aggregates.get(subject_filter)
        if found is None:
            self._aggregates[subject_filter] = found = _Remembered(events)
            while len(self._aggregates) > self.size:
                self._aggregates.popitem(last=False)
        found.events = events
        self._aggregates.move_to_end(subject_filter)
        self._lasts.pop(subject_filter, None)

    def appended(self, subject_filter: str, expected: int, event: StoredEvent) -> None:
        """Follow our own append, made on the expectation that ``expected`` was last."""
        if self.last(subject_filter) != expected:
            self.forget(subject_filter)
            return
        known = self.get(subject_filter)
        if known is not None:
            # A new list, never the old one extended: a load may hold that one across
            # its awaits, and would then read this event a second time.
            self.put(subject_filter, [*known, event])
        else:
            self.note_last(subject_filter, event.seq)

    def last(self, subject_filter: str) -> int | None:
        """The newest sequence known for the aggregate (None: nothing remembered)."""
        found = self._aggregates.get(subject_filter)
        if found is not None:
            return found.events[-1].seq if found.events else 0
        return self._lasts.get(subject_filter)

    def note_last(self, subject_filter: str, seq: int) -> None:
        """Remember only an aggregate's last sequence (its events were not read)."""
        self._lasts[subject_filter] = seq
        self._lasts.move_to_end(subject_filter)
        while len(self._lasts) > self.size:
            self._lasts.popitem(last=False)

    def forget(self, subject_filter: str) -> None:
        self._aggregates.pop(subject_filter, None)
        self._lasts.pop(subject_filter, None)

    def fold(self, subject_filter: str, key: object) -> tuple[int, Any] | None:
        found = self._aggregates.get(subject_filter)
        return None if found is None else found.folds.get(key)

    def keep_fold(self, subject_filter: str, key: object, seq: int, state: object) -> None:
        found = self._aggregates.get(subject_filter)
        if found is not None:
            found.folds[key] = (seq, state)
