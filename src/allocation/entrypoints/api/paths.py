"""Path parameters that are identifiers: any text but none, "/" included.

A batch reference, order id or user id may hold "/" (a body takes it), and a
client sends it as %2F, which the server decodes before routing: the default
parameter stops at "/" and would make such an id unreachable. Starlette's
``path`` converter takes the empty text too, which would turn ``POST /batches/``
into a 405 of ``PATCH /batches/{ref}`` rather than the 404 it is.
"""

from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor

# Use as "/batches/{ref:" + IDENTIFIER + "}".
IDENTIFIER = "identifier"


class _Identifier(Convertor[str]):
    regex = ".+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


# Starlette looks converters up by name when a route is declared, so the route
# modules import this one first.
register_url_convertor(IDENTIFIER, _Identifier())
