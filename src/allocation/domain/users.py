"""The users domain of the article: a user is registered once per email address."""

from __future__ import annotations

from allocation.domain import events, values
from allocation.domain.aggregate import Aggregate


class User(Aggregate):
    """The user aggregate; identity is ``id``, uniqueness is the normalised email."""

    AGGREGATE_TYPE = "user"

    def __init__(
        self,
        id: str,
        name: str,
        email: str,
        version_number: int = 0,
        *,
        as_stored: bool = False,
    ) -> None:
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
    def restored(cls, id: str, name: str, email: str, version_number: int) -> User:
        """A stored user exactly as stored, not normalised again: a row changed
        behind the application's back must look changed (``verify`` compares it
        with the log), not be quietly mended on every load."""
        return cls(id, name, email, version_number, as_stored=True)

    @classmethod
    def register(cls, id: str, name: str, email: str) -> User:
        """Create a user and record UserRegistered."""
        user = cls(id, name, email)
        user._record(
            events.UserRegistered(user_id=user.id, name=user.name, email=user.email)
        )
        return user
