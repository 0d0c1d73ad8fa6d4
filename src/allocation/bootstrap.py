"""Builds the message bus: adapters wired into handlers, once, at start-up."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
from typing import TYPE_CHECKING, Any

import anyio

from allocation import config
from allocation.adapters import database, engines, migrations, tracing
from allocation.adapters.broker import RedisCommandStream, RedisStreamsPublisher
from allocation.adapters.console import StdoutConsole
from allocation.adapters.notifications import ConsoleNotifications, SmtpNotifications
from allocation.service_layer import (
    catchup,
    consumer,
    handlers,
    idempotency,
    messagebus,
    observability,
    projections,
    unit_of_work,
)
from allocation.service_layer import relay as relay_service

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from anyio.abc import TaskGroup

    from allocation.service_layer.channels import AbstractConsole, AbstractNotifications
    from allocation.service_layer.locks import SubscriberLocks

logger = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def bootstrap(
    *,
    uow: unit_of_work.AbstractUnitOfWork | messagebus.UowFactory | None = None,
    notifications: AbstractNotifications | None = None,
    console: AbstractConsole | None = None,
    settings: config.Settings | None = None,
    check_schema: bool = True,
    catch_up: bool | None = None,
    relay: bool = False,
    read_only: bool = False,
    purge_keys_every: float | None = None,
    observer: observability.Observer | None = None,
    **dependencies: Any,
) -> AsyncIterator[messagebus.MessageBus]:
    """Yield a ready MessageBus; leaving the block stops background work cleanly.

    Args:
        uow: a unit-of-work instance shared by every handler call (what tests pass),
            or a zero-argument factory (a fresh one per call). None: units of
            work of the engine of ``settings.database_url``, on one pool.
        notifications: where emails go; by default SMTP when SMTP_HOST is set,
            else the console.
        console: where the service lines go; standard output by default.
        settings: read from the environment when not given.
        check_schema: refuse to start on a database whose schema is not at head.
        catch_up: deliver what the event log holds undelivered at start, then
            every ``settings.catch_up_interval`` seconds in the background. By
            default on, except with a shared unit-of-work instance (a test's fake,
            whose log starts empty).
        relay: publish the event log to the broker at ``settings.broker_url`` in
            the background and consume the commands other services send there
            (what `allocation worker` does); off without a URL.
        read_only: for queries: open the configured database read-only (which
            works on a file this process may not write) and do not catch up.
        purge_keys_every: delete expired HTTP idempotency keys this often, in
            seconds, in the background (what the API server does); None: never.
        observer: hears what the bus does, for metrics and traces (see
            ``adapters.metrics`` and ``adapters.tracing``). By default, traces
            as ``settings.traces_exporter`` (OTEL_TRACES_EXPORTER) says, else
            nothing is observed.
        dependencies: further handler dependencies, by parameter name.

    Raises:
        SchemaOutOfDate: the database needs ``allocation db upgrade``.
        DatabaseUnavailable: the database cannot be reached.
        DatabaseFileUnusable: a SQLite file in a directory that does not exist,
            or read-only while ``read_only`` is not set.
    """
    settings = settings or config.Settings.from_environment()
    console = console or StdoutConsole()
    if observer is None:
        observer = tracing.from_exporters(settings.traces_exporter)
    if notifications is None:
        notifications = (
            SmtpNotifications(settings.smtp)
            if settings.smtp is not None
            else ConsoleNotifications(console)
        )
    async with contextlib.AsyncExitStack() as stack:
        locks: SubscriberLocks | None = None
        opened: engines.Database | None = None
        if uow is None:
            opened = await _open_database(
                settings, check_schema, stack, read_only=read_only
            )
            uow_factory: messagebus.UowFactory = functools.partial(
                opened.unit_of_work, snapshot_every=settings.snapshot_every
            )
            locks = opened.subscriber_locks()
        elif isinstance(uow, unit_of_work.AbstractUnitOfWork):
            uow_factory = functools.partial(_same, uow)
        else:
            uow_factory = uow
        bus = messagebus.MessageBus(
            uow_factory=uow_factory,
            command_handlers=handlers.COMMAND_HANDLERS,
            event_handlers=handlers.EVENT_HANDLERS,
            dependencies={
                "notifications": notifications,
                "console": console,
                "stock_desk_email": settings.stock_desk_email,
                **dependencies,
            },
            retry=messagebus.RetryPolicy(
                attempts=settings.retry_attempts,
                first_delay=settings.retry_delay,
                conflict_retries=settings.conflict_retries,
            ),
            projections=projections.PROJECTIONS,
            locks=locks,
            observer=observer,
        )
        if read_only:
            catch_up = False  # catch-up writes what it delivers
        elif catch_up is None:
            catch_up = not isinstance(uow, unit_of_work.AbstractUnitOfWork)
        if catch_up:
            # Whatever a process that died left undone is finished before new work.
            await catchup.catch_up(bus, batch_size=settings.catch_up_batch)
        # The body runs inside the task group that will own background work, but its
        # exception is carried out of the group and re-raised as itself, never
        # wrapped in an ExceptionGroup.
        body_error: BaseException | None = None
        try:
            async with anyio.create_task_group() as task_group:
                if catch_up and settings.catch_up_interval > 0:
                    task_group.start_soon(
                        catchup.keep_catching_up,
                        bus,
                        settings.catch_up_interval,
                        settings.catch_up_batch,
                    )
                if purge_keys_every is not None and not read_only:
                    task_group.start_soon(
                        idempotency.keep_purging, uow_factory, purge_keys_every
                    )
                if relay and settings.broker_url:
                    _start_broker_work(
                        task_group, stack, bus, settings, settings.broker_url, opened
                    )
                try:
                    yield bus
                except BaseException as error:  # noqa: BLE001 - re-raised below, outside the group
                    body_error = error
                finally:
                    task_group.cancel_scope.cancel()
        finally:
            # Even when background work died: what was handled is recorded.
            with anyio.CancelScope(shield=True):
                await _record_completions(bus)
        if body_error is not None:
            raise body_error


def _start_broker_work(
    task_group: TaskGroup,
    stack: contextlib.AsyncExitStack,
    bus: messagebus.MessageBus,
    settings: config.Settings,
    broker_url: str,
    opened: engines.Database | None,
) -> None:
    """The outbox relay (woken by commits where the database tells of them) and the
    command consumer, as background tasks."""
    publisher = RedisStreamsPublisher(broker_url, settings.broker_stream)
    stack.push_async_callback(publisher.aclose)
    wake_up = relay_service.WakeUp()
    listener = None if opened is None else opened.log_listener()
    if listener is not None:
        task_group.start_soon(relay_service.keep_listening, listener, wake_up)
    task_group.start_soon(
        functools.partial(
            relay_service.keep_relaying,
            bus,
            publisher,
            interval=settings.relay_interval,
            batch_size=settings.relay_batch,
            wake_up=wake_up,
        )
    )
    commands_in = RedisCommandStream(
        broker_url,
        settings.command_stream,
        settings.consumer_group,
        f"{socket.gethostname()}-{os.getpid()}",
    )
    stack.push_async_callback(commands_in.aclose)
    # Runs before the close above, once the consumer has stopped reading.
    stack.push_async_callback(_leave_group, commands_in)
    task_group.start_soon(
        functools.partial(
            consumer.keep_consuming,
            bus,
            commands_in,
            claim_idle_ms=settings.claim_idle_ms,
        )
    )


async def _open_database(
    settings: config.Settings,
    check_schema: bool,
    stack: contextlib.AsyncExitStack,
    *,
    read_only: bool,
) -> engines.Database:
    if check_schema:
        await _check_schema(settings.database_url, read_only=read_only)
    opened = await engines.open_database(
        settings.database_url,
        pool_size=settings.database_pool_size,
        read_only=read_only,
    )
    stack.push_async_callback(opened.close)
    return opened


async def _check_schema(url: str, *, read_only: bool) -> None:
    """Refuse a database whose schema is not at head (alembic reads it through
    SQLAlchemy, on an engine used for this alone)."""
    engine = database.create_engine(url, pool_size=1, read_only=read_only)
    try:
        await migrations.ensure_up_to_date(engine)
    finally:
        await engine.dispose()


async def _leave_group(commands_in: RedisCommandStream) -> None:
    """A stopped worker's consumer leaves the group, unless it holds entries still
    unacknowledged: those wait for another worker, and `broker pending` shows them."""
    with anyio.move_on_after(5, shield=True):
        try:
            left = await commands_in.leave()
        except Exception as error:  # noqa: BLE001 - shutting down: report, do not mask
            logger.warning(
                "consumer %s could not leave group %s: %s",
                commands_in.consumer,
                commands_in.group,
                error,
            )
            return
        if not left:
            logger.warning(
                "consumer %s stays in group %s: it holds unacknowledged entries,"
                " which another worker reclaims (see `allocation broker pending`)",
                commands_in.consumer,
                commands_in.group,
            )


async def _record_completions(bus: messagebus.MessageBus) -> None:
    try:
        await bus.flush_completions()
    except Exception as error:  # noqa: BLE001 - shutting down: report, do not mask
        # Not lost: catch-up hands these messages over again next time.
        logger.warning("could not record what was handled before exit: %s", error)


def _same(uow: unit_of_work.AbstractUnitOfWork) -> unit_of_work.AbstractUnitOfWork:
    return uow
