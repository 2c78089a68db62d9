"""Loopback ports for the processes the dev tools, the tests and the benchmarks start.

`wait_for_http` is here and not in the test helpers because the benchmarks (bench/),
which are not a test package, start the same processes and wait for them the same way.
"""

from __future__ import annotations

import socket
import subprocess
import time

import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(url: str, child: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Return once `url` answers at all; raise RuntimeError if `child` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"exited with {child.returncode} before {url} answered")
        try:
            requests.get(url, timeout=1).close()
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answered at {url} within {timeout:.0f} s")
