"""The User aggregate of the article: registration, email and name rules."""

from __future__ import annotations

import re
import uuid

import pytest

from allocation.domain import events, exceptions, users, values


def new_id() -> str:
    return str(uuid.uuid4())


def test_register_records_user_registered() -> None:
    user_id = new_id()

    user = users.User.register(user_id, "Alice", "alice@example.com")

    assert user.events == [
        events.UserRegistered(user_id=user_id, name="Alice", email="alice@example.com")
    ]


def test_register_normalises_the_email() -> None:
    user = users.User.register(new_id(), "Alice", "  Alice@Example.COM \n")

    assert user.email == "alice@example.com"


def test_user_registered_carries_the_normalised_email() -> None:
    user = users.User.register(new_id(), "Alice", " ALICE@example.com")

    [event] = user.events
    assert isinstance(event, events.UserRegistered)
    assert event.email == "alice@example.com"


def test_register_trims_the_name() -> None:
    user = users.User.register(new_id(), "  Alice  ", "alice@example.com")

    assert user.name == "Alice"


def test_a_user_built_without_register_records_nothing() -> None:
    user = users.User(new_id(), "Alice", "alice@example.com")

    assert user.events == []


def test_users_are_equal_by_id() -> None:
    user_id = new_id()

    first = users.User(user_id, "Alice", "alice@example.com")
    second = users.User(user_id, "Alicia", "alicia@example.com")

    assert first == second
    assert first != users.User(new_id(), "Alice", "alice@example.com")


@pytest.mark.parametrize(
    "email",
    [
        "alice.example.com",  # no @
        "alice@@example.com",  # two @
        "ali ce@example.com",  # space inside
        "alice@exam ple.com",  # space in the domain
        "alice@example",  # no dot in the domain
        "alice@example.",  # nothing after the dot
        "@example.com",  # no local part
        "",  # empty
        "   ",  # blank
        "a" * 250 + "@example.com",  # longer than 254 characters
    ],
)
def test_invalid_email_raises_invalid_email(email: str) -> None:
    with pytest.raises(exceptions.InvalidEmail, match=re.escape(repr(email)[:40])):
        users.User.register(new_id(), "Alice", email)


@pytest.mark.parametrize("email", [None, 42, b"alice@example.com"])
def test_non_string_email_raises_invalid_email(email: object) -> None:
    with pytest.raises(exceptions.InvalidEmail, match=re.escape(repr(email)[:40])):
        users.User.register(new_id(), "Alice", email)  # type: ignore[arg-type]  # bad input on purpose


@pytest.mark.parametrize(
    "email", ["alice@example.com", "a.b+tag@mail.example.org", "x@y.io"]
)
def test_ordinary_emails_are_accepted(email: str) -> None:
    assert values.normalise_email(email) == email


@pytest.mark.parametrize("name", ["", "   ", "\t\n", "x" * 201])
def test_blank_or_too_long_name_raises_invalid_name(name: str) -> None:
    with pytest.raises(exceptions.InvalidName, match=re.escape(repr(name)[:40])):
        users.User.register(new_id(), name, "alice@example.com")


def test_name_of_200_characters_is_accepted() -> None:
    user = users.User.register(new_id(), "x" * 200, "alice@example.com")

    assert user.name == "x" * 200


@pytest.mark.parametrize("name", [None, 7])
def test_non_string_name_raises_invalid_name(name: object) -> None:
    with pytest.raises(exceptions.InvalidName):
        users.User.register(new_id(), name, "alice@example.com")  # type: ignore[arg-type]  # bad input on purpose


def test_invalid_email_keeps_the_offending_value() -> None:
    with pytest.raises(exceptions.InvalidEmail) as caught:
        users.User.register(new_id(), "Alice", "not-an-email")

    assert caught.value.email == "not-an-email"


def test_register_builds_the_user_by_applying_user_registered() -> None:
    user = users.User.register(new_id(), " Alice ", "Alice@Example.com")

    replayed = users.User.replayed(user.id, user.events)

    assert (replayed.name, replayed.email, replayed.version_number) == (
        "Alice",
        "alice@example.com",
        1,
    )
    assert replayed.snapshot_state() == user.snapshot_state()


def test_a_blank_user_has_no_name_email_or_version() -> None:
    user = users.User.blank("u-1")

    assert (user.id, user.name, user.email, user.version_number) == ("u-1", "", "", 0)
    assert user.events == []


def test_a_restored_user_keeps_the_email_as_stored() -> None:
    """verify must see a stored email whose case was changed behind our back."""
    user = users.User.restored("u-1", "Ann", "ANN@example.com", 1)

    assert user.snapshot_state() == {"name": "Ann", "email": "ANN@example.com"}
