"""SmtpNotifications against a real SMTP server (aiosmtpd) on the loopback interface."""

from __future__ import annotations

import contextlib
import email
import email.policy
import socket
import threading
from typing import TYPE_CHECKING

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller

from allocation import config
from allocation.adapters.notifications import Email, SmtpNotifications, SmtpSettings
from allocation.bootstrap import bootstrap
from allocation.service_layer import services
from allocation.testing import FakeConsole, FakeUnitOfWork

if TYPE_CHECKING:
    from collections.abc import Iterator
    from email.message import EmailMessage

    from aiosmtpd.smtp import SMTP, Envelope, Session

LOOPBACK = "127.0.0.1"


class _RecordingHandler:
    """Keeps every message the server accepts; refuses the first ``refusals`` ones."""

    def __init__(self, refusals: int = 0) -> None:
        self.envelopes: list[Envelope] = []
        self._refusals = refusals
        self._lock = threading.Lock()  # the server runs in its own thread

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        with self._lock:
            if self._refusals > 0:
                self._refusals -= 1
                return "451 4.3.0 Try again later"
            self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def messages(self) -> list[EmailMessage]:
        with self._lock:
            return [_parse(envelope) for envelope in self.envelopes]


def _parse(envelope: Envelope) -> EmailMessage:
    content = envelope.original_content or envelope.content
    assert isinstance(content, bytes)
    message = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def _serving(handler: _RecordingHandler) -> Iterator[int]:
    """Run an SMTP server in its own thread; yield its port."""
    controller = Controller(handler, hostname=LOOPBACK, port=_free_port())
    controller.start()
    try:
        yield controller.port
    finally:
        controller.stop()


@pytest.fixture
def handler() -> _RecordingHandler:
    return _RecordingHandler()


@pytest.fixture
def smtp_port(handler: _RecordingHandler) -> Iterator[int]:
    with _serving(handler) as port:
        yield port


@pytest.fixture
def notifications(smtp_port: int) -> SmtpNotifications:
    return SmtpNotifications(
        SmtpSettings(host=LOOPBACK, port=smtp_port, sender="shop@example.com")
    )


async def test_email_arrives_with_recipient_sender_subject_and_body(
    notifications: SmtpNotifications, handler: _RecordingHandler
) -> None:
    welcome = Email(
        subject="Добро пожаловать!",
        body="Здравствуйте, Иван! Спасибо за регистрацию.",
        console_line="unused by SMTP",
    )

    await notifications.send("ivan@example.com", welcome)

    (envelope,) = handler.envelopes
    assert envelope.mail_from == "shop@example.com"
    assert envelope.rcpt_tos == ["ivan@example.com"]
    (message,) = handler.messages()
    assert message["From"] == "shop@example.com"
    assert message["To"] == "ivan@example.com"
    assert message["Subject"] == "Добро пожаловать!"
    assert message.get_content().rstrip("\n") == welcome.body


async def test_unreachable_server_raises_so_the_bus_can_retry() -> None:
    notifications = SmtpNotifications(
        SmtpSettings(host=LOOPBACK, port=_free_port(), timeout=5)
    )
    message = Email(subject="s", body="b", console_line="c")

    with pytest.raises(aiosmtplib.SMTPConnectError):
        await notifications.send("ivan@example.com", message)


async def test_refused_message_raises() -> None:
    refusing = _RecordingHandler(refusals=1)
    message = Email(subject="s", body="b", console_line="c")
    with _serving(refusing) as port:
        notifications = SmtpNotifications(SmtpSettings(host=LOOPBACK, port=port))
        with pytest.raises(aiosmtplib.SMTPDataError):
            await notifications.send("ivan@example.com", message)
    assert refusing.envelopes == []


async def test_registration_mails_welcome_and_coupon_through_the_bus(
    notifications: SmtpNotifications, handler: _RecordingHandler
) -> None:
    async with bootstrap(
        uow=FakeUnitOfWork(), notifications=notifications, console=FakeConsole()
    ) as bus:
        await services.register_user(bus, "Мария", "maria@example.com")

    messages = handler.messages()
    assert sorted(message["Subject"] for message in messages) == [
        "Ваш купон",
        "Добро пожаловать!",
    ]
    assert {message["To"] for message in messages} == {"maria@example.com"}
    assert all("Мария" in message.get_content() for message in messages)


async def test_bus_retries_a_message_the_server_refused_once() -> None:
    refusing = _RecordingHandler(refusals=1)
    settings = config.Settings(retry_attempts=3, retry_delay=0.01)
    with _serving(refusing) as port:
        notifications = SmtpNotifications(SmtpSettings(host=LOOPBACK, port=port))
        async with bootstrap(
            uow=FakeUnitOfWork(),
            notifications=notifications,
            console=FakeConsole(),
            settings=settings,
        ) as bus:
            await services.register_user(bus, "Иван", "ivan@example.com")

    subjects = sorted(message["Subject"] for message in refusing.messages())
    assert subjects == ["Ваш купон", "Добро пожаловать!"]


async def test_the_idempotency_key_is_the_message_id_header(
    notifications: SmtpNotifications, handler: _RecordingHandler
) -> None:
    """Every delivery of one email carries the same Message-ID: a duplicate is visible."""
    email_ = Email(
        subject="s", body="b", console_line="-", idempotency_key="e2f1.welcome"
    )
    await notifications.send("a@example.com", email_)
    await notifications.send("a@example.com", email_)
    assert [m["Message-ID"] for m in handler.messages()] == [
        "<e2f1.welcome@allocation>",
        "<e2f1.welcome@allocation>",
    ]
