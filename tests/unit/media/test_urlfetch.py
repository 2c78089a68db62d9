"""The one URL fetcher against hostile URLs and hostile servers (visionq.media.urlfetch).

Every hostile URL points at a canary: a TCP listener on loopback (IPv4, and IPv6 where the
machine has it) that counts the connections it accepts. Each URL must be refused, with the
right error, by the image fetcher, by the webhook poster and by the submit-time check, and
the canary must never see a connection.

Two things outside the code under test are stood in for, by the autouse `network` fixture:
DNS (`socket.getaddrinfo`) answers made-up *.test names from a table, passes address
literals and the system's own loopback names (localhost, /etc/hosts) to the system, and
knows nothing else, so no test reaches a real resolver; and the internet: urllib3's
`create_connection` delivers a connection to one of a few public addresses to a local
server, lets loopback through (so the canary sees whatever gets that far) and refuses
anything else, so no test reaches a real network. The address rule itself is the real one
throughout: the public addresses pass it because they are public, not because the rule was
lifted.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import ipaddress
import select
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3.util.connection

from tests.support.brokenserver import Server
from visionq.errors import InvalidImageUrl, PayloadTooLarge, UrlRefused
from visionq.media.urlfetch import UrlFetcher, check_public

NOT_PUBLIC = "not public"
NOT_HTTP = "only http and https"
PUBLIC_V4 = "93.184.216.34"


def _system_loopback_names() -> list[str]:
    """Names /etc/hosts points at loopback that the system resolver really answers."""
    names: set[str] = set()
    with contextlib.suppress(OSError):
        for line in Path("/etc/hosts").read_text().splitlines():
            fields = line.split("#")[0].split()
            with contextlib.suppress(ValueError, IndexError):
                if ipaddress.ip_address(fields[0]).is_loopback:
                    names.update(name.lower() for name in fields[1:])
    names.discard("localhost")
    resolvable = []
    for name in sorted(names):
        with contextlib.suppress(OSError):
            socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
            resolvable.append(name)
    return resolvable


HOSTS_NAMES = _system_loopback_names()

# Names the test resolver answers; each list is one answer, of one or more addresses.
TEST_NAMES = {
    "loopback.test": ["127.0.0.1"],
    "v6-loopback.test": ["::1"],
    "mapped.test": ["::ffff:127.0.0.1"],
    "metadata.test": ["169.254.169.254"],
    "mixed.test": [PUBLIC_V4, "127.0.0.1"],
}

# (id, URL with the canary's {port}, the refusal expected). Some forms (octal, hex, short,
# decimal) are read differently by different layers; what matters is that each is refused
# and that nothing connects.
CORPUS = [
    # Loopback, in every spelling.
    ("loopback", "http://127.0.0.1:{port}/", NOT_PUBLIC),
    ("loopback-elsewhere-in-8", "http://127.10.20.30:{port}/", NOT_PUBLIC),
    ("decimal", "http://2130706433:{port}/", NOT_PUBLIC),
    ("octal-dotted", "http://0177.0.0.1:{port}/", NOT_PUBLIC),
    ("octal-whole", "http://017700000001:{port}/", NOT_PUBLIC),
    ("hex-whole", "http://0x7f000001:{port}/", NOT_PUBLIC),
    ("hex-dotted", "http://0x7f.0.0.1:{port}/", NOT_PUBLIC),
    ("short-two-parts", "http://127.1:{port}/", NOT_PUBLIC),
    ("short-three-parts", "http://127.0.1:{port}/", NOT_PUBLIC),
    ("unspecified", "http://0.0.0.0:{port}/", NOT_PUBLIC),
    ("zero", "http://0:{port}/", NOT_PUBLIC),
    ("v6-loopback", "http://[::1]:{port}/", NOT_PUBLIC),
    ("v6-unspecified", "http://[::]:{port}/", NOT_PUBLIC),
    ("v4-mapped", "http://[::ffff:127.0.0.1]:{port}/", NOT_PUBLIC),
    ("v4-mapped-hex", "http://[::ffff:7f00:1]:{port}/", NOT_PUBLIC),
    ("v4-compatible", "http://[::127.0.0.1]:{port}/", NOT_PUBLIC),
    ("v4-translated-siit", "http://[::ffff:0:127.0.0.1]:{port}/", NOT_PUBLIC),
    ("nat64", "http://[64:ff9b::127.0.0.1]:{port}/", NOT_PUBLIC),
    ("6to4", "http://[2002:7f00:1::]:{port}/", NOT_PUBLIC),
    ("https", "https://127.0.0.1:{port}/", NOT_PUBLIC),
    ("localhost", "http://localhost:{port}/", NOT_PUBLIC),
    ("localhost-upper", "http://LOCALHOST:{port}/", NOT_PUBLIC),
    ("name-to-loopback", "http://loopback.test:{port}/", NOT_PUBLIC),
    ("name-to-v6-loopback", "http://v6-loopback.test:{port}/", NOT_PUBLIC),
    ("name-to-v4-mapped", "http://mapped.test:{port}/", NOT_PUBLIC),
    ("name-to-public-and-loopback", "http://mixed.test:{port}/", NOT_PUBLIC),
    *((f"hosts-file-{name}", f"http://{name}:{{port}}/", NOT_PUBLIC) for name in HOSTS_NAMES),
    # The cloud metadata service.
    ("metadata", "http://169.254.169.254:{port}/latest/meta-data/", NOT_PUBLIC),
    ("metadata-decimal", "http://2852039166:{port}/", NOT_PUBLIC),
    ("metadata-hex", "http://0xa9fea9fe:{port}/", NOT_PUBLIC),
    ("metadata-octal", "http://0251.0376.0251.0376:{port}/", NOT_PUBLIC),
    ("metadata-short", "http://169.254.43518:{port}/", NOT_PUBLIC),
    ("metadata-v4-mapped", "http://[::ffff:169.254.169.254]:{port}/", NOT_PUBLIC),
    ("metadata-ec2-v6", "http://[fd00:ec2::254]:{port}/", NOT_PUBLIC),
    ("name-to-metadata", "http://metadata.test:{port}/", NOT_PUBLIC),
    # Private, link-local, shared, multicast, reserved.
    ("v6-unique-local", "http://[fd00::1]:{port}/", NOT_PUBLIC),
    ("v6-link-local", "http://[fe80::1]:{port}/", NOT_PUBLIC),
    ("v6-site-local", "http://[fec0::1]:{port}/", NOT_PUBLIC),
    ("v6-multicast", "http://[ff02::1]:{port}/", NOT_PUBLIC),
    ("cgnat", "http://100.64.0.1:{port}/", NOT_PUBLIC),
    ("rfc1918-10", "http://10.0.0.1:{port}/", NOT_PUBLIC),
    ("rfc1918-172", "http://172.16.0.1:{port}/", NOT_PUBLIC),
    ("rfc1918-192", "http://192.168.1.1:{port}/", NOT_PUBLIC),
    ("link-local", "http://169.254.0.1:{port}/", NOT_PUBLIC),
    ("multicast", "http://224.0.0.1:{port}/", NOT_PUBLIC),
    ("reserved", "http://240.0.0.1:{port}/", NOT_PUBLIC),
    ("broadcast", "http://255.255.255.255:{port}/", NOT_PUBLIC),
    ("benchmarking", "http://198.18.0.1:{port}/", NOT_PUBLIC),
    # Credentials and odd authorities that try to look like somewhere else.
    ("credentials", "http://user:secret@127.0.0.1:{port}/", NOT_PUBLIC),
    ("userinfo-public-name", "http://example.com@127.0.0.1:{port}/", NOT_PUBLIC),
    ("fragment-public-name", "http://127.0.0.1:{port}#@example.com/", NOT_PUBLIC),
    ("leading-zero-port", "http://127.0.0.1:0{port}/", NOT_PUBLIC),
    ("upper-case-scheme", "HTTP://127.0.0.1:{port}/", NOT_PUBLIC),
    # Other schemes, and no host.
    ("file", "file:///etc/passwd", NOT_HTTP),
    ("file-with-host", "file://127.0.0.1/etc/passwd", NOT_HTTP),
    ("gopher", "gopher://127.0.0.1:{port}/_GET%20/", NOT_HTTP),
    ("ftp", "ftp://127.0.0.1:{port}/", NOT_HTTP),
    ("dict", "dict://127.0.0.1:{port}/info", NOT_HTTP),
    ("ldap", "ldap://127.0.0.1:{port}/", NOT_HTTP),
    ("scheme-relative", "//127.0.0.1:{port}/", NOT_HTTP),
    ("no-host", "http:///etc/passwd", NOT_HTTP),
    ("empty-host", "http://:{port}/", NOT_HTTP),
]


class Canary:
    """A loopback listener that counts every connection reaching it; it must stay at zero."""

    def __init__(self) -> None:
        first = socket.create_server(("127.0.0.1", 0))
        self.port: int = first.getsockname()[1]
        self._listeners = [first]
        v6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:  # same port on ::1, where the machine has IPv6 loopback
            v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            v6.bind(("::1", self.port))
            v6.listen()
            self._listeners.append(v6)
        except OSError:
            v6.close()
        for listener in self._listeners:
            listener.setblocking(False)
        self._peers: list[Any] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def accepted(self) -> list[Any]:
        """The peers seen so far, including connections still waiting in the backlog."""
        self._drain()
        return list(self._peers)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for listener in self._listeners:
            listener.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            select.select(self._listeners, [], [], 0.05)
            self._drain()

    def _drain(self) -> None:
        with self._lock:
            for listener in self._listeners:
                with contextlib.suppress(BlockingIOError):
                    while True:
                        conn, peer = listener.accept()
                        conn.close()
                        self._peers.append(peer)


class Network:
    """The test's DNS and internet; see the module docstring."""

    def __init__(self) -> None:
        self.answers: dict[str, list[list[str]]] = {
            name: [addresses] for name, addresses in TEST_NAMES.items()
        }
        self.lookups: collections.Counter[str] = collections.Counter()
        self.connects: list[tuple[str, int]] = []
        self._routes: dict[str, int] = {}
        self._real_getaddrinfo = socket.getaddrinfo
        self._real_connect = urllib3.util.connection.create_connection

    def serve(self, name: str, server: Server, address: str | None = None) -> str:
        """Give `name` a public address whose connections reach `server`; its base URL."""
        address = address or f"93.184.216.{100 + len(self._routes)}"
        self.answers[name] = [[address]]
        self._routes[address] = server.port
        return f"http://{name}"

    def getaddrinfo(
        self, host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else host
        if name in self.answers:
            self.lookups[name] += 1
            answers = self.answers[name]
            addresses = answers[min(self.lookups[name], len(answers)) - 1]
            return [_addrinfo(a, int(port or 0)) for a in addresses if family in (0, _family(a))]
        if name in ("localhost", *HOSTS_NAMES):
            return self._real_getaddrinfo(host, port, family, type, proto, flags)
        try:  # address literals, in any of the forms the system reads
            return self._real_getaddrinfo(
                host, port, family, type, proto, flags | socket.AI_NUMERICHOST
            )
        except socket.gaierror:
            raise socket.gaierror(socket.EAI_NONAME, f"the test DNS has no {name!r}") from None

    def create_connection(self, address: tuple[str, int], *args: Any, **kwargs: Any) -> Any:
        host, port = address
        self.connects.append((host, port))
        ip = ipaddress.ip_address(host.strip("[]").split("%")[0])
        if str(ip) in self._routes:
            return self._real_connect(("127.0.0.1", self._routes[str(ip)]), *args, **kwargs)
        local = getattr(ip, "ipv4_mapped", None) or ip
        if local.is_loopback or local.is_unspecified:  # the canary's side of the machine
            return self._real_connect(address, *args, **kwargs)
        raise OSError(errno.ENETUNREACH, f"the test network has no route to {host}")


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _addrinfo(address: str, port: int) -> tuple[Any, ...]:
    if ":" in address:
        return (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0))
    return (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))


@pytest.fixture(scope="module")
def canary() -> Iterator[Canary]:
    listener = Canary()
    yield listener
    listener.close()


@pytest.fixture(autouse=True)
def network(monkeypatch: pytest.MonkeyPatch) -> Network:
    net = Network()
    monkeypatch.setattr(socket, "getaddrinfo", net.getaddrinfo)
    monkeypatch.setattr(urllib3.util.connection, "create_connection", net.create_connection)
    return net


@pytest.fixture
def make_fetcher() -> Iterator[Callable[..., UrlFetcher]]:
    """UrlFetchers configured as the pipeline's, closed after the test (no stray sockets)."""
    made: list[UrlFetcher] = []

    def make(**overrides: Any) -> UrlFetcher:
        options: dict[str, Any] = {"allow_private": False, "timeout": 5.0, "max_bytes": 1 << 20}
        fetcher = UrlFetcher(**{**options, **overrides})
        made.append(fetcher)
        return fetcher

    yield make
    for fetcher in made:
        fetcher._session.close()


def read_request(conn: socket.socket) -> bytes:
    """Read one request, its body included; its head, or b"" when the client hung up."""
    data = b""
    while b"\r\n\r\n" not in data:
        block = conn.recv(65536)
        if not block:
            return b""
        data += block
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            missing = int(value) - len(body)
            while missing > 0:
                block = conn.recv(missing)
                if not block:
                    break
                missing -= len(block)
    return head


def answer(status: str, body: bytes = b"", headers: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{headers}Connection: close\r\n\r\n"
    ).encode() + body


def trickle(conn: socket.socket, data: bytes, every: float = 1.0) -> bool:
    """Send `data` a byte every `every` seconds; False once the client has hung up."""
    for i in range(len(data)):
        try:
            conn.sendall(data[i : i + 1])
            if select.select([conn], [], [], every)[0] and not conn.recv(65536):
                return False
        except OSError:
            return False
    return True


def flood(conn: socket.socket, head: bytes, chunk: bytes, limit: int) -> int:
    """Send `head`, then `chunk` until the client hangs up or `limit`; the bytes sent."""
    sent = 0
    with contextlib.suppress(OSError):
        conn.sendall(head)
        while sent < limit:
            conn.sendall(chunk)
            sent += len(chunk)
    return sent


# -- The SSRF corpus -------------------------------------------------------------------------

every_case = pytest.mark.parametrize(
    ("url", "refusal"), [case[1:] for case in CORPUS], ids=[case[0] for case in CORPUS]
)


@every_case
def test_an_image_url_is_refused_before_any_connection(
    url: str,
    refusal: str,
    canary: Canary,
    network: Network,
    make_fetcher: Callable[..., UrlFetcher],
) -> None:
    with pytest.raises(InvalidImageUrl, match=refusal):
        make_fetcher().fetch(url.format(port=canary.port), b"".join)
    assert network.connects == []
    assert canary.accepted() == []


@every_case
def test_a_webhook_url_is_refused_at_delivery_before_any_connection(
    url: str,
    refusal: str,
    canary: Canary,
    network: Network,
    make_fetcher: Callable[..., UrlFetcher],
) -> None:
    with pytest.raises(UrlRefused, match=refusal):
        make_fetcher(max_redirects=0).post(url.format(port=canary.port), b"{}", {})
    assert network.connects == []
    assert canary.accepted() == []


@every_case
def test_a_webhook_url_is_refused_at_submit(url: str, refusal: str, canary: Canary) -> None:
    with pytest.raises(UrlRefused, match=refusal):
        check_public(url.format(port=canary.port), allow_private=False)


# -- Redirects --------------------------------------------------------------------------------

REDIRECT_TARGETS = [
    ("loopback", "http://127.0.0.1:{port}/", NOT_PUBLIC),
    ("decimal-loopback", "http://2130706433:{port}/", NOT_PUBLIC),
    ("v6-loopback", "http://[::1]:{port}/", NOT_PUBLIC),
    ("name-to-loopback", "http://loopback.test:{port}/", NOT_PUBLIC),
    ("metadata", "http://169.254.169.254:{port}/latest/meta-data/", NOT_PUBLIC),
    ("file", "file:///etc/passwd", "InvalidSchema"),
    ("gopher", "gopher://127.0.0.1:{port}/_GET%20/", "InvalidSchema"),
]


@pytest.mark.parametrize(
    ("target", "refusal"), [t[1:] for t in REDIRECT_TARGETS], ids=[t[0] for t in REDIRECT_TARGETS]
)
def test_a_redirect_to_a_refused_url_is_refused(
    target: str,
    refusal: str,
    canary: Canary,
    network: Network,
    make_fetcher: Callable[..., UrlFetcher],
) -> None:
    # The first hop has to be allowed for its redirect to be the thing under test, so it is
    # a public address (it passes the real rule because it is public), which the test
    # network delivers to a local redirecting server. The redirect then points at the canary.
    location = target.format(port=canary.port)

    def serve(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(answer("302 Found", headers=f"Location: {location}\r\n"))

    with Server(serve) as server:
        base = network.serve("hop.test", server)
        with pytest.raises(InvalidImageUrl, match=refusal):
            make_fetcher().fetch(f"{base}/image.png", b"".join)
        assert server.connections == 1
    assert canary.accepted() == []


def test_a_webhook_never_follows_a_redirect(
    canary: Canary, network: Network, make_fetcher: Callable[..., UrlFetcher]
) -> None:
    def serve(conn: socket.socket) -> None:
        read_request(conn)
        location = f"http://127.0.0.1:{canary.port}/"
        conn.sendall(answer("307 Temporary Redirect", headers=f"Location: {location}\r\n"))

    with Server(serve) as server:
        base = network.serve("hooks.test", server)
        assert make_fetcher(max_redirects=0).post(f"{base}/hook", b"{}", {}) == 307
        assert server.connections == 1
    assert canary.accepted() == []


def _redirect_chain(conn: socket.socket) -> None:
    """/hops/N redirects to /hops/N-1 (with a body nobody should read); /hops/0 is the image."""
    path = read_request(conn).split(b" ")[1].decode()
    left = int(path.rsplit("/", 1)[1])
    if left == 0:
        conn.sendall(answer("200 OK", b"image"))
        return
    head = (
        f"HTTP/1.1 302 Found\r\nLocation: /hops/{left - 1}\r\n"
        "Content-Length: 1000000000000\r\nConnection: close\r\n\r\n"
    ).encode()
    flood(conn, head, b"x" * 65536, limit=1 << 40)


def test_three_redirects_are_followed_each_re_checked(
    network: Network, make_fetcher: Callable[..., UrlFetcher]
) -> None:
    with Server(_redirect_chain) as server:
        base = network.serve("images.test", server)
        assert make_fetcher(timeout=10.0).fetch(f"{base}/hops/3", b"".join) == b"image"
        assert server.connections == 4
    # A fresh lookup and check for every hop: a redirect's connection is never reused.
    assert network.lookups["images.test"] == 4


def test_a_fourth_redirect_is_refused(
    network: Network, make_fetcher: Callable[..., UrlFetcher]
) -> None:
    with Server(_redirect_chain) as server:
        base = network.serve("images.test", server)
        with pytest.raises(InvalidImageUrl, match="redirects too often"):
            make_fetcher().fetch(f"{base}/hops/4", b"".join)
        assert server.connections == 4


# -- DNS rebinding ----------------------------------------------------------------------------


def test_a_rebinding_name_is_connected_to_at_the_address_that_was_checked(
    canary: Canary, network: Network, make_fetcher: Callable[..., UrlFetcher]
) -> None:
    def serve(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(answer("200 OK", b"from the checked address"))

    with Server(serve) as stand_in:
        network.serve("rebind.test", stand_in, address=PUBLIC_V4)
        # The first lookup answers public, every later one loopback, at the canary's port.
        network.answers["rebind.test"].append(["127.0.0.1"])
        fetcher = make_fetcher()
        url = f"http://rebind.test:{canary.port}/image.png"
        assert fetcher.fetch(url, b"".join) == b"from the checked address"
        with pytest.raises(InvalidImageUrl, match=NOT_PUBLIC):
            fetcher.fetch(url, b"".join)
        assert stand_in.connections == 1
    assert network.lookups["rebind.test"] == 2  # one lookup per connection, never a second
    assert canary.accepted() == []


def test_a_webhook_name_checked_at_submit_is_checked_again_at_delivery(
    canary: Canary, network: Network, make_fetcher: Callable[..., UrlFetcher]
) -> None:
    network.answers["rebind.test"] = [[PUBLIC_V4], ["127.0.0.1"]]
    url = f"http://rebind.test:{canary.port}/hook"
    check_public(url, allow_private=False)
    with pytest.raises(UrlRefused, match=NOT_PUBLIC):
        make_fetcher(max_redirects=0).post(url, b"{}", {})
    assert canary.accepted() == []


# -- TLS: the pinned connection still verifies the host name ---------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA and a certificate it signed for secure.test, made with the openssl CLI."""
    folder = tmp_path_factory.mktemp("tls")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    (folder / "ext.cnf").write_text("subjectAltName=DNS:secure.test\n")
    ca = ("-subj", "/CN=visionq test CA", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2")
    leaf = ("-subj", "/CN=secure.test", "-keyout", "leaf.key", "-out", "leaf.csr")
    sign = ("-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-extfile", "ext.cnf")
    for command in (
        ("req", "-x509", *ec, *ca),
        ("req", *ec, *leaf),
        ("x509", "-req", "-in", "leaf.csr", *sign, "-out", "leaf.pem", "-days", "2"),
    ):
        subprocess.run(["openssl", *command], cwd=folder, check=True, capture_output=True)
    return {"ca": folder / "ca.pem", "cert": folder / "leaf.pem", "key": folder / "leaf.key"}


def _tls_server(files: dict[str, Path], names: list[str | None]) -> Server:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files["cert"], files["key"])
    context.sni_callback = lambda _sock, name, _ctx: names.append(name)

    def serve(conn: socket.socket) -> None:
        with context.wrap_socket(conn, server_side=True) as tls:
            read_request(tls)
            tls.sendall(answer("200 OK", b"secure"))

    return Server(serve)


def test_tls_verifies_the_host_name_not_the_pinned_address(
    tls_files: dict[str, Path], network: Network, make_fetcher: Callable[..., UrlFetcher]
) -> None:
    names: list[str | None] = []
    with _tls_server(tls_files, names) as server:
        network.serve("secure.test", server)
        network.serve("other.test", server)
        fetcher = make_fetcher()
        fetcher._session.verify = str(tls_files["ca"])  # trust the test CA, nothing else
        assert fetcher.fetch("https://secure.test/", b"".join) == b"secure"
        # Same address, same certificate, another name: the certificate does not match.
        with pytest.raises(InvalidImageUrl, match="SSLError"):
            fetcher.fetch("https://other.test/", b"".join)
    assert names == ["secure.test", "other.test"]


# -- The total deadline -----------------------------------------------------------------------

SLOW_HEAD = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"." * 60 + b"\r\nContent-Length: 2\r\n\r\nok"


def _trickling(data: bytes, outcome: list[bool]) -> Callable[[socket.socket], None]:
    def serve(conn: socket.socket) -> None:
        read_request(conn)
        outcome.append(trickle(conn, data))

    return serve


def test_a_server_trickling_its_headers_is_cut_off_at_the_deadline(
    network: Network, make_fetcher: Callable[..., UrlFetcher]
) -> None:
    # One byte a second resets every per-read timeout; only a total deadline ends this.
    finished: list[bool] = []
    with Server(_trickling(SLOW_HEAD, finished)) as server:
        base = network.serve("slow.test", server)
        with pytest.raises(InvalidImageUrl, match="timed out"):
            make_fetcher(timeout=1.5).fetch(f"{base}/image.png", b"".join)
    assert finished == [False]  # the server saw the connection end before it was done


def test_a_webhook_trickling_its_headers_is_cut_off_at_the_deadline(
    network: Network, make_fetcher: Callable[..., UrlFetcher]
) -> None:
    finished: list[bool] = []
    with Server(_trickling(SLOW_HEAD, finished)) as server:
        base = network.serve("slow-hooks.test", server)
        assert make_fetcher(timeout=1.5, max_redirects=0).post(f"{base}/hook", b"{}", {}) is None
    assert finished == [False]


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 60\r\n\r\n",
        # Without a length the body runs until the connection closes, as the cut-off does:
        # the image must not pass for a whole one.
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
    ],
    ids=["with-length", "until-close"],
)
def test_a_server_trickling_its_body_is_cut_off_at_the_deadline(
    head: bytes, network: Network, make_fetcher: Callable[..., UrlFetcher]
) -> None:
    finished: list[bool] = []

    def serve(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(head)
        finished.append(trickle(conn, b"." * 60))

    with Server(serve) as server:
        base = network.serve("slow.test", server)
        with pytest.raises(InvalidImageUrl, match="timed out"):
            make_fetcher(timeout=1.5).fetch(f"{base}/image.png", b"".join)
    assert finished == [False]


def test_a_kept_alive_connection_is_held_to_the_next_requests_deadline(
    network: Network, make_fetcher: Callable[..., UrlFetcher]
) -> None:
    finished: list[bool] = []

    def serve(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfast")
        read_request(conn)
        finished.append(trickle(conn, SLOW_HEAD))

    with Server(serve) as server:
        base = network.serve("keepalive.test", server)
        fetcher = make_fetcher(timeout=1.5)
        assert fetcher.fetch(f"{base}/1.png", b"".join) == b"fast"
        with pytest.raises(InvalidImageUrl, match="timed out"):
            fetcher.fetch(f"{base}/2.png", b"".join)
        assert server.connections == 1  # the second request did reuse the connection
    assert finished == [False]


# -- The byte cap -----------------------------------------------------------------------------

LIMIT = 100_000


def test_a_declared_length_over_the_cap_is_refused_before_reading(
    network: Network, make_fetcher: Callable[..., UrlFetcher]
) -> None:
    received: list[bytes] = []

    def serve(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(answer("200 OK", b"x" * (LIMIT + 1)))

    with Server(serve) as server:
        base = network.serve("big.test", server)
        with pytest.raises(PayloadTooLarge):
            make_fetcher(max_bytes=LIMIT).fetch(f"{base}/image.png", received.extend)
    assert received == []


@pytest.mark.parametrize(
    ("head", "chunk"),
    [
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", b"x" * 65536),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"10000\r\n" + b"x" * 65536 + b"\r\n",
        ),
    ],
    ids=["until-close", "chunked"],
)
def test_an_undeclared_body_over_the_cap_is_refused_while_streaming(
    head: bytes, chunk: bytes, network: Network, make_fetcher: Callable[..., UrlFetcher]
) -> None:
    sent: list[int] = []
    received: list[int] = []

    def consume(chunks: Iterator[bytes]) -> None:
        for block in chunks:
            received.append(len(block))

    def serve(conn: socket.socket) -> None:
        read_request(conn)
        sent.append(flood(conn, head, chunk, limit=1 << 30))

    with Server(serve) as server:
        base = network.serve("endless.test", server)
        with pytest.raises(PayloadTooLarge):
            make_fetcher(max_bytes=LIMIT).fetch(f"{base}/image.png", consume)
    assert sum(received) <= LIMIT
    assert sent[0] < 1 << 30  # the server was hung up on, not read to its end


# -- VISIONQ_ALLOW_PRIVATE_URLS=true lifts the address rule and nothing else ------------------


def test_allow_private_fetches_and_posts_to_loopback(
    make_fetcher: Callable[..., UrlFetcher],
) -> None:
    def serve(conn: socket.socket) -> None:
        head = read_request(conn)
        conn.sendall(answer("200 OK", b"local") if head.startswith(b"GET") else answer("204 Ok"))

    with Server(serve) as server:
        url = f"http://127.0.0.1:{server.port}/image.png"
        assert make_fetcher(allow_private=True).fetch(url, b"".join) == b"local"
        assert make_fetcher(allow_private=True, max_redirects=0).post(url, b"{}", {}) == 204
    check_public(url, allow_private=True)


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "gopher://127.0.0.1:70/_GET%20/", "ftp://127.0.0.1/"]
)
def test_allow_private_still_refuses_other_schemes(
    url: str, make_fetcher: Callable[..., UrlFetcher]
) -> None:
    with pytest.raises(InvalidImageUrl, match=NOT_HTTP):
        make_fetcher(allow_private=True).fetch(url, b"".join)
    with pytest.raises(UrlRefused, match=NOT_HTTP):
        make_fetcher(allow_private=True, max_redirects=0).post(url, b"{}", {})
    with pytest.raises(UrlRefused, match=NOT_HTTP):
        check_public(url, allow_private=True)


def test_allow_private_still_holds_to_the_deadline(
    make_fetcher: Callable[..., UrlFetcher],
) -> None:
    finished: list[bool] = []

    def serve(conn: socket.socket) -> None:
        read_request(conn)
        finished.append(trickle(conn, SLOW_HEAD))

    with Server(serve) as server:
        url = f"http://127.0.0.1:{server.port}/"
        with pytest.raises(InvalidImageUrl, match="timed out"):
            make_fetcher(allow_private=True, timeout=1.5).fetch(url, b"".join)
    assert finished == [False]


# -- Last: the whole corpus ran, and nothing ever reached the canary --------------------------


def test_the_corpus_is_large_and_the_canary_saw_no_connection(canary: Canary) -> None:
    assert len(CORPUS) >= 30
    assert canary.accepted() == []
