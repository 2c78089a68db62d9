"""For any WSGI server: `gunicorn 'service.wsgi:app'`; settings come from the environment."""

from service.app import create_app
from visionq.settings import Settings

app = create_app(Settings.from_env())
