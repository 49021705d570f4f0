"""Progress of long work as plain lines that read well in a log file (DVC's, CI's).

``evaluate@fusion: MC dropout test 320/1131 images (28%), 41 s`` about every tenth of the
work, or every ``interval`` seconds when tenths come slowly, and always at the end; never a
carriage-return bar.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cxr.validation import check_int, check_number


def printer(line: str) -> None:
    """print, flushed at once: a log file shows progress while the work runs."""
    print(line, flush=True)


class Progress:
    """Counts work done and reports it through ``sink`` (default: :func:`printer`).

    ``advance(n)`` adds n units; a line is written when the count crosses the next tenth of
    ``total`` (so once on reaching it), or when ``interval`` seconds have passed since the
    last line. ``advance(0)`` writes nothing; ``sink=None`` is silent.
    """

    def __init__(self, label: str, total: int, unit: str = "images",
                 sink: Callable[[str], None] | None = printer, interval: float = 30.0,
                 clock: Callable[[], float] = time.perf_counter):
        self.label, self.unit, self.sink, self.clock = label, unit, sink, clock
        self.total = check_int(total, "total", min_val=0)
        self.interval = check_number(interval, "interval", min_val=0)
        self.done, self.started = 0, clock()
        self._last_line, self._next_tenth = self.started, 1

    def advance(self, count: int = 1) -> None:
        count = int(count)
        self.done += max(count, 0)
        if count <= 0 or self.sink is None:
            return
        now = self.clock()
        tenth = 10 * min(self.done, self.total) // self.total if self.total else 10
        if tenth >= self._next_tenth or now - self._last_line >= self.interval:
            share = f" ({self.done / self.total:.0%})" if self.total else ""
            self.sink(f"{self.label} {self.done}/{self.total} {self.unit}{share}, "
                      f"{now - self.started:.0f} s")
            self._last_line, self._next_tenth = now, max(self._next_tenth, tenth + 1)
