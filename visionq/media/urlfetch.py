"""The one SSRF-safe fetcher for user-supplied URLs (API.md, "Fetching URLs").

Every connection, on every redirect hop, is opened by `_open_checked`: it resolves the host
once, refuses if any of the addresses is not public, and connects to one of exactly those
addresses, so what was checked is what is connected to (no DNS-rebinding gap). urllib3 keeps
the host name as the connection's host, so TLS still sends it as SNI and verifies the
certificate against it.

We check at connect time ourselves rather than through requests-hardened's IPFilterAdapter.
That adapter pins too, but judges with `ipaddress.is_private`, which lets through the
IPv4-compatible (::7f00:1) and SIIT (::ffff:0:7f00:1) forms of loopback, site-local
fec0::/10 and unassigned IPv6; it looks only at the first address of a name that has
several; and it is not mounted at all when the address rule is lifted, where the deadline
below must still hold. We keep its session for the redirect, timeout and User-Agent
settings, and its list of extra blocked ranges.

On top of the address rule: the scheme rule, a redirect cap, a byte cap enforced while
streaming (a redirect's body is never read), a total deadline (`_Deadline`: a server that
trickles its headers or body one byte a second cannot hold a worker), and a check of every
address a name resolves to, for refusing a webhook URL at submit time (`check_public`).
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlparse

import requests
from requests.adapters import HTTPAdapter
from requests_hardened import Config, HTTPSession
from requests_hardened.ip_filter import EXTRA_BLOCKED_NET_RANGES
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NameResolutionError,
    NewConnectionError,
)
from urllib3.exceptions import TimeoutError as Urllib3Timeout
from urllib3.util import connection as urllib3_connection

from visionq.errors import InvalidImageUrl, PayloadTooLarge, UrlRefused

T = TypeVar("T")
_CHUNK = 256 * 1024
_NOT_PUBLIC = "the URL resolves to an address that is not public"
# RFC 4291: IPv6 outside global unicast is special-purpose or unassigned. Requiring it also
# refuses the forms that embed an IPv4 address without being IPv4-mapped (IPv4-compatible
# ::a.b.c.d, SIIT ::ffff:0:a.b.c.d, NAT64 64:ff9b::/96) and site-local fec0::/10, which
# `is_global` lets through.
_GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")


def check_url_syntax(url: str) -> None:
    """The cheap part of the rules: http(s) with a host."""
    try:
        parsed = urlparse(url)
        hostname, _ = parsed.hostname, parsed.port
    except ValueError:  # "http://[::1/x", a bad port: not a URL anyone can fetch
        raise UrlRefused("the URL cannot be parsed") from None
    if parsed.scheme not in ("http", "https") or not hostname:
        raise UrlRefused("only http and https URLs with a host name can be fetched")


def _is_public(address: str) -> bool:
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    ip = ipaddress.ip_address(address.split("%")[0])
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip not in _GLOBAL_UNICAST_V6:
            return False
    blocked = any(ip in net for net in EXTRA_BLOCKED_NET_RANGES)
    return ip.is_global and not ip.is_multicast and not ip.is_reserved and not blocked


def check_public(url: str, *, allow_private: bool) -> None:
    """Refuse a URL whose host does not resolve or resolves to any non-public address.

    `allow_private` lifts only the address rule, never the need to resolve. Passing says
    nothing about a later fetch, which resolves and checks again when it connects.
    """
    check_url_syntax(url)
    host = urlparse(url).hostname or ""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise UrlRefused(f"the host {host!r} does not resolve") from None
    if not allow_private and not all(_is_public(str(info[4][0])) for info in infos):
        raise UrlRefused(_NOT_PUBLIC)


class _Deadline:
    """One request's total deadline, and the address rule its connections must follow.

    A blocked read ends only when bytes come or its socket is shut down, and a server that
    trickles a byte a second resets every per-read timeout. So a timer shuts down every
    socket the request uses when the deadline passes, whatever it is waiting for: the TLS
    handshake, the status line and headers, or the body. A connect is bounded by the time
    left instead. Name resolution cannot be interrupted: getaddrinfo blocks for as long as
    the system resolver takes, and the deadline is only checked after it.

    Connections find the deadline of the request they serve through a thread-local:
    requests runs a request, its redirects and their connects in the calling thread.
    """

    _active = threading.local()

    def __init__(self, seconds: float, *, allow_private: bool) -> None:
        self.allow_private = allow_private
        self.seconds = seconds
        self._end = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._watched: list[socket.socket] = []
        self._cut = False
        self._timer = threading.Timer(seconds, self._cut_off)
        self._timer.daemon = True

    @classmethod
    def current(cls) -> _Deadline:
        deadline: _Deadline | None = getattr(cls._active, "deadline", None)
        if deadline is None:  # fail closed: no connection without the rule and a deadline
            raise RuntimeError("a URL connection was opened outside UrlFetcher")
        return deadline

    def __enter__(self) -> _Deadline:
        _Deadline._active.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()
        _Deadline._active.deadline = None
        with self._lock:
            for sock in self._watched:
                sock.close()
            self._watched.clear()

    def passed(self) -> bool:
        return time.monotonic() >= self._end

    def timed_out(self) -> InvalidImageUrl:
        return InvalidImageUrl(f"fetching the image URL timed out after {self.seconds:g} s")

    def connect_timeout(self, timeout: object) -> float:
        left = self._end - time.monotonic()
        if left <= 0:
            raise TimeoutError("the total deadline passed before connecting")
        return min(timeout, left) if isinstance(timeout, int | float) else left

    def watch(self, sock: socket.socket) -> None:
        # A duplicate descriptor: shutting it down cuts the connection even after TLS has
        # wrapped (and detached) the socket object we were given, and closing it when the
        # request ends leaves a pooled keep-alive connection open.
        dup = socket.fromfd(sock.fileno(), sock.family, sock.type, sock.proto)
        with self._lock:
            self._watched.append(dup)
            if self._cut:
                _shut(dup)

    def _cut_off(self) -> None:
        with self._lock:
            self._cut = True
            for sock in self._watched:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # the peer may have closed it already
        sock.shutdown(socket.SHUT_RDWR)


def _open_checked(conn: HTTPConnection) -> socket.socket:
    """urllib3's `_new_conn`, with the address rule between resolving and connecting.

    Resolving here, once, and connecting only to the addresses just checked is what leaves
    a rebinding name no second answer to slip in.
    """
    deadline = _Deadline.current()
    try:  # cannot be interrupted: the deadline may overrun by the resolver's own time
        infos = socket.getaddrinfo(conn._dns_host, conn.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise NameResolutionError(conn.host, conn, exc) from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not deadline.allow_private and not all(_is_public(a) for a in addresses):
        raise UrlRefused(_NOT_PUBLIC)
    error: OSError = OSError("no address")
    for address in addresses:  # address literals: create_connection resolves nothing
        try:
            sock = urllib3_connection.create_connection(
                (address, conn.port),
                deadline.connect_timeout(conn.timeout),
                source_address=conn.source_address,
                socket_options=conn.socket_options,
            )
        except OSError as exc:
            error = exc
            continue
        deadline.watch(sock)
        return sock
    if isinstance(error, TimeoutError):
        raise ConnectTimeoutError(conn, f"Connection to {conn.host} timed out") from error
    raise NewConnectionError(conn, f"Failed to establish a new connection: {error}") from error


class _CheckedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        return _open_checked(self)


class _CheckedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        return _open_checked(self)


def _watch_reused(conn: Any) -> Any:
    # A kept-alive connection from the pool was connected under an earlier deadline.
    if conn.sock is not None:
        _Deadline.current().watch(conn.sock)
    return conn


class _CheckedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _CheckedHTTPConnection

    def _get_conn(self, timeout: float | None = None) -> Any:
        return _watch_reused(super()._get_conn(timeout))


class _CheckedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _CheckedHTTPSConnection

    def _get_conn(self, timeout: float | None = None) -> Any:
        return _watch_reused(super()._get_conn(timeout))


class _CheckedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _CheckedHTTPPool,
            "https": _CheckedHTTPSPool,
        }

    def build_response(self, req: requests.PreparedRequest, resp: Any) -> requests.Response:
        response = super().build_response(req, resp)
        if response.is_redirect:
            # requests reads a redirect's whole body into memory before it follows it, past
            # any byte cap; nobody wants that body, so drop the connection instead.
            resp.close()
            response._content = b""
        return response


class UrlFetcher:
    def __init__(
        self,
        *,
        allow_private: bool,
        timeout: float,
        max_bytes: int,
        max_redirects: int = 3,
        user_agent: str = "visionq",
    ) -> None:
        self._allow_private = allow_private
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._session = HTTPSession(
            Config(
                ip_filter_enable=False,  # _open_checked applies the address rule
                ip_filter_allow_loopback_ips=False,
                never_redirect=max_redirects == 0,
                default_timeout=(min(10.0, timeout), min(10.0, timeout)),
                user_agent_override=user_agent,
            )
        )
        for prefix in ("http://", "https://"):
            self._session.mount(prefix, _CheckedAdapter())
        # never_redirect keeps a fetcher made with 0 from following anything; requests still
        # works out where an unfollowed redirect would lead (Response.next) and, with a cap
        # of 0, turns a webhook's 3xx into TooManyRedirects instead of its status code.
        self._session.max_redirects = max(1, max_redirects)
        self._session.trust_env = False  # no proxies from the environment: they bypass the rule

    def fetch(self, url: str, consume: Callable[[Iterator[bytes]], T]) -> T:
        """Stream the body of `url` into `consume`, all within the total deadline.

        Whatever fails on the remote side, while connecting, while waiting for the answer
        or while `consume` iterates the body (a deadline, a reset, a body cut short), is
        `InvalidImageUrl` (over the byte cap, `PayloadTooLarge`): the URL is at fault, and
        another try would meet the same server. What `consume` raises of its own (our
        storage failing) passes through untouched, so the caller can tell the two apart.
        """
        try:
            check_url_syntax(url)
        except UrlRefused as exc:
            raise InvalidImageUrl(exc.message) from None
        with (
            _Deadline(self._timeout, allow_private=self._allow_private) as deadline,
            self._get(url, deadline) as response,
        ):
            if response.status_code >= 300:  # a 3xx here is one we did not follow
                raise InvalidImageUrl(f"fetching the image URL answered {response.status_code}")
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > self._max_bytes:
                raise PayloadTooLarge(f"the image at the URL is over {self._max_bytes} bytes")
            return consume(self._chunks(response, deadline))

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> int | None:
        """POST within the deadline; the status code, or None when no answer came.

        Raises `UrlRefused` when the address is not allowed. Redirects are never followed
        by a fetcher made with `max_redirects=0`: a 3xx comes back as its status code.
        """
        check_url_syntax(url)
        with _Deadline(self._timeout, allow_private=self._allow_private):
            try:
                with self._session.request(
                    "POST", url, stream=True, data=body, headers=headers
                ) as response:
                    status: int = response.status_code
                    return status
            except _REMOTE_ERRORS:
                return None

    def _get(self, url: str, deadline: _Deadline) -> requests.Response:
        try:
            response: requests.Response = self._session.request("GET", url, stream=True)
            return response
        except UrlRefused as exc:  # a connection (or a redirect's) refused by the rule
            raise InvalidImageUrl(exc.message) from None
        except _REMOTE_ERRORS as exc:
            raise _remote_failure(exc, deadline) from None

    def _chunks(self, response: requests.Response, deadline: _Deadline) -> Iterator[bytes]:
        """The body, with the remote side's failures mapped where they happen: this runs
        inside `consume`, whose own errors must not be taken for the server's."""
        total = 0
        blocks = response.iter_content(_CHUNK)
        while True:
            try:
                block = next(blocks, None)
            except _REMOTE_ERRORS as exc:
                raise _remote_failure(exc, deadline) from None
            if block is None:
                break
            total += len(block)
            if total > self._max_bytes:
                raise PayloadTooLarge(f"the image at the URL is over {self._max_bytes} bytes")
            if deadline.passed():
                raise deadline.timed_out()
            yield block
        if deadline.passed():
            # The cut-off ends a body that runs until the connection closes just as the
            # server closing it would: a short image must not pass for a whole one.
            raise deadline.timed_out()


#: What the remote side can raise through requests and urllib3: requests' own errors (they
#: are OSErrors too), urllib3's and http.client's that escape unwrapped, and socket errors.
_REMOTE_ERRORS = (requests.RequestException, HTTPError, http.client.HTTPException, OSError)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and every exception it wraps: requests and urllib3 nest the socket's error in
    causes, contexts, arguments and a `reason`."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        nested = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        todo.extend(e for e in [*nested, *current.args] if isinstance(e, BaseException))


def _remote_failure(exc: BaseException, deadline: _Deadline) -> InvalidImageUrl:
    """The remote side's failure, in our words. The deadline comes first: cutting the
    connection off is what broke whatever was waiting on it."""
    if deadline.passed():
        return deadline.timed_out()
    causes = list(_causes(exc))
    for kinds, message in _FAILURES:
        if any(isinstance(cause, kinds) for cause in causes):
            return InvalidImageUrl(message)
    # Anything rarer (TLS, a redirect to another scheme, a malformed answer) by its kind.
    return InvalidImageUrl(f"the image URL cannot be fetched: {type(exc).__name__}")


#: The first that matches any of a failure's causes names it.
_FAILURES: list[tuple[type[BaseException] | tuple[type[BaseException], ...], str]] = [
    (requests.TooManyRedirects, "the image URL redirects too often"),
    ((requests.Timeout, Urllib3Timeout, TimeoutError), "fetching the image URL timed out"),
    ((NameResolutionError, socket.gaierror), "the image URL's host does not resolve"),
    (ConnectionRefusedError, "the image URL's server refused the connection"),
    ((ConnectionResetError, BrokenPipeError), "the image URL's server reset the connection"),
    (
        http.client.IncompleteRead,
        "the image URL's server closed the connection before the whole image arrived",
    ),
    (requests.exceptions.ContentDecodingError, "the image URL's body cannot be decoded"),
]
