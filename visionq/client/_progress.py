"""Progress of a long count (images uploaded, batch lines done): the figures, their text, and
a reporter that draws them on a terminal or writes plain lines to a pipe or log.

The figures and the text are pure functions of (time, done) samples, so they are tested
without a clock or a server; `Reporter` only decides when and how to write them.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TextIO

#: A sample: (seconds on a monotonic clock, units done by then).
Sample = tuple[float, int]

#: The rate is measured over the samples of this many recent seconds: long enough to smooth
#: the steps of a count polled every second or two, short enough to follow a change of pace.
RATE_WINDOW = 30.0
BAR_WIDTH = 24
#: Piped, a line is written at most this often while the count moves (and at once on a
#: change of state), so a log of a day-long batch stays readable.
PLAIN_EVERY = 5.0


def rate(samples: Sequence[Sample], *, window: float = RATE_WINDOW) -> float | None:
    """Units per second between the oldest sample of the last `window` seconds and the
    newest; None until there are two samples apart in time."""
    if len(samples) < 2:
        return None
    end_time, end_done = samples[-1]
    start_time, start_done = next(s for s in samples if s[0] >= end_time - window)
    if (start_time, start_done) == samples[-1]:
        start_time, start_done = samples[-2]
    if end_time <= start_time:
        return None
    return max(0, end_done - start_done) / (end_time - start_time)


def eta(done: int, total: int, per_second: float | None) -> float | None:
    """Seconds left at `per_second`; 0 when nothing is left, None when it cannot be told
    (no total yet, no rate yet, or no progress in the window)."""
    if total > 0 and done >= total:
        return 0.0
    if total <= 0 or not per_second:
        return None
    return (total - done) / per_second


def duration(seconds: float) -> str:
    """`42s`, `3m05s`, `2h07m`: as short as the figure allows."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    """`[##########..............]`: `done` of `total` as a filled share of `width`."""
    filled = 0 if total <= 0 else min(width, done * width // total)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def figures(done: int, total: int, per_second: float | None, unit: str) -> str:
    """`1234/5000 24.7% 41.2 lines/s ETA 1m31s`, leaving out what is not known yet."""
    if total <= 0:
        return f"{done} {unit}"
    parts = [f"{done}/{total}", f"{100 * done / total:.1f}%"]
    if per_second is not None:
        parts.append(f"{per_second:.1f} {unit}/s")
    left = eta(done, total, per_second)
    if left is not None and done < total:
        parts.append(f"ETA {duration(left)}")
    return " ".join(parts)


def tty_line(label: str, done: int, total: int, per_second: float | None, unit: str) -> str:
    """The line redrawn on a terminal: label, bar, figures."""
    if total <= 0:
        return f"{label} {figures(done, total, per_second, unit)}"
    return f"{label} {bar(done, total)} {figures(done, total, per_second, unit)}"


def plain_line(
    label: str, done: int, total: int, per_second: float | None, unit: str, elapsed: float
) -> str:
    """A line of a pipe or log: when, label, figures; no bar, no control characters."""
    return f"[{duration(elapsed):>6}] {label} {figures(done, total, per_second, unit)}"


class Reporter:
    """Draws a count's progress on `stream`: redrawn in place (`\\r`) on a terminal, else
    plain lines: one when the label or total changes or the count reaches the total, and
    at most one per `every` seconds while the count moves. `clock` and `tty` are there for tests."""

    def __init__(
        self,
        stream: TextIO,
        unit: str,
        *,
        tty: bool | None = None,
        every: float = PLAIN_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tty = stream.isatty() if tty is None else tty
        self.unit = unit
        self._stream = stream
        self._every = every
        self._clock = clock
        self._start = clock()
        self._samples: deque[Sample] = deque()
        self._total = 0
        self._drawn = False
        self._last: tuple[str, int, int] | None = None
        self._last_at = float("-inf")

    def update(self, label: str, done: int, total: int) -> None:
        now = self._clock()
        if self._samples and total != self._total:
            self._samples.clear()  # a new count (validated: now the lines): a new rate
        self._total = total
        self._samples.append((now, done))
        while len(self._samples) > 2 and self._samples[1][0] < now - RATE_WINDOW:
            self._samples.popleft()
        per_second = rate(self._samples)
        if self.tty:
            line = tty_line(label, done, total, per_second, self.unit)
            self._stream.write(f"\r\x1b[K{line[: self._columns() - 1]}")
            self._drawn = True
        else:
            state = (label, done, total)
            changed = self._last is None or label != self._last[0] or total != self._last[2]
            moved = self._last is not None and state != self._last
            due = now - self._last_at >= self._every or done >= total > 0
            if not (changed or (moved and due)):
                return
            line = plain_line(label, done, total, per_second, self.unit, now - self._start)
            self._stream.write(line + "\n")
            self._last, self._last_at = state, now
        self._stream.flush()

    def _columns(self) -> int:
        """The terminal's width: a line wider than it would wrap, and `\\r` would then
        redraw only its last part."""
        try:
            return os.get_terminal_size(self._stream.fileno()).columns or 10**6
        except (OSError, ValueError, AttributeError):  # not a real terminal (a test's)
            return 10**6

    def close(self) -> None:
        """End the line on a terminal, so that what follows starts on its own."""
        if self.tty and self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False
