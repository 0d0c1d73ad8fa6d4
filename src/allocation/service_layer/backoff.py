"""Back-off for background loops that lose a dependency (broker, database) for a while."""

from __future__ import annotations

from typing import TYPE_CHECKING

from allocation.domain.exceptions import AllocationError
from allocation.service_layer.masking import mask_secrets

if TYPE_CHECKING:
    import logging


class Outage:
    """Doubles the wait while something is down; logs one line each way, not per retry.

    The line that says it paused says why: our own errors by their message (they
    are written for the user), anything else by its type and message, with its
    traceback attached for ``-v`` (nobody foresaw it, so the line alone is not enough).
    """

    def __init__(
        self, logger: logging.Logger, what: str, *, first: float, longest: float
    ) -> None:
        self._logger = logger
        self._what = what
        self._first = first
        self._longest = longest
        self._wait = first
        self._down = False

    def failed(self, error: Exception) -> float:
        """Record a failure; return how long to wait before the next try."""
        if not self._down:
            self._down = True
            foreseen = isinstance(error, AllocationError)
            reason = str(error) if foreseen else f"{type(error).__name__}: {error}"
            # Ours mask their URLs already; any other error's text may quote one.
            self._logger.warning(
                "%s paused, will retry: %s",
                self._what,
                mask_secrets(reason),
                exc_info=None if foreseen else error,
            )
        self._wait = min(self._wait * 2, self._longest)
        return self._wait

    def succeeded(self) -> None:
        """Record a success; the first one after an outage says so."""
        if self._down:
            self._down = False
            self._wait = self._first
            self._logger.warning("%s resumed", self._what)
