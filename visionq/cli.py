"""visionq: a job service in front of Xiaomi MiMo's image understanding.

The `visionq` command (API.md, "Commands"): the server side here, the client side
(`submit`, `get`, ...) in `visionq.client.cli`.

This module is the composition root: it is the one place in the `visionq` package that
reaches into the adapters (`service`, `workers`), and only inside the subcommand that
needs them, so `visionq submit` never imports Flask or Celery.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

from visionq.broker import POOLS, QUEUES, cpu_count, default_concurrency
from visionq.client import cli as client_cli
from visionq.ops import logs, metrics
from visionq.settings import Settings
from visionq.supervisor import Supervisor

log = logging.getLogger(__name__)


def _api(args: argparse.Namespace) -> int:
    from service.server import serve

    settings = Settings.from_env()
    logs.configure(settings)
    # Before gunicorn forks its workers, so that they all count into one directory.
    with metrics.process_tree(settings) as settings:
        serve(settings, host=args.host, port=args.port, workers=args.workers, threads=args.threads)
    return 0


#: In `--concurrency`, a size without a queue's name: each thread pool's (the prepare
#: pool's only when prepare is the one queue).
_ANY_QUEUE = "*"


def _concurrency_option(text: str) -> dict[str, int]:
    """`N`, or `QUEUE=N[,QUEUE=N...]`."""
    sizes: dict[str, int] = {}
    for part in text.split(","):
        queue, _, size = part.strip().rpartition("=")
        queue = queue.strip() or _ANY_QUEUE
        if queue != _ANY_QUEUE and queue not in QUEUES:
            raise argparse.ArgumentTypeError(f"unknown queue {queue!r}; queues are {QUEUES}")
        try:
            sizes[queue] = int(size)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r}: a pool size is a number") from None
        if sizes[queue] < 1:
            raise argparse.ArgumentTypeError(f"{part!r}: a pool size is at least 1")
    return sizes


def _pool_sizes(queues: list[str], asked: list[dict[str, int]]) -> dict[str, int]:
    """Each queue's pool size. A bare `--concurrency 50` means fifty calls in flight: the
    thread pools get it, while prepare, CPU-bound, keeps a process per core unless it is
    named (`prepare=N`) or the only queue, because fifty forked decoders on two cores
    would only take memory and start-up time."""
    given = {queue: size for sizes in asked for queue, size in sizes.items()}
    sizes = default_concurrency()
    for queue in queues:
        if queue in given:
            sizes[queue] = given[queue]
        elif _ANY_QUEUE in given and (POOLS[queue] == "threads" or len(queues) == 1):
            sizes[queue] = given[_ANY_QUEUE]
        elif _ANY_QUEUE in given:
            log.info(
                "the %s pool keeps %d processes, one per core; name it to change that "
                "(--concurrency %s=N)",
                queue,
                sizes[queue],
                queue,
                extra={"queue": queue, "concurrency": sizes[queue]},
            )
    return {queue: sizes[queue] for queue in queues}


def _worker(args: argparse.Namespace) -> int:
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    unknown = set(queues) - set(QUEUES)
    if unknown or not queues:
        print(
            f"unknown queue(s) {sorted(unknown)}; queues are {', '.join(QUEUES)}", file=sys.stderr
        )
        return client_cli.EXIT_USAGE
    if args.ready_file and len(queues) > 1:
        print("--ready-file is for one queue (several each get their own)", file=sys.stderr)
        return client_cli.EXIT_USAGE
    settings = Settings.from_env()
    loglevel = args.loglevel or settings.log_level
    logs.configure(settings, level=loglevel)
    sizes = _pool_sizes(queues, args.concurrency)
    # The pool's children, or one child per queue, fork from here: they count into one
    # directory, which this process serves, with each queue's readiness.
    with (
        metrics.process_tree(settings) as settings,
        tempfile.TemporaryDirectory(prefix="visionq-ready-") as ready_dir,
    ):
        ready = {queue: Path(args.ready_file or Path(ready_dir, queue)) for queue in queues}
        with metrics.served(settings, ready):
            if len(queues) > 1:
                return _supervise(sizes, ready, loglevel)
            _work(settings, queues[0], sizes[queues[0]], loglevel, ready[queues[0]])
    return 0


def _work(
    settings: Settings, queue: str, concurrency: int, loglevel: str, ready_file: Path
) -> None:
    from workers.app import create_celery

    if POOLS[queue] == "prefork" and concurrency > cpu_count():
        log.warning(
            "the %s pool is asked for %d processes on %d cores: each is a fork with its own "
            "memory, and past the core count they only wait for each other",
            queue,
            concurrency,
            cpu_count(),
            extra={"queue": queue, "concurrency": concurrency, "cores": cpu_count()},
        )
    app = create_celery(settings)
    app.conf.visionq_ready_file = ready_file
    app.worker_main(
        [
            # No banner: it is plain text on stdout, and logs are JSON lines.
            "--quiet",
            "worker",
            "--queues",
            queue,
            "--pool",
            POOLS[queue],
            "--concurrency",
            str(concurrency),
            "--hostname",
            f"{queue}-%h-{os.getpid()}",
            "--loglevel",
            loglevel,
            "--without-gossip",
            "--without-mingle",
        ]
    )


def _supervise(sizes: dict[str, int], ready: dict[str, Path], loglevel: str) -> int:
    """Several queues: one child per queue, because each wants its own kind of pool, kept
    running by a supervisor (visionq.supervisor: restarts with backoff, exits 1 on a crash
    loop). They inherit this process's metrics directory; this process serves their
    metrics, and is ready when each of them consumes."""
    env = {**os.environ, "VISIONQ_METRICS_PORT": "0"}
    commands = {
        queue: [
            sys.executable,
            "-m",
            "visionq",
            "worker",
            "--queues",
            queue,
            "--loglevel",
            loglevel,
            "--concurrency",
            str(size),
            "--ready-file",
            str(ready[queue]),
        ]
        for queue, size in sizes.items()
    }
    return Supervisor(commands, env).run()


def _sweeper(args: argparse.Namespace) -> int:
    from workers.sweeper import run

    settings = Settings.from_env()
    logs.configure(settings)
    run(settings)
    return 0


def _simulator(args: argparse.Namespace) -> int:
    from visionq.simulator import RateLimits, SimAccount, serve

    print(
        "visionq simulator: a development stand-in for MiMo, not the real model",
        file=sys.stderr,
        flush=True,
    )
    given = {"rpm": args.rpm, "tpm": args.tpm, "concurrency": args.concurrency}
    defaults = {name: value for name, value in given.items() if value is not None}
    accounts = [
        SimAccount(name, keys, RateLimits(**(defaults | own))) for name, keys, own in args.account
    ]
    serve(
        args.host,
        args.port,
        api_key=args.api_key,
        latency=args.latency,
        limits=None if accounts else RateLimits(**defaults),
        accounts=accounts or None,
    )
    return 0


_ACCOUNT_SYNTAX = "NAME=KEY[+KEY...][:rpm=N][:tpm=N][:concurrency=N]"


def _account_option(text: str) -> tuple[str, tuple[str, ...], dict[str, int]]:
    """One `visionq simulator --account`: its name, keys, and only the limits it names, since
    the others come from --rpm/--tpm/--concurrency, which may follow it on the line.

    No message quotes the text: it holds keys, and argparse prints the message.
    """
    name, has_name, rest = text.partition("=")
    keys_text, *items = rest.split(":")
    keys = tuple(keys_text.split("+"))
    if not (has_name and name and all(keys)):
        raise argparse.ArgumentTypeError(f"must be {_ACCOUNT_SYNTAX}: a name, then its keys")
    limits: dict[str, int] = {}
    for item in items:
        limit, _, value = item.partition("=")
        if (
            limit not in ("rpm", "tpm", "concurrency")
            or limit in limits
            or not (value.isascii() and value.isdigit())
        ):
            raise argparse.ArgumentTypeError(
                f"must be {_ACCOUNT_SYNTAX}: each limit at most once, a whole number"
            )
        limits[limit] = int(value)
    return name, keys, limits


def _dev(args: argparse.Namespace) -> int:
    from visionq.dev import stack

    return stack.run(
        api_port=args.port, simulator_port=args.simulator_port, var_dir=Path(args.var_dir)
    )


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="visionq", description=__doc__.splitlines()[0])
    sub = top.add_subparsers(dest="command", required=True)

    api = sub.add_parser("api", help="the intake API under gunicorn")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--workers", type=int, default=2)
    api.add_argument(
        "--threads",
        type=int,
        default=512,
        help="per process; a long-poll holds one (bench/longpoll.py: ~42 KB each)",
    )
    api.set_defaults(run=_api)

    worker = sub.add_parser("worker", help="a Celery worker for one or more queues")
    worker.add_argument("--queues", default=",".join(QUEUES))
    worker.add_argument(
        "--concurrency",
        action="append",
        default=[],
        type=_concurrency_option,
        metavar="N|QUEUE=N[,QUEUE=N]",
        help="pool size (repeatable): N for each thread pool (and for prepare when it is the "
        "one queue), QUEUE=N for one queue; default "
        + ", ".join(f"{queue} {size}" for queue, size in default_concurrency().items())
        + " (prepare: a process per core)",
    )
    worker.add_argument(
        "--ready-file",
        default=None,
        help="with one queue: a file written (holding the pid) once the worker consumes, "
        "removed when it stops; the metrics port's /readyz answers from it",
    )
    worker.add_argument("--loglevel", default=None, help="default: VISIONQ_LOG_LEVEL (info)")
    worker.set_defaults(run=_worker)

    sweeper = sub.add_parser(
        "sweeper",
        help="queues due webhooks, re-queues jobs whose lease ran out and upstream tickets "
        "that died with a worker, removes expired files (run one)",
    )
    sweeper.set_defaults(run=_sweeper)

    sim = sub.add_parser("simulator", help="the bundled MiMo-compatible upstream simulator")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8001)
    keys = sim.add_mutually_exclusive_group()
    keys.add_argument("--api-key", default=None, help="the key it accepts (default: any)")
    keys.add_argument(
        "--account",
        action="append",
        default=[],
        type=_account_option,
        metavar=_ACCOUNT_SYNTAX,
        help="an account of its own (repeatable): its keys share its limits, which default to "
        "--rpm/--tpm/--concurrency",
    )
    sim.add_argument("--latency", type=float, default=0.0)
    for limit, meaning in (
        ("rpm", "requests per minute per model"),
        ("tpm", "tokens per minute per model"),
        ("concurrency", "calls in flight per model"),
    ):
        sim.add_argument(f"--{limit}", type=int, help=f"{meaning} (default MiMo's; 0: no limit)")
    sim.set_defaults(run=_simulator)

    dev = sub.add_parser("dev", help="the whole stack on this machine")
    dev.add_argument("--port", type=int, default=8000)
    dev.add_argument("--simulator-port", type=int, default=8001)
    dev.add_argument("--var-dir", default="var")
    dev.set_defaults(run=_dev)

    client_cli.add_commands(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.run(args))
