"""What every aggregate shares: a version that counts its events, and the new events."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from allocation.domain.events import Event


class Aggregate:
    """Base of Product and User.

    Every recorded event raises ``version_number`` by one, so an aggregate's events
    are numbered 1, 2, 3, ... in the event log, and two writers of the same version
    cannot both commit (optimistic concurrency).
    """

    AGGREGATE_TYPE: ClassVar[str]
    version_number: int
    events: list[Event]

    @property
    def aggregate_id(self) -> str:
        """The identity of this aggregate within its type."""
        raise NotImplementedError

    def _record(self, event: Event) -> None:
        self.version_number += 1
        self.events.append(event)
