"""Keeps one child process per queue running, for `visionq worker` on several queues.

Each queue wants its own kind of pool, hence a process each. A child that ends (SIGKILL,
the kernel's OOM killer, Celery giving up on an error) would otherwise leave its queue
with no consumer while this process looks healthy to systemd or Kubernetes. So:

- an end is noticed at once: SIGCHLD wakes the loop (through `signal.set_wakeup_fd`, so a
  child ending at any instant is seen), and the child is reaped there, never a zombie;
- a child that ends while we are not stopping is started again after a backoff of 1, 2,
  4, 8 s (by how many times it ended in the last five minutes), each end logged;
- the fifth end within five minutes is a crash loop that restarting here will not cure:
  the supervisor stops the other children and exits 1, so that systemd
  (`Restart=on-failure`) or Kubernetes (the pod's restart, with its own backoff) restart
  the whole worker where an operator sees it;
- SIGTERM, SIGINT and SIGQUIT are passed on to every live child (Celery's warm, cold and
  cold shutdown), no child is started again from then on, and the supervisor exits when
  the last has ended: 0 if every child ended cleanly. Children run in a process group of
  their own, so that a Ctrl-C at a terminal reaches each of them once, through here (a
  second SIGINT tells Celery to cancel its running tasks).
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType

log = logging.getLogger(__name__)

#: The first restart's delay; each further end within `CRASH_WINDOW` doubles it.
BACKOFF = 1.0
#: Restarts allowed within `CRASH_WINDOW`; one more end and the supervisor gives up.
MAX_RESTARTS = 4
CRASH_WINDOW = 300.0
#: Exit status when a child keeps ending.
EXIT_CRASH_LOOP = 1
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


@dataclass
class _Child:
    name: str
    argv: Sequence[str]
    popen: subprocess.Popen[bytes] | None = None
    #: When it ended lately (monotonic), within `CRASH_WINDOW`.
    ends: deque[float] = field(default_factory=deque)
    #: When to start it again, if it is down and not for good.
    due: float | None = None


def _describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


class Supervisor:
    def __init__(self, commands: Mapping[str, Sequence[str]], env: Mapping[str, str]) -> None:
        self._children = [_Child(name, argv) for name, argv in commands.items()]
        self._env = dict(env)
        self._signals: list[int] = []
        self._stopping = False
        self._failed = False

    def run(self) -> int:
        """Until stopped by a signal (0 when every child ended cleanly, else 1) or until a
        child keeps ending (`EXIT_CRASH_LOOP`)."""
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        previous_fd = signal.set_wakeup_fd(wake_w)
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGCHLD, *_STOP_SIGNALS)
        }
        try:
            for child in self._children:
                self._start(child)
            while True:
                self._pass_on_signals()
                self._reap()
                if self._stopping and not any(c.popen for c in self._children):
                    break
                self._start_due()
                select.select([wake_r], [], [], self._timeout())
                while _drain(wake_r):
                    pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(previous_fd)
            os.close(wake_r)
            os.close(wake_w)
        return EXIT_CRASH_LOOP if self._failed else 0

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # The work happens in the loop, which the wakeup byte has already woken.
        if signum != signal.SIGCHLD:
            self._signals.append(signum)

    def _start(self, child: _Child) -> None:
        # A process group of its own: a terminal's Ctrl-C reaches it only through us.
        child.popen = subprocess.Popen(child.argv, env=self._env, process_group=0)
        child.due = None
        log.info(
            "started the worker for queue %s (pid %d)",
            child.name,
            child.popen.pid,
            extra={"queue": child.name, "pid": child.popen.pid},
        )

    def _pass_on_signals(self) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            if not self._stopping:
                log.info(
                    "%s: stopping the workers",
                    signal.Signals(signum).name,
                    extra={"signal": signum},
                )
            self._stop(signum)

    def _stop(self, signum: int) -> None:
        self._stopping = True
        for child in self._children:
            child.due = None
            if child.popen is not None and child.popen.poll() is None:
                child.popen.send_signal(signum)

    def _reap(self) -> None:
        now = time.monotonic()
        for child in self._children:
            if child.popen is None or (returncode := child.popen.poll()) is None:
                continue
            pid, child.popen = child.popen.pid, None
            about = {"queue": child.name, "pid": pid, "exit": _describe(returncode)}
            if self._stopping:
                log.info(
                    "the worker for queue %s ended (%s)", child.name, about["exit"], extra=about
                )
                self._failed = self._failed or returncode != 0
                continue
            child.ends.append(now)
            while child.ends and child.ends[0] < now - CRASH_WINDOW:
                child.ends.popleft()
            restarts = len(child.ends)
            if restarts > MAX_RESTARTS:
                log.critical(
                    "the worker for queue %s ended (%s), %d times in %.0f s: giving up, "
                    "stopping the others and exiting %d for the service manager to restart",
                    child.name,
                    about["exit"],
                    restarts,
                    CRASH_WINDOW,
                    EXIT_CRASH_LOOP,
                    extra=about | {"restarts": restarts},
                )
                self._failed = True
                self._stop(signal.SIGTERM)
                continue
            delay = BACKOFF * 2 ** (restarts - 1)
            child.due = now + delay
            log.warning(
                "the worker for queue %s ended (%s); starting it again in %g s",
                child.name,
                about["exit"],
                delay,
                extra=about | {"restarts": restarts, "restart_in": delay},
            )

    def _start_due(self) -> None:
        now = time.monotonic()
        for child in self._children:
            if child.due is not None and child.due <= now:
                self._start(child)

    def _timeout(self) -> float | None:
        due = [child.due for child in self._children if child.due is not None]
        return max(0.0, min(due) - time.monotonic()) if due else None


def _drain(fd: int) -> bool:
    try:
        return bool(os.read(fd, 512))
    except BlockingIOError:
        return False
