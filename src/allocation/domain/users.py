"""The users domain of the article: a user is registered once per email address."""

from __future__ import annotations

import re

from allocation.domain import events, exceptions
from allocation.domain.aggregate import Aggregate

_MAX_NAME = 200
_MAX_EMAIL = 254
# Deliberately modest: one @, no spaces, a dot in the domain. Real deliverability is
# proven only by sending, so anything stricter rejects valid addresses.
_EMAIL_SHAPE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")


def normalise_email(email: str) -> str:
    """Return ``email`` trimmed and lower-cased, or raise InvalidEmail."""
    if not isinstance(email, str):
        raise exceptions.InvalidEmail(repr(email))
    normalised = email.strip().lower()
    if len(normalised) > _MAX_EMAIL or not _EMAIL_SHAPE.fullmatch(normalised):
        raise exceptions.InvalidEmail(email)
    return normalised


def check_name(name: str) -> str:
    """Return ``name`` trimmed, or raise InvalidName when it is blank or too long."""
    stripped = name.strip() if isinstance(name, str) else ""
    if not stripped or len(stripped) > _MAX_NAME:
        raise exceptions.InvalidName(str(name))
    return stripped


class User(Aggregate):
    """The user aggregate; identity is ``id``, uniqueness is the normalised email."""

    AGGREGATE_TYPE = "user"

    def __init__(self, id: str, name: str, email: str, version_number: int = 0) -> None:
        self.id = id
        self.name = check_name(name)
        self.email = normalise_email(email)
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
    def register(cls, id: str, name: str, email: str) -> User:
        """Create a user and record UserRegistered."""
        user = cls(id, name, email)
        user._record(
            events.UserRegistered(user_id=user.id, name=user.name, email=user.email)
        )
        return user
