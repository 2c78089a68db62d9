"""The one SSRF-safe fetcher for user-supplied URLs (API.md, "Fetching URLs").

requests-hardened resolves the host, refuses private, loopback, link-local, CGNAT and
other non-public addresses, and connects to the very address it checked (TLS still
verifies the host name), on every redirect hop. On top of it we add what it leaves to the
caller: the scheme rule, a redirect cap, a byte cap enforced while streaming, a total
deadline (a server that trickles one byte a second cannot hold a worker), and a check of
every address a name resolves to, for refusing a webhook URL at submit time.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar
from urllib.parse import urlparse

import requests
from requests_hardened import Config, HTTPSession
from requests_hardened.ip_filter import EXTRA_BLOCKED_NET_RANGES, InvalidIPAddress

from visionq.errors import InvalidImageUrl, PayloadTooLarge, UrlRefused

T = TypeVar("T")
_CHUNK = 256 * 1024


def check_url_syntax(url: str) -> None:
    """The cheap part of the rules: http(s) with a host."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UrlRefused("only http and https URLs with a host name can be fetched")


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    blocked = any(ip in net for net in EXTRA_BLOCKED_NET_RANGES)
    return ip.is_global and not ip.is_multicast and not blocked


def check_public(url: str, *, allow_private: bool) -> None:
    """Refuse a URL whose host does not resolve or resolves to any non-public address.

    `allow_private` lifts only the address rule, never the need to resolve.
    """
    check_url_syntax(url)
    host = urlparse(url).hostname or ""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise UrlRefused(f"the host {host!r} does not resolve") from None
    if not allow_private and not all(_is_public(str(info[4][0])) for info in infos):
        raise UrlRefused("the URL resolves to an address that is not public")


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
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._session = HTTPSession(
            Config(
                ip_filter_enable=not allow_private,
                ip_filter_allow_loopback_ips=False,
                never_redirect=max_redirects == 0,
                default_timeout=(min(10.0, timeout), min(10.0, timeout)),
                user_agent_override=user_agent,
            )
        )
        self._session.max_redirects = max_redirects
        self._session.trust_env = False  # no proxies from the environment: they bypass the filter

    def fetch(self, url: str, consume: Callable[[Iterator[bytes]], T]) -> T:
        """Stream the body of `url` into `consume`; errors become `InvalidImageUrl`."""
        try:
            check_url_syntax(url)
            return self._request("GET", url, lambda r, deadline: self._read(r, deadline, consume))
        except UrlRefused as exc:
            raise InvalidImageUrl(exc.message) from None
        except requests.TooManyRedirects:
            raise InvalidImageUrl("the image URL redirects too often") from None
        except requests.Timeout:
            raise InvalidImageUrl("fetching the image URL timed out") from None
        except requests.RequestException as exc:
            name = type(exc).__name__
            raise InvalidImageUrl(f"the image URL cannot be fetched: {name}") from None

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> int | None:
        """POST within the deadline; the status code, or None when no answer came.

        Raises `UrlRefused` when the address is not allowed. Redirects are never followed
        by a fetcher made with `max_redirects=0`: a 3xx comes back as its status code.
        """
        check_url_syntax(url)
        try:
            return self._request(
                "POST", url, lambda r, deadline: r.status_code, data=body, headers=headers
            )
        except requests.RequestException:
            return None

    def _request(
        self,
        method: str,
        url: str,
        handle: Callable[[requests.Response, float], T],
        **kwargs: object,
    ) -> T:
        deadline = time.monotonic() + self._timeout
        try:
            with self._session.request(method, url, stream=True, **kwargs) as response:
                # A blocked read only ends when bytes come; closing the response from a timer
                # is what makes the deadline total rather than per read.
                remaining = max(0.0, deadline - time.monotonic())
                watchdog = threading.Timer(remaining, response.close)
                watchdog.start()
                try:
                    return handle(response, deadline)
                except (requests.RequestException, OSError, AttributeError, ValueError):
                    if time.monotonic() >= deadline:
                        raise requests.Timeout("the total deadline passed") from None
                    raise
                finally:
                    watchdog.cancel()
        except InvalidIPAddress:
            raise UrlRefused("the URL resolves to an address that is not public") from None

    def _read(
        self, response: requests.Response, deadline: float, consume: Callable[[Iterator[bytes]], T]
    ) -> T:
        if response.status_code >= 400:
            raise InvalidImageUrl(f"fetching the image URL answered {response.status_code}")
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > self._max_bytes:
            raise PayloadTooLarge(f"the image at the URL is over {self._max_bytes} bytes")
        return consume(self._chunks(response, deadline))

    def _chunks(self, response: requests.Response, deadline: float) -> Iterator[bytes]:
        total = 0
        for block in response.iter_content(_CHUNK):
            total += len(block)
            if total > self._max_bytes:
                raise PayloadTooLarge(f"the image at the URL is over {self._max_bytes} bytes")
            if time.monotonic() > deadline:
                raise requests.Timeout("the total deadline passed")
            yield block
