"""The references from jobs to the images they use, and the locks that let an image's
file be removed without racing a new job that uses the same bytes.

A job's hash expires (see `jobs`), but the images it used must not stay behind. Each
stored image has the set of jobs that use it (`keys.blob`), each job the set of images it
used (`keys.job_blobs`, which outlives its hash), and the expiry index (`keys.EXPIRY`)
says when each job's hash expires. `claim_expired` finds the jobs whose hash is gone and
drops their references; `delete_job` drops them at once. Either hands back the images
nobody uses any more, locked (`keys.blob_lock`): an intake storing the same bytes
meanwhile sees the lock and stores them again once the file is gone.

A vision file (`visionq.state.files`) holds its image the same way, under its own id:
its id is in the image's set of users and in the expiry index, and it has a set of its
own images (`files/create`); `claim_expired` reads a file's hash for a `file-` id.

This module owns those four families: the image sets, the job sets, the locks and the
expiry index. Two scripts of `jobs` also write them, in the same step as the job's own
keys: `jobs/create` (a new job's references and its expiry) and `jobs/transition` (a
finish sets the result TTL, and the expiry index follows). `blobs/delete_job` in turn
deletes the job's hash and its entries in the tenant and lease indexes, since a deleted
job must lose its record and its references together.
"""

from __future__ import annotations

from collections.abc import Iterable

import redis

from visionq.state import keys
from visionq.state.redis import redis_errors, script

#: How long an orphaned image stays locked for its remover.
LOCK_MS = 10_000
#: How long a sweeper has to remove an expired job's files before another may take it over.
EXPIRY_CLAIM_SECONDS = 30


class Blobs:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._add = script(client, "blobs/add")
        self._delete_job = script(client, "blobs/delete_job", library="drop_references")
        self._claim_expired = script(client, "blobs/claim_expired", library="drop_references")
        self._confirm_orphan = script(client, "blobs/confirm_orphan")
        self._release = script(client, "release_if_holder")

    def add(self, job_id: str, shas: list[str]) -> None:
        """Record that the job uses these images, unless the job is gone."""
        with redis_errors():
            self._add(
                keys=[keys.job(job_id), keys.job_blobs(job_id)],
                args=[job_id, keys.BLOB_PREFIX, *shas],
            )

    def delete_file(self, file_id: str, *, tenant: str) -> list[str]:
        """Remove a file's record and its reference to its image, as `delete_job` does
        for a job; returns the images no job or file uses any more, locked."""
        file_keys = [
            keys.file(file_id),
            keys.tenant_files(tenant),
            keys.LEASES,
            keys.EXPIRY,
            keys.job_blobs(file_id),
        ]
        with redis_errors():
            orphans = self._delete_job(
                keys=file_keys, args=[file_id, LOCK_MS, keys.BLOB_PREFIX, keys.BLOB_LOCK_SUFFIX]
            )
        return [sha.decode() for sha in orphans]

    def delete_job(self, job_id: str, *, tenant: str, named: Iterable[str]) -> list[str]:
        """Remove the job and its references; returns the stored images that no other job
        uses, now locked. `named` are the images its record names.

        The caller deletes those images and then calls `release`; an intake that stores
        the same bytes meanwhile sees the lock and stores them again afterwards.
        """
        job_keys = [
            keys.job(job_id),
            keys.tenant_jobs(tenant),
            keys.LEASES,
            keys.EXPIRY,
            keys.job_blobs(job_id),
        ]
        args: list[str | float] = [
            job_id,
            LOCK_MS,
            keys.BLOB_PREFIX,
            keys.BLOB_LOCK_SUFFIX,
            *sorted(named),
        ]
        with redis_errors():
            orphans = self._delete_job(keys=job_keys, args=args)
        return [sha.decode() for sha in orphans]

    def claim_expired(self, *, now: float, limit: int) -> list[tuple[str, list[str]]]:
        """Up to `limit` jobs whose hash has expired, each with the images no job uses any
        more (locked, as for `delete_job`), claimed for `EXPIRY_CLAIM_SECONDS`.

        One Redis call, whatever is due. The caller removes the files, calls `release`
        for each image, then `forget_expired`; should it die before, the job comes due
        again once the claim and the locks have run out.
        """
        args: list[str | float] = [
            now,
            limit,
            EXPIRY_CLAIM_SECONDS,
            LOCK_MS,
            keys.JOB_PREFIX,
            keys.JOB_BLOBS_PREFIX,
            keys.BLOB_PREFIX,
            keys.BLOB_LOCK_SUFFIX,
            keys.FILE_PREFIX,
        ]
        with redis_errors():
            reply = self._claim_expired(keys=[keys.EXPIRY], args=args)
        claimed: list[tuple[str, list[str]]] = []
        at = 0
        while at < len(reply):
            count = int(reply[at + 1])
            shas = [sha.decode() for sha in reply[at + 2 : at + 2 + count]]
            claimed.append((reply[at].decode(), shas))
            at += 2 + count
        return claimed

    def forget_expired(self, job_ids: list[str]) -> None:
        """The expired jobs' files are gone: drop what was kept to find them."""
        if not job_ids:
            return
        with redis_errors():
            pipe = self._redis.pipeline(transaction=True)
            pipe.zrem(keys.EXPIRY, *job_ids)
            pipe.delete(*(keys.job_blobs(job_id) for job_id in job_ids))
            pipe.execute()

    def confirm_orphan(self, sha256: str, *, holder: str) -> bool:
        """Whether the image may go now: `holder` (the job whose references were dropped)
        still holds its lock, renewed for the delete, and no job has taken it up since.
        Deleting many images takes a while, longer than a lock taken for all at once."""
        with redis_errors():
            image_keys = [keys.blob(sha256), keys.blob_lock(sha256)]
            return bool(self._confirm_orphan(keys=image_keys, args=[holder, LOCK_MS]))

    def release(self, sha256: str, *, holder: str) -> None:
        """Let the image's lock go, if `holder` still holds it."""
        with redis_errors():
            self._release(keys=[keys.blob_lock(sha256)], args=[holder])

    def being_deleted(self, sha256: str) -> bool:
        with redis_errors():
            return bool(self._redis.exists(keys.blob_lock(sha256)))
