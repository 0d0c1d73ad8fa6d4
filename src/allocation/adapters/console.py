"""The console port: the service lines of the article ([User Service], [Log Service])."""

from __future__ import annotations

import abc
import sys


class AbstractConsole(abc.ABC):
    """Port for human-readable progress lines."""

    @abc.abstractmethod
    def write(self, line: str) -> None:
        """Show one line."""


class StdoutConsole(AbstractConsole):
    """Writes each line to standard output, flushed at once so the order is kept."""

    def write(self, line: str) -> None:
        print(line, file=sys.stdout, flush=True)
