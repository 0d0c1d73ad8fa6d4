"""The console port: the service lines of the article ([User Service], [Log Service])."""

from __future__ import annotations

import os
import sys

from allocation.service_layer.channels import AbstractConsole


class StdoutConsole(AbstractConsole):
    """Writes each line to standard output, flushed at once so the order is kept.

    The lines are a display, not the work: once the reader of a pipe has gone
    (``allocation demo | head -n 1``), later lines are dropped instead of failing
    the handlers that write them.
    """

    def __init__(self) -> None:
        self._reader_gone = False

    def write(self, line: str) -> None:
        if self._reader_gone:
            return
        try:
            print(line, file=sys.stdout, flush=True)
        except BrokenPipeError:
            self._reader_gone = True
            # Point stdout at /dev/null so the interpreter's final flush is quiet too.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
