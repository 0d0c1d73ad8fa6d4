"""The HTTP API on the fakes: input a hostile client sends is refused with a 4xx
problem, never a 500, a redirect or a lookup of something else."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from allocation.entrypoints.api import guards
from allocation.entrypoints.api.server import address_url
from tests.unit.http_fakes import serving_fakes

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    import httpx

PROBLEM = "application/problem+json"
COMMAND_ROUTES = ("/batches", "/allocations", "/users", "/allocate", "/add_batch")
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # httpx's ASGI transport runs the app on asyncio


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with serving_fakes(tmp_path) as (client, _uow):
        yield client


def _problem(answer: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM
    document: dict[str, Any] = answer.json()
    assert document["type"] == f"/problems/{slug}"
    return document


def _refused(answer: httpx.Response, path: str) -> None:
    """A bad body: a 422 problem, or the book's 400 message on its paths."""
    if path in ("/allocate", "/add_batch"):
        assert answer.status_code == 400, answer.text
        assert "message" in answer.json()
    else:
        _problem(answer, 422, "invalid-request")


@pytest.mark.parametrize("path", COMMAND_ROUTES)
async def test_a_body_nested_past_the_stack_is_refused(
    client: httpx.AsyncClient, path: str
) -> None:
    """Regression: a RecursionError was a 500 with a traceback."""
    answer = await client.post(path, content="[" * 1000 + "]" * 1000, headers=JSON)

    _refused(answer, path)


@pytest.mark.parametrize("path", ["/batches", "/add_batch"])
async def test_a_nested_field_past_the_stack_is_refused(
    client: httpx.AsyncClient, path: str
) -> None:
    """Regression: json.loads took it, and json.dumps or pydantic then failed."""
    eta = "[" * 990 + "]" * 990
    body = f'{{"ref": "b1", "sku": "LAMP", "qty": 1, "eta": {eta}}}'

    answer = await client.post(path, content=body, headers=JSON)

    _refused(answer, path)


@pytest.mark.parametrize(
    "last_seen", ["²".encode("latin-1"), b"x", b"-1", b"1_0", b"9" * 5000]
)
async def test_a_last_event_id_that_is_no_position_is_refused(
    client: httpx.AsyncClient, last_seen: bytes
) -> None:
    """Regression: "²" passed str.isdigit() and int() failed: a 500."""
    alone = await client.get("/events/stream", headers={"Last-Event-ID": last_seen})
    beside_after = await client.get(
        "/events/stream", params={"after": 0}, headers={"Last-Event-ID": last_seen}
    )

    _problem(alone, 422, "invalid-request")
    _problem(beside_after, 422, "invalid-request")


@pytest.mark.parametrize("value", ["1_0", "+1", " 1", "1.0", "١"])
@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/allocations/o1", "min_position"),
        ("/users/u1", "min_position"),
        ("/events", "after"),
        ("/events", "limit"),
        ("/events/stream", "after"),
    ],
)
async def test_a_number_in_a_query_is_plain_digits(
    client: httpx.AsyncClient, path: str, parameter: str, value: str
) -> None:
    """Regression: min_position=1_0 was read as 10."""
    answer = await client.get(path, params={parameter: value})

    _problem(answer, 422, "invalid-request")


@pytest.mark.parametrize(
    "key", ['""', '"abc', '"   "', "a b", 'ab"c', '"' + "k" * 256 + '"', "k" * 256]
)
async def test_an_idempotency_key_without_a_visible_character_is_refused(
    client: httpx.AsyncClient, key: str
) -> None:
    """Regression: "", "abc and "   " were taken as keys."""
    answer = await client.post(
        "/batches",
        json={"ref": "b1", "sku": "LAMP", "qty": 1},
        headers={"Idempotency-Key": key},
    )

    _problem(answer, 400, "invalid-idempotency-key")


async def test_two_idempotency_keys_are_refused(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        "/batches",
        json={"ref": "b1", "sku": "LAMP", "qty": 1},
        headers=[("Idempotency-Key", '"k1"'), ("Idempotency-Key", '"k2"')],
    )

    _problem(answer, 400, "invalid-idempotency-key")


@pytest.mark.parametrize("key", ['" k "', '"' + "k" * 255 + '"', "k" * 255, "k"])
async def test_an_idempotency_key_with_a_visible_character_is_taken(
    client: httpx.AsyncClient, key: str
) -> None:
    answer = await client.post(
        "/batches",
        json={"ref": "b1", "sku": "LAMP", "qty": 1},
        headers={"Idempotency-Key": key},
    )

    assert answer.status_code == 201, answer.text


@pytest.mark.parametrize("path", COMMAND_ROUTES)
@pytest.mark.parametrize("encoding", ["gzip", "br", "x-unknown", "identity, gzip"])
async def test_a_compressed_body_is_an_unsupported_media_type(
    client: httpx.AsyncClient, path: str, encoding: str
) -> None:
    """Regression: gzip was a 422, and a plain body labelled gzip a 201."""
    answer = await client.post(
        path,
        json={"ref": "b1", "sku": "LAMP", "qty": 1},
        headers={"Content-Encoding": encoding},
    )

    _problem(answer, 415, "unsupported-media-type")


async def test_an_identity_body_is_taken(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        "/batches",
        json={"ref": "b1", "sku": "LAMP", "qty": 1},
        headers={"Content-Encoding": "identity"},
    )

    assert answer.status_code == 201, answer.text


@pytest.mark.parametrize("path", COMMAND_ROUTES)
async def test_a_body_past_the_limit_is_refused_by_its_length(
    client: httpx.AsyncClient, path: str
) -> None:
    body = b" " * (guards.MAX_BODY_BYTES + 1)

    answer = await client.post(path, content=body, headers=JSON)

    document = _problem(answer, 413, "payload-too-large")
    assert str(guards.MAX_BODY_BYTES) in document["detail"]


async def test_a_chunked_body_past_the_limit_is_refused_while_read(
    client: httpx.AsyncClient,
) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        while sent <= 4 * guards.MAX_BODY_BYTES:
            sent += 64 * 1024
            yield b" " * (64 * 1024)

    answer = await client.post("/batches", content=chunks(), headers=JSON)

    assert "content-length" not in answer.request.headers
    _problem(answer, 413, "payload-too-large")


@pytest.mark.parametrize(
    "path",
    ["/health", "/ready", "/metrics", "/problems", "/problems/out-of-stock", "/events"],
)
async def test_head_answers_as_get_without_a_body(
    client: httpx.AsyncClient, path: str
) -> None:
    """Regression: HEAD was a 405 on every route."""
    got = await client.get(path)

    answer = await client.head(path)

    assert answer.status_code == got.status_code
    assert answer.headers["content-type"] == got.headers["content-type"]
    assert answer.content == b""


async def test_head_of_the_event_stream_ends(client: httpx.AsyncClient) -> None:
    answer = await client.head("/events/stream")

    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert answer.content == b""


async def test_head_of_a_command_route_is_not_allowed(
    client: httpx.AsyncClient,
) -> None:
    answer = await client.head("/batches")

    assert answer.status_code == 405
    assert answer.headers["content-type"] == PROBLEM
    assert answer.content == b""


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/batches/"), ("GET", "/health/"), ("PATCH", "/batches/")],
)
async def test_a_trailing_slash_is_not_found_not_redirected(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    """Regression: a 307 to a URL built from the client's Host header."""
    answer = await client.request(
        method, path, json={}, headers={"Host": "evil.example"}
    )

    _problem(answer, 404, "not-found")
    assert "location" not in answer.headers


@pytest.mark.parametrize(
    "path", ["/allocations/%FF", "/users/%C3", "/batches/a%80b", "/nowhere/%FE"]
)
async def test_a_path_that_is_not_utf8_is_refused(
    client: httpx.AsyncClient, path: str
) -> None:
    """Regression: %FF was looked up as U+FFFD."""
    method = "PATCH" if "batches" in path else "GET"

    answer = await client.request(method, path, json={"qty": 1})

    _problem(answer, 422, "invalid-request")


async def test_a_replacement_character_sent_as_utf8_is_looked_up(
    client: httpx.AsyncClient,
) -> None:
    answer = await client.get("/allocations/%EF%BF%BD")

    _problem(answer, 404, "order-not-found")


async def test_a_long_unknown_path_is_quoted_short(client: httpx.AsyncClient) -> None:
    """Regression: a 100 kB path made a 100 kB detail."""
    answer = await client.get("/" + "x" * 30_000)

    document = _problem(answer, 404, "not-found")
    assert len(document["detail"]) < 200
    assert "30001 characters" in document["detail"]


async def test_a_user_id_error_says_how_long_a_user_id_may_be(
    client: httpx.AsyncClient,
) -> None:
    """Regression: it said "1 to 255 characters"; user ids hold at most 36."""
    answer = await client.get("/users/u1%20")

    document = _problem(answer, 422, "invalid-identifier")
    assert "1 to 36 characters" in document["detail"]


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8011"),
        ("localhost", "http://localhost:8011"),
        ("::1", "http://[::1]:8011"),
        ("::", "http://[::]:8011"),
    ],
)
def test_the_banner_brackets_an_ipv6_address(host: str, url: str) -> None:
    """Regression: --host ::1 printed http://::1:8011."""
    assert address_url(host, 8011) == url
