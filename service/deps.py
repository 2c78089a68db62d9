"""The per-process services the request handlers share, and how a handler reaches them."""

from __future__ import annotations

import functools
import threading

from flask import current_app

from visionq.accounts import Accounts
from visionq.batches import Batches
from visionq.intake import Intake
from visionq.ops import metrics
from visionq.runtime import Resources
from visionq.settings import Settings
from visionq.state import pacing
from visionq.state.connection import open_redis
from visionq.state.idempotency import IdempotencyKeys
from visionq.state.storewrites import WriteProbe, WriteRefusals
from visionq.state.tenantlimits import UPLOAD_LEASE_MARGIN, TenantLimits, UploadSlots
from visionq.state.usage import UsageStore


class Services:
    """What the request handlers need, built once per process: the `Resources` every
    process has, and the API's own (intake, idempotency, tenant limits, metrics)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # A bounded pool that threads queue on: a thousand long-polls waking at once share
        # a few dozen connections instead of opening a thousand sockets at the same moment.
        client = open_redis(
            settings.redis_url,
            max_connections=64,
            timeout=20,
            socket_connect_timeout=2,
            socket_timeout=10,
            health_check_interval=30,
        )
        shared = Resources.open(settings, client)
        self.redis, self.store, self.jobs = shared.client, shared.store, shared.jobs
        self.outbox, self.broker, self.files = shared.outbox, shared.broker, shared.files
        self.intake = Intake(
            settings,
            self.store,
            self.jobs,
            self.broker,
            self.files.records,
            quotas=shared.quotas,
        )
        # Each API process carries its own jobs' first messages on, where the broker is
        # not Redis (`Broker.relay`); the thread ends with the process.
        threading.Thread(
            target=self.broker.relay, args=(threading.Event(),), name="relay", daemon=True
        ).start()
        self.batches = Batches(
            settings, shared.batches, self.files, self.intake, self.jobs, self.store
        )
        self.idempotency = IdempotencyKeys(self.redis)
        self.usage = UsageStore(self.redis)
        #: Writes Redis refused in this process: counted, and logged now and then.
        self.write_refusals = WriteRefusals()
        self.write_probe = WriteProbe(self.redis)
        self.tenant_limits = TenantLimits(self.redis, settings.rate_limits, self.write_refusals)
        self.upload_slots = UploadSlots(
            self.redis,
            settings.max_uploads,
            lease=settings.body_read_timeout + UPLOAD_LEASE_MARGIN,
        )
        names = [account.name for account in Accounts.from_settings(settings)]
        metrics.expose_accounts(names)
        #: What `/metrics` shows: the process tree's samples and the cluster's queues.
        self.metrics = metrics.scrape_registry(
            settings.metrics_dir,
            metrics.ClusterGauges(
                queue_depths=self.broker.queue_depths,
                paced_jobs=functools.partial(pacing.waiting_jobs, self.redis),
                models=settings.models,
                accounts_out=functools.partial(pacing.out_of_rotation, self.redis, names),
                accounts=names,
            ),
        )


def services() -> Services:
    found: Services = current_app.extensions["visionq"]
    return found
