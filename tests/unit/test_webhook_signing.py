"""Webhook signatures while a secret is rotated, checked with the receivers' own verifier."""

from __future__ import annotations

import base64
import time

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from visionq.errors import ConfigurationError
from visionq.settings import Settings
from visionq.webhooks import Signer

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
