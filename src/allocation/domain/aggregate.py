"""What every aggregate shares: its state is the fold of its own events.

A command method checks the rules, builds an event and records it; recording applies
the event through the aggregate's apply step for that event type, the one place where
state changes. So replaying the recorded events through the same steps rebuilds the
aggregate exactly, and a snapshot is that state as plain data.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar

from allocation.domain.exceptions import EventNotApplicable, EventOutOfSequence

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from allocation.domain.events import Event

    # Each step takes its own event type; the mapping holds them all, so it cannot
    # say which: `applies` checks each step against its event type instead.
    _ApplyStep = Callable[[Any, Any], None]

_AggregateT = TypeVar("_AggregateT", bound="Aggregate")
_EventT = TypeVar("_EventT", bound="Event")
_APPLIES_TO = "_applies_to"


def applies(
    event_type: type[_EventT],
) -> Callable[
    [Callable[[_AggregateT, _EventT], None]], Callable[[_AggregateT, _EventT], None]
]:
    """Mark a method as its aggregate's apply step for ``event_type``.

    The class collects its marked methods when it is created; a step trusts its
    event, which was checked when it was recorded or validated when it was decoded.
    """

    def mark(
        step: Callable[[_AggregateT, _EventT], None],
    ) -> Callable[[_AggregateT, _EventT], None]:
        step.__dict__[_APPLIES_TO] = event_type
        return step

    return mark


class Aggregate(abc.ABC):
    """Base of Product and User.

    Every recorded event raises ``version_number`` by one, so an aggregate's events
    are numbered 1, 2, 3, ... in the event log, and two writers of the same version
    cannot both commit (optimistic concurrency).

    Attributes:
        AGGREGATE_TYPE: the stream's type in the event log; never changes.
        SNAPSHOT_VERSION: the shape of ``snapshot_state()``; raise it when the shape
            changes, so snapshots of the older shape are rebuilt from events.
        version_number: how many events made this state.
        events: events recorded (and applied) since the aggregate was loaded,
            not saved yet.
    """

    AGGREGATE_TYPE: ClassVar[str]
    SNAPSHOT_VERSION: ClassVar[int] = 1
    _APPLY_STEPS: ClassVar[Mapping[type[Event], _ApplyStep]] = {}
    version_number: int
    events: list[Event]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own: dict[type[Event], _ApplyStep] = {}
        for name, member in vars(cls).items():
            event_type = getattr(member, _APPLIES_TO, None)
            if event_type is None:
                continue
            if event_type in own:
                raise TypeError(
                    f"{cls.__name__}.{name}: a second step for {event_type}"
                )
            own[event_type] = member
        # A subclass keeps its base's steps unless it marks its own.
        cls._APPLY_STEPS = {**cls._APPLY_STEPS, **own}

    @property
    @abc.abstractmethod
    def aggregate_id(self) -> str:
        """The identity of this aggregate within its type."""

    @classmethod
    @abc.abstractmethod
    def blank(cls, aggregate_id: str) -> Self:
        """The aggregate before its first event: version 0, nothing recorded."""

    @abc.abstractmethod
    def snapshot_state(self) -> dict[str, Any]:
        """The whole state as JSON-ready plain data, in a deterministic order.

        Text, whole numbers, None, lists and dicts only (dates as ISO text); what
        ``from_snapshot`` restores exactly. The version is not part of it.
        """

    @classmethod
    @abc.abstractmethod
    def from_snapshot(
        cls, aggregate_id: str, version: int, state: Mapping[str, Any]
    ) -> Self:
        """The aggregate ``snapshot_state()`` described, at ``version``.

        Raises:
            InvalidSnapshot: ``state`` is not of this class's snapshot shape.
        """

    @classmethod
    def event_types(cls) -> frozenset[type[Event]]:
        """The event types this aggregate has an apply step for."""
        return frozenset(cls._APPLY_STEPS)

    @classmethod
    def replayed(
        cls, aggregate_id: str, events: Iterable[Event], *, start: Self | None = None
    ) -> Self:
        """Fold ``events`` onto ``start`` (by default the blank aggregate).

        ``start`` (a snapshot, or an aggregate folded so far) is folded in place and
        returned; it must hold no unsaved events. The result has no ``events`` and
        is at ``start``'s version plus one per event.

        A baseline event (``BASELINE``: a state imported from before the log)
        may start a stream at any version: it stands for the events before it.

        Raises:
            EventOutOfSequence: an event stamped with its ``aggregate_version`` (as
                every logged event is) is not the next version.
            EventNotApplicable: an event this aggregate cannot apply, or a
                baseline after the first event.
        """
        if start is None:
            aggregate = cls.blank(aggregate_id)
        elif start.events:
            raise ValueError(
                f"cannot replay onto {start!r}: it holds events not saved yet"
            )
        else:
            aggregate = start
        for event in events:
            expected = aggregate.version_number + 1
            stamped = event.aggregate_version
            if event.BASELINE:
                if aggregate.version_number:
                    raise EventNotApplicable(
                        cls.AGGREGATE_TYPE, event.TYPE, "a baseline starts its stream"
                    )
                # It stands for the events before it, which the log never held.
                expected = stamped or expected
            if stamped is not None and stamped != expected:
                raise EventOutOfSequence(
                    cls.AGGREGATE_TYPE, aggregate_id, expected=expected, found=stamped
                )
            aggregate.apply(event)
            aggregate.version_number = expected
        return aggregate

    def apply(self, event: Event) -> None:
        """Change the state as ``event`` says (the version is the caller's).

        Raises:
            EventNotApplicable: this aggregate has no apply step for the event's
                type, or the event does not fit the state.
        """
        step = self._APPLY_STEPS.get(type(event))
        if step is None:
            raise EventNotApplicable(self.AGGREGATE_TYPE, event.TYPE)
        step(self, event)

    def _record(self, event: Event) -> None:
        """Apply a new event and keep it until it is saved."""
        self.apply(event)
        self.version_number += 1
        self.events.append(event)
