"""The notifications port: emails to their recipient, on the console or over SMTP."""

from __future__ import annotations

import dataclasses
import email.message
import logging

import aiosmtplib

from allocation.adapters.console import StdoutConsole
from allocation.service_layer.channels import (
    AbstractConsole,
    AbstractNotifications,
    Email,
)

logger = logging.getLogger(__name__)


class ConsoleNotifications(AbstractNotifications):
    """The default: announces each email on the console instead of sending it."""

    def __init__(self, console: AbstractConsole | None = None) -> None:
        self._console = console or StdoutConsole()

    async def send(self, destination: str, message: Email) -> None:
        self._console.write(message.console_line)


@dataclasses.dataclass(frozen=True, slots=True)
class SmtpSettings:
    """Where and how to send mail.

    ``start_tls`` upgrades a plain connection (usually port 587); ``use_tls``
    speaks TLS from the first byte (implicit TLS, usually port 465).
    """

    host: str
    port: int = 25
    sender: str = "allocation@localhost"
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    start_tls: bool = False
    timeout: float = 10.0
    use_tls: bool = False


class SmtpNotifications(AbstractNotifications):
    """Sends real emails through an SMTP server (aiosmtplib; asyncio only)."""

    def __init__(self, settings: SmtpSettings) -> None:
        self._settings = settings

    async def send(self, destination: str, message: Email) -> None:
        mail = email.message.EmailMessage()
        mail["From"] = self._settings.sender
        mail["To"] = destination
        mail["Subject"] = message.subject
        if message.idempotency_key is not None:
            mail["Message-ID"] = f"<{message.idempotency_key}@allocation>"
        mail.set_content(message.body)
        settings = self._settings
        await aiosmtplib.send(
            mail,
            hostname=settings.host,
            port=settings.port,
            username=settings.username,
            password=settings.password,
            start_tls=settings.start_tls,
            use_tls=settings.use_tls,
            timeout=settings.timeout,
        )
        logger.info("sent %r to %s", message.subject, destination)
