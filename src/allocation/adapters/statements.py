"""SQL built once per dialect from the Core tables, for running on the driver itself.

Building and compiling a statement costs more than running it, and SQLAlchemy's
execution layer costs more again; so each engine's package compiles its
statements once, here, and hands the SQL text and positional arguments straight
to its driver (aiosqlite, asyncpg). The tables stay the one schema definition.

The statements both engines run alike are built here too, as Core constructs
(the upserts from the dialect's own INSERT, which both give ON CONFLICT); each
engine's package compiles them and checks their parameters. What only one engine
does (in-lists, limits, arrays, collations, locks) stays in its package.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    MetaData,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal_column,
    select,
)
from sqlalchemy.schema import CreateTable, DropTable
from sqlalchemy.sql.compiler import SQLCompiler

from allocation.adapters import tables

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from sqlalchemy import Delete, Insert, Select, Table
    from sqlalchemy.engine import Dialect
    from sqlalchemy.sql.expression import ClauseElement, ColumnElement

    # sqlalchemy.dialects.sqlite.insert or sqlalchemy.dialects.postgresql.insert:
    # the same ON CONFLICT API, each with its own class.
    DialectInsert = Callable[[Table], Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Statement:
    """A compiled statement: its SQL text, and how to order its arguments.

    Attributes:
        sql: the text for the driver, in the dialect's positional style.
        names: the bound parameters' names, in the order the driver takes them.
        processors: for each of them, the dialect's conversion of a Python value
            (e.g. a datetime to SQLite's text), or None when there is none.
    """

    sql: str
    names: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]

    def arguments(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """The positional arguments for one execution, converted for the driver."""
        return tuple(
            value if process is None or value is None else process(value)
            for value, process in zip(
                (values[name] for name in self.names), self.processors, strict=True
            )
        )

    def many(self, rows: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        """The arguments for an executemany of ``rows``."""
        return [self.arguments(row) for row in rows]


def compile_for(
    statement: ClauseElement,
    dialect: Dialect,
    *,
    column_keys: Sequence[str] | None = None,
) -> Statement:
    """Compile ``statement`` for ``dialect`` (which must use a positional style).

    ``column_keys`` limits an INSERT without values() to those columns.
    """
    compiled = statement.compile(
        dialect=dialect,
        column_keys=list(column_keys) if column_keys is not None else None,
    )
    if not isinstance(compiled, SQLCompiler):
        raise TypeError(f"not a SQL statement: {statement!r}")
    names = tuple(compiled.positiontup or ())
    # The dialect's own conversions of Python values, as SQLAlchemy applies them.
    bind_processors = compiled._bind_processors
    return Statement(
        sql=compiled.string,
        names=names,
        processors=tuple(
            bind_processors.get(name)  # type: ignore[misc]  # a sequence only for tuples of values, which we never bind
            for name in names
        ),
    )


# ---- what both engines run alike, before compiling

_log = tables.event_log
STREAM_IDS = (
    select(_log.c.aggregate_id)
    .distinct()
    .where(_log.c.aggregate_type == bindparam("aggregate_type"))
)
LAST_POSITION = select(func.coalesce(func.max(_log.c.position), literal_column("0")))


def stream_after(columns: Sequence[Any]) -> Select[Any]:
    """``columns`` of one stream's events past ``after_version``; the caller
    bounds it and orders it by version."""
    return select(*columns).where(
        _log.c.aggregate_type == bindparam("aggregate_type"),
        _log.c.aggregate_id == bindparam("aggregate_id"),
        _log.c.aggregate_version > bindparam("after_version"),
    )


def get_event(columns: Sequence[Any]) -> Select[Any]:
    """``columns`` of the event with ``message_id``."""
    return select(*columns).where(_log.c.message_id == bindparam("message_id"))


_snapshots = tables.snapshots
LATEST_SNAPSHOT = select(
    _snapshots.c.version, _snapshots.c.schema_version, _snapshots.c.state
).where(
    _snapshots.c.aggregate_type == bindparam("aggregate_type"),
    _snapshots.c.aggregate_id == bindparam("aggregate_id"),
)

_claims = tables.claims
CLAIM_OWNER = select(_claims.c.owner).where(
    _claims.c.kind == bindparam("kind"), _claims.c.value == bindparam("value")
)
ALL_CLAIMS = select(_claims.c.kind, _claims.c.value, _claims.c.owner).order_by(
    _claims.c.kind, _claims.c.value
)

_checkpoints = tables.subscriber_checkpoints
CHECKPOINT = select(_checkpoints.c.position).where(
    _checkpoints.c.subscriber == bindparam("subscriber")
)

_letters = tables.dead_letters
# What a dead letter's row holds, in this order.
DEAD_LETTER_COLUMNS = (
    "id",
    "subscriber",
    "message_id",
    "error",
    "attempts",
    "last_tried",
)
LETTERS = select(*(_letters.c[name] for name in DEAD_LETTER_COLUMNS))
DEAD_LETTER = LETTERS.where(_letters.c.id == bindparam("id"))
REMOVE_DEAD_LETTER = delete(_letters).where(_letters.c.id == bindparam("id"))
# A replay forgets a subscriber: its tracking, checkpoint and dead letters.
FORGET: tuple[Delete, ...] = tuple(
    delete(table).where(table.c.subscriber == bindparam("subscriber"))
    for table in (tables.processed_messages, _checkpoints, _letters)
)


def _new_row(insert_into: DialectInsert, table: Table, *names: str) -> Any:
    """An INSERT of one row, its values bound under the columns' names."""
    # Inline: nothing generated is wanted back (no RETURNING of the key).
    return insert_into(table).values({name: bindparam(name) for name in names}).inline()


def save_snapshot(insert_into: DialectInsert) -> Insert:
    """Keeps a snapshot, replacing the one kept unless that one is newer: the
    newer one stays whatever order two writers commit in (the same version in a
    new shape replaces it)."""
    new = _new_row(
        insert_into,
        _snapshots,
        "aggregate_type",
        "aggregate_id",
        "version",
        "schema_version",
        "state",
        "taken_at",
    )
    return new.on_conflict_do_update(  # type: ignore[no-any-return]  # the dialect's Insert
        index_elements=[_snapshots.c.aggregate_type, _snapshots.c.aggregate_id],
        set_={
            name: new.excluded[name]
            for name in ("version", "schema_version", "state", "taken_at")
        },
        where=_snapshots.c.version <= new.excluded.version,
    )


def set_checkpoint(insert_into: DialectInsert) -> Insert:
    """Moves a subscriber's checkpoint forward only: two workers finishing out of
    order never move it back."""
    new = _new_row(insert_into, _checkpoints, "subscriber", "position")
    return new.on_conflict_do_update(  # type: ignore[no-any-return]  # the dialect's Insert
        index_elements=[_checkpoints.c.subscriber],
        set_={"position": new.excluded.position},
        where=_checkpoints.c.position < new.excluded.position,
    )


def add_dead_letter(insert_into: DialectInsert) -> Insert:
    """Records a dead letter; a message that fails again refreshes its own."""
    new = _new_row(insert_into, _letters, *DEAD_LETTER_COLUMNS[1:])
    return new.on_conflict_do_update(  # type: ignore[no-any-return]  # the dialect's Insert
        index_elements=[_letters.c.subscriber, _letters.c.message_id],
        set_={name: new.excluded[name] for name in ("error", "attempts", "last_tried")},
    )


# ---- the read models' tables and their shadows


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


def user_columns(table: Table) -> Select[Any]:
    """A users table's rows: id, name, email."""
    return select(table.c.user_id, table.c.name, table.c.email)


def allocated_lines_of_order(table: Table) -> Select[Any]:
    """The allocated lines of ``orderid``: sku, batch and quantity (the caller
    sorts them, in code-point order)."""
    return select(table.c.sku, table.c.batchref, table.c.qty).where(
        table.c.orderid == bindparam("orderid"), table.c.allocated
    )


_SHADOWS = MetaData(naming_convention=tables.metadata.naming_convention)


@functools.cache
def shadow_of(table: Table) -> Table:
    """The shadow of a read model's table: the same columns and key, another name."""
    shadow = table.to_metadata(_SHADOWS, name=f"{table.name}_shadow")
    # Copied, the key keeps the live table's constraint name, which PostgreSQL
    # would refuse: it names the key's index, unique in the schema.
    shadow.primary_key.name = f"pk_{shadow.name}"
    return shadow


@dataclasses.dataclass(frozen=True, slots=True)
class ShadowSql:
    """A read model's shadow table: create it, fill the live one from it, drop it."""

    create: str
    swap: tuple[str, ...]
    drop: str


@dataclasses.dataclass(frozen=True, slots=True)
class ShadowStatements:
    """The same, before compiling: ``swap`` empties the live table, fills it from
    the shadow and drops the shadow, in one transaction."""

    create: CreateTable
    swap: tuple[Delete, Insert, DropTable]
    drop: DropTable


def shadow_statements(table: Table) -> ShadowStatements:
    """What creates, swaps in and drops the shadow of ``table``."""
    shadow = shadow_of(table)
    names = [column.name for column in table.columns]
    return ShadowStatements(
        create=CreateTable(shadow, if_not_exists=True),
        swap=(
            delete(table),
            insert(table).from_select(
                names, select(*(shadow.c[name] for name in names))
            ),
            DropTable(shadow),
        ),
        drop=DropTable(shadow, if_exists=True),
    )


# ---- figures for status and metrics, alike on both engines
ALL_CHECKPOINTS = select(_checkpoints.c.subscriber, _checkpoints.c.position).order_by(
    _checkpoints.c.subscriber
)
DEAD_LETTER_COUNTS = (
    select(_letters.c.subscriber, func.count())
    .group_by(_letters.c.subscriber)
    .order_by(_letters.c.subscriber)
)

_processed = tables.processed_messages


def count_unhandled(after: ColumnElement[int]) -> Select[Any]:
    """The count of events past ``after`` (a subscriber's checkpoint, bound as its
    engine binds a position) that ``subscriber`` has neither handled nor buried."""
    # Each event past the checkpoint is looked up in the two indexes of the
    # subscriber's tracking, so the cost follows the lag, not the log.
    return (
        select(func.count())
        .select_from(_log)
        .where(
            _log.c.position > after,
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
