"""Our aiosqlite adapter on a real SQLite file: dropping a connection never hangs."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from allocation.adapters import database, sqlite_driver

if TYPE_CHECKING:
    from pathlib import Path


async def test_a_dropped_connection_closes_even_after_its_thread_was_stopped(
    tmp_path: Path,
) -> None:
    """SQLAlchemy force-stops aiosqlite's thread when its wait for a graceful close
    is cancelled (as at shutdown); the close must still end, or the event loop
    never shuts down (a worker ignoring SIGTERM)."""
    engine = database.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    try:
        async with engine.connect() as connection:
            pooled = await connection.get_raw_connection()
            adapted = pooled.dbapi_connection
            assert isinstance(adapted, sqlite_driver.OneTripConnection)
            with anyio.fail_after(10):  # a hang guard, not a speed measure
                async with anyio.create_task_group() as closing:
                    closing.start_soon(adapted._terminate_graceful_close)
                    await (
                        anyio.lowlevel.checkpoint()
                    )  # its close is queued for the thread...
                    adapted._connection.stop()  # ...then the forced stop, as SQLAlchemy
            await connection.invalidate()
    finally:
        await engine.dispose()
