"""A PostgreSQL URL's libpq options become asyncpg's arguments; others are refused."""

from __future__ import annotations

import re

import pytest

from allocation.adapters import database
from allocation.adapters.postgres import database as postgres_database
from allocation.service_layer.exceptions import DatabaseUnavailable

BASE = "postgresql+asyncpg://app:pw@h:5432/db"


@pytest.mark.parametrize("mode", postgres_database.SSL_MODES)
@pytest.mark.parametrize("key", ["sslmode", "ssl"])
def test_an_ssl_mode_is_asyncpgs_ssl(key: str, mode: str) -> None:
    url, arguments = postgres_database.connect_options(f"{BASE}?{key}={mode}")

    assert arguments == {"ssl": mode}
    assert url.render_as_string(hide_password=False) == BASE


def test_an_application_name_is_a_server_setting() -> None:
    url, arguments = postgres_database.connect_options(
        f"{BASE}?application_name=shop&sslmode=disable"
    )

    assert arguments == {
        "ssl": "disable",
        "server_settings": {"application_name": "shop"},
    }
    assert not url.query


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("foo=1", "query option 'foo' is not accepted"),
        ("connect_timeout=5", "query option 'connect_timeout' is not accepted"),
        ("sslmode=maybe", "SSL mode 'maybe' is not accepted"),
        ("sslmode=disable&sslmode=require", "'sslmode' is given more than once"),
        ("sslmode=disable&ssl=disable", "'ssl' and 'sslmode' are both given"),
    ],
)
def test_any_other_query_is_refused(query: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        postgres_database.connect_options(f"{BASE}?{query}")


def test_an_engine_takes_the_translated_options() -> None:
    engine = database.create_engine(f"{BASE}?sslmode=disable&application_name=shop")

    assert not engine.url.query


def test_an_invalid_sqlite_url_is_one_balanced_line() -> None:
    """Regression: "unusable URL (Invalid SQLite URL: ..." lost its closing parenthesis."""
    with pytest.raises(DatabaseUnavailable) as refused:
        database.create_engine("sqlite://host/x.db")

    message = str(refused.value)
    assert "\n" not in message
    assert message.count("(") == message.count(")")
    assert message.endswith("(Invalid SQLite URL: sqlite+aiosqlite://host/x.db)")
