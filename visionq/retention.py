"""What is kept, and removing it: a deleted or expired job takes its body and its images
along, except the images another job still uses.

A deleted job goes at once (`delete_job`, from the API). An expired one is noticed by the
sweeper (`remove_expired`, every round): Redis drops the job's hash by itself, and what
`state.blobs` kept beside it says which images the job used.

This is a flow over two stores, the job state in Redis and the files in the image store,
so it sits above both rather than in `visionq.state`, which knows no files.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from visionq.files import Files
from visionq.state.jobs import JobStore, request_body_name
from visionq.storage import BlobStore

#: Expired jobs handled in one call of `remove_expired`.
EXPIRED_PER_CALL = 100


def _remove_images(jobs: JobStore, store: BlobStore, orphans: list[str], *, job_id: str) -> None:
    """Delete the images `jobs` handed over locked for `job_id`, each only if still nobody
    else's just before, releasing each lock once its file is gone."""
    for sha in orphans:
        try:
            if jobs.blobs.confirm_orphan(sha, holder=job_id):
                store.delete_image(sha)
        finally:
            jobs.blobs.release(sha, holder=job_id)


def _remove_bodies(store: BlobStore, job_id: str) -> None:
    """The upstream body and, for a large request, the request kept beside it."""
    store.delete_body(job_id)
    store.delete_body(request_body_name(job_id))


def delete_job(jobs: JobStore, store: BlobStore, job_id: str, *, tenant: str) -> None:
    """The record first (a later GET is 404 at once), then the files no other job uses."""
    _remove_images(jobs, store, jobs.delete(job_id, tenant=tenant), job_id=job_id)
    _remove_bodies(store, job_id)


def delete_file(
    files: Files, jobs: JobStore, store: BlobStore, file_id: str, *, tenant: str
) -> None:
    """The record first (a later GET is 404), then its bytes: a batch file's body, or a
    vision file's image unless a job or another file still uses it."""
    _remove_images(jobs, store, files.records.delete(file_id, tenant=tenant), job_id=file_id)
    store.delete_body(file_id)


def remove_expired(
    jobs: JobStore, store: BlobStore, *, now: float, limit: int = EXPIRED_PER_CALL
) -> list[str]:
    """Remove the files of up to `limit` jobs (and files, `file-` ids) whose record has
    expired; their ids.

    One Redis call when nothing is due. Several sweepers may run it at once: each job is
    claimed by one, and should that one die before the end, another takes it over later.
    """
    claimed = jobs.blobs.claim_expired(now=now, limit=limit)
    for job_id, orphans in claimed:
        _remove_images(jobs, store, orphans, job_id=job_id)
        # An unfinished job that expired may have left its prepared body behind.
        _remove_bodies(store, job_id)
    ids = [job_id for job_id, _ in claimed]
    jobs.blobs.forget_expired(ids)
    return ids


def catch_up(
    jobs: JobStore,
    store: BlobStore,
    *,
    budget: float,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Call `remove_expired` while it finds a full batch, for up to `budget` seconds; how
    many jobs it removed.

    One batch a sweeper round is not enough: jobs expire as fast as they arrive (80 a
    second in the soak), and a round under load lasts longer than a second, so a backlog
    of expired jobs, each still holding its image set in Redis, would grow without end.
    The bound keeps a long backlog from holding up the round's webhooks and leases.
    """
    until = clock() + budget
    removed = 0
    while True:
        batch = remove_expired(jobs, store, now=time.time())
        removed += len(batch)
        if len(batch) < EXPIRED_PER_CALL or clock() >= until:
            return removed
