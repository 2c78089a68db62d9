"""`visionq sweeper`: the periodic part of reliability.

Each round it queues the webhook deliveries that are due (outbox), the stage of every
unfinished job whose lease ran out (its worker died, or its message was lost) and the
upstream tickets that died with a worker (`visionq.state.pacing.TicketAudit`), the task of
every unended batch that nobody is advancing (`BatchStore.claim_due`), and removes the
images and bodies of jobs that expired (retention). Any number may run, since claims
are atomic, but one is enough: a few Redis calls a round.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

from visionq import retention
from visionq.broker import (
    BATCH_TASK,
    PREPARE_QUEUE,
    PREPARE_TASK,
    UPSTREAM_QUEUE,
    UPSTREAM_TASK,
    WEBHOOK_QUEUE,
    WEBHOOK_TASK,
)
from visionq.errors import Unavailable
from visionq.runtime import Runtime
from visionq.settings import Settings
from visionq.state.jobs import JobStore
from visionq.state.pacing import TicketAudit
from visionq.state.pages import prune_indexes
from visionq.storage import BlobStore
from workers.app import create_celery

log = logging.getLogger(__name__)
#: Tickets sent in one round to a model; any still missing are found short a lease later.
MAX_TICKETS_PER_ROUND = 1000
#: How often the tenants' indexes lose the ids of expired records (`prune_indexes`), at
#: most: twice per result TTL when that is shorter.
PRUNE_INTERVAL = 60.0
#: Seconds a round may spend removing the files of expired jobs before it goes on.
EXPIRY_BUDGET = 1.0


def run(settings: Settings) -> None:
    app = create_celery(settings)
    rt = Runtime.from_settings(settings)
    outbox, leases, pacer, broker = rt.outbox, rt.leases, rt.pacer, rt.broker
    audit = TicketAudit(hold=settings.job_lease)
    stop = threading.Event()
    threading.Thread(target=broker.relay, args=(stop,), name="relay", daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    # Nobody could renew a lease while Redis was unreachable (nor before this sweeper knew
    # of it): give their holders one lease to do so before calling any of them dead.
    expire_from = time.monotonic() + settings.job_lease
    next_prune = time.monotonic()
    while not stop.is_set():
        try:
            for job_id, token in outbox.claim_due(now=time.time(), lease=settings.webhook_lease):
                app.send_task(WEBHOOK_TASK, args=[job_id, token], queue=WEBHOOK_QUEUE)
            for batch_id in rt.batches.claim_due(now=time.time()):
                app.send_task(BATCH_TASK, args=[batch_id], queue=PREPARE_QUEUE)
            for job_id in rt.jobs.cancel_overdue():
                log.info("job %s: its deadline passed while it waited; canceled", job_id)
            for job_id in broker.claim_stranded(PREPARE_QUEUE, older_than=settings.job_lease):
                if leases.received(job_id):  # still queued: looked at again a lease from now
                    log.warning("job %s: its worker never started it; queued again", job_id)
                    app.send_task(PREPARE_TASK, args=[job_id], queue=PREPARE_QUEUE)
            expiring = time.monotonic() >= expire_from
            for expired in leases.expired(queued_grace=settings.queued_grace) if expiring else ():
                log.warning(
                    "job %s: its %s lease ran out; queued again", expired.job_id, expired.stage
                )
                if expired.stage == "prepare":
                    app.send_task(PREPARE_TASK, args=[expired.job_id], queue=PREPARE_QUEUE)
                else:
                    # Offered, not handed on (`Runtime.hand_on`): the sweep above has
                    # already set when to look at the job again, and its dead holder's
                    # lease is left as it was.
                    pacer.offer(
                        expired.job_id,
                        model=expired.model,
                        tenant=expired.tenant,
                        lane="batch" if expired.lane == "batch" else "interactive",
                    )
                    app.send_task(UPSTREAM_TASK, args=[expired.model], queue=UPSTREAM_QUEUE)
            queued = broker.waiting(UPSTREAM_QUEUE) if expiring else 0
            tickets = pacer.tickets(queued=queued) if expiring else []
            for model, missing in audit.missing(tickets).items():
                log.warning("%s: %d due jobs have no ticket; sending tickets", model, missing)
                for _ in range(min(missing, MAX_TICKETS_PER_ROUND)):
                    app.send_task(UPSTREAM_TASK, args=[model], queue=UPSTREAM_QUEUE)
        except Unavailable:
            log.warning("Redis is unreachable; the sweeper tries again")
            expire_from = time.monotonic() + settings.job_lease
        except Exception:  # one bad round must not end the sweeping
            log.exception("sweep failed; trying again")
        _remove_expired(rt.jobs, rt.store)
        if time.monotonic() >= next_prune:
            next_prune = time.monotonic() + min(PRUNE_INTERVAL, settings.result_ttl / 2)
            _prune(rt)
        stop.wait(settings.sweep_interval)


def _prune(rt: Runtime) -> None:
    try:
        if removed := prune_indexes(rt.client):
            log.info("dropped %d expired ids from the tenants' indexes", removed)
    except Unavailable:
        log.warning("Redis is unreachable; the indexes are pruned later")


def _remove_expired(jobs: JobStore, store: BlobStore) -> None:
    """Apart from the round above: an image storage outage must neither hold up webhooks
    and leases nor count as Redis being unreachable."""
    try:
        removed = retention.catch_up(jobs, store, budget=EXPIRY_BUDGET)
    except Unavailable as exc:
        log.warning("removing expired jobs' files failed (%s); tried again later", exc.message)
    except Exception:
        log.exception("removing expired jobs' files failed; tried again later")
    else:
        if removed:
            log.info("removed the files of %d expired jobs", removed)
