"""Settings from environment variables, read when asked for, never at import."""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, TypeVar

from allocation.adapters.notifications import SmtpSettings
from allocation.domain.exceptions import AllocationError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///allocation.db"


class ConfigurationError(AllocationError):
    """Raised when an environment variable holds a value the application cannot use."""

    def __init__(self, variable: str, value: str, expected: str) -> None:
        self.variable = variable
        self.value = value
        self.expected = expected
        super().__init__(f"{variable}={value!r} is not valid: expected {expected}")


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Everything the application reads from its environment."""

    database_url: str = DEFAULT_DATABASE_URL
    database_pool_size: int = 20
    retry_attempts: int = 3
    retry_delay: float = 0.1
    conflict_retries: int = 10
    smtp: SmtpSettings | None = None
    stock_desk_email: str = "stock@example.com"
    catch_up_interval: float = 5.0
    catch_up_batch: int = 500
    broker_url: str | None = None
    broker_stream: str = "allocation:events"
    relay_interval: float = 0.1
    relay_batch: int = 500
    command_stream: str = "allocation:commands"
    consumer_group: str = "allocation"
    claim_idle_ms: int = 30_000

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings; a bad value raises ConfigurationError naming it."""
        env = os.environ if environ is None else environ
        smtp = None
        if env.get("SMTP_HOST"):
            smtp = SmtpSettings(
                host=env["SMTP_HOST"],
                port=_read(env, "SMTP_PORT", 25, int, "a port number", minimum=1),
                sender=env.get("SMTP_SENDER", "allocation@localhost"),
                username=env.get("SMTP_USERNAME") or None,
                password=env.get("SMTP_PASSWORD") or None,
                start_tls=env.get("SMTP_STARTTLS", "").lower() in {"1", "true", "yes"},
            )
        return cls(
            database_url=env.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
            database_pool_size=_read(
                env,
                "ALLOCATION_DATABASE_POOL_SIZE",
                20,
                int,
                "a whole number >= 1",
                minimum=1,
            ),
            retry_attempts=_read(
                env,
                "ALLOCATION_RETRY_ATTEMPTS",
                3,
                int,
                "a whole number >= 1",
                minimum=1,
            ),
            retry_delay=_read(
                env, "ALLOCATION_RETRY_DELAY", 0.1, float, "seconds >= 0", minimum=0
            ),
            conflict_retries=_read(
                env,
                "ALLOCATION_CONFLICT_RETRIES",
                10,
                int,
                "a whole number >= 0",
                minimum=0,
            ),
            catch_up_interval=_read(
                env,
                "ALLOCATION_CATCH_UP_INTERVAL",
                5.0,
                float,
                "seconds >= 0",
                minimum=0,
            ),
            catch_up_batch=_read(
                env,
                "ALLOCATION_CATCH_UP_BATCH",
                500,
                int,
                "a whole number >= 1",
                minimum=1,
            ),
            broker_url=env.get("BROKER_URL") or None,
            broker_stream=env.get("ALLOCATION_BROKER_STREAM") or "allocation:events",
            relay_interval=_read(
                env,
                "ALLOCATION_RELAY_INTERVAL",
                0.1,
                float,
                "seconds > 0",
                minimum=0.001,
            ),
            relay_batch=_read(
                env,
                "ALLOCATION_RELAY_BATCH",
                500,
                int,
                "a whole number >= 1",
                minimum=1,
            ),
            command_stream=env.get("ALLOCATION_COMMAND_STREAM")
            or "allocation:commands",
            consumer_group=env.get("ALLOCATION_CONSUMER_GROUP") or "allocation",
            claim_idle_ms=_read(
                env,
                "ALLOCATION_CLAIM_IDLE_MS",
                30_000,
                int,
                "milliseconds >= 1",
                minimum=1,
            ),
            smtp=smtp,
            stock_desk_email=env.get(
                "ALLOCATION_STOCK_DESK_EMAIL", "stock@example.com"
            ),
        )


_Number = TypeVar("_Number", int, float)


def _read(
    env: Mapping[str, str],
    variable: str,
    default: _Number,
    parse: Callable[[str], _Number],
    expected: str,
    *,
    minimum: _Number,
) -> _Number:
    raw = env.get(variable)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = parse(raw.strip())
    except ValueError:
        raise ConfigurationError(variable, raw, expected) from None
    if value < minimum:
        raise ConfigurationError(variable, raw, expected)
    return value
