"""The database file as a user meets it: downgrades that lose data."""

from __future__ import annotations

import pytest

from allocation.adapters import migrations
from tests.e2e.conftest import Cli, error_line, snapshot

pytestmark = pytest.mark.e2e


def test_db_downgrade_that_would_lose_data_is_refused_without_yes(
    seeded: Cli,
) -> None:
    """Regression (issue 8): `db downgrade base` deleted every table, no warning."""
    before = snapshot(seeded.database)

    result = seeded("db", "downgrade", "base")

    line = error_line(result)
    assert result.returncode == 1
    assert "would lose data" in line
    assert "table products (1 row)" in line
    assert "table users (1 row)" in line
    assert "--yes" in line
    assert snapshot(seeded.database) == before
    assert seeded.ok("db", "current") == [
        f"database at revision {migrations.head_revision()}"
    ]


def test_db_downgrade_with_yes_goes_ahead(seeded: Cli) -> None:
    assert seeded.ok("db", "downgrade", "base", "--yes") == [
        "database at revision base (no schema)"
    ]


def test_db_downgrade_of_an_empty_database_needs_no_yes(migrated: Cli) -> None:
    assert migrated.ok("db", "downgrade", "base") == [
        "database at revision base (no schema)"
    ]
