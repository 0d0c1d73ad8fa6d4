"""The child process of the crash test (``test_crash.py``): work until killed.

    python crash_child.py run JOURNAL EMAILS CONSOLE --round N --seed S [--workers W]
    python crash_child.py recover JOURNAL EMAILS CONSOLE

``run`` boots the application on DATABASE_URL (bootstrap first finishes what a
killed predecessor left), writes ``ready`` on stdout, then issues a random stream
of commands through ``allocation.service_layer.services`` from W concurrent
workers (3; 1 leaves out races between commands), forever. ``recover`` only boots (the catch-up at start) and exits.

Every command is written to the JOURNAL (JSON lines, unbuffered, appended) before it
is handed to the bus, with its message id, its payload and the outcome it must have;
its actual outcome is written after it. Every email is appended to EMAILS, synced to
disk, before ``send`` returns, with the subscriber and the message id of the handler
call that sent it (from ``tracking.handling``); console lines go to CONSOLE.
Any surprise (an outcome other than the expected one, a traceback) ends the process
with a non-zero status and the reason on stderr.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from allocation.adapters.console import AbstractConsole
from allocation.adapters.notifications import AbstractNotifications, Email
from allocation.bootstrap import bootstrap
from allocation.domain.exceptions import EmailAlreadyRegistered
from allocation.service_layer import services
from allocation.service_layer.exceptions import InvalidSku
from allocation.service_layer.tracking import handling

if TYPE_CHECKING:
    from allocation.service_layer.messagebus import Message, MessageBus

# Never given a batch: every allocation of it must fail with InvalidSku.
UNKNOWN_SKU = "NO-SUCH-SKU"
SKUS = ("LAMP", "CHAIR", "TABLE", "SOFA", "RUG")
WORKERS = 3
EXPECTED_ERRORS: dict[str, type[Exception]] = {
    "EmailAlreadyRegistered": EmailAlreadyRegistered,
    "InvalidSku": InvalidSku,
}


class AppendOnlyFile:
    """One JSON object a line, each written with a single ``write`` to an O_APPEND file."""

    def __init__(self, path: Path, *, sync: bool) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._sync = sync

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        os.write(self._fd, line.encode())
        if self._sync:
            os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


def _current_handler() -> dict[str, str | None]:
    """Which handler call is running, and on which message (the bus says)."""
    current = handling.get()
    if current is None:
        return {"subscriber": None, "message_id": None}
    return {
        "subscriber": current.subscriber,
        "message_id": current.message.message_id,
    }


class RecordingNotifications(AbstractNotifications):
    """Every email as a line, on disk before ``send`` returns."""

    def __init__(self, file: AppendOnlyFile) -> None:
        self._file = file

    async def send(self, destination: str, message: Email) -> None:
        record = {
            **_current_handler(),
            "destination": destination,
            "subject": message.subject,
        }
        # Off the event loop, as a real mail client's I/O would be.
        await anyio.to_thread.run_sync(self._file.append, record)


class RecordingConsole(AbstractConsole):
    """Every console line, with the handler that wrote it."""

    def __init__(self, file: AppendOnlyFile) -> None:
        self._file = file

    def write(self, line: str) -> None:
        self._file.append({**_current_handler(), "line": line})


class JournalingBus:
    """Stands in for the bus in ``services``: journals each command around its handling."""

    def __init__(self, bus: MessageBus, journal: AppendOnlyFile, expect: str) -> None:
        self._bus = bus
        self._journal = journal
        self._expect = expect

    async def handle(self, message: Message) -> Any:
        self._journal.append(
            {
                "id": message.message_id,
                "command": message.TYPE,
                "payload": message.to_payload(),
                "expect": self._expect,
            }
        )
        try:
            result = await self._bus.handle(message)
        except tuple(EXPECTED_ERRORS.values()) as error:
            self._journal.append(
                {"id": message.message_id, "outcome": type(error).__name__}
            )
            if type(error).__name__ != self._expect:
                raise
            return None
        self._journal.append(
            {"id": message.message_id, "outcome": "ok", "result": result}
        )
        if self._expect != "ok":
            raise SystemExit(
                f"{message.TYPE} {message.to_payload()} succeeded, "
                f"expected {self._expect}"
            )
        return result


class Known:
    """What earlier runs and this one certainly committed (from the journal)."""

    def __init__(self, journal: Path) -> None:
        self.emails: list[str] = []
        self.batches: list[str] = []
        self.skus: set[str] = set()
        commands: dict[str, dict[str, Any]] = {}
        if not journal.exists():
            return
        for line in journal.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if "command" in record:
                commands[record["id"]] = record
            elif record["outcome"] == "ok":
                self.succeeded(commands[record["id"]])

    def succeeded(self, command: dict[str, Any]) -> None:
        payload = command["payload"]
        if command["command"] == "register_user" and command["expect"] == "ok":
            self.emails.append(payload["email"])
        elif command["command"] == "create_batch":
            self.batches.append(payload["ref"])
            self.skus.add(payload["sku"])


class Stream:
    """A random stream of commands; identifiers are unique to this round."""

    def __init__(
        self, bus: MessageBus, journal: AppendOnlyFile, known: Known, round_: int
    ) -> None:
        self._bus = bus
        self._journal = journal
        self._known = known
        self._round = round_
        self._counter = 0

    def _unique(self, kind: str) -> str:
        self._counter += 1
        return f"{kind}-r{self._round}-{self._counter}"

    def _via(self, expect: str) -> Any:
        return JournalingBus(self._bus, self._journal, expect)

    async def one(self, rng: random.Random) -> None:
        known = self._known
        roll = rng.random()
        if roll < 0.25 or not known.skus:
            if roll < 0.12 or not known.skus:
                await self._add_batch(rng)
            else:
                await self._register(rng)
        elif roll < 0.32 and known.emails:
            # The same email, perhaps in other case: the unique constraint refuses it.
            email = rng.choice(known.emails)
            if rng.random() < 0.5:
                email = email.upper()
            await services.register_user(
                self._via("EmailAlreadyRegistered"), "Dup", email
            )
        elif roll < 0.37:
            await services.allocate(
                self._via("InvalidSku"), self._unique("order"), UNKNOWN_SKU, 1
            )
        elif roll < 0.45 and known.batches:
            await services.change_batch_quantity(
                self._via("ok"), rng.choice(known.batches), rng.randint(0, 15)
            )
        else:
            sku = rng.choice(sorted(known.skus))
            await services.allocate(
                self._via("ok"), self._unique("order"), sku, rng.randint(1, 8)
            )

    async def _register(self, rng: random.Random) -> None:
        email = f"{self._unique('user')}@example.com"
        name = rng.choice(("Иван", "Мария", "Ann", "Bob"))
        await services.register_user(self._via("ok"), name, email)
        self._known.emails.append(email)

    async def _add_batch(self, rng: random.Random) -> None:
        ref = self._unique("batch")
        sku = rng.choice(SKUS)
        eta = None
        if rng.random() < 0.4:
            eta = datetime.date(2030, 1, 1) + datetime.timedelta(
                days=rng.randint(0, 60)
            )
        await services.add_batch(self._via("ok"), ref, sku, rng.randint(5, 30), eta)
        self._known.batches.append(ref)
        self._known.skus.add(sku)


async def _work(stream: Stream, rng: random.Random) -> None:
    while True:
        await stream.one(rng)


async def main(args: argparse.Namespace) -> None:
    journal_path = Path(args.journal)
    known = Known(journal_path)
    emails = AppendOnlyFile(Path(args.emails), sync=True)
    console = AppendOnlyFile(Path(args.console), sync=False)
    journal = AppendOnlyFile(journal_path, sync=False)
    try:
        async with bootstrap(
            notifications=RecordingNotifications(emails),
            console=RecordingConsole(console),
        ) as bus:
            if args.mode == "recover":
                return
            sys.stdout.write("ready\n")
            sys.stdout.flush()
            stream = Stream(bus, journal, known, args.round)
            async with anyio.create_task_group() as workers:
                for worker in range(args.workers):
                    workers.start_soon(_work, stream, random.Random(args.seed + worker))
    finally:
        for file in (emails, console, journal):
            file.close()


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="crash_child")
    parser.add_argument("mode", choices=("run", "recover"))
    parser.add_argument("journal")
    parser.add_argument("emails")
    parser.add_argument("console")
    parser.add_argument("--round", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=WORKERS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    anyio.run(main, _parse(sys.argv[1:]), backend="asyncio")
