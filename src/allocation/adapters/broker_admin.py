"""Upkeep of the command stream on Redis: its dead letters and its consumer group.

Asyncio only (redis-py's asyncio client). What ``allocation broker`` shows and does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import redis.asyncio as redis
from redis import exceptions as redis_errors

from allocation.adapters.broker import dead_stream_of, translated_errors
from allocation.domain.exceptions import AllocationError
from allocation.service_layer.exceptions import UnknownDeadLetter

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

# Fields the dead-letter stream adds to an entry; a retry sends the rest.
_ADDED = (b"reason", b"original_id")
_PAGE = 500
# Deleting the dead letter and sending its fields again happen together or not at
# all: two retries of one letter at once send it once.
_RETRY = """
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return false end
return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
"""


class EmptyDeadLetter(AllocationError):
    """Raised when a dead letter holds no fields of its own to send again: its entry
    was deleted from the command stream before anyone read it."""

    def __init__(self, entry_id: str) -> None:
        self.entry_id = entry_id
        super().__init__(f"dead letter {entry_id} holds nothing to send again")


class DeadEntry(NamedTuple):
    """An entry of the dead-letter stream, its text decoded as far as it is UTF-8."""

    entry_id: str
    original_id: str
    name: str
    reason: str


class GroupMember(NamedTuple):
    """A consumer of the group: how many entries it holds unacknowledged, and how
    long since it last read or acknowledged one."""

    name: str
    pending: int
    idle_ms: int


class CommandStreamAdmin:
    """Looks after one command stream, its dead-letter stream and its group."""

    def __init__(
        self,
        url: str,
        stream: str = "allocation:commands",
        group: str = "allocation",
    ) -> None:
        self.url = url
        self.stream = stream
        self.dead_stream = dead_stream_of(stream)
        self.group = group
        self._client = redis.Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=10
        )

    async def dead_letters(self) -> AsyncIterator[DeadEntry]:
        """Every dead letter, oldest first, read a page at a time."""
        start = "-"
        while True:
            async with translated_errors(self.url):
                page: Any = await self._client.xrange(
                    self.dead_stream, start, "+", count=_PAGE
                )
            for entry_id, fields in page:
                yield DeadEntry(
                    _text(entry_id),
                    _text(fields.get(b"original_id", b"")),
                    _text(fields.get(b"name", b"")),
                    _text(fields.get(b"reason", b"")),
                )
            if len(page) < _PAGE:
                return
            start = f"({_text(page[-1][0])}"

    async def retry(self, entry_id: str) -> str:
        """Send a dead letter's original fields to the command stream again and
        remove it from the dead letters; returns its new entry id."""
        async with translated_errors(self.url):
            found: Any = await self._client.xrange(self.dead_stream, entry_id, entry_id)
            if not found:
                raise UnknownDeadLetter(entry_id, self.dead_stream)
            fields: dict[bytes, bytes] = found[0][1]
            original = [
                part
                for key, value in fields.items()
                if key not in _ADDED
                for part in (key, value)
            ]
            if not original:
                raise EmptyDeadLetter(entry_id)
            new_id: Any = await self._client.eval(
                _RETRY, 2, self.dead_stream, self.stream, entry_id, *original
            )
        if new_id is None:
            raise UnknownDeadLetter(entry_id, self.dead_stream)  # gone meanwhile
        return _text(new_id)

    async def discard(self, entry_id: str) -> None:
        """Remove a dead letter for good."""
        async with translated_errors(self.url):
            removed: Any = await self._client.xdel(self.dead_stream, entry_id)
        if not removed:
            raise UnknownDeadLetter(entry_id, self.dead_stream)

    async def members(self) -> list[GroupMember] | None:
        """The group's consumers (None when the group does not exist yet)."""
        async with translated_errors(self.url):
            try:
                found: Any = await self._client.xinfo_consumers(self.stream, self.group)
            except redis_errors.ResponseError as error:
                if "NOGROUP" in str(error) or "no such key" in str(error):
                    return None
                raise
        return [
            GroupMember(_text(member["name"]), member["pending"], member["idle"])
            for member in found
        ]

    async def aclose(self) -> None:
        await self._client.aclose()


def _text(value: bytes | str) -> str:
    """Text of what the broker holds; bytes that are not UTF-8 become escapes."""
    return value if isinstance(value, str) else value.decode(errors="backslashreplace")
