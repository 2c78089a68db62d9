"""The client side of the `visionq` command: submit, get, list, cancel, delete, watch, tokens,
usage, and `batch create|get|list|cancel|watch|results`.

Every call goes through `visionq.client.Client`; there is no HTTP code here. The server
and key come from VISIONQ_URL (default http://127.0.0.1:8000; `--url` overrides it) and
VISIONQ_KEY. Output is for people by default: the answer of a succeeded job, a table for
`list`, a line per image for `tokens`. `--json` prints the API's JSON instead, as one
document, for scripts. While waiting, a status line with the elapsed time is redrawn on
stderr, only when stderr is a terminal, so pipes and logs get nothing but the result.
A batch's progress (images uploaded, then lines done of total, rate and ETA) goes to
stderr too: a bar redrawn in place on a terminal, else a plain line on each change of
state and at most one every few seconds while the count moves.

exit codes:
  0  success
  1  the job failed or was canceled (any of them, for `watch`); the batch failed,
     expired or was cancelled
  2  usage error: bad arguments, a file that cannot be read
  3  the API refused the request (4xx: bad input, not found, unauthorized, conflict,
     rate limited), or a batch's results were asked for before it ended
  4  the service is unreachable or unavailable (no connection, time-out, 5xx)
  5  timed out waiting for the job(s) to finish (`--timeout`)
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Self, TextIO

from visionq.client import (
    JOB_STATUSES,
    ApiError,
    Batch,
    BatchNotEnded,
    Client,
    Job,
    Unreachable,
    WaitTimeout,
)
from visionq.client._progress import Reporter

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_UNAVAILABLE = 4
EXIT_TIMEOUT = 5
EXIT_INTERRUPTED = 130

_EPILOG = __doc__[__doc__.index("exit codes:") :]

Command = Callable[[Client, argparse.Namespace], int]


class Progress:
    """A status line on `stream`, redrawn in place with the elapsed time by a ticker thread.

    Only when `stream` is a terminal: otherwise every method is a no-op, so a script that
    pipes or logs stderr sees no control characters.
    """

    def __init__(self, stream: TextIO, interval: float = 0.2) -> None:
        self.enabled = stream.isatty()
        self._stream = stream
        self._interval = interval
        self._text = ""
        self._start = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, daemon=True, name="vq-progress")

    def __enter__(self) -> Self:
        if self.enabled:
            self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._stop.set()
            self._ticker.join()
            with self._lock:
                self._clear()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def show(self, text: str) -> None:
        with self._lock:
            self._text = text
            self._draw()

    def print(self, line: str) -> None:
        """A line of output on stdout that the status line must not overwrite."""
        with self._lock:
            self._clear()
            print(line, flush=True)
            self._draw()

    def _tick(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                self._draw()

    def _draw(self) -> None:
        if self.enabled and self._text:
            self._stream.write(f"\r\x1b[K{self._text}  {self.elapsed:.1f}s")
            self._stream.flush()

    def _clear(self) -> None:
        if self.enabled:
            self._stream.write("\r\x1b[K")
            self._stream.flush()


def _follow(
    client: Client, job_ids: Sequence[str], timeout: float, *, log_changes: bool = False
) -> tuple[Job, ...]:
    """Wait for the jobs with the progress line; with `log_changes`, each status change is
    also a line on stdout (`watch`)."""
    with Progress(sys.stderr) as progress:
        states: dict[str, str] = {}

        def on_update(job: Job) -> None:
            states[job.id] = job.status
            if len(states) == 1:
                progress.show(f"{job.id} {job.status}")
            else:
                counts = Counter(states.values())
                progress.show(", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
            if log_changes:
                progress.print(f"{progress.elapsed:7.1f}s  {_describe(job)}")

        # Without a reader for the updates, the client can hold each long-poll longer.
        wanted = progress.enabled or log_changes
        return client.watch(job_ids, timeout=timeout, on_update=on_update if wanted else None)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _outcome(jobs: Sequence[Job]) -> int:
    return EXIT_JOB_FAILED if any(job.status in ("failed", "canceled") for job in jobs) else 0


def _describe(job: Job) -> str:
    """`job_... failed: invalid_image: ...`, `job_... canceled: canceled by the client`."""
    if job.error is None:
        return f"{job.id} {job.status}"
    kind = "" if job.error.type == job.status else f"{job.error.type}: "
    return f"{job.id} {job.status}: {kind}{job.error.message}"


def _show_job(job: Job, as_json: bool) -> int:
    if as_json:
        _print_json(job.raw)
    elif job.status == "succeeded":
        print(job.content)
    elif job.error is not None:
        print(_describe(job), file=sys.stderr)
    else:
        print(_describe(job))
    return _outcome([job])


def _submit(client: Client, args: argparse.Namespace) -> int:
    job = client.submit(args.images, args.prompt, model=args.model, webhook_url=args.webhook)
    if args.wait:
        [job] = _follow(client, [job.id], args.timeout)
    return _show_job(job, args.json)


def _get(client: Client, args: argparse.Namespace) -> int:
    if args.wait:
        [job] = _follow(client, [args.job_id], args.timeout)
    else:
        job = client.get(args.job_id)
    return _show_job(job, args.json)


def _watch(client: Client, args: argparse.Namespace) -> int:
    jobs = _follow(client, args.job_ids, args.timeout, log_changes=not args.json)
    if args.json:
        _print_json([job.raw for job in jobs])
    return _outcome(jobs)


def _cancel(client: Client, args: argparse.Namespace) -> int:
    job = client.cancel(args.job_id)
    if args.json:
        _print_json(job.raw)
    else:
        print(f"{job.id} {job.status}")
    return EXIT_OK


def _delete(client: Client, args: argparse.Namespace) -> int:
    client.delete(args.job_id)
    if args.json:
        _print_json({"id": args.job_id, "object": "job", "deleted": True})
    else:
        print(f"{args.job_id} deleted")
    return EXIT_OK


def job_table(jobs: Sequence[Job]) -> str:
    """`list`'s compact table: one row per job, columns as wide as their widest cell."""
    rows = [("ID", "STATUS", "MODEL", "CREATED", "IMAGES", "TOKENS")]
    for job in jobs:
        created = datetime.fromtimestamp(job.created_at).strftime("%Y-%m-%d %H:%M:%S")
        tokens = job.usage_estimate.get("image_tokens")
        row = (job.id, job.status, job.model, created, str(len(job.images)), str(tokens or "-"))
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows)
    return "\n".join(line.rstrip() for line in lines)


def _list(client: Client, args: argparse.Namespace) -> int:
    jobs = list(client.list(args.status, limit=args.limit))
    if args.json:
        _print_json([job.raw for job in jobs])
    else:
        print(job_table(jobs) if jobs else "no jobs")
    return EXIT_OK


def _tokens(client: Client, args: argparse.Namespace) -> int:
    count = client.count_tokens(args.images, model=args.model)
    if args.json:
        _print_json(count.raw)
        return EXIT_OK
    width = max(len(name) for name in [*args.images, "total"])
    for image in count.images:
        size = f"{image.format} {image.width}x{image.height}"
        print(f"{args.images[image.index]:<{width}}  {size:<16} {image.image_tokens:>8} tokens")
    print(f"{'total':<{width}}  {'':<16} {count.image_tokens:>8} tokens")
    return EXIT_OK


#: `usage`'s number columns: the bucket's counter under each heading.
_USAGE_COLUMNS = (
    ("REQUESTS", "requests"),
    ("PROMPT", "prompt_tokens"),
    ("CACHED", "cached_tokens"),
    ("COMPLETION", "completion_tokens"),
    ("REASONING", "reasoning_tokens"),
    ("IMAGE", "image_tokens"),
)


def usage_table(answer: dict[str, Any]) -> str:
    """`usage`'s table: a row per bucket, then the total; cost when the API has prices."""
    group_by = answer["group_by"]
    labels = [g for g in group_by if g not in ("day", "hour")]
    clock = "%Y-%m-%d %H:00" if "hour" in group_by else "%Y-%m-%d"
    timed = "day" in group_by or "hour" in group_by
    priced = "cost" in answer["total"]
    head = [*(["PERIOD"] if timed else []), *(g.upper() for g in labels)]
    first_number = len(head)
    head += [name for name, _ in _USAGE_COLUMNS] + (["COST $"] if priced else [])

    def numbers(bucket: dict[str, Any]) -> list[str]:
        cost = [f"{bucket['cost']:.6f}"] if priced else []
        return [f"{bucket[key]:,}" for _, key in _USAGE_COLUMNS] + cost

    rows = [head]
    for bucket in answer["data"]:
        when = datetime.fromtimestamp(bucket["start_time"], UTC).strftime(clock)
        names = [str(bucket.get(g) or "-") for g in labels]
        rows.append([*([when] if timed else []), *names, *numbers(bucket)])
    rows.append(["total", *[""] * (first_number - 1), *numbers(answer["total"])])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join(
        "  ".join(
            cell.rjust(width) if i >= first_number else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    )


def _usage(client: Client, args: argparse.Namespace) -> int:
    answer = client.usage(start=args.since, end=args.until, group_by=args.by, tenant=args.tenant)
    if args.json:
        _print_json(answer)
    else:
        print(usage_table(answer))
    return EXIT_OK


def batch_summary(batch: Batch) -> str:
    """`batch_... in_progress 120/500 lines (118 completed, 2 failed)`, and why it did not
    complete when it did not."""
    counts = batch.request_counts
    text = f"{batch.id} {batch.status}"
    if counts.total:
        parts = [f"{counts.completed} completed", f"{counts.failed} failed"]
        if counts.canceled:
            parts.append(f"{counts.canceled} canceled")
        text += f" {counts.done}/{counts.total} lines ({', '.join(parts)})"
    if batch.reason:
        text += f": {batch.reason}"
    return text


def _batch_outcome(batch: Batch) -> int:
    return EXIT_JOB_FAILED if batch.finished and batch.status != "completed" else EXIT_OK


def _show_batch(batch: Batch, as_json: bool) -> int:
    if as_json:
        _print_json(batch.raw)
    else:
        print(batch_summary(batch))
    return _batch_outcome(batch)


def _metadata(pairs: Sequence[str]) -> dict[str, str] | None:
    if not pairs:
        return None
    bad = [pair for pair in pairs if "=" not in pair]
    if bad:
        raise ValueError(f"--metadata takes KEY=VALUE, not {bad[0]!r}")
    return dict(pair.split("=", 1) for pair in pairs)


def _batch_create(client: Client, args: argparse.Namespace) -> int:
    sources: list[str] = args.inputs
    jsonl = len(sources) == 1 and sources[0].lower().endswith(".jsonl")
    try:
        options: dict[str, Any] = {
            "metadata": _metadata(args.metadata),
            "webhook_url": args.webhook,
            "priority": args.priority,
        }
        if jsonl:
            given = [f"--{name}" for name in ("prompt", "model", "system") if getattr(args, name)]
            if given:
                raise ValueError(f"{', '.join(given)}: a JSONL input carries its own bodies")
            upload = Reporter(sys.stderr, "KiB")
            batch = client.batches.create_from_jsonl(
                sources[0],
                on_upload=lambda sent, size: upload.update(
                    "uploading", -(-sent // 1024), -(-size // 1024)
                ),
                **options,
            )
        else:
            if not args.prompt:
                raise ValueError("--prompt is needed for a batch of images")
            upload = Reporter(sys.stderr, "images")
            batch = client.batches.create_from_images(
                sources,
                args.prompt,
                model=args.model,
                system=args.system,
                on_upload=lambda done, total: upload.update("uploading", done, total),
                **options,
            )
    except ValueError as exc:
        _error(str(exc))
        return EXIT_USAGE
    upload.close()
    if not args.wait:
        return _show_batch(batch, args.json)
    return _follow_batch(client, batch.id, args)


def _follow_batch(client: Client, batch_id: str, args: argparse.Namespace) -> int:
    """Draw the batch's progress until it ends, then write its results (`-o FILE`, else
    stdout; with `--json` and no `-o`, the batch object instead); exit 1 with the reason
    unless it completed."""
    progress = Reporter(sys.stderr, "lines")

    def on_progress(batch: Batch) -> None:
        progress.update(batch.status, batch.request_counts.done, batch.request_counts.total)

    try:
        batch = client.batches.wait(batch_id, on_progress=on_progress, timeout=args.timeout)
    finally:
        progress.close()
    if batch.status == "failed":  # in validation: nothing ran, there are no results
        _error(batch_summary(batch))
        for error in batch.errors[1:]:
            where = f"line {error.line}: " if error.line is not None else ""
            print(f"  {error.code}: {where}{error.message}", file=sys.stderr)
        return EXIT_JOB_FAILED
    if args.output:
        written = client.batches.download_results(batch.id, args.output)
        print(f"{written} results written to {args.output}", file=sys.stderr)
    elif args.json:
        _print_json(batch.raw)
    else:
        sys.stdout.flush()
        client.batches.download_results(batch.id, sys.stdout.buffer)
    if batch.status != "completed":
        _error(batch_summary(batch))
    return _batch_outcome(batch)


def _batch_get(client: Client, args: argparse.Namespace) -> int:
    return _show_batch(client.batches.get(args.batch_id), args.json)


def _batch_cancel(client: Client, args: argparse.Namespace) -> int:
    _show_batch(client.batches.cancel(args.batch_id), args.json)
    return EXIT_OK


def _batch_watch(client: Client, args: argparse.Namespace) -> int:
    return _follow_batch(client, args.batch_id, args)


def _batch_results(client: Client, args: argparse.Namespace) -> int:
    if args.output:
        written = client.batches.download_results(args.batch_id, args.output)
        print(f"{written} results written to {args.output}", file=sys.stderr)
    else:
        client.batches.download_results(args.batch_id, sys.stdout.buffer)
    return EXIT_OK


def batch_table(batches: Sequence[Batch]) -> str:
    """`batch list`'s table: one row per batch, columns as wide as their widest cell."""
    rows = [("ID", "STATUS", "CREATED", "DONE", "TOTAL", "FAILED")]
    for batch in batches:
        created = datetime.fromtimestamp(batch.created_at).strftime("%Y-%m-%d %H:%M:%S")
        counts = batch.request_counts
        rows.append(
            (
                batch.id,
                batch.status,
                created,
                str(counts.done),
                str(counts.total),
                str(counts.failed),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows)
    return "\n".join(line.rstrip() for line in lines)


def _batch_list(client: Client, args: argparse.Namespace) -> int:
    batches = list(client.batches.list(limit=args.limit))
    if args.json:
        _print_json([batch.raw for batch in batches])
    else:
        print(batch_table(batches) if batches else "no batches")
    return EXIT_OK


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _with_client(command: Command) -> Callable[[argparse.Namespace], int]:
    """Run `command` with a Client and turn what can go wrong into the exit codes above."""

    def run(args: argparse.Namespace) -> int:
        with Client(args.url) as client:
            try:
                return command(client, args)
            except ApiError as exc:
                _error(str(exc))
                return EXIT_UNAVAILABLE if exc.status >= 500 else EXIT_REFUSED
            except Unreachable as exc:
                _error(f"unreachable: {exc}")
                return EXIT_UNAVAILABLE
            except WaitTimeout as exc:
                _error(str(exc))
                return EXIT_TIMEOUT
            except BatchNotEnded as exc:
                _error(str(exc))
                return EXIT_REFUSED
            except OSError as exc:  # a local file to upload; the client maps its own I/O
                _error(str(exc))
                return EXIT_USAGE
            except KeyboardInterrupt:
                return EXIT_INTERRUPTED

    return run


def _positive(text: str) -> int:
    if not (text.isascii() and text.isdigit() and int(text) >= 1):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the client subcommands to the `visionq` parser's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="the API's base URL (default: $VISIONQ_URL)")
    common.add_argument("--json", action="store_true", help="print the API's JSON")
    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument(
        "--timeout", type=float, default=600, help="seconds to wait (default 600; exit 5 after)"
    )

    def command(
        name: str, run: Command, summary: str, *, waits: bool = False, under: Any = sub
    ) -> Any:
        parser = under.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=_EPILOG,
            parents=[common, waiting] if waits else [common],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.set_defaults(run=_with_client(run))
        return parser

    submit = command("submit", _submit, "submit images and a prompt; print the answer", waits=True)
    submit.add_argument("images", nargs="+", metavar="FILE_OR_URL")
    submit.add_argument("--prompt", required=True)
    submit.add_argument("--model")
    submit.add_argument("--webhook", metavar="URL")
    submit.add_argument("--wait", action="store_true", help="wait for the job and print it")

    get = command("get", _get, "show a job (its answer once it succeeded)", waits=True)
    get.add_argument("job_id", metavar="JOB_ID")
    get.add_argument("--wait", action="store_true", help="wait until the job is finished")

    jobs = command("list", _list, "list your jobs, newest first")
    jobs.add_argument("--status", choices=JOB_STATUSES)
    jobs.add_argument("--limit", type=_positive, default=20, help="how many (default 20)")

    cancel = command("cancel", _cancel, "cancel a job that has not finished")
    cancel.add_argument("job_id", metavar="JOB_ID")

    delete = command("delete", _delete, "delete a job and its stored images")
    delete.add_argument("job_id", metavar="JOB_ID")

    watch = command("watch", _watch, "follow jobs until all are finished", waits=True)
    watch.add_argument("job_ids", nargs="+", metavar="JOB_ID")

    tokens = command("tokens", _tokens, "count MiMo's image tokens, per image and in total")
    tokens.add_argument("images", nargs="+", metavar="FILE_OR_DATA_URL")
    tokens.add_argument("--model")

    usage = command("usage", _usage, "your usage and cost per day, hour, model or account")
    usage.add_argument(
        "--since", metavar="WHEN", help="Unix seconds or an ISO date (default: 7 days ago)"
    )
    usage.add_argument("--until", metavar="WHEN", help="Unix seconds or an ISO date (default: now)")
    usage.add_argument(
        "--by",
        default="day",
        help="day, hour, model, account (or tenant, admin keys), comma-separated; default day",
    )
    usage.add_argument("--tenant", help="another tenant's usage (admin keys only)")

    _add_batch_commands(sub, common, command)


def _add_batch_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    command: Callable[..., Any],
) -> None:
    """`visionq batch ...`: the Batch API from the command line."""
    summary = "batches: many images or requests, one prompt, one results file"
    group = sub.add_parser("batch", help=summary, description=summary)
    under = group.add_subparsers(dest="batch_command", required=True, metavar="COMMAND")

    def following(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--timeout", type=float, help="seconds to wait (default: until it ends; exit 5 after)"
        )
        parser.add_argument(
            "-o", "--output", metavar="FILE", help="write the results here (default: stdout)"
        )

    def batch_command(name: str, run: Command, text: str) -> Any:
        parser = command(name, run, text, under=under)
        parser.prog = f"{group.prog} {name}"
        return parser

    create = batch_command(
        "create",
        _batch_create,
        "create a batch from a JSONL file, or from images and folders of images (each "
        "image uploaded once, one line per image)",
    )
    create.add_argument("inputs", nargs="+", metavar="FILE.jsonl | DIR_OR_IMAGE")
    create.add_argument("--prompt", help="asked about every image (images only)")
    create.add_argument("--model")
    create.add_argument("--system", help="a system message for every image")
    create.add_argument("--webhook", metavar="URL", help="signed event when the batch ends")
    create.add_argument("--priority", choices=("batch", "interactive"))
    create.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE")
    create.add_argument("--wait", action="store_true", help="follow it, then write its results")
    following(create)

    get = batch_command("get", _batch_get, "show a batch: its status and counts")
    get.add_argument("batch_id", metavar="BATCH_ID")

    cancel = batch_command("cancel", _batch_cancel, "cancel a batch (finished lines stay)")
    cancel.add_argument("batch_id", metavar="BATCH_ID")

    watch = batch_command(
        "watch", _batch_watch, "follow a batch with a progress bar, then write its results"
    )
    watch.add_argument("batch_id", metavar="BATCH_ID")
    following(watch)

    results = batch_command(
        "results", _batch_results, "write an ended batch's results: every line, as JSONL"
    )
    results.add_argument("batch_id", metavar="BATCH_ID")
    results.add_argument("-o", "--output", metavar="FILE", help="write them here (default: stdout)")

    batches = batch_command("list", _batch_list, "list your batches, newest first")
    batches.add_argument("--limit", type=_positive, default=20, help="how many (default 20)")
