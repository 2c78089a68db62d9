"""The one composition of a process's resources, so that every process builds the job
store, the leases, the pacer and the store the same way, from the same settings.

`Resources` is what every process works with (the API, each worker, the sweeper): the job
records, the webhook outbox, the image and body store, the broker, the batches and the
files, over one Redis
client, which each process opens as suits it (the API a bounded pool its request threads
queue on). `Runtime` adds what the job's steps need: leases and the shared upstream
budget, the upstream client, the URL fetchers and the webhook signer. The workers and the
sweeper use a whole `Runtime`; the API only `Resources`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from visionq import webhooks
from visionq.accounts import Accounts
from visionq.broker import Broker
from visionq.broker.celery_amqp import CeleryAmqp, is_amqp
from visionq.broker.celery_redis import CeleryRedis
from visionq.files import Files
from visionq.media.urlfetch import UrlFetcher
from visionq.settings import Settings
from visionq.state.batches import BatchStore
from visionq.state.connection import open_redis
from visionq.state.files import FileStore
from visionq.state.jobs import JobStore
from visionq.state.leases import LeaseKeeper, Leases
from visionq.state.outbox import Outbox
from visionq.state.pacing import Lane, Pacer
from visionq.state.redis import Replicas, redis_errors
from visionq.state.usage import Quotas
from visionq.storage import BlobStore, open_store
from visionq.upstream.client import UpstreamClient
from visionq.webhooks import Signer


@dataclass(frozen=True)
class Resources:
    """What every visionq process works with."""

    settings: Settings
    client: redis.Redis
    jobs: JobStore
    outbox: Outbox
    store: BlobStore
    broker: Broker
    batches: BatchStore
    files: Files
    quotas: Quotas

    @classmethod
    def open(cls, settings: Settings, client: redis.Redis) -> Resources:
        broker: Broker = (
            CeleryAmqp(client, settings.broker_url)
            if settings.broker_url and is_amqp(settings.broker_url)
            else CeleryRedis(client)
        )
        store = open_store(settings.storage_url)
        replicas = Replicas(settings.redis_wait_replicas, settings.redis_wait_timeout)

        def wake_batch(batch_id: str) -> None:
            with redis_errors():
                client.lpush(*broker.batch_push(batch_id))

        return cls(
            settings=settings,
            client=client,
            jobs=JobStore(
                client,
                ttl=settings.result_ttl,
                queued_grace=settings.queued_grace,
                wake_batch=wake_batch,
                replicas=replicas,
                usage_retention=settings.usage_retention_days * 86400
                if settings.usage_records
                else None,
            ),
            outbox=Outbox(client),
            store=store,
            broker=broker,
            batches=BatchStore(
                client,
                ttl=settings.result_ttl,
                message=broker.batch_push,
                lock_seconds=settings.job_lease,
                replicas=replicas,
            ),
            files=Files(
                settings, store, FileStore(client, ttl=settings.result_ttl, replicas=replicas)
            ),
            quotas=Quotas(client, settings.tenant_quotas),
        )


@dataclass(frozen=True)
class Runtime(Resources):
    """The resources one worker process shares between its tasks (and the sweeper uses)."""

    accounts: Accounts
    leases: Leases
    keeper: LeaseKeeper
    pacer: Pacer
    upstream: UpstreamClient
    fetcher: UrlFetcher
    webhook_fetcher: UrlFetcher
    signer: Signer | None

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        client = open_redis(settings.redis_url, health_check_interval=30)
        shared = Resources.open(settings, client)
        leases = Leases(client, lease=settings.job_lease)
        keeper = LeaseKeeper(interval=settings.job_lease / 3)
        accounts = Accounts.from_settings(settings)
        return cls(
            **vars(shared),  # the process's Resources, composed once, in Resources.open
            accounts=accounts,
            leases=leases,
            keeper=keeper,
            pacer=Pacer(client, settings, accounts, leases, keeper),
            upstream=UpstreamClient(settings),
            fetcher=UrlFetcher(
                allow_private=settings.allow_private_urls,
                timeout=settings.url_fetch_timeout,
                max_bytes=settings.max_image_bytes,
            ),
            # Webhooks: no redirects (a 3xx is a failed attempt), 10 s for the whole answer.
            webhook_fetcher=UrlFetcher(
                allow_private=settings.allow_private_urls,
                timeout=webhooks.DELIVERY_TIMEOUT_SECONDS,
                max_bytes=1024 * 1024,
                max_redirects=0,
            ),
            signer=Signer.from_settings(settings),
        )

    def hand_on(
        self,
        job_id: str,
        *,
        model: str,
        tenant: str,
        retry_in: float | None = None,
        lane: Lane = "interactive",
        uncounted: bool = False,
    ) -> None:
        """Give a prepared job to `model`'s upstream stage: at once, or for a retry
        `retry_in` seconds from now. The caller sends (or keeps) a ticket for it.
        `uncounted`: the attempt just made does not count (an account's fault, not the
        job's).

        The lease is released before the offer, so that whichever ticket takes the job
        may have it straight away. Should this process die between the two, the job is
        not lost: the released lease comes due `retry_in` plus one lease from now, and
        the sweeper then offers the job itself.
        """
        self.leases.release(
            job_id,
            look_in=(retry_in or 0.0) + self.leases.lease,
            uncount="upstream" if uncounted else None,
        )
        due = 0.0 if retry_in is None else time.time() + retry_in
        self.pacer.offer(job_id, model=model, tenant=tenant, due=due, lane=lane)
