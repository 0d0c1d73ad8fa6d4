"""The schema: every table as SQLAlchemy Core, the one definition of it.

Alembic compares its migrations with this metadata, and each engine's package
builds its statements from these tables (once per dialect). Nothing is
ORM-mapped: the aggregates are stored as their events.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    true,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _key_text(length: int) -> String:
    """Text that a read model is paged by, in code-point order: PostgreSQL
    compares it by the "C" collation, whatever the database's own, so a page in
    key order is a range of the primary key's index (SQLite's default collation,
    BINARY, compares by code point already)."""
    return String(length).with_variant(String(length, collation="C"), "postgresql")


# The unique values aggregates hold (an email, a batch reference) and their owner:
# written with the event that makes the claim, in its transaction, so uniqueness
# holds across aggregates, and the owner is found by the value.
claims = Table(
    "claims",
    metadata,
    Column("kind", String(50), primary_key=True),
    Column("value", String(255), primary_key=True),
    Column("owner", String(255), nullable=False),
)

# The newest snapshot of an aggregate: its state (JSON text) after ``version``
# events, in the shape ``schema_version`` of its class; one row per aggregate.
snapshots = Table(
    "snapshots",
    metadata,
    Column("aggregate_type", String(50), primary_key=True),
    Column("aggregate_id", String(255), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("schema_version", SmallInteger, nullable=False),
    Column("state", Text, nullable=False),
    Column("taken_at", DateTime(timezone=True), nullable=False),
)

# Positions are 64-bit on PostgreSQL; on SQLite an INTEGER PRIMARY KEY is the rowid,
# handed out as max + 1 under the write lock: in commit order, without gaps.
_Position = BigInteger().with_variant(Integer(), "sqlite")

# The append-only log of every event, written in the transaction that made it.
event_log = Table(
    "event_log",
    metadata,
    Column("position", _Position, primary_key=True, autoincrement=True),
    Column("message_id", String(36), nullable=False, unique=True),
    Column("aggregate_type", String(50), nullable=False),
    Column("aggregate_id", String(255), nullable=False),
    Column("aggregate_version", Integer, nullable=False),
    Column("name", String(100), nullable=False),
    Column("payload", JSON, nullable=False),
    # The version of the event's schema the payload was written with: an older
    # shape is upcast when it is read.
    Column("schema_version", SmallInteger, nullable=False, server_default="1"),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("correlation_id", String(36), nullable=True),
    Column("causation_id", String(36), nullable=True),
    # The W3C trace context (traceparent) of the work that wrote the event, so the
    # handlers and services it reaches continue the same trace.
    Column("trace_context", String(512), nullable=True),
    # A second writer of one aggregate version fails here: optimistic concurrency.
    UniqueConstraint("aggregate_type", "aggregate_id", "aggregate_version"),
)

# Which subscriber has handled which message: written in the same transaction as a
# handler's database effects, which makes those effects happen exactly once.
processed_messages = Table(
    "processed_messages",
    metadata,
    Column("subscriber", String(100), primary_key=True),
    Column("message_id", String(36), primary_key=True),
)

# How far catch-up has got, per subscriber: every event up to here is handled.
subscriber_checkpoints = Table(
    "subscriber_checkpoints",
    metadata,
    Column("subscriber", String(100), primary_key=True),
    Column("position", _Position, nullable=False),
)

# Messages a subscriber still failed on after all its retries.
dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subscriber", String(100), nullable=False),
    Column("message_id", String(36), nullable=False),
    Column("error", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_tried", DateTime(timezone=True), nullable=False),
    UniqueConstraint("subscriber", "message_id"),
)

# Read model of the registered users, kept by an event handler.
users_view = Table(
    "users_view",
    metadata,
    Column("user_id", _key_text(36), primary_key=True),
    Column("name", String(200), nullable=False),
    # Looked up by email: a user's page, and the article's "is this email taken".
    Column("email", String(254), nullable=False, index=True),
)

# Read model kept by event handlers (CQRS): one row per order line (orderid, sku,
# qty), which is in at most one batch at a time; an order may hold lines of one sku
# in several batches. ``version`` is the product version of the last event applied
# to the row, so an older event that arrives late changes nothing; a deallocated
# line stays as a row with ``allocated`` false, keeping its version, instead of
# being deleted.
allocations_view = Table(
    "allocations_view",
    metadata,
    Column("orderid", _key_text(255), primary_key=True),
    Column("sku", _key_text(255), primary_key=True),
    Column("qty", Integer, primary_key=True, autoincrement=False),
    Column("batchref", String(255), nullable=False),
    Column("version", Integer, nullable=False, server_default="0"),
    Column("allocated", Boolean, nullable=False, server_default=true()),
)

# HTTP Idempotency-Key records: claimed (in flight) in a short transaction of their
# own, then completed with the response in the command's own transaction, so a
# repeated request gets the stored response and never a second effect.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    # Who holds the key while it is in flight: completing with another token fails.
    Column("token", String(36), nullable=False),
    Column("state", String(16), nullable=False),
    Column("status_code", SmallInteger, nullable=True),
    Column("response", Text, nullable=True),
    # The message ids of the events the request's command appended (JSON list).
    Column("message_ids", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # In flight: the holder's lease ends here; done: the key expires here.
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)
