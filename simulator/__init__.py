"""A MiMo-compatible development upstream with on-demand faults; see `app` for the why.

`create_app(api_key=..., latency=...)` builds the Flask app (tests run it in a thread);
`serve(host, port, api_key, latency)` runs it as a threaded HTTP server.
"""

from simulator.app import create_app
from simulator.server import serve

__all__ = ["create_app", "serve"]
