"""The event store's statements on SQLite, built from the Core tables once, at import
(the read models' are in ``view_sql``).

SQLAlchemy compiles them (``adapters.statements``) and is not used again: the SQL
text runs on aiosqlite's connection directly, because going through SQLAlchemy's
execution layer cost several times the statement itself. Each statement is
declared with its parameters in the order the call sites pass them, checked here
once, so a change to a table that moves them fails at import, not in production.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Text,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    select,
    type_coerce,
)
from sqlalchemy.dialects.sqlite import insert as upsert
from sqlalchemy.dialects.sqlite import pysqlite

from allocation.adapters import statements, tables
from allocation.adapters.log_rows import EVENT_COLUMNS, LOG_COLUMNS

if TYPE_CHECKING:
    import datetime
    from collections.abc import Callable

    from sqlalchemy import Select
    from sqlalchemy.sql.expression import ClauseElement

DIALECT = pysqlite.dialect()
# The one value conversion the statements need: SQLite keeps times as text.
_to_text = tables.event_log.c.occurred_at.type.dialect_impl(DIALECT).bind_processor(
    DIALECT
)
if _to_text is None:  # pragma: no cover - the dialect always has one
    raise RuntimeError("SQLite's DateTime has no bind processor")
timestamp: Callable[[datetime.datetime], str] = _to_text
# Parameters whose conversion is done without the dialect: times by ``timestamp``
# at the call sites, and a bool, which sqlite3 stores as 1 or 0 by itself.
_CONVERTED = frozenset({"occurred_at", "taken_at", "last_tried", "allocated"})


def compiled(statement: ClauseElement, *names: str, column_keys: Any = None) -> str:
    """The SQL of ``statement``, whose parameters must be exactly ``names``."""
    done = statements.compile_for(statement, DIALECT, column_keys=column_keys)
    if done.names != names:
        raise RuntimeError(f"parameters {done.names} are not {names}: {statement}")
    converted = [
        name
        for name, process in zip(done.names, done.processors, strict=True)
        if process is not None and name not in _CONVERTED
    ]
    if converted:
        raise RuntimeError(f"parameters {converted} need a conversion: {statement}")
    return done.sql


def _in_list(name: str) -> Any:
    # One statement for any number of values: the list travels as a JSON array.
    return select(func.json_each(bindparam(name)).table_valued("value").c.value)


def first_rows(statement: Select[Any]) -> Select[Any]:
    """The first ``limit`` rows of ``statement`` (all of them for -1)."""
    # An explicit OFFSET 0: without one the dialect adds an OFFSET parameter.
    return statement.limit(bindparam("limit")).offset(literal_column("0"))


_log = tables.event_log
_LOG_COLUMNS = [_log.c[name] for name in LOG_COLUMNS]
_WRITTEN_LOG_COLUMNS = LOG_COLUMNS[1:]

APPEND = compiled(
    insert(_log).values(payload=type_coerce(bindparam("payload"), Text)),
    *_WRITTEN_LOG_COLUMNS,
    column_keys=_WRITTEN_LOG_COLUMNS,
)
_stream = select(*_LOG_COLUMNS).where(
    _log.c.aggregate_type == bindparam("aggregate_type"),
    _log.c.aggregate_id == bindparam("aggregate_id"),
    _log.c.aggregate_version > bindparam("after_version"),
)
READ_STREAM = compiled(
    _stream.order_by(_log.c.aggregate_version),
    "aggregate_type",
    "aggregate_id",
    "after_version",
)
READ_STREAM_UP_TO = compiled(
    _stream.where(_log.c.aggregate_version <= bindparam("up_to_version")).order_by(
        _log.c.aggregate_version
    ),
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
_after = select(*_LOG_COLUMNS).where(_log.c.position > bindparam("after"))
READ_LOG = compiled(
    _after.order_by(_log.c.position)
    .limit(bindparam("limit"))
    .offset(bindparam("offset")),
    "after",
    "limit",
    "offset",
)
READ_LOG_NAMED = compiled(
    _after.where(_log.c.name.in_(_in_list("names")))
    .order_by(_log.c.position)
    .limit(bindparam("limit"))
    .offset(bindparam("offset")),
    "after",
    "names",
    "limit",
    "offset",
)
_events_after = select(*(_log.c[name] for name in EVENT_COLUMNS)).where(
    _log.c.position > bindparam("after")
)
READ_EVENTS = compiled(
    first_rows(_events_after.order_by(_log.c.position)),
    "after",
    "limit",
)
READ_EVENTS_NAMED = compiled(
    first_rows(
        _events_after.where(_log.c.name.in_(_in_list("names"))).order_by(
            _log.c.position
        )
    ),
    "after",
    "names",
    "limit",
)
GET = compiled(
    select(*_LOG_COLUMNS).where(_log.c.message_id == bindparam("message_id")),
    "message_id",
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
_snapshot = upsert(_snapshots)
SAVE_SNAPSHOT = compiled(
    _snapshot.on_conflict_do_update(
        index_elements=["aggregate_type", "aggregate_id"],
        set_={
            name: _snapshot.excluded[name]
            for name in ("version", "schema_version", "state", "taken_at")
        },
        # The newer one stays, whatever order two writers commit in.
        where=_snapshots.c.version <= _snapshot.excluded.version,
    ),
    "aggregate_type",
    "aggregate_id",
    "version",
    "schema_version",
    "state",
    "taken_at",
)

_claims = tables.claims
CLAIM = compiled(
    upsert(_claims).on_conflict_do_nothing(),
    "kind",
    "value",
    "owner",
)
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
MARK_PROCESSED = compiled(insert(_processed), "subscriber", "message_id")
MARK_PROCESSED_UNLESS_THERE = compiled(
    upsert(_processed).on_conflict_do_nothing(), "subscriber", "message_id"
)
PROCESSED_AMONG = compiled(
    select(_processed.c.message_id).where(
        _processed.c.subscriber == bindparam("subscriber"),
        _processed.c.message_id.in_(_in_list("message_ids")),
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
_checkpoint = upsert(_checkpoints)
SET_CHECKPOINT = compiled(
    _checkpoint.on_conflict_do_update(
        index_elements=["subscriber"],
        set_={"position": _checkpoint.excluded.position},
        # Forward only: two workers finishing out of order never move it back.
        where=_checkpoints.c.position < _checkpoint.excluded.position,
    ),
    "subscriber",
    "position",
)

_letters = tables.dead_letters
FORGET = tuple(
    compiled(
        delete(table).where(table.c.subscriber == bindparam("subscriber")), "subscriber"
    )
    for table in (_processed, _checkpoints, _letters)
)
_letter = upsert(_letters)
ADD_DEAD_LETTER = compiled(
    _letter.on_conflict_do_update(
        index_elements=["subscriber", "message_id"],
        set_={
            name: _letter.excluded[name] for name in ("error", "attempts", "last_tried")
        },
    ),
    "subscriber",
    "message_id",
    "error",
    "attempts",
    "last_tried",
    column_keys=("subscriber", "message_id", "error", "attempts", "last_tried"),
)
_letter_columns = select(
    _letters.c.id,
    _letters.c.subscriber,
    _letters.c.message_id,
    _letters.c.error,
    _letters.c.attempts,
    _letters.c.last_tried,
)
DEAD_LETTER_COLUMNS = (
    "id",
    "subscriber",
    "message_id",
    "error",
    "attempts",
    "last_tried",
)
DEAD_LETTERS = compiled(
    _letter_columns.order_by(_letters.c.id)
    .limit(bindparam("limit"))
    .offset(bindparam("offset")),
    "limit",
    "offset",
)
DEAD_LETTERS_OF = compiled(
    _letter_columns.where(_letters.c.subscriber == bindparam("subscriber"))
    .order_by(_letters.c.id)
    .limit(bindparam("limit"))
    .offset(bindparam("offset")),
    "subscriber",
    "limit",
    "offset",
)
DEAD_LETTER = compiled(_letter_columns.where(_letters.c.id == bindparam("id")), "id")
REMOVE_DEAD_LETTER = compiled(
    delete(_letters).where(_letters.c.id == bindparam("id")), "id"
)
DEAD_MESSAGE_IDS = compiled(
    select(_letters.c.message_id).where(
        _letters.c.subscriber == bindparam("subscriber"),
        _letters.c.message_id.in_(_in_list("message_ids")),
    ),
    "subscriber",
    "message_ids",
)
