"""The event log in SQL tables, on the unit of work's session (asyncio only).

On PostgreSQL the hot statements (append, tracking, log reads, checkpoints) run on
the unit of work's driver transaction instead (see ``postgres_driver``).
"""

from __future__ import annotations

import datetime
import functools
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    Text,
    bindparam,
    cast,
    delete,
    func,
    insert,
    select,
    text,
    type_coerce,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from allocation.adapters import orm, postgres_driver
from allocation.adapters.eventlog import (
    AbstractEventLog,
    DeadLetter,
    LoggedEvent,
    rebuild_event,
)
from allocation.adapters.exceptions import UnreadableLogEntry
from allocation.domain.exceptions import AllocationError

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Sequence

    from sqlalchemy import Row, Select
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.sql.expression import Executable

    from allocation.adapters.eventlog import NewEvent


# Built once, not per append: constructing a text() clause costs tens of µs.
_ORDER_AND_ANNOUNCE = text(postgres_driver.ORDER_AND_ANNOUNCE)


@functools.cache
def _append(dialect: str) -> Executable:
    """Insert log rows whose payload is already JSON text (built once per dialect).

    The text is the message library's own encoding, stored as it is: what is read
    back is exactly what was validated, and the relay publishes it unchanged.
    """
    payload = bindparam("payload", type_=Text)
    stored = (
        cast(payload, JSON) if dialect == "postgresql" else type_coerce(payload, Text)
    )
    return insert(orm.event_log).values(payload=stored)


def _readable_log() -> Select[Any]:
    """The log's columns, with the payload as the JSON text it was stored as."""
    log = orm.event_log
    return select(
        log.c.position,
        log.c.message_id,
        log.c.aggregate_type,
        log.c.aggregate_id,
        log.c.aggregate_version,
        log.c.name,
        cast(log.c.payload, Text).label("payload"),
        log.c.schema_version,
        log.c.occurred_at,
        log.c.correlation_id,
        log.c.causation_id,
    )


_READABLE_LOG = _readable_log()


@functools.cache
def _insert_ignoring_duplicates(dialect: str) -> Executable:
    """Insert tracking rows, skipping those already there (built once per dialect)."""
    insert_into = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert_into(orm.processed_messages).on_conflict_do_nothing()


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class SqlAlchemyEventLog(AbstractEventLog):
    """The log, tracking and dead letters in the tables of ``orm``."""

    def __init__(
        self,
        session: AsyncSession,
        driver: postgres_driver.DriverTransaction | None = None,
    ) -> None:
        self._session = session
        self._dialect = session.get_bind().dialect.name
        # PostgreSQL's hot statements run on the driver (see postgres_driver).
        self._driver = driver

    async def append(self, new_events: Sequence[NewEvent]) -> None:
        if not new_events:
            return
        now = _utc_now()
        rows = [_log_row(new, now) for new in new_events]
        if self._driver is None:
            if self._dialect == "postgresql":
                await self._session.execute(_ORDER_AND_ANNOUNCE)
            await self._session.execute(_append(self._dialect), rows)
            return
        driver = await self._driver.connection()
        await driver.execute(
            postgres_driver.APPEND, *postgres_driver.append_arguments(rows)
        )

    async def read(
        self, *, after: int, names: Collection[str] | None = None, limit: int = 500
    ) -> list[LoggedEvent]:
        if self._driver is not None:
            driver = await self._driver.reader()
            if names is None:
                records = await driver.fetch(postgres_driver.READ_LOG, after, limit)
            else:
                records = await driver.fetch(
                    postgres_driver.READ_LOG_NAMED, after, limit, list(names)
                )
            return [_logged(record) for record in records]
        log = orm.event_log
        query = _READABLE_LOG.where(log.c.position > after)
        if names is not None:
            query = query.where(log.c.name.in_(list(names)))
        rows = await self._session.execute(query.order_by(log.c.position).limit(limit))
        return [_logged(row._mapping) for row in rows]

    async def get(self, message_id: str) -> LoggedEvent | None:
        log = orm.event_log
        row = (
            await self._session.execute(
                _READABLE_LOG.where(log.c.message_id == message_id)
            )
        ).first()
        return None if row is None else _logged(row._mapping)

    async def last_position(self) -> int:
        newest = await self._session.scalar(
            select(func.coalesce(func.max(orm.event_log.c.position), 0))
        )
        return int(newest or 0)

    async def mark_processed(
        self, subscriber: str, message_ids: Iterable[str], *, exactly_once: bool
    ) -> None:
        if self._driver is not None:
            ids = list(message_ids)
            if ids:
                sql = (
                    postgres_driver.MARK_PROCESSED
                    if exactly_once
                    else postgres_driver.MARK_PROCESSED_UNLESS_THERE
                )
                driver = await self._driver.connection()
                await driver.execute(sql, subscriber, ids)
            return
        rows = [{"subscriber": subscriber, "message_id": mid} for mid in message_ids]
        if not rows:
            return
        statement = (
            insert(orm.processed_messages)
            if exactly_once
            else _insert_ignoring_duplicates(self._dialect)
        )
        await self._session.execute(statement, rows)

    async def processed_among(
        self, subscriber: str, message_ids: Collection[str]
    ) -> set[str]:
        if not message_ids:
            return set()
        table = orm.processed_messages
        found = await self._session.scalars(
            select(table.c.message_id).where(
                table.c.subscriber == subscriber,
                table.c.message_id.in_(list(message_ids)),
            )
        )
        return set(found)

    async def checkpoint(self, subscriber: str) -> int | None:
        if self._driver is not None:
            driver = await self._driver.reader()
            found = await driver.fetchval(postgres_driver.CHECKPOINT, subscriber)
            return None if found is None else int(found)
        table = orm.subscriber_checkpoints
        position = await self._session.scalar(
            select(table.c.position).where(table.c.subscriber == subscriber)
        )
        return None if position is None else int(position)

    async def set_checkpoint(self, subscriber: str, position: int) -> None:
        table = orm.subscriber_checkpoints
        insert_into = (
            postgresql.insert if self._dialect == "postgresql" else sqlite.insert
        )
        # Forward only: two workers finishing out of order never move it back.
        statement = insert_into(table).values(subscriber=subscriber, position=position)
        await self._session.execute(
            statement.on_conflict_do_update(
                index_elements=["subscriber"],
                set_={"position": statement.excluded.position},
                where=table.c.position < statement.excluded.position,
            )
        )

    async def forget(self, subscriber: str) -> None:
        for table in (
            orm.processed_messages,
            orm.subscriber_checkpoints,
            orm.dead_letters,
        ):
            await self._session.execute(
                delete(table).where(table.c.subscriber == subscriber)
            )

    async def add_dead_letter(
        self, subscriber: str, message_id: str, error: str, attempts: int
    ) -> None:
        table = orm.dead_letters
        values: dict[str, Any] = {
            "error": error,
            "attempts": attempts,
            "last_tried": _utc_now(),
        }
        refreshed = await self._session.execute(
            update(table)
            .where(table.c.subscriber == subscriber, table.c.message_id == message_id)
            .values(**values)
        )
        if refreshed.rowcount == 0:  # type: ignore[attr-defined]  # a CursorResult
            await self._session.execute(
                insert(table),
                {"subscriber": subscriber, "message_id": message_id, **values},
            )

    async def dead_letters(
        self, subscriber: str | None = None, *, limit: int = 1000
    ) -> list[DeadLetter]:
        table = orm.dead_letters
        query = select(table).order_by(table.c.id).limit(limit)
        if subscriber is not None:
            query = query.where(table.c.subscriber == subscriber)
        return [_dead_letter(row) for row in await self._session.execute(query)]

    async def dead_letter(self, dead_letter_id: int) -> DeadLetter | None:
        table = orm.dead_letters
        row = (
            await self._session.execute(
                select(table).where(table.c.id == dead_letter_id)
            )
        ).first()
        return None if row is None else _dead_letter(row)

    async def remove_dead_letter(self, dead_letter_id: int) -> None:
        table = orm.dead_letters
        await self._session.execute(delete(table).where(table.c.id == dead_letter_id))

    async def dead_message_ids(
        self, subscriber: str, message_ids: Collection[str]
    ) -> set[str]:
        if not message_ids:
            return set()
        table = orm.dead_letters
        found = await self._session.scalars(
            select(table.c.message_id).where(
                table.c.subscriber == subscriber,
                table.c.message_id.in_(list(message_ids)),
            )
        )
        return set(found)


def _log_row(new: NewEvent, now: datetime.datetime) -> dict[str, Any]:
    return {
        "message_id": new.event.message_id,
        "aggregate_type": new.aggregate_type,
        "aggregate_id": new.aggregate_id,
        "aggregate_version": new.aggregate_version,
        "name": new.event.TYPE,
        "payload": new.event.payload_json(),
        "schema_version": new.event.SCHEMA_VERSION,
        "occurred_at": now,
        "correlation_id": new.event.correlation_id,
        "causation_id": new.event.causation_id,
    }


def _logged(record: Any) -> LoggedEvent:
    """A log row as a validated event: a SQLAlchemy row's mapping or an asyncpg
    record, both read by column name, the payload as the JSON text stored."""
    payload_json: str = record["payload"]
    try:
        event = rebuild_event(
            record["name"],
            payload_json,
            schema_version=record["schema_version"],
            message_id=record["message_id"],
            correlation_id=record["correlation_id"],
            causation_id=record["causation_id"],
            aggregate_version=record["aggregate_version"],
        )
    except AllocationError as error:
        raise UnreadableLogEntry(record["position"], str(error)) from error
    return LoggedEvent(
        position=record["position"],
        event=event,
        aggregate_type=record["aggregate_type"],
        aggregate_id=record["aggregate_id"],
        aggregate_version=record["aggregate_version"],
        occurred_at=_aware(record["occurred_at"]),
        payload_json=payload_json,
        schema_version=record["schema_version"],
    )


def _dead_letter(row: Row[Any]) -> DeadLetter:
    return DeadLetter(
        id=row.id,
        subscriber=row.subscriber,
        message_id=row.message_id,
        error=row.error,
        attempts=row.attempts,
        last_tried=_aware(row.last_tried),
    )


def _aware(moment: datetime.datetime) -> datetime.datetime:
    # SQLite hands back naive datetimes; every time we store is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)
