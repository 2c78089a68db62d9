"""A RabbitMQ virtual host of its own for each stack, on the machine's RabbitMQ server
(127.0.0.1:5672; `.ci/run` installs and starts it where it is missing), so that stacks
share no queue. `VISIONQ_TEST_BROKER=amqp` runs the e2e and chaos suites on it."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

#: The broker the test stacks use: "redis" (the default) or "amqp".
TEST_BROKER = os.environ.get("VISIONQ_TEST_BROKER", "redis")
RABBITMQ = os.environ.get("VISIONQ_TEST_RABBITMQ", "127.0.0.1:5672")


def _ctl(*args: str) -> None:
    rabbitmqctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    subprocess.run([rabbitmqctl, "-q", *args], check=True, capture_output=True, timeout=60)


@contextmanager
def vhost() -> Iterator[str]:
    """A new virtual host that guest may use, removed afterwards; its broker URL."""
    name = f"vq-test-{secrets.token_hex(4)}"
    _ctl("add_vhost", name)
    try:
        _ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@{RABBITMQ}/{name}"
    finally:
        _ctl("delete_vhost", name)
