"""wrk, the load generator of the HTTP benchmarks: a C program using far less CPU per
request than any Python client, which matters when it shares 2 cores with what it loads."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

WRK = shutil.which("wrk") or "/usr/bin/wrk"
#: The tenant key the bench stacks know (bench.stack's default API keys).
KEY = "key-big"


def script(folder: Path, name: str, body: bytes, content_type: str, key: str = KEY) -> Path:
    """A wrk Lua script that POSTs `body` (kept in a file beside it) with our API key."""
    (folder / f"{name}.body").write_bytes(body)
    path = folder / f"{name}.lua"
    path.write_text(
        'wrk.method = "POST"\n'
        f'wrk.headers["Content-Type"] = "{content_type}"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\n'
        f'local f = io.open("{folder / name}.body", "rb")\n'
        'wrk.body = f:read("*a")\nf:close()\n'
    )
    return path


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def run(url: str, script: Path, *, connections: int, seconds: int) -> dict[str, Any]:
    """One wrk run (one thread: it leaves the cores to what is measured), parsed."""
    out = subprocess.run(
        [WRK, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    done = re.search(r"(\d+) requests in", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "connections": connections,
        "seconds": seconds,
        "requests": int(done.group(1)) if done else 0,
        "per_second": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p99_ms": round(float(p99.group(1)) * _UNITS[p99.group(2)], 2) if p99 else None,
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1) if errors else None,
    }
