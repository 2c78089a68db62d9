"""Webhook events: the body, the Standard Webhooks signature, and what one attempt means.

Signing is the `standardwebhooks` package's own (`v1,<base64 HMAC-SHA256>` over
`{id}.{timestamp}.{body}`), so any receiver using that package verifies us as is. One
event per finished job, `webhook-id` = `msg_<job id>`, the same on every retry and on a
redelivery; receivers deduplicate on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from standardwebhooks import Webhook

from visionq.settings import Settings

DELIVERY_TIMEOUT_SECONDS = 10.0

WebhookStatus = Literal["pending", "delivered", "failed", "disabled"]


def event_id(job_id: str) -> str:
    return f"msg_{job_id}"


def event_body(job: dict[str, Any]) -> bytes:
    """`{type, timestamp, data}` for a finished job; `timestamp` is when it finished."""
    event = {
        "type": f"job.{job['status']}",
        "timestamp": int(job["completed_at"] or 0),
        "data": job,
    }
    return json.dumps(event, separators=(",", ":")).encode()


class Signer:
    """Signs with the current secret and, until `previous_until`, with the previous one too.

    Standard Webhooks carries several space-separated signatures and a receiver accepts
    the event when any of them verifies, so during the overlap receivers still holding the
    old secret and receivers already switched to the new one both accept every event.
    """

    def __init__(
        self, secret: str, *, previous: str | None = None, previous_until: float = 0.0
    ) -> None:
        self._webhook = Webhook(secret)
        self._previous = Webhook(previous) if previous else None
        self._previous_until = previous_until

    def headers(self, msg_id: str, body: bytes, *, now: float) -> dict[str, str]:
        """The three Standard Webhooks headers for one attempt at time `now`."""
        at = datetime.fromtimestamp(int(now), tz=UTC)
        text = body.decode()
        signatures = [self._webhook.sign(msg_id, at, text)]
        if self._previous is not None and now < self._previous_until:
            signatures.append(self._previous.sign(msg_id, at, text))
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now)),
            "webhook-signature": " ".join(signatures),
            "Content-Type": "application/json",
        }

    @classmethod
    def from_settings(cls, settings: Settings) -> Signer | None:
        """None without a secret: deliveries then wait in the outbox for a worker that has one."""
        if settings.webhook_secret is None:
            return None
        previous = settings.webhook_previous_secret
        until = settings.webhook_previous_secret_until
        return cls(
            settings.webhook_secret.get_secret_value(),
            previous=previous.get_secret_value() if previous else None,
            previous_until=until.timestamp() if until else 0.0,
        )


@dataclass(frozen=True)
class Verdict:
    status: WebhookStatus
    retry_in: float | None = None


def judge(status_code: int | None, *, attempts: int, schedule: tuple[int, ...]) -> Verdict:
    """After attempt number `attempts`: delivered, retry later, or give up.

    2xx is a delivery; 410 Gone means the receiver wants no more (`disabled`); anything
    else, a 3xx or no answer at all included, is retried after the schedule's next delay.
    """
    if status_code is not None and 200 <= status_code < 300:
        return Verdict("delivered")
    if status_code == 410:
        return Verdict("disabled")
    if attempts > len(schedule):
        return Verdict("failed")
    return Verdict("pending", float(schedule[attempts - 1]))
