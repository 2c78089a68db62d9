"""The one SSRF-safe fetcher for user-supplied URLs (API.md, "Fetching URLs").

requests-hardened resolves the host, refuses private, loopback, link-local, CGNAT and
other non-public addresses, and connects to the very address it checked (TLS still
verifies the host name), on every redirect hop. On top of it we add what it leaves to the
caller: the scheme rule, a redirect cap, a byte cap enforced while streaming, and a total
deadline, so a server that trickles one byte a second cannot hold a worker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar
from urllib.parse import urlparse

import requests
from requests_hardened import Config, HTTPSession
from requests_hardened.ip_filter import InvalidIPAddress

from visionq.errors import InvalidImageUrl, PayloadTooLarge

T = TypeVar("T")
_CHUNK = 256 * 1024


def check_url_syntax(url: str) -> None:
    """The cheap part of the rules, usable at submit time: http(s) with a host."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise InvalidImageUrl("only http and https URLs with a host name can be fetched")


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
        check_url_syntax(url)
        deadline = time.monotonic() + self._timeout
        try:
            with self._session.get(url, stream=True) as response:
                if response.status_code >= 400:
                    raise InvalidImageUrl(f"fetching the image URL answered {response.status_code}")
                length = response.headers.get("Content-Length", "")
                if length.isdigit() and int(length) > self._max_bytes:
                    raise PayloadTooLarge(f"the image at the URL is over {self._max_bytes} bytes")
                # A blocked read only ends when bytes come; closing the response from a timer
                # is what makes the deadline total rather than per read.
                watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), response.close)
                watchdog.start()
                try:
                    return consume(self._chunks(response, deadline))
                except (requests.RequestException, OSError, AttributeError, ValueError):
                    if time.monotonic() >= deadline:
                        raise InvalidImageUrl("fetching the image URL took too long") from None
                    raise
                finally:
                    watchdog.cancel()
        except InvalidIPAddress:
            raise InvalidImageUrl(
                "the image URL resolves to an address that is not public"
            ) from None
        except requests.TooManyRedirects:
            raise InvalidImageUrl("the image URL redirects too often") from None
        except requests.Timeout:
            raise InvalidImageUrl("fetching the image URL timed out") from None
        except requests.RequestException as exc:
            raise InvalidImageUrl(
                f"the image URL cannot be fetched: {type(exc).__name__}"
            ) from None

    def _chunks(self, response: requests.Response, deadline: float) -> Iterator[bytes]:
        total = 0
        for block in response.iter_content(_CHUNK):
            total += len(block)
            if total > self._max_bytes:
                raise PayloadTooLarge(f"the image at the URL is over {self._max_bytes} bytes")
            if time.monotonic() > deadline:
                raise InvalidImageUrl("fetching the image URL took too long")
            yield block
