"""The batch progress display: its figures (rate, ETA) from samples, its text, and when the
reporter writes what, on a terminal and piped."""

from __future__ import annotations

import io

import pytest

from visionq.client._progress import (
    Reporter,
    bar,
    duration,
    eta,
    figures,
    plain_line,
    rate,
    tty_line,
)


def test_rate_is_measured_over_the_recent_window() -> None:
    assert rate([]) is None and rate([(0.0, 0)]) is None
    assert rate([(0.0, 0), (0.0, 5)]) is None  # no time between them
    assert rate([(0.0, 0), (2.0, 10), (4.0, 20)]) == pytest.approx(5.0)
    # A fast start long ago does not count: only the last 30 s do.
    samples = [(0.0, 0), (1.0, 1000), (40.0, 1010), (50.0, 1030)]
    assert rate(samples, window=30) == pytest.approx(20 / 10)
    # Only the newest sample in the window: measured from the one before it.
    assert rate([(0.0, 0), (100.0, 50)], window=30) == pytest.approx(0.5)
    assert rate([(0.0, 10), (1.0, 4)]) == 0.0  # a count never runs backwards


def test_eta_from_what_is_left_and_the_rate() -> None:
    assert eta(250, 1000, 50.0) == pytest.approx(15.0)
    assert eta(1000, 1000, None) == 0.0
    assert eta(10, 1000, None) is None and eta(10, 1000, 0.0) is None
    assert eta(0, 0, 5.0) is None  # no total yet (validating)


def test_durations_bars_and_figures_read_short() -> None:
    assert [duration(s) for s in (0.4, 42, 185, 7620)] == ["0s", "42s", "3m05s", "2h07m"]
    assert bar(0, 10, width=10) == "[..........]"
    assert bar(5, 10, width=10) == "[#####.....]"
    assert bar(11, 10, width=10) == "[##########]"
    assert figures(1234, 5000, 41.2, "lines") == "1234/5000 24.7% 41.2 lines/s ETA 1m31s"
    assert figures(3, 5000, None, "lines") == "3/5000 0.1%"
    assert figures(5000, 5000, 41.2, "lines") == "5000/5000 100.0% 41.2 lines/s"
    assert figures(0, 0, None, "lines") == "0 lines"


def test_the_terminal_line_has_a_bar_and_the_plain_line_a_time() -> None:
    line = tty_line("in_progress", 50, 200, 10.0, "lines")
    assert line == "in_progress [######..................] 50/200 25.0% 10.0 lines/s ETA 15s"
    assert tty_line("validating", 0, 0, None, "lines") == "validating 0 lines"
    plain = plain_line("in_progress", 50, 200, 10.0, "lines", 65.0)
    assert plain == "[ 1m05s] in_progress 50/200 25.0% 10.0 lines/s ETA 15s"
    assert "\r" not in plain and "\x1b" not in plain


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_on_a_terminal_one_line_is_redrawn_in_place_and_ended_at_close() -> None:
    stream, clock = io.StringIO(), Clock()
    reporter = Reporter(stream, "images", tty=True, clock=clock)
    for done in range(5):
        reporter.update("uploading", done, 4 * 2)
        clock.now += 1
    reporter.close()
    drawn = stream.getvalue()
    assert drawn.count("\r\x1b[K") == 5 and drawn.count("\n") == 1 and drawn.endswith("\n")
    last = drawn.rsplit("\r\x1b[K", 1)[1]
    assert last == "uploading [############............] 4/8 50.0% 1.0 images/s ETA 4s\n"


def test_piped_lines_come_on_change_and_at_most_every_few_seconds() -> None:
    stream, clock = io.StringIO(), Clock()
    reporter = Reporter(stream, "lines", tty=False, every=5.0, clock=clock)
    reporter.update("validating", 0, 0)  # first state: a line
    clock.now += 1
    reporter.update("validating", 0, 0)  # nothing new: no line
    clock.now += 1
    reporter.update("in_progress", 0, 100)  # a new state: a line at once
    for _ in range(10):  # moving every second: a line every 5 s
        clock.now += 1
        reporter.update("in_progress", reporter_done(clock), 100)
    clock.now += 1
    reporter.update("in_progress", 100, 100)  # the count reached its total: a line
    clock.now += 1
    reporter.update("completed", 100, 100)
    reporter.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()
    assert [line.split("] ")[1].split()[0] for line in lines] == [
        "validating",
        "in_progress",
        "in_progress",
        "in_progress",
        "in_progress",
        "completed",
    ]
    assert lines[0] == "[    0s] validating 0 lines"
    assert lines[2].startswith("[    7s] in_progress 25/100 25.0% 5.0 lines/s ETA 15s")
    assert lines[4].startswith("[   13s] in_progress 100/100 100.0%")


def reporter_done(clock: Clock) -> int:
    """5 lines a second from t=102 on: what a steady batch reports."""
    return int((clock.now - 102.0) * 5)
