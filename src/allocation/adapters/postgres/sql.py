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

from typing import TYPE_CHECKING

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

from allocation.adapters import statements, tables
from allocation.adapters.log_rows import EVENT_COLUMNS, LOG_COLUMNS
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
_READABLE_COLUMNS = [
    # The payload as the JSON text it was stored as, not parsed.
    cast(_log.c.payload, Text).label("payload") if name == "payload" else _log.c[name]
    for name in LOG_COLUMNS
]
_READABLE_LOG = select(*_READABLE_COLUMNS)

# Appenders queue on the advisory lock until the holder commits, so positions are
# handed out in commit order and a reader never sees a later one first. The lock is
# taken (the CTE is scanned) before the first row draws its position. The
# notification is delivered when, and only if, the transaction commits. Written by
# hand: the lock must be taken inside the INSERT's own statement (one round trip),
# ahead of a multi-row unnest WITH ORDINALITY, which SQLAlchemy cannot express.
# It returns the positions drawn, so no further trip is needed to learn them.
APPEND = f"""
WITH ordered AS (SELECT pg_advisory_xact_lock({APPEND_LOCK_KEY})),
     announced AS (SELECT pg_notify('{LOG_CHANNEL}', ''))
INSERT INTO event_log (message_id, aggregate_type, aggregate_id, aggregate_version,
                       name, payload, schema_version, occurred_at, correlation_id,
                       causation_id, trace_context)
SELECT new.message_id, new.aggregate_type, new.aggregate_id, new.aggregate_version,
       new.name, new.payload, new.schema_version, new.occurred_at,
       new.correlation_id, new.causation_id, new.trace_context
FROM ordered, announced,
     unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::int[], $5::varchar[],
            $6::json[], $7::smallint[], $8::timestamptz[], $9::varchar[],
            $10::varchar[], $11::varchar[])
       WITH ORDINALITY AS new(message_id, aggregate_type, aggregate_id,
                              aggregate_version, name, payload, schema_version,
                              occurred_at, correlation_id, causation_id,
                              trace_context, n)
ORDER BY new.n
RETURNING position
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
    statements.stream_after(_READABLE_COLUMNS)
    .where(_log.c.aggregate_version <= bindparam("up_to_version"))
    .order_by(_log.c.aggregate_version),
    "aggregate_type",
    "aggregate_id",
    "after_version",
    "up_to_version",
)
STREAM_IDS = compiled(statements.STREAM_IDS, "aggregate_type")
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
# Catch-up and replay: only the columns an event needs.
_events_after = select(
    *(
        cast(_log.c.payload, Text).label("payload")
        if name == "payload"
        else _log.c[name]
        for name in EVENT_COLUMNS
    )
).where(_log.c.position > bindparam("after", type_=BigInteger))
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
GET_EVENT = compiled(statements.get_event(_READABLE_COLUMNS), "message_id")
LAST_POSITION = compiled(statements.LAST_POSITION)

LATEST_SNAPSHOT = compiled(statements.LATEST_SNAPSHOT, "aggregate_type", "aggregate_id")
SAVE_SNAPSHOT = compiled(
    statements.save_snapshot(upsert),
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
CLAIM_OWNER = compiled(statements.CLAIM_OWNER, "kind", "value")
ALL_CLAIMS = compiled(statements.ALL_CLAIMS)

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

CHECKPOINT = compiled(statements.CHECKPOINT, "subscriber")
SET_CHECKPOINT = compiled(statements.set_checkpoint(upsert), "subscriber", "position")
FORGET = tuple(compiled(forget, "subscriber") for forget in statements.FORGET)

_letters = tables.dead_letters
ADD_DEAD_LETTER = compiled(
    statements.add_dead_letter(upsert),
    "subscriber",
    "message_id",
    "error",
    "attempts",
    "last_tried",
)
_all_letters = statements.LETTERS.order_by(_letters.c.id)
DEAD_LETTERS = compiled(_all_letters.limit(bindparam("limit", type_=Integer)), "limit")
DEAD_LETTERS_OF = compiled(
    _all_letters.where(_letters.c.subscriber == bindparam("subscriber")).limit(
        bindparam("limit", type_=Integer)
    ),
    "subscriber",
    "limit",
)
DEAD_LETTER = compiled(statements.DEAD_LETTER, "id")
REMOVE_DEAD_LETTER = compiled(statements.REMOVE_DEAD_LETTER, "id")
DEAD_MESSAGE_IDS = compiled(
    select(_letters.c.message_id).where(
        _letters.c.subscriber == bindparam("subscriber"),
        _letters.c.message_id == func.any(strings("message_ids")),
    ),
    "subscriber",
    "message_ids",
)

# ---- figures for status and metrics
CHECKPOINTS = compiled(statements.ALL_CHECKPOINTS)
DEAD_LETTER_COUNTS = compiled(statements.DEAD_LETTER_COUNTS)
_unhandled = statements.count_unhandled(bindparam("after", type_=BigInteger))
COUNT_UNHANDLED = compiled(_unhandled, "after", "subscriber")
COUNT_UNHANDLED_NAMED = compiled(
    _unhandled.where(_log.c.name == func.any(strings("names"))),
    "after",
    "subscriber",
    "names",
)
