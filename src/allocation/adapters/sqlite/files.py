"""Where a SQLite database lives and how to open it: the URL, the file's checks.

A file is checked before SQLite touches it, so that a missing directory or a
read-only file is named as such instead of surfacing as SQLite's "unable to open
database file" on the first statement.
"""

from __future__ import annotations

import dataclasses
import os
import urllib.parse
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from allocation.adapters.exceptions import (
    DatabaseDirectoryMissing,
    DatabaseFileUnusable,
    DatabaseReadOnly,
)
from allocation.service_layer.exceptions import DatabaseUnavailable

_DRIVERS = ("sqlite+aiosqlite", "sqlite")
MEMORY = ":memory:"


@dataclasses.dataclass(frozen=True, slots=True)
class Location:
    """What to hand ``sqlite3.connect``.

    Attributes:
        target: the path, ``:memory:``, or a ``file:`` URI.
        uri: whether ``target`` is a URI.
        path: the file's absolute path (None in memory or for a user's URI).
    """

    target: str
    uri: bool
    path: str | None

    @property
    def in_memory(self) -> bool:
        return self.target == MEMORY or "mode=memory" in self.target


def locate(url: str, *, read_only: bool) -> Location:
    """The database a ``sqlite+aiosqlite:///path`` URL names, checked for use.

    ``sqlite:///relative``, ``sqlite:////absolute``, ``sqlite://`` (in memory) and
    ``sqlite:///file:...`` (a URI, opened as it says) are understood.

    Raises:
        DatabaseUnavailable: the URL is no SQLite URL, or has query options.
        DatabaseDirectoryMissing: the file's directory does not exist.
        DatabaseReadOnly: a read-write opening of a file that is read-only.
        DatabaseFileUnusable: a file that cannot even be read.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as error:
        raise DatabaseUnavailable(url, f"unusable URL ({error})") from error
    if parsed.drivername not in _DRIVERS:
        raise DatabaseUnavailable(url, "unusable URL (not a sqlite:// URL)")
    database = parsed.database or ""
    query = {key: str(value) for key, value in parsed.query.items() if key != "uri"}
    if database.startswith("file:"):
        uri = f"{database}?{urllib.parse.urlencode(query)}" if query else database
        return Location(uri, uri=True, path=None)
    if query:
        option = next(iter(query))
        raise DatabaseUnavailable(
            url, f"unusable URL (query option {option!r} is not accepted)"
        )
    if not database or database == MEMORY:
        return Location(MEMORY, uri=False, path=None)
    path = Path(database).absolute()
    try:
        options = _file_open_options(path, read_only=read_only)
    except OSError as error:  # e.g. a parent directory this user may not enter
        raise DatabaseFileUnusable(str(path), error.strerror or str(error)) from error
    if not options:
        return Location(str(path), uri=False, path=str(path))
    return Location(_file_uri(path, options), uri=True, path=str(path))


def _file_open_options(path: Path, *, read_only: bool) -> dict[str, str]:
    """SQLite URI parameters to open ``path`` with (none: a plain read-write open)."""
    directory = path.parent
    if not directory.is_dir():
        raise DatabaseDirectoryMissing(str(path), str(directory))
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    may_write = _writable(directory) and (not path.exists() or _writable(path))
    if not read_only:
        if path.exists() and not _writable(path):
            raise DatabaseReadOnly(str(path), "the file is not writable")
        if not _writable(directory) and not (wal.exists() and shm.exists()):
            # SQLite creates the file, its -wal and its -shm next to it.
            raise DatabaseReadOnly(str(path), "its directory is not writable")
        return {}
    if not wal.exists() and not shm.exists() and not may_write:
        # Nothing is waiting in a -wal file and no connection is open (it would
        # have made these files), and this process could create neither the -shm
        # file a WAL reader needs nor anything else: the file alone is the
        # database, read as it is, with nothing created next to it.
        return {"mode": "ro", "immutable": "1"}
    if not shm.exists() and not _writable(directory):
        raise DatabaseFileUnusable(
            str(path),
            "its -wal file holds changes SQLite can read only through a -shm file,"
            " which it cannot create: the directory is read-only",
        )
    return {"mode": "ro"}


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK)


def _file_uri(path: Path, options: dict[str, str]) -> str:
    # Quoted, so that a "?" or "#" in a directory name stays part of the path.
    return f"file:{urllib.parse.quote(str(path))}?{urllib.parse.urlencode(options)}"
