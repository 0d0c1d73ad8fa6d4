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
    Text,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    select,
    tuple_,
    type_coerce,
)
from sqlalchemy.dialects.sqlite import insert as upsert
from sqlalchemy.dialects.sqlite import pysqlite

from allocation.adapters import statements, tables
from allocation.adapters.log_rows import EVENT_COLUMNS, LOG_COLUMNS

if TYPE_CHECKING:
    import datetime
    from collections.abc import Callable

    from sqlalchemy import Select, Table
    from sqlalchemy.sql.ddl import ExecutableDDLElement
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
_stream = statements.stream_after(_LOG_COLUMNS)
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
STREAM_IDS = _sql(statements.STREAM_IDS, "aggregate_type")
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
# Catch-up and replay: only the columns an event needs, in pages.
_events_after = select(*(_log.c[name] for name in EVENT_COLUMNS)).where(
    _log.c.position > bindparam("after")
)
READ_EVENTS = _sql(
    _events_after.order_by(_log.c.position)
    .limit(bindparam("limit"))
    .offset(literal_column("0")),
    "after",
    "limit",
)
READ_EVENTS_NAMED = _sql(
    _events_after.where(_log.c.name.in_(_in_list("names")))
    .order_by(_log.c.position)
    .limit(bindparam("limit"))
    .offset(literal_column("0")),
    "after",
    "names",
    "limit",
)
GET = _sql(statements.get_event(_LOG_COLUMNS), "message_id")
LAST_POSITION = _sql(statements.LAST_POSITION)

LATEST_SNAPSHOT = _sql(statements.LATEST_SNAPSHOT, "aggregate_type", "aggregate_id")
SAVE_SNAPSHOT = _sql(
    statements.save_snapshot(upsert),
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
CLAIM_OWNER = _sql(statements.CLAIM_OWNER, "kind", "value")
ALL_CLAIMS = _sql(statements.ALL_CLAIMS)

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

CHECKPOINT = _sql(statements.CHECKPOINT, "subscriber")
SET_CHECKPOINT = _sql(statements.set_checkpoint(upsert), "subscriber", "position")

_letters = tables.dead_letters
FORGET = tuple(_sql(forget, "subscriber") for forget in statements.FORGET)
ADD_DEAD_LETTER = _sql(
    statements.add_dead_letter(upsert),
    "subscriber",
    "message_id",
    "error",
    "attempts",
    "last_tried",
)
_letter_columns = statements.LETTERS
DEAD_LETTER_COLUMNS = statements.DEAD_LETTER_COLUMNS
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
DEAD_LETTER = _sql(statements.DEAD_LETTER, "id")
REMOVE_DEAD_LETTER = _sql(statements.REMOVE_DEAD_LETTER, "id")
DEAD_MESSAGE_IDS = _sql(
    select(_letters.c.message_id).where(
        _letters.c.subscriber == bindparam("subscriber"),
        _letters.c.message_id.in_(_in_list("message_ids")),
    ),
    "subscriber",
    "message_ids",
)

# ---- figures for status and metrics
CHECKPOINTS = _sql(statements.ALL_CHECKPOINTS)
DEAD_LETTER_COUNTS = _sql(statements.DEAD_LETTER_COUNTS)
_unhandled = statements.count_unhandled(bindparam("after"))
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
        for_order=_sql(statements.allocated_lines_of_order(table), "orderid"),
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
def users_view(table: Table) -> statements.UsersViewSql:
    """The statements of the users read model kept in ``table``."""
    statement = upsert(table)
    columns = statements.user_columns(table)
    return statements.UsersViewSql(
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


shadow_of = statements.shadow_of


@functools.cache
def shadow(table: Table) -> statements.ShadowSql:
    """The statements that create, swap in and drop the shadow of ``table``."""
    built = statements.shadow_statements(table)
    clear, fill, drop = built.swap
    return statements.ShadowSql(
        create=_ddl(built.create),
        swap=(_sql(clear), _sql(fill), _ddl(drop)),
        drop=_ddl(built.drop),
    )


def _ddl(element: ExecutableDDLElement) -> str:
    return str(element.compile(dialect=DIALECT))
