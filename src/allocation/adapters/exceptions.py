"""Errors of the adapters, under ``AllocationError``.

AllocationError
├── SchemaOutOfDate       the database lacks migrations this code needs
│   └── SchemaTooNew      it was migrated by a newer version
├── MigrationFailed       alembic refused, e.g. an unknown revision
├── DataWouldBeLost       a downgrade would drop data, and was not allowed to
├── DatabaseFileUnusable  a SQLite file cannot be opened as the command needs
│   ├── DatabaseDirectoryMissing   its directory does not exist
│   └── DatabaseReadOnly  a command that writes meets a read-only file
└── (service_layer.exceptions: DatabaseUnavailable, DataRefused, BrokerRefused,
     BrokerUnavailable, UnreadableLogEntry: raised here, handled above)

The errors that quote a URL or a driver's text mask passwords themselves, so no caller
can forget to.
"""

from __future__ import annotations

from allocation.domain.exceptions import AllocationError, shorten
from allocation.service_layer.exceptions import cut_reason
from allocation.service_layer.masking import mask_secrets

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
        self.reason = cut_reason(mask_secrets(reason))
        super().__init__(f"migration failed: {self.reason}")


class DataWouldBeLost(AllocationError):
    """Raised when a downgrade would drop tables or columns holding rows, or rows."""

    def __init__(self, revision: str, lost: list[str]) -> None:
        self.revision = revision
        self.lost = lost
        super().__init__(
            f"downgrading to {shorten(revision)} would lose data: {', '.join(lost)}"
        )


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


def first_line(error: object) -> str:
    """The first line of an error's text (drivers append hints and details)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
