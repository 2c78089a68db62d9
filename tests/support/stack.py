"""The whole service as child processes, and a client for the tests to talk to it.

A stack is the upstream simulator as a real HTTP server, real Celery workers for each
queue, the sweeper and the API under gunicorn, each a `Process` with its output in the
session's temp folder, all on one Redis database. Nothing is mocked; the simulator is
the one stand-in, for the paid upstream.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.processes import Process, wait_for_http
from tests.support.rabbitmq import TEST_BROKER, vhost
from tests.support.webhooks import WEBHOOK_SECRET
from visionq.dev.ports import free_port
from visionq.models import Job

#: The key the simulator asks of the service, as MiMo asks for the account's.
SIM_KEY = "sim-test-key"
#: Each tenant's client key on every stack of the session.
KEYS = {"alice": "key-alice", "bob": "key-bob", "carol": "key-carol"}


def bearer(tenant: str) -> dict[str, str]:
    """The headers of a request made with `tenant`'s key."""
    return {"Authorization": f"Bearer {KEYS[tenant]}"}


@dataclass
class Stack:
    """The running stack: its URLs, its environment, and helpers to talk to it."""

    base_url: str
    redis_url: str
    simulator_url: str
    env: dict[str, str]
    storage_root: Path
    processes: list[Process] = field(default_factory=list)

    def session(self, tenant: str = "alice") -> requests.Session:
        http = requests.Session()
        http.headers.update(bearer(tenant))
        return http

    def submit(self, body: dict[str, Any], tenant: str = "alice") -> requests.Response:
        with self.session(tenant) as http:
            return http.post(f"{self.base_url}/v1/jobs", json=body, timeout=60)

    def upload(
        self, paths: list[Path], data: dict[str, str], tenant: str = "alice"
    ) -> requests.Response:
        """A multipart submit: each path as an `image` file, in order, plus form fields."""
        with self.session(tenant) as http, ExitStack() as files:
            parts = [("image", (p.name, files.enter_context(p.open("rb")))) for p in paths]
            return http.post(f"{self.base_url}/v1/jobs", files=parts, data=data, timeout=60)

    def wait(self, job_id: str, tenant: str = "alice", timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.session(tenant) as http:
            while True:
                job = http.get(
                    f"{self.base_url}/v1/jobs/{job_id}", params={"wait": 10}, timeout=30
                ).json()
                if job["status"] in ("succeeded", "failed", "canceled"):
                    Job.model_validate(job)  # the documented shape, field for field
                    return job
                if time.monotonic() > deadline:
                    raise AssertionError(f"job {job_id} still {job['status']}:\n{self.logs()}")

    def run(self, body: dict[str, Any], tenant: str = "alice") -> dict[str, Any]:
        response = self.submit(body, tenant)
        assert response.status_code == 202, response.text
        return self.wait(response.json()["id"], tenant)

    def kill_and_replace(self, name: str, sig: int = signal.SIGKILL) -> Process:
        """Send `sig` to the running process `name`, let it end, start a new one like it."""
        old = next(p for p in self.processes if p.name == name)
        old.popen.send_signal(sig)
        old.popen.wait(90)
        old.stop()
        self.processes.remove(old)
        new = Process(
            name,
            old.args,
            self.env,
            old.log_path.parent,
            log_name=f"{name}-{len(self.processes)}-{time.monotonic_ns()}",
        )
        self.processes.append(new)
        return new

    def upstream_calls(self) -> int:
        """How many requests the simulator has answered (or dropped) so far."""
        return requests.get(f"{self.simulator_url}/_sim/stats", timeout=5).json()["requests"]

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.tail(15)}" for p in self.processes)


def stack_env(redis_url: str, storage: Path, simulator_url: str, **extra: str) -> dict[str, str]:
    """The environment of every process of a stack: the test process's own, less anything
    of ours a developer's shell may have set, plus the stack's configuration."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VISIONQ_", "MIMO_", "PROMETHEUS_", "AWS_"))
    }
    env.update(
        {
            "VISIONQ_REDIS_URL": redis_url,
            "VISIONQ_STORAGE_URL": f"file://{storage}",
            "MIMO_API_KEY": SIM_KEY,
            "VISIONQ_UPSTREAM_BASE_URL": f"{simulator_url}/v1",
            "VISIONQ_UPSTREAM_ANTHROPIC_BASE_URL": f"{simulator_url}/anthropic",
            "VISIONQ_API_KEYS": ",".join(f"{t}:{k}" for t, k in KEYS.items()),
            "VISIONQ_ALLOW_PRIVATE_URLS": "true",
            "VISIONQ_UPSTREAM_MAX_ATTEMPTS": "4",
            "VISIONQ_UPSTREAM_TIMEOUT": "20",
            "VISIONQ_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "VISIONQ_WEBHOOK_RETRY_SCHEDULE": "1,1,1,2,2",
            "VISIONQ_WEBHOOK_LEASE": "4",
            "VISIONQ_SWEEP_INTERVAL": "0.2",
            "VISIONQ_JOB_LEASE": "3",
            # A message lost in flight (kombu's pop-then-record window, a Redis restart)
            # leaves its job queued; it is queued again after this.
            "VISIONQ_QUEUED_GRACE": "8",
            # The pacing budget is not what most tests are about; tests/e2e/test_pacing.py
            # runs a stack of its own with a budget that binds.
            "VISIONQ_UPSTREAM_RPM": "60000",
            "VISIONQ_UPSTREAM_CONCURRENCY": "64",
            # The shared stack's one account is made to answer 401, 402 and 403 by single
            # requests (tests/e2e/test_upstream_faults.py); the next call probes it again.
            "VISIONQ_ACCOUNT_PROBE_INTERVAL": "0",
            # carol's is the one limit that binds (tests/e2e/test_errors.py).
            "VISIONQ_RATE_LIMIT": "100000/minute,carol=3/minute",
            # What the tests read in the logs (tests/e2e/test_logs.py).
            "VISIONQ_LOG_LEVEL": "info",
            "VISIONQ_LOG_FORMAT": "json",
        }
    )
    env.update(extra)
    return env


def start_api(
    env: dict[str, str], logs: Path, name: str = "api", cwd: Path | None = None
) -> tuple[Process, str]:
    """The API under gunicorn (two workers) on a free port, once it answers; its base URL."""
    port = free_port()
    api = Process(name, ["api", "--port", str(port), "--workers", "2"], env, logs, cwd=cwd)
    base_url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{base_url}/healthz", api)
    return api, base_url


@contextmanager
def running_stack(
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    *,
    simulator_args: tuple[str, ...] = ("--rpm", "0"),
    upstream_workers: int = 1,
    accounts: tuple[dict[str, Any], ...] = (),
    **extra_env: str,
) -> Iterator[Stack]:
    """The simulator, a worker per queue (`upstream_workers` for upstream), the sweeper and
    the API, as child processes on `redis_url`, with Celery's messages on RabbitMQ when
    the session runs on it (`VISIONQ_TEST_BROKER=amqp`); stopped when the block ends.

    `accounts`: upstream accounts as `VISIONQ_UPSTREAM_ACCOUNTS` has them (`name`,
    `api_key`, budgets, `tenants`), each also an account of the simulator, with the
    limits of `simulator_args`; without them, the one account of `SIM_KEY`."""
    with ExitStack() as broker:
        if TEST_BROKER == "amqp" and "VISIONQ_BROKER_URL" not in extra_env:
            extra_env = {**extra_env, "VISIONQ_BROKER_URL": broker.enter_context(vhost())}
        yield from _stack(
            redis_url, tmp_path_factory, simulator_args, upstream_workers, accounts, extra_env
        )


def _stack(
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    simulator_args: tuple[str, ...],
    upstream_workers: int,
    accounts: tuple[dict[str, Any], ...],
    extra_env: dict[str, str],
) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("logs")
    storage = tmp_path_factory.mktemp("storage")
    sim_port = free_port()
    simulator_url = f"http://127.0.0.1:{sim_port}"
    # One metrics directory for the whole stack, as on one host: the API's /metrics shows
    # what the workers counted too (tests/e2e/test_metrics.py).
    metrics_dir = str(tmp_path_factory.mktemp("metrics"))
    sim_cmd = ["simulator", "--port", str(sim_port), *simulator_args]
    if accounts:
        extra_env = {
            **extra_env,
            "MIMO_API_KEY": "",
            "VISIONQ_UPSTREAM_ACCOUNTS": json.dumps(list(accounts)),
        }
        for account in accounts:
            sim_cmd += ["--account", f"{account['name']}={account['api_key']}"]
    else:
        sim_cmd += ["--api-key", SIM_KEY]
    env = stack_env(
        redis_url, storage, simulator_url, PROMETHEUS_MULTIPROC_DIR=metrics_dir, **extra_env
    )
    processes = [Process("simulator", sim_cmd, env, logs)]
    try:
        wait_for_http(f"{simulator_url}/", processes[0])
        worker = ["worker", "--queues"]
        processes.append(
            Process("worker-prepare", [*worker, "prepare", "--concurrency", "2"], env, logs)
        )
        for n in range(upstream_workers):
            name = "worker-upstream" if n == 0 else f"worker-upstream-{n + 1}"
            processes.append(Process(name, [*worker, "upstream", "--concurrency", "64"], env, logs))
        processes.append(Process("worker-webhooks", [*worker, "webhooks"], env, logs))
        processes.append(Process("sweeper", ["sweeper"], env, logs))
        api, base_url = start_api(env, logs)
        processes.append(api)
        yield Stack(base_url, redis_url, simulator_url, env, storage, processes)
    finally:
        for process in reversed(processes):
            process.stop()
