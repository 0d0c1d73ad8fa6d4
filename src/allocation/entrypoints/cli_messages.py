"""``allocation messages``: the catalogue of commands and events, from their schemas.

Everything printed here is generated from the messages' own declarations, so it is
what the log stores, the broker accepts and the validation enforces.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from allocation.domain import commands, messages
from allocation.domain.exceptions import AllocationError, shorten

if TYPE_CHECKING:
    import argparse
    from collections.abc import Awaitable, Callable


class UnknownMessageName(AllocationError):
    """Raised when ``allocation messages`` is asked for a name no message has."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(
            f"no message is named {shorten(name)}: the names are {', '.join(known)}"
        )


def add_parsers(subcommands: argparse._SubParsersAction[Any]) -> None:
    """Add the ``messages`` subcommand to the ``allocation`` parser."""
    catalogue = subcommands.add_parser(
        "messages",
        help="list every command and event with its fields, or print JSON Schema",
        description="The message catalogue: every command and event, its fields, "
        "types and an example payload, generated from the message declarations.",
    )
    catalogue.add_argument(
        "name",
        nargs="?",
        metavar="NAME",
        help="one message's TYPE, e.g. create_batch (default: all of them)",
    )
    catalogue.add_argument(
        "--json-schema",
        action="store_true",
        help="print the JSON Schema of the payload (of every message: one object "
        "keyed by TYPE)",
    )


async def _messages(args: argparse.Namespace) -> int:
    known = messages.message_classes()
    if args.name is not None and args.name not in known:
        raise UnknownMessageName(args.name, list(known))
    chosen = [known[args.name]] if args.name is not None else list(known.values())
    if args.json_schema:
        if args.name is not None:
            document: dict[str, Any] = chosen[0].payload_schema()
        else:
            document = {kind.TYPE: kind.payload_schema() for kind in chosen}
        print(json.dumps(document, ensure_ascii=False, indent=2))
        return 0
    # Commands first: they are what a caller sends.
    chosen.sort(key=lambda kind: (not issubclass(kind, commands.Command), kind.TYPE))
    print("\n\n".join(_describe(kind) for kind in chosen))
    return 0


def _describe(kind: type[messages.Message]) -> str:
    role = "command" if issubclass(kind, commands.Command) else "event"
    schema = kind.payload_schema()
    required = set(schema.get("required", []))
    properties: dict[str, Any] = schema.get("properties", {})
    width = max((len(name) for name in properties), default=0)
    lines = [f"{kind.TYPE}  ({role}, schema version {kind.SCHEMA_VERSION})"]
    summary = (kind.__doc__ or "").strip().splitlines()[0]
    lines.append(f"  {summary.replace('``', '')}")  # docstrings quote names in RST
    definitions: dict[str, Any] = schema.get("$defs", {})
    for name, field in properties.items():
        presence = "required" if name in required else "optional"
        lines.append(f"  {name:<{width}}  {_type_of(field, definitions)}, {presence}")
    example = json.dumps(dict(kind.EXAMPLE), ensure_ascii=False)
    lines.append(f"  example: {example}")
    return "\n".join(lines)


def _type_of(field: dict[str, Any], definitions: dict[str, Any]) -> str:
    """A field's JSON Schema, said in a few words."""
    if "anyOf" in field:
        return " or ".join(_type_of(option, definitions) for option in field["anyOf"])
    if "$ref" in field:
        shape = definitions.get(field["$ref"].rsplit("/", 1)[-1], {})
        return f"object ({', '.join(shape.get('properties', {}))})"
    kind = field.get("type", "any")
    if kind == "array" and "items" in field:
        return f"list of {_type_of(field['items'], definitions)}"
    if kind == "null":
        return "null"
    if kind == "integer":
        return f"integer {field.get('minimum', '')}..{field.get('maximum', '')}"
    if kind == "string":
        if field.get("format") == "date":
            return "date (YYYY-MM-DD)"
        if field.get("format") == "email":
            return f"email address, at most {field.get('maxLength')} characters"
        if "maxLength" in field:
            return (
                f"text, {field.get('minLength', 0)}-{field['maxLength']} characters, "
                "no control characters"
            )
        return "text"
    return str(kind)


ACTIONS: dict[str, Callable[[argparse.Namespace], Awaitable[int]]] = {
    "messages": _messages,
}
