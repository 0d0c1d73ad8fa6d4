"""asyncpg's errors translated into ours, in this one place (asyncio only).

By cause: a lost race is ``ConcurrencyConflict`` (the bus reruns the command); a
value the database refuses is ``DataRefused`` (the input's fault: never retried);
a database that cannot be reached or used is ``DatabaseUnavailable`` (try later).
A unique violation names what it guards: an aggregate version, a processed
message, a claim. What fits none of them, a bug such as a syntax error, is left
as it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg

from allocation.adapters.exceptions import first_line
from allocation.domain.exceptions import AlreadyProcessed, ConcurrencyConflict
from allocation.service_layer.exceptions import (
    ClaimTaken,
    DatabaseUnavailable,
    DataRefused,
)
from allocation.service_layer.ports import Claim

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

# What asyncpg raises: the server's answers, and its own client-side errors.
DRIVER_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,  # refused, reset, timed out (TimeoutError is an OSError)
)
# SQLSTATEs that mean "try again": serialization failure and deadlock.
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
# SQLSTATE class 22, "data exception": a value out of range, too long, not valid
# for its type, a NUL byte.
_DATA_SQLSTATE_CLASS = "22"
# The database cannot be reached or used, whatever the statement: connection
# exception (08), insufficient resources such as too many connections (53),
# operator intervention such as a shutdown (57), system error (58), refused
# credentials (28), no such database (3D); read-only and permission denied stop
# every write alike.
_UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "57", "58", "28", "3D"})
_UNAVAILABLE_SQLSTATES = frozenset({"25006", "42501"})
_UNIQUE_VIOLATION = "23505"


class translated:
    """Re-raise driver errors met inside ``with translated(url):`` as ours.

    ``broken`` is called first when the error leaves the connection in a state
    nobody can vouch for (lost, cancelled midway, a client-side failure), so
    its owner discards it instead of reusing it. A plain class, not a generator:
    it wraps every statement of the hot path.
    """

    __slots__ = ("_broken", "_url")

    def __init__(self, url: str, broken: Callable[[], None] | None = None) -> None:
        self._url = url
        self._broken = broken

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if error is None:
            return
        if self._broken is not None and breaks_connection(error):
            self._broken()
        ours = translate(error, self._url)
        if ours is not error:
            raise ours from error


def breaks_connection(error: BaseException) -> bool:
    """Whether the connection may be unusable after ``error`` (anything but an
    answer from a server still talking to us, or a value asyncpg refused to send)."""
    if isinstance(error, asyncpg.PostgresConnectionError):
        return True
    if isinstance(error, asyncpg.PostgresError):
        return False
    # asyncpg's DataError: an argument it could not encode, refused before sending.
    return not (
        isinstance(error, asyncpg.InterfaceError) and isinstance(error, ValueError)
    )


def translate(error: BaseException, url: str) -> BaseException:
    """Return the AllocationError that ``error`` means, or ``error`` itself."""
    unchanged = error  # typed apart: asyncpg's untyped classes would make it Any
    if not isinstance(error, DRIVER_ERRORS):
        return unchanged  # cancellation, or a bug of ours
    sqlstate = str(getattr(error, "sqlstate", None) or "")
    if sqlstate == _UNIQUE_VIOLATION:
        return _unique_violation(error)
    if sqlstate in _RETRYABLE_SQLSTATES:
        return ConcurrencyConflict("database", first_line(error))
    if sqlstate.startswith(_DATA_SQLSTATE_CLASS) or (
        # asyncpg's DataError: an argument it cannot encode for its column.
        isinstance(error, asyncpg.InterfaceError) and isinstance(error, ValueError)
    ):
        return DataRefused(first_line(error))
    if (
        isinstance(
            error,
            (
                OSError,
                asyncpg.PostgresConnectionError,
                asyncpg.InterfaceError,
                asyncpg.InternalClientError,
            ),
        )
        or sqlstate in _UNAVAILABLE_SQLSTATES
        or sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES
    ):
        return DatabaseUnavailable(url, first_line(error))
    return unchanged


def _unique_violation(error: BaseException) -> BaseException:
    table = getattr(error, "table_name", None)
    detail = str(getattr(error, "detail", None) or error)
    key = _key_values(detail)
    if table == "event_log" and len(key) == 3:
        # (aggregate type, id, version): another writer appended it first.
        return ConcurrencyConflict(key[0], detail)
    if table == "processed_messages":
        return AlreadyProcessed(detail)
    if table == "claims" and len(key) == 2:
        return ClaimTaken(Claim(kind=key[0], value=key[1], owner=""))
    # Another transaction created the same key first: running the command again
    # sees that row and gives the precise answer (or succeeds).
    return ConcurrencyConflict("database row", detail)


def _key_values(detail: str) -> list[str]:
    """The values of ``Key (a, b)=(x, y) already exists.``; kinds and types hold no
    comma, so only the last value may contain ", " and keeps it."""
    start, end = detail.find(")=("), detail.rfind(") already exists")
    if start < 0 or end < start:
        return []
    columns = detail[detail.find("(") + 1 : start].count(",") + 1
    return detail[start + 3 : end].split(", ", columns - 1)
