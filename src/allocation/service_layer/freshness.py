"""Read-your-writes: has a read model taken in every event up to a log position?

A command's answer carries the log position its events reached. A query given that
position waits, bounded, until the read model it reads holds those events: an inline
projection as soon as the position is committed, an asynchronous one once it has
handled every event of its names up to there (the fast path after the commit, or
catch-up).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import anyio

from allocation.domain.exceptions import AllocationError

if TYPE_CHECKING:
    from allocation.service_layer.messagebus import MessageBus
    from allocation.service_layer.projections import Projection

# Past its checkpoint, at most this many events of a projection's names are looked
# at: further behind than that, catch-up moves the checkpoint before it is worth
# checking event by event.
LOOK_AHEAD = 1000
# Polling starts fast (the fast path usually lands within milliseconds) and slows
# down to this.
_FIRST_PAUSE = 0.005
_LONGEST_PAUSE = 0.1


class PositionNotInLog(AllocationError):
    """Raised when a position to wait for is past the log's newest event.

    A command's answer names a committed position, so waiting could only help a
    position that no answer gave.
    """

    def __init__(self, position: int, head: int) -> None:
        self.position = position
        self.head = head
        super().__init__(
            f"log position {position} is past the newest event ({head}): no command"
            " answered with it"
        )


async def reached(bus: MessageBus, projection: Projection, position: int) -> bool:
    """Whether ``projection``'s read model holds every event up to ``position``.

    Raises:
        PositionNotInLog: ``position`` is past the newest event.
    """
    async with bus.uow_factory() as uow:
        store = uow.event_log
        await store.read_one_snapshot()
        # Positions are handed out in commit order: a head at or past the position
        # means every event up to it is committed and visible.
        head = await store.last_position()
        if head < position:
            raise PositionNotInLog(position, head)
        if projection.inline:
            return True
        checkpoint = await store.checkpoint(projection.name) or 0
        if checkpoint >= position:
            return True
        batch = await store.read(
            after=checkpoint, names=projection.event_names, limit=LOOK_AHEAD
        )
        wanted = [
            logged.event.message_id for logged in batch if logged.position <= position
        ]
        if len(batch) == LOOK_AHEAD and batch[-1].position < position:
            return False
        if not wanted:
            return True
        handled = await store.processed_among(projection.name, wanted)
    return len(handled) == len(wanted)


async def wait_until_reached(
    bus: MessageBus, projection: Projection, position: int, *, within: float
) -> bool:
    """Wait up to ``within`` seconds for :func:`reached`; True once it holds."""
    pause = _FIRST_PAUSE
    with anyio.move_on_after(within if math.isfinite(within) else None):
        while True:
            if await reached(bus, projection, position):
                return True
            await anyio.sleep(pause)
            pause = min(pause * 2, _LONGEST_PAUSE)
    return False
