"""The event store's statements, compiled once from the Core tables (asyncio only).

SQLAlchemy builds and compiles each statement for the asyncpg dialect when this
module is imported (the read models' own, in ``views``, once per table); the
SQL text then goes straight to asyncpg, which prepares it once per connection.
Arguments are passed positionally: ``compiled`` checks, once, that the compiled
statement takes them in the order written here, and that the dialect would
convert none of them (but check arrays and booleans, which we pass as lists and
bools already).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    Integer,
    String,
    Text,
    and_,
    bindparam,
    cast,
    delete,
    func,
    literal_column,
    select,
)
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.dialects.postgresql import insert as upsert
from sqlalchemy.sql.compiler import SQLCompiler

from allocation.adapters import tables
from allocation.adapters.log_rows import EVENT_COLUMNS, LOG_COLUMNS
from allocation.adapters.statements import compile_for

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy import Select
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


def compiled(statement: ClauseElement, *names: str) -> str:
    """The SQL text of ``statement``, which must take exactly ``names``, in order.

    Raises:
        RuntimeError: it takes other arguments, or would have one converted
            (at import: a statement written wrong never runs).
    """
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


def ddl(element: ExecutableDDLElement) -> str:
    """The SQL text of a schema change (which takes no arguments)."""
    return str(element.compile(dialect=DIALECT)).strip()


def strings(name: str) -> ClauseElement:
    return bindparam(name, type_=ARRAY(String))


_log = tables.event_log


def _readable(names: Sequence[str]) -> Select[Any]:
    return select(
        *(
            # The payload as the JSON text it was stored as, not parsed.
            cast(_log.c.payload, Text).label("payload")
            if name == "payload"
            else _log.c[name]
            for name in names
        )
    )


_READABLE_LOG = _readable(LOG_COLUMNS)

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
# A replay's last step holds back every append until it commits.
LOCK_LOG = compiled(
    select(func.pg_advisory_xact_lock(literal_column(str(APPEND_LOCK_KEY))))
)
# Writers of one stream queue here (see PostgresEventStore.lock_stream).
LOCK_STREAM = compiled(
    select(
        func.pg_advisory_xact_lock(
            bindparam("high", type_=Integer), bindparam("low", type_=Integer)
        )
    ),
    "high",
    "low",
)
READ_STREAM = compiled(
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
STREAM_IDS = compiled(
    select(_log.c.aggregate_id)
    .distinct()
    .where(_log.c.aggregate_type == bindparam("aggregate_type")),
    "aggregate_type",
)
READ_LOG = compiled(
    _READABLE_LOG.where(_log.c.position > bindparam("after", type_=BigInteger))
    .order_by(_log.c.position)
    .limit(bindparam("limit", type_=Integer)),
    "after",
    "limit",
)
READ_LOG_NAMED = compiled(
    _READABLE_LOG.where(
        _log.c.position > bindparam("after", type_=BigInteger),
        _log.c.name == func.any(strings("names")),
    )
    .order_by(_log.c.position)
    .limit(bindparam("limit", type_=Integer)),
    "after",
    "names",
    "limit",
)
_events_after = _readable(EVENT_COLUMNS).where(
    _log.c.position > bindparam("after", type_=BigInteger)
)
READ_EVENTS = compiled(
    _events_after.order_by(_log.c.position).limit(bindparam("limit", type_=Integer)),
    "after",
    "limit",
)
READ_EVENTS_NAMED = compiled(
    _events_after.where(_log.c.name == func.any(strings("names")))
    .order_by(_log.c.position)
    .limit(bindparam("limit", type_=Integer)),
    "after",
    "names",
    "limit",
)
GET_EVENT = compiled(
    _READABLE_LOG.where(_log.c.message_id == bindparam("message_id")), "message_id"
)
LAST_POSITION = compiled(
    select(func.coalesce(func.max(_log.c.position), literal_column("0")))
)

_snapshots = tables.snapshots
LATEST_SNAPSHOT = compiled(
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
# Only a snapshot as new replaces the one kept: the same version in a new shape
# does, an older one never.
SAVE_SNAPSHOT = compiled(
    _new_snapshot.on_conflict_do_update(
        index_elements=[_snapshots.c.aggregate_type, _snapshots.c.aggregate_id],
        set_={
            "version": _new_snapshot.excluded.version,
            "schema_version": _new_snapshot.excluded.schema_version,
            "state": _new_snapshot.excluded.state,
            "taken_at": _new_snapshot.excluded.taken_at,
        },
        where=_snapshots.c.version <= _new_snapshot.excluded.version,
    ),
    "aggregate_type",
    "aggregate_id",
    "version",
    "schema_version",
    "state",
    "taken_at",
)

_claims = tables.claims
_wanted = func.unnest(strings("kinds"), strings("values"), strings("owners"))
_wanted_claims = _wanted.table_valued("kind", "value", "owner").render_derived()
# Inserts the values nobody holds yet and says which: a value already held (by
# anyone, this owner included) is skipped, not an error, so the transaction
# goes on either way.
CLAIM = compiled(
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
    func.unnest(strings("kinds"), strings("values"))
    .table_valued("kind", "value")
    .render_derived()
)
_matching_keys = and_(_claims.c.kind == _keys.c.kind, _claims.c.value == _keys.c.value)
CLAIM_OWNERS = compiled(
    select(_claims.c.kind, _claims.c.value, _claims.c.owner).join(
        _keys, _matching_keys
    ),
    "kinds",
    "values",
)
UNCLAIM = compiled(delete(_claims).where(_matching_keys), "kinds", "values")
CLAIM_OWNER = compiled(
    select(_claims.c.owner).where(
        _claims.c.kind == bindparam("kind"), _claims.c.value == bindparam("value")
    ),
    "kind",
    "value",
)
ALL_CLAIMS = compiled(
    select(_claims.c.kind, _claims.c.value, _claims.c.owner).order_by(
        _claims.c.kind, _claims.c.value
    )
)

_processed = tables.processed_messages
_new_processed = upsert(_processed).from_select(
    ["subscriber", "message_id"],
    select(
        bindparam("subscriber", type_=String),
        func.unnest(strings("message_ids")),
    ),
)
MARK_PROCESSED = compiled(_new_processed, "subscriber", "message_ids")
MARK_PROCESSED_UNLESS_THERE = compiled(
    _new_processed.on_conflict_do_nothing(), "subscriber", "message_ids"
)
PROCESSED_AMONG = compiled(
    select(_processed.c.message_id).where(
        _processed.c.subscriber == bindparam("subscriber"),
        _processed.c.message_id == func.any(strings("message_ids")),
    ),
    "subscriber",
    "message_ids",
)

_checkpoints = tables.subscriber_checkpoints
CHECKPOINT = compiled(
    select(_checkpoints.c.position).where(
        _checkpoints.c.subscriber == bindparam("subscriber")
    ),
    "subscriber",
)
_new_checkpoint = upsert(_checkpoints).values(
    subscriber=bindparam("subscriber"), position=bindparam("position")
)
# Forward only: two workers finishing out of order never move it back.
SET_CHECKPOINT = compiled(
    _new_checkpoint.on_conflict_do_update(
        index_elements=[_checkpoints.c.subscriber],
        set_={"position": _new_checkpoint.excluded.position},
        where=_checkpoints.c.position < _new_checkpoint.excluded.position,
    ),
    "subscriber",
    "position",
)
FORGET = tuple(
    compiled(
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
ADD_DEAD_LETTER = compiled(
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
DEAD_LETTERS = compiled(_all_letters.limit(bindparam("limit", type_=Integer)), "limit")
DEAD_LETTERS_OF = compiled(
    _all_letters.where(_letters.c.subscriber == bindparam("subscriber")).limit(
        bindparam("limit", type_=Integer)
    ),
    "subscriber",
    "limit",
)
DEAD_LETTER = compiled(select(_letters).where(_letters.c.id == bindparam("id")), "id")
REMOVE_DEAD_LETTER = compiled(
    delete(_letters).where(_letters.c.id == bindparam("id")), "id"
)
DEAD_MESSAGE_IDS = compiled(
    select(_letters.c.message_id).where(
        _letters.c.subscriber == bindparam("subscriber"),
        _letters.c.message_id == func.any(strings("message_ids")),
    ),
    "subscriber",
    "message_ids",
)
