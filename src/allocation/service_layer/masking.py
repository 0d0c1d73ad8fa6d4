"""Passwords out of every line we print or log: URLs masked, parseable or not.

A URL's password (``scheme://user:PASSWORD@host``) and its secret query parameters
(``?password=...``) become ``***``. The rules do not need the URL to parse: a
password holding an unencoded ``@``, ``:``, ``/`` or ``%`` is still masked whole,
because the userinfo is taken to end at the last ``@``. Where that guess is wrong (an
``@`` in a path or query) more is masked than needed, never less.
"""

from __future__ import annotations

import re

MASK = "***"

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
# A URL in running text: a scheme and everything up to the next whitespace.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://\S+")
# ``?password=...`` in a URL, ``password=...`` in text: up to the next parameter.
_SECRET_PARAMETER = re.compile(
    r"(?i)([\w.\-]*(?:password|passwd|pwd|secret|token)=)[^&#\s]*"
)


def mask_url(url: str) -> str:
    """``url`` with its password and secret query parameters replaced by ``***``.

    The whole of ``url`` is taken as one URL, so a password holding spaces is masked
    too; text that is no URL comes back unchanged.
    """
    scheme = _SCHEME.match(url)
    start = scheme.end() if scheme else 0
    rest = url[start:]
    at = rest.rfind("@")
    if at != -1:
        userinfo = rest[:at]
        colon = userinfo.find(":")
        # A slash before the colon means a path (sqlite:////tmp/a:b@c.db), not a
        # user name.
        if colon != -1 and "/" not in userinfo[:colon]:
            rest = f"{userinfo[: colon + 1]}{MASK}{rest[at:]}"
    return _SECRET_PARAMETER.sub(rf"\g<1>{MASK}", url[:start] + rest)


def mask_secrets(text: str, *urls: str) -> str:
    """``text`` with every URL in it masked; ``urls`` are known to be in it whole.

    Masking a known URL first covers what no pattern can: a password with spaces.
    """
    for url in urls:
        if url:
            text = text.replace(url, mask_url(url))
    text = _URL_IN_TEXT.sub(lambda match: mask_url(match.group()), text)
    return _SECRET_PARAMETER.sub(rf"\g<1>{MASK}", text)
