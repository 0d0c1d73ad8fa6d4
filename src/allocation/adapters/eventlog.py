"""The event log port: append-only history, per-subscriber tracking and dead letters."""

from __future__ import annotations

import abc
import dataclasses
from typing import TYPE_CHECKING

from allocation.domain import events, messages
from allocation.domain.exceptions import InvalidMessage

if TYPE_CHECKING:
    import datetime
    from collections.abc import Collection, Iterable, Sequence


@dataclasses.dataclass(frozen=True, slots=True)
class NewEvent:
    """An event about to be appended, with the aggregate version it brings about."""

    event: events.Event
    aggregate_type: str
    aggregate_id: str
    aggregate_version: int


@dataclasses.dataclass(frozen=True, slots=True)
class LoggedEvent:
    """An event as the log holds it."""

    position: int
    event: events.Event
    aggregate_type: str
    aggregate_id: str
    aggregate_version: int
    occurred_at: datetime.datetime
    # The payload's JSON as stored, and the schema version it was written with:
    # the relay publishes both as they are.
    payload_json: str | None = None
    schema_version: int = 1


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message a subscriber still failed on after all its retries."""

    id: int
    subscriber: str
    message_id: str
    error: str
    attempts: int
    last_tried: datetime.datetime


def rebuild_event(
    name: str,
    payload_json: str,
    *,
    schema_version: int,
    message_id: str,
    correlation_id: str | None,
    causation_id: str | None,
    aggregate_version: int,
) -> events.Event:
    """The event a log row describes, decoded and validated by its schema.

    Raises:
        InvalidMessage: the row holds no event this version can read.
    """
    event = messages.decode(
        name,
        payload_json,
        schema_version=schema_version,
        message_id=message_id,
        correlation_id=correlation_id,
        causation_id=causation_id,
        aggregate_version=aggregate_version,
    )
    if not isinstance(event, events.Event):
        raise InvalidMessage(name, ["a command, not an event"])
    return event


class AbstractEventLog(abc.ABC):
    """Port for the log and its bookkeeping; every call joins the unit of work."""

    @abc.abstractmethod
    async def append(self, new_events: Sequence[NewEvent]) -> None:
        """Append events (the unit of work does this on commit)."""

    @abc.abstractmethod
    async def read(
        self, *, after: int, names: Collection[str] | None = None, limit: int = 500
    ) -> list[LoggedEvent]:
        """Events past position ``after``, oldest first, of the given names only."""

    @abc.abstractmethod
    async def get(self, message_id: str) -> LoggedEvent | None:
        """The logged event with this id, if any."""

    @abc.abstractmethod
    async def last_position(self) -> int:
        """The position of the newest event (0 for an empty log)."""

    @abc.abstractmethod
    async def mark_processed(
        self, subscriber: str, message_ids: Iterable[str], *, exactly_once: bool
    ) -> None:
        """Record handled messages.

        With ``exactly_once`` a message already recorded fails the commit (the
        caller's effects roll back with it); otherwise it is quietly skipped.
        """

    @abc.abstractmethod
    async def processed_among(
        self, subscriber: str, message_ids: Collection[str]
    ) -> set[str]:
        """Which of ``message_ids`` the subscriber has handled."""

    @abc.abstractmethod
    async def checkpoint(self, subscriber: str) -> int | None:
        """The position up to which the subscriber has handled everything.

        None for a subscriber the log has never seen.
        """

    @abc.abstractmethod
    async def set_checkpoint(self, subscriber: str, position: int) -> None:
        """Move the subscriber's checkpoint forward (never back), creating it if new."""

    @abc.abstractmethod
    async def forget(self, subscriber: str) -> None:
        """Drop the subscriber's tracking, checkpoint and dead letters (for a replay)."""

    @abc.abstractmethod
    async def add_dead_letter(
        self, subscriber: str, message_id: str, error: str, attempts: int
    ) -> None:
        """Record (or refresh) a dead letter."""

    @abc.abstractmethod
    async def dead_letters(
        self, subscriber: str | None = None, *, limit: int = 1000
    ) -> list[DeadLetter]:
        """Dead letters, oldest first."""

    @abc.abstractmethod
    async def dead_letter(self, dead_letter_id: int) -> DeadLetter | None:
        """One dead letter by its id."""

    @abc.abstractmethod
    async def remove_dead_letter(self, dead_letter_id: int) -> None:
        """Delete a dead letter."""

    async def dead_message_ids(
        self, subscriber: str, message_ids: Collection[str]
    ) -> set[str]:
        """Which of ``message_ids`` are dead letters of the subscriber."""
        wanted = set(message_ids)
        return {
            letter.message_id
            for letter in await self.dead_letters(subscriber)
            if letter.message_id in wanted
        }
