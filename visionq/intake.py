"""Turning a validated request into stored images and a queued job record.

Only cheap checks happen here (the caller is answering an HTTP request within
milliseconds): sizes, the format sniffed from the first bytes, base64 well-formed, URL
syntax. All of them run before anything is stored, so a request refused for its third
image leaves nothing behind. Decoding is the worker's job.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

from visionq import tokens, usage
from visionq.broker import Broker
from visionq.errors import (
    ContextLengthExceeded,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    UrlRefused,
    VisionqError,
)
from visionq.files import FILE_ID_PREFIX
from visionq.media import images
from visionq.media.urlfetch import check_public, check_url_syntax
from visionq.messages import UPLOAD_PREFIX, normalise_messages, text_fields
from visionq.models import JobRequest, StoredRequest, whole_number
from visionq.settings import Settings
from visionq.state.files import FileStore
from visionq.state.idempotency import IdempotencyKeys, IdempotencyRecord
from visionq.state.jobs import (
    REQUEST_INLINE_BYTES,
    BatchLine,
    JobStore,
    new_job_id,
    request_body_name,
)
from visionq.state.records import ImageRecord, ImageSource, JobRecord
from visionq.state.usage import Quotas
from visionq.storage import BlobStore
from visionq.storage.spool import sha256_of
from visionq.upstream.body import image_ref

#: Far above what fits MiMo's context at a useful size, and it bounds the worker's time.
MAX_IMAGES_PER_JOB = 64
#: OpenAI's own cap on messages; parts (text and images) are capped over the whole job,
#: so that a job of empty parts cannot be large while carrying no text.
MAX_MESSAGES_PER_JOB = 2048
MAX_PARTS_PER_JOB = 4096
#: Stripe's limit, which clients that already send the header are written against.
MAX_IDEMPOTENCY_KEY_CHARS = 255


@dataclass
class _Pending:
    """One image of the request, checked but not yet stored."""

    source: ImageSource
    param: str
    url: str | None = None
    data: bytes | None = None
    upload: BinaryIO | None = None
    info: images.ImageInfo | None = None
    #: A vision file's image, stored already.
    blob: str | None = None
    file_id: str | None = None


@dataclass
class _Checked:
    """A request that passed every check, before anything of it is stored."""

    model: str
    messages: list[dict[str, Any]]
    sampling: dict[str, Any]
    pending: list[_Pending]
    webhook_url: str | None


@contextmanager
def _about(param: str) -> Iterator[None]:
    """An error about one image names where it sits in the request, unless it says better."""
    try:
        yield
    except VisionqError as exc:
        exc.param = exc.param or param
        raise


class Intake:
    def __init__(
        self,
        settings: Settings,
        store: BlobStore,
        jobs: JobStore,
        broker: Broker,
        files: FileStore,
        *,
        quotas: Quotas | None = None,
    ) -> None:
        """`quotas`: checked before any job is made (None: none are)."""
        self._settings = settings
        self._store = store
        self._jobs = jobs
        self._broker = broker
        self._files = files
        self._quotas = quotas

    def check_quota(self, tenant: str) -> None:
        """429 `quota_exceeded` once the tenant's token quota for the period is spent."""
        if self._quotas is not None:
            self._quotas.check(tenant, now=time.time())

    def resolve_model(self, request: JobRequest) -> str:
        model = request.model or self._settings.default_model
        if model not in self._settings.models:
            known = ", ".join(self._settings.models)
            raise InvalidRequest(f"unknown model {model!r}; use one of {known}", param="model")
        return model

    def check_images(
        self, messages: list[dict[str, Any]], uploads: Sequence[BinaryIO], *, tenant: str
    ) -> list[_Pending]:
        """Every image of the request checked cheaply, in order; nothing stored yet."""
        pending: list[_Pending] = []
        for m, message in enumerate(messages):
            if not isinstance(message["content"], list):
                continue
            for p, part in enumerate(message["content"]):
                if part["type"] != "image_url":
                    continue
                param = f"messages[{m}].content[{p}].image_url.url"
                pending.append(self._check_one(part["image_url"]["url"], param, uploads, tenant))
        if not pending:
            raise InvalidRequest("a job needs at least one image", param="images")
        if len(pending) > MAX_IMAGES_PER_JOB:
            raise InvalidRequest(f"a job takes at most {MAX_IMAGES_PER_JOB} images", param="images")
        return pending

    def _check_one(
        self, url: str, param: str, uploads: Sequence[BinaryIO], tenant: str
    ) -> _Pending:
        limit = self._settings.max_image_bytes
        if url.startswith(FILE_ID_PREFIX):
            return self._vision_file(url, param, tenant)
        if url.startswith(UPLOAD_PREFIX):
            index = whole_number(url[len(UPLOAD_PREFIX) :])
            if index is None or index >= len(uploads):
                raise InvalidRequest(f"{url!r} names no uploaded file", param=param)
            stream = uploads[index]
            info = self._probe(stream, param)
            stream.seek(0, 2)
            if stream.tell() > limit:
                raise PayloadTooLarge(
                    f"an uploaded image is over the {limit}-byte limit", param=param
                )
            stream.seek(0)
            return _Pending("upload", param, upload=stream, info=info)
        if url.startswith("data:"):
            with _about(param):
                data = images.decode_base64(images.parse_data_url(url, max_chars=limit))
            info = self._probe(io.BytesIO(data), param)
            return _Pending("data_url", param, data=data, info=info)
        try:
            check_url_syntax(url)
        except UrlRefused:
            raise InvalidRequest(
                "an image URL must be http(s)://, a data: URL, a file- id, or upload:<n>",
                param=param,
            ) from None
        if len(url) > 8192:
            raise InvalidRequest("an image URL is at most 8192 characters", param=param)
        return _Pending("url", param, url=url)

    def _vision_file(self, file_id: str, param: str, tenant: str) -> _Pending:
        """A `file-` id of the tenant's vision file: its image, stored already, with the
        size its upload measured (another tenant's id is as unknown as a missing one)."""
        try:
            record = self._files.get(file_id, tenant=tenant)
        except NotFound:
            raise InvalidRequest(f"no file {file_id!r}", param=param) from None
        f = record.fields
        if record.purpose != "vision" or "sha256" not in f:
            raise InvalidRequest(
                f"file {file_id!r} has purpose {record.purpose!r}, not vision", param=param
            )
        info = images.ImageInfo(f["format"], f["width"], f["height"])
        return _Pending("file", param, blob=f["sha256"], file_id=file_id, info=info)

    def check_text(self, messages: list[dict[str, Any]], sampling: dict[str, Any]) -> None:
        """The caps on what a job carries besides its images, before anything is stored:
        messages and parts by number, and every character of text (prompts, system, the
        fields passed through) against `max_text_chars`, naming the field that crosses it.
        Image URLs are not counted: they have caps of their own."""
        if len(messages) > MAX_MESSAGES_PER_JOB:
            raise InvalidRequest(
                f"a job takes at most {MAX_MESSAGES_PER_JOB} messages", param="messages"
            )
        parts = 0
        for m, message in enumerate(messages):
            if isinstance(message["content"], list):
                parts += len(message["content"])
                if parts > MAX_PARTS_PER_JOB:
                    raise InvalidRequest(
                        f"a job takes at most {MAX_PARTS_PER_JOB} content parts",
                        param=f"messages[{m}].content",
                    )
        limit = self._settings.max_text_chars
        used = 0
        stack = list(reversed(list(text_fields(messages, sampling))))
        while stack:
            where, item = stack.pop()
            if isinstance(item, dict):
                used += sum(len(key) for key in item)
                stack.extend((f"{where}.{k}", v) for k, v in reversed(item.items()))
            elif isinstance(item, list):
                stack.extend((f"{where}[{i}]", v) for i, v in reversed(list(enumerate(item))))
            else:
                used += len(item) if isinstance(item, str) else len(json.dumps(item))
            if used > limit:
                raise PayloadTooLarge(
                    f"a job carries at most {limit} characters of text", param=where
                )

    def _check_text_as_given(
        self, request: JobRequest, messages: list[dict[str, Any]], sampling: dict[str, Any]
    ) -> None:
        """`check_text`, naming the field as the client sent it: `prompt` and `system` of
        the shorthand rather than the messages they became."""
        try:
            self.check_text(messages, sampling)
        except VisionqError as exc:
            if request.messages is None and exc.param is not None:
                user = 0 if request.system is None else 1
                if user == 1 and exc.param.startswith("messages[0].content"):
                    exc.param = "system"
                elif exc.param.startswith(f"messages[{user}].content["):
                    exc.param = "prompt"
            raise

    def _check_context(
        self, model: str, messages: list[dict[str, Any]], pending: list[_Pending]
    ) -> None:
        """Refuse at submit what would only fail in the worker: text and the images whose
        size is known already (uploads, data URLs) over the model's context. Images at URLs
        are counted once fetched, by the worker's own check."""
        window = self._settings.model_context[model]
        known = sum(item.info.tokens for item in pending if item.info is not None)
        estimate = tokens.input_tokens(messages, known)
        if estimate > window:
            exc = ContextLengthExceeded(
                f"the text and images need about {estimate} tokens; {model} takes {window}"
            )
            exc.param = "messages"
            raise exc

    def _probe(self, fp: BinaryIO, param: str) -> images.ImageInfo:
        """Format from the first bytes and size from the header: cheap, and it stops bombs."""
        with _about(param):
            return images.probe(fp, max_pixels=self._settings.max_image_pixels)

    def check_webhook(self, url: str) -> None:
        """A webhook is refused at submit, not found out hours later by a failed delivery."""
        if self._settings.webhook_secret is None:
            raise InvalidRequest(
                "this server signs no webhooks: VISIONQ_WEBHOOK_SECRET is not set",
                param="webhook.url",
            )
        try:
            check_public(url, allow_private=self._settings.allow_private_urls)
        except UrlRefused as exc:
            exc.param = "webhook.url"
            raise

    def _put(self, item: _Pending) -> str:
        """An upload received into the store's spool is stored by a rename, not copied (and
        copied from the open spool when its file has been deleted since)."""
        limit = self._settings.max_image_bytes
        if item.upload is not None:
            return self._store.put_upload(item.upload, max_bytes=limit).sha256
        return self._store.put_image([item.data or b""], max_bytes=limit).sha256

    def store(self, pending: list[_Pending]) -> list[ImageRecord]:
        """Store uploaded and inline images content-addressed; URLs are fetched by workers."""
        records = []
        for index, item in enumerate(pending):
            record: ImageRecord = {"index": index, "source": item.source}
            if item.url is not None:
                record["url"] = item.url
            elif item.blob is not None and item.file_id is not None:
                record["blob"], record["file_id"] = item.blob, item.file_id
            else:
                record["blob"] = self._put(item)
            records.append(record)
        return records

    def _survive_deletes(self, pending: list[_Pending], records: list[ImageRecord]) -> None:
        """Put back any image that another job's delete removed while we stored it.

        Images are stored by content, so two jobs may share one file. By now our job's
        reference to the file is recorded, so a delete that starts later keeps the file.
        A delete that was already under way holds the image's lock: we wait until the
        lock is gone, then store the bytes again if the file went with it.
        """
        for item, record in zip(pending, records, strict=True):
            sha = record.get("blob")
            if sha is None:
                continue
            deadline = time.monotonic() + 15
            while self._jobs.blobs.being_deleted(sha) and time.monotonic() < deadline:
                time.sleep(0.01)
            if not self._store.has_image(sha):
                self._put(item)

    def _checked(self, request: JobRequest, uploads: Sequence[BinaryIO], tenant: str) -> _Checked:
        """Every check of `submit` that needs nothing stored: the request as it will be
        kept, and its images checked but not yet stored."""
        model = self.resolve_model(request)
        messages = normalise_messages(request, len(uploads))
        sampling = request.sampling()
        self._check_text_as_given(request, messages, sampling)
        pending = self.check_images(messages, uploads, tenant=tenant)
        self._check_context(model, messages, pending)
        webhook_url = request.webhook.url if request.webhook else None
        if webhook_url is not None:
            self.check_webhook(webhook_url)
        return _Checked(model, messages, sampling, pending, webhook_url)

    def check(self, request: JobRequest, *, tenant: str) -> None:
        """Raise what `submit` would refuse `tenant`'s request for, storing nothing (a
        batch's lines are checked this way before any of them becomes a job)."""
        self._checked(request, (), tenant)

    def submit(
        self,
        request: JobRequest,
        *,
        tenant: str,
        uploads: Sequence[BinaryIO] = (),
        remember: IdempotencyRecord | None = None,
        request_id: str | None = None,
        batch: BatchLine | None = None,
        deadline: float | None = None,
    ) -> JobRecord:
        """Store the images and write the job with its prepare task's message, together.
        A `batch` line's prepare message waits behind every other (`Broker.prepare_push`).
        `deadline`: from `Cancel-After`; the earlier of it and the body's holds."""
        self.check_quota(tenant)
        deadline = _earliest(deadline, request.deadline)
        if deadline is not None and deadline <= time.time():
            raise InvalidRequest("the deadline has passed already", param="deadline")
        checked = self._checked(request, uploads, tenant)
        messages, pending = checked.messages, checked.pending
        image_records = self.store(pending)
        counter = iter(range(len(pending)))
        for message in messages:
            if isinstance(message["content"], list):
                for part in message["content"]:
                    if part["type"] == "image_url":
                        part["image_url"] = {**part["image_url"], "url": image_ref(next(counter))}
        stored_request: StoredRequest = {
            "messages": messages,
            "max_completion_tokens": request.max_completion_tokens,
            "sampling": checked.sampling,
            "resize": request.resize,
        }
        job_id, inline = self._keep_request(stored_request)
        try:
            record = self._jobs.create(
                tenant=tenant,
                model=checked.model,
                api=request.api,
                request=inline,
                images=image_records,
                webhook_url=checked.webhook_url,
                metadata=request.metadata,
                remember=remember,
                request_id=request_id,
                message=functools.partial(
                    self._broker.prepare_push, behind=batch is not None and batch.behind
                ),
                job_id=job_id,
                batch=batch,
                deadline=deadline,
            )
        except BaseException:
            if inline is None:
                self._store.delete_body(request_body_name(job_id))
            raise
        self._survive_deletes(pending, image_records)
        return record

    def submit_once(
        self,
        idempotency: IdempotencyKeys,
        key: str,
        request: JobRequest,
        *,
        tenant: str,
        uploads: Sequence[BinaryIO] = (),
        request_id: str | None = None,
        deadline: float | None = None,
    ) -> tuple[JobRecord, bool]:
        """Submit under an Idempotency-Key: the job, and whether this call created it.

        The first request with the key reserves it and makes the job, which names itself in
        the key in the same step; a retry with the same body gets that job back, and the
        same key with another body is a Conflict. A request that fails before making its job
        frees the key, so that a retry can.
        """
        if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_CHARS:
            raise InvalidRequest(
                f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters",
                param="Idempotency-Key",
            )
        body = fingerprint(request, uploads)
        existing = idempotency.reserve(tenant, key, body)
        if existing is not None:
            return self._jobs.get(existing, tenant=tenant), False
        try:
            record = self.submit(
                request,
                tenant=tenant,
                uploads=uploads,
                remember=idempotency.remember(tenant, key, body),
                request_id=request_id,
                deadline=deadline,
            )
        except BaseException:
            idempotency.release(tenant, key, body)
            raise
        return record, True

    def _keep_request(self, stored: StoredRequest) -> tuple[str, StoredRequest | None]:
        """The new job's id, and its request when small enough for the job's hash; a larger
        one goes to the store (the worker reads it once, to write the upstream body)."""
        job_id = new_job_id()
        encoded = json.dumps(stored, separators=(",", ":")).encode()
        if len(encoded) <= REQUEST_INLINE_BYTES:
            return job_id, stored
        self._store.write_body(request_body_name(job_id), lambda out: out.write(encoded))
        return job_id, None

    def count_tokens(
        self, request: JobRequest, *, tenant: str, uploads: Sequence[BinaryIO] = ()
    ) -> dict[str, Any]:
        """`POST /v1/tokens`: MiMo's count for each image from its header, the input's
        estimate and, with a price for the model, what that input costs (as new input:
        what the prompt cache saves is known only after the call); nothing is stored."""
        model = self.resolve_model(request)
        messages = normalise_messages(request, len(uploads))
        self._check_text_as_given(request, messages, request.sampling())
        pending = self.check_images(messages, uploads, tenant=tenant)
        counted = []
        for index, item in enumerate(pending):
            if item.info is None:
                raise InvalidRequest(
                    "token counting needs the image bytes: send a data URL or an upload",
                    param=item.param,
                )
            counted.append(
                {
                    "index": index,
                    "format": item.info.format,
                    "width": item.info.width,
                    "height": item.info.height,
                    "image_tokens": item.info.tokens,
                }
            )
        image_tokens = sum(item.info.tokens for item in pending if item.info is not None)
        answer: dict[str, Any] = {
            "images": counted,
            "image_tokens": image_tokens,
            "input_tokens": tokens.input_tokens(messages, image_tokens),
        }
        if (price := self._settings.prices.get(model)) is not None:
            nanos = usage.cost_nanos(answer["input_tokens"], 0, 0, price)
            answer["input_cost"] = usage.dollars(nanos)
        return answer


def _earliest(*deadlines: float | None) -> float | None:
    given = [d for d in deadlines if d is not None]
    return min(given) if given else None


def fingerprint(request: JobRequest, uploads: Sequence[BinaryIO]) -> str:
    """The body's identity for an Idempotency-Key: the validated request, canonical, and
    each upload's bytes (a spool was hashed already, while it was received)."""
    # json.dumps, not pydantic's dump: a lone surrogate ("\ud800") is valid JSON text and
    # must fingerprint like any other character rather than fail to encode.
    canonical = json.dumps(request.model_dump(mode="json", exclude_none=True), sort_keys=True)
    digest = hashlib.sha256(canonical.encode())
    for stream in uploads:
        digest.update(bytes.fromhex(sha256_of(stream)))
    return digest.hexdigest()
