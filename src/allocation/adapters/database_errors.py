"""Errors met through SQLAlchemy (migrations, the schema check) made ours (asyncio only).

SQLAlchemy wraps the driver's exception; underneath it is what the engine packages
meet on their own connections, so each engine's module translates it, by the same
rules: one translation per engine, whichever way the statement went.
"""

from __future__ import annotations

import contextlib
import sqlite3
from typing import TYPE_CHECKING

from sqlalchemy import exc

from allocation.adapters.exceptions import first_line
from allocation.adapters.postgres import errors as postgres_errors
from allocation.adapters.sqlite import errors as sqlite_errors
from allocation.service_layer.exceptions import DatabaseUnavailable, DataRefused

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import URL


@contextlib.contextmanager
def translated_errors(url: str | URL) -> Iterator[None]:
    """Re-raise driver errors raised inside as ours."""
    try:
        yield
    except Exception as error:
        ours = translate(error, _plain(url))
        if ours is not error:
            raise ours from error
        raise


def translate(error: BaseException, url: str) -> BaseException:
    """The AllocationError that ``error`` means, or ``error`` itself."""
    if isinstance(error, exc.StatementError) and not isinstance(error, exc.DBAPIError):
        # A bind processor refused the value before any driver saw it (a str for
        # a Date column on SQLite).
        if isinstance(error.orig, (TypeError, ValueError, ArithmeticError)):
            return DataRefused(first_line(error.orig))
        return error
    driver_error = _driver_error(error)
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return DatabaseUnavailable(url, first_line(driver_error))
    if isinstance(driver_error, (sqlite3.Error, OverflowError, UnicodeEncodeError)):
        sqlite = sqlite_errors.TranslatedErrors(url, path=None, read_only=False)
        ours = sqlite.translate(driver_error)
    elif isinstance(driver_error, postgres_errors.DRIVER_ERRORS):
        ours = postgres_errors.translate(driver_error, url)
    else:
        return error
    return error if ours is driver_error else ours


def _driver_error(error: BaseException) -> BaseException:
    """The driver's own exception under SQLAlchemy's wrappers."""
    cause: BaseException | None = (
        error.orig if isinstance(error, exc.DBAPIError) else error
    )
    if cause is None:
        return error
    # SQLAlchemy's asyncpg adapter raises its own class from asyncpg's.
    underneath = cause.__cause__
    if isinstance(underneath, postgres_errors.DRIVER_ERRORS):
        return underneath
    return cause


def _plain(url: str | URL) -> str:
    # Rendered in full here: the error classes mask the password themselves.
    return url if isinstance(url, str) else url.render_as_string(hide_password=False)
