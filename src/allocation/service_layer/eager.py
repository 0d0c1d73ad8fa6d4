"""Run coroutines concurrently, creating a task only for those that suspend (AnyIO).

Most event handlers finish without ever waiting (a fake, a log line, an in-memory
update); a task group with one task per handler would cost them more than the work.
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Generator


async def run_concurrently(
    starters: list[Callable[[], Coroutine[Any, Any, None]]],
) -> None:
    """Run every coroutine to completion, concurrently, with eager start.

    Each one is stepped in the caller until its first suspension. One that finishes
    without suspending needed no task at all. The first one that suspends stays
    hosted by the caller (so the cancel scopes it entered belong to this task, as
    they must) and every one after it gets a real task. Each runs in its own copy of
    the context, exactly as a task would. The task group is opened first, so a
    hosted coroutine's cancel scopes nest inside it.
    """
    if len(starters) == 1:
        await _in_own_context(starters[0]())
        return
    async with anyio.create_task_group() as task_group:
        hosted: _Hosted | None = None
        for start in starters:
            if hosted is not None:
                task_group.start_soon(start)
                continue
            coroutine = start()
            context = contextvars.copy_context()
            try:
                yielded = context.run(coroutine.send, None)
            except StopIteration:
                continue
            hosted = _Hosted(coroutine, yielded, context)
        if hosted is not None:
            await hosted


async def _in_own_context(coroutine: Coroutine[Any, Any, None]) -> None:
    context = contextvars.copy_context()
    try:
        yielded = context.run(coroutine.send, None)
    except StopIteration:
        return
    await _Hosted(coroutine, yielded, context)


class _Hosted:
    """Awaitable that goes on driving a coroutine the caller already started.

    It forwards what the coroutine yields to the event loop and what the loop sends
    or throws back, running every step in the coroutine's own context.
    """

    __slots__ = ("_context", "_coroutine", "_first")

    def __init__(
        self,
        coroutine: Coroutine[Any, Any, None],
        first: Any,
        context: contextvars.Context,
    ) -> None:
        self._coroutine = coroutine
        self._first = first
        self._context = context

    def __await__(self) -> Generator[Any, Any, None]:
        coroutine, context, outgoing = self._coroutine, self._context, self._first
        while True:
            try:
                incoming = yield outgoing
            except BaseException as thrown:  # noqa: BLE001 - thrown into the coroutine
                try:
                    outgoing = context.run(coroutine.throw, thrown)
                except StopIteration:
                    return
            else:
                try:
                    outgoing = context.run(coroutine.send, incoming)
                except StopIteration:
                    return
