"""Fetch an image over http(s) without opening an SSRF hole.

Standard library only (`http.client`, `socket`, `ssl`): `urllib.request` follows redirects on its own and
honours proxy environment variables, and `requests`/`httpx` resolve the host again when they connect.
Here every hop is checked and then pinned: the host is resolved once, every address must be public, and
the socket is opened to exactly that checked address while the Host header and TLS SNI/certificate check
still use the name, so a DNS answer that changes between check and connect (rebinding) cannot redirect
the connection. Redirects are followed by hand, each target checked like the first. The body is read
in chunks under a byte cap, and one deadline covers the whole fetch: a watchdog shuts the socket down
when it passes, because per-call socket timeouts alone let a server drip one byte at a time forever.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from functools import cache
from dataclasses import dataclass
from urllib.parse import urljoin

from foveal.renderers.errors import DisallowedLocation, ImageRejected, MissingAsset
from foveal.renderers.security.networks import IPAddress, IPNetwork, resolve_public
from foveal.renderers.security.urls import HttpTarget, parse_http_url

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class FetchPolicy:
    """Limits for one http(s) image fetch."""

    allowed_schemes: frozenset[str]
    blocked_networks: tuple[IPNetwork, ...]
    max_bytes: int
    timeout_s: float
    max_redirects: int = 3


@cache
def _tls_context() -> ssl.SSLContext:
    """Built on first https use, not at import: loading the CA bundle costs time most runs never need."""
    return ssl.create_default_context()


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to a pre-checked address; `self.host` stays the name for the Host header."""

    def __init__(self, target: HttpTarget, address: IPAddress, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self.address = address
        self.live_socket: socket.socket | None = None

    def connect(self) -> None:
        self.sock = self.live_socket = socket.create_connection((str(self.address), self.port), self.timeout)

    def abort(self) -> None:
        """Wake a blocked read from another thread; the base-class call skips SSLSocket's unwrap."""
        if self.live_socket is not None:
            try:
                socket.socket.shutdown(self.live_socket, socket.SHUT_RDWR)
            except OSError:
                pass  # already closed: nothing left to wake


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    """As above, with TLS verified against the host name (not the pinned address)."""

    default_port = http.client.HTTPS_PORT

    def connect(self) -> None:
        plain = socket.create_connection((str(self.address), self.port), self.timeout)
        self.sock = self.live_socket = _tls_context().wrap_socket(plain, server_hostname=self.host)


def fetch_http(url: str, policy: FetchPolicy) -> bytes:
    """GET an image URL, re-checking every redirect; returns the body (at most `max_bytes`)."""
    deadline = time.monotonic() + policy.timeout_s
    for _ in range(policy.max_redirects + 1):
        target = parse_http_url(url, policy.allowed_schemes)
        address = resolve_public(target.host, target.port, policy.blocked_networks, _remaining(target, deadline))
        status, location, body = _get_once(target, address, policy, deadline)
        if status not in _REDIRECTS:
            return body
        if not location:
            raise MissingAsset("location", target.redacted, f"a Location header with HTTP {status}")
        url = urljoin(url, location)
    raise DisallowedLocation("location", target.redacted, f"at most {policy.max_redirects} redirects")


def _get_once(
    target: HttpTarget, address: IPAddress, policy: FetchPolicy, deadline: float
) -> tuple[int, str | None, bytes]:
    """One request to the pinned address: (status, Location header, body)."""
    connection_type = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
    connection = connection_type(target, address, _remaining(target, deadline))
    watchdog = threading.Timer(_remaining(target, deadline), connection.abort)
    watchdog.daemon = True
    watchdog.start()
    try:
        connection.request("GET", target.request_path, headers={"Accept": "image/*", "User-Agent": "foveal"})
        response = connection.getresponse()
        if response.status in _REDIRECTS:
            return response.status, response.getheader("Location"), b""
        if response.status != 200:
            raise MissingAsset("location", target.redacted, f"HTTP 200 (got {response.status})")
        _check_declared_length(response, target, policy.max_bytes)
        body = _read_capped(response, target, policy.max_bytes)
    except (OSError, http.client.HTTPException) as exc:
        _remaining(target, deadline)  # a read the watchdog cut short is a timeout, not a network error
        raise MissingAsset("location", target.redacted, f"a reachable server ({type(exc).__name__})") from None
    finally:
        watchdog.cancel()
        connection.close()
    _remaining(target, deadline)  # an answer cut short by the watchdog may look complete
    return 200, None, body


def _check_declared_length(response: http.client.HTTPResponse, target: HttpTarget, max_bytes: int) -> None:
    declared = response.getheader("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ImageRejected("image.bytes", int(declared), f"at most {max_bytes} bytes ({target.redacted})")


def _read_capped(response: http.client.HTTPResponse, target: HttpTarget, max_bytes: int) -> bytes:
    """Stream the body, refusing it as soon as it passes the cap (before it is all in memory)."""
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = response.read1(_CHUNK)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > max_bytes:
            raise ImageRejected("image.bytes", f">{max_bytes}", f"at most {max_bytes} bytes ({target.redacted})")
        chunks.append(chunk)


def _remaining(target: HttpTarget, deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise MissingAsset("location", target.redacted, "an answer within http_timeout_s")
    return left
