"""``allocation messages``: the catalogue and JSON Schema, from the declarations."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import Cli, error_line
from tests.unit.test_messages import MESSAGE_CLASSES

pytestmark = pytest.mark.e2e

# The application's own messages (tests register more in this process).
NAMES = {cls.TYPE for cls in MESSAGE_CLASSES}


def test_the_catalogue_lists_every_message_with_fields_and_an_example(
    cli: Cli,
) -> None:
    lines = cli.ok("messages")

    headings = [line.split()[0] for line in lines if line and not line[0].isspace()]
    assert set(headings) == NAMES
    assert "  eta  date (YYYY-MM-DD) or null, optional" in lines
    assert any(line.startswith("  example: {") for line in lines)
    assert not cli.database.exists()  # the catalogue needs no database


def test_the_json_schema_of_one_message_is_its_payloads(cli: Cli) -> None:
    schema = json.loads("\n".join(cli.ok("messages", "create_batch", "--json-schema")))

    assert schema["title"] == "create_batch"
    assert sorted(schema["properties"]) == ["eta", "qty", "ref", "sku"]
    assert schema["required"] == ["ref", "sku", "qty"]
    assert schema["properties"]["eta"]["anyOf"][0] == {
        "format": "date",
        "type": "string",
    }


def test_the_json_schema_of_every_message_is_keyed_by_name(cli: Cli) -> None:
    document = json.loads("\n".join(cli.ok("messages", "--json-schema")))

    assert set(document) == NAMES


def test_an_unknown_message_name_lists_the_names(cli: Cli) -> None:
    line = error_line(cli("messages", "CreateBatch"))

    assert "no message is named 'CreateBatch'" in line
    assert "create_batch" in line
