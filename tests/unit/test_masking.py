"""Passwords are masked in every URL we print, whether it parses or not (issue 8)."""

from __future__ import annotations

import pytest

from allocation.adapters.exceptions import MigrationFailed
from allocation.config import ConfigurationError
from allocation.service_layer.exceptions import BrokerUnavailable, DatabaseUnavailable
from allocation.service_layer.masking import mask_secrets, mask_url

SECRET = "s3cret"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (
            f"postgresql+asyncpg://app:{SECRET}@db.example.com:5432/shop",
            "postgresql+asyncpg://app:***@db.example.com:5432/shop",
        ),
        (f"redis://:{SECRET}@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        (f"rediss://user:{SECRET}@cache/1", "rediss://user:***@cache/1"),
        (f"unix://:{SECRET}@/run/redis.sock?db=2", "unix://:***@/run/redis.sock?db=2"),
        # Percent-encoded, as a parseable URL has it.
        ("postgresql://app:p%40ss%3Aw%25rd@h/db", "postgresql://app:***@h/db"),
        # Not encoded, so no parser reads it right: still masked whole.
        ("postgresql://app:p@ss@h/db", "postgresql://app:***@h/db"),
        ("postgresql://app:p:ss@h/db", "postgresql://app:***@h/db"),
        ("postgresql://app:p/ss%@h/db", "postgresql://app:***@h/db"),
        ("postgresql://app:p ss word@h/db", "postgresql://app:***@h/db"),
        (
            "postgresql://app:a@b?c#d@h:notaport/db",
            "postgresql://app:***@h:notaport/db",
        ),
        ("app:s3cret@h/db", "app:***@h/db"),
        (
            f"postgresql://app@h/db?sslmode=require&password={SECRET}",
            "postgresql://app@h/db?sslmode=require&password=***",
        ),
        (f"redis://h/0?PassWord={SECRET}#x", "redis://h/0?PassWord=***#x"),
    ],
)
def test_a_urls_password_is_masked(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize(
    "url",
    [
        "sqlite+aiosqlite:///allocation.db",
        "sqlite:////tmp/a@b.db",
        "sqlite:////tmp/a:b@c.db",
        "postgresql://app@h:5432/db",
        "redis://127.0.0.1:6379/0",
        "nonsense",
        "",
    ],
)
def test_a_url_without_password_is_unchanged(url: str) -> None:
    assert mask_url(url) == url


def test_masking_twice_changes_nothing_more() -> None:
    once = mask_url(f"postgresql://app:p@ss:{SECRET}@h/db?password=x")

    assert mask_url(once) == once


def test_every_url_in_running_text_is_masked() -> None:
    text = (
        f"relaying to redis://:{SECRET}@h:1/0, database "
        f"'postgresql://app:{SECRET}@h/db' (password={SECRET}) and ivan@example.com"
    )

    masked = mask_secrets(text)

    assert SECRET not in masked
    assert masked == (
        "relaying to redis://:***@h:1/0, database 'postgresql://app:***@h/db' "
        "(password=*** and ivan@example.com"
    )


def test_a_known_url_is_masked_whole_in_text_even_with_spaces() -> None:
    url = f"postgresql://app:{SECRET} x@h/db"

    masked = mask_secrets(f"could not parse {url!r} at all", url)

    assert SECRET not in masked
    assert "postgresql://app:***@h/db" in masked


@pytest.mark.parametrize(
    "error",
    [
        DatabaseUnavailable(f"postgresql://app:p@{SECRET}@h/db", "refused"),
        DatabaseUnavailable(
            f"postgresql://app:{SECRET}@h:x/db",
            f"unusable URL (cannot parse 'postgresql://app:{SECRET}@h:x/db')",
        ),
        BrokerUnavailable(f"redis://:{SECRET}@h:1/0", "Connection refused"),
        MigrationFailed(f"no database at postgresql://app:{SECRET}@h/db"),
        ConfigurationError("DATABASE_URL", f"nonsense://app:{SECRET}@h", "a URL"),
    ],
    ids=type,
)
def test_errors_that_quote_a_url_mask_it_themselves(error: Exception) -> None:
    assert SECRET not in str(error)
    assert SECRET not in repr(vars(error))


def test_a_reason_quoting_input_shows_its_control_characters_escaped() -> None:
    error = MigrationFailed("Can't locate revision identified by '\x1b[2J'")

    assert "\x1b" not in str(error)
    assert "\\x1b[2J" in str(error)


def test_a_huge_url_is_cut_in_an_error_line() -> None:
    error = DatabaseUnavailable(f"postgresql://u:{SECRET}@h/{'d' * 10_000}", "refused")

    assert len(str(error)) < 300
    assert SECRET not in str(error)
