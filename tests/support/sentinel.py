"""A Redis Sentinel group of real processes for the tests: a master, two replicas (so
that the promoted one still has a replica to confirm writes) and three sentinels, each a
`redis-server` (the sentinels with `--sentinel`, which is what Debian's `redis-sentinel`
runs), on loopback ports of their own."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import redis

from visionq.dev.ports import free_port
from visionq.dev.processes import stop_process
from visionq.dev.redisserver import answers, redis_server_binary

SERVICE = "mymaster"
#: How long a sentinel waits before it calls the master down, and the failover's bound.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


class SentinelGroup:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.master_port = free_port()
        self.replica_ports = [free_port(), free_port()]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self._servers: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def start(self) -> SentinelGroup:
        self._server(self.master_port)
        for port in self.replica_ports:
            self._server(port, "--replicaof", "127.0.0.1", str(self.master_port))
        for port in self.sentinel_ports:
            conf = self.root / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.root}\n"
                f"logfile {self.root / f'sentinel-{port}.log'}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            self._servers[port] = subprocess.Popen(
                [redis_server_binary(), str(conf), "--sentinel"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        self._wait_until_formed()
        return self

    def _server(self, port: int, *extra: str) -> None:
        data = self.root / str(port)
        data.mkdir(parents=True, exist_ok=True)
        self._servers[port] = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(data),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--logfile",
                str(data / "redis.log"),
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not answers(f"redis://127.0.0.1:{port}/0", 0.2):
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on {port} did not start; see {data}")
            time.sleep(0.05)

    def _wait_until_formed(self, timeout: float = 30) -> None:
        """Until every sentinel sees both replicas and the two other sentinels, so that a
        failover can be agreed on."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                formed = all(
                    int(found["num-slaves"]) >= 1 and int(found["num-other-sentinels"]) >= 2
                    for found in (
                        self.sentinel(p).sentinel_master(SERVICE) for p in self.sentinel_ports
                    )
                )
            except redis.RedisError:
                formed = False
            if formed:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the sentinels did not form a group; see {self.root}")
            time.sleep(0.2)

    def sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=2, decode_responses=True)

    def master(self) -> int:
        """The port of the master the sentinels agree on now."""
        first = self.sentinel(self.sentinel_ports[0])
        return int(first.sentinel_get_master_addr_by_name(SERVICE)[1])

    def kill_master(self) -> int:
        """SIGKILL the master, as a host lost would; its port."""
        port = self.master()
        self._servers[port].send_signal(signal.SIGKILL)
        self._servers[port].wait()
        return port

    def stop(self) -> None:
        for process in self._servers.values():
            stop_process(process, grace=5)
        self._servers.clear()
