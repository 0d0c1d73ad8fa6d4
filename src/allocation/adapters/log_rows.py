"""Event-log rows to and from the ports' value types, the same for every engine."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from allocation.domain import events, messages
from allocation.domain.exceptions import AllocationError, InvalidMessage
from allocation.service_layer.exceptions import UnreadableLogEntry
from allocation.service_layer.ports import DeadLetter, LoggedEvent

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from allocation.service_layer.ports import NewEvent

# The log's columns in the order every engine's reads select them.
LOG_COLUMNS = (
    "position",
    "message_id",
    "aggregate_type",
    "aggregate_id",
    "aggregate_version",
    "name",
    "payload",
    "schema_version",
    "occurred_at",
    "correlation_id",
    "causation_id",
    "trace_context",
)

# What a reader of events alone needs of a row (catch-up, replay), in the order
# every engine's lean reads select them.
EVENT_COLUMNS = (
    "position",
    "message_id",
    "aggregate_version",
    "name",
    "payload",
    "schema_version",
    "correlation_id",
    "causation_id",
)


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def rebuild_event(
    name: str,
    payload_json: str,
    *,
    schema_version: int,
    message_id: str,
    correlation_id: str | None,
    causation_id: str | None,
    aggregate_version: int,
) -> events.Event:
    """The event a log row describes, decoded, upcast and validated by its schema.

    Raises:
        InvalidMessage: the row holds no event this version can read.
    """
    return event_class(name).from_json(
        payload_json,
        schema_version=schema_version,
        message_id=message_id,
        correlation_id=correlation_id,
        causation_id=causation_id,
        aggregate_version=aggregate_version,
    )


def event_class(name: str) -> type[events.Event]:
    """The event class a log row's name stands for.

    Raises:
        InvalidMessage: no event has this name.
    """
    kind = messages.named(name)
    if not issubclass(kind, events.Event):
        raise InvalidMessage(name, ["a command, not an event"])
    return kind


def log_row(new: NewEvent, now: datetime.datetime) -> dict[str, Any]:
    """The columns of the log row for ``new`` (all but the position)."""
    return {
        "message_id": new.event.message_id,
        "aggregate_type": new.aggregate_type,
        "aggregate_id": new.aggregate_id,
        "aggregate_version": new.aggregate_version,
        "name": new.event.TYPE,
        "payload": new.event.payload_json(),
        "schema_version": new.event.SCHEMA_VERSION,
        "occurred_at": now,
        "correlation_id": new.event.correlation_id,
        "causation_id": new.event.causation_id,
        "trace_context": new.trace_context,
    }


def logged_event(record: Mapping[str, Any]) -> LoggedEvent:
    """A log row (anything read by column name, the payload as its JSON text, the
    time as a datetime) as a validated event.

    Raises:
        UnreadableLogEntry: the row holds no event this version can read; the
            error names its position.
    """
    payload_json: str = record["payload"]
    try:
        event = rebuild_event(
            record["name"],
            payload_json,
            schema_version=record["schema_version"],
            message_id=record["message_id"],
            correlation_id=record["correlation_id"],
            causation_id=record["causation_id"],
            aggregate_version=record["aggregate_version"],
        )
    except AllocationError as error:
        raise UnreadableLogEntry(record["position"], str(error)) from error
    return LoggedEvent(
        position=record["position"],
        event=event,
        aggregate_type=record["aggregate_type"],
        aggregate_id=record["aggregate_id"],
        aggregate_version=record["aggregate_version"],
        occurred_at=aware(record["occurred_at"]),
        payload_json=payload_json,
        schema_version=record["schema_version"],
        # Migrations read rows of schemas older than the column.
        trace_context=record.get("trace_context"),
    )


def positioned_events(
    rows: Iterable[Sequence[Any]],
) -> list[tuple[int, events.Event]]:
    """Rows of EVENT_COLUMNS as (position, event) pairs, each event decoded, upcast
    and validated by its schema, as ``logged_event`` does, without the rest.

    Raises:
        UnreadableLogEntry: a row holds no event this version can read; the error
            names its position.
    """
    decoded: list[tuple[int, events.Event]] = []
    # Looked up once per name in a batch (most batches hold one or two).
    classes: dict[str, type[events.Event]] = {}
    for (
        position,
        message_id,
        aggregate_version,
        name,
        payload_json,
        schema_version,
        correlation_id,
        causation_id,
    ) in rows:
        try:
            kind = classes.get(name) or classes.setdefault(name, event_class(name))
            event = kind.from_json(
                payload_json,
                schema_version=schema_version,
                message_id=message_id,
                correlation_id=correlation_id,
                causation_id=causation_id,
                aggregate_version=aggregate_version,
            )
        except AllocationError as error:
            raise UnreadableLogEntry(position, str(error)) from error
        decoded.append((position, event))
    return decoded


def dead_letter(record: Mapping[str, Any]) -> DeadLetter:
    return DeadLetter(
        id=record["id"],
        subscriber=record["subscriber"],
        message_id=record["message_id"],
        error=record["error"],
        attempts=record["attempts"],
        last_tried=aware(record["last_tried"]),
    )


def aware(moment: datetime.datetime) -> datetime.datetime:
    # SQLite hands back naive datetimes; every time we store is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)
