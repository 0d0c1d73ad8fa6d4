"""Alembic environment on the async engine; the same migrations serve SQLite and PostgreSQL.

When the caller hands over an open connection (``config.attributes["connection"]``,
as ``allocation db upgrade`` and the tests do), it is migrated as it is; otherwise an
engine is built from DATABASE_URL.
"""

from __future__ import annotations

import asyncio
import logging.config

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from allocation import config as app_config
from allocation.adapters import tables

config = context.config
target_metadata = tables.metadata

if config.config_file_name is not None and config.attributes.get("connection") is None:
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or (
        app_config.Settings.from_environment().database_url
    )


def _include(
    item: object, name: str | None, kind: str, reflected: bool, _compare_to: object
) -> bool:
    # A replay's shadow table lives only while the replay runs (or until the next
    # one, after a crash): it is not part of the schema.
    return not (kind == "table" and reflected and (name or "").endswith("_shadow"))


def _configure(**options: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        include_object=_include,
        **options,  # type: ignore[arg-type]  # alembic's signature is keyword-only
    )


def run_migrations_offline() -> None:
    url = _url()
    _configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_on(connection: object) -> None:
    dialect = connection.dialect.name  # type: ignore[attr-defined]
    # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
    _configure(connection=connection, render_as_batch=dialect == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


async def _run_on_new_engine() -> None:
    engine = create_async_engine(_url(), poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run_on)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        asyncio.run(_run_on_new_engine())
    else:
        _run_on(connection)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
