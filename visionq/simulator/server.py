"""Running the simulator as a real threaded HTTP server (the `visionq simulator` command).

Werkzeug's server rather than gunicorn: one process keeps the simulator's counters and
`fail_first` bookkeeping in one place, and threads let slow or sleeping answers overlap
the way a real upstream's do.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from werkzeug.serving import make_server

from visionq.simulator.app import create_app
from visionq.simulator.state import RateLimits, SimAccount


def serve(
    host: str = "127.0.0.1",
    port: int = 8001,
    api_key: str | None = None,
    latency: float = 0.0,
    limits: RateLimits | None = None,
    accounts: Sequence[SimAccount] | None = None,
) -> None:
    """Serve the simulator on `host:port` until interrupted (Ctrl-C or SIGTERM's default);
    the keys, limits and accounts mean what they mean to `create_app`."""
    app = create_app(api_key=api_key, latency=latency, limits=limits, accounts=accounts)
    server = make_server(host, port, app, threaded=True)
    url = f"http://{host}:{server.port}"
    print(f"visionq simulator listening on {url}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
