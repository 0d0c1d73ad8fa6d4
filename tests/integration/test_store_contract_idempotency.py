"""HTTP idempotency keys in the event store, one contract for every engine.

A key is claimed in flight for a lease, completed with its response, released, or
taken over once its lease or its expiry ended; times are passed in, so each rule
is tested at the moments it names.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

import anyio
import pytest

from allocation.service_layer import idempotency
from allocation.service_layer.exceptions import IdempotencyKeyLost
from allocation.service_layer.idempotency import KeyRecord, StoredResponse
from tests.integration.store_fixtures import (
    append,
    batch_created,
    committing,
    reading,
)

if TYPE_CHECKING:
    from tests.integration.store_fixtures import StoreDatabase

T0 = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
RESPONSE = StoredResponse(status_code=201, body='{"ok": true}', message_ids=("m1",))


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


async def claim(
    store: StoreDatabase,
    key: str = "k1",
    *,
    fingerprint: str = "f1",
    token: str = "t1",
    now: float = 0,
    lease: float = 60,
) -> KeyRecord | None:
    async with committing(store) as log:
        return await log.claim_request(
            key, fingerprint, token, at(now), at(now + lease)
        )


async def complete(
    store: StoreDatabase,
    key: str = "k1",
    *,
    token: str = "t1",
    expires: float = 3600,
    response: StoredResponse = RESPONSE,
) -> None:
    async with committing(store) as log:
        await log.complete_request(key, token, response, at(expires))


async def record_of(
    store: StoreDatabase, key: str = "k1", *, now: float = 1
) -> KeyRecord:
    """The key's record, as a claim that cannot take it sees it."""
    async with reading(store) as log:
        record = await log.claim_request(key, "probe", "probe", at(now), at(now + 1))
    assert record is not None, "the key was free"
    return record


# ---- claiming


async def test_a_free_key_is_claimed_in_flight_for_its_lease(
    store: StoreDatabase,
) -> None:
    assert await claim(store) is None

    assert await record_of(store) == KeyRecord(
        key="k1", fingerprint="f1", state="in_flight", response=None, expires_at=at(60)
    )


async def test_a_done_key_answers_with_its_stored_response(
    store: StoreDatabase,
) -> None:
    await claim(store)
    await complete(store, expires=3600)

    assert await claim(store, token="t2", now=10) == KeyRecord(
        key="k1", fingerprint="f1", state="done", response=RESPONSE, expires_at=at(3600)
    )


async def test_a_key_held_for_another_request_names_that_fingerprint(
    store: StoreDatabase,
) -> None:
    await claim(store, fingerprint="f1")

    record = await claim(store, fingerprint="f2", token="t2", now=1)

    assert record is not None
    assert record.fingerprint == "f1"


async def test_a_key_in_flight_stays_held_until_its_lease_ends(
    store: StoreDatabase,
) -> None:
    await claim(store, lease=60)

    record = await claim(store, token="t2", now=59.999)

    assert record is not None
    assert record.state == "in_flight"
    assert record.response is None


async def test_a_key_whose_lease_ended_is_taken_over(store: StoreDatabase) -> None:
    await claim(store, token="t1", lease=60)

    assert await claim(store, fingerprint="f2", token="t2", now=60) is None

    assert (await record_of(store, now=61)).fingerprint == "f2"


async def test_the_holder_that_lost_its_key_cannot_complete_it(
    store: StoreDatabase,
) -> None:
    await claim(store, token="t1", lease=60)
    await claim(store, token="t2", now=60)

    with pytest.raises(IdempotencyKeyLost):
        await complete(store, token="t1")
    await complete(store, token="t2")

    assert (await record_of(store)).response == RESPONSE


async def test_a_done_key_past_its_expiry_is_taken_over_afresh(
    store: StoreDatabase,
) -> None:
    await claim(store)
    await complete(store, expires=100)

    assert await claim(store, fingerprint="f2", token="t2", now=100) is None

    assert await record_of(store, now=101) == KeyRecord(
        key="k1", fingerprint="f2", state="in_flight", response=None, expires_at=at(160)
    )


async def test_a_key_of_the_longest_length_is_held(store: StoreDatabase) -> None:
    key = "é" * idempotency.MAX_KEY_LENGTH

    assert await claim(store, key) is None

    assert (await record_of(store, key)).key == key


async def test_a_claim_rolled_back_leaves_the_key_free(store: StoreDatabase) -> None:
    async with reading(store) as log:
        assert await log.claim_request("k1", "f1", "t1", at(0), at(60)) is None

    assert await claim(store, token="t2") is None


# ---- completing, releasing, purging


async def test_completing_with_another_token_is_idempotency_key_lost(
    store: StoreDatabase,
) -> None:
    await claim(store, token="t1")

    with pytest.raises(IdempotencyKeyLost) as lost:
        await complete(store, token="t2")

    assert lost.value.key == "k1"
    assert (await record_of(store)).state == "in_flight"


async def test_completing_a_done_key_again_is_idempotency_key_lost(
    store: StoreDatabase,
) -> None:
    await claim(store)
    await complete(store)

    with pytest.raises(IdempotencyKeyLost):
        await complete(store, response=StoredResponse(500, "", ()))

    assert (await record_of(store)).response == RESPONSE


async def test_completing_an_unknown_key_is_idempotency_key_lost(
    store: StoreDatabase,
) -> None:
    with pytest.raises(IdempotencyKeyLost):
        await complete(store, key="nobody")


async def test_a_released_key_is_free_again(store: StoreDatabase) -> None:
    await claim(store, token="t1")
    async with committing(store) as log:
        await log.release_request("k1", "t1")

    assert await claim(store, token="t2", now=1) is None


async def test_a_release_by_another_token_leaves_the_key_held(
    store: StoreDatabase,
) -> None:
    await claim(store, token="t1")
    async with committing(store) as log:
        await log.release_request("k1", "t2")

    assert (await record_of(store)).state == "in_flight"


async def test_a_release_leaves_a_done_key(store: StoreDatabase) -> None:
    await claim(store, token="t1")
    await complete(store, token="t1")
    async with committing(store) as log:
        await log.release_request("k1", "t1")

    assert (await record_of(store)).response == RESPONSE


async def test_a_purge_deletes_the_expired_and_the_lapsed_keys_only(
    store: StoreDatabase,
) -> None:
    await claim(store, "done-expired")
    await complete(store, "done-expired", expires=100)
    await claim(store, "lapsed", lease=60)
    await claim(store, "in-flight", lease=500)
    await claim(store, "done")
    await complete(store, "done", expires=1000)

    async with committing(store) as log:
        assert await log.purge_requests(at(200)) == 2

    assert await claim(store, "done-expired", token="t2") is None
    assert await claim(store, "lapsed", token="t2") is None
    assert (await record_of(store, "in-flight")).state == "in_flight"
    assert (await record_of(store, "done")).state == "done"


async def test_purge_expired_counts_what_it_deleted(store: StoreDatabase) -> None:
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    async with committing(store) as log:
        await log.claim_request("old", "f1", "t1", past, past)
        await log.claim_request("new", "f1", "t1", past, past + datetime.timedelta(1))

    assert await idempotency.purge_expired(store.unit_of_work) == 1
    assert await idempotency.purge_expired(store.unit_of_work) == 0


# ---- concurrent claims


async def test_of_two_claims_of_one_key_at_once_one_wins(store: StoreDatabase) -> None:
    outcomes: list[idempotency.Claimed | KeyRecord] = []

    async def claim_it(fingerprint: str) -> None:
        outcomes.append(
            await idempotency.claim(store.unit_of_work, "k1", fingerprint, lease=60)
        )

    async with anyio.create_task_group() as group:
        group.start_soon(claim_it, "f1")
        group.start_soon(claim_it, "f2")

    winners = [each for each in outcomes if isinstance(each, idempotency.Claimed)]
    [loser] = [each for each in outcomes if isinstance(each, KeyRecord)]
    assert len(winners) == 1
    assert loser.state == "in_flight"


async def test_a_claim_waits_for_one_in_progress_then_finds_the_key_held(
    store: StoreDatabase,
) -> None:
    outcomes: list[idempotency.Claimed | KeyRecord] = []

    async def second_claim() -> None:
        outcomes.append(
            await idempotency.claim(store.unit_of_work, "k1", "f2", lease=60)
        )

    now = datetime.datetime.now(datetime.UTC)
    async with anyio.create_task_group() as group, committing(store) as log:
        lease_until = now + datetime.timedelta(minutes=1)
        assert await log.claim_request("k1", "f1", "t1", now, lease_until) is None
        group.start_soon(second_claim)
        await anyio.wait_all_tasks_blocked()

    [record] = outcomes
    assert isinstance(record, KeyRecord)
    assert record.fingerprint == "f1"


# ---- where a request's events are


async def test_the_last_position_of_events_is_the_highest_of_theirs(
    store: StoreDatabase,
) -> None:
    first, second, third = (batch_created("sku1", version) for version in (1, 2, 3))
    await append(store, first, second, third)
    ids = [new.event.message_id for new in (first, second, third)]

    async with reading(store) as log:
        assert await log.last_position_of([ids[2], ids[0]]) == 3
        assert await log.last_position_of([ids[0], "unknown"]) == 1
        assert await log.last_position_of(["unknown"]) is None
        assert await log.last_position_of([]) is None
