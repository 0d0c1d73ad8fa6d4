"""Idempotency keys on the fakes, on asyncio and trio: a request's fingerprint, and
a repeated request answered from its stored response, never run twice."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import anyio
import pytest

from allocation.domain import events
from allocation.service_layer import idempotency, services
from allocation.service_layer.exceptions import InvalidSku
from tests import idempotent_requests
from tests.idempotent_requests import CONFLICT, MISMATCH

if TYPE_CHECKING:
    from allocation.service_layer.messagebus import MessageBus

OUT_OF_STOCK = (201, json.dumps({"events": ["out_of_stock"]}))


# ---- fingerprints


def test_two_encodings_of_one_json_body_have_one_fingerprint() -> None:
    assert idempotency.fingerprint(
        "POST", "/allocations", b'{"sku": "lamp", "qty": 2}'
    ) == idempotency.fingerprint("POST", "/allocations", b'{ "qty":2,"sku":"lamp" }\n')


def test_another_json_value_is_another_fingerprint() -> None:
    assert idempotency.fingerprint(
        "POST", "/allocations", b'{"qty": 2}'
    ) != idempotency.fingerprint("POST", "/allocations", b'{"qty": 3}')


def test_the_method_and_the_path_count() -> None:
    fingerprints = {
        idempotency.fingerprint(method, path, b"{}")
        for method, path in [("POST", "/a"), ("PUT", "/a"), ("POST", "/b")]
    }

    assert len(fingerprints) == 3
    assert idempotency.fingerprint("post", "/a", b"{}") == idempotency.fingerprint(
        "POST", "/a", b"{}"
    )


def test_a_body_that_is_not_json_counts_byte_for_byte() -> None:
    assert idempotency.fingerprint("POST", "/a", b"x=1") != idempotency.fingerprint(
        "POST", "/a", b"x=1 "
    )
    assert idempotency.fingerprint(
        "POST", "/a", b"\xff\xfe"
    ) == idempotency.fingerprint("POST", "/a", b"\xff\xfe")


def test_the_path_cannot_run_into_the_body() -> None:
    assert idempotency.fingerprint("POST", "/a\n", b"x") != idempotency.fingerprint(
        "POST", "/a", b"\nx"
    )


def test_a_json_string_counts_by_its_characters_however_escaped() -> None:
    assert idempotency.fingerprint(
        "POST", "/a", '{"name": "Zoë"}'.encode()
    ) == idempotency.fingerprint("POST", "/a", b'{"name": "Zo\\u00eb"}')


def test_a_fingerprint_is_a_sha256_in_hex_even_of_a_pathological_body() -> None:
    bodies = (b"", b"[" * 100_000, "é".encode("utf-16"), b'"\\ud800"')
    for body in bodies:
        value = idempotency.fingerprint("POST", "/a", body)
        assert len(value) == 64
        assert int(value, 16) >= 0


# ---- requests through the bus


async def out_of_stock_events(bus: MessageBus) -> int:
    async with bus.uow_factory() as uow:
        logged = await uow.event_log.read(after=0, names=[events.OutOfStock.TYPE])
    return len(logged)


async def claim_again(bus: MessageBus, key: str) -> bool:
    """Whether the key is free: a new request would run its command."""
    outcome = await idempotency.claim(bus.uow_factory, key, "probe", lease=60)
    return isinstance(outcome, idempotency.Claimed)


async def test_a_repeat_gets_the_stored_response_and_has_no_second_effect(
    bus: MessageBus,
) -> None:
    await services.add_batch(bus, "b1", "lamp", 1)

    first = await idempotent_requests.allocate(bus, "k1", "o1", "lamp", 5)
    again = await idempotent_requests.allocate(bus, "k1", "o1", "lamp", 5)

    assert first == again == OUT_OF_STOCK
    assert await out_of_stock_events(bus) == 1


async def test_a_concurrent_repeat_has_one_effect(bus: MessageBus) -> None:
    await services.add_batch(bus, "b1", "lamp", 1)
    answers: list[tuple[int, str]] = []

    async def send() -> None:
        answers.append(await idempotent_requests.allocate(bus, "k1", "o1", "lamp", 5))

    async with anyio.create_task_group() as group:
        for _ in range(3):
            group.start_soon(send)

    assert OUT_OF_STOCK in answers
    assert set(answers) <= {OUT_OF_STOCK, CONFLICT}
    assert await out_of_stock_events(bus) == 1


async def test_a_repeat_while_the_first_runs_is_a_conflict(bus: MessageBus) -> None:
    await services.add_batch(bus, "b1", "lamp", 1)
    body = json.dumps({"orderid": "o1", "sku": "lamp", "qty": 5}).encode()
    fingerprint = idempotency.fingerprint("POST", "/commands", body)
    await idempotency.claim(bus.uow_factory, "k1", fingerprint, lease=60)

    assert await idempotent_requests.allocate(bus, "k1", "o1", "lamp", 5) == CONFLICT
    assert await out_of_stock_events(bus) == 0


async def test_a_key_reused_for_another_request_is_refused(bus: MessageBus) -> None:
    await services.add_batch(bus, "b1", "lamp", 1)
    await idempotent_requests.allocate(bus, "k1", "o1", "lamp", 5)

    assert await idempotent_requests.allocate(bus, "k1", "o2", "lamp", 5) == MISMATCH
    assert await out_of_stock_events(bus) == 1


async def test_a_request_that_changed_nothing_releases_its_key(
    bus: MessageBus,
) -> None:
    await services.add_batch(bus, "b1", "lamp", 10)
    await idempotent_requests.allocate(bus, "k1", "o1", "lamp", 1)

    # The line is allocated already: the command commits no event.
    answer = await idempotent_requests.allocate(bus, "k2", "o1", "lamp", 1)

    assert answer == (200, json.dumps({"result": "b1"}))
    assert await claim_again(bus, "k2")


async def test_a_request_whose_command_failed_releases_its_key(
    bus: MessageBus,
) -> None:
    with pytest.raises(InvalidSku):
        await idempotent_requests.allocate(bus, "k1", "o1", "nothing", 1)

    assert await claim_again(bus, "k1")


async def test_the_response_holds_the_commands_events_not_its_handlers(
    bus: MessageBus,
) -> None:
    await services.add_batch(bus, "b1", "lamp", 10)
    await services.add_batch(bus, "b2", "lamp", 10)
    await services.allocate(bus, "o1", "lamp", 10)  # in b1
    body = json.dumps({"ref": "b1", "qty": 5}).encode()

    answer = await idempotent_requests.send(
        bus, "k1", body, lambda: services.change_batch_quantity(bus, "b1", 5)
    )

    # The deallocated line is allocated again by an event handler's commit, in
    # the request's context, after the response was stored.
    assert answer == (
        201,
        json.dumps({"events": ["batch_quantity_changed", "deallocated"]}),
    )
    async with bus.uow_factory() as uow:
        reallocated = await uow.event_log.read(after=0, names=["allocated"])
    assert [
        each.event.batchref
        for each in reallocated
        if isinstance(each.event, events.Allocated)
    ] == ["b1", "b2"]


async def test_expired_keys_are_purged_in_the_background(bus: MessageBus) -> None:
    claimed = await idempotency.claim(bus.uow_factory, "k1", "f", lease=0.01)
    assert isinstance(claimed, idempotency.Claimed)
    await anyio.sleep(0.02)

    with anyio.move_on_after(0.5):
        await idempotency.keep_purging(bus.uow_factory, 0.05)

    async with bus.uow_factory() as uow:
        # Nothing left to purge: the background loop took the expired key.
        assert await uow.event_log.purge_requests(idempotency.utc_now()) == 0
