"""Checking a webhook request as the receiving end should (API.md, "Webhooks")."""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from standardwebhooks import Webhook

from visionq.client._errors import WebhookVerificationFailed
from visionq.client._types import Job, WebhookEvent


def verify_webhook(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: str | Sequence[str],
    *,
    tolerance: float = 300.0,
) -> WebhookEvent:
    """Check a webhook request as the receiving end should, and return its event.

    `secret` is the `whsec_...` secret, or several of them while one is being rotated:
    the request passes when any signature in `webhook-signature` verifies with any of
    them. A `webhook-timestamp` more than `tolerance` seconds from now is refused, so a
    captured request cannot be replayed later. Signatures are the `standardwebhooks`
    package's own; timestamps are checked here because its tolerance is fixed. A body
    that is signed but is not a webhook event is refused too, with the same exception,
    so a receiver has one thing to catch.
    """
    secrets = [secret] if isinstance(secret, str) else list(secret)
    if not secrets:
        raise ValueError("give at least one webhook secret")
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not (msg_id and stamp and signatures):
        raise WebhookVerificationFailed("a webhook-id, webhook-timestamp or signature is missing")
    try:
        sent_at = int(stamp)
        text = body.decode() if isinstance(body, bytes) else body
    except (ValueError, UnicodeDecodeError):
        raise WebhookVerificationFailed("the timestamp or the body is malformed") from None
    skew = time.time() - sent_at
    if abs(skew) > tolerance:
        raise WebhookVerificationFailed(
            f"the timestamp is {abs(skew):.0f}s {'old' if skew > 0 else 'ahead'}, "
            f"beyond the {tolerance:g}s tolerance"
        )
    given = [s.partition(",")[2].encode() for s in signatures.split() if s.startswith("v1,")]
    at = datetime.fromtimestamp(sent_at, tz=UTC)
    expected = [Webhook(s).sign(msg_id, at, text).partition(",")[2].encode() for s in secrets]
    if not any(hmac.compare_digest(e, g) for e in expected for g in given):
        raise WebhookVerificationFailed("no signature matches the webhook secret(s)")
    try:
        event = json.loads(text)
        return WebhookEvent(
            msg_id, event["type"], event["timestamp"], Job.from_dict(event["data"]), raw=event
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise WebhookVerificationFailed("the signed body is not a webhook event") from exc
