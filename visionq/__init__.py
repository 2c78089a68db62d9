"""visionq: a job service in front of Xiaomi MiMo's image understanding.

`from visionq import Client` gives the Python client (`visionq.client`). It is loaded on
first use, so the server side, which imports this package too, never pays for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from visionq.client import Client

__version__ = "0.1.0"
__all__ = ["Client", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Client":
        from visionq.client import Client

        return Client
    raise AttributeError(f"module 'visionq' has no attribute {name!r}")
