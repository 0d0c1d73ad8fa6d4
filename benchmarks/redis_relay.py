"""The outbox relay to Redis Streams on PostgreSQL: throughput, and commit-to-consumer
latency at a steady rate.

Throughput: N Allocated events are appended to a freshly migrated ``allocation_bench_<pid>``
database through units of work (``uow.event_log.append``, 10,000 per commit) and never
delivered. Then, in alternating runs:

- ours: ``relay.relay_once(bus, RedisStreamsPublisher(url, stream), batch_size=500)``
  from checkpoint 0 (the checkpoint row deleted and the stream emptied, untimed):
  the relay lock, reading the log in batches of 500, building the entry fields,
  pipelined XADDs and a checkpoint commit per batch;
- raw: redis-py, one pipeline per 500 entries of XADD with the very same fields
  (``broker.entry_fields`` of every logged event, computed before the clock starts).

Latency: this process is the worker, wired as ``allocation worker`` wires it on
PostgreSQL: ``relay.keep_listening`` on the database's ``log_listener()`` rings a
``relay.WakeUp`` on every commit notice, and ``relay.keep_relaying`` answers it, with
the default ``ALLOCATION_RELAY_INTERVAL`` (0.1 s) as the safety-net poll. A consumer
process is a consumer-group member: XREADGROUP (count 100, block 500 ms), each entry
handed to a handler, which takes the time, then one XACK for the entries of the read.
Producer processes (``--producers``, 1 by default) commit events at a steady total
rate (``--rate``, 500/s), a task per event started on schedule, on a pool of 10
asyncpg connections. Each event is its own committed transaction running the unit of
work's own append statement (``adapters.postgres.sql.APPEND``: the advisory lock that keeps
positions in commit order, the row, the ``pg_notify``), sent outside an explicit
transaction so that it commits by itself in one round trip. They are not commands
through the bus: those cost about 2 ms of Python each, and two processes of them
reach only ~230/s on these 2 cores, whereas what is timed here is commit to consumer.
Latency per entry: the handler's time minus the entry's ``occurred_at`` (wall clock,
taken just before the statement is sent, so it includes the commit: a slight
overestimate), split where Redis stamped the entry id (whole milliseconds). The
achieved rate comes from the ``occurred_at`` of the entries handled; the target (p99
< 50 ms) counts as met only if that rate is within 5% of ``--rate``.

Redis: db 14 (``BENCH_REDIS``), streams ``bench:*``, deleted at the end.

Run: .venv/bin/python benchmarks/redis_relay.py [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import functools
import multiprocessing
import os
import statistics
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

import anyio
import asyncpg
import redis
import redis.asyncio as aioredis
from _harness import quiet_bus
from _postgres import DSN, drop_database, fresh_database

from allocation import config
from allocation.adapters import broker, log_rows
from allocation.adapters.postgres import sql as postgres_sql
from allocation.adapters.postgres.database import PostgresDatabase
from allocation.domain import events
from allocation.service_layer import relay
from allocation.service_layer.ports import NewEvent

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.synchronize import Barrier as BarrierType
    from multiprocessing.synchronize import Event as EventType

    from allocation.service_layer.messagebus import MessageBus

REDIS_URL = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/14")
THROUGHPUT_STREAM = "bench:relay"
LATENCY_STREAM = "bench:latency"
GROUP = "bench"
# The worker's default: on PostgreSQL, only the safety net behind the wake-ups.
RELAY_INTERVAL = config.Settings().relay_interval
WARM_UP = "warm-up-"
WARM_UP_EVENTS = 40
POOL = 10  # connections per producer process
BATCH = 500
SKUS = 100
APPEND_CHUNK = 10_000
# The append statement's arrays, in its order: every column of a log row but the
# position, which the database draws.
_APPEND_COLUMNS = log_rows.LOG_COLUMNS[1:]
RELAY_TARGET = 0.5
P99_TARGET_MS = 50.0


def _allocated(i: int) -> NewEvent:
    sku = f"SKU-{i % SKUS:03d}"
    event = events.Allocated(orderid=f"order-{i}", sku=sku, qty=1, batchref=f"{sku}-b")
    # Event i is the (i // SKUS + 1)th of its product: unique per aggregate.
    version = i // SKUS + 1
    return NewEvent(
        event=event.stamped(aggregate_version=version),
        aggregate_type="product",
        aggregate_id=sku,
        aggregate_version=version,
    )


async def append_allocated(bus: MessageBus, start: int, stop: int) -> None:
    """Log Allocated events ``start`` to ``stop - 1`` without delivering them."""
    for first in range(start, stop, APPEND_CHUNK):
        batch = [_allocated(i) for i in range(first, min(stop, first + APPEND_CHUNK))]
        async with bus.uow_factory() as uow:
            await uow.event_log.append(batch)
            await uow.commit()


async def _reset(client: aioredis.Redis) -> None:
    """Relay checkpoint back to 0 (it only moves forward by itself: the row is
    deleted behind the application's back), stream emptied."""
    connection = await asyncpg.connect(DSN)
    try:
        await connection.execute(
            "DELETE FROM subscriber_checkpoints WHERE subscriber = $1",
            relay.relay_name(THROUGHPUT_STREAM),
        )
    finally:
        await connection.close()
    await client.delete(THROUGHPUT_STREAM)


async def _all_fields(bus: MessageBus) -> list[dict[str, str]]:
    fields: list[dict[str, str]] = []
    after = 0
    while True:
        async with bus.uow_factory() as uow:
            batch = await uow.event_log.read(after=after, limit=5000)
        if not batch:
            return fields
        fields.extend(broker.entry_fields(logged) for logged in batch)
        after = batch[-1].position


async def _raw_xadd(client: aioredis.Redis, fields: list[dict[str, str]]) -> None:
    for first in range(0, len(fields), BATCH):
        async with client.pipeline(transaction=False) as pipe:
            for entry in fields[first : first + BATCH]:
                pipe.xadd(THROUGHPUT_STREAM, entry)  # type: ignore[arg-type]  # str fields
            await pipe.execute()


async def throughput(bus: MessageBus, events_count: int, runs: int) -> None:
    start = time.perf_counter()
    await append_allocated(bus, 0, events_count)
    print(
        f"appended {events_count} events in {time.perf_counter() - start:.2f} s"
        " (not timed below)"
    )
    client = aioredis.Redis.from_url(REDIS_URL)
    publisher = broker.RedisStreamsPublisher(REDIS_URL, THROUGHPUT_STREAM)
    fields = await _all_fields(bus)
    ours_rates: list[float] = []
    raw_rates: list[float] = []
    ratios: list[float] = []
    try:
        for run in range(runs + 1):  # the first pair is a warm-up
            timings: dict[str, float] = {}
            for name in ("ours", "raw") if run % 2 == 0 else ("raw", "ours"):
                await _reset(client)
                began = time.perf_counter()
                if name == "ours":
                    published = await relay.relay_once(bus, publisher, batch_size=BATCH)
                    if published != events_count:
                        raise RuntimeError(f"relayed {published} of {events_count}")
                else:
                    await _raw_xadd(client, fields)
                timings[name] = time.perf_counter() - began
                length = await client.xlen(THROUGHPUT_STREAM)
                if length != events_count:
                    raise RuntimeError(f"{name}: stream holds {length} entries")
            if run == 0:
                continue
            ours_rates.append(events_count / timings["ours"])
            raw_rates.append(events_count / timings["raw"])
            ratios.append(timings["raw"] / timings["ours"])
        await client.delete(THROUGHPUT_STREAM)
    finally:
        await publisher.aclose()
        await client.aclose()
    rate_ratio = statistics.median(ratios)
    verdict = "meets" if rate_ratio >= RELAY_TARGET else "misses"
    print(
        f"relay_once (ours)  {statistics.median(ours_rates):8.0f} events/s"
        f"  spread {min(ours_rates):.0f}..{max(ours_rates):.0f}"
    )
    print(
        f"raw pipelined XADD {statistics.median(raw_rates):8.0f} events/s"
        f"  spread {min(raw_rates):.0f}..{max(raw_rates):.0f}"
    )
    print(
        f"ours/raw {rate_ratio:.3f} (median of per-run ratios);"
        f" {verdict} the >= {RELAY_TARGET} target"
    )


def _log_row(tag: str, i: int) -> dict[str, Any]:
    """An event-log row, as the unit of work builds it (occurred_at: now)."""
    sku = f"{tag}-{i}"  # an aggregate of its own: no version clash between producers
    event = events.Allocated(orderid=sku, sku=sku, qty=1, batchref=f"{sku}-batch")
    new = NewEvent(
        event=event.stamped(aggregate_version=1),
        aggregate_type="product",
        aggregate_id=sku,
        aggregate_version=1,
    )
    return log_rows.log_row(new, datetime.datetime.now(datetime.UTC))


async def _commit_one(pool: asyncpg.Pool, tag: str, i: int) -> None:
    """One event, one committed transaction: the unit of work's own statement.

    Outside an explicit transaction the statement is its own transaction: its
    advisory lock, its row and its notice are committed together when it ends.
    """
    row = _log_row(tag, i)
    async with pool.acquire() as connection:
        await connection.execute(
            postgres_sql.APPEND, *([row[column]] for column in _APPEND_COLUMNS)
        )


async def _produce(
    dsn: str, rate: float, total: int, tag: str, start_together: BarrierType
) -> None:
    """One producer process: ``total`` single-event commits at ``rate``/s, on schedule."""
    async with asyncpg.create_pool(dsn, min_size=POOL, max_size=POOL) as pool:
        # Every connection prepares the statement before the clock matters; the
        # consumer skips these entries.
        async with anyio.create_task_group() as warm_up:
            for i in range(WARM_UP_EVENTS):
                warm_up.start_soon(_commit_one, pool, f"{WARM_UP}{tag}", i)
        await anyio.to_thread.run_sync(start_together.wait, 60)
        began = time.perf_counter()
        late = 0
        async with anyio.create_task_group() as commits:
            for i in range(total):
                wait = began + i / rate - time.perf_counter()
                if wait > 0:
                    await anyio.sleep(wait)
                elif wait < -0.005:
                    late += 1
                commits.start_soon(_commit_one, pool, tag, i)
        took = time.perf_counter() - began
        print(
            f"  producer {tag}: {total} commits in {took:.2f} s"
            f" ({total / took:.0f}/s, {late} started > 5 ms late)",
            flush=True,
        )


def _producer_process(
    dsn: str, rate: float, total: int, tag: str, start_together: BarrierType
) -> None:
    anyio.run(_produce, dsn, rate, total, tag, start_together, backend="asyncio")


async def _consume(total: int, ready: EventType, results: Connection) -> None:
    """A consumer-group member: XREADGROUP, hand each entry to its handler, XACK.

    Sends back, per measured entry: when it occurred, when Redis took it (the
    entry id's milliseconds) and when the handler got it, all wall clock.
    """
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    measured: list[tuple[float, float, float]] = []

    def handle(entry_id: str, fields: dict[str, str]) -> None:
        got = time.time()
        if fields["aggregate_id"].startswith(WARM_UP):
            return
        occurred = datetime.datetime.fromisoformat(fields["occurred_at"]).timestamp()
        added = int(entry_id.split("-")[0]) / 1e3
        measured.append((occurred, added, got))

    try:
        await client.xgroup_create(LATENCY_STREAM, GROUP, id="0", mkstream=True)
        ready.set()
        while len(measured) < total:
            reply = await client.xreadgroup(
                GROUP, "reader", {LATENCY_STREAM: ">"}, count=100, block=500
            )
            handled = []
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    handle(entry_id, fields)
                    handled.append(entry_id)
            if handled:
                await client.xack(LATENCY_STREAM, GROUP, *handled)
    finally:
        await client.aclose()
        results.send(measured)


def _consumer_process(total: int, ready: EventType, results: Connection) -> None:
    anyio.run(_consume, total, ready, results, backend="asyncio")


async def latency(
    bus: MessageBus, url: str, rate: float, seconds: float, producers: int
) -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    publisher = broker.RedisStreamsPublisher(REDIS_URL, LATENCY_STREAM)
    await client.delete(LATENCY_STREAM)
    # Only what is appended from here on is ours to time: move the checkpoint up.
    async with bus.uow_factory() as uow:
        last = await uow.event_log.last_position()
        await uow.event_log.set_checkpoint(relay.relay_name(LATENCY_STREAM), last)
        await uow.commit()
    per_producer = int(rate * seconds / producers)
    total = per_producer * producers
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    start_together = context.Barrier(producers)
    results, results_in = context.Pipe(duplex=False)
    consumer = context.Process(
        target=_consumer_process, args=(total, ready, results_in)
    )
    children = [
        context.Process(
            target=_producer_process,
            args=(
                url.replace("+asyncpg", "", 1),  # what asyncpg itself takes
                rate / producers,
                per_producer,
                f"{uuid.uuid4().hex[:6]}{n}",
                start_together,
            ),
        )
        for n in range(producers)
    ]
    wake_up = relay.WakeUp()
    # The worker's listener: a connection of its own, outside the bus's pool.
    listening = await PostgresDatabase.open(url, pool_size=1)
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(relay.keep_listening, listening.log_listener(), wake_up)
            group.start_soon(
                functools.partial(
                    relay.keep_relaying,
                    bus,
                    publisher,
                    interval=RELAY_INTERVAL,
                    wake_up=wake_up,
                )
            )
            consumer.start()
            if not await anyio.to_thread.run_sync(ready.wait, 30):
                raise RuntimeError("the consumer never started")
            for child in children:
                child.start()
            if not await anyio.to_thread.run_sync(results.poll, seconds + 60):
                raise RuntimeError("the consumer never finished")
            measured = results.recv()
            group.cancel_scope.cancel()
        await client.delete(LATENCY_STREAM)
    finally:
        for process in [consumer, *children]:
            await anyio.to_thread.run_sync(process.join, 10)
        await publisher.aclose()
        await client.aclose()
        await listening.close()
    if len(measured) < total:
        raise RuntimeError(f"the consumer handled {len(measured)} of {total} entries")
    committed = [occurred for occurred, _, _ in measured]
    achieved = (len(committed) - 1) / (max(committed) - min(committed))
    p50, p99, worst = _percentiles([got - occurred for occurred, _, got in measured])
    print(
        f"{len(measured)} entries handled; append (just before commit) to the"
        f" consumer's handler: p50 {p50:.1f} ms  p99 {p99:.1f} ms  max {worst:.1f} ms,"
        f" at {achieved:.0f} commits/s achieved"
    )
    # Redis stamps an entry id with its own clock, in whole milliseconds.
    for part, delays in (
        ("append to XADD", [added - occurred for occurred, added, _ in measured]),
        ("XADD to handler", [got - added for _, added, got in measured]),
    ):
        p50_part, p99_part, _ = _percentiles(delays)
        print(f"  of which {part}: p50 {p50_part:.1f} ms  p99 {p99_part:.1f} ms")
    met = p99 < P99_TARGET_MS and achieved >= rate * 0.95
    print(
        f"target p99 < {P99_TARGET_MS:.0f} ms at {rate:.0f} commits/s:"
        f" {'met' if met else 'missed'}"
    )


def _percentiles(seconds: list[float]) -> tuple[float, float, float]:
    """p50, p99 and the maximum, in milliseconds."""
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return ordered[len(ordered) // 2] * 1e3, p99 * 1e3, ordered[-1] * 1e3


async def _main(
    events_count: int, runs: int, rate: float, seconds: float, producers: int
) -> None:
    url = await fresh_database()
    try:
        async with quiet_bus(url, catch_up=False) as bus:
            print("--- relay throughput")
            await throughput(bus, events_count, runs)
            print(
                f"--- latency: relay woken by commit notices (poll every"
                f" {RELAY_INTERVAL * 1e3:.0f} ms as the safety net); {rate:.0f}"
                f" single-event commits/s from {producers} producer process"
                f"{'es' if producers > 1 else ''}"
            )
            await latency(bus, url, rate, seconds, producers)
    finally:
        await drop_database()
        with redis.Redis.from_url(REDIS_URL) as client:
            names = list(client.scan_iter(match="bench:*"))
            if names:
                client.delete(*names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--events", type=int, default=None, help="events in the log")
    parser.add_argument("--runs", type=int, default=None, help="timed runs of each")
    parser.add_argument("--rate", type=float, default=500.0, help="commits/s")
    parser.add_argument("--seconds", type=float, default=None, help="latency run")
    parser.add_argument(
        "--producers", type=int, default=1, help="processes committing the events"
    )
    args = parser.parse_args()
    events_count = args.events or (5_000 if args.quick else 20_000)
    runs = args.runs or (2 if args.quick else 4)
    seconds = args.seconds or (2.0 if args.quick else 10.0)
    print(
        f"python {sys.version.split()[0]}, redis-py {redis.__version__},"
        f" {events_count} events, {runs} runs of each (after a warm-up pair)"
    )
    start = time.perf_counter()
    anyio.run(
        _main, events_count, runs, args.rate, seconds, args.producers, backend="asyncio"
    )
    print(f"took {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
