"""SQL built once per dialect from the Core tables, for running on the driver itself.

Building and compiling a statement costs more than running it, and SQLAlchemy's
execution layer costs more again; so each engine's package compiles its
statements once, here, and hands the SQL text and positional arguments straight
to its driver (aiosqlite, asyncpg). The tables stay the one schema definition.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from sqlalchemy.sql.compiler import SQLCompiler

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from sqlalchemy.engine import Dialect
    from sqlalchemy.sql.expression import ClauseElement


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
