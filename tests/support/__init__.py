"""What the tests share: the processes they start, the stack, the servers they run in a
thread, the corpus. `tests/conftest.py` holds only the fixtures built from these.

The names most tests need are importable from here directly; the more specialised
helpers (`s3server`, `brokenserver`, `pngcraft`, `servers`) from their own modules.
"""

from tests.support.corpus import CORPUS, data_url
from tests.support.jobs import bare_job
from tests.support.processes import Process, stop_process, wait_for_http
from tests.support.stack import (
    KEYS,
    SIM_KEY,
    Stack,
    bearer,
    running_stack,
    stack_env,
    start_api,
)
from tests.support.webhooks import WEBHOOK_BODIES, WEBHOOK_SECRET, Delivery, Receiver

__all__ = [
    "CORPUS",
    "KEYS",
    "SIM_KEY",
    "WEBHOOK_BODIES",
    "WEBHOOK_SECRET",
    "Delivery",
    "Process",
    "Receiver",
    "Stack",
    "bare_job",
    "bearer",
    "data_url",
    "running_stack",
    "stack_env",
    "start_api",
    "stop_process",
    "wait_for_http",
]
