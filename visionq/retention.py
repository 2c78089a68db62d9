"""What is kept, and removing it: a deleted job takes its body and unshared images along."""

from __future__ import annotations

from visionq.jobs import JobStore
from visionq.storage import ImageStore


def delete_job(jobs: JobStore, store: ImageStore, job_id: str, *, tenant: str) -> None:
    """The record first (a later GET is 404 at once), then the files no other job uses."""
    for sha in jobs.delete(job_id, tenant=tenant):
        try:
            store.delete_image(sha)
        finally:
            jobs.release_blob(sha)
    store.delete_body(job_id)
