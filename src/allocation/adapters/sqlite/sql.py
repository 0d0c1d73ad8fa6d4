"""Every statement of the SQLite engine, built from the Core tables once, at import.

SQLAlchemy compiles them (``adapters.statements``) and is not used again: the SQL
text runs on aiosqlite's connection directly, because going through SQLAlchemy's
execution layer cost several times the statement itself. Each statement is
declared with its parameters in the order the call sites pass them, checked here
once, so a change to a table that moves them fails at import, not in production.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    MetaData,
    Text,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal_column,
    select,
    tuple_,
    type_coerce,
)
from sqlalchemy.dialects.sqlite import insert as upsert
from sqlalchemy.dialects.sqlite import pysqlite
from sqlalchemy.schema import CreateTable, DropTable

from allocation.adapters import statements, tables
from allocation.adapters.log_rows import LOG_COLUMNS

if TYPE_CHECKING:
    import datetime
    from collections.abc import Callable

    from sqlalchemy import Select, Table
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


def _sql(statement: ClauseElement, *names: str, column_keys: Any = None) -> str:
    """The SQL of ``statement``, whose parameters must be exactly ``names``."""
    compiled = statements.compile_for(statement, DIALECT, column_keys=column_keys)
    if compiled.names != names:
        raise RuntimeError(f"parameters {compiled.names} are not {names}: {statement}")
    converted = [
        name
        for name, process in zip(compiled.names, compiled.processors, strict=True)
        if process is not None and name not in _CONVERTED
    ]
    if converted:
        raise RuntimeError(f"parameters {converted} need a conversion: {statement}")
    return compiled.sql


def _in_list(name: str) -> Any:
    # One statement for any number of values: the list travels as a JSON array.
    return select(func.json_each(bindparam(name)).table_valued("value").c.value)


_log = tables.event_log
_LOG_COLUMNS = [_log.c[name] for name in LOG_COLUMNS]
_WRITTEN_LOG_COLUMNS = LOG_COLUMNS[1:]

APPEND = _sql(
    insert(_log).values(payload=type_coerce(bindparam("payload"), Text)),
    *_WRITTEN_LOG_COLUMNS,
    column_keys=_WRITTEN_LOG_COLUMNS,
)
_stream = select(*_LOG_COLUMNS).where(
    _log.c.aggregate_type == bindparam("aggregate_type"),
    _log.c.aggregate_id == bindparam("aggregate_id"),
    _log.c.aggregate_version > bindparam("after_version"),
)
READ_STREAM = _sql(
    _stream.order_by(_log.c.aggregate_version),
    "aggregate_type",
    "aggregate_id",
    "after_version",
)
READ_STREAM_UP_TO = _sql(
    _stream.where(_log.c.aggregate_version <= bindparam("up_to_version")).order_by(
        _log.c.aggregate_version
    ),
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
_after = select(*_LOG_COLUMNS).where(_log.c.position > bindparam("after"))
READ_LOG = _sql(
    _after.order_by(_log.c.position)
    .limit(bindparam("limit"))
    .offset(bindparam("offset")),
    "after",
    "limit",
    "offset",
)
READ_LOG_NAMED = _sql(
    _after.where(_log.c.name.in_(_in_list("names")))
    .order_by(_log.c.position)
    .limit(bindparam("limit"))
    .offset(bindparam("offset")),
    "after",
    "names",
    "limit",
    "offset",
)
GET = _sql(
    select(*_LOG_COLUMNS).where(_log.c.message_id == bindparam("message_id")),
    "message_id",
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
_snapshot = upsert(_snapshots)
SAVE_SNAPSHOT = _sql(
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
CLAIM = _sql(
    upsert(_claims).on_conflict_do_nothing(),
    "kind",
    "value",
    "owner",
)
CLAIM_OWNER = _sql(
    select(_claims.c.owner).where(
        _claims.c.kind == bindparam("kind"), _claims.c.value == bindparam("value")
    ),
    "kind",
    "value",
)
ALL_CLAIMS = _sql(
    select(_claims.c.kind, _claims.c.value, _claims.c.owner).order_by(
        _claims.c.kind, _claims.c.value
    )
)

_processed = tables.processed_messages
MARK_PROCESSED = _sql(insert(_processed), "subscriber", "message_id")
MARK_PROCESSED_UNLESS_THERE = _sql(
    upsert(_processed).on_conflict_do_nothing(), "subscriber", "message_id"
)
PROCESSED_AMONG = _sql(
    select(_processed.c.message_id).where(
        _processed.c.subscriber == bindparam("subscriber"),
        _processed.c.message_id.in_(_in_list("message_ids")),
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
_checkpoint = upsert(_checkpoints)
SET_CHECKPOINT = _sql(
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
    _sql(
        delete(table).where(table.c.subscriber == bindparam("subscriber")), "subscriber"
    )
    for table in (_processed, _checkpoints, _letters)
)
_letter = upsert(_letters)
ADD_DEAD_LETTER = _sql(
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
DEAD_LETTERS = _sql(
    _letter_columns.order_by(_letters.c.id)
    .limit(bindparam("limit"))
    .offset(bindparam("offset")),
    "limit",
    "offset",
)
DEAD_LETTERS_OF = _sql(
    _letter_columns.where(_letters.c.subscriber == bindparam("subscriber"))
    .order_by(_letters.c.id)
    .limit(bindparam("limit"))
    .offset(bindparam("offset")),
    "subscriber",
    "limit",
    "offset",
)
DEAD_LETTER = _sql(_letter_columns.where(_letters.c.id == bindparam("id")), "id")
REMOVE_DEAD_LETTER = _sql(
    delete(_letters).where(_letters.c.id == bindparam("id")), "id"
)
DEAD_MESSAGE_IDS = _sql(
    select(_letters.c.message_id).where(
        _letters.c.subscriber == bindparam("subscriber"),
        _letters.c.message_id.in_(_in_list("message_ids")),
    ),
    "subscriber",
    "message_ids",
)

# ---- figures for status and metrics
CHECKPOINTS = _sql(
    select(_checkpoints.c.subscriber, _checkpoints.c.position).order_by(
        _checkpoints.c.subscriber
    )
)
DEAD_LETTER_COUNTS = _sql(
    select(_letters.c.subscriber, func.count())
    .group_by(_letters.c.subscriber)
    .order_by(_letters.c.subscriber)
)
# Each event past the checkpoint is looked up in the two indexes of the
# subscriber's tracking, so the cost follows the lag, not the log.
_unhandled = (
    select(func.count())
    .select_from(_log)
    .where(
        _log.c.position > bindparam("after"),
        ~exists().where(
            _processed.c.subscriber == bindparam("subscriber"),
            _processed.c.message_id == _log.c.message_id,
        ),
        ~exists().where(
            _letters.c.subscriber == bindparam("subscriber"),
            _letters.c.message_id == _log.c.message_id,
        ),
    )
)
COUNT_UNHANDLED = _sql(_unhandled, "after", "subscriber", "subscriber")
COUNT_UNHANDLED_NAMED = _sql(
    _unhandled.where(_log.c.name.in_(_in_list("names"))),
    "after",
    "subscriber",
    "subscriber",
    "names",
)


@dataclasses.dataclass(frozen=True, slots=True)
class AllocationsViewSql:
    """The statements of one allocations table (the live one or its shadow)."""

    upsert_guarded: str
    upsert: str
    for_order: str
    clear: str
    lines: str
    lines_after: str


@dataclasses.dataclass(frozen=True, slots=True)
class UsersViewSql:
    """The statements of one users table (the live one or its shadow)."""

    upsert: str
    by_id: str
    by_email: str
    clear: str
    all_rows: str
    page: str
    page_after: str


@dataclasses.dataclass(frozen=True, slots=True)
class ShadowSql:
    """Creating a shadow table, swapping its rows into the live one, dropping it."""

    create: str
    swap: tuple[str, ...]
    drop: str


_LINE = ("orderid", "sku", "qty", "batchref", "version", "allocated")


@functools.cache
def allocations_view(table: Table) -> AllocationsViewSql:
    """The statements of the allocations read model kept in ``table``."""
    statement = upsert(table)
    changes = {name: statement.excluded[name] for name in _LINE[3:]}
    key = ["orderid", "sku", "qty"]
    in_key_order = select(*(table.c[name] for name in _LINE)).order_by(
        *(table.c[name] for name in key)
    )
    return AllocationsViewSql(
        # Guarded, it only overwrites a row of an older version: the newest event
        # wins whatever the order of arrival, and a redelivered one changes nothing.
        upsert_guarded=_sql(
            statement.on_conflict_do_update(
                index_elements=key,
                set_=changes,
                where=table.c.version < statement.excluded.version,
            ),
            *_LINE,
        ),
        upsert=_sql(
            statement.on_conflict_do_update(index_elements=key, set_=changes), *_LINE
        ),
        for_order=_sql(
            select(table.c.sku, table.c.batchref, table.c.qty).where(
                table.c.orderid == bindparam("orderid"), table.c.allocated
            ),
            "orderid",
        ),
        clear=_sql(delete(table)),
        # In key order, a page at a time: the key is the table's primary key, so
        # each page is a range of its index. SQLite's default (BINARY) collation
        # compares text by its UTF-8 bytes: code-point order, as Python does.
        lines=_sql(_page(in_key_order), "limit"),
        lines_after=_sql(
            _page(
                in_key_order.where(
                    tuple_(table.c.orderid, table.c.sku, table.c.qty)
                    > tuple_(bindparam("orderid"), bindparam("sku"), bindparam("qty"))
                )
            ),
            "orderid",
            "sku",
            "qty",
            "limit",
        ),
    )


def _page(statement: Select[Any]) -> Select[Any]:
    """The first ``limit`` rows of ``statement`` (all of them for -1)."""
    # An explicit OFFSET 0: without one the dialect adds an OFFSET parameter.
    return statement.limit(bindparam("limit")).offset(literal_column("0"))


@functools.cache
def users_view(table: Table) -> UsersViewSql:
    """The statements of the users read model kept in ``table``."""
    statement = upsert(table)
    columns = select(table.c.user_id, table.c.name, table.c.email)
    return UsersViewSql(
        upsert=_sql(
            statement.on_conflict_do_update(
                index_elements=["user_id"],
                set_={
                    "name": statement.excluded.name,
                    "email": statement.excluded.email,
                },
            ),
            "user_id",
            "name",
            "email",
        ),
        by_id=_sql(columns.where(table.c.user_id == bindparam("user_id")), "user_id"),
        by_email=_sql(columns.where(table.c.email == bindparam("email")), "email"),
        clear=_sql(delete(table)),
        all_rows=_sql(columns),
        page=_sql(_page(columns.order_by(table.c.user_id)), "limit"),
        page_after=_sql(
            _page(
                columns.where(table.c.user_id > bindparam("after")).order_by(
                    table.c.user_id
                )
            ),
            "after",
            "limit",
        ),
    )


@functools.cache
def shadow_of(table: Table) -> Table:
    """The shadow of a read-model table: the same columns and key, another name."""
    metadata = MetaData(naming_convention=tables.metadata.naming_convention)
    return table.to_metadata(metadata, name=f"{table.name}_shadow")


@functools.cache
def shadow(table: Table) -> ShadowSql:
    """The statements that create, swap in and drop the shadow of ``table``."""
    copy = shadow_of(table)
    names = [column.name for column in table.columns]
    return ShadowSql(
        create=str(CreateTable(copy, if_not_exists=True).compile(dialect=DIALECT)),
        swap=(
            _sql(delete(table)),
            _sql(insert(table).from_select(names, select(*copy.columns))),
            str(DropTable(copy).compile(dialect=DIALECT)),
        ),
        drop=str(DropTable(copy, if_exists=True).compile(dialect=DIALECT)),
    )
