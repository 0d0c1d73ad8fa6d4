"""The OpenAPI document names every problem a route sends, and the headers and
parameters it reads, as the routes answer them."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest

from allocation import config
from allocation.entrypoints.api import running
from allocation.entrypoints.api.app import create_app

if TYPE_CHECKING:
    from pathlib import Path

BODY_ROUTES = [
    ("post", "/batches"),
    ("patch", "/batches/{ref}"),
    ("post", "/allocations"),
    ("post", "/users"),
    ("post", "/add_batch"),
    ("post", "/allocate"),
]


@pytest.fixture
def document(tmp_path: Path) -> dict[str, Any]:
    app = create_app(
        settings=config.Settings(database_url=f"sqlite:///{tmp_path}/unused.db")
    )
    return app.openapi()


def _problems(document: dict[str, Any], method: str, path: str) -> set[str]:
    """The problem types the route's responses name."""
    responses = document["paths"][path][method]["responses"]
    named = " ".join(entry["description"] for entry in responses.values())
    return set(re.findall(r"/problems/([a-z-]+)", named))


@pytest.mark.parametrize(
    ("method", "path", "slugs"),
    [
        ("post", "/batches", {"invalid-quantity", "invalid-identifier"}),
        ("patch", "/batches/{ref}", {"invalid-quantity", "invalid-identifier"}),
        ("post", "/allocations", {"invalid-quantity", "invalid-identifier"}),
        ("post", "/users", {"invalid-email", "invalid-name"}),
        ("get", "/allocations/{orderid}", {"unknown-position", "invalid-identifier"}),
        ("get", "/users/{user_id}", {"unknown-position", "invalid-identifier"}),
        ("get", "/events/stream", {"database-unavailable", "invalid-request"}),
        ("post", "/add_batch", {"database-unavailable", "concurrent-change"}),
        ("post", "/allocate", {"database-unavailable", "concurrent-change"}),
    ],
)
def test_a_route_names_the_problems_it_sends(
    document: dict[str, Any], method: str, path: str, slugs: set[str]
) -> None:
    assert slugs <= _problems(document, method, path)


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
def test_a_route_with_a_body_names_its_size_limit(
    document: dict[str, Any], method: str, path: str
) -> None:
    assert "413" in document["paths"][path][method]["responses"]
    assert "payload-too-large" in _problems(document, method, path)


def test_the_event_stream_documents_last_event_id_and_its_names(
    document: dict[str, Any],
) -> None:
    operation = document["paths"]["/events/stream"]["get"]
    parameters = {parameter["name"]: parameter for parameter in operation["parameters"]}

    assert parameters["Last-Event-ID"]["in"] == "header"
    listed = document["paths"]["/events"]["get"]["parameters"]
    [names] = [parameter for parameter in listed if parameter["name"] == "name"]
    enum = parameters["name"]["schema"]["items"]["enum"]
    assert enum == names["schema"]["items"]["enum"]
    assert {"allocated", "user_registered"} <= set(enum)
    assert "503" in operation["responses"]


def test_the_users_body_does_not_say_the_caller_chooses_the_id(
    document: dict[str, Any],
) -> None:
    operation = document["paths"]["/users"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]

    assert "user_id" not in schema["properties"]
    assert "chosen by the caller" not in schema["description"]
    assert "refused" in schema["description"]


def test_parameter_bounds_are_json_schema_keywords(document: dict[str, Any]) -> None:
    """Regression: a validator before the Query turned minimum into pydantic's ge."""
    schemas = [
        parameter["schema"]
        for operations in document["paths"].values()
        for operation in operations.values()
        for parameter in operation.get("parameters", [])
    ]

    assert not [schema for schema in schemas if {"ge", "le"} & set(schema)]


def test_path_parameters_are_plain_in_the_document(document: dict[str, Any]) -> None:
    assert all(":" not in path for path in document["paths"])


@pytest.mark.parametrize(
    ("key", "usable"),
    [
        ('"k1"', True),
        ("k1", True),
        ('" k "', True),
        ('"' + "k" * 255 + '"', True),
        ("k" * 255, True),
        ('""', False),
        ('"   "', False),
        ('"abc', False),
        ('ab"c', False),
        ("a b", False),
        ('"a\\b"', False),
        ('"' + "k" * 256 + '"', False),
        ("k" * 256, False),
    ],
)
def test_the_documented_key_pattern_is_the_one_the_api_applies(
    document: dict[str, Any], key: str, usable: bool
) -> None:
    operation = document["paths"]["/batches"]["post"]
    [header] = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
    schema = header["schema"]

    documented = (
        len(key) <= schema["maxLength"]
        and re.search(schema["pattern"], key) is not None
    )

    assert documented is usable
    assert (schema["pattern"], schema["maxLength"]) == (
        running.KEY_PATTERN,
        running.MAX_KEY_HEADER,
    )
