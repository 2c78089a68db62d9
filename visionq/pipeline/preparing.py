"""The prepare step: validate, count and encode a job's images and write its upstream body
(CPU-bound, on the prepare queue's prefork children)."""

from __future__ import annotations

import json
import logging
import time

from visionq import tokens
from visionq.errors import (
    ContextLengthExceeded,
    Internal,
    PayloadTooLarge,
    Unavailable,
    VisionqError,
)
from visionq.media import fit, guards, images
from visionq.models import StoredRequest
from visionq.ops import logs, metrics
from visionq.pipeline.outcomes import bind_job, fail_job, holding_lease, lane_of, miss_deadline
from visionq.runtime import Runtime
from visionq.settings import Settings
from visionq.state.jobs import request_body_name
from visionq.state.records import ImageRecord, JobRecord
from visionq.upstream.body import write_body

log = logging.getLogger("visionq.pipeline")
MAX_PREPARE_ATTEMPTS = 3


def prepare(job_id: str, rt: Runtime) -> str | None:
    """Validate, count and encode every image and write the upstream body.

    Returns the model whose queue the job now waits in, for the caller to send the
    upstream stage a ticket; None when the job is finished (failed here, or canceled or
    finished before we got to it).
    """
    with logs.context(job_id=job_id, stage="prepare"):
        taken = rt.leases.take(job_id, "prepare")
        if taken is None:  # finished, prepared, or a live worker has it
            return None
        attempt, record = taken.attempt, taken.record
        bind_job(record, attempt)
        if attempt == 1:
            waited = time.time() - record.fields["created_at"]
            metrics.STAGE_SECONDS.labels("queue_wait").observe(max(0.0, waited))
        if miss_deadline(rt, record):
            return None
        if attempt > MAX_PREPARE_ATTEMPTS:
            # Each earlier attempt's worker died holding it: an image that kills the worker
            # must end the job, not loop through the workers forever.
            fail_job(
                rt, record, Internal(f"preparing this job stopped its worker {attempt - 1} times")
            )
            return None
        try:
            with holding_lease(rt, job_id), metrics.STAGE_SECONDS.labels("prepare").time():
                prepared = _prepare_job(record, rt)
        except Unavailable as exc:
            # The store is down, not the images bad: the sweeper queues the job again.
            look_in = exc.retry_after or rt.leases.lease
            rt.leases.release(job_id, look_in=look_in, uncount="prepare")
            log.warning("%s; preparing again in %g s", exc.message, look_in)
            return None
        except FileNotFoundError:
            # A fetched or fitted image that another job's removal took between our write
            # and our read (its reference is recorded only once prepared): the next try
            # stores it again. Counted, so an image lost for good fails the job in the end.
            rt.leases.release(job_id, look_in=rt.leases.lease)
            log.warning("an image was removed while it was prepared; preparing again")
            return None
        if prepared is None:
            return None
        model = record.model
        rt.hand_on(job_id, model=model, tenant=record.tenant, lane=lane_of(record))
        image_tokens = sum(image["image_tokens"] for image in prepared)
        metrics.TOKENS.labels(model, "image_estimate").inc(image_tokens)
        log.info(
            "prepared %d images, %d image tokens",
            len(prepared),
            image_tokens,
            extra={"images": len(prepared), "image_tokens": image_tokens},
        )
        return model


def _prepare_job(record: JobRecord, rt: Runtime) -> list[ImageRecord] | None:
    """The job's prepared images; None when the job ended here or was not ours."""
    job_id = record.id
    try:
        # An outage of our store is handed back uncounted, again every few seconds while
        # it lasts: found here, in one quick call, each such try holds this process for
        # moments, not for an image URL's whole download (S3 is written only after it)
        # or for a hung S3's minutes of retried reads.
        rt.store.ping()
        if record.request_in_store:
            record = record.with_request(_stored_request(rt, job_id))
        prepared = [_prepare_image(rt, record, image) for image in record.images]
        input_tokens = _check_context(rt.settings, record, prepared)
        rt.store.write_body(
            job_id,
            lambda out: write_body(
                out,
                api=record.api,
                model=record.model,
                request=record.request,
                formats=[image["format"] for image in prepared],
                open_image=lambda n: rt.store.open_image(prepared[n]["sha256"]),
            ),
        )
    except (Unavailable, FileNotFoundError):
        raise
    except VisionqError as exc:
        fail_job(rt, record, exc)
        return None
    except Exception:
        log.exception("prepare failed unexpectedly")
        fail_job(rt, record, Internal("preparing the images failed unexpectedly"))
        return None
    if rt.jobs.save_images(job_id, prepared, input_tokens=input_tokens):
        return prepared
    # Refused: canceled while we worked (then nothing will send the body), or another
    # prepare of this job got there first (then its upstream call may be sending it).
    latest = rt.jobs.load(job_id)
    if latest is None or latest.finished:
        rt.store.delete_body(job_id)
    return None


def _prepare_image(rt: Runtime, record: JobRecord, image: ImageRecord) -> ImageRecord:
    settings = rt.settings
    original = image.get("blob")
    if original is None:
        stored = rt.fetcher.fetch(
            image["url"],
            lambda chunks: rt.store.put_image(chunks, max_bytes=settings.max_image_bytes),
        )
        original = stored.sha256
    blob = original
    with (
        rt.store.open_image(blob) as fp,
        guards.decode_deadline(settings.image_decode_timeout),
    ):
        # The header decides whether auto-fit applies; then one full decode either way:
        # fitting decodes the whole image too, so it is the validation as well.
        info = images.probe(fp, max_pixels=settings.max_image_pixels)
        size = fp.seek(0, 2)
        resized = False
        if record.request.get("resize", "auto") == "auto" and fit.fit_plan(
            info, byte_size=size, max_base64=settings.max_image_bytes
        ):
            data, info = fit.fit(
                fp,
                info,
                max_pixels=settings.max_image_pixels,
                max_base64=settings.max_image_bytes,
            )
            blob, size = (
                rt.store.put_image([data], max_bytes=settings.max_image_bytes).sha256,
                len(data),
            )
            resized = True
        else:
            fp.seek(0)
            info = images.validate(fp, max_pixels=settings.max_image_pixels)
    encoded = images.base64_length(size) + len(images.data_url_prefix(info.format))
    if encoded > settings.max_image_bytes:
        raise PayloadTooLarge(
            f"image {image['index']} is {encoded} bytes as base64, over MiMo's "
            f"{settings.max_image_bytes}-byte limit"
        )
    return {
        **image,
        "blob": original,
        "format": info.format,
        "width": info.width,
        "height": info.height,
        "bytes": size,
        "sha256": blob,
        "image_tokens": info.tokens,
        "resized": resized,
    }


def _stored_request(rt: Runtime, job_id: str) -> StoredRequest:
    """A request too large for the job's hash, from the store (read once, by prepare).
    One that is gone or unreadable fails the job: no later try would find it."""
    try:
        body, _ = rt.store.open_body(request_body_name(job_id))
        with body:
            request: StoredRequest = json.load(body)
    except (FileNotFoundError, ValueError):
        raise Internal("the job's request is missing from the image store") from None
    return request


def _check_context(settings: Settings, record: JobRecord, prepared: list[ImageRecord]) -> int:
    """Refuse before paying for a call MiMo would refuse: images and text over the context.
    Returns the input's token estimate."""
    image_tokens = sum(image["image_tokens"] for image in prepared)
    estimate = tokens.input_tokens(record.request["messages"], image_tokens)
    window = settings.model_context.get(record.model)
    if window is not None and estimate > window:
        raise ContextLengthExceeded(
            f"the images and text need about {estimate} tokens; {record.model} takes {window}"
        )
    return estimate
