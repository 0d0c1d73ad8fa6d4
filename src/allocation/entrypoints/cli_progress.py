"""Progress bars on a terminal for the long event-log commands, drawn by rich."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from rich.progress import Task, TaskID


class _RateColumn(ProgressColumn):
    """Log positions gone through per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None and task.completed and task.elapsed:
            # rich's estimate needs two batches: until then, the average so far.
            speed = task.completed / task.elapsed
        shown = "?" if speed is None else f"{speed:,.0f}"
        return Text(f"{shown} positions/s", style="progress.data.speed")


@contextlib.contextmanager
def bars(verb: str) -> Iterator[Callable[[str, int, int], None]]:
    """Draw one bar per subscriber on stderr until the block ends.

    Yields ``show(subscriber, position, last)``: the first call for a subscriber
    sets where its bar starts, each later one how far it has got towards ``last``.
    A subscriber with nothing to go through gets no bar.
    """
    started: dict[str, tuple[TaskID, int]] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    ) as progress:

        def show(subscriber: str, position: int, last: int) -> None:
            if subscriber not in started:
                if position >= last:
                    return
                task = progress.add_task(f"{verb} {subscriber}", total=last - position)
                started[subscriber] = (task, position)
            task, start = started[subscriber]
            progress.update(task, completed=position - start, total=last - start)

        yield show
