"""PostgreSQL's hot path: the unit of work's transaction and statements on asyncpg.

SQLAlchemy costs 200-400 µs of event-loop CPU per statement and as much again per
session transaction, which on PostgreSQL is most of a command. So a unit of work
there checks out one connection and runs its transaction on asyncpg
(``DriverTransaction``), and the statements every command and projection issues
(users, the event-log append, tracking rows, the read models' upserts) go straight
to the driver, prepared once per connection. The ORM still loads and flushes the
products on the same connection, inside the same transaction: the engine runs in
autocommit mode, so SQLAlchemy never begins a transaction of its own, and hooks
(``install``) join its work to the owner's transaction, or, for SQLAlchemy used
outside a unit of work (migrations, tests), begin and end one as SQLAlchemy says.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.util import await_

if TYPE_CHECKING:
    from collections.abc import Awaitable, Sequence

    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
    from sqlalchemy.pool import PoolResetState

# Any constant works: it names the one advisory lock that orders appends.
APPEND_LOCK_KEY = 0x616C6C6F63  # "alloc"
# Listeners (the relay) are told on this channel that new events are committed.
LOG_CHANNEL = "allocation_event_log"

# Appenders queue on the advisory lock until the holder commits, so positions are
# handed out in commit order and a reader never sees a later one first. The lock is
# taken (the CTE is scanned) before the first row draws its position. The
# notification is delivered when, and only if, the transaction commits.
APPEND = f"""
WITH ordered AS (SELECT pg_advisory_xact_lock({APPEND_LOCK_KEY})),
     announced AS (SELECT pg_notify('{LOG_CHANNEL}', ''))
INSERT INTO event_log (message_id, aggregate_type, aggregate_id, aggregate_version,
                       name, payload, schema_version, occurred_at, correlation_id,
                       causation_id)
SELECT new.message_id, new.aggregate_type, new.aggregate_id, new.aggregate_version,
       new.name, new.payload, new.schema_version, new.occurred_at,
       new.correlation_id, new.causation_id
FROM ordered, announced,
     unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::int[], $5::varchar[],
            $6::json[], $7::smallint[], $8::timestamptz[], $9::varchar[],
            $10::varchar[])
       WITH ORDINALITY AS new(message_id, aggregate_type, aggregate_id,
                              aggregate_version, name, payload, schema_version,
                              occurred_at, correlation_id, causation_id, n)
ORDER BY new.n
"""
# The same ordering and announcement for an engine without the hooks (one built
# outside ``database.create_engine``), run through SQLAlchemy before its insert.
ORDER_AND_ANNOUNCE = (
    f"SELECT pg_advisory_xact_lock({APPEND_LOCK_KEY}), pg_notify('{LOG_CHANNEL}', '')"
)
MARK_PROCESSED = (
    "INSERT INTO processed_messages (subscriber, message_id)"
    " SELECT $1, unnest($2::varchar[])"
)
MARK_PROCESSED_UNLESS_THERE = f"{MARK_PROCESSED} ON CONFLICT DO NOTHING"
UPSERT_USER = (
    "INSERT INTO users_view (user_id, name, email) VALUES ($1, $2, $3)"
    " ON CONFLICT (user_id) DO UPDATE"
    " SET name = excluded.name, email = excluded.email"
)
_READ_LOG = (
    "SELECT position, message_id, aggregate_type, aggregate_id, aggregate_version,"
    " name, payload::text AS payload, schema_version, occurred_at, correlation_id,"
    " causation_id"
    " FROM event_log"
)
READ_LOG = f"{_READ_LOG} WHERE position > $1 ORDER BY position LIMIT $2"
READ_LOG_NAMED = (
    f"{_READ_LOG} WHERE position > $1 AND name = ANY($3::varchar[])"
    " ORDER BY position LIMIT $2"
)
CHECKPOINT = "SELECT position FROM subscriber_checkpoints WHERE subscriber = $1"
INSERT_USER = (
    "INSERT INTO users (id, name, email, version_number) VALUES ($1, $2, $3, $4)"
)
# Optimistic concurrency, as the ORM's version_id_col does it: the row must still be
# at the version this unit of work loaded.
UPDATE_USER = (
    "UPDATE users SET name = $2, email = $3, version_number = $4"
    " WHERE id = $1 AND version_number = $5"
)
_SELECT_USER = "SELECT id, name, email, version_number FROM users"
USER_BY_ID = f"{_SELECT_USER} WHERE id = $1"
USER_BY_EMAIL = f"{_SELECT_USER} WHERE email = $1"
USER_IDS = "SELECT id FROM users ORDER BY id"
# One row per order line (orderid, sku, qty): an order may hold lines of one sku
# in several batches.
UPSERT_LINE = (
    "INSERT INTO allocations_view (orderid, sku, qty, batchref, version, allocated)"
    " VALUES ($1, $2, $3, $4, $5, $6)"
    " ON CONFLICT (orderid, sku, qty) DO UPDATE SET batchref = excluded.batchref,"
    " version = excluded.version, allocated = excluded.allocated"
)
# Only a newer version overwrites: events may arrive in any order.
UPSERT_LINE_GUARDED = f"{UPSERT_LINE} WHERE allocations_view.version < excluded.version"


class DriverTransaction:
    """A unit of work's transaction, on its own pooled connection, run on asyncpg.

    It begins when the first statement needs it (a raw one, or SQLAlchemy's on the
    same connection, through the hooks) and ends only by ``commit``/``rollback``:
    SQLAlchemy's own commits and rollbacks on this connection leave it alone.
    """

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection
        pooled = connection.sync_connection.connection  # type: ignore[union-attr]  # just connected
        self._driver: Any = pooled.driver_connection
        self._transaction: Any = None
        # False once BEGIN, COMMIT or ROLLBACK failed other than by the server's
        # refusal: the connection's state is then unknown.
        self._trusted = True
        # The pooled connection's own info, kept: asking an invalidated SQLAlchemy
        # connection for it would try to reconnect.
        self._info = pooled.info
        self._info[_OWNER] = self

    async def connection(self) -> asyncpg.Connection[Any]:
        """The asyncpg connection, with this transaction begun."""
        await self.begin()
        driver: asyncpg.Connection[Any] = self._driver
        return driver

    async def reader(self) -> asyncpg.Connection[Any]:
        """The asyncpg connection for a read, without beginning a transaction.

        Under READ COMMITTED every statement takes its own snapshot anyway, so a read
        before the first write needs no BEGIN (and no ROLLBACK after it); once the
        transaction is open, reads run in it and see its writes.
        """
        driver: asyncpg.Connection[Any] = self._driver
        return driver

    async def begin(self) -> None:
        if self._transaction is None:
            transaction = self._driver.transaction()
            await self._watched(transaction.start())
            self._transaction = transaction

    async def commit(self) -> None:
        transaction, self._transaction = self._transaction, None
        if transaction is not None:
            await self._watched(transaction.commit())

    async def rollback(self) -> None:
        transaction, self._transaction = self._transaction, None
        if transaction is not None and not self._driver.is_closed():
            await self._watched(transaction.rollback())

    async def release(self) -> None:
        """Roll back what is uncommitted and hand the connection back to the pool."""
        try:
            await self.rollback()
        except Exception:  # noqa: BLE001 - a broken connection: its transaction dies with it
            self._trusted = False
        finally:
            self._info.pop(_OWNER, None)
            if self._connection.invalidated:
                await self._connection.close()  # SQLAlchemy found it dead already
            elif not self._trusted or self._driver.is_closed():
                # Lost or confused under the driver, where SQLAlchemy never saw it
                # fail: the pool must not hand this connection out again.
                await self._connection.invalidate()
            else:
                await self._connection.close()

    async def _watched(self, operation: Awaitable[Any]) -> None:
        try:
            await operation
        except asyncpg.PostgresError:
            raise  # the server answered: the connection itself is fine
        except BaseException:
            self._trusted = False
            raise


def install(engine: AsyncEngine) -> None:
    """Make the driver transaction follow SQLAlchemy's, on an autocommit engine.

    The engine must be created with ``isolation_level="AUTOCOMMIT"`` (asyncpg then
    never begins a transaction for SQLAlchemy); these hooks BEGIN on the asyncpg
    connection when SQLAlchemy begins, and COMMIT or ROLLBACK when it does, except
    on a connection a DriverTransaction owns.
    """
    sync_engine = engine.sync_engine
    event.listen(sync_engine, "begin", _begin)
    event.listen(sync_engine, "commit", _commit)
    event.listen(sync_engine, "rollback", _rollback)
    event.listen(sync_engine, "reset", _reset)


def drives(engine: Engine) -> bool:
    """Whether ``install`` hooked this engine (a DriverTransaction works on it)."""
    return event.contains(engine, "begin", _begin)


# Keys in the pooled connection's info: its owning DriverTransaction, or the asyncpg
# transaction the hooks opened for plain SQLAlchemy use.
_OWNER = "allocation_driver_owner"
_OPEN = "allocation_driver_transaction"


def _begin(connection: Connection) -> None:
    if connection.invalidated:
        return  # SQLAlchemy reconnects first, and begins again on the new one
    owner: DriverTransaction | None = connection.info.get(_OWNER)
    if owner is not None:
        await_(owner.begin())  # the ORM joins the unit of work's transaction
        return
    level = connection.get_execution_options().get("isolation_level")
    if level == "AUTOCOMMIT":
        return  # asked for explicitly (e.g. CREATE DATABASE): no transaction
    driver = connection.connection.driver_connection
    transaction = driver.transaction(  # type: ignore[union-attr]  # asyncpg's
        isolation=level.lower().replace(" ", "_") if level else None
    )
    await_(transaction.start())
    connection.info[_OPEN] = transaction


def _commit(connection: Connection) -> None:
    if connection.invalidated:
        return  # SQLAlchemy found it dead: its transaction is gone with it
    transaction = connection.info.pop(_OPEN, None)
    if transaction is not None:
        await_(transaction.commit())


def _rollback(connection: Connection) -> None:
    if connection.invalidated:
        return  # SQLAlchemy found it dead: its transaction is gone with it
    transaction = connection.info.pop(_OPEN, None)
    driver = connection.connection.driver_connection
    if transaction is not None and not driver.is_closed():  # type: ignore[union-attr]  # asyncpg's
        await_(transaction.rollback())


def _reset(dbapi_connection: Any, record: Any, reset_state: PoolResetState) -> None:
    # A connection goes back to the pool with no transaction open, whatever happened.
    owner: DriverTransaction | None = record.info.pop(_OWNER, None)
    transaction = record.info.pop(_OPEN, None)
    driver = dbapi_connection.driver_connection
    if reset_state.terminate_only or driver.is_closed():
        return
    if owner is not None:
        await_(owner.rollback())
    elif transaction is not None and driver.is_in_transaction():
        await_(transaction.rollback())


def append_arguments(rows: Sequence[dict[str, Any]]) -> list[list[Any]]:
    """The APPEND statement's column arrays for event-log rows."""
    columns = (
        "message_id",
        "aggregate_type",
        "aggregate_id",
        "aggregate_version",
        "name",
        "payload",
        "schema_version",
        "occurred_at",
        "correlation_id",
        "causation_id",
    )
    return [[row[column] for row in rows] for column in columns]
