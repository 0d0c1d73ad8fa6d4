"""Imperative mapping of the domain classes onto tables; the domain never imports this."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    event,
    inspect,
    true,
)
from sqlalchemy.orm import QueryableAttribute, registry, relationship

from allocation.domain import model, users

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)
mapper_registry = registry(metadata=metadata)

products = Table(
    "products",
    metadata,
    Column("sku", String(255), primary_key=True),
    Column("version_number", Integer, nullable=False, server_default="0"),
)

batches = Table(
    "batches",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("reference", String(255), nullable=False, unique=True),
    Column("sku", ForeignKey("products.sku"), nullable=False, index=True),
    Column("purchased_quantity", Integer, nullable=False),
    Column("eta", Date, nullable=True),
)

# One row per order line allocated to a batch: the book's order_lines and allocations
# tables folded into one, which saves a join and a round trip per allocation.
allocations = Table(
    "allocations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "batch_id",
        ForeignKey("batches.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("orderid", String(255), nullable=False),
    Column("sku", String(255), nullable=False),
    Column("qty", Integer, nullable=False),
)

users_table = Table(
    "users",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("email", String(254), nullable=False, unique=True),
    Column("version_number", Integer, nullable=False, server_default="0"),
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
    Column("user_id", String(36), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("email", String(254), nullable=False),
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
    Column("orderid", String(255), primary_key=True),
    Column("sku", String(255), primary_key=True),
    Column("qty", Integer, primary_key=True, autoincrement=False),
    Column("batchref", String(255), nullable=False),
    Column("version", Integer, nullable=False, server_default="0"),
    Column("allocated", Boolean, nullable=False, server_default=true()),
)


def start_mappers() -> None:
    """Map the domain classes; calling it again is harmless."""
    if mapper_registry.mappers:
        return
    mapper_registry.map_imperatively(model.OrderLine, allocations)
    mapper_registry.map_imperatively(
        model.Batch,
        batches,
        properties={
            "_purchased_quantity": batches.c.purchased_quantity,
            "_allocations": relationship(
                model.OrderLine,
                collection_class=set,
                cascade="all, delete-orphan",
                lazy="selectin",
                passive_deletes=True,
            ),
        },
    )
    mapper_registry.map_imperatively(
        model.Product,
        products,
        properties={
            "batches": relationship(
                model.Batch,
                lazy="selectin",
                order_by=batches.c.id,
            ),
        },
        # The domain bumps version_number itself; the mapper adds "WHERE
        # version_number = <the value loaded>" to every UPDATE, so a concurrent
        # writer makes the flush fail instead of silently losing an update.
        version_id_col=products.c.version_number,
        version_id_generator=False,
    )
    mapper_registry.map_imperatively(
        users.User,
        users_table,
        version_id_col=users_table.c.version_number,
        version_id_generator=False,
    )
    # Loading bypasses __init__, so the aggregates' event lists are created here.
    event.listen(model.Product, "load", _give_empty_event_list)
    event.listen(users.User, "load", _give_empty_event_list)


def mapped_attribute(cls: type, name: str) -> QueryableAttribute[Any]:
    """The ORM attribute ``cls.name``, for loader options (mypy sees plain fields)."""
    attribute: QueryableAttribute[Any] = inspect(cls).attrs[name].class_attribute
    return attribute


def _give_empty_event_list(aggregate: model.Product | users.User, _: object) -> None:
    aggregate.events = []
