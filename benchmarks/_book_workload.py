"""The book's workload run through the book's own code: a child process of
``book_workload_sqlite.py``, started with the book's virtualenv and its ``src``.

The book's package is also named ``allocation``, so it cannot share a process with
ours. This file holds none of the book's code: it imports the book's modules from the
folder given on the command line and drives them through the book's own bootstrap,
message bus and unit of work, on a SQLite file set up as our engine sets up its
files (WAL, synchronous=NORMAL, foreign keys, a busy timeout). The book's redis
publisher and SMTP notifications are replaced through its bootstrap's dependency
injection (the workload raises no OutOfStock, and publishing goes nowhere here).

Protocol: one JSON object per line on stdin, ``{"path": ..., "skus": N}``; for each,
one JSON line on stdout with the seconds (wall and process CPU) of each phase. The
first line printed tells which ``allocation`` package was imported.

Run by: benchmarks/book_workload_sqlite.py (not by hand).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

# Kept equal to the PRAGMAs our engine sets on every SQLite connection.
PRAGMAS = (
    "journal_mode=WAL",
    "synchronous=NORMAL",
    "foreign_keys=ON",
    "busy_timeout=15000",
)
STOCK = 100
ORDER = 10


def _import_book(source: Path) -> dict[str, Any]:
    sys.path.insert(0, str(source))
    # The book's modules, imported by name from its own tree (none is copied here).
    from allocation import bootstrap
    from allocation.adapters import notifications, orm
    from allocation.domain import commands
    from allocation.service_layer import unit_of_work

    return {
        "bootstrap": bootstrap,
        "notifications": notifications,
        "orm": orm,
        "commands": commands,
        "unit_of_work": unit_of_work,
    }


def _engine(path: str) -> Any:
    import sqlalchemy
    from sqlalchemy import event

    engine = sqlalchemy.create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: object) -> None:
        cursor = dbapi_connection.cursor()
        for pragma in PRAGMAS:
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    return engine


def _count(engine: Any, table: str) -> int:
    import sqlalchemy

    with engine.connect() as connection:
        return int(
            connection.execute(sqlalchemy.text(f"SELECT count(*) FROM {table}"))
            .scalars()
            .one()
        )


def _silent_notifications(book_notifications: Any) -> Any:
    """An instance of the book's AbstractNotifications that sends nothing."""

    class SilentNotifications(book_notifications.AbstractNotifications):  # type: ignore[misc]  # the book's class, found at run time
        def send(self, destination: str, message: str) -> None:
            """The workload runs out of no stock, so this is never called."""

    return SilentNotifications()


class _Run:
    """One workload on a fresh file: N CreateBatch, then N Allocate."""

    def __init__(self, book: dict[str, Any]) -> None:
        self.book = book
        self.mappers_started = False

    def __call__(self, path: str, skus: int) -> dict[str, float]:
        from sqlalchemy.orm import sessionmaker

        engine = _engine(path)
        self.book["orm"].metadata.create_all(engine)
        uow = self.book["unit_of_work"].SqlAlchemyUnitOfWork(sessionmaker(bind=engine))
        bus = self.book["bootstrap"].bootstrap(
            # The mappers are classical and global: mapped once per process.
            start_orm=not self.mappers_started,
            uow=uow,
            notifications=_silent_notifications(self.book["notifications"]),
            publish=lambda channel, event: None,
        )
        self.mappers_started = True
        commands = self.book["commands"]
        names = [f"SKU-{i:05d}" for i in range(skus)]
        wall, cpu = time.perf_counter(), time.process_time()
        for sku in names:
            bus.handle(commands.CreateBatch(f"{sku}-batch", sku, STOCK, None))
        created_wall, created_cpu = time.perf_counter(), time.process_time()
        for i, sku in enumerate(names):
            bus.handle(commands.Allocate(f"order-{i}", sku, ORDER))
        done_wall, done_cpu = time.perf_counter(), time.process_time()
        # The book's bus logs and swallows event-handler errors: check the effects.
        counts = {
            table: _count(engine, table)
            for table in ("batches", "allocations", "allocations_view")
        }
        engine.dispose()
        if any(count != skus for count in counts.values()):
            raise RuntimeError(f"the book's run left {counts}, expected {skus} each")
        return {
            "create_s": created_wall - wall,
            "create_cpu_s": created_cpu - cpu,
            "allocate_s": done_wall - created_wall,
            "allocate_cpu_s": done_cpu - created_cpu,
        }


def main() -> None:
    book = _import_book(Path(sys.argv[1]))
    import sqlalchemy

    print(
        json.dumps(
            {
                "allocation": book["bootstrap"].__file__,
                "sqlalchemy": sqlalchemy.__version__,
                "python": sys.version.split()[0],
            }
        ),
        flush=True,
    )
    run = _Run(book)
    for line in sys.stdin:
        request = json.loads(line)
        print(json.dumps(run(request["path"], request["skus"])), flush=True)


if __name__ == "__main__":
    main()
