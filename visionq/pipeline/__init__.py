"""The job's steps as plain functions of (job id, runtime), called by Celery tasks or tests.

Each step re-reads the record and checks the state first ("asserting the world is the
responsibility of the task"), so a message delivered twice is harmless: a finished or
canceled job is left alone, and the guarded transitions of `visionq.state.jobs` refuse a
second finish. One module per step: `preparing` (prepare queue), `calling` (upstream
queue), `delivering` (webhooks queue), `batching` (a batch's own task, on the prepare
queue); `outcomes` holds what they share.
"""

from visionq.pipeline.batching import advance as advance_batch
from visionq.pipeline.calling import call_upstream
from visionq.pipeline.delivering import deliver_webhook
from visionq.pipeline.preparing import MAX_PREPARE_ATTEMPTS, prepare

__all__ = ["MAX_PREPARE_ATTEMPTS", "advance_batch", "call_upstream", "deliver_webhook", "prepare"]
