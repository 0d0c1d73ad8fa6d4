"""The outbox relay to Redis Streams on PostgreSQL: throughput, and commit-to-reader
latency at a steady rate.

Throughput: N Allocated events are appended to a freshly migrated ``allocation_bench``
database through units of work and never delivered. Then, in alternating runs:

- ours: ``relay.relay_once(bus, RedisStreamsPublisher(url, stream), batch_size=500)``
  from checkpoint 0 (the checkpoint row deleted and the stream emptied, untimed):
  the relay lock, reading the log in batches of 500, building the entry fields,
  pipelined XADDs and a checkpoint commit per batch;
- raw: redis-py, one pipeline per 500 entries of XADD with the very same fields
  (``broker.entry_fields`` of every logged event, computed before the clock starts).

Latency: ``relay.keep_relaying(bus, publisher, interval=0.01)`` runs in a task group
beside a reader blocked in XREAD on the stream (the worker's side), while separate
producer processes (the application's side; ``--producers``, 2 by default, since one
Python process cannot issue 500 add_batch/s on this machine and a saturated loop
would time its own backlog) issue ``services.add_batch`` (unique refs and skus) at a
steady total rate, a task per command started on schedule. Latency per entry: the
reader's receive time minus the entry's ``occurred_at`` (wall clock, taken when the
event is appended, just before the commit: a slight overestimate of commit-to-reader).

Redis: db 14 (``BENCH_REDIS``), streams ``bench:*``, deleted at the end.

Run: .venv/bin/python benchmarks/redis_relay.py [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import functools
import multiprocessing
import statistics
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

import anyio
import redis
import redis.asyncio as aioredis
from _postgres import drop_database, fresh_database
from event_log_sqlite import append_allocated, open_bus

from allocation.adapters import broker
from allocation.service_layer import relay, services

if TYPE_CHECKING:
    from allocation.service_layer.messagebus import MessageBus

REDIS_URL = "redis://127.0.0.1:6379/14"
THROUGHPUT_STREAM = "bench:relay"
LATENCY_STREAM = "bench:latency"
BATCH = 500
RELAY_TARGET = 0.5
P99_TARGET_MS = 50.0


async def _reset(bus: MessageBus, client: aioredis.Redis) -> None:
    """Relay checkpoint back to 0 (it only moves forward by itself), stream emptied."""
    async with bus.uow_factory() as uow:
        await uow.session.execute(  # type: ignore[attr-defined]  # the SQL UoW's session
            broker_checkpoint_delete()
        )
        await uow.commit()
    await client.delete(THROUGHPUT_STREAM)


def broker_checkpoint_delete() -> Any:
    from sqlalchemy import delete

    from allocation.adapters import orm

    table = orm.subscriber_checkpoints
    return delete(table).where(table.c.subscriber == relay.RELAY)


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
                await _reset(bus, client)
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


async def _produce(url: str, rate: float, total: int, tag: str) -> None:
    """One producer process: ``total`` add_batch commands at ``rate``/s, on schedule."""
    async with open_bus(url) as bus:

        async def command(i: int) -> None:
            await services.add_batch(bus, f"batch-{tag}-{i}", f"LAT-{tag}-{i}", 100)

        began = time.perf_counter()
        late = 0
        async with anyio.create_task_group() as commands:
            for i in range(total):
                wait = began + i / rate - time.perf_counter()
                if wait > 0:
                    await anyio.sleep(wait)
                elif wait < -0.005:
                    late += 1
                commands.start_soon(command, i)
        took = time.perf_counter() - began
        print(
            f"  producer {tag}: {total} add_batch in {took:.2f} s"
            f" ({total / took:.0f}/s, {late} started > 5 ms late)",
            flush=True,
        )


def _producer_process(url: str, rate: float, total: int, tag: str) -> None:
    anyio.run(_produce, url, rate, total, tag, backend="asyncio")


async def latency(
    bus: MessageBus, url: str, rate: float, seconds: float, producers: int
) -> None:
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    publisher = broker.RedisStreamsPublisher(REDIS_URL, LATENCY_STREAM)
    await client.delete(LATENCY_STREAM)
    # Only what is appended from here on is ours to time: move the checkpoint up.
    async with bus.uow_factory() as uow:
        last = await uow.event_log.last_position()
        await uow.event_log.set_checkpoint(relay.RELAY, last)
        await uow.commit()
    per_producer = int(rate * seconds / producers)
    total = per_producer * producers
    from_append: list[float] = []

    async def reader() -> None:
        last_id = "0-0"
        while len(from_append) < total:
            reply = await client.xread({LATENCY_STREAM: last_id}, count=1000, block=500)
            got = time.time()
            for _stream, entries in reply:
                for entry_id, fields in entries:
                    last_id = entry_id
                    occurred = datetime.datetime.fromisoformat(fields["occurred_at"])
                    from_append.append(got - occurred.timestamp())

    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(
            target=_producer_process,
            args=(url, rate / producers, per_producer, f"{uuid.uuid4().hex[:6]}{n}"),
        )
        for n in range(producers)
    ]
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(
                functools.partial(relay.keep_relaying, bus, publisher, interval=0.01)
            )
            for child in children:
                child.start()
            with anyio.fail_after(seconds + 30):
                await reader()
            group.cancel_scope.cancel()
        await client.delete(LATENCY_STREAM)
    finally:
        for child in children:
            await anyio.to_thread.run_sync(child.join, 10)
        await publisher.aclose()
        await client.aclose()
    values = sorted(from_append)
    p50 = values[len(values) // 2] * 1e3
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))] * 1e3
    verdict = "meets" if p99 < P99_TARGET_MS else "misses"
    print(
        f"{len(values)} entries read; append (just before commit) to reader:"
        f" p50 {p50:.1f} ms  p99 {p99:.1f} ms  max {values[-1] * 1e3:.1f} ms;"
        f" {verdict} the p99 < {P99_TARGET_MS:.0f} ms target"
    )


async def _main(
    events_count: int, runs: int, rate: float, seconds: float, producers: int
) -> None:
    url = await fresh_database()
    try:
        async with open_bus(url) as bus:
            print("--- relay throughput")
            await throughput(bus, events_count, runs)
            print(
                f"--- latency, relay interval 10 ms, {rate:.0f} commands/s from"
                f" {producers} producer processes"
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
    parser.add_argument("--rate", type=float, default=500.0, help="commands/s")
    parser.add_argument("--seconds", type=float, default=None, help="latency run")
    parser.add_argument(
        "--producers", type=int, default=2, help="processes issuing the commands"
    )
    args = parser.parse_args()
    events_count = args.events or (5_000 if args.quick else 20_000)
    runs = args.runs or (2 if args.quick else 4)
    seconds = args.seconds or (2.0 if args.quick else 5.0)
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
