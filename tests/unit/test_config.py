"""Every setting is checked before anything runs: one error naming it (issue 8)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from allocation.config import ConfigurationError, Settings

README = Path(__file__).resolve().parents[2] / "README.md"

WHOLE_NUMBERS = (
    "ALLOCATION_DATABASE_POOL_SIZE",
    "ALLOCATION_RETRY_ATTEMPTS",
    "ALLOCATION_CONFLICT_RETRIES",
    "ALLOCATION_CATCH_UP_BATCH",
    "ALLOCATION_RELAY_BATCH",
    "ALLOCATION_CLAIM_IDLE_MS",
)
SECONDS = (
    "ALLOCATION_RETRY_DELAY",
    "ALLOCATION_CATCH_UP_INTERVAL",
    "ALLOCATION_RELAY_INTERVAL",
    "ALLOCATION_IDEMPOTENCY_TTL",
    "ALLOCATION_IDEMPOTENCY_LEASE",
)
NAMES = (
    "ALLOCATION_BROKER_STREAM",
    "ALLOCATION_COMMAND_STREAM",
    "ALLOCATION_CONSUMER_GROUP",
)
EMAILS = ("ALLOCATION_STOCK_DESK_EMAIL", "SMTP_SENDER")
FLAGS = ("SMTP_STARTTLS", "SMTP_TLS", "SMTP_ALLOW_PLAINTEXT_AUTH")
BLANKS = ("", " ", "\t")

BAD_VALUES: list[tuple[str, str]] = [
    *(
        (variable, value)
        for variable in WHOLE_NUMBERS
        for value in (
            *BLANKS,
            "x",
            "1.5",
            "1e3",
            "1_000",
            "+5",
            "５",
            "nan",
            "-1",
            "2147483648",
        )
    ),
    *((variable, "0") for variable in WHOLE_NUMBERS if "CONFLICT" not in variable),
    *(
        (variable, value)
        for variable in SECONDS
        for value in (
            *BLANKS,
            "x",
            "nan",
            "NaN",
            "inf",
            "-inf",
            "infinity",
            "1e999",
            "-0.5",
            "1_0",
            "0x10",
            "１",
            "86400.5",
            "1e300",
        )
    ),
    ("ALLOCATION_RELAY_INTERVAL", "0"),
    ("ALLOCATION_IDEMPOTENCY_TTL", "0"),
    ("ALLOCATION_IDEMPOTENCY_LEASE", "0.5"),
    *(
        ("SMTP_PORT", value)
        for value in (*BLANKS, "x", "0", "-25", "65536", "70000", "25.0", "２５")
    ),
    *(
        (variable, value)
        for variable in NAMES
        for value in (*BLANKS, " allocation", "allocation ", "a\nb", "a\x1b[2J")
    ),
    *(
        (variable, value)
        for variable in EMAILS
        for value in (*BLANKS, "nobody", "a@b", "a b@example.com", "a@@example.com")
    ),
    *(
        (variable, value)
        for variable in FLAGS
        for value in (*BLANKS, "maybe", "enabled", "2", "y", "t")
    ),
    *(
        ("DATABASE_URL", value)
        for value in (
            *BLANKS,
            "nonsense",
            "nonsense://x",
            "mysql://app:pw@h/db",
            "postgresql://postgres:SE@CR/ETPW@127.0.0.1:5432/db",  # an unencoded @
            "postgresql+psycopg2://app@h/db",
            "sqlite+pysqlite:///x.db",
            "postgresql://app:pw@h:notaport/db",
            "postgresql://app:pw@h:70000/db",
            "postgresql://app:pw@h:0/db",
            "postgresql://app:p@ss@h/db",
            "postgresql://app:pw@h/db?foo=1",
            "postgresql://app:pw@h/db?connect_timeout=5",
            "postgresql://app:pw@h/db?sslmode=maybe",
            "postgresql://app:pw@h/db?sslmode=require&ssl=disable",
        )
    ),
    *(
        ("BROKER_URL", value)
        for value in (
            "garbage",
            "http://h:6379/0",
            "redis://h:notaport/0",
            "redis://h:70000/0",
            "redis://h:0/0",
            "redis://h/notadb",
            "redis://:p/ss@h/0",
            "redis://:p?ss@h/0",
            "unix://",
        )
    ),
]


@pytest.mark.parametrize(("variable", "value"), BAD_VALUES)
def test_a_bad_value_is_refused_naming_its_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_environment({variable: value, "SMTP_HOST": "mail"})

    assert refused.value.variable == variable
    assert str(refused.value).startswith(f"{variable}=")


@pytest.mark.parametrize("variable", ["ALLOCATION_STOCK_DESK_EMAIL", "SMTP_PORT"])
def test_a_setting_is_checked_even_where_unused(variable: str) -> None:
    # SMTP_PORT is used only with SMTP_HOST; it is checked without it too.
    with pytest.raises(ConfigurationError, match=variable):
        Settings.from_environment({variable: "x"})


def test_nothing_set_means_every_default() -> None:
    assert Settings.from_environment({}) == Settings()


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("ALLOCATION_RETRY_DELAY", " 0.25 ", "retry_delay", 0.25),
        ("ALLOCATION_RETRY_DELAY", "1e-3", "retry_delay", 0.001),
        ("ALLOCATION_RETRY_DELAY", "0", "retry_delay", 0.0),
        ("ALLOCATION_RETRY_DELAY", "86400", "retry_delay", 86400.0),
        ("ALLOCATION_CATCH_UP_INTERVAL", "0", "catch_up_interval", 0.0),
        ("ALLOCATION_RELAY_INTERVAL", ".5", "relay_interval", 0.5),
        ("ALLOCATION_IDEMPOTENCY_TTL", "3600", "idempotency_ttl", 3600.0),
        ("ALLOCATION_IDEMPOTENCY_LEASE", " 1 ", "idempotency_lease", 1.0),
        ("ALLOCATION_CONFLICT_RETRIES", "0", "conflict_retries", 0),
        ("ALLOCATION_RETRY_ATTEMPTS", "2147483647", "retry_attempts", 2**31 - 1),
        ("ALLOCATION_CLAIM_IDLE_MS", " 100 ", "claim_idle_ms", 100),
        ("ALLOCATION_STOCK_DESK_EMAIL", " Desk@Example.COM ", "stock_desk_email", "desk@example.com"),
        ("ALLOCATION_CONSUMER_GROUP", "группа", "consumer_group", "группа"),
        ("DATABASE_URL", "postgres://app:p%40ss@h:5432/db", "database_url", "postgres://app:p%40ss@h:5432/db"),
        ("DATABASE_URL", "postgres+asyncpg://h/db", "database_url", "postgres+asyncpg://h/db"),
        ("DATABASE_URL", "postgresql://h/db?sslmode=disable", "database_url", "postgresql://h/db?sslmode=disable"),
        ("DATABASE_URL", "postgresql://h/db?sslmode=verify-full&application_name=shop", "database_url", "postgresql://h/db?sslmode=verify-full&application_name=shop"),
        ("DATABASE_URL", "postgresql://h/db?ssl=require", "database_url", "postgresql://h/db?ssl=require"),
        ("DATABASE_URL", "sqlite:///x.db", "database_url", "sqlite:///x.db"),
        ("DATABASE_URL", "sqlite+aiosqlite:////tmp/a@b.db", "database_url", "sqlite+aiosqlite:////tmp/a@b.db"),
        ("BROKER_URL", "", "broker_url", None),
        ("BROKER_URL", "redis://:p%40ss@127.0.0.1:6379/2", "broker_url", "redis://:p%40ss@127.0.0.1:6379/2"),
        ("BROKER_URL", "rediss://cache.example.com", "broker_url", "rediss://cache.example.com"),
        ("BROKER_URL", "unix:///run/redis.sock?db=1", "broker_url", "unix:///run/redis.sock?db=1"),
    ],
)  # fmt: skip
def test_a_good_value_is_read(
    variable: str, value: str, field: str, expected: object
) -> None:
    assert getattr(Settings.from_environment({variable: value}), field) == expected


@pytest.mark.parametrize("word", ["1", "true", "TRUE", "yes", "Yes", "on", " ON "])
def test_a_flag_is_on_in_every_documented_spelling(word: str) -> None:
    smtp = Settings.from_environment({"SMTP_HOST": "mail", "SMTP_STARTTLS": word}).smtp

    assert smtp is not None
    assert smtp.start_tls


@pytest.mark.parametrize("word", ["0", "false", "False", "no", "off", "OFF"])
def test_a_flag_is_off_in_every_documented_spelling(word: str) -> None:
    smtp = Settings.from_environment({"SMTP_HOST": "mail", "SMTP_TLS": word}).smtp

    assert smtp is not None
    assert not smtp.use_tls


CREDENTIALS = {"SMTP_HOST": "mail", "SMTP_USERNAME": "app", "SMTP_PASSWORD": "pw"}


def test_smtp_auth_in_plain_text_is_refused() -> None:
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_environment(CREDENTIALS)

    for variable in ("SMTP_USERNAME", "SMTP_PASSWORD", "SMTP_STARTTLS", "SMTP_TLS"):
        assert variable in str(refused.value)
    assert "SMTP_ALLOW_PLAINTEXT_AUTH=yes" in str(refused.value)
    assert "pw" not in str(refused.value).split()


@pytest.mark.parametrize(
    "setting",
    [
        {"SMTP_STARTTLS": "on"},
        {"SMTP_TLS": "yes", "SMTP_PORT": "465"},
        {"SMTP_ALLOW_PLAINTEXT_AUTH": "true"},
    ],
)
def test_smtp_auth_goes_over_tls_or_where_allowed(setting: dict[str, str]) -> None:
    smtp = Settings.from_environment(CREDENTIALS | setting).smtp

    assert smtp is not None
    assert (smtp.username, smtp.password) == ("app", "pw")
    assert "pw" not in repr(smtp)


def test_smtp_without_credentials_needs_no_tls() -> None:
    smtp = Settings.from_environment({"SMTP_HOST": "mail"}).smtp

    assert smtp is not None
    assert not smtp.start_tls
    assert not smtp.use_tls


def test_starttls_and_implicit_tls_together_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="SMTP_STARTTLS and SMTP_TLS"):
        Settings.from_environment(
            {"SMTP_HOST": "mail", "SMTP_STARTTLS": "yes", "SMTP_TLS": "yes"}
        )


@pytest.mark.parametrize("given", ["SMTP_USERNAME", "SMTP_PASSWORD"])
def test_a_username_without_password_is_refused(given: str) -> None:
    missing = ({"SMTP_USERNAME", "SMTP_PASSWORD"} - {given}).pop()

    with pytest.raises(ConfigurationError) as refused:
        Settings.from_environment({"SMTP_HOST": "mail", given: "x"})

    assert refused.value.variable == missing


def test_the_command_stream_is_not_the_event_stream() -> None:
    with pytest.raises(ConfigurationError, match="ALLOCATION_COMMAND_STREAM"):
        Settings.from_environment({"ALLOCATION_COMMAND_STREAM": "allocation:events"})


@pytest.mark.parametrize(
    "host",
    [
        "bad host\\x",
        "mail\nexample.com",
        "mail\x7f",
        "-mail",
        "a..b",
        "mail:25",
        "a" * 254,
    ],
)
def test_an_smtp_host_that_is_no_host_name_is_refused(host: str) -> None:
    """Regression: SMTP_HOST was never checked ('bad host\\x' was taken)."""
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_environment({"SMTP_HOST": host})

    assert refused.value.variable == "SMTP_HOST"
    assert str(refused.value).startswith("SMTP_HOST=")


@pytest.mark.parametrize(
    "host",
    [
        "mail",
        " mail.example.com ",
        "mail.example.com.",
        "127.0.0.1",
        "::1",
        "почта.рф",
        "a" * 63,
    ],
)
def test_an_smtp_host_name_or_address_is_read(host: str) -> None:
    smtp = Settings.from_environment({"SMTP_HOST": host}).smtp

    assert smtp is not None
    assert smtp.host == host.strip()


def test_a_database_url_option_refused_lists_the_accepted_ones() -> None:
    """Regression: ?sslmode=disable crashed with a TypeError (exit 70); any option
    asyncpg does not take is now refused before anything runs."""
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_environment(
            {"DATABASE_URL": "postgresql://app:s3cret@h/db?target_session_attrs=any"}
        )

    message = str(refused.value)
    assert message.startswith("DATABASE_URL='postgresql://app:***@h/db?")
    assert "'target_session_attrs' is not accepted" in message
    assert "sslmode" in message
    assert "application_name" in message
    assert "s3cret" not in message
    assert "\n" not in message


def test_a_refused_url_is_shown_without_its_password() -> None:
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_environment({"DATABASE_URL": "postgresql://app:s3cret@h:x/db"})

    assert "s3cret" not in str(refused.value)
    assert "DATABASE_URL='postgresql://app:***@h:x/db'" in str(refused.value)


def test_a_long_value_is_shortened_in_the_error() -> None:
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_environment({"ALLOCATION_RETRY_DELAY": "x" * 10_000})

    assert len(str(refused.value)) < 200


def test_settings_do_not_show_their_urls_in_repr() -> None:
    settings = Settings(
        database_url="postgresql://app:s3cret@h/db", broker_url="redis://:s3cret@h/0"
    )

    assert "s3cret" not in repr(settings)


class _Recording(dict[str, str]):
    """An empty environment that notes every variable asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]  # records, then answers as dict does
        self.asked.add(key)
        return super().get(key, default)


def test_the_readme_documents_exactly_the_settings_read() -> None:
    section = README.read_text().split("## Configuration")[1].split("\n## ")[0]
    table = [line for line in section.splitlines() if line.startswith("| `")]
    documented = {
        name for row in table for name in re.findall(r"`([A-Z_]+)`", row.split("|")[1])
    }
    environment = _Recording()

    Settings.from_environment(environment)

    assert documented == environment.asked


def test_events_may_not_go_to_the_command_streams_dead_letters() -> None:
    """Regression: the relay filled the dead-letter stream, and retry sent events on."""
    with pytest.raises(ConfigurationError, match="ALLOCATION_BROKER_STREAM"):
        Settings.from_environment(
            {"ALLOCATION_BROKER_STREAM": "allocation:commands:dead"}
        )
