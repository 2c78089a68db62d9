"""The API as a Flask app in the test process, on a database of the session's Redis.

No gunicorn, no worker, no simulator: what these tests see is what the HTTP layer alone
decides (authentication, validation, error shapes, what a submit writes), so a change
there gets its answer in seconds rather than after a whole stack has started.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service.app import create_app
from tests.support import KEYS
from visionq.settings import Settings


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    """What a deployment would set, read the way `visionq api` reads it."""
    return Settings.from_env(
        {
            "VISIONQ_REDIS_URL": redis_url,
            "VISIONQ_STORAGE_URL": f"file://{tmp_path / 'storage'}",
            "VISIONQ_API_KEYS": ",".join(f"{t}:{k}" for t, k in KEYS.items()),
            "VISIONQ_RATE_LIMIT": "100000/minute,carol=3/minute",
        }
    )


@pytest.fixture
def app(settings: Settings) -> Flask:
    return create_app(settings)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
