"""Ports to the world outside the database: emails, the console, the broker.

The handlers, the relay and the consumer are written against these; the adapters
implement them (SMTP, standard output, Redis Streams) and ``allocation.testing``
holds fakes. No client library is imported here.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from allocation.service_layer.ports import LoggedEvent

DEFAULT_STREAM = "allocation:events"


@dataclasses.dataclass(frozen=True, slots=True)
class Email:
    """An email to send.

    Attributes:
        subject: the subject line.
        body: the plain-text body.
        console_line: how the console stand-in announces it, e.g. the article's
            ``[Email Service] Отправка приветственного письма на ...``.
        idempotency_key: the same on every delivery of the same email (built from
            the event's message id); SMTP sends it as the Message-ID, by which
            mail systems recognise a duplicate.
    """

    subject: str
    body: str
    console_line: str
    idempotency_key: str | None = None


class AbstractNotifications(abc.ABC):
    """Port for messages to people."""

    @abc.abstractmethod
    async def send(self, destination: str, message: Email) -> None:
        """Deliver ``message`` to ``destination`` (an email address)."""


class AbstractConsole(abc.ABC):
    """Port for human-readable progress lines."""

    @abc.abstractmethod
    def write(self, line: str) -> None:
        """Show one line."""


class AbstractPublisher(abc.ABC):
    """Port for publishing logged events to a broker, in the order given.

    Attributes:
        destination: where the events go (a stream); the relay keeps one checkpoint
            per destination, so a new one receives the whole log.
    """

    destination: str = DEFAULT_STREAM

    @abc.abstractmethod
    async def publish(self, batch: Sequence[LoggedEvent]) -> None:
        """Publish every event of ``batch``, or raise BrokerUnavailable."""

    async def aclose(self) -> None:  # noqa: B027 - most publishers hold nothing
        """Release connections."""


class Entry(NamedTuple):
    """One stream entry: its id, its fields as text, and its fields as read.

    ``undecodable`` names the fields whose name or value is not UTF-8 (they are
    missing from ``fields``); ``raw`` is the entry as the broker holds it, so a dead
    letter keeps it byte for byte (None: ``fields`` is all there was).
    """

    entry_id: str
    fields: dict[str, str]
    undecodable: tuple[str, ...] = ()
    raw: Mapping[bytes, bytes] | None = None


class AbstractCommandStream(abc.ABC):
    """Port for the stream of commands other services send us (consumer group)."""

    @abc.abstractmethod
    async def read(self, *, count: int, block_ms: int) -> list[Entry]:
        """Entries for this consumer, in stream order: first those it read before and
        has not acknowledged (a pass that stopped early), else new ones (none after
        ``block_ms``)."""

    @abc.abstractmethod
    async def reclaim(self, *, idle_ms: int, count: int) -> list[Entry]:
        """Entries another consumer read but never acknowledged, idle that long."""

    @abc.abstractmethod
    async def ack(self, entry_id: str) -> None:
        """Acknowledge an entry: handled, or dead-lettered."""

    @abc.abstractmethod
    async def dead_letter(self, entry: Entry, reason: str) -> None:
        """Move an entry that cannot be handled to the dead-letter stream, with why:
        its original fields, ``reason`` and ``original_id``; acknowledged at once."""

    async def leave(self) -> bool:
        """Leave the consumer group unless entries read here are still unacknowledged
        (they stay for another consumer to reclaim); say whether it left."""
        return True
