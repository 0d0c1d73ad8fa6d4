"""The users domain of the article: a user is registered once per email address."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self

from allocation.domain import events, values
from allocation.domain.aggregate import Aggregate, applies
from allocation.domain.exceptions import InvalidSnapshot

if TYPE_CHECKING:
    from collections.abc import Mapping


class User(Aggregate):
    """The user aggregate; identity is ``id``, uniqueness is the normalised email.

    A user not registered yet (``blank``) has an empty name and email.
    """

    AGGREGATE_TYPE = "user"
    SNAPSHOT_VERSION = 1

    def __init__(
        self,
        id: str,
        name: str,
        email: str,
        version_number: int = 0,
        *,
        as_stored: bool = False,
    ) -> None:
        # Builds a state no event made; the current SQL repositories and some tests
        # rely on it. Events build a user with ``register`` or ``blank``.
        self.id = id
        self.name = name if as_stored else values.check_name(name)
        self.email = email if as_stored else values.normalise_email(email)
        self.version_number = version_number
        self.events: list[events.Event] = []

    @property
    def aggregate_id(self) -> str:
        return self.id

    def __repr__(self) -> str:
        return f"<User {self.id} {self.email}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, User) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    @classmethod
    def blank(cls, aggregate_id: str) -> Self:
        return cls(aggregate_id, "", "", as_stored=True)

    @classmethod
    def restored(cls, id: str, name: str, email: str, version_number: int) -> Self:
        """A stored user exactly as stored, not normalised again: a row changed
        behind the application's back must look changed (``verify`` compares it
        with the log), not be quietly mended on every load."""
        return cls(id, name, email, version_number, as_stored=True)

    @classmethod
    def register(cls, id: str, name: str, email: str) -> Self:
        """Create a user and record UserRegistered.

        Raises:
            InvalidName, InvalidEmail: the name or the email breaks its rule.
        """
        name = values.check_name(name)
        email = values.normalise_email(email)
        user = cls.blank(id)
        user._record(events.UserRegistered(user_id=id, name=name, email=email))
        return user

    @applies(events.UserRegistered)
    def _apply_user_registered(self, event: events.UserRegistered) -> None:
        self.name = event.name
        self.email = event.email

    def snapshot_state(self) -> dict[str, Any]:
        return {"name": self.name, "email": self.email}

    @classmethod
    def from_snapshot(
        cls, aggregate_id: str, version: int, state: Mapping[str, Any]
    ) -> Self:
        try:
            name, email = state["name"], state["email"]
        except (LookupError, TypeError) as error:
            raise InvalidSnapshot(
                cls.AGGREGATE_TYPE, aggregate_id, repr(error)
            ) from error
        if not isinstance(name, str) or not isinstance(email, str):
            raise InvalidSnapshot(
                cls.AGGREGATE_TYPE, aggregate_id, "name and email must be text"
            )
        return cls(aggregate_id, name, email, version, as_stored=True)
