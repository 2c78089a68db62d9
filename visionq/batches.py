"""Batches as the API creates, reads and cancels them, in either form (OpenAI's batch over
an uploaded JSONL file, Anthropic's message batch over a list of requests).

Both forms make the same record (`visionq.state.batches`) over an input file of one
request a line, and the same worker task runs them (`visionq.pipeline.batching`); only the
line shape (`visionq.batchlines`) and the objects shown (`visionq.batch_objects`) differ.
Nothing here reads the input: validation streams it on a worker, so that creating a batch
of 50,000 lines answers in milliseconds.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from typing import Any, BinaryIO

from visionq import retention
from visionq.errors import Conflict, InvalidRequest, NotFound
from visionq.files import Files
from visionq.intake import Intake
from visionq.models import AnthropicBatchRequest
from visionq.settings import Settings
from visionq.state.batches import BatchApi, BatchFields, BatchRecord, BatchStore
from visionq.state.jobs import JobStore
from visionq.state.records import WebhookRecord
from visionq.storage import BlobStore

#: OpenAI's only completion window, and Anthropic's fixed one.
COMPLETION_WINDOW_SECONDS = 24 * 3600


class Batches:
    def __init__(
        self,
        settings: Settings,
        store: BatchStore,
        files: Files,
        intake: Intake,
        jobs: JobStore,
        blob_store: BlobStore,
    ) -> None:
        self._settings = settings
        self._store = store
        self._files = files
        self._intake = intake
        self._jobs = jobs
        self._blob_store = blob_store

    def create(
        self,
        *,
        tenant: str,
        api: BatchApi,
        input_file_id: str,
        metadata: dict[str, str] | None = None,
        webhook_url: str | None = None,
        priority: str = "batch",
        total: int = 0,
    ) -> BatchRecord:
        """A `validating` batch over an uploaded input file of `tenant`'s; `total`, when the
        caller knows it (an Anthropic batch's requests), counts its lines from the start."""
        self._intake.check_quota(tenant)
        try:
            record = self._files.get(input_file_id, tenant=tenant)
        except NotFound:
            raise InvalidRequest(f"no file {input_file_id!r}", param="input_file_id") from None
        if record.purpose != "batch":
            raise InvalidRequest(
                f"file {input_file_id!r} has purpose {record.purpose!r}, not batch",
                param="input_file_id",
            )
        if record.bytes > self._settings.max_request_bytes:
            raise InvalidRequest(
                f"a batch input is at most {self._settings.max_request_bytes} bytes",
                param="input_file_id",
            )
        if webhook_url is not None:
            self._intake.check_webhook(webhook_url)
        now = time.time()
        webhook: WebhookRecord | None = (
            None
            if webhook_url is None
            else {
                "url": webhook_url,
                "status": "pending",
                "attempts": 0,
                "last_status_code": None,
                "generation": 0,
            }
        )
        fields: BatchFields = {
            "api": api,
            "endpoint": "/v1/chat/completions" if api == "openai" else "/v1/messages",
            "input_file_id": input_file_id,
            "completion_window": "24h",
            "created_at": round(now, 3),
            "expires_at": round(now + COMPLETION_WINDOW_SECONDS, 3),
            "priority": "interactive" if priority == "interactive" else "batch",
            "window": self._settings.batch_window,
            "metadata": metadata,
            "webhook": webhook,
            "total": total,
        }
        return self._store.create(tenant=tenant, fields=fields)

    def create_anthropic(
        self,
        *,
        tenant: str,
        requests: Sequence[AnthropicBatchRequest],
        webhook_url: str | None = None,
        priority: str = "batch",
    ) -> BatchRecord:
        """An Anthropic message batch: its requests become an input file, one a line, so
        that the same validation and admission run it."""
        self._intake.check_quota(tenant)
        if webhook_url is not None:
            self._intake.check_webhook(webhook_url)

        def write(out: BinaryIO) -> None:
            for item in requests:
                line = {"custom_id": item.custom_id, "params": item.params}
                out.write(json.dumps(line, separators=(",", ":")).encode() + b"\n")

        record = self._files.write_input(tenant=tenant, filename="message_batch.jsonl", write=write)
        return self.create(
            tenant=tenant,
            api="anthropic",
            input_file_id=record.id,
            webhook_url=webhook_url,
            priority=priority,
            total=len(requests),
        )

    def get(self, batch_id: str, *, tenant: str, api: BatchApi | None = None) -> BatchRecord:
        """The batch; one of the other form is as unknown as a missing one."""
        record = self._store.get(batch_id, tenant=tenant)
        if api is not None and record.fields["api"] != api:
            raise NotFound(f"no batch {batch_id!r}", param="batch_id")
        return record

    def list_page(
        self, *, tenant: str, limit: int, after: str | None, api: BatchApi
    ) -> tuple[list[BatchRecord], bool]:
        """A page of the tenant's batches of one form, newest first."""
        found: list[BatchRecord] = []
        more = True
        while len(found) < limit and more:
            page, more = self._store.list_batches(tenant=tenant, limit=limit, after=after)
            if not page:
                break
            found += [b for b in page if b.fields["api"] == api]
            after = page[-1].id
        return found[:limit], more or len(found) > limit

    def cancel(self, batch_id: str, *, tenant: str, api: BatchApi | None = None) -> BatchRecord:
        """Stop a batch: `cancelling` now, `cancelled` once its running lines are ended and
        its files written (by its task, queued in the same step)."""
        record = self.get(batch_id, tenant=tenant, api=api)
        moved = self._store.move(
            batch_id,
            allowed=("validating", "in_progress"),
            status="cancelling",
            fields={"cancelling_at": round(time.time(), 3)},
            wake=True,
        )
        record = self.get(batch_id, tenant=tenant, api=api)
        if not moved and record.status != "cancelling":
            raise Conflict(f"batch {batch_id} is {record.status}: it cannot be cancelled")
        return record

    def delete(self, batch_id: str, *, tenant: str) -> None:
        """Anthropic's delete: only an ended batch goes, with its files."""
        record = self.get(batch_id, tenant=tenant, api="anthropic")
        if not record.ended:
            raise Conflict(f"batch {batch_id} has not ended: cancel it first")
        for name in ("output_file_id", "error_file_id", "input_file_id"):
            file_id = record.fields.get(name)
            if isinstance(file_id, str):
                with contextlib.suppress(NotFound):  # its TTL, or the client, came first
                    retention.delete_file(
                        self._files, self._jobs, self._blob_store, file_id, tenant=tenant
                    )
        self._store.delete(batch_id, tenant=tenant)

    def results(self, batch_id: str, *, tenant: str, api: BatchApi) -> tuple[Any, int] | None:
        """The stream and length of an ended batch's results (its output file), or None
        while it runs."""
        record = self.get(batch_id, tenant=tenant, api=api)
        file_id = record.fields.get("output_file_id")
        if not record.ended:
            return None
        if file_id is None:
            return None
        return self._files.open_content(file_id, tenant=tenant)
