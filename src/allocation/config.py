"""Settings from environment variables, read when asked for, never at import.

Every value is checked here, before anything runs or is written: a bad one is a
ConfigurationError naming its variable. Unset means the default; set but blank is
refused, except for the settings that are off by default (``BROKER_URL``,
``SMTP_HOST``, ``SMTP_USERNAME``, ``SMTP_PASSWORD``), where empty means unset.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import urllib.parse
from typing import TYPE_CHECKING

from sqlalchemy import exc as sqlalchemy_errors
from sqlalchemy.engine import make_url

from allocation.adapters.notifications import SmtpSettings
from allocation.adapters.postgres import database as postgres_database
from allocation.domain import values
from allocation.domain.exceptions import AllocationError, InvalidEmail, shorten
from allocation.service_layer.masking import mask_url

if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///allocation.db"
# The largest whole number a setting takes: what an INTEGER column holds, where the
# retry counts end up.
MAX_WHOLE_NUMBER = 2**31 - 1
# The longest wait a setting asks for: one day. More is a typo, and a number too big
# to print sensibly in a "retrying in ..." line.
MAX_SECONDS = 86_400
# A DNS name's limit, without its trailing dot.
MAX_HOSTNAME = 253
# The drivers we run on: the plain forms get them added (database.normalise_database_url).
DATABASE_SCHEMES = frozenset(
    {
        "sqlite",
        "sqlite+aiosqlite",
        "postgresql",
        "postgresql+asyncpg",
        "postgres",
        "postgres+asyncpg",
    }
)
BROKER_SCHEMES = frozenset({"redis", "rediss", "unix"})
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})

_WHOLE_NUMBER = re.compile(r"-?[0-9]+")
_DECIMAL = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_EXPORTER = re.compile(r"[a-z][a-z0-9_]*")
_FLAG = "1/0, true/false, yes/no or on/off"
# One label of a host name: letters (any script, for an IDN), digits, - and _ inside.
_HOST_LABEL = re.compile(r"(?!-)[\w-]{1,63}(?<!-)")


class ConfigurationError(AllocationError):
    """Raised when an environment variable holds a value the application cannot use.

    The value is shown masked (a URL's password) and shortened; ``reason``, when
    given, replaces the usual sentence (a rule about several variables).
    """

    def __init__(
        self,
        variable: str,
        value: str | None,
        expected: str,
        *,
        reason: str | None = None,
    ) -> None:
        self.variable = variable
        self.value = None if value is None else mask_url(value)
        self.expected = expected
        shown = "" if self.value is None else f"={shorten(self.value)}"
        super().__init__(
            reason or f"{variable}{shown} is not valid: expected {expected}"
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Everything the application reads from its environment."""

    database_url: str = dataclasses.field(default=DEFAULT_DATABASE_URL, repr=False)
    database_pool_size: int = 20
    retry_attempts: int = 3
    retry_delay: float = 0.1
    conflict_retries: int = 10
    smtp: SmtpSettings | None = None
    stock_desk_email: str = "stock@example.com"
    catch_up_interval: float = 5.0
    catch_up_batch: int = 500
    broker_url: str | None = dataclasses.field(default=None, repr=False)
    broker_stream: str = "allocation:events"
    relay_interval: float = 0.1
    relay_batch: int = 500
    command_stream: str = "allocation:commands"
    consumer_group: str = "allocation"
    claim_idle_ms: int = 30_000
    # Every this many events of an aggregate, its state is saved as a snapshot
    # (0: never); the unit of work's default is the documented one.
    snapshot_every: int = 100
    # How long an HTTP query given min_position waits for its read model.
    read_wait: float = 5.0
    # Seconds a request's stored response answers its repeats (Idempotency-Key),
    # and seconds a request holds its key before another may take it over.
    idempotency_ttl: float = 86_400.0
    idempotency_lease: float = 60.0
    # OpenTelemetry's exporter names, lower case, comma separated ("none": off).
    traces_exporter: str = "none"

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and check every setting; a bad value raises ConfigurationError."""
        env = _Environment(os.environ if environ is None else environ)
        broker_stream = env.name("ALLOCATION_BROKER_STREAM", "allocation:events")
        command_stream = env.name("ALLOCATION_COMMAND_STREAM", "allocation:commands")
        if command_stream == broker_stream:
            raise ConfigurationError(
                "ALLOCATION_COMMAND_STREAM",
                command_stream,
                "a stream other than ALLOCATION_BROKER_STREAM's, where events go",
            )
        if broker_stream == f"{command_stream}:dead":
            # Events would show up as dead commands, and a retry would send them
            # to the command stream.
            raise ConfigurationError(
                "ALLOCATION_BROKER_STREAM",
                broker_stream,
                "a stream other than the command stream's dead letters",
            )
        return cls(
            database_url=env.database_url(),
            database_pool_size=env.whole("ALLOCATION_DATABASE_POOL_SIZE", 20, 1),
            retry_attempts=env.whole("ALLOCATION_RETRY_ATTEMPTS", 3, 1),
            retry_delay=env.seconds("ALLOCATION_RETRY_DELAY", 0.1, 0),
            conflict_retries=env.whole("ALLOCATION_CONFLICT_RETRIES", 10, 0),
            smtp=_smtp(env),
            stock_desk_email=env.email(
                "ALLOCATION_STOCK_DESK_EMAIL", "stock@example.com"
            ),
            catch_up_interval=env.seconds("ALLOCATION_CATCH_UP_INTERVAL", 5.0, 0),
            catch_up_batch=env.whole("ALLOCATION_CATCH_UP_BATCH", 500, 1),
            broker_url=env.broker_url(),
            broker_stream=broker_stream,
            relay_interval=env.seconds("ALLOCATION_RELAY_INTERVAL", 0.1, 0.001),
            relay_batch=env.whole("ALLOCATION_RELAY_BATCH", 500, 1),
            command_stream=command_stream,
            consumer_group=env.name("ALLOCATION_CONSUMER_GROUP", "allocation"),
            claim_idle_ms=env.whole("ALLOCATION_CLAIM_IDLE_MS", 30_000, 1),
            snapshot_every=env.whole("ALLOCATION_SNAPSHOT_EVERY", 100, 0),
            read_wait=env.seconds("ALLOCATION_READ_WAIT", 5.0, 0),
            idempotency_ttl=env.seconds("ALLOCATION_IDEMPOTENCY_TTL", 86_400.0, 1),
            idempotency_lease=env.seconds("ALLOCATION_IDEMPOTENCY_LEASE", 60.0, 1),
            traces_exporter=env.exporters("OTEL_TRACES_EXPORTER"),
        )


def parse_seconds(raw: str) -> float:
    """A finite decimal number of seconds (``0.5``, ``2``, ``1e-3``), or ValueError."""
    text = raw.strip()
    if not _DECIMAL.fullmatch(text):
        raise ValueError(f"not a decimal number: {raw!r}")
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {raw!r}")
    return value


def _smtp(env: _Environment) -> SmtpSettings | None:
    # Every SMTP setting is checked, even while SMTP_HOST is unset and they are unused.
    host = env.host("SMTP_HOST")
    port = env.port("SMTP_PORT", 25)
    sender = env.email("SMTP_SENDER", "allocation@localhost")
    username = env.optional("SMTP_USERNAME")
    password = env.optional("SMTP_PASSWORD")
    start_tls = env.flag("SMTP_STARTTLS")
    use_tls = env.flag("SMTP_TLS")
    allow_plaintext_auth = env.flag("SMTP_ALLOW_PLAINTEXT_AUTH")
    if start_tls and use_tls:
        raise ConfigurationError(
            "SMTP_STARTTLS",
            None,
            "SMTP_STARTTLS or SMTP_TLS, not both",
            reason="SMTP_STARTTLS and SMTP_TLS are both on: choose one (SMTP_TLS "
            "for a server that speaks TLS from the start, usually port 465)",
        )
    if (username is None) != (password is None):
        missing = "SMTP_PASSWORD" if password is None else "SMTP_USERNAME"
        raise ConfigurationError(
            missing,
            None,
            "SMTP_USERNAME and SMTP_PASSWORD both set, or neither",
            reason=f"{missing} is unset: SMTP_USERNAME and SMTP_PASSWORD go together",
        )
    if host is None:
        return None
    if username is not None and not (start_tls or use_tls or allow_plaintext_auth):
        raise ConfigurationError(
            "SMTP_STARTTLS",
            None,
            "SMTP_STARTTLS or SMTP_TLS on, or SMTP_ALLOW_PLAINTEXT_AUTH=yes",
            reason="SMTP_USERNAME and SMTP_PASSWORD would go to SMTP_HOST in plain "
            "text: set SMTP_STARTTLS=yes or SMTP_TLS=yes, or "
            "SMTP_ALLOW_PLAINTEXT_AUTH=yes to send them unencrypted anyway",
        )
    return SmtpSettings(
        host=host,
        port=port,
        sender=sender,
        username=username,
        password=password,
        start_tls=start_tls,
        use_tls=use_tls,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class _Environment:
    """Reads one kind of value each; every refusal names the variable."""

    env: Mapping[str, str]

    def _raw(self, variable: str, expected: str) -> str | None:
        """The value, None when unset; set but blank is refused."""
        raw = self.env.get(variable)
        if raw is not None and not raw.strip():
            raise ConfigurationError(variable, raw, expected)
        return raw

    def optional(self, variable: str, *, strip: bool = False) -> str | None:
        """A setting that is off by default: empty means unset."""
        raw = self.env.get(variable)
        if raw is None or not raw.strip():
            return None
        return raw.strip() if strip else raw

    def whole(self, variable: str, default: int, minimum: int) -> int:
        expected = f"a whole number from {minimum} to {MAX_WHOLE_NUMBER}"
        raw = self._raw(variable, expected)
        if raw is None:
            return default
        if not _WHOLE_NUMBER.fullmatch(raw.strip()):
            raise ConfigurationError(variable, raw, expected)
        value = int(raw.strip())
        if not minimum <= value <= MAX_WHOLE_NUMBER:
            raise ConfigurationError(variable, raw, expected)
        return value

    def seconds(self, variable: str, default: float, minimum: float) -> float:
        expected = f"a number of seconds from {minimum:g} to {MAX_SECONDS}"
        raw = self._raw(variable, expected)
        if raw is None:
            return default
        try:
            value = parse_seconds(raw)
        except ValueError:
            raise ConfigurationError(variable, raw, expected) from None
        if not minimum <= value <= MAX_SECONDS:
            raise ConfigurationError(variable, raw, expected)
        return value

    def host(self, variable: str) -> str | None:
        """A host name or IP address, off by default: empty means unset."""
        expected = (
            f"a host name or IP address (no spaces or control characters, at most "
            f"{MAX_HOSTNAME} characters)"
        )
        raw = self.optional(variable, strip=True)
        if raw is None:
            return None
        if not _is_host(raw):
            raise ConfigurationError(variable, raw, expected)
        return raw

    def port(self, variable: str, default: int) -> int:
        expected = "a port number from 1 to 65535"
        raw = self._raw(variable, expected)
        if raw is None:
            return default
        if not _WHOLE_NUMBER.fullmatch(raw.strip()) or not 1 <= int(raw) <= 65535:
            raise ConfigurationError(variable, raw, expected)
        return int(raw)

    def flag(self, variable: str) -> bool:
        """A yes/no setting, off by default."""
        raw = self._raw(variable, _FLAG)
        if raw is None:
            return False
        word = raw.strip().lower()
        if word not in TRUE_WORDS | FALSE_WORDS:
            raise ConfigurationError(variable, raw, _FLAG)
        return word in TRUE_WORDS

    def name(self, variable: str, default: str) -> str:
        expected = "a non-blank name without control characters or surrounding spaces"
        raw = self._raw(variable, expected)
        if raw is None:
            return default
        if values.clean_text(raw) is None or raw != raw.strip():
            raise ConfigurationError(variable, raw, expected)
        return raw

    def exporters(self, variable: str) -> str:
        """OpenTelemetry exporter names (``console``, ``otlp,console``); unset or
        empty: ``none``, as tracing is off by default."""
        raw = self.optional(variable, strip=True)
        if raw is None:
            return "none"
        names = [name.strip().lower() for name in raw.split(",")]
        if not all(_EXPORTER.fullmatch(name) for name in names):
            raise ConfigurationError(
                variable,
                raw,
                "exporter names, comma separated: console, none, or the one the "
                "installed tracer provider exports with (otlp, ...)",
            )
        return ",".join(names)

    def email(self, variable: str, default: str) -> str:
        expected = "an email address, name@domain.tld"
        raw = self._raw(variable, expected)
        if raw is None:
            return default
        try:
            return values.normalise_email(raw)
        except InvalidEmail:
            raise ConfigurationError(variable, raw, expected) from None

    def database_url(self) -> str:
        variable = "DATABASE_URL"
        expected = (
            "a sqlite:// or postgresql:// URL (a password's @, / and % written "
            "%40, %2F and %25)"
        )
        raw = self._raw(variable, expected)
        if raw is None:
            return DEFAULT_DATABASE_URL
        url = raw.strip()
        try:
            parsed = make_url(url)
            port = parsed.port
        except (sqlalchemy_errors.ArgumentError, ValueError):
            raise ConfigurationError(variable, raw, expected) from None
        if (
            parsed.drivername not in DATABASE_SCHEMES
            or (port is not None and not 1 <= port <= 65535)
            or not _plausible_host(parsed.host)
        ):
            raise ConfigurationError(variable, raw, expected)
        if parsed.get_backend_name() == "postgresql":
            authority_and_path = url.split("://", 1)[-1].split("?", 1)[0]
            if authority_and_path.count("@") > 1:
                # A password's unencoded @: the URL names another host than it
                # seems to, and a message quoting it would show half the password.
                raise ConfigurationError(variable, raw, expected)
            try:
                postgres_database.connect_options(parsed)
            except ValueError as error:
                accepted = (
                    f"accepted query options: {postgres_database.ACCEPTED_OPTIONS}"
                )
                raise ConfigurationError(
                    variable,
                    raw,
                    accepted,
                    reason=f"{variable}={shorten(mask_url(raw))} is not valid: "
                    f"{error}; {accepted}",
                ) from None
        return url

    def broker_url(self) -> str | None:
        variable = "BROKER_URL"
        expected = (
            "a redis://, rediss:// or unix:// URL (a password's @, / and % written "
            "%40, %2F and %25)"
        )
        raw = self.optional(variable, strip=True)
        if raw is None:
            return None
        try:
            parsed = urllib.parse.urlsplit(raw)
            port = parsed.port  # reading it checks it: a number from 0 to 65535
        except ValueError:
            raise ConfigurationError(variable, raw, expected) from None
        if parsed.scheme.lower() not in BROKER_SCHEMES or port == 0:
            raise ConfigurationError(variable, raw, expected)
        if parsed.scheme.lower() == "unix":
            valid = bool(parsed.path)
        else:
            # The database number, when given, is the path: /0, /1, ...
            valid = _plausible_host(parsed.hostname) and (
                parsed.path in {"", "/"} or parsed.path[1:].isdigit()
            )
        if not valid:
            raise ConfigurationError(variable, raw, expected)
        return raw


def _is_host(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        name = text.removesuffix(".")
        return len(name) <= MAX_HOSTNAME and all(
            _HOST_LABEL.fullmatch(label) for label in name.split(".")
        )
    return True


def _plausible_host(host: str | None) -> bool:
    # An @ or a / left in the host is a password's, not encoded: the URL does not
    # say what it seems to.
    return host is None or not (set(host) & {"@", "/", " "})
