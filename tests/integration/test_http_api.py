"""The HTTP API's routes on a SQLite file and PostgreSQL, in process."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import pytest
from sqlalchemy import text

from tests.integration.http_fixtures import serving

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx
    from sqlalchemy.ext.asyncio import AsyncEngine

PROBLEM = "application/problem+json"


@pytest.fixture
async def client(
    engine: AsyncEngine, database_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(database_url) as (client, _app):
        yield client


def _problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    document: dict[str, Any] = response.json()
    assert document["type"] == f"/problems/{slug}"
    assert document["status"] == status
    assert document["title"]
    assert document["detail"]
    return document


async def _add_batch(
    client: httpx.AsyncClient, ref: str, sku: str, qty: int, eta: str | None = None
) -> httpx.Response:
    response = await client.post(
        "/batches", json={"ref": ref, "sku": sku, "qty": qty, "eta": eta}
    )
    assert response.status_code == 201, response.text
    return response


async def test_allocate_answers_the_batch_and_the_position_to_read_it_at(
    client: httpx.AsyncClient,
) -> None:
    created = await _add_batch(client, "b1", "LAMP", 10)
    assert created.json() == {"ref": "b1", "sku": "LAMP", "qty": 10, "eta": None}

    allocated = await client.post(
        "/allocations", json={"orderid": "o1", "sku": "LAMP", "qty": 3}
    )

    assert allocated.status_code == 201, allocated.text
    assert allocated.json() == {
        "orderid": "o1",
        "sku": "LAMP",
        "qty": 3,
        "batchref": "b1",
    }
    position = int(allocated.headers["Log-Position"])
    assert position > int(created.headers["Log-Position"])
    shown = await client.get("/allocations/o1", params={"min_position": position})
    assert shown.status_code == 200
    assert shown.json() == [{"sku": "LAMP", "batchref": "b1"}]


async def test_a_commands_log_position_is_that_of_its_last_event(
    client: httpx.AsyncClient,
) -> None:
    answers = [
        await _add_batch(client, "b1", "LAMP", 10),
        await _add_batch(client, "b2", "TABLE", 10),
        await client.post(
            "/allocations", json={"orderid": "o1", "sku": "LAMP", "qty": 3}
        ),
    ]

    logged = (await client.get("/events")).json()["events"]
    named = {event["position"]: event["name"] for event in logged}
    positions = [int(answer.headers["Log-Position"]) for answer in answers]
    assert [named[position] for position in positions] == [
        "batch_created",
        "batch_created",
        "allocated",
    ]
    assert positions == sorted(positions)
    assert positions[-1] == max(named)


async def test_an_unknown_sku_is_a_problem_and_changes_nothing(
    client: httpx.AsyncClient,
) -> None:
    answer = await client.post(
        "/allocations", json={"orderid": "o1", "sku": "NOPE", "qty": 1}
    )

    assert "NOPE" in _problem(answer, 422, "invalid-sku")["detail"]
    log = await client.get("/events")
    assert log.json()["events"] == []


async def test_out_of_stock_is_a_conflict_and_is_recorded(
    client: httpx.AsyncClient,
) -> None:
    await _add_batch(client, "b1", "LAMP", 1)

    answer = await client.post(
        "/allocations", json={"orderid": "o1", "sku": "LAMP", "qty": 5}
    )

    _problem(answer, 409, "out-of-stock")
    names = [event["name"] for event in (await client.get("/events")).json()["events"]]
    assert names == ["batch_created", "out_of_stock"]


async def test_register_user_gives_its_location_and_refuses_the_email_twice(
    client: httpx.AsyncClient,
) -> None:
    answer = await client.post(
        "/users", json={"name": "Иван", "email": "Ivan@Example.com"}
    )

    assert answer.status_code == 201, answer.text
    user = answer.json()
    assert answer.headers["Location"] == f"/users/{user['id']}"
    shown = await client.get(
        answer.headers["Location"],
        params={"min_position": answer.headers["Log-Position"]},
    )
    assert shown.json() == user
    again = await client.post(
        "/users", json={"name": "Other", "email": "ivan@example.com"}
    )
    _problem(again, 409, "email-already-registered")


async def test_a_body_may_not_choose_the_users_id(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        "/users", json={"user_id": "x", "name": "A", "email": "a@example.com"}
    )

    assert "user_id" in " ".join(_problem(answer, 422, "invalid-request")["errors"])


async def test_change_batch_quantity_and_an_unknown_batch(
    client: httpx.AsyncClient,
) -> None:
    await _add_batch(client, "b1", "LAMP", 10)

    changed = await client.patch("/batches/b1", json={"qty": 4})
    unknown = await client.patch("/batches/nope", json={"qty": 4})

    assert changed.status_code == 200
    assert changed.json() == {"ref": "b1", "qty": 4}
    _problem(unknown, 404, "unknown-batch")


@pytest.mark.parametrize(
    ("body", "content_type", "status", "slug"),
    [
        (
            b'{"orderid": "o1", "sku": "LAMP"}',
            "application/json",
            422,
            "invalid-request",
        ),
        (b"not json", "application/json", 422, "invalid-request"),
        (b"[1, 2]", "application/json", 422, "invalid-request"),
        (
            b'{"orderid": "o1", "sku": "L", "qty": "3"}',
            "application/json",
            422,
            "invalid-request",
        ),
        (
            b'{"orderid": "o1", "sku": "L", "qty": 0}',
            "application/json",
            422,
            "invalid-quantity",
        ),
        (
            b'{"orderid": "o1", "sku": "L", "qty": 1, "x": 1}',
            "application/json",
            422,
            "invalid-request",
        ),
        (
            b'{"orderid": " o1", "sku": "L", "qty": 1}',
            "application/json",
            422,
            "invalid-identifier",
        ),
        (
            b"orderid=o1",
            "application/x-www-form-urlencoded",
            415,
            "unsupported-media-type",
        ),
    ],
)
async def test_bad_bodies_are_problems_that_change_nothing(
    client: httpx.AsyncClient, body: bytes, content_type: str, status: int, slug: str
) -> None:
    answer = await client.post(
        "/allocations", content=body, headers={"Content-Type": content_type}
    )

    _problem(answer, status, slug)
    assert (await client.get("/events")).json()["events"] == []


async def test_bad_paths_and_parameters_are_problems(client: httpx.AsyncClient) -> None:
    _problem(await client.get("/nowhere"), 404, "not-found")
    _problem(await client.delete("/batches"), 405, "method-not-allowed")
    _problem(await client.get("/events", params={"limit": 0}), 422, "invalid-request")
    _problem(
        await client.get("/events", params={"name": "Allocated"}),
        422,
        "invalid-request",
    )
    _problem(
        await client.get("/allocations/o1", params={"min_position": -1}),
        422,
        "invalid-request",
    )
    _problem(await client.get("/users/%20x"), 422, "invalid-identifier")
    _problem(await client.get("/users/unknown"), 404, "user-not-found")
    _problem(await client.get("/allocations/unknown"), 404, "order-not-found")


async def test_the_log_pages_and_filters(client: httpx.AsyncClient) -> None:
    for number in range(3):
        await _add_batch(client, f"b{number}", "LAMP", 10)
    await client.post("/allocations", json={"orderid": "o1", "sku": "LAMP", "qty": 1})

    first = (await client.get("/events", params={"limit": 2})).json()
    rest = (
        await client.get("/events", params={"after": first["next_after"], "limit": 2})
    ).json()
    allocated = (await client.get("/events", params={"name": "allocated"})).json()

    names = [event["name"] for event in first["events"] + rest["events"]]
    assert names == ["batch_created"] * 3 + ["allocated"]
    assert rest["next_after"] == rest["events"][-1]["position"]
    assert [event["payload"]["batchref"] for event in allocated["events"]] == ["b0"]
    assert allocated["next_after"] is None


async def test_health_ready_and_problem_documents(client: httpx.AsyncClient) -> None:
    health = await client.get("/health")
    ready = await client.get("/ready")
    described = await client.get("/problems/out-of-stock")

    assert health.json() == {"status": "ok"}
    assert ready.status_code == 200
    assert ready.json()["checks"] == {
        "database": "ok",
        "schema": "ok",
        "broker": "not configured",
    }
    assert described.json()["status"] == 409
    listed = (await client.get("/problems")).json()
    assert {"type": "/problems/out-of-stock"}.items() <= listed[0].items() or any(
        kind["type"] == "/problems/out-of-stock" for kind in listed
    )


async def test_ready_once_the_database_has_dropped_its_connections(
    engine: AsyncEngine, database_url: str
) -> None:
    """Regression: the first /ready after PostgreSQL came back said "schema:
    connection is closed", of a pooled connection kept from before."""
    if engine.dialect.name != "postgresql":
        pytest.skip("a SQLite file has no server to drop connections")

    async def sessions() -> set[int]:
        # A connection of its own each time: pg_stat_activity is read once per
        # transaction.
        async with engine.connect() as admin:
            found = await admin.execute(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE datname ="
                    " current_database() AND pid <> pg_backend_pid()"
                )
            )
            return set(found.scalars())

    others = await sessions()
    async with serving(database_url) as (client, _app):
        assert (await client.get("/ready")).status_code == 200
        apps = await sessions() - others
        async with engine.connect() as admin:
            for pid in apps:
                await admin.execute(
                    text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}
                )
        with anyio.fail_after(10):
            while True:
                if not apps & await sessions():
                    break
                await anyio.sleep(0.01)

        answer = await client.get("/ready")

    # Only the schema check's own engine is in question here: the bus's pool
    # (the database check) is the store's.
    assert answer.json()["checks"]["schema"] == "ok", answer.text


async def test_the_books_paths_answer_as_the_book_does(
    client: httpx.AsyncClient,
) -> None:
    added = await client.post(
        "/add_batch", json={"ref": "b1", "sku": "LAMP", "qty": 10, "eta": None}
    )
    allocated = await client.post(
        "/allocate", json={"orderid": "o1", "sku": "LAMP", "qty": 3}
    )
    unknown = await client.post(
        "/allocate", json={"orderid": "o2", "sku": "NOPE", "qty": 3}
    )
    shown = await client.get("/allocations/o1")

    assert added.status_code == 201
    assert allocated.status_code == 202
    assert allocated.json() == {"batchref": "b1"}
    assert unknown.status_code == 400
    assert unknown.json() == {"message": "Invalid sku NOPE"}
    assert shown.json() == [{"sku": "LAMP", "batchref": "b1"}]
    assert (await client.get("/allocations/o2")).status_code == 404


async def test_not_ready_names_the_broker_that_does_not_answer(
    engine: AsyncEngine, database_url: str
) -> None:
    async with serving(database_url, broker_url="redis://127.0.0.1:1/0") as (
        client,
        _app,
    ):
        answer = await client.get("/ready")

    document = _problem(answer, 503, "not-ready")
    assert document["checks"]["database"] == "ok"
    assert document["checks"]["broker"] != "ok"
    assert "broker" in document["detail"]
    assert answer.headers["Retry-After"] == "5"


async def test_metrics_count_the_commands_handled(client: httpx.AsyncClient) -> None:
    await _add_batch(client, "b1", "LAMP", 10)
    await client.post("/allocations", json={"orderid": "o1", "sku": "LAMP", "qty": 1})

    answer = await client.get("/metrics")

    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    lines = answer.text.splitlines()
    assert (
        'allocation_commands_handled_total{command="allocate",outcome="ok"} 1.0'
        in lines
    )
    assert any(line.startswith("allocation_subscriber_lag_events{") for line in lines)


async def test_a_callers_trace_reaches_the_log(client: httpx.AsyncClient) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    await client.post(
        "/batches",
        json={"ref": "b1", "sku": "LAMP", "qty": 10},
        headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
    )

    [logged] = (await client.get("/events")).json()["events"]

    assert logged["trace_context"].split("-")[1] == trace_id


async def test_allocating_a_line_again_answers_its_batch(
    client: httpx.AsyncClient,
) -> None:
    """Regression: a repeat of an allocated line answered 409 out of stock (no
    event was recorded: the line is allocated already)."""
    await _add_batch(client, "b1", "LAMP", 10)
    line = {"orderid": "o1", "sku": "LAMP", "qty": 1}
    first = await client.post("/allocations", json=line)

    again = await client.post("/allocations", json=line)
    book = await client.post("/allocate", json=line)

    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json() == first.json()
    assert book.status_code == 202
    assert book.json() == {"batchref": "b1"}
    names = [event["name"] for event in (await client.get("/events")).json()["events"]]
    assert names == ["batch_created", "allocated"]
