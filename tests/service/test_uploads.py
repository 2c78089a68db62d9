"""The body-read deadline's bookkeeping (service/uploads.py), in one process."""

from __future__ import annotations

import gc
import io
import time
import weakref

import pytest
from werkzeug.exceptions import RequestTimeout

from service.uploads import BodyInput


def _body(data: bytes, timeout: float) -> BodyInput:
    return BodyInput({"wsgi.input": io.BytesIO(data), "CONTENT_LENGTH": str(len(data))}, timeout)


def test_a_body_read_in_full_is_not_kept_until_its_deadline() -> None:
    """The deadline thread must not keep a finished request's input (its buffers, its
    socket) alive for a minute behind another body that is still arriving."""
    slow = _body(b"x" * 10, timeout=60)  # never read: its deadline is a minute away
    done = _body(b"y" * 10, timeout=60)
    assert done.read() == b"y" * 10
    assert done.received
    gone = weakref.ref(done)
    del done
    gc.collect()
    assert gone() is None
    assert not slow.received


def test_a_body_not_read_in_time_is_refused() -> None:
    late = _body(b"z" * 10, timeout=0.05)
    deadline = time.monotonic() + 5
    while not late.expired and time.monotonic() < deadline:
        time.sleep(0.01)
    assert late.expired
    with pytest.raises(RequestTimeout):
        late.read()
