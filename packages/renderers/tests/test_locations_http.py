"""http(s) image locations: SSRF targets refused before any connection, and real fetches from a loopback
server started here (the only network these tests touch), with the block list relaxed by injection."""

from __future__ import annotations

import io
import queue
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from foveal.configs.multimodal import MultimodalConfig
from foveal.renderers.errors import DisallowedLocation, ImageRejected, MissingAsset
from foveal.renderers.locations import LocationPolicy, read_location
from foveal.renderers.store import ImageStore
from foveal.renderers.security.networks import DEFAULT_BLOCKED_NETWORKS, blocking_network, embedded_ipv4


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png()
LOOPBACK_ALLOWED = tuple(net for net in DEFAULT_BLOCKED_NETWORKS if net != ip_network("127.0.0.0/8"))
HTTP_CONFIG = MultimodalConfig(allowed_url_schemes=["file", "data", "http", "https"], http_timeout_s=0.6)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.requests.append((self.path, self.headers.get("Host", "")))
        route = _ROUTES.get(self.path.split("?")[0], _ROUTES["/missing"])
        try:
            route(self)
            self.server.outcomes.put((self.path, "complete"))
        except (BrokenPipeError, ConnectionResetError):
            self.server.outcomes.put((self.path, "hung up"))  # the client hung up on purpose (cap or deadline)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    requests: list[tuple[str, str]]
    outcomes: queue.Queue[tuple[str, str]]
    """(path, "complete" | "hung up") as each handler ends: what the client did, seen from the server."""
    written: dict[str, int]
    """Body writes per path, counted by the slow routes."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # clients hang up on purpose here
            super().handle_error(request, client_address)


def _send(handler: _Handler, status: int, body: bytes = b"", **headers: str) -> None:
    handler.send_response(status)
    named = {"Content-Length": str(len(body))} | {name.replace("_", "-"): value for name, value in headers.items()}
    for name, value in named.items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


def _endless(handler: _Handler) -> None:
    handler.send_response(200)
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    chunk = b"\0" * 65536
    for count in range(1, 1001):
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        handler.server.written["/endless"] = count


def _drip(handler: _Handler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", "100000")
    handler.end_headers()
    for count in range(1, 201):
        handler.wfile.write(b"\0")
        handler.wfile.flush()
        handler.server.written["/drip"] = count
        time.sleep(0.02)


_ROUTES: dict[str, Callable[[_Handler], None]] = {
    "/cat.png": lambda h: _send(h, 200, PNG, Content_Type="image/png"),
    "/redirect": lambda h: _send(h, 302, Location="/cat.png"),
    "/redirect-absolute": lambda h: _send(h, 301, Location=f"http://127.0.0.1:{h.server.server_port}/cat.png"),
    "/redirect-private": lambda h: _send(h, 302, Location="http://10.1.2.3/cat.png"),
    "/redirect-metadata": lambda h: _send(h, 307, Location="http://169.254.169.254/latest/meta-data/"),
    "/redirect-file": lambda h: _send(h, 302, Location="file:///etc/passwd"),
    "/loop": lambda h: _send(h, 302, Location="/loop"),
    "/missing": lambda h: _send(h, 404, b"no"),
    "/declared-huge": lambda h: _send(h, 200, b"\0" * 10, Content_Length=str(10**9)),
    "/endless": _endless,
    "/drip": _drip,
}


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.requests, httpd.outcomes, httpd.written = [], queue.Queue(), {}
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every outgoing connection the code under test opens."""
    seen: list[str] = []
    real = socket.create_connection

    def recording(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        seen.append(address[0])
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", recording)
    return seen


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection attempt fails the test: refusals must happen before traffic."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a connection was attempted: {args}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def _relaxed(config: MultimodalConfig = HTTP_CONFIG) -> LocationPolicy:
    return LocationPolicy.from_config(config, Path("/nonexistent-store"), LOOPBACK_ALLOWED)


def _default(config: MultimodalConfig = HTTP_CONFIG) -> LocationPolicy:
    return LocationPolicy.from_config(config, Path("/nonexistent-store"))


def _url(server: _Server, path: str, host: str = "127.0.0.1") -> str:
    return f"http://{host}:{server.server_port}{path}"


def test_image_is_fetched_from_a_loopback_server_when_the_block_is_relaxed(
    server: _Server, connects: list[str]
) -> None:
    assert read_location(_url(server, "/cat.png"), _relaxed()) == PNG
    assert connects == ["127.0.0.1"]


def test_store_puts_a_fetched_image_with_an_injected_block_list(server: _Server, tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "assets", HTTP_CONFIG, blocked_networks=LOOPBACK_ALLOWED)
    stored = store.put(_url(server, "/cat.png"))
    assert (stored.width, stored.height) == (4, 4)
    assert store.read_verified(stored.uri, stored.hash) == stored.path.read_bytes()
    with pytest.raises(DisallowedLocation):
        ImageStore(tmp_path / "assets", HTTP_CONFIG).put(_url(server, "/cat.png"))


def test_http_is_refused_by_default_config(server: _Server, no_network: None) -> None:
    policy = LocationPolicy.from_config(MultimodalConfig(), Path("/s"), LOOPBACK_ALLOWED)
    with pytest.raises(DisallowedLocation) as info:
        read_location(_url(server, "/cat.png"), policy)
    assert info.value.field == "location.scheme"


def test_connection_goes_to_the_checked_address_with_the_name_in_the_host_header(
    server: _Server, connects: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name answers loopback (allowed here) once, then a metadata address. The fetch
    must connect to the address it checked and never ask DNS again."""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def rebinding(host: str, *args: Any, **kwargs: Any) -> Any:
        if host != "images.test":
            return real(host, *args, **kwargs)
        lookups.append(host)
        answer = "127.0.0.1" if len(lookups) == 1 else "169.254.169.254"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answer, args[0]))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    assert read_location(_url(server, "/cat.png?v=1", host="images.test"), _relaxed()) == PNG
    assert lookups == ["images.test"]
    assert connects == ["127.0.0.1"]
    assert server.requests[-1] == ("/cat.png?v=1", f"images.test:{server.server_port}")


@pytest.mark.parametrize("path", ["/redirect", "/redirect-absolute"])
def test_redirects_are_followed_and_each_hop_is_checked(server: _Server, connects: list[str], path: str) -> None:
    assert read_location(_url(server, path), _relaxed()) == PNG
    assert connects == ["127.0.0.1", "127.0.0.1"]


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/redirect-private", "location.host"),
        ("/redirect-metadata", "location.host"),
        ("/redirect-file", "location.scheme"),
    ],
)
def test_redirect_to_a_blocked_target_is_refused_without_connecting_to_it(
    server: _Server, connects: list[str], path: str, field: str
) -> None:
    with pytest.raises(DisallowedLocation) as info:
        read_location(_url(server, path), _relaxed())
    assert info.value.field == field
    assert connects == ["127.0.0.1"]


def test_redirect_loops_are_cut_off(server: _Server, connects: list[str]) -> None:
    with pytest.raises(DisallowedLocation) as info:
        read_location(_url(server, "/loop"), _relaxed())
    assert "redirects" in info.value.expected
    assert len(connects) == 4


def test_http_error_status_is_a_missing_asset(server: _Server) -> None:
    with pytest.raises(MissingAsset) as info:
        read_location(_url(server, "/missing"), _relaxed())
    assert "404" in info.value.expected


def test_declared_oversize_body_is_rejected_from_the_header(server: _Server) -> None:
    with pytest.raises(ImageRejected) as info:
        read_location(_url(server, "/declared-huge"), _relaxed())
    assert (info.value.field, info.value.value) == ("image.bytes", 10**9)


def _outcome(server: _Server, path: str) -> str:
    """How the server's handler for `path` ended (waits for it; the slow routes need seconds to finish alone)."""
    while True:
        done, outcome = server.outcomes.get(timeout=30)
        if done == path:
            return outcome


def test_streamed_body_is_cut_off_at_the_byte_cap(server: _Server) -> None:
    config = HTTP_CONFIG.model_copy(update={"max_image_bytes": 200_000})
    with pytest.raises(ImageRejected) as info:
        read_location(_url(server, "/endless"), _relaxed(config))
    assert info.value.field == "image.bytes"
    # The client hung up: the server could not write its 1,000 chunks (65 MB), whatever the socket buffered.
    assert _outcome(server, "/endless") == "hung up" and server.written["/endless"] < 1000


def test_slow_drip_hits_the_whole_fetch_deadline(server: _Server) -> None:
    """Bytes keep arriving within any per-read timeout; only a deadline for the whole fetch stops it."""
    with pytest.raises(MissingAsset) as info:
        read_location(_url(server, "/drip"), _relaxed())
    assert "http_timeout_s" in info.value.expected
    # Many bytes came through (no per-read timeout fired) and the client left long before the 200th.
    assert _outcome(server, "/drip") == "hung up" and 5 <= server.written["/drip"] < 200


def test_https_to_a_server_without_tls_fails_closed(server: _Server, connects: list[str]) -> None:
    with pytest.raises(MissingAsset):
        read_location(f"https://127.0.0.1:{server.server_port}/cat.png", _relaxed())
    assert connects == ["127.0.0.1"]


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Server]:
    """An https server with a self-signed certificate for `images.test` (trusted by nobody)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=images.test",
         "-addext", "subjectAltName=DNS:images.test"],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.requests, httpd.outcomes, httpd.written = [], queue.Queue(), {}
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_https_verifies_the_certificate_for_the_name_while_connecting_to_the_pinned_address(
    tls_server: _Server, connects: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = socket.getaddrinfo

    def resolve(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "images.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", args[0]))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    with pytest.raises(MissingAsset) as info:
        read_location(f"https://images.test:{tls_server.server_port}/cat.png", _relaxed())
    assert "SSLCertVerificationError" in info.value.expected
    assert connects == ["127.0.0.1"]
    assert tls_server.requests == []  # nothing was sent over an unverified channel


def test_name_resolving_to_any_blocked_address_is_refused(monkeypatch: pytest.MonkeyPatch, no_network: None) -> None:
    """One public and one private answer: refusing only when the first is private would let the OS pick."""

    def mixed(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        answers = ("93.184.216.34", "10.0.0.7")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)) for address in answers]

    monkeypatch.setattr(socket, "getaddrinfo", mixed)
    with pytest.raises(DisallowedLocation) as info:
        read_location("http://mixed.test/a.png", _default())
    assert "10.0.0.7" in str(info.value.value)


def test_unresolvable_host_is_a_missing_asset(monkeypatch: pytest.MonkeyPatch, no_network: None) -> None:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(MissingAsset) as info:
        read_location("http://no-such-host.test/a.png", _default())
    assert info.value.field == "location.host"


SSRF_TARGETS = [
    "http://127.0.0.1/",
    "http://127.1.2.3:8080/a.png",
    "http://localhost/",
    "http://LOCALHOST/a.png",
    "http://[::1]/",
    "http://10.0.0.1/",
    "http://172.16.5.4/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[2002:7f00:1::]/",
    "http://0.0.0.0/",
    "http://[::]/",
    "http://[fd00::1]/",
    "http://[fe80::1]/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0177.0.0.1/",
    "https://127.0.0.1/",
    "https://[::1]:443/",
]


@pytest.mark.parametrize("url", SSRF_TARGETS)
def test_ssrf_targets_are_refused_without_network_traffic(url: str, no_network: None) -> None:
    with pytest.raises(DisallowedLocation) as info:
        read_location(url, _default())
    assert info.value.field == "location.host"


@pytest.mark.parametrize(
    "url",
    ["http://alice:s3cret@127.0.0.1/a.png?token=s3cret", "http://127.0.0.1/a.png?token=s3cret"],
)
def test_errors_never_show_credentials(url: str, no_network: None) -> None:
    with pytest.raises(DisallowedLocation) as info:
        read_location(url, _default())
    assert "s3cret" not in str(info.value) and "s3cret" not in repr(info.value.value)


@pytest.mark.parametrize(
    "url", ["http:///a.png", "http://exa mple.com/", "http://[::1/", "http://a.com:99999/", "http://ex\u00e4mple.com/"]
)
def test_malformed_http_urls_are_refused(url: str, no_network: None) -> None:
    with pytest.raises(DisallowedLocation):
        read_location(url, _default())


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808", "2002:808:808::1"]
)
def test_public_addresses_are_not_blocked(address: str) -> None:
    assert blocking_network(ip_address(address), DEFAULT_BLOCKED_NETWORKS) is None


def test_addresses_embedding_ipv4_are_judged_by_it() -> None:
    assert embedded_ipv4(IPv6Address("::ffff:10.0.0.1")) == IPv4Address("10.0.0.1")
    assert embedded_ipv4(IPv6Address("64:ff9b::a00:1")) == IPv4Address("10.0.0.1")
    assert embedded_ipv4(IPv6Address("2002:a00:1::")) == IPv4Address("10.0.0.1")
    assert blocking_network(IPv6Address("64:ff9b::a00:1"), DEFAULT_BLOCKED_NETWORKS) == ip_network("10.0.0.0/8")


@settings(max_examples=200, deadline=None)
@given(st.ip_addresses())
def test_every_address_python_calls_non_global_is_blocked(address: IPv4Address | IPv6Address) -> None:
    if embedded_ipv4(address) is not None:
        return  # judged by the embedded IPv4 address, which the v4 half of this property covers
    if blocking_network(address, DEFAULT_BLOCKED_NETWORKS) is None:
        assert address.is_global, address


def test_a_resolver_that_never_answers_is_cut_off_by_the_fetch_deadline(
    monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    """DNS is inside `http_timeout_s`: a lookup that hangs ends the fetch as a timeout, not a hung renderer."""
    released = threading.Event()
    asked = threading.Event()

    def hanging(*args: Any, **kwargs: Any) -> list[Any]:
        asked.set()
        released.wait(60)  # a resolver that never answers (released once the test is done)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    config = HTTP_CONFIG.model_copy(update={"http_timeout_s": 0.3})
    try:
        with pytest.raises(MissingAsset) as info:
            read_location("http://slow-dns.test/a.png", _default(config))
    finally:
        released.set()
    assert asked.is_set() and info.value.field == "location.host"
    assert "within http_timeout_s" in info.value.expected
