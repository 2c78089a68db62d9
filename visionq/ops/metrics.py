"""Prometheus metrics: what each process counts, and how a process tree's counts are served.

A visionq host runs many processes (gunicorn workers, Celery's prefork children), so the
counts live in prometheus-client's multiprocess mode: each process writes its samples to
files in one directory (`PROMETHEUS_MULTIPROC_DIR`, `Settings.metrics_dir`) and a scrape
merges them (`MultiProcessCollector`). `process_tree` sets that directory up before any
process forks. Every metric here has labels, so none of them writes a file until it is
first used: importing this module creates nothing.

Queue depths are not counted by any process: the broker reports them (the length of Redis
lists), read at scrape time by `ClusterGauges`, and so the same whichever API process
answers the scrape.

Label values stay few (models, stages, status codes, the configured accounts and tenants),
never job ids; a tenant is a label only when a configured key names it (`tenant_label`).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import redis
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    make_wsgi_app,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from visionq.errors import Unavailable
from visionq.ops import readiness
from visionq.settings import Settings

log = logging.getLogger(__name__)

#: From a few milliseconds (a webhook to a fast receiver) to minutes (reasoning answers,
#: a queue behind a binding budget).
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

JOBS_SUBMITTED = Counter("visionq_jobs_submitted", "Jobs accepted (202)", ["model"])
JOBS_FINISHED = Counter(
    "visionq_jobs_finished",
    "Jobs that reached a final status; error_type is the API error type, empty on success",
    ["model", "status", "error_type"],
)
STAGE_SECONDS = Histogram(
    "visionq_stage_seconds",
    "Time in each stage: queue_wait (created to prepare start), prepare, pacing_wait "
    "(ready to the upstream call may start), upstream (one call), webhook (one attempt)",
    ["stage"],
    buckets=_SECONDS,
)
UPSTREAM_CALLS = Counter(
    "visionq_upstream_calls",
    "Upstream calls by account and HTTP status, or `error` when none came (connection, time-out)",
    ["model", "account", "status"],
)
UPSTREAM_RATE_LIMITED = Counter(
    "visionq_upstream_rate_limited", "Upstream calls answered 429", ["model", "account"]
)
ACCOUNT_BENCHED = Counter(
    "visionq_account_benched",
    "Times an upstream account was taken out of rotation, by reason: auth (401/403), "
    "funds_suspected (a 402 that may be a burst), funds (a probe confirmed the 402)",
    ["account", "reason"],
)
TENANT_TOKENS = Counter(
    "visionq_tenant_tokens",
    "Tokens the upstream counted per tenant and kind (prompt, completion); a tenant that "
    "no configured key names counts as `other`, so the labels are as many as the keys",
    ["tenant", "kind"],
)
#: `ACCOUNT_BENCHED`'s reasons, each shown at 0 from the start (`expose_accounts`).
BENCH_REASONS = ("auth", "funds_suspected", "funds")
ACCOUNT_TOKENS = Counter(
    "visionq_account_tokens",
    "Tokens the upstream counted, per account, model and kind (prompt, completion)",
    ["account", "model", "kind"],
)
UPSTREAM_RETRIES = Counter(
    "visionq_upstream_retries", "Upstream calls scheduled again, by reason", ["model", "reason"]
)
PACING_WAITS = Counter(
    "visionq_pacing_waits",
    "Times an upstream call had to wait for room in the shared budget, by the limit that held "
    "it (rpm, tpm, concurrency, paused: after an upstream 429)",
    ["model", "limit"],
)
TOKENS = Counter(
    "visionq_tokens",
    "Tokens per model: prompt and completion as the upstream counted them, image_estimate "
    "as MiMo's formula counted the images before sending",
    ["model", "kind"],
)
WEBHOOK_DELIVERIES = Counter(
    "visionq_webhook_deliveries", "Webhook delivery attempts by outcome", ["outcome"]
)
HTTP_REQUESTS = Counter(
    "visionq_http_requests",
    "API requests by method, route (the URL rule) and status",
    ["method", "endpoint", "status"],
)
REDIS_WRITE_REFUSALS = Counter(
    "visionq_redis_write_refusals",
    "Redis writes the API was refused, by reason: maxmemory (full, noeviction) or readonly "
    "(a replica after a failover); the readiness probe's writes count too",
    ["reason"],
)
UPLOADS_REFUSED = Counter(
    "visionq_uploads_refused",
    "Request bodies refused or cut off, by reason: tenant_cap (the tenant's uploads in "
    "progress at VISIONQ_MAX_UPLOADS, 429) or read_timeout (not received within "
    "VISIONQ_BODY_READ_TIMEOUT, 408)",
    ["reason"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "visionq_http_request_seconds",
    "API request duration by method and route",
    ["method", "endpoint"],
    buckets=_SECONDS,
)


def _use_directory(directory: str) -> None:
    Path(directory).mkdir(parents=True, exist_ok=True)
    # Children (gunicorn workers, pool children, `visionq worker`'s per-queue children)
    # inherit the variable; prometheus-client reads it to name its files.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    # prometheus-client picks its value class once, when `prometheus_client.values` is
    # first imported, from this same variable. Whatever imported it first, pick again now:
    # no value exists yet (every metric here has labels, and nothing was counted before
    # start-up), so every value from here on is a multiprocess one.
    values.ValueClass = values.get_value_class()


@contextmanager
def process_tree(settings: Settings) -> Iterator[Settings]:
    """Multiprocess mode for this process and every process it starts, for the block.

    With `metrics_dir` configured, that directory (shared by design, so left as it is);
    without, a private temporary one, removed at the end. Call before anything forks.
    Yields the settings that name the directory in use.
    """
    if settings.metrics_dir:
        _use_directory(settings.metrics_dir)
        yield settings
        return
    with tempfile.TemporaryDirectory(prefix="visionq-metrics-") as directory:
        _use_directory(directory)
        yield settings.model_copy(update={"metrics_dir": directory})


def scrape_registry(metrics_dir: str | None, *collectors: Any) -> CollectorRegistry:
    """What a scrape shows: the process tree's merged samples (or, outside multiprocess
    mode, this process's own), plus `collectors`."""
    registry = CollectorRegistry()
    if metrics_dir:
        MultiProcessCollector(registry, path=metrics_dir)
    else:
        registry.register(REGISTRY)  # a registry is a collector
    for collector in collectors:
        registry.register(collector)
    return registry


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """A probe every few seconds is not news."""


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def _metrics_and_readiness(
    registry: CollectorRegistry, ready: Mapping[str, Path]
) -> Callable[..., Iterable[bytes]]:
    """The WSGI app of a worker's port: `/readyz` from its queues' readiness files
    (visionq.ops.readiness), 200 once every one consumes, else 503; anything else the
    scrape."""
    scrape = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/readyz":
            return scrape(environ, start_response)  # type: ignore[no-any-return]
        queues = readiness.report(ready)
        body = json.dumps({"ready": all(queues.values()), "queues": queues}).encode()
        status = "200 OK" if all(queues.values()) else "503 Service Unavailable"
        start_response(status, [("Content-Type", "application/json")])
        return [body]

    return app


@contextmanager
def served(settings: Settings, ready: Mapping[str, Path]) -> Iterator[None]:
    """The process tree's metrics, and `/readyz` from the `ready` files of its queues, over
    HTTP on `metrics_port` for the block (0: not)."""
    if not settings.metrics_port:
        yield
        return
    app = _metrics_and_readiness(scrape_registry(settings.metrics_dir), ready)
    server = make_server(
        "", settings.metrics_port, app, _ThreadingWSGIServer, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def tenant_label(tenant: str, known: frozenset[str]) -> str:
    """The tenant as a label value: itself when a configured key names it, else `other`
    (with authentication off every job is `default`'s)."""
    return tenant if tenant in known or tenant == "default" else "other"


def expose_accounts(accounts: Iterable[str]) -> None:
    """Show each account's bench counters at 0 before anything happened, so that an alert
    on their increase has a series to watch from the start."""
    for account in accounts:
        for reason in BENCH_REASONS:
            ACCOUNT_BENCHED.labels(account, reason)


class ClusterGauges:
    """`visionq_queue_depth{queue}`, `visionq_paced_jobs{model}` and
    `visionq_account_in_rotation{account}`, read from Redis when scraped: they describe
    the whole cluster, not the process that answers."""

    def __init__(
        self,
        *,
        queue_depths: Callable[[], dict[str, int]],
        paced_jobs: Callable[[], dict[str, int]],
        models: Iterable[str],
        accounts_out: Callable[[], dict[str, str]],
        accounts: Iterable[str],
    ) -> None:
        self._queue_depths = queue_depths
        self._paced_jobs = paced_jobs
        self._models = tuple(models)
        self._accounts_out = accounts_out
        self._accounts = tuple(accounts)

    def collect(self) -> Iterator[Metric]:
        try:
            depths = self._queue_depths()
            paced = dict.fromkeys(self._models, 0) | self._paced_jobs()
            out = self._accounts_out()
        except (redis.RedisError, Unavailable):
            # The rest of the scrape is still worth having; readiness reports Redis.
            log.warning("could not read queue depths from Redis", exc_info=True)
            return
        depth = GaugeMetricFamily(
            "visionq_queue_depth", "Messages waiting in each Celery queue", labels=["queue"]
        )
        for queue, n in depths.items():
            depth.add_metric([queue], n)
        yield depth
        waiting = GaugeMetricFamily(
            "visionq_paced_jobs",
            "Prepared jobs waiting for room in the upstream budget",
            labels=["model"],
        )
        for model, n in sorted(paced.items()):
            waiting.add_metric([model], n)
        yield waiting
        rotation = GaugeMetricFamily(
            "visionq_account_in_rotation",
            "1 while an upstream account takes calls, 0 while it is out of rotation (401/403, "
            "402) or waiting for its probe",
            labels=["account"],
        )
        for account in self._accounts:
            rotation.add_metric([account], 0 if account in out else 1)
        yield rotation
