"""The client side of the `visionq` command: it talks to a running API through `Client`."""

from __future__ import annotations

import argparse
import json
import os
import sys

EXIT_FAILED = 1


def _submit(args: argparse.Namespace) -> int:
    from visionq.client import ApiError, Client

    client = Client(
        os.environ.get("VISIONQ_URL", "http://127.0.0.1:8000"), os.environ.get("VISIONQ_KEY")
    )
    try:
        job = client.submit(args.images, args.prompt, model=args.model, webhook_url=args.webhook)
        if args.wait:
            job = client.wait(job["id"], timeout=args.timeout)
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(job, indent=2))
    elif job["status"] == "succeeded":
        print(job["result"]["content"])
    elif job["status"] == "failed":
        print(f"failed: {job['error']['type']}: {job['error']['message']}", file=sys.stderr)
    else:
        print(f"{job['id']} {job['status']}")
    return EXIT_FAILED if job["status"] in ("failed", "canceled") else 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    submit = sub.add_parser("submit", help="submit images and a prompt; print the answer")
    submit.add_argument("images", nargs="+", metavar="FILE_OR_URL")
    submit.add_argument("--prompt", required=True)
    submit.add_argument("--model")
    submit.add_argument("--webhook")
    submit.add_argument("--wait", action="store_true")
    submit.add_argument("--timeout", type=float, default=600)
    submit.add_argument("--json", action="store_true")
    submit.set_defaults(run=_submit)
