"""Repositories: aggregates loaded from their events, saved by appending new ones.

A repository reads an aggregate's latest snapshot and the events after it from the
event store, and folds them with the aggregate's own apply steps. It remembers what
it handed out (``seen``) so the unit of work can append their new events, and the
claims (unique values) those events make, in the commit's transaction.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, ClassVar, Generic, TypeVar

from allocation.domain import events, model, users, values
from allocation.domain.exceptions import (
    AllocationError,
    BatchAlreadyExists,
    EmailAlreadyRegistered,
)
from allocation.service_layer.ports import Claim, Snapshot

if TYPE_CHECKING:
    from allocation.domain.aggregate import Aggregate
    from allocation.service_layer.ports import AbstractEventStore

logger = logging.getLogger(__name__)

AggregateT = TypeVar("AggregateT", model.Product, users.User)

# Claim kinds: what a claim row's value is.
EMAIL = "email"
BATCH_REFERENCE = "batch"


def snapshot_of(aggregate: Aggregate) -> Snapshot:
    """The aggregate's state now, as a snapshot to store."""
    return Snapshot(
        aggregate_type=aggregate.AGGREGATE_TYPE,
        aggregate_id=aggregate.aggregate_id,
        version=aggregate.version_number,
        schema_version=aggregate.SNAPSHOT_VERSION,
        state_json=json.dumps(
            aggregate.snapshot_state(),
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        ),
    )


class Repository(Generic[AggregateT]):
    """The event-sourced collection of one aggregate type."""

    aggregate_class: ClassVar[type[model.Product | users.User]]

    def __init__(self, store: AbstractEventStore) -> None:
        self._store = store
        # Keyed by identity: two objects with one key would be a bug worth seeing.
        self.seen: dict[int, AggregateT] = {}

    @property
    def aggregate_type(self) -> str:
        return self.aggregate_class.AGGREGATE_TYPE

    def add(self, aggregate: AggregateT) -> None:
        """Stage a new aggregate; its events are appended when the unit of work commits."""
        self.seen[id(aggregate)] = aggregate

    async def get(self, aggregate_id: str) -> AggregateT | None:
        """The aggregate as of now, to change: this unit of work becomes the only
        writer of its stream until it ends."""
        await self._store.lock_stream(self.aggregate_type, aggregate_id)
        aggregate = await self._load(aggregate_id, up_to_version=None)
        if aggregate is not None:
            self.seen[id(aggregate)] = aggregate
        return aggregate

    async def at_version(self, aggregate_id: str, version: int) -> AggregateT | None:
        """The aggregate as it was after its ``version``-th event (to read, not
        change); None if it never existed."""
        return await self._load(aggregate_id, up_to_version=version)

    async def all_ids(self) -> list[str]:
        """Every stored aggregate id of this type, sorted."""
        return await self._store.stream_ids(self.aggregate_type)

    @classmethod
    def claims_of(cls, aggregate_id: str, event: events.Event) -> list[Claim]:
        """The unique values ``event`` makes its aggregate hold (none by default)."""
        return []

    @classmethod
    def claim_taken(cls, claim: Claim) -> AllocationError | None:
        """The domain's error for a claim another aggregate holds, if it has one."""
        return None

    async def _load(
        self, aggregate_id: str, *, up_to_version: int | None
    ) -> AggregateT | None:
        start = await self._snapshot_start(aggregate_id, up_to_version)
        logged = []
        if start is not None:
            # Read from the snapshot's own event: a snapshot past the end of its
            # stream (written wrong, or by hand) must not decide, or the next
            # append would leave a gap in the log.
            logged = await self._store.read_stream(
                self.aggregate_type,
                aggregate_id,
                after_version=start.version_number - 1,
                up_to_version=up_to_version,
            )
            if logged and logged[0].aggregate_version == start.version_number:
                logged = logged[1:]
            else:
                logger.warning(
                    "ignoring the snapshot of %s %s at version %d: its stream"
                    " has no such event",
                    self.aggregate_type,
                    aggregate_id,
                    start.version_number,
                )
                start = None
        if start is None:
            logged = await self._store.read_stream(
                self.aggregate_type, aggregate_id, up_to_version=up_to_version
            )
            if not logged:
                return None
        replayed = self.aggregate_class.replayed(
            aggregate_id,
            (entry.event for entry in logged),
            start=start,  # type: ignore[arg-type]  # an AggregateT of this very class
        )
        return replayed  # type: ignore[return-value]  # the class of AggregateT

    async def _snapshot_start(
        self, aggregate_id: str, up_to_version: int | None
    ) -> AggregateT | None:
        snapshot = await self._store.latest_snapshot(self.aggregate_type, aggregate_id)
        if snapshot is None or snapshot.schema_version != (
            self.aggregate_class.SNAPSHOT_VERSION
        ):
            return None  # none yet, or of an older shape: the events decide
        if up_to_version is not None and snapshot.version > up_to_version:
            return None
        try:
            restored = self.aggregate_class.from_snapshot(
                aggregate_id, snapshot.version, json.loads(snapshot.state_json)
            )
        except (ValueError, TypeError, KeyError, AllocationError) as error:
            # Never trusted over the events: rebuilding costs time, not truth.
            logger.warning(
                "ignoring unreadable snapshot of %s %s at version %d: %s",
                self.aggregate_type,
                aggregate_id,
                snapshot.version,
                error,
            )
            return None
        return restored  # type: ignore[return-value]  # the class of AggregateT


class ProductRepository(Repository[model.Product]):
    """Products by sku, or by the reference of one of their batches."""

    aggregate_class = model.Product

    async def get_by_batchref(self, ref: str) -> model.Product | None:
        sku = await self._store.claim_owner(BATCH_REFERENCE, ref)
        return None if sku is None else await self.get(sku)

    async def all_skus(self) -> list[str]:
        """Every stored sku, sorted (for verification)."""
        return await self.all_ids()

    @classmethod
    def claims_of(cls, aggregate_id: str, event: events.Event) -> list[Claim]:
        if isinstance(event, events.BatchCreated):
            return [Claim(BATCH_REFERENCE, event.ref, aggregate_id)]
        if isinstance(event, events.ProductImported):
            return [
                Claim(BATCH_REFERENCE, batch.ref, aggregate_id)
                for batch in event.batches
            ]
        return []

    @classmethod
    def claim_taken(cls, claim: Claim) -> AllocationError | None:
        return (
            BatchAlreadyExists(claim.value) if claim.kind == BATCH_REFERENCE else None
        )


class UserRepository(Repository[users.User]):
    """Users by id, or by their normalised email."""

    aggregate_class = users.User

    async def get_by_email(self, email: str) -> users.User | None:
        user_id = await self._store.claim_owner(EMAIL, values.normalise_email(email))
        return None if user_id is None else await self.get(user_id)

    @classmethod
    def claims_of(cls, aggregate_id: str, event: events.Event) -> list[Claim]:
        if isinstance(event, events.UserRegistered):
            return [Claim(EMAIL, event.email, aggregate_id)]
        return []

    @classmethod
    def claim_taken(cls, claim: Claim) -> AllocationError | None:
        return EmailAlreadyRegistered(claim.value) if claim.kind == EMAIL else None
