"""The batch step: validate a batch's input, admit its lines as jobs a window at a time,
stop them on a cancel or at expiry, and write its result files once every line is done
(the batch task, on the prepare queue's processes: validation is CPU-bound).

One call does whatever the batch needs now, under the batch's lock (`BatchStore.lock`),
and goes round again while it was woken meanwhile. A worker that dies leaves a lock that
runs out; the sweeper then queues the task again, and the next call carries on from what
Redis holds: the cursor moves only with a line's job (`jobs/create`), and the files are
written from the jobs, so nothing is admitted twice or counted twice.

Why a window and not 50,000 messages at once: each queued job costs a hash and a broker
message in Redis (about 2.5 KB together), so a 50,000-line batch would take 125 MB before
its first call, and each interactive job would queue behind all of it in the broker's
first-in-first-out list. A window of lines keeps Redis flat, whatever the batch's size; the
lines' prepare messages wait behind every interactive one (`Broker.prepare_push`), and
their upstream turns behind interactive turns (the pacer's lanes).

The files are written at the end, not line by line: S3 has no append, a file written by
`BlobStore.write_body` appears only once complete (a crash mid-way leaves none), and
a second run writes the same lines with the same `batch_req_` ids.
"""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
from typing import IO, Any

from visionq import batch_objects, batchlines
from visionq.errors import BatchExpired, Canceled, StaleLine, Unavailable, VisionqError
from visionq.intake import Intake
from visionq.ops import logs
from visionq.runtime import Runtime
from visionq.state.batches import BatchRecord
from visionq.state.files import new_file_id
from visionq.state.jobs import BatchLine
from visionq.state.records import JobRecord

log = logging.getLogger("visionq.pipeline")

#: At most this many line errors are reported for a file that fails validation.
MAX_REPORTED_ERRORS = 100
#: Lines whose jobs the finalizer reads from Redis in one round trip.
READ_CHUNK = 500


def _intake(rt: Runtime) -> Intake:
    """The intake a line goes through, as a job submitted to the API does."""
    return Intake(rt.settings, rt.store, rt.jobs, rt.broker, rt.files.records, quotas=rt.quotas)


def advance(batch_id: str, rt: Runtime) -> None:
    """Do what the batch needs now: validate, admit, stop or finalize it."""
    token = uuid.uuid4().hex
    with logs.context(batch_id=batch_id, stage="batch"):
        if not rt.batches.lock(batch_id, token):
            return  # another worker advances it, and sees the wake-up when it lets go
        rt.keeper.hold(batch_id, lambda: rt.batches.renew_lock(batch_id, token))
        try:
            while True:
                _step(batch_id, rt)
                if not rt.batches.unlock(batch_id, token):
                    return
        finally:
            rt.keeper.drop(batch_id)


def _step(batch_id: str, rt: Runtime) -> None:
    batch = rt.batches.load(batch_id)
    if batch is None or batch.ended:
        return
    if batch.status == "validating":
        _validate(batch, rt)
        batch = rt.batches.load(batch_id)
        if batch is None or batch.ended:
            return
    now = time.time()
    if (
        batch.status == "in_progress"
        and now >= batch.fields["expires_at"]
        and not batch.fields.get("ending")
    ):
        rt.batches.move(batch_id, allowed=("in_progress",), fields={"ending": "expired"})
        batch = rt.batches.load(batch_id)
        if batch is None:
            return
    if batch.status == "cancelling" or batch.fields.get("ending"):
        _stop_lines(batch, rt)
    elif batch.status == "in_progress":
        _admit(batch, rt)
    batch = rt.batches.load(batch_id)
    if batch is None or batch.ended:
        return
    stopping = batch.status == "cancelling" or bool(batch.fields.get("ending"))
    all_in = batch.count("admitted") >= batch.count("total")
    if batch.count("in_flight") <= 0 and (stopping or all_in):
        _finalize(batch, rt)
    else:
        rt.batches.look_at(
            batch_id, min(now + 2 * rt.batches.lock_seconds, batch.fields["expires_at"])
        )


def _validate(batch: BatchRecord, rt: Runtime) -> None:
    """Check every line as the job API would, streaming the file; the batch moves to
    `in_progress` with its line count, or fails with the first errors by line number."""
    f = batch.fields
    errors: list[dict[str, Any]] = []
    total = 0
    try:
        record = rt.files.get(f["input_file_id"], tenant=batch.tenant)
        if record.purpose != "batch":
            raise batchlines.LineError(
                "invalid_file", "the input file's purpose is not batch", "input_file_id"
            )
        total, errors = _check_lines(batch, rt)
    except batchlines.LineError as exc:
        errors.append({"code": exc.code, "line": None, "message": exc.message, "param": exc.param})
    except Unavailable:
        raise
    except VisionqError as exc:
        errors.append(
            {"code": exc.type, "line": None, "message": exc.message, "param": "input_file_id"}
        )
    if not errors and total == 0:
        errors.append(
            {"code": "empty_file", "line": None, "message": "the file has no lines", "param": None}
        )
    if errors:
        rt.batches.finish(
            batch.id,
            allowed=("validating",),
            status="failed",
            fields={"errors": errors[:MAX_REPORTED_ERRORS], "total": total},
        )
        log.info("batch failed validation: %d errors", len(errors))
        return
    rt.batches.move(
        batch.id,
        allowed=("validating",),
        status="in_progress",
        fields={"total": total, "in_progress_at": round(time.time(), 3)},
    )
    log.info("batch validated: %d lines", total)


def _check_lines(batch: BatchRecord, rt: Runtime) -> tuple[int, list[dict[str, Any]]]:
    f = batch.fields
    api = f["api"]
    seen: set[str] = set()
    errors: list[dict[str, Any]] = []
    total = 0
    stream, _ = rt.files.open_content(f["input_file_id"], tenant=batch.tenant)
    with stream:
        for line in batchlines.read_lines(stream, max_bytes=rt.settings.max_request_bytes):
            total += 1
            if total > batchlines.MAX_LINES:
                errors.append(
                    {
                        "code": "too_many_requests",
                        "line": line.number,
                        "message": f"a batch takes at most {batchlines.MAX_LINES} requests",
                        "param": None,
                    }
                )
                break
            try:
                custom_id, request = batchlines.parse_line(api, line.raw)
                if custom_id in seen:
                    raise batchlines.LineError(
                        "duplicate_custom_id",
                        f"custom_id {custom_id!r} is on an earlier line too",
                        "custom_id",
                    )
                seen.add(custom_id)
                _intake(rt).check(request, tenant=batch.tenant)
            except batchlines.LineError as exc:
                errors.append(
                    {
                        "code": exc.code,
                        "line": line.number,
                        "message": exc.message,
                        "param": exc.param,
                    }
                )
            except Unavailable:
                raise
            except VisionqError as exc:
                prefix = "params" if api == "anthropic" else "body"
                param = f"{prefix}.{exc.param}" if exc.param else prefix
                errors.append(
                    {"code": exc.type, "line": line.number, "message": exc.message, "param": param}
                )
            if len(errors) >= MAX_REPORTED_ERRORS:
                break
    return total, errors


def _admit(batch: BatchRecord, rt: Runtime) -> None:
    """Make jobs of the next lines until the window is full or the input ends."""
    f = batch.fields
    room = f["window"] - batch.count("in_flight")
    if room <= 0 or batch.count("admitted") >= batch.count("total"):
        return
    stream = rt.files.open_content_at(
        f["input_file_id"], batch.count("cursor"), tenant=batch.tenant
    )
    admitted = 0
    with stream:
        for line in batchlines.read_lines(
            stream,
            start=batch.count("cursor"),
            first=batch.count("line"),
            max_bytes=rt.settings.max_request_bytes,
        ):
            if admitted >= room:
                break
            if not _admit_line(batch, line, rt):
                return
            admitted += 1
    if admitted:
        log.info("admitted %d lines", admitted)


def _admit_line(batch: BatchRecord, line: batchlines.Line, rt: Runtime) -> bool:
    """One line as a job; False when the batch has moved past it (stop admitting)."""
    custom_id = batchlines.custom_id_of(line.raw)
    try:
        custom_id, request = batchlines.parse_line(batch.fields["api"], line.raw)
        _intake(rt).submit(
            request,
            tenant=batch.tenant,
            batch=BatchLine(
                batch.id,
                line.index,
                custom_id,
                line.end,
                behind=batch.fields["priority"] == "batch",
            ),
        )
    except StaleLine:
        return False
    except Unavailable:
        raise
    except (batchlines.LineError, VisionqError) as exc:
        # Valid when checked, refused now (a file it names was deleted since): failed in
        # its place.
        error = (
            exc.to_dict()
            if isinstance(exc, VisionqError)
            else {"type": exc.code, "message": exc.message, "param": exc.param}
        )
        return rt.batches.refuse_line(
            batch.id, line=line.index, next_cursor=line.end, custom_id=custom_id, error=error
        )
    return True


def _stop_lines(batch: BatchRecord, rt: Runtime) -> None:
    """End every unfinished line of a cancelled or expired batch (a call in flight has
    its answer discarded, as for a canceled job)."""
    error: VisionqError = (
        Canceled("the batch was cancelled")
        if batch.status == "cancelling"
        else BatchExpired("the batch's completion window ended before this line ran")
    )
    for job_id in rt.batches.open_jobs(batch.id):
        rt.jobs.end_line(job_id, error)


def _finalize(batch: BatchRecord, rt: Runtime) -> None:
    """Write the result files from the lines' jobs, in line order, then end the batch
    with the counts of what was written."""
    output_id = batch.fields.get("output_file_next") or new_file_id()
    error_id = batch.fields.get("error_file_next") or new_file_id()
    reserved = {"output_file_next": output_id, "error_file_next": error_id}
    if batch.status == "in_progress":
        rt.batches.move(
            batch.id,
            allowed=("in_progress",),
            status="finalizing",
            fields={"finalizing_at": round(time.time(), 3), **reserved},
        )
    elif "output_file_next" not in batch.fields:
        rt.batches.move(batch.id, allowed=(batch.status,), fields=reserved)
    ending = batch.fields.get("ending")
    final = "cancelled" if batch.status == "cancelling" else ending or "completed"
    with tempfile.TemporaryFile() as output, tempfile.TemporaryFile() as errors:
        counts = _write_lines(batch, rt, output, errors, final=final)
        fields: dict[str, Any] = {**counts, "in_flight": 0}
        if counts["completed"] or (batch.fields["api"] == "anthropic" and output.tell()):
            fields["output_file_id"] = _store_file(rt, batch, output, "output", output_id)
        if errors.tell():
            fields["error_file_id"] = _store_file(rt, batch, errors, "errors", error_id)
    if rt.batches.finish(
        batch.id, allowed=("finalizing", "cancelling"), status=final, fields=fields
    ):
        log.info(
            "batch %s: %d completed, %d failed",
            final,
            counts["completed"],
            counts["failed"] + counts["expired"],
        )


def _store_file(rt: Runtime, batch: BatchRecord, spool: IO[bytes], kind: str, file_id: str) -> str:
    spool.seek(0)
    record = rt.files.write_output(
        file_id,
        tenant=batch.tenant,
        filename=f"{batch.id}_{kind}.jsonl",
        write=lambda out: _copy(spool, out),
    )
    return record.id


def _copy(source: IO[bytes], target: IO[bytes]) -> None:
    while chunk := source.read(1024 * 1024):
        target.write(chunk)


def _write_lines(
    batch: BatchRecord, rt: Runtime, output: IO[bytes], errors: IO[bytes], *, final: str
) -> dict[str, int]:
    """Every line's result, in line order; what was written, counted. Anthropic's one
    results file gets every line; OpenAI's output file the successes and its error file
    the rest."""
    counts = dict.fromkeys(
        (
            "completed",
            "failed",
            "canceled",
            "expired",
            "prompt_tokens",
            "completion_tokens",
            "cached_tokens",
            "reasoning_tokens",
        ),
        0,
    )
    anthropic = batch.fields["api"] == "anthropic"
    refused = rt.batches.refused(batch.id)
    index = 0

    def write(
        line: int, custom_id: str, job: JobRecord | None, error: dict[str, Any] | None
    ) -> None:
        kind = _kind(job, error)
        counts[kind] += 1
        if job is not None and kind == "completed":
            _add_usage(counts, job.fields["result"]["usage"])
        if anthropic:
            output.write(batch_objects.anthropic_line(custom_id, job, error))
            return
        ok, data = batch_objects.openai_line(batch.id, line, custom_id, job, error)
        (output if ok else errors).write(data)

    while entries := rt.batches.line_jobs(batch.id, index, READ_CHUNK):
        jobs = rt.jobs.load_many([e for e in entries if not e.startswith("!")])
        for entry in entries:
            index += 1
            if entry.startswith("!"):
                outcome = refused[int(entry[1:])]
                write(index, outcome["custom_id"], None, outcome["error"])
                continue
            job = jobs.get(entry)
            if job is None:
                gone = {
                    "type": "internal",
                    "message": "the line's job expired before the batch ended",
                }
                write(index, "", None, gone)
            else:
                write(index, str(job.fields.get("custom_id", "")), job, None)
    if index < batch.count("total"):
        _write_unadmitted(batch, rt, index, write, final=final)
    return counts


def _add_usage(counts: dict[str, int], usage: dict[str, Any]) -> None:
    """One line's upstream usage into the batch's sums (OpenAI's detail fields)."""
    counts["prompt_tokens"] += int(usage.get("prompt_tokens") or 0)
    counts["completion_tokens"] += int(usage.get("completion_tokens") or 0)
    details = usage.get("prompt_tokens_details") or {}
    counts["cached_tokens"] += int(details.get("cached_tokens") or 0)
    details = usage.get("completion_tokens_details") or {}
    counts["reasoning_tokens"] += int(details.get("reasoning_tokens") or 0)


def _kind(job: JobRecord | None, error: dict[str, Any] | None) -> str:
    if job is not None and job.status == "succeeded":
        return "completed"
    error = error or (job.fields.get("error") if job is not None else None) or {}
    kind = error.get("type")
    if kind in ("canceled", "batch_cancelled"):
        return "canceled"
    return "expired" if kind == "batch_expired" else "failed"


def _write_unadmitted(
    batch: BatchRecord, rt: Runtime, index: int, write: Any, *, final: str
) -> None:
    """The lines a cancel or the expiry stopped before they became jobs."""
    code, message = (
        ("batch_expired", "the batch's completion window ended before this line ran")
        if final == "expired"
        else ("batch_cancelled", "the batch was cancelled before this line ran")
    )
    f = batch.fields
    stream = rt.files.open_content_at(
        f["input_file_id"], batch.count("cursor"), tenant=batch.tenant
    )
    with stream:
        for line in batchlines.read_lines(
            stream,
            start=batch.count("cursor"),
            first=batch.count("line"),
            max_bytes=rt.settings.max_request_bytes,
        ):
            write(
                line.index,
                batchlines.custom_id_of(line.raw),
                None,
                {"type": code, "message": message},
            )
