"""How the command line shows log records: one masked line each, tracebacks on -v."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

from allocation.service_layer.masking import mask_secrets

if TYPE_CHECKING:
    from types import TracebackType

_FORMAT = "%(levelname)s %(name)s: %(message)s"


class MaskingFormatter(logging.Formatter):
    """Masks every URL's password in the whole record, traceback included.

    Without ``tracebacks`` a record logged with its exception (a handler that gave
    up, a failed pass of a background loop) stays its one line: the traceback
    belongs to ``-v``, not to a user's terminal.
    """

    def __init__(self, *, tracebacks: bool) -> None:
        super().__init__(_FORMAT)
        self._tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))

    def formatException(
        self,
        ei: tuple[type[BaseException], BaseException, TracebackType | None]
        | tuple[None, None, None],
    ) -> str:
        return super().formatException(ei) if self._tracebacks else ""

    def formatStack(self, stack_info: str) -> str:
        return super().formatStack(stack_info) if self._tracebacks else ""


def configure(*, verbose: bool) -> None:
    """Log WARNING and above to stderr (INFO and tracebacks too when ``verbose``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(MaskingFormatter(tracebacks=verbose))
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, handlers=[handler]
    )
