"""The book's own workload on a SQLite file (WAL): our app beside the book's code.

The workload (issue 9): for N skus, one CreateBatch each (100 units, in stock), then
one Allocate each (10 units), one command at a time, on a fresh file.

- ours: a migrated file, ``bootstrap(settings=config.Settings(database_url=...))``
  as shipped (background catch-up on), then ``services.add_batch`` and
  ``services.allocate``; emails and service lines go to fakes (none is sent).
- the book's: cosmicpython/code (branch master), driven by ``_book_workload.py`` in
  a child process with the book's own virtualenv (it pins SQLAlchemy < 2, and its
  package is also named ``allocation``): the book's bootstrap, message bus and
  SQLAlchemy unit of work on a session factory for the file, its tables made by its
  ``metadata.create_all``; its redis publisher and SMTP notifications are swapped for
  no-ops through its bootstrap's dependency injection.

Both files get the same PRAGMAs (WAL, synchronous=NORMAL, foreign keys, busy
timeout). Runs alternate (ours, book, then book, ours, ...) after one untimed
warm-up of each; a run times the workload only, not making the file or starting the
app, and is checked afterwards (every line allocated, the read model written). The
figures are medians over runs of commands/s (2N commands per run) and per phase,
process CPU per command (ours counts aiosqlite's thread too), and the median of the
per-pair ratios ours/book.

None of the book's code is in this repository (it is CC-BY-ND). To get it:

    git clone --branch master https://github.com/cosmicpython/code /work/book-code
    python3 -m venv /work/book-code/.venv
    /work/book-code/.venv/bin/pip install 'sqlalchemy<2' redis psycopg2-binary

``BOOK_CODE_DIR`` (default /work/book-code) names the checkout, ``BOOK_PYTHON``
(default ``$BOOK_CODE_DIR/.venv/bin/python``) its interpreter. Without them the
script says so and exits 0 without figures.

Run: .venv/bin/python benchmarks/book_workload_sqlite.py [--quick] [--skus N] [--pairs P]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from allocation import config, views
from allocation.adapters import database, migrations
from allocation.bootstrap import bootstrap
from allocation.service_layer import services
from allocation.testing import FakeConsole, FakeNotifications

if TYPE_CHECKING:
    from collections.abc import Callable

DEFAULT_BOOK_CODE_DIR = "/work/book-code"
DRIVER = Path(__file__).with_name("_book_workload.py")
# Kept equal to what the driver gives the book's side.
STOCK = 100
ORDER = 10
TARGET, AIM = 2.0, 3.0


@dataclasses.dataclass(frozen=True, slots=True)
class Phases:
    """Wall and process-CPU seconds of one run's two phases."""

    create_s: float
    create_cpu_s: float
    allocate_s: float
    allocate_cpu_s: float

    def commands_per_second(self, skus: int) -> float:
        return 2 * skus / (self.create_s + self.allocate_s)

    def cpu_ms_per_command(self, skus: int) -> float:
        return (self.create_cpu_s + self.allocate_cpu_s) / (2 * skus) * 1e3


@dataclasses.dataclass
class Side:
    """One contender: its runs so far."""

    name: str
    run: Callable[[Path, int], Phases]
    runs: list[Phases] = dataclasses.field(default_factory=list)

    def report(self, skus: int) -> None:
        rates = [run.commands_per_second(skus) for run in self.runs]
        creates = [skus / run.create_s for run in self.runs]
        allocates = [skus / run.allocate_s for run in self.runs]
        cpu = [run.cpu_ms_per_command(skus) for run in self.runs]
        print(
            f"{self.name:<34} {statistics.median(rates):7.0f} commands/s"
            f" (CreateBatch {statistics.median(creates):5.0f}/s,"
            f" Allocate {statistics.median(allocates):5.0f}/s),"
            f" CPU {statistics.median(cpu):5.2f} ms/command;"
            f" spread {min(rates):.0f}..{max(rates):.0f}"
        )


async def _our_workload(path: Path, skus: int) -> Phases:
    url = f"sqlite+aiosqlite:///{path}"
    engine = database.create_engine(url)
    try:
        await migrations.upgrade(engine)
    finally:
        await engine.dispose()
    names = [f"SKU-{i:05d}" for i in range(skus)]
    async with bootstrap(
        settings=config.Settings(database_url=url),
        notifications=FakeNotifications(),
        console=FakeConsole(),
    ) as bus:
        wall, cpu = time.perf_counter(), time.process_time()
        for sku in names:
            await services.add_batch(bus, f"{sku}-batch", sku, STOCK)
        created_wall, created_cpu = time.perf_counter(), time.process_time()
        refs = [
            await services.allocate(bus, f"order-{i}", sku, ORDER)
            for i, sku in enumerate(names)
        ]
        done_wall, done_cpu = time.perf_counter(), time.process_time()
        if refs != [f"{sku}-batch" for sku in names]:
            raise RuntimeError("ours allocated a line to an unexpected batch")
        for i in (0, skus - 1):
            found = await views.allocations(f"order-{i}", bus.uow_factory())
            if [dict(row) for row in found] != [
                {"sku": names[i], "batchref": f"{names[i]}-batch"}
            ]:
                raise RuntimeError(f"our read model holds {found} for order-{i}")
    return Phases(
        create_s=created_wall - wall,
        create_cpu_s=created_cpu - cpu,
        allocate_s=done_wall - created_wall,
        allocate_cpu_s=done_cpu - created_cpu,
    )


def _run_ours(path: Path, skus: int) -> Phases:
    return anyio.run(_our_workload, path, skus, backend="asyncio")


class BookProcess:
    """The child process that runs the book's code, one workload per request."""

    def __init__(self, book_python: Path, book_source: Path) -> None:
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in {"PYTHONPATH", "VIRTUAL_ENV"}
        }
        # SQLAlchemy 1.4 would warn once that the book's code predates 2.0.
        env["SQLALCHEMY_SILENCE_UBER_WARNING"] = "1"
        self._process = subprocess.Popen(
            [str(book_python), str(DRIVER), str(book_source)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.identity: dict[str, str] = json.loads(self._read_line())
        imported = Path(self.identity["allocation"]).resolve()
        if not imported.is_relative_to(book_source.resolve()):
            self.close()
            raise RuntimeError(f"the child imported {imported}, not the book's code")

    def _read_line(self) -> str:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            code = self._process.wait()
            raise RuntimeError(f"the book's process ended (exit {code}); see above")
        return line

    def run(self, path: Path, skus: int) -> Phases:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps({"path": str(path), "skus": skus}) + "\n")
        self._process.stdin.flush()
        return Phases(**json.loads(self._read_line()))

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._process.wait(timeout=30)


def _locate_book() -> tuple[Path, Path] | None:
    """The book's ``src`` folder and interpreter, or None (after saying what is missing)."""
    folder = Path(os.environ.get("BOOK_CODE_DIR", DEFAULT_BOOK_CODE_DIR))
    python = Path(os.environ.get("BOOK_PYTHON", folder / ".venv" / "bin" / "python"))
    source = folder / "src"
    missing = []
    if not (source / "allocation" / "bootstrap.py").exists():
        missing.append(f"the book's code (in {source})")
    if not python.exists():
        missing.append(f"its interpreter ({python})")
    if not missing:
        return source, python
    print(f"no figures: {' and '.join(missing)} not found. To get them:")
    print(f"  git clone --branch master https://github.com/cosmicpython/code {folder}")
    print(f"  python3 -m venv {folder}/.venv")
    print(f"  {folder}/.venv/bin/pip install 'sqlalchemy<2' redis psycopg2-binary")
    print("or point BOOK_CODE_DIR (and BOOK_PYTHON) at an existing checkout.")
    return None


def _timed_pairs(ours: Side, book: Side, folder: Path, skus: int, pairs: int) -> None:
    files = iter(range(1_000_000))

    def one(side: Side, count: int) -> Phases:
        path = folder / f"run-{next(files)}.db"
        try:
            return side.run(path, count)
        finally:
            for leftover in folder.glob(f"{path.name}*"):
                leftover.unlink()

    for side in (ours, book):
        one(side, max(10, skus // 10))  # warm-up: imports, mappers, caches
    for pair in range(pairs):
        for side in (ours, book) if pair % 2 == 0 else (book, ours):
            side.runs.append(one(side, skus))
            print(
                f"  run {pair + 1}/{pairs} {side.name.split(':')[0]}:"
                f" {side.runs[-1].commands_per_second(skus):.0f} commands/s",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--skus", type=int, default=None, help="skus per run")
    parser.add_argument("--pairs", type=int, default=None, help="timed runs of each")
    args = parser.parse_args()
    skus: int = args.skus or (150 if args.quick else 500)
    pairs: int = args.pairs or (3 if args.quick else 6)
    located = _locate_book()
    if located is None:
        return
    source, python = located
    start = time.perf_counter()
    book_process = BookProcess(python, source)
    try:
        identity = book_process.identity
        print(
            f"python {sys.version.split()[0]}; the book's code from {source}"
            f" (python {identity['python']}, SQLAlchemy {identity['sqlalchemy']});"
            f" {skus} skus per run: {skus} CreateBatch then {skus} Allocate,"
            f" {pairs} runs of each, alternating, medians over runs"
        )
        ours = Side("ours: services on bootstrap", _run_ours)
        book = Side("book: its bootstrap, bus, uow", book_process.run)
        with tempfile.TemporaryDirectory(prefix="allocation-bench-") as folder:
            _timed_pairs(ours, book, Path(folder), skus, pairs)
    finally:
        book_process.close()
    ours.report(skus)
    book.report(skus)
    ratios = [
        a.commands_per_second(skus) / b.commands_per_second(skus)
        for a, b in zip(ours.runs, book.runs, strict=True)
    ]
    ratio = statistics.median(ratios)
    verdict = (
        "meets the aim"
        if ratio >= AIM
        else "meets the target"
        if ratio >= TARGET
        else "misses the target"
    )
    print(
        f"ours/book throughput: {ratio:.2f} (median of per-pair ratios,"
        f" spread {min(ratios):.2f}..{max(ratios):.2f}); {verdict}"
        f" (target {TARGET:g}x, aim {AIM:g}x)"
    )
    print(f"took {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
