"""A MiMo-compatible development upstream with on-demand faults; see `app` for the why.

`create_app(api_key=..., latency=..., limits=...)` builds the Flask app for one account,
`create_app(accounts=[SimAccount(...), ...])` for several (tests run it in a thread);
`serve(host, port, ...)` runs it as a threaded HTTP server.
"""

from visionq.simulator.app import create_app
from visionq.simulator.server import serve
from visionq.simulator.state import UNLIMITED, RateLimits, SimAccount

__all__ = ["UNLIMITED", "RateLimits", "SimAccount", "create_app", "serve"]
