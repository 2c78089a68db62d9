"""The Celery application: configuration from settings, the tasks and the signal receivers.

`create_celery` is the one factory: `visionq worker` starts a worker on what it returns,
and the sweeper publishes through it.
"""

from __future__ import annotations

from celery import Celery

from visionq.broker.celery_redis import celery_config
from visionq.settings import Settings
from workers import signals
from workers.transport import transport_for


def create_celery(settings: Settings) -> Celery:
    # `include`: the worker imports the tasks as it starts, and they register with this app.
    app = Celery("visionq", include=["workers.tasks"])
    config = celery_config(settings)
    app.conf.update(config)
    if (transport := transport_for(config["broker_url"])) is not None:
        app.conf.broker_transport = transport
    app.conf.visionq_settings = settings
    signals.connect()
    return app
