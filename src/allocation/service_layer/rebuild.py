"""Replay: rebuild a read model from the log beside the live one, compare, swap.

The rebuild goes to a shadow table, batch by batch, while the live read model
keeps answering; the last events are applied with every append held back, the
two are compared, and the shadow replaces the live rows in that same transaction.
A dry run only reports the difference.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from allocation.service_layer import projections as projections_module
from allocation.service_layer.exceptions import SubscriberBusy, UnknownSubscriber

if TYPE_CHECKING:
    from collections.abc import Callable

    from allocation.service_layer.messagebus import MessageBus
    from allocation.service_layer.projections import Projection
    from allocation.service_layer.unit_of_work import AbstractUnitOfWork


@dataclasses.dataclass(frozen=True, slots=True)
class Replayed:
    """What a replay did.

    Attributes:
        name: the projection.
        applied: events applied to the rebuild.
        differences: how the live read model differed from the rebuild, one line
            per row (the first few), empty when they agreed.
        swapped: whether the rebuild replaced the live rows (not on a dry run).
    """

    name: str
    applied: int
    differences: list[str]
    swapped: bool


async def replay(
    bus: MessageBus,
    name: str,
    *,
    batch_size: int = 1000,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Replayed:
    """Rebuild the projection ``name`` from the whole log into its shadow table,
    compare it with the live one and, unless ``dry_run``, swap it in atomically.

    Interrupted, it can simply be run again: the live read model is untouched
    until the swap. ``progress(position, last)`` is called as batches finish.

    Raises:
        UnknownSubscriber: no projection has that name.
        SubscriberBusy: another process is replaying or catching it up.
    """
    projection = bus.projections.get(name)
    if projection is None:
        raise UnknownSubscriber(name, known=sorted(bus.projections))
    async with bus.locks.hold(name) as held:
        if not held:
            raise SubscriberBusy(name)
        async with bus.uow_factory() as uow:
            await uow.use_shadow(projection, empty=True)
            head = await uow.event_log.last_position()
            await uow.commit()
        if progress is not None:
            progress(0, head)
        position, applied = 0, 0
        while position < head:
            async with bus.uow_factory() as uow:
                reached, count = await _apply_batch(
                    uow, projection, position, batch_size, up_to=head
                )
                await uow.commit()
            position, applied = reached, applied + count
            if progress is not None:
                progress(position, head)
        async with bus.uow_factory() as uow:
            # Nothing may commit between the last read and the swap.
            await uow.event_log.lock_log()
            await uow.use_shadow(projection)
            while True:
                reached, count = await _apply_batch(
                    uow, projection, position, batch_size, up_to=None
                )
                applied += count
                if reached == position:
                    break
                position = reached
            rebuilt = projection.reader(uow)
            uow.restore_live_views()
            differences = await projections_module.compare_rows(
                name,
                stored=projection.reader(uow),
                replayed=rebuilt,
                columns=projection.columns,
                key_size=projection.key_size,
                page_size=batch_size,
            )
            if dry_run:
                await uow.drop_shadow(projection)
            else:
                await uow.swap_in_shadow(projection)
                await uow.event_log.forget(name)
                await uow.event_log.set_checkpoint(
                    name, max(position, await uow.event_log.last_position())
                )
            await uow.commit()
    return Replayed(name, applied, differences, swapped=not dry_run)


async def _apply_batch(
    uow: AbstractUnitOfWork,
    projection: Projection,
    after: int,
    batch_size: int,
    *,
    up_to: int | None,
) -> tuple[int, int]:
    """Apply the projection's next events past ``after`` to its shadow; return
    the position reached and how many were applied."""
    batch = await uow.event_log.read_events(
        after=after, names=projection.event_names, limit=batch_size
    )
    if up_to is not None:
        batch = [(position, event) for position, event in batch if position <= up_to]
    if batch:
        await uow.use_shadow(projection)
        await projection.apply_many([event for _, event in batch], uow)
    if len(batch) == batch_size:
        return batch[-1][0], len(batch)
    # Fewer than asked: nothing more of its names up to the end (or to ``up_to``).
    end = up_to if up_to is not None else await uow.event_log.last_position()
    return max(end, after), len(batch)
