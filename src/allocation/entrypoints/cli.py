"""The ``allocation`` command: the article's demo, database upkeep and the use cases."""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import anyio

from allocation import config, views
from allocation.adapters import database, migrations
from allocation.adapters.exceptions import DataWouldBeLost
from allocation.bootstrap import bootstrap
from allocation.domain import values
from allocation.domain.exceptions import AllocationError, EmailAlreadyRegistered
from allocation.entrypoints import (
    cli_args,
    cli_broker,
    cli_history,
    cli_log,
    cli_messages,
    cli_status,
    console_logging,
)
from allocation.service_layer import services
from allocation.service_layer.masking import mask_secrets

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

logger = logging.getLogger("allocation")

# The article's scenario: two registrations through the bus.
DEMO_USERS = (("Иван", "ivan@example.com"), ("Мария", "maria@example.com"))


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line instead of a usage dump.

    Every parser, subcommands' included, takes ``-v``: ``allocation db upgrade -v``
    works as well as ``allocation -v db upgrade``. Its default is left out of the
    subcommands' namespaces, so a ``-v`` given before the subcommand stays set.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            default=argparse.SUPPRESS,
            help="log details (anywhere on the line)",
        )

    def error(self, message: str) -> NoReturn:
        print(
            f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr
        )
        raise SystemExit(2)


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="allocation",
        description="Event-driven allocation and users service (Cosmic Python on AnyIO).",
        epilog="The database is DATABASE_URL (default: allocation.db in this directory).",
    )
    parser.set_defaults(verbose=False)
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {importlib.metadata.version('allocation')}",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, parser_class=_Parser
    )

    commands.add_parser(
        "demo", help="migrate the database and play the article's scenario"
    )

    db = commands.add_parser("db", help="database schema upkeep")
    db_actions = db.add_subparsers(dest="action", required=True, parser_class=_Parser)
    upgrade = db_actions.add_parser("upgrade", help="migrate up (to head by default)")
    upgrade.add_argument(
        "revision",
        nargs="?",
        default="head",
        type=cli_args.revision,
        metavar="REVISION",
        help="an alembic revision id, or head (the default)",
    )
    downgrade = db_actions.add_parser(
        "downgrade",
        help="migrate down to REVISION (refused if it would lose data, unless --yes)",
    )
    downgrade.add_argument(
        "revision",
        type=cli_args.revision,
        metavar="REVISION",
        help="an alembic revision id, or base (no schema: drops every table)",
    )
    downgrade.add_argument(
        "--yes",
        action="store_true",
        help="go ahead even if tables, columns or rows holding data are dropped",
    )
    db_actions.add_parser("current", help="show the revision the database is at")

    register = commands.add_parser("register-user", help="register a user")
    register.add_argument("name", metavar="NAME", help="the user's name")
    register.add_argument(
        "email", metavar="EMAIL", help="the user's email (unique, any case)"
    )

    add_batch = commands.add_parser("add-batch", help="add a batch of stock")
    add_batch.add_argument("ref", metavar="REF", help="the new batch's reference")
    add_batch.add_argument("sku", metavar="SKU", help="the stock-keeping unit it holds")
    add_batch.add_argument(
        "qty",
        type=cli_args.quantity(0),
        metavar="QTY",
        help=f"units in the batch, a whole number from 0 to {values.MAX_QUANTITY}",
    )
    add_batch.add_argument("--eta", type=cli_args.date, help="arrival date, YYYY-MM-DD")

    allocate = commands.add_parser("allocate", help="allocate an order line")
    allocate.add_argument("orderid", metavar="ORDERID", help="the order's id")
    allocate.add_argument("sku", metavar="SKU", help="the stock-keeping unit ordered")
    allocate.add_argument(
        "qty",
        type=cli_args.quantity(1),
        metavar="QTY",
        help=f"units ordered, a whole number from 1 to {values.MAX_QUANTITY}",
    )

    change = commands.add_parser(
        "change-batch-quantity",
        help="set a batch's quantity (reallocates what no longer fits)",
    )
    change.add_argument("ref", metavar="REF", help="the batch's reference")
    change.add_argument(
        "qty",
        type=cli_args.quantity(0),
        metavar="QTY",
        help=f"its new quantity, a whole number from 0 to {values.MAX_QUANTITY}",
    )

    serve = commands.add_parser(
        "serve",
        help="run the HTTP API until SIGINT or SIGTERM",
        description="On SQLite run one server process; on PostgreSQL several may run.",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    serve.add_argument(
        "--port",
        type=cli_args.port,
        default=8000,
        help="TCP port to listen on, 1 to 65535 (default 8000)",
    )
    serve.add_argument(
        "--no-access-log",
        dest="access_log",
        action="store_false",
        help="do not log a line per request (uvicorn's access log, on stdout)",
    )

    allocations = commands.add_parser("allocations", help="show an order's allocations")
    allocations.add_argument("orderid", metavar="ORDERID", help="the order's id")
    cli_log.add_parsers(commands)
    cli_history.add_parsers(commands)
    cli_messages.add_parsers(commands)
    cli_broker.add_parsers(commands)
    cli_status.add_parsers(commands)

    completion = commands.add_parser(
        "completion",
        help="print a shell completion script",
        description='Add to ~/.bashrc: eval "$(allocation completion bash)"',
    )
    completion.add_argument(
        "shell", choices=("bash", "zsh"), metavar="SHELL", help="bash or zsh"
    )
    return parser


async def _demo(args: argparse.Namespace) -> int:
    settings = config.Settings.from_environment()
    await _upgrade(settings, "head", quiet=True)
    async with bootstrap(settings=settings) as bus:
        for name, email in DEMO_USERS:
            try:
                await services.register_user(bus, name, email)
            except EmailAlreadyRegistered:
                print(
                    f"{name} <{email}> is already registered in this database: "
                    "nothing to do (use a new DATABASE_URL to replay the scenario)"
                )
    return 0


async def _upgrade(settings: config.Settings, revision: str, *, quiet: bool) -> None:
    engine = database.create_engine(settings.database_url)
    try:
        await migrations.upgrade(engine, revision)
        if not quiet:
            print(f"database at revision {await migrations.current_revision(engine)}")
    finally:
        await engine.dispose()


async def _db(args: argparse.Namespace) -> int:
    settings = config.Settings.from_environment()
    if args.action == "upgrade":
        await _upgrade(settings, args.revision, quiet=False)
        return 0
    engine = database.create_engine(
        settings.database_url, read_only=args.action == "current"
    )
    try:
        if args.action == "downgrade":
            try:
                await migrations.downgrade(
                    engine, args.revision, allow_data_loss=args.yes
                )
            except DataWouldBeLost as refused:
                print(
                    f"allocation: error: {refused}; nothing was changed"
                    " (run again with --yes to go ahead)",
                    file=sys.stderr,
                )
                return 1
        current = await migrations.current_revision(engine)
        print(f"database at revision {current or 'base (no schema)'}")
    finally:
        await engine.dispose()
    return 0


async def _register_user(args: argparse.Namespace) -> int:
    async with bootstrap() as bus:
        user_id = await services.register_user(bus, args.name, args.email)
    print(f"registered user {user_id}")
    return 0


async def _add_batch(args: argparse.Namespace) -> int:
    async with bootstrap() as bus:
        await services.add_batch(bus, args.ref, args.sku, args.qty, args.eta)
    arrival = f"arriving {args.eta.isoformat()}" if args.eta else "in stock"
    print(f"added batch {args.ref}: {args.qty} x {args.sku}, {arrival}")
    return 0


async def _allocate(args: argparse.Namespace) -> int:
    async with bootstrap() as bus:
        batchref = await services.allocate(bus, args.orderid, args.sku, args.qty)
    if batchref is None:
        print(
            f"out of stock: no batch of {args.sku} can take {args.qty} (order {args.orderid})"
        )
    else:
        print(
            f"allocated {args.qty} x {args.sku} of order {args.orderid} to batch {batchref}"
        )
    return 0


async def _change_batch_quantity(args: argparse.Namespace) -> int:
    async with bootstrap() as bus:
        await services.change_batch_quantity(bus, args.ref, args.qty)
    print(f"batch {args.ref} now holds {args.qty}")
    return 0


async def _allocations(args: argparse.Namespace) -> int:
    async with bootstrap(read_only=True) as bus:
        rows = await views.allocations(args.orderid, bus.uow_factory())
    if not rows:
        print(f"order {args.orderid} has no allocations")
    for row in rows:
        print(f"{row['sku']}\t{row['batchref']}")
    return 0


async def _serve(args: argparse.Namespace) -> int:
    # Loaded only here: the other commands start without FastAPI and uvicorn.
    from allocation.entrypoints.api import server

    try:
        return await server.serve(args)
    except server.CannotListen as error:
        print(f"allocation: error: {error}", file=sys.stderr)
        return 1


async def _completion(args: argparse.Namespace) -> int:
    # Generated from the parser itself, so it never lags behind the commands.
    # shtab is loaded only here: every other command starts without it.
    import shtab

    print(shtab.complete(_build_parser(), shell=args.shell), end="")
    return 0


_ACTIONS: dict[str, Callable[[argparse.Namespace], Awaitable[int]]] = {
    "demo": _demo,
    "db": _db,
    "register-user": _register_user,
    "add-batch": _add_batch,
    "allocate": _allocate,
    "change-batch-quantity": _change_batch_quantity,
    "allocations": _allocations,
    "serve": _serve,
    "completion": _completion,
    **cli_log.ACTIONS,
    **cli_history.ACTIONS,
    **cli_messages.ACTIONS,
    **cli_broker.ACTIONS,
    **cli_status.ACTIONS,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (1 for a user error)."""
    if (sys.stdout.encoding or "").lower().replace("-", "") != "utf8":
        # The article's lines are Cyrillic: never let a C locale turn them into an error.
        sys.stdout.reconfigure(encoding="utf-8")  # type: ignore[union-attr]  # a TextIOWrapper
    args = _build_parser().parse_args(argv)
    console_logging.configure(verbose=args.verbose)
    action = _ACTIONS[args.command]
    try:
        return anyio.run(action, args, backend="asyncio")
    except AllocationError as error:
        print(f"allocation: error: {mask_secrets(str(error))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("allocation: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader had enough (`allocation events list | head -1`): not an error.
        # stdout points at /dev/null so the interpreter's final flush is quiet too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0
    except Exception as error:  # the entrypoint boundary: one line, details on -v
        logger.debug("unexpected failure", exc_info=error)
        print(
            f"allocation: unexpected error: {type(error).__name__}: "
            f"{mask_secrets(str(error))}"
            " (run with -v for details)",
            file=sys.stderr,
        )
        if args.verbose:
            logger.exception("traceback")
        return 70
