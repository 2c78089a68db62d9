"""Every Redis key of ours, by name or by prefix: the one place a key is spelled.

The modules of `visionq.state` build their keys here and hand them to their Lua scripts
in KEYS[]. A script that reaches keys named by data it reads inside Redis (the lease
sweep reads job ids, then their hashes) gets the prefix from here as an ARGV instead, so
no name is spelled in Lua either. Which module owns which family is in each module's
docstring and in docs/architecture.md.

The broker's keys (kombu's lists and its `unacked` hash) are not ours and are not here.
"""

from __future__ import annotations

import hashlib

#: A job's hash: `JOB_PREFIX + id`.
JOB_PREFIX = "vq:job:"
#: The images a job uses, kept until its references are dropped (after its hash).
JOB_BLOBS_PREFIX = "vq:job-blobs:"
#: The set of jobs that use a stored image: `BLOB_PREFIX + sha256`; the image may go once
#: it is empty.
BLOB_PREFIX = "vq:blob:"
#: After an image's set: its lock, held while its file is being removed.
BLOB_LOCK_SUFFIX = ":lock"
#: Unfinished jobs by when the sweeper should look at them next.
LEASES = "vq:leases"
#: Jobs by when their hash expires; a job leaves it once its files are seen to.
EXPIRY = "vq:expiry"
#: Jobs with a deadline (`Cancel-After`), by it; a job leaves it when it finishes.
DEADLINES = "vq:deadlines"
#: The pub/sub channel every terminal transition publishes the job id on.
DONE_CHANNEL = "vq:done"
#: With RabbitMQ as the broker: the messages a script queued, waiting for a relay to
#: publish them, and those a relay has taken and not yet seen confirmed (the broker's,
#: `visionq.broker.celery_amqp`).
RELAY = "vq:relay"
RELAY_SENDING = "vq:relay:sending"
#: The webhook outbox: job ids by when their delivery is next due.
OUTBOX = "vq:webhooks:due"
IDEMPOTENCY_PREFIX = "vq:idem:"
UPLOADS_PREFIX = "vq:uploads:"
PROBE_PREFIX = "vq:probe:"

#: The pacer's keys: `PACE_PREFIX + model + part`, one part of the list below per use.
PACE_PREFIX = "vq:pace:"
#: The models with jobs waiting in the pacer.
PACE_MODELS = f"{PACE_PREFIX}models"
#: Tenants in a model's rotation, scored by when each was last served.
PACE_TENANTS = ":tenants"
#: A ready job waits in `PACE_PREFIX + model + PACE_QUEUE + tenant`.
PACE_QUEUE = ":q:"
PACE_SERVED = ":served"
PACE_SINCE = ":since"
PACE_TICKETS = ":tickets"
#: Which account served each tenant last (the prompt cache is per key).
PACE_AFFINITY = ":affinity"
#: Batch lines wait in a rotation and queues of their own, behind interactive jobs.
PACE_BATCH_TENANTS = ":batch_tenants"
PACE_BATCH_QUEUE = ":bq:"
#: A model's budget on one account: `PACE_PREFIX + model + PACE_ACCOUNT + account + part`
#: (`pace_account`), one part of the list below per use. The parts are spelled in
#: `pacing/admit` too, which builds them from the prefix.
PACE_ACCOUNT = ":@"
PACE_SLOTS = ":slots"
PACE_PAUSED = ":paused_until"
#: The requests of the moving window, by when each was sent.
PACE_REQUESTS = ":requests"
#: When the batch lane's next request is due (its theoretical arrival time).
PACE_BATCH_DUE = ":batch_due"
#: Calls in flight allowed after a 402 that may have been a burst (MiMo's issue #99).
PACE_CAP = ":cap"
#: An account out of rotation (`until`, `reason`, `confirmed`): `ACCOUNT_PREFIX + name`.
ACCOUNT_PREFIX = "vq:account:"
#: The `limits` library's storage prefix for the pacer's token window, and its namespace.
PACE_LIMITS_PREFIX = "vq:limits"
TPM_NAMESPACE = "vq:tpm"
#: The `limits` library's storage prefix for the per-tenant API limits.
TENANT_LIMITS_PREFIX = "vq:ratelimit"


#: A tenant's usage in one hour (UTC): `USAGE_PREFIX + tenant + ":" + YYYYMMDDHH`, a hash
#: of `model|account|counter` to a count (`visionq.state.usage`). Written by
#: `jobs/transition`, which builds the name from the prefix and the job's tenant.
USAGE_PREFIX = "vq:usage:"
#: The tenants with usage kept.
USAGE_TENANTS = "vq:usage-tenants"
#: A tenant's tokens in one day or month (UTC), for quotas: `QUOTA_PREFIX + tenant + ":" +
#: YYYYMMDD or YYYYMM`.
QUOTA_PREFIX = "vq:quota:"


def usage(tenant: str, hour: str) -> str:
    return f"{USAGE_PREFIX}{tenant}:{hour}"


def quota(tenant: str, period: str) -> str:
    return f"{QUOTA_PREFIX}{tenant}:{period}"


def quota_held(tenant: str, period: str) -> str:
    """The tokens calls in flight hold in the period (`visionq.state.usage.Quotas`)."""
    return f"{QUOTA_PREFIX}{tenant}:{period}:held"


def job(job_id: str) -> str:
    return f"{JOB_PREFIX}{job_id}"


#: A tenant's indexes: `TENANT_PREFIX + tenant + ":" + kind`.
TENANT_PREFIX = "vq:tenant:"


def tenant_jobs(tenant: str) -> str:
    """A sorted set of the tenant's job ids, all at score 0, so it orders by id (= by time)."""
    return f"{TENANT_PREFIX}{tenant}:jobs"


def job_blobs(job_id: str) -> str:
    return f"{JOB_BLOBS_PREFIX}{job_id}"


def blob(sha256: str) -> str:
    return f"{BLOB_PREFIX}{sha256}"


def blob_lock(sha256: str) -> str:
    return f"{BLOB_PREFIX}{sha256}{BLOB_LOCK_SUFFIX}"


def idempotency(tenant: str, key: str) -> str:
    """The client's key is hashed: it is theirs to choose, and may be long."""
    return f"{IDEMPOTENCY_PREFIX}{tenant}:{hashlib.sha256(key.encode()).hexdigest()}"


def pace(model: str, part: str) -> str:
    return f"{PACE_PREFIX}{model}{part}"


def pace_account(model: str, account: str, part: str = "") -> str:
    return f"{PACE_PREFIX}{model}{PACE_ACCOUNT}{account}{part}"


def account(name: str) -> str:
    return f"{ACCOUNT_PREFIX}{name}"


def pace_queue(model: str, tenant: str, *, batch: bool = False) -> str:
    return f"{PACE_PREFIX}{model}{PACE_BATCH_QUEUE if batch else PACE_QUEUE}{tenant}"


def uploads(tenant: str) -> str:
    return f"{UPLOADS_PREFIX}{tenant}"


def probe(host: str, pid: int) -> str:
    return f"{PROBE_PREFIX}{host}:{pid}"


# Batches (`visionq.state.batches`).

#: A batch's hash: `BATCH_PREFIX + id`.
BATCH_PREFIX = "vq:batch:"
#: After a batch's hash: its line jobs in line order (a list), the ids of its unfinished
#: ones (a set), the lines that failed before they became jobs (a hash by line), and the
#: lock of the one worker advancing it.
BATCH_JOBS_SUFFIX = ":jobs"
BATCH_OPEN_SUFFIX = ":open"
BATCH_REFUSED_SUFFIX = ":refused"
BATCH_LOCK_SUFFIX = ":lock"
#: Unended batches by when the sweeper should next make sure one is being advanced.
BATCHES_DUE = "vq:batches:due"


def batch(batch_id: str) -> str:
    return f"{BATCH_PREFIX}{batch_id}"


def batch_part(batch_id: str, suffix: str) -> str:
    return f"{BATCH_PREFIX}{batch_id}{suffix}"


def tenant_batches(tenant: str) -> str:
    """Like `tenant_jobs`: the tenant's batch ids at score 0, ordered by id (= by time)."""
    return f"{TENANT_PREFIX}{tenant}:batches"


# Files (`visionq.state.files`).

#: A file's hash: `FILE_PREFIX + id`. A file id starts with `file-`, as OpenAI's do.
FILE_PREFIX = "vq:file:"


def file(file_id: str) -> str:
    return f"{FILE_PREFIX}{file_id}"


def tenant_files(tenant: str) -> str:
    """Like `tenant_jobs`: the tenant's file ids at score 0, ordered by id (= by time)."""
    return f"{TENANT_PREFIX}{tenant}:files"


#: Each kind of tenant index, and the prefix of the records its ids name.
TENANT_INDEX_RECORDS = {"jobs": JOB_PREFIX, "batches": BATCH_PREFIX, "files": FILE_PREFIX}


def holder(holder_id: str) -> str:
    """The hash of a holder of stored images: a job's, or a vision file's (`file-` ids)."""
    return file(holder_id) if holder_id.startswith("file-") else job(holder_id)
