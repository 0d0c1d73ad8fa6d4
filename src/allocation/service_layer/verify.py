"""Verification: fold the whole log with the domain's own apply steps and compare.

Every state change is an event, so the log alone rebuilds every aggregate: each
stream is folded by its aggregate's ``replayed``, the very apply steps that changed
the aggregate when its commands ran, and compared with what the repository loads
(snapshot state and version). Any difference means a change bypassed the log, or an
event was lost or doubled. The read models are rebuilt by their own projection code
into scratch state in memory (the fakes of ``allocation.testing``, which keep the
same rows as the tables), never by a second statement of their rules, and compared
with the stored ones row by row.
"""

from __future__ import annotations

import collections
import dataclasses
import json
from typing import TYPE_CHECKING

from allocation.domain import events, messages, model, users
from allocation.domain.exceptions import AllocationError, EventOutOfSequence, shorten
from allocation.service_layer import projections as projections_module
from allocation.service_layer import repository

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence

    from allocation.domain.aggregate import Aggregate
    from allocation.service_layer.ports import Claim, LoggedEvent
    from allocation.service_layer.projections import Projection
    from allocation.service_layer.unit_of_work import AbstractUnitOfWork

# Differing rows shown per read model; the rest are counted.
# How much of a differing value an aggregate's line quotes.
_SHOWN_STATE = 200


@dataclasses.dataclass(frozen=True)
class _Kind:
    """One aggregate type: its class, and how the repositories list and load it."""

    aggregate: type[Aggregate]
    stored_ids: Callable[[AbstractUnitOfWork], Awaitable[list[str]]]
    load: Callable[[AbstractUnitOfWork, str], Awaitable[Aggregate | None]]
    claims_of: Callable[[str, events.Event], list[Claim]]


# Every aggregate type by its AGGREGATE_TYPE, the name its streams have in the log.
AGGREGATES: Mapping[str, _Kind] = {
    model.Product.AGGREGATE_TYPE: _Kind(
        model.Product,
        stored_ids=lambda uow: uow.products.all_skus(),
        load=lambda uow, sku: uow.products.get(sku),
        claims_of=repository.ProductRepository.claims_of,
    ),
    users.User.AGGREGATE_TYPE: _Kind(
        users.User,
        stored_ids=lambda uow: uow.users.all_ids(),
        load=lambda uow, user_id: uow.users.get(user_id),
        claims_of=repository.UserRepository.claims_of,
    ),
}


# Events that start a stream whatever their position: a migration appended them
# after the events they precede (see events.ProductImported).
BASELINES = frozenset(
    kind.TYPE
    for kind in messages.message_classes().values()
    if issubclass(kind, events.Event) and kind.BASELINE
)


@dataclasses.dataclass
class _Fold:
    """Every aggregate of the log so far, folded by its own class."""

    # AGGREGATE_TYPE -> aggregate id -> the aggregate folded so far.
    folded: dict[str, dict[str, Aggregate]] = dataclasses.field(default_factory=dict)
    # Streams that could not be folded (reported once, not compared).
    broken: set[tuple[str, str]] = dataclasses.field(default_factory=set)
    # Events of aggregate types the domain has no class for, by type.
    unknown: collections.Counter[str] = dataclasses.field(
        default_factory=collections.Counter
    )
    problems: list[str] = dataclasses.field(default_factory=list)
    # The unique values the folded events claim, by (kind, value): their owner.
    claims: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict)
    # The baselines folded ahead of their streams, by message id.
    folded_first: set[str] = dataclasses.field(default_factory=set)

    def add_baselines(self, batch: Sequence[LoggedEvent]) -> None:
        """Fold baselines first: each starts its stream, but the log holds it
        after the events it precedes."""
        self.add(batch)
        self.folded_first.update(logged.event.message_id for logged in batch)

    def add(self, batch: Sequence[LoggedEvent]) -> None:
        """Fold the next part of the log, stream by stream, in log order."""
        streams: dict[tuple[str, str], list[LoggedEvent]] = {}
        for logged in batch:
            if logged.event.message_id in self.folded_first:
                continue
            key = (logged.aggregate_type, logged.aggregate_id)
            streams.setdefault(key, []).append(logged)
        for (aggregate_type, aggregate_id), stream in streams.items():
            self._fold(aggregate_type, aggregate_id, stream)

    def _fold(
        self, aggregate_type: str, aggregate_id: str, stream: list[LoggedEvent]
    ) -> None:
        kind = AGGREGATES.get(aggregate_type)
        if kind is None:
            self.unknown[aggregate_type] += len(stream)
            return
        if (aggregate_type, aggregate_id) in self.broken:
            return
        of_type = self.folded.setdefault(aggregate_type, {})
        aggregate = of_type.get(aggregate_id)
        if aggregate is None:
            try:
                aggregate = kind.aggregate.blank(aggregate_id)
            except AllocationError as error:  # an id the aggregate refuses
                self._break(aggregate_type, aggregate_id, f"cannot be folded: {error}")
                return
            of_type[aggregate_id] = aggregate
        before = aggregate.version_number
        for logged in stream:
            for claim in kind.claims_of(aggregate_id, logged.event):
                self.claims[claim.kind, claim.value] = claim.owner
        try:
            kind.aggregate.replayed(
                aggregate_id, (logged.event for logged in stream), start=aggregate
            )
        except AllocationError as error:
            # The stream is folded in place up to the event that failed.
            failed = stream[aggregate.version_number - before]
            if isinstance(error, EventOutOfSequence):
                detail = f"has version {error.found}, expected {error.expected}"
            else:
                detail = f"cannot be applied: {error}"
            self._break(
                aggregate_type,
                aggregate_id,
                f"event at position {failed.position} {detail}",
            )

    def _break(self, aggregate_type: str, aggregate_id: str, detail: str) -> None:
        self.broken.add((aggregate_type, aggregate_id))
        self.problems.append(f"{aggregate_type} {aggregate_id}: {detail}")

    def unknown_types(self) -> list[str]:
        return [
            f"aggregate type {shorten(aggregate_type)}: {count} event(s) in the log,"
            " but the domain has no such aggregate to fold them"
            for aggregate_type, count in sorted(self.unknown.items())
        ]


async def verify(
    uow: AbstractUnitOfWork,
    *,
    scratch: AbstractUnitOfWork,
    batch_size: int = 5000,
    projections: Sequence[Projection] = projections_module.PROJECTIONS,
) -> list[str]:
    """Return every difference between the replayed log and the stored state.

    Each stored aggregate is compared with the fold of its events by the domain's
    own apply steps, and each read model with what its projection makes of the
    whole log in ``scratch``: an empty in-memory unit of work
    (``allocation.testing.FakeUnitOfWork``, held to the same read-model contract as
    the SQL adapters), given by the caller so the service layer depends on no
    adapter.
    """
    fold = _Fold()
    async with uow, scratch:
        # Commands may run meanwhile: the log and what it is compared with are
        # read as of one moment.
        await uow.event_log.read_one_snapshot()
        after = 0
        while batch := await uow.event_log.read(
            after=after, names=BASELINES, limit=batch_size
        ):
            fold.add_baselines(batch)
            after = batch[-1].position
        after = 0
        while batch := await uow.event_log.read(after=after, limit=batch_size):
            fold.add(batch)
            await _replay(projections, batch, scratch)
            after = batch[-1].position
        problems = fold.problems + fold.unknown_types()
        for aggregate_type in AGGREGATES:
            problems += await _compare_aggregates(uow, aggregate_type, fold)
        problems += await _compare_claims(uow, fold.claims)
        for projection in projections:
            problems += await projections_module.compare_rows(
                projection.name,
                stored=projection.reader(uow),
                replayed=projection.reader(scratch),
                columns=projection.columns,
                key_size=projection.key_size,
                page_size=batch_size,
            )
    return problems


async def _replay(
    projections: Sequence[Projection],
    batch: Sequence[LoggedEvent],
    scratch: AbstractUnitOfWork,
) -> None:
    """Apply a batch of the log to every projection, as catch-up and replay do."""
    for projection in projections:
        names = projection.event_names
        mine = [logged.event for logged in batch if logged.event.TYPE in names]
        if mine:
            await projection.apply_many(mine, scratch)


async def _compare_aggregates(
    uow: AbstractUnitOfWork, aggregate_type: str, fold: _Fold
) -> list[str]:
    """Each stored aggregate of one type against the fold of its stream."""
    kind = AGGREGATES[aggregate_type]
    folded = fold.folded.get(aggregate_type, {})
    stored_ids = await kind.stored_ids(uow)
    problems = _unstored(aggregate_type, folded, stored_ids)
    for aggregate_id in stored_ids:
        if (aggregate_type, aggregate_id) in fold.broken:
            continue  # reported while folding; it cannot be loaded either
        stored = await kind.load(uow, aggregate_id)
        expected = folded.get(aggregate_id)
        if stored is None or expected is None:
            problems.append(_unlogged(aggregate_type, aggregate_id))
            continue
        where = f"{aggregate_type} {aggregate_id}"
        if stored.version_number != expected.version_number:
            problems.append(
                f"{where}: stored version {stored.version_number}, "
                f"the log's fold gives {expected.version_number}"
            )
        problems += [
            f"{where}: {difference}"
            for difference in _state_differences(
                stored.snapshot_state(), expected.snapshot_state(), ""
            )
        ]
    return problems


async def _compare_claims(
    uow: AbstractUnitOfWork, expected: dict[tuple[str, str], str]
) -> list[str]:
    """The stored claims against those the log's events make: a missing one, one
    held by another aggregate, and one no event made (it would refuse a value
    nobody holds)."""
    stored = {
        (claim.kind, claim.value): claim.owner for claim in await uow.event_log.claims()
    }
    problems = []
    for kind, value in sorted(stored.keys() | expected.keys()):
        held_by, owner = stored.get((kind, value)), expected.get((kind, value))
        if held_by == owner:
            continue
        found = "missing" if held_by is None else f"held by {shorten(held_by)}"
        wanted = "makes no such claim" if owner is None else f"gives {shorten(owner)}"
        problems.append(
            f"claim {kind} {shorten(value)}: {found}; the log's fold {wanted}"
        )
    return problems


def _state_differences(stored: object, folded: object, path: str) -> list[str]:
    """Where two snapshot states differ, one line per differing leaf or list."""
    if stored == folded:
        return []
    if isinstance(stored, dict) and isinstance(folded, dict):
        lines = []
        for name in sorted(stored.keys() | folded.keys(), key=str):
            where = f"{path}[{name!r}]" if path else str(name)
            if name not in stored:
                lines.append(
                    f"{where} missing; the log's fold gives {_shown(folded[name])}"
                )
            elif name not in folded:
                lines.append(
                    f"stored {where}={_shown(stored[name])}; the log's fold has none"
                )
            else:
                lines += _state_differences(stored[name], folded[name], where)
        return lines
    if isinstance(stored, list) and isinstance(folded, list):
        # Snapshot lists are sets in sorted order: name what only one side has.
        have, want = _keyed(stored), _keyed(folded)
        only_stored = [have[key] for key in have.keys() - want.keys()]
        only_folded = [want[key] for key in want.keys() - have.keys()]
        parts = []
        if only_stored:
            extra = _shown(sorted(only_stored, key=repr))
            parts.append(f"holds {extra} the log's fold does not")
        if only_folded:
            missing = _shown(sorted(only_folded, key=repr))
            parts.append(f"lacks {missing} of the log's fold")
        return [f"stored {path} {' and '.join(parts)}"]
    return [f"stored {path}={_shown(stored)}; the log's fold gives {_shown(folded)}"]


def _keyed(items: list[object]) -> dict[str, object]:
    return {json.dumps(item, sort_keys=True, default=str): item for item in items}


def _shown(value: object) -> str:
    return shorten(value, _SHOWN_STATE)


def _unstored(kind: str, folded: Collection[str], stored: Collection[str]) -> list[str]:
    """One problem per aggregate the log knows of and the tables do not."""
    return [
        f"{kind} {key}: in the log but not stored"
        for key in sorted(set(folded) - set(stored))
    ]


def _unlogged(kind: str, key: str) -> str:
    return f"{kind} {key}: stored but has no events in the log"
