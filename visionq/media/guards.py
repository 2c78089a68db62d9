"""Process-level protections around a decode: a deadline in time and a cap on memory.

They bound what no check of the bytes can: a small file whose decode takes minutes, or one
that asks for more memory than the host has. Both act on the whole process (a timer signal,
an rlimit), so they belong to the worker child that decodes, never to the API's threads.
"""

from __future__ import annotations

import resource
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from visionq.errors import InvalidImage


class _DecodeTimeout(BaseException):
    """A BaseException, so that no `except Exception` inside a decoder swallows it."""


@contextmanager
def decode_deadline(seconds: float) -> Iterator[None]:
    """Bound the decoding of one image in time: past `seconds` it is `InvalidImage`.

    A timer signal reaches only the main thread, which is where a prefork worker child
    runs its task; elsewhere (and with `seconds` <= 0) the task's own time limit is the
    bound. The signal interrupts between the decoder's chunks, not inside one C call.
    """
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return
    armed = True

    def expire(_signum: int, _frame: object) -> None:
        if armed:
            raise _DecodeTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    started = time.monotonic()
    outer, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _DecodeTimeout:
        raise InvalidImage(f"the image takes over {seconds:g} s to decode") from None
    finally:
        armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:  # someone else's timer was running: give back what is left of it
            left = outer - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))


def limit_memory(max_bytes: int) -> None:
    """Cap this process's address space (0: no cap).

    Called in each prepare worker child: a decode that would exhaust the host then fails
    with MemoryError, which is an invalid image, instead of drawing the OOM killer onto
    the worker and every job it holds.
    """
    if max_bytes > 0:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (max_bytes, hard))
