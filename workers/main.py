"""For the `celery` command: `celery -A workers.main worker -Q prepare`."""

from visionq.settings import Settings
from workers.app import create_celery

app = create_celery(Settings.from_env())
