"""Slow and idle clients are cut off (`[inference.http]`), and the server answers others meanwhile.

Waits are event-based: each raw socket blocks until the server closes it or answers, with a socket timeout
twenty times the configured deadline, so only a server that never cuts the client off fails (by timing out).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from foveal.configs.http import HttpLimits
from foveal.trainer.serving.http_server import HeaderDeadlineProtocol, uvicorn_config
from foveal.trainer.serving.testing import RunningServer, start_server

from .conftest import serve_config

DEADLINE_S = 0.5
WAIT_S = 20 * DEADLINE_S


@pytest.fixture(scope="module")
def server(server_root: Path, tiny_cache_root: Path) -> Iterator[RunningServer]:
    http = {"header_timeout_s": DEADLINE_S, "body_timeout_s": DEADLINE_S, "keep_alive_s": DEADLINE_S}
    with start_server(serve_config(server_root, http=http), cache_root=tiny_cache_root) as running:
        yield running


def _connect(server: RunningServer, first_bytes: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_S)
    sock.sendall(first_bytes)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (raises if it never does within WAIT_S)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_half_sent_headers_are_cut_off_while_health_answers(server: RunningServer) -> None:
    slow = [_connect(server, b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Le") for _ in range(30)]
    silent = [_connect(server, b"") for _ in range(10)]
    try:
        assert httpx.get(f"{server.url}/health", timeout=WAIT_S).status_code == 200
        for sock in slow + silent:
            assert _read_all(sock) == b""  # closed by the server, nothing answered
    finally:
        for sock in slow + silent:
            sock.close()
    assert httpx.get(f"{server.url}/health", timeout=WAIT_S).status_code == 200


def test_a_body_that_stops_arriving_gets_408(server: RunningServer) -> None:
    head = b"POST /v1/tokenize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    sock = _connect(server, head + b"{}")
    try:
        answer = _read_all(sock)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 408") and b'"code":"timeout"' in answer and b'"field":"body"' in answer


def test_the_connection_cap_and_keep_alive_reach_uvicorn() -> None:
    limits = HttpLimits(header_timeout_s=3.0, keep_alive_s=7.0, max_connections=12)
    config = uvicorn_config(lambda: None, limits)
    assert config.limit_concurrency == 12 and config.timeout_keep_alive == 7.0
    assert issubclass(config.http, HeaderDeadlineProtocol) and config.http.header_timeout_s == 3.0
    with pytest.raises(ValueError, match="max_connections"):
        HttpLimits(max_connections=0)


def _rss_bytes() -> int:
    """This process's resident memory (the server under test runs on a thread of it)."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads resident memory from /proc")
def test_an_unauthenticated_flood_of_huge_bodies_gets_401s_and_costs_no_memory(server: RunningServer) -> None:
    """32 clients each announce a 60 MiB body to a control route and start sending it: every one is answered 401
    from its headers (the body is never read), and the server's memory does not grow by the bodies."""
    head = b"POST /control/pause HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {60 * 2**20}\r\n\r\n".encode()
    before = _rss_bytes()
    sockets = [_connect(server, head + b"{" * 65536) for _ in range(32)]
    try:
        answers = [_read_all(sock) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
    assert all(answer.startswith(b"HTTP/1.1 401") for answer in answers)
    assert all(b'"field":"Authorization"' in answer for answer in answers)
    assert all(b"\r\nconnection: close\r\n" in answer.lower() for answer in answers)  # the rest is never read
    assert _rss_bytes() - before < 100 * 2**20
    assert httpx.get(f"{server.url}/health", timeout=WAIT_S).status_code == 200
