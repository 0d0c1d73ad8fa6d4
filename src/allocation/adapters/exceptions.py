"""Errors of the adapters, under ``AllocationError``.

AllocationError
├── SchemaOutOfDate       the database lacks migrations this code needs
│   └── SchemaTooNew      it was migrated by a newer version
├── MigrationFailed       alembic refused, e.g. an unknown revision
├── UnreadableLogEntry    a log row holds no event this version can read
├── DataWouldBeLost       a downgrade would drop data, and was not allowed to
├── DatabaseUnavailable   the database cannot be reached, opened or written (transient)
├── DatabaseFileUnusable  a SQLite file cannot be opened as the command needs
│   ├── DatabaseDirectoryMissing   its directory does not exist
│   └── DatabaseReadOnly  a command that writes meets a read-only file
├── DataRefused           the database refused a value (the input's fault: not retried)
├── BrokerRefused         the broker answered no (a key of another type, ...)
└── BrokerUnavailable     the message broker cannot be reached (transient)

The errors that quote a URL or a driver's text mask passwords themselves, so no caller
can forget to.
"""

from __future__ import annotations

import re

from allocation.domain.exceptions import AllocationError, shorten
from allocation.service_layer.masking import mask_secrets, mask_url

# A driver's reason quotes the value it refused: never more than this much of it.
_MAX_REASON = 160
_MAX_URL = 100
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Paths are quoted whole up to this length: their last part matters most.
_PATH_LIMIT = 300


class SchemaOutOfDate(AllocationError):
    """Raised when the database schema is missing or behind the code's migrations."""

    def __init__(self, current: str | None, expected: str) -> None:
        self.current = current
        self.expected = expected
        where = "has no schema" if current is None else f"is at revision {current}"
        super().__init__(
            f"the database {where}, this version needs {expected}: "
            "run `allocation db upgrade`"
        )


class SchemaTooNew(SchemaOutOfDate):
    """Raised when the database was migrated by a newer version of the application."""

    def __init__(self, current: str, expected: str) -> None:
        self.current = current
        self.expected = expected
        AllocationError.__init__(
            self,
            f"the database is at revision {current}, which this version does not know "
            f"(it needs {expected}): it was migrated by a newer version of allocation",
        )


class MigrationFailed(AllocationError):
    """Raised when a migration command cannot run, e.g. for an unknown revision."""

    def __init__(self, reason: str) -> None:
        self.reason = _cut(mask_secrets(reason))
        super().__init__(f"migration failed: {self.reason}")


class UnreadableLogEntry(AllocationError):
    """Raised when a row of the event log holds no event this version can read: it
    was edited by hand, written by another program, or by a newer version."""

    def __init__(self, position: int, reason: str) -> None:
        self.position = position
        self.reason = _cut(reason)
        super().__init__(
            f"the event log's entry at position {position} cannot be read: "
            f"{self.reason}"
        )


class DataWouldBeLost(AllocationError):
    """Raised when a downgrade would drop tables or columns holding rows, or rows."""

    def __init__(self, revision: str, lost: list[str]) -> None:
        self.revision = revision
        self.lost = lost
        super().__init__(
            f"downgrading to {shorten(revision)} would lose data: {', '.join(lost)}"
        )


class DatabaseUnavailable(AllocationError):
    """Raised when the database cannot be reached, opened or written.

    A connection refused or lost, too many connections, a file that cannot be
    opened: the same command may succeed later, so consumers retry it.
    """

    def __init__(self, url: str, reason: str) -> None:
        self.url = mask_url(url)
        self.reason = _cut(mask_secrets(reason, url))
        super().__init__(f"database {_cut_url(self.url)} is unavailable: {self.reason}")


class DataRefused(AllocationError):
    """Raised when the database refuses a value: out of range, too long, not storable.

    The input is at fault, not the database: the same command fails again, so the
    CLI exits 1 and a consumer dead-letters it instead of retrying.
    """

    def __init__(self, reason: str) -> None:
        self.reason = _cut(mask_secrets(reason))
        super().__init__(f"the database refused a value: {self.reason}")


class DatabaseFileUnusable(AllocationError):
    """Raised when a SQLite database file cannot be opened as the command needs."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"database {shorten(path, _PATH_LIMIT)}: {reason}")


class DatabaseDirectoryMissing(DatabaseFileUnusable):
    """Raised when the directory of a SQLite database file does not exist."""

    def __init__(self, path: str, directory: str) -> None:
        self.path = path
        self.directory = directory
        self.reason = "its directory does not exist"
        AllocationError.__init__(
            self,
            f"the database's directory {shorten(directory, _PATH_LIMIT)}"
            " does not exist",
        )


class DatabaseReadOnly(DatabaseFileUnusable):
    """Raised when a command that writes meets a SQLite file it may not write."""

    def __init__(self, path: str, why: str) -> None:
        self.why = why
        super().__init__(
            path,
            f"it is read-only ({why}) and this command writes to it;"
            " commands that only read still work",
        )


class BrokerRefused(AllocationError):
    """Raised when the broker answers but refuses a command: a key of another type
    (WRONGTYPE), a database number it does not have, a malformed id. Retrying the
    same command cannot help; the setting or the data must change."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = mask_url(url)
        self.reason = _cut(mask_secrets(reason, url))
        super().__init__(f"broker {_cut_url(self.url)} refused: {self.reason}")


class BrokerUnavailable(AllocationError):
    """Raised when the message broker cannot be reached or refuses a write."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = mask_url(url)
        self.reason = _cut(mask_secrets(reason, url))
        super().__init__(f"broker {_cut_url(self.url)} is unavailable: {self.reason}")


def _cut_url(url: str) -> str:
    """A masked URL as an error line quotes it: the start names the database."""
    return url if len(url) <= _MAX_URL else f"{url[: _MAX_URL - 1]}…"


def _cut(reason: str) -> str:
    """The first line of ``reason``, at most about _MAX_REASON characters.

    A reason may quote input (a revision, a value): a control character left in it
    would reach the terminal, so each is shown escaped.
    """
    lines = reason.strip().splitlines()
    line = _CONTROL.sub(
        lambda match: repr(match.group())[1:-1], lines[0] if lines else ""
    )
    line = line or "no reason given"
    if len(line) <= _MAX_REASON:
        return line
    return f"{line[: _MAX_REASON - 1]}… ({len(line)} characters)"
