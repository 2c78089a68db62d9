"""Webhook signatures while a secret is rotated, checked with the receivers' own verifier;
and what one delivery attempt's answer means for the next (`judge`)."""

from __future__ import annotations

import base64
import time

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from visionq.errors import ConfigurationError
from visionq.settings import Settings
from visionq.webhooks import Signer, Verdict, judge

OLD = "whsec_" + base64.b64encode(b"the secret being rotated out").decode()
NEW = "whsec_" + base64.b64encode(b"the secret rotated in, newer").decode()
BODY = b'{"type":"job.succeeded"}'


def _signed(signer: Signer, now: float) -> dict[str, str]:
    return signer.headers("msg_job_1", BODY, now=now)


def test_both_secrets_verify_during_the_overlap_and_only_the_new_one_after() -> None:
    now = time.time()
    env = {
        "VISIONQ_WEBHOOK_SECRET": NEW,
        "VISIONQ_WEBHOOK_PREVIOUS_SECRET": OLD,
        "VISIONQ_WEBHOOK_PREVIOUS_SECRET_UNTIL": str(int(now + 3600)),
    }
    signer = Signer.from_settings(Settings.from_env(env))
    assert signer is not None
    during = _signed(signer, now)
    assert len(during["webhook-signature"].split(" ")) == 2
    for secret in (OLD, NEW):
        Webhook(secret).verify(BODY, during)

    ended = Signer.from_settings(
        Settings.from_env(env | {"VISIONQ_WEBHOOK_PREVIOUS_SECRET_UNTIL": str(int(now - 1))})
    )
    assert ended is not None
    after = _signed(ended, now)
    Webhook(NEW).verify(BODY, after)
    with pytest.raises(WebhookVerificationError):
        Webhook(OLD).verify(BODY, after)


def test_a_rotation_needs_an_end_and_errors_never_show_a_secret() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({"VISIONQ_WEBHOOK_SECRET": NEW, "VISIONQ_WEBHOOK_PREVIOUS_SECRET": OLD})
    assert "VISIONQ_WEBHOOK_PREVIOUS_SECRET_UNTIL" in caught.value.message
    malformed = "not-whsec-QZ7"
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env(
            {"VISIONQ_WEBHOOK_SECRET": NEW, "VISIONQ_WEBHOOK_PREVIOUS_SECRET": malformed}
        )
    assert "webhook_previous_secret" in caught.value.message
    assert malformed not in caught.value.message
    assert Signer.from_settings(Settings()) is None


SCHEDULE = (5, 300, 1800)


@pytest.mark.parametrize("status", [200, 202, 204, 299])
def test_a_2xx_is_a_delivery_whatever_the_attempt(status: int) -> None:
    assert judge(status, attempts=1, schedule=SCHEDULE) == Verdict("delivered")
    assert judge(status, attempts=len(SCHEDULE) + 1, schedule=SCHEDULE) == Verdict("delivered")


def test_410_gone_disables_the_webhook_at_once() -> None:
    assert judge(410, attempts=1, schedule=SCHEDULE) == Verdict("disabled")


@pytest.mark.parametrize("status", [None, 199, 301, 400, 404, 429, 500, 503])
def test_anything_else_is_retried_on_the_schedule_then_fails(status: int | None) -> None:
    """No answer, a 3xx (redirects are never followed) and every other status alike."""
    verdicts = [judge(status, attempts=n, schedule=SCHEDULE) for n in (1, 2, 3)]
    assert verdicts == [Verdict("pending", float(delay)) for delay in SCHEDULE]
    assert judge(status, attempts=4, schedule=SCHEDULE) == Verdict("failed")


def test_an_empty_schedule_fails_after_the_first_attempt() -> None:
    assert judge(500, attempts=1, schedule=()) == Verdict("failed")
