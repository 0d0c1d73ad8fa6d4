"""Every statement PostgreSQL runs for us, compiled once from the Core tables.

SQLAlchemy builds and compiles each statement for the asyncpg dialect when this
module is imported (the views' statements once per table, live or shadow); the
SQL text then goes straight to asyncpg, which prepares it once per connection.
Arguments are passed positionally: ``_sql`` checks, once, that the compiled
statement takes them in the order written here, and that the dialect would
convert none of them (but check arrays and booleans, which we pass as lists and
bools already).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    cast,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.dialects.postgresql import insert as upsert
from sqlalchemy.schema import CreateTable, DropTable
from sqlalchemy.sql.compiler import SQLCompiler

from allocation.adapters import tables
from allocation.adapters.log_rows import LOG_COLUMNS
from allocation.adapters.statements import compile_for

if TYPE_CHECKING:
    from sqlalchemy.sql.ddl import ExecutableDDLElement
    from sqlalchemy.sql.expression import ClauseElement

DIALECT = asyncpg_dialect.dialect()  # type: ignore[no-untyped-call]  # SQLAlchemy's
# The largest aggregate version the column holds: "no upper bound" for read_stream.
MAX_VERSION = 2**31 - 1

# Any constant works: it names the one advisory lock that orders appends (the
# one-key form; streams are locked with the two-key form, a separate key space).
APPEND_LOCK_KEY = 0x616C6C6F63  # "alloc"
# Listeners (the relay) are told on this channel that new events are committed.
LOG_CHANNEL = "allocation_event_log"


def _sql(statement: ClauseElement, *names: str) -> str:
    """The SQL text of ``statement``, which must take exactly ``names``, in order."""
    compiled = compile_for(statement, DIALECT)
    if compiled.names != names:
        raise RuntimeError(f"{compiled.sql!r} takes {compiled.names}, not {names}")
    compiler = statement.compile(dialect=DIALECT)
    assert isinstance(compiler, SQLCompiler)  # a statement, not DDL
    for name, process in zip(compiled.names, compiled.processors, strict=True):
        if process is not None and not isinstance(
            compiler.binds[name].type, ARRAY | Boolean
        ):
            raise RuntimeError(f"{compiled.sql!r}: {name} would need converting")
    return compiled.sql


def _ddl(element: ExecutableDDLElement) -> str:
    return str(element.compile(dialect=DIALECT)).strip()


def _strings(name: str) -> ClauseElement:
    return bindparam(name, type_=ARRAY(String))


_log = tables.event_log
_READABLE_LOG = select(
    *(
        # The payload as the JSON text it was stored as, not parsed.
        cast(_log.c.payload, Text).label("payload")
        if name == "payload"
        else _log.c[name]
        for name in LOG_COLUMNS
    )
)

# Appenders queue on the advisory lock until the holder commits, so positions are
# handed out in commit order and a reader never sees a later one first. The lock is
# taken (the CTE is scanned) before the first row draws its position. The
# notification is delivered when, and only if, the transaction commits. Written by
# hand: the lock must be taken inside the INSERT's own statement (one round trip),
# ahead of a multi-row unnest WITH ORDINALITY, which SQLAlchemy cannot express.
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
# Writers of one stream queue here (see PostgresEventStore.lock_stream).
LOCK_STREAM = _sql(
    select(
        func.pg_advisory_xact_lock(
            bindparam("high", type_=Integer), bindparam("low", type_=Integer)
        )
    ),
    "high",
    "low",
)
READ_STREAM = _sql(
    _READABLE_LOG.where(
        _log.c.aggregate_type == bindparam("aggregate_type"),
        _log.c.aggregate_id == bindparam("aggregate_id"),
        _log.c.aggregate_version > bindparam("after_version"),
        _log.c.aggregate_version <= bindparam("up_to_version"),
    ).order_by(_log.c.aggregate_version),
    "aggregate_type",
    "aggregate_id",
    "after_version",
    "up_to_version",
)
STREAM_IDS = _sql(
    select(_log.c.aggregate_id)
    .distinct()
    .where(_log.c.aggregate_type == bindparam("aggregate_type")),
    "aggregate_type",
)
READ_LOG = _sql(
    _READABLE_LOG.where(_log.c.position > bindparam("after", type_=BigInteger))
    .order_by(_log.c.position)
    .limit(bindparam("limit", type_=Integer)),
    "after",
    "limit",
)
READ_LOG_NAMED = _sql(
    _READABLE_LOG.where(
        _log.c.position > bindparam("after", type_=BigInteger),
        _log.c.name == func.any(_strings("names")),
    )
    .order_by(_log.c.position)
    .limit(bindparam("limit", type_=Integer)),
    "after",
    "names",
    "limit",
)
GET_EVENT = _sql(
    _READABLE_LOG.where(_log.c.message_id == bindparam("message_id")), "message_id"
)
LAST_POSITION = _sql(
    select(func.coalesce(func.max(_log.c.position), literal_column("0")))
)

_snapshots = tables.snapshots
LATEST_SNAPSHOT = _sql(
    select(_snapshots.c.version, _snapshots.c.schema_version, _snapshots.c.state).where(
        _snapshots.c.aggregate_type == bindparam("aggregate_type"),
        _snapshots.c.aggregate_id == bindparam("aggregate_id"),
    ),
    "aggregate_type",
    "aggregate_id",
)
_new_snapshot = upsert(_snapshots).values(
    aggregate_type=bindparam("aggregate_type"),
    aggregate_id=bindparam("aggregate_id"),
    version=bindparam("version"),
    schema_version=bindparam("schema_version"),
    state=bindparam("state"),
    taken_at=bindparam("taken_at"),
)
# Only a newer snapshot replaces the one kept.
SAVE_SNAPSHOT = _sql(
    _new_snapshot.on_conflict_do_update(
        index_elements=[_snapshots.c.aggregate_type, _snapshots.c.aggregate_id],
        set_={
            "version": _new_snapshot.excluded.version,
            "schema_version": _new_snapshot.excluded.schema_version,
            "state": _new_snapshot.excluded.state,
            "taken_at": _new_snapshot.excluded.taken_at,
        },
        where=_snapshots.c.version < _new_snapshot.excluded.version,
    ),
    "aggregate_type",
    "aggregate_id",
    "version",
    "schema_version",
    "state",
    "taken_at",
)

_claims = tables.claims
_wanted = func.unnest(_strings("kinds"), _strings("values"), _strings("owners"))
_wanted_claims = _wanted.table_valued("kind", "value", "owner").render_derived()
# Inserts the values nobody holds yet and says which: a value already held (by
# anyone, this owner included) is skipped, not an error, so the transaction
# goes on either way.
CLAIM = _sql(
    upsert(_claims)
    .from_select(
        ["kind", "value", "owner"],
        select(_wanted_claims.c.kind, _wanted_claims.c.value, _wanted_claims.c.owner),
    )
    .on_conflict_do_nothing()
    .returning(_claims.c.kind, _claims.c.value),
    "kinds",
    "values",
    "owners",
)
_keys = (
    func.unnest(_strings("kinds"), _strings("values"))
    .table_valued("kind", "value")
    .render_derived()
)
_matching_keys = and_(_claims.c.kind == _keys.c.kind, _claims.c.value == _keys.c.value)
CLAIM_OWNERS = _sql(
    select(_claims.c.kind, _claims.c.value, _claims.c.owner).join(
        _keys, _matching_keys
    ),
    "kinds",
    "values",
)
UNCLAIM = _sql(delete(_claims).where(_matching_keys), "kinds", "values")
CLAIM_OWNER = _sql(
    select(_claims.c.owner).where(
        _claims.c.kind == bindparam("kind"), _claims.c.value == bindparam("value")
    ),
    "kind",
    "value",
)

_processed = tables.processed_messages
_new_processed = upsert(_processed).from_select(
    ["subscriber", "message_id"],
    select(
        bindparam("subscriber", type_=String),
        func.unnest(_strings("message_ids")),
    ),
)
MARK_PROCESSED = _sql(_new_processed, "subscriber", "message_ids")
MARK_PROCESSED_UNLESS_THERE = _sql(
    _new_processed.on_conflict_do_nothing(), "subscriber", "message_ids"
)
PROCESSED_AMONG = _sql(
    select(_processed.c.message_id).where(
        _processed.c.subscriber == bindparam("subscriber"),
        _processed.c.message_id == func.any(_strings("message_ids")),
    ),
    "subscriber",
    "message_ids",
)

_checkpoints = tables.subscriber_checkpoints
CHECKPOINT = _sql(
    select(_checkpoints.c.position).where(
        _checkpoints.c.subscriber == bindparam("subscriber")
    ),
    "subscriber",
)
_new_checkpoint = upsert(_checkpoints).values(
    subscriber=bindparam("subscriber"), position=bindparam("position")
)
# Forward only: two workers finishing out of order never move it back.
SET_CHECKPOINT = _sql(
    _new_checkpoint.on_conflict_do_update(
        index_elements=[_checkpoints.c.subscriber],
        set_={"position": _new_checkpoint.excluded.position},
        where=_checkpoints.c.position < _new_checkpoint.excluded.position,
    ),
    "subscriber",
    "position",
)
FORGET = tuple(
    _sql(
        delete(table).where(table.c.subscriber == bindparam("subscriber")), "subscriber"
    )
    for table in (_processed, _checkpoints, tables.dead_letters)
)

_letters = tables.dead_letters
_new_letter = (
    upsert(_letters)
    .values(
        subscriber=bindparam("subscriber"),
        message_id=bindparam("message_id"),
        error=bindparam("error"),
        attempts=bindparam("attempts"),
        last_tried=bindparam("last_tried"),
    )
    .inline()  # nothing to return
)
# A message that fails again refreshes its dead letter (same id).
ADD_DEAD_LETTER = _sql(
    _new_letter.on_conflict_do_update(
        index_elements=[_letters.c.subscriber, _letters.c.message_id],
        set_={
            "error": _new_letter.excluded.error,
            "attempts": _new_letter.excluded.attempts,
            "last_tried": _new_letter.excluded.last_tried,
        },
    ),
    "subscriber",
    "message_id",
    "error",
    "attempts",
    "last_tried",
)
_all_letters = select(_letters).order_by(_letters.c.id)
DEAD_LETTERS = _sql(_all_letters.limit(bindparam("limit", type_=Integer)), "limit")
DEAD_LETTERS_OF = _sql(
    _all_letters.where(_letters.c.subscriber == bindparam("subscriber")).limit(
        bindparam("limit", type_=Integer)
    ),
    "subscriber",
    "limit",
)
DEAD_LETTER = _sql(select(_letters).where(_letters.c.id == bindparam("id")), "id")
REMOVE_DEAD_LETTER = _sql(
    delete(_letters).where(_letters.c.id == bindparam("id")), "id"
)
DEAD_MESSAGE_IDS = _sql(
    select(_letters.c.message_id).where(
        _letters.c.subscriber == bindparam("subscriber"),
        _letters.c.message_id == func.any(_strings("message_ids")),
    ),
    "subscriber",
    "message_ids",
)


# ---- read models, on their live table or its shadow


@dataclasses.dataclass(frozen=True, slots=True)
class AllocationsSql:
    """The allocations view's statements on one table."""

    write_line: str
    for_order: str
    clear: str
    lines: str


@dataclasses.dataclass(frozen=True, slots=True)
class UsersSql:
    """The users view's statements on one table."""

    upsert: str
    by_id: str
    by_email: str
    clear: str
    all_rows: str


@dataclasses.dataclass(frozen=True, slots=True)
class ShadowSql:
    """A read model's shadow table: create it, fill the live one from it, drop it."""

    create: str
    swap: tuple[str, ...]
    drop: str


@functools.cache
def allocations_sql(table: Table) -> AllocationsSql:
    new = upsert(table).values(
        orderid=bindparam("orderid"),
        sku=bindparam("sku"),
        qty=bindparam("qty"),
        batchref=bindparam("batchref"),
        version=bindparam("version"),
        allocated=bindparam("allocated"),
    )
    write_line = new.on_conflict_do_update(
        index_elements=[table.c.orderid, table.c.sku, table.c.qty],
        set_={
            "batchref": new.excluded.batchref,
            "version": new.excluded.version,
            "allocated": new.excluded.allocated,
        },
        # Guarded, only a newer version overwrites: events may arrive in any
        # order, or twice. One statement for both kinds of write, so a batch
        # of them is one executemany.
        where=or_(
            bindparam("unguarded", type_=Boolean),
            table.c.version < new.excluded.version,
        ),
    )
    return AllocationsSql(
        write_line=_sql(
            write_line,
            "orderid",
            "sku",
            "qty",
            "batchref",
            "version",
            "allocated",
            "unguarded",
        ),
        for_order=_sql(
            select(table.c.sku, table.c.batchref, table.c.qty).where(
                table.c.orderid == bindparam("orderid"), table.c.allocated
            ),
            "orderid",
        ),
        clear=_sql(delete(table)),
        lines=_sql(
            select(
                table.c.orderid,
                table.c.sku,
                table.c.qty,
                table.c.batchref,
                table.c.version,
                table.c.allocated,
            )
        ),
    )


@functools.cache
def users_sql(table: Table) -> UsersSql:
    new = upsert(table).values(
        user_id=bindparam("user_id"), name=bindparam("name"), email=bindparam("email")
    )
    columns = select(table.c.user_id, table.c.name, table.c.email)
    return UsersSql(
        upsert=_sql(
            new.on_conflict_do_update(
                index_elements=[table.c.user_id],
                set_={"name": new.excluded.name, "email": new.excluded.email},
            ),
            "user_id",
            "name",
            "email",
        ),
        by_id=_sql(columns.where(table.c.user_id == bindparam("user_id")), "user_id"),
        by_email=_sql(columns.where(table.c.email == bindparam("email")), "email"),
        clear=_sql(delete(table)),
        all_rows=_sql(columns),
    )


_SHADOWS = MetaData(naming_convention=tables.metadata.naming_convention)


@functools.cache
def shadow_of(table: Table) -> Table:
    """The shadow of a read model's table: the same columns and primary key."""
    shadow = table.to_metadata(_SHADOWS, name=f"{table.name}_shadow")
    # Copied, the key keeps the live table's constraint name, which PostgreSQL
    # would refuse: it names the key's index, unique in the schema.
    shadow.primary_key.name = f"pk_{shadow.name}"
    return shadow


@functools.cache
def shadow_sql(table: Table) -> ShadowSql:
    shadow = shadow_of(table)
    columns = [column.name for column in table.columns]
    return ShadowSql(
        create=_ddl(CreateTable(shadow, if_not_exists=True)),
        swap=(
            _sql(delete(table)),
            _sql(
                insert(table).from_select(
                    columns, select(*(shadow.c[name] for name in columns))
                )
            ),
            _ddl(DropTable(shadow)),
        ),
        drop=_ddl(DropTable(shadow, if_exists=True)),
    )
