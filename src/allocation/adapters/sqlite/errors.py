"""SQLite's errors translated into ours, in one place, by cause (asyncio only).

A value SQLite refuses is ``DataRefused`` (the input's fault: never retried); a file
that cannot be opened, read or written, or a connection gone, is
``DatabaseUnavailable`` (transient); a lost race (a taken log version, the file
locked past the busy timeout) is ``ConcurrencyConflict`` (the bus reruns the
command); a second record of a handled message is ``AlreadyProcessed``; a write
on a database opened for reading only is ``DatabaseReadOnly``.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from allocation.adapters.exceptions import DatabaseReadOnly, first_line
from allocation.domain.exceptions import AlreadyProcessed, ConcurrencyConflict
from allocation.service_layer.exceptions import DatabaseUnavailable, DataRefused

if TYPE_CHECKING:
    from types import TracebackType

# SQLite's primary result codes: a value too big or of the wrong type; a file that
# cannot be opened, read, written or trusted, or memory that ran out.
_DATA_CODES = frozenset({sqlite3.SQLITE_TOOBIG, sqlite3.SQLITE_MISMATCH})
_UNAVAILABLE_CODES = frozenset(
    {
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_NOTADB,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_AUTH,
        sqlite3.SQLITE_PROTOCOL,
        sqlite3.SQLITE_NOLFS,
    }
)
_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
# What aiosqlite says when its connection is closed (or was never opened).
_CLOSED = ("Connection closed", "no active connection")
# Besides sqlite3's own errors: what its binding of a value raises (an int beyond
# 64 bits, a lone surrogate), and aiosqlite's ValueError for a closed connection.
DRIVER_ERRORS = (sqlite3.Error, OverflowError, UnicodeEncodeError, ValueError)


class TranslatedErrors:
    """``with errors:`` re-raises a driver error raised inside as ours.

    One per database (it only holds what the messages quote); ``subject`` names
    the aggregate type whose append lost a race, when the caller knows it.
    """

    __slots__ = ("path", "read_only", "url")

    def __init__(self, url: str, *, path: str | None, read_only: bool) -> None:
        self.url = url
        self.path = path
        self.read_only = read_only

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if error is not None and isinstance(error, DRIVER_ERRORS):
            ours = self.translate(error)
            if ours is not error:
                raise ours from error

    def translate(
        self, error: BaseException, subject: str | None = None
    ) -> BaseException:
        """The AllocationError that ``error`` means, or ``error`` itself.

        What fits no cause, a bug such as a syntax error, is left as it is.
        """
        if isinstance(error, sqlite3.IntegrityError):
            return _integrity(error, subject)
        if isinstance(error, (OverflowError, UnicodeEncodeError, sqlite3.DataError)):
            # sqlite3 raises these before SQLite sees the value.
            return DataRefused(first_line(error))
        if isinstance(error, ValueError):
            if str(error) in _CLOSED:
                return DatabaseUnavailable(self.url, "the connection is closed")
            return error
        if not isinstance(error, sqlite3.Error):
            return error
        code = _code(error)
        text = first_line(error)
        if code in _BUSY_CODES:
            return ConcurrencyConflict("database", text)
        if code in _DATA_CODES:
            return DataRefused(text)
        if code == sqlite3.SQLITE_READONLY and self.read_only:
            return DatabaseReadOnly(self.path or self.url, "opened for reading only")
        if code in _UNAVAILABLE_CODES or _is_closed(error):
            return DatabaseUnavailable(self.url, text)
        return error


def _integrity(error: sqlite3.IntegrityError, subject: str | None) -> BaseException:
    text = first_line(error)
    if "UNIQUE" not in text and "PRIMARY KEY" not in text:
        # NOT NULL, CHECK: the value is wrong, not the timing.
        return DataRefused(text)
    if "processed_messages." in text:
        return AlreadyProcessed(text)
    if "event_log." in text:
        # Another writer appended this aggregate version first.
        return ConcurrencyConflict(subject or "event log", text)
    # Another transaction created the same key first: running the command again
    # sees that row and gives the precise answer (or succeeds).
    return ConcurrencyConflict("database row", text)


def _code(error: sqlite3.Error) -> int:
    # The extended code's low byte is the primary one (SQLITE_IOERR_READ is an
    # IOERR); an error raised by the sqlite3 module itself carries none.
    code: int | None = getattr(error, "sqlite_errorcode", None)
    return -1 if code is None else code & 0xFF


def _is_closed(error: sqlite3.Error) -> bool:
    # sqlite3's ProgrammingError for a connection closed under a statement.
    return isinstance(error, sqlite3.ProgrammingError) and "closed" in str(error)
