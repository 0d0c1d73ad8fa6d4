"""Imperative mapping of the domain classes onto tables; the domain never imports this."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Column,
    Date,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    event,
    inspect,
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
)

# Read model kept by event handlers (CQRS): one row per allocated order line.
allocations_view = Table(
    "allocations_view",
    metadata,
    Column("orderid", String(255), primary_key=True),
    Column("sku", String(255), primary_key=True),
    Column("batchref", String(255), nullable=False),
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
    mapper_registry.map_imperatively(users.User, users_table)
    # Loading bypasses __init__, so the aggregates' event lists are created here.
    event.listen(model.Product, "load", _give_empty_event_list)
    event.listen(users.User, "load", _give_empty_event_list)


def mapped_attribute(cls: type, name: str) -> QueryableAttribute[Any]:
    """The ORM attribute ``cls.name``, for loader options (mypy sees plain fields)."""
    attribute: QueryableAttribute[Any] = inspect(cls).attrs[name].class_attribute
    return attribute


def _give_empty_event_list(aggregate: model.Product | users.User, _: object) -> None:
    aggregate.events = []
