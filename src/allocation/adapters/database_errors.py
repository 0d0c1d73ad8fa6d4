"""Driver errors translated into ours, in one place, by cause (asyncio only).

A value the database refuses is ``DataRefused`` (the input's fault: never retried);
a lost or refused connection is ``DatabaseUnavailable`` (transient); a lost race is
``ConcurrencyConflict`` (the bus reruns the command); a unique constraint names what
it guards (an email, a processed message).
"""

from __future__ import annotations

import contextlib
import sqlite3
from typing import TYPE_CHECKING

import asyncpg
from sqlalchemy import exc
from sqlalchemy.orm.exc import StaleDataError

from allocation.domain.exceptions import (
    AlreadyProcessed,
    ConcurrencyConflict,
    EmailAlreadyRegistered,
)
from allocation.service_layer.exceptions import DatabaseUnavailable, DataRefused

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from sqlalchemy.engine import URL


# What the raw asyncpg statements of postgres_driver raise, unwrapped by SQLAlchemy.
_DRIVER_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
# SQLSTATEs that mean "try again": serialization failure and deadlock.
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
# SQLSTATE class 22, "data exception": a value out of range, too long, not valid
# for its type, a NUL byte; asyncpg also gives 22000 to an argument it cannot encode.
_DATA_SQLSTATE_CLASS = "22"
# The database cannot be reached or used, whatever the statement: connection
# exception (08), insufficient resources such as too many connections (53),
# operator intervention such as a shutdown (57), system error (58), refused
# credentials (28), no such database (3D); read-only and permission denied stop
# every write alike.
_UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "57", "58", "28", "3D"})
_UNAVAILABLE_SQLSTATES = frozenset({"25006", "42501"})
# SQLite's primary result codes: a value too big or of the wrong type; and a file
# that cannot be opened, read, written or trusted, or memory that ran out.
_SQLITE_DATA_CODES = frozenset({sqlite3.SQLITE_TOOBIG, sqlite3.SQLITE_MISMATCH})
_SQLITE_UNAVAILABLE_CODES = frozenset(
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


@contextlib.contextmanager
def translated_errors(url: str | URL, new_emails: Iterable[str] = ()) -> Iterator[None]:
    """Re-raise driver errors as ours; ``new_emails`` name a duplicate-email failure."""
    try:
        yield
    except (exc.SQLAlchemyError, OSError, *_DRIVER_ERRORS) as error:
        ours = translate(error, _plain(url), new_emails)
        if ours is error:
            raise
        raise ours from error


def translate(
    error: BaseException, url: str, new_emails: Iterable[str] = ()
) -> BaseException:
    """Return the AllocationError that ``error`` means, or ``error`` itself.

    By cause: a lost race is a ConcurrencyConflict (rerun), a value the database
    refuses is DataRefused (the input's fault), a database that cannot be reached or
    used is DatabaseUnavailable (try later). What fits none of them, a bug such as
    a syntax error, is left as it is.
    """
    if isinstance(error, StaleDataError):
        return ConcurrencyConflict("product", "it changed since it was read")
    driver_error = _driver_error(error)
    if isinstance(
        error, (exc.IntegrityError, asyncpg.IntegrityConstraintViolationError)
    ):
        text = str(driver_error)
        if "users.email" in text or "uq_users_email" in text:
            return EmailAlreadyRegistered(next(iter(new_emails), "?"))
        if "processed_messages" in text:
            return AlreadyProcessed(text)
        # Another transaction created the same key first: running the command again
        # sees that row and gives the precise answer (or succeeds).
        return ConcurrencyConflict("database row", text)
    if _is_retryable(driver_error):
        return ConcurrencyConflict("database", str(driver_error))
    if _is_refused_value(error, driver_error):
        return DataRefused(first_line(driver_error))
    if _is_unavailable(error, driver_error):
        return DatabaseUnavailable(url, first_line(driver_error))
    return error


def _driver_error(error: BaseException) -> BaseException:
    """The driver's own exception under SQLAlchemy's wrappers."""
    # A StatementError (DBAPIError included) holds what was raised underneath.
    cause: BaseException | None = (
        error.orig if isinstance(error, exc.StatementError) else error
    )
    # SQLAlchemy's asyncpg adapter raises its own class from asyncpg's.
    underneath = cause.__cause__ if cause is not None else None
    found: BaseException = error if cause is None else cause
    if isinstance(underneath, _DRIVER_ERRORS):
        found = underneath
    return found


def _sqlstate(driver_error: BaseException) -> str:
    return str(getattr(driver_error, "sqlstate", None) or "")


def _is_retryable(driver_error: BaseException) -> bool:
    text = str(driver_error).lower()
    if "database is locked" in text or "database is busy" in text:
        return True
    return _sqlstate(driver_error) in _RETRYABLE_SQLSTATES


def _is_refused_value(error: BaseException, driver_error: BaseException) -> bool:
    if isinstance(error, exc.DataError) or isinstance(driver_error, sqlite3.DataError):
        return True
    if _sqlstate(driver_error).startswith(_DATA_SQLSTATE_CLASS):
        return True
    if isinstance(driver_error, sqlite3.Error):
        return _sqlite_code(driver_error) in _SQLITE_DATA_CODES
    # asyncpg's client-side "invalid input" of older versions: an InterfaceError.
    if isinstance(driver_error, asyncpg.InterfaceError) and isinstance(
        driver_error, ValueError
    ):
        return True
    # A bind processor refused the value before any driver saw it (a str for a
    # Date column on SQLite): SQLAlchemy wraps that in a bare StatementError.
    return (
        isinstance(error, exc.StatementError)
        and not isinstance(error, exc.DBAPIError)
        and isinstance(error.orig, (TypeError, ValueError, ArithmeticError))
    )


def _is_unavailable(error: BaseException, driver_error: BaseException) -> bool:
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(
        driver_error,
        (
            OSError,
            asyncpg.PostgresConnectionError,
            asyncpg.InterfaceError,
            asyncpg.InternalClientError,
        ),
    ):
        return True
    if isinstance(driver_error, sqlite3.Error):
        return _sqlite_code(driver_error) in _SQLITE_UNAVAILABLE_CODES
    sqlstate = _sqlstate(driver_error)
    return sqlstate in _UNAVAILABLE_SQLSTATES or (
        sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES
    )


def _sqlite_code(error: sqlite3.Error) -> int:
    # The extended code's low byte is the primary one (SQLITE_IOERR_READ is an IOERR);
    # an error raised by our own driver code carries none.
    code: int | None = getattr(error, "sqlite_errorcode", None)
    return -1 if code is None else code & 0xFF


def _plain(url: str | URL) -> str:
    # Rendered in full here: the error classes mask the password themselves.
    return url if isinstance(url, str) else url.render_as_string(hide_password=False)


def first_line(error: object) -> str:
    """The first line of an error's text (drivers append hints and examples)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
